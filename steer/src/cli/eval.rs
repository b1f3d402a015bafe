//! `steer eval`: grade predictions across the fleet and write the official harness's files.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use protocol::{GradingProfile, SandboxSettings, API_PREFIX};
use reqwest::Method;
use worker::grading::{self, InstanceResult, Leftovers, SummaryInput};

use super::{client, sweep, CoordinatorArgs};

pub mod files;
use orchestrator::predictions::{self, Prediction};
use orchestrator::store::evals::{self, EvalRequest, EvalResult};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ProfileArg {
    V5,
    V4,
}

impl From<ProfileArg> for GradingProfile {
    fn from(p: ProfileArg) -> Self {
        match p {
            ProfileArg::V5 => GradingProfile::V5,
            ProfileArg::V4 => GradingProfile::V4,
        }
    }
}

/// `--grading`: whether the harness's verdict is checked against forged test output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GradingArg {
    /// The harness's verdict, but a log with signs of forged test output is not resolved.
    Checked,
    /// Exactly the official harness's verdict.
    Official,
}

impl From<GradingArg> for grading::GradingMode {
    fn from(g: GradingArg) -> Self {
        match g {
            GradingArg::Checked => grading::GradingMode::Checked,
            GradingArg::Official => grading::GradingMode::Official,
        }
    }
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// An imported dataset (see `steer dataset import`).
    #[arg(long)]
    pub dataset: String,
    /// Predictions file (.json list or dict, .jsonl) with instance_id, model_name_or_path,
    /// model_patch; or `gold` to grade the dataset's own patches.
    #[arg(long)]
    pub predictions: String,
    /// Run id: names the evaluation, its report folder and summary files; a run id taken by
    /// other predictions (or a sweep) is refused [default: `<stem>-<hash>`, the predictions
    /// file's stem (or `gold`) and 8 hex digits of a hash of what is graded, so that only the
    /// same evaluation gets the same run id].
    #[arg(long)]
    pub run_id: Option<String>,
    /// Only these instances (with `--predictions gold`).
    #[arg(long, value_delimiter = ',')]
    pub instance_ids: Vec<String>,
    /// Grading semantics: the harness v5.0.2, or 4.x for numbers published under it.
    #[arg(long, value_enum, default_value = "v5")]
    pub profile: ProfileArg,
    /// `checked`: a test log showing signs of forged output (harness markers printed by the
    /// tests, results after the runner's summary, ...) is not resolved, and its report.json says
    /// why under "tampered"; `official`: exactly the harness's verdicts and reports.
    #[arg(long, value_enum, default_value = "checked")]
    pub grading: GradingArg,
    /// Where per-instance reports go: <DIR>/<run id>/<model>/<instance>/report.json.
    #[arg(long, default_value = "logs/run_evaluation")]
    pub report_dir: PathBuf,
    /// Where the summary report <model>.<run id>.json goes (the harness writes it to the working directory).
    #[arg(long, default_value = ".")]
    pub summary_dir: PathBuf,
    /// Namespace of the instance images (`<namespace>/sweb.eval.x86_64.<id>:<tag>`), when the dataset names none.
    #[arg(long, default_value = "swebench")]
    pub image_namespace: String,
    #[arg(long, default_value = "latest")]
    pub image_tag: String,
    /// Registry host in front of image names.
    #[arg(long)]
    pub image_registry: Option<String>,
    /// Give the grading containers a network (off by default).
    #[arg(long)]
    pub network: bool,
    /// Time limit of each instance's test run, in seconds.
    #[arg(long, default_value_t = 1800)]
    pub timeout: u64,
    #[command(flatten)]
    pub coordinator: CoordinatorArgs,
}

pub async fn run(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let client = client::connect(&args.coordinator)?;
    let known: Vec<String> = client
        .call::<(), _>(Method::GET, &format!("{API_PREFIX}/datasets/{}/instances", args.dataset), None)
        .await
        .with_context(|| format!("looking up dataset `{}`", args.dataset))?;
    let gold = args.predictions == "gold";
    let (preds, base) = if gold {
        (Vec::new(), "gold".to_string())
    } else {
        let path = Path::new(&args.predictions);
        let located = predictions::load_path(path)?;
        let known_set: HashSet<&str> = known.iter().map(String::as_str).collect();
        let unknown: Vec<String> = located
            .iter()
            .filter(|l| !known_set.contains(l.prediction.instance_id.as_str()))
            .map(|l| format!("{}: unknown instance id `{}`", l.location, l.prediction.instance_id))
            .collect();
        if !unknown.is_empty() {
            anyhow::bail!(
                "{}: {} prediction(s) name instances that dataset `{}` does not have; nothing was submitted:\n  {}",
                path.display(),
                unknown.len(),
                args.dataset,
                unknown.join("\n  ")
            );
        }
        let stem =
            path.file_stem().map(|s| predictions::model_slug(&s.to_string_lossy())).unwrap_or_default();
        (located.into_iter().map(|l| l.prediction).collect(), stem)
    };
    let mut request = EvalRequest {
        dataset: args.dataset.clone(),
        run_id: String::new(),
        profile: args.profile.into(),
        gold,
        instance_ids: args.instance_ids.clone(),
        predictions: preds.clone(),
        sandbox: SandboxSettings {
            network: args.network,
            image_registry: args.image_registry.clone(),
            image_namespace: args.image_namespace.clone(),
            image_tag: args.image_tag.clone(),
            eval_timeout_s: args.timeout,
            ..Default::default()
        },
        max_attempts: 3,
    };
    let run_id = args.run_id.clone().unwrap_or_else(|| evals::default_run_id(&base, &request));
    request.run_id = run_id.clone();
    let submitted: protocol::SweepSubmitted =
        client.call(Method::POST, &format!("{API_PREFIX}/evals"), Some(&request)).await?;
    if submitted.created {
        eprintln!(
            "grading {} prediction(s) as evaluation `{run_id}` (sweep {})",
            submitted.runs, submitted.sweep_id
        );
    } else {
        eprintln!(
            "evaluation `{run_id}` with these patches exists already (sweep {}); writing its reports",
            submitted.sweep_id
        );
    }
    let status = sweep::wait_for(&client, submitted.sweep_id).await?;
    let mut results: Vec<EvalResult> = client
        .call::<(), _>(Method::GET, &format!("{API_PREFIX}/sweeps/{}/evaluations", submitted.sweep_id), None)
        .await?;
    // Workers grade with the integrity check; its note comes off again for `--grading official`.
    let tampered = results.iter().filter(|r| tampering(r).is_some()).count();
    if args.grading == GradingArg::Official {
        for r in &mut results {
            r.report = r.report.as_ref().map(grading::official_report);
        }
    }

    let submitted_preds: Vec<Prediction> = if gold {
        results
            .iter()
            .map(|r| Prediction {
                instance_id: r.instance_id.clone(),
                model_name_or_path: "gold".into(),
                model_patch: Some("<gold>".into()),
            })
            .collect()
    } else {
        preds
    };
    let held: Vec<String> = client
        .call::<(), _>(Method::GET, &format!("{API_PREFIX}/sweeps/{}/held-images", submitted.sweep_id), None)
        .await?;
    let datasets: Vec<protocol::DatasetInfo> =
        client.call::<(), _>(Method::GET, &format!("{API_PREFIX}/datasets"), None).await?;
    let source = datasets.iter().find(|d| d.name == args.dataset).and_then(|d| d.source.clone());
    files::write_run_metadata(&args.report_dir, &run_id, source.as_deref().unwrap_or(&args.dataset))?;
    let written = files::write_all(&args.report_dir, &run_id, &results)?;
    let mut by_model: BTreeMap<&str, Vec<&EvalResult>> = BTreeMap::new();
    for r in &results {
        by_model.entry(r.model_name_or_path.as_str()).or_default().push(r);
    }
    for (model, model_results) in &by_model {
        let model_preds: Vec<&Prediction> =
            submitted_preds.iter().filter(|p| p.model_name_or_path == *model).collect();
        let summary = summary_report(request.profile, &known, &model_preds, model_results, &held);
        let file = args.summary_dir.join(format!("{}.{run_id}.json", model.replace('/', "__")));
        std::fs::create_dir_all(&args.summary_dir)?;
        // `print(json.dumps(report, indent=4), file=f)`: a newline at the end
        std::fs::write(&file, grading::harness_json::dumps(&summary) + "\n")
            .with_context(|| format!("writing {}", file.display()))?;
        let resolved = summary["resolved_instances"].as_u64().unwrap_or(0);
        let submitted_n = summary["submitted_instances"].as_u64().unwrap_or(0);
        let total = summary["total_instances"].as_u64().unwrap_or(0);
        println!("{model}: resolved {resolved} of {submitted_n} submitted ({:.1}%), of {total} in the dataset ({:.1}%)",
            pct(resolved, submitted_n), pct(resolved, total));
        println!(
            "  completed {}, unresolved {}, empty patch {}, error {}",
            summary["completed_instances"],
            summary["unresolved_instances"],
            summary["empty_patch_instances"],
            summary["error_instances"]
        );
        println!("  summary: {}", file.display());
    }
    if tampered > 0 {
        match args.grading {
            GradingArg::Checked => println!(
                "{tampered} with test output that looks forged, graded not resolved (\"tampered\" in their \
                 report.json; `--grading official` grades as the harness)"
            ),
            GradingArg::Official => {
                println!(
                    "{tampered} graded as the harness grades them, although their test output looks forged"
                )
            }
        }
    }
    println!(
        "per-instance files: {} folder(s), {} with a report.json, under {}",
        written.folders,
        written.reports,
        args.report_dir.join(&run_id).display()
    );
    Ok(super::exit::of_sweep(&status))
}

fn pct(n: u64, d: u64) -> f64 {
    if d == 0 {
        0.0
    } else {
        100.0 * n as f64 / d as f64
    }
}

/// Why the integrity check refused a graded run's test output, if it did.
fn tampering(r: &EvalResult) -> Option<&str> {
    r.report.as_ref()?.get(&r.instance_id)?.get(grading::report::TAMPERED_KEY)?.as_str()
}

/// The harness's final summary report (`make_run_report`) for one model's predictions.
pub fn summary_report(
    profile: GradingProfile,
    dataset_ids: &[String],
    preds: &[&Prediction],
    results: &[&EvalResult],
    held_images: &[String],
) -> serde_json::Value {
    let result_of: BTreeMap<&str, &EvalResult> =
        results.iter().map(|r| (r.instance_id.as_str(), *r)).collect();
    let rows: Vec<InstanceResult> = preds
        .iter()
        .map(|p| {
            let result = result_of.get(p.instance_id.as_str());
            InstanceResult {
                instance_id: p.instance_id.clone(),
                patch_empty: p.model_patch.as_deref().is_none_or(str::is_empty),
                report: result.and_then(|r| r.report.as_ref()).filter(|v| !v.is_null()).cloned(),
                failure: result.and_then(|r| files::failure_of(profile, r)),
            }
        })
        .collect();
    // Workers remove every grading container on every path (one left behind is removed when
    // its worker stops or starts again), so no container is the evaluation's leftover. Instance
    // images stay in the workers' caches by design: like the harness, which lists the dataset's
    // images still on its engine, the summary lists the dataset's images live workers hold.
    // v4's docker path writes none of these three fields (its condition is inverted), v5's
    // writes them.
    let leftovers = Leftovers { unstopped_containers: Vec::new(), unremoved_images: held_images.to_vec() };
    grading::summary_report(&SummaryInput {
        profile: profile.into(),
        dataset_ids,
        results: &rows,
        leftovers: (profile == GradingProfile::V5).then_some(&leftovers),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn result(id: &str, resolved: Option<bool>, report: bool) -> EvalResult {
        EvalResult {
            run_id: 1,
            instance_id: id.into(),
            model_name_or_path: "m".into(),
            state: "done".into(),
            outcome: None,
            resolved,
            patch_submitted: true,
            report: report.then(|| json!({ id: { "resolved": resolved.unwrap_or(false) } })),
            last_error: None,
            patch: Some("d".into()),
            test_output: None,
            eval_script: None,
            instance_log: None,
        }
    }

    #[test]
    fn summary_counts_like_the_harness() {
        let ids: Vec<String> = ["a-1", "a-2", "a-3", "a-4", "a-5"].iter().map(|s| s.to_string()).collect();
        let p = |id: &str, patch: Option<&str>| Prediction {
            instance_id: id.into(),
            model_name_or_path: "m".into(),
            model_patch: patch.map(Into::into),
        };
        let preds = [p("a-1", Some("d")), p("a-2", Some("d")), p("a-3", Some("")), p("a-4", Some("d"))];
        let preds: Vec<&Prediction> = preds.iter().collect();
        // a-4's patch did not apply: graded, but no report, so it is an error instance.
        let mut results =
            [result("a-1", Some(true), true), result("a-2", Some(false), true), result("a-4", None, false)];
        // Classified from the test output and the instance log, for unresolved and error ids only.
        results[0].test_output = Some("collected 0 items".into());
        results[1].test_output = Some("collected 0 items\nno tests ran in 0.01s".into());
        results[2].last_error = Some("Error response from daemon: no such image".into());
        let results: Vec<&EvalResult> = results.iter().collect();
        let s = summary_report(GradingProfile::V5, &ids, &preds, &results, &[]);
        assert_eq!(s["total_instances"], 5);
        assert_eq!(s["submitted_instances"], 4);
        assert_eq!(s["completed_instances"], 2);
        assert_eq!(s["resolved_ids"], json!(["a-1"]));
        assert_eq!(s["unresolved_ids"], json!(["a-2"]));
        assert_eq!(s["empty_patch_ids"], json!(["a-3"]));
        assert_eq!(s["error_ids"], json!(["a-4"]));
        assert_eq!(s["incomplete_ids"], json!(["a-5"]));
        assert_eq!(s["schema_version"], 2);
        assert_eq!(s["infra_failure_instances"], 1);
        assert_eq!(s["infra_failure_ids"], json!(["a-4"]));
        assert_eq!(s["ambiguous_failure_instances"], 1);
        assert_eq!(s["ambiguous_failure_ids"], json!(["a-2"]));
        assert_eq!(
            s["failure_reasons"],
            json!({"a-2": "no_tests_collected", "a-4": "container_unavailable"})
        );
        assert_eq!(s["unstopped_instances"], 0);
        assert_eq!(s["unstopped_containers"], json!([]));
        assert_eq!(s["unremoved_images"], json!([]));
        // The harness's fields, all of them and no others (JSON objects are unordered; the file
        // lists them alphabetically).
        let sorted = |mut v: Vec<&'static str>| {
            v.sort_unstable();
            v
        };
        let keys: Vec<&str> = s.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, sorted(V5_SUMMARY_FIELDS.to_vec()));

        // v4 has neither the classification nor (on its docker path) the leftover fields.
        let v4 = summary_report(GradingProfile::V4, &ids, &preds, &results, &[]);
        let keys: Vec<&str> = v4.as_object().unwrap().keys().map(String::as_str).collect();
        let v4_fields: Vec<&str> = V5_SUMMARY_FIELDS
            .iter()
            .copied()
            .filter(|k| !k.contains("failure") && !k.starts_with("unstopped") && !k.starts_with("unremoved"))
            .collect();
        assert_eq!(keys, sorted(v4_fields));
    }

    /// Every field of v5.0.2's `make_run_report` with a docker client, in its order.
    const V5_SUMMARY_FIELDS: [&str; 23] = [
        "total_instances",
        "submitted_instances",
        "completed_instances",
        "resolved_instances",
        "unresolved_instances",
        "infra_failure_instances",
        "ambiguous_failure_instances",
        "empty_patch_instances",
        "error_instances",
        "completed_ids",
        "incomplete_ids",
        "empty_patch_ids",
        "submitted_ids",
        "resolved_ids",
        "unresolved_ids",
        "infra_failure_ids",
        "ambiguous_failure_ids",
        "failure_reasons",
        "error_ids",
        "schema_version",
        "unstopped_instances",
        "unstopped_containers",
        "unremoved_images",
    ];
}
