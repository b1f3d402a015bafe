//! Evaluation-only sweeps (`steer eval`): grade given patches across the fleet, as a
//! distributed replacement for the official harness's `run_evaluation`.
//!
//! An evaluation is an ordinary sweep whose executor is `evaluate`, with one agent per model
//! (`model_name_or_path`) and one run per prediction carrying its patch. Its name is the
//! harness's run id. Its config hash covers the patches, so submitting the same predictions
//! again is a no-op, while other predictions (or settings) under a run id that is taken, by an
//! evaluation or a sweep, are refused: a run id names one evaluation, its report folder and
//! its summary files. `steer eval` picks a run id that only the same evaluation gets
//! ([`default_run_id`]).

use std::collections::{BTreeMap, HashSet};

use protocol::{
    AgentSpec, CriticSpec, EvaluateSpec, ExecutorSpec, GradingProfile, PatchSource, SandboxSettings,
    SweepSubmitted,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};

use super::datasets;
use super::sweeps::{find, images_of, insert_sweep, name_taken, next_fair_seq, notify_runs, NewSweep};
use crate::db::{Error, Result};
use crate::predictions::{model_slug, Prediction};
use crate::sweep_file::{validate_name, DatasetRef, Selection, SweepFile};

/// What `POST /api/v1/evals` takes.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EvalRequest {
    /// An imported dataset.
    pub dataset: String,
    /// The harness's run id; names the sweep.
    pub run_id: String,
    #[serde(default)]
    pub profile: GradingProfile,
    /// Grade the dataset's gold patches (of `instance_ids`, or of every instance) instead of
    /// `predictions`.
    #[serde(default)]
    pub gold: bool,
    #[serde(default)]
    pub instance_ids: Vec<String>,
    #[serde(default)]
    pub predictions: Vec<Prediction>,
    #[serde(default)]
    pub sandbox: SandboxSettings,
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
}

fn default_attempts() -> u32 {
    3
}

/// The pseudo-endpoint of evaluation agents: they call no model.
const PREDICTIONS_ENDPOINT: &str = "predictions:";

/// Creates the evaluation's sweep (with no owner: over the API, only admins may change it), or
/// returns the existing one when the same predictions were submitted under the same run id;
/// other predictions under a taken name (of an evaluation or a sweep) are a `Conflict`.
pub async fn submit(pool: &PgPool, req: &EvalRequest) -> Result<SweepSubmitted> {
    submit_as(pool, req, None).await
}

/// [`submit`], recording `owner` (the id of the submitting token) as the new sweep's owner.
pub async fn submit_as(pool: &PgPool, req: &EvalRequest, owner: Option<i64>) -> Result<SweepSubmitted> {
    validate_name(&req.run_id).map_err(|e| Error::Invalid(format!("run id: {e}")))?;
    let dataset = datasets::get(pool, &req.dataset).await?;
    let keys = datasets::instance_keys(pool, dataset.id).await?;
    let known: Vec<String> = keys.iter().map(|k| k.instance_id.clone()).collect();
    let known_set: HashSet<&str> = known.iter().map(String::as_str).collect();

    let predictions: Vec<Prediction> = if req.gold {
        if !req.predictions.is_empty() {
            return Err(Error::Invalid("give either gold or predictions, not both".into()));
        }
        let ids = if req.instance_ids.is_empty() { known.clone() } else { req.instance_ids.clone() };
        ids.into_iter()
            .map(|instance_id| Prediction {
                instance_id,
                model_name_or_path: "gold".into(),
                model_patch: None,
            })
            .collect()
    } else {
        req.predictions.clone()
    };
    if predictions.is_empty() {
        return Err(Error::Invalid("no predictions to grade".into()));
    }
    let unknown: Vec<&str> =
        predictions.iter().map(|p| p.instance_id.as_str()).filter(|id| !known_set.contains(id)).collect();
    if !unknown.is_empty() {
        return Err(Error::Invalid(format!(
            "{} prediction(s) name instances that dataset `{}` does not have: {}",
            unknown.len(),
            req.dataset,
            unknown.join(", ")
        )));
    }

    // One agent per model; the slug must be unique too.
    let mut models: BTreeMap<String, String> = BTreeMap::new();
    for p in &predictions {
        let slug = model_slug(&p.model_name_or_path);
        if slug.is_empty() {
            return Err(Error::Invalid(format!(
                "model name `{}` has no usable characters",
                p.model_name_or_path
            )));
        }
        match models.get(&slug) {
            Some(other) if other != &p.model_name_or_path => {
                return Err(Error::Invalid(format!(
                    "model names `{other}` and `{}` are too alike to keep apart",
                    p.model_name_or_path
                )))
            }
            _ => {
                models.insert(slug, p.model_name_or_path.clone());
            }
        }
    }
    let mut ids: Vec<String> = predictions.iter().map(|p| p.instance_id.clone()).collect();
    ids.sort();
    ids.dedup();
    let file = SweepFile {
        name: req.run_id.clone(),
        description: Some(format!("evaluation of {} prediction(s) on `{}`", predictions.len(), req.dataset)),
        repeats: 1,
        max_attempts: req.max_attempts.max(1),
        budget_usd: None,
        max_running: None,
        dataset: DatasetRef { name: req.dataset.clone(), path: None },
        select: Selection { ids, ..Default::default() },
        executor: ExecutorSpec::Evaluate(EvaluateSpec {
            profile: req.profile,
            patch: if req.gold { PatchSource::Gold } else { PatchSource::Prediction },
        }),
        sandbox: req.sandbox.clone(),
        agents: models
            .iter()
            .map(|(slug, model)| AgentSpec {
                name: slug.clone(),
                base_url: PREDICTIONS_ENDPOINT.into(),
                model: model.clone(),
                api_key_env: None,
                sampling: Default::default(),
                price: Default::default(),
                limits: Default::default(),
                max_concurrency: None,
                extra_body: Default::default(),
                tokenizer: None,
                agent_config: None,
            })
            .collect(),
        critics: vec![CriticSpec::none("none")],
    };
    let hash = eval_hash(&file, &predictions);
    if let Some(existing) = find(pool, &file.name, &hash).await? {
        return Ok(existing);
    }
    if let Some(taken) = name_taken(pool, &file.name).await? {
        return Err(taken.conflict("eval"));
    }

    let mut tx = pool.begin().await?;
    let config = serde_json::to_string_pretty(req).map_err(|e| Error::Internal(e.to_string()))?;
    let new = NewSweep { hash: &hash, config_toml: &config, dataset_id: dataset.id, kind: "eval", owner };
    let Some(created) = insert_sweep(&mut tx, &file, &new).await? else {
        tx.rollback().await?;
        return find(pool, &file.name, &hash)
            .await?
            .ok_or_else(|| Error::Internal("evaluation vanished after a conflicting insert".into()));
    };
    let agent_of: BTreeMap<&str, (i64, i64)> =
        models.keys().map(String::as_str).zip(created.agent_ids.iter().copied()).collect();
    let base = next_fair_seq(&mut tx).await?;
    let critic = created.critic_ids[0];
    let mut runs = 0;
    let ids: Vec<String> = predictions.iter().map(|p| p.instance_id.clone()).collect();
    let images = images_of(&keys, &ids, &req.sandbox);
    for (i, (p, image)) in predictions.iter().zip(&images).enumerate() {
        let (agent, endpoint) = agent_of[model_slug(&p.model_name_or_path).as_str()];
        sqlx::query(
            "INSERT INTO runs (sweep_id, dataset_id, instance_id, image, agent_id, endpoint_id, critic_id, repeat_index,
                               fair_seq, input_patch)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9)",
        )
        .bind(created.sweep_id)
        .bind(dataset.id)
        .bind(&p.instance_id)
        .bind(image)
        .bind(agent)
        .bind(endpoint)
        .bind(critic)
        .bind(base + i as i64)
        .bind(&p.model_patch)
        .execute(&mut *tx)
        .await?;
        runs += 1;
    }
    tx.commit().await?;
    notify_runs(pool, created.sweep_id).await?;
    Ok(SweepSubmitted {
        sweep_id: created.sweep_id,
        name: file.name,
        created: true,
        runs,
        config_hash: hash,
        warnings: Vec::new(),
    })
}

/// The run id `steer eval` gives an evaluation by default: `<base>-<8 hex digits>` (`base` is
/// the predictions file's stem, or `gold`), the digits a hash of everything the request grades
/// and how (dataset, predictions in any order, gold and its instances, profile, sandbox,
/// attempts), all but its run id. The same evaluation gets the same run id, so grading it
/// again writes its reports again; other predictions, even from a file of the same name, get
/// another run id and so another report folder and summary files.
pub fn default_run_id(base: &str, req: &EvalRequest) -> String {
    let mut predictions: Vec<(&str, &str, Option<&str>)> = req
        .predictions
        .iter()
        .map(|p| (p.model_name_or_path.as_str(), p.instance_id.as_str(), p.model_patch.as_deref()))
        .collect();
    predictions.sort();
    let mut ids: Vec<&str> = req.instance_ids.iter().map(String::as_str).collect();
    ids.sort();
    ids.dedup();
    let graded = (&req.dataset, req.profile, req.gold, ids, predictions, &req.sandbox, req.max_attempts);
    let bytes = serde_json::to_vec(&graded).expect("plain data serializes");
    let digest = hex::encode(Sha256::digest(&bytes));
    let base = model_slug(base);
    let base = if base.is_empty() { "predictions".to_string() } else { base };
    format!("{base}-{}", &digest[..8])
}

fn eval_hash(file: &SweepFile, predictions: &[Prediction]) -> String {
    let mut entries: Vec<(&str, &str, &str)> = predictions
        .iter()
        .map(|p| {
            (p.model_name_or_path.as_str(), p.instance_id.as_str(), p.model_patch.as_deref().unwrap_or(""))
        })
        .collect();
    entries.sort();
    let mut h = Sha256::new();
    h.update(file.config_hash().as_bytes());
    for (model, id, patch) in entries {
        for part in [model, id, patch] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
    }
    hex::encode(h.finalize())
}

/// One graded run of an evaluation, as `GET /api/v1/sweeps/{id}/evaluations` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EvalResult {
    pub run_id: i64,
    pub instance_id: String,
    pub model_name_or_path: String,
    pub state: String,
    pub outcome: Option<String>,
    pub resolved: Option<bool>,
    /// Whether a patch was submitted at all (the harness counts empty patches apart).
    pub patch_submitted: bool,
    /// The harness-shaped per-instance report, when the run was graded.
    pub report: Option<serde_json::Value>,
    pub last_error: Option<String>,
    /// The patch that was graded (the prediction's, or the dataset's gold patch).
    #[serde(default)]
    pub patch: Option<String>,
    /// The eval script's output (`test_output.txt`), when it ran.
    #[serde(default)]
    pub test_output: Option<String>,
    /// The eval script that ran (`eval.sh`).
    #[serde(default)]
    pub eval_script: Option<String>,
    /// The worker's account of the grading (`run_instance.log`).
    #[serde(default)]
    pub instance_log: Option<String>,
}

/// The instance images of an evaluation's dataset that live workers (heard from within
/// `live_within`) still hold, as the workers name them: what the harness lists as
/// `unremoved_images` (the dataset's images still on its engine). Workers keep instance
/// images on purpose, so this is a statement of where they are, not a leak. A sweep that is
/// not an evaluation lists its own runs' images that live workers hold.
pub async fn held_images(
    pool: &PgPool,
    sweep_id: i64,
    live_within: std::time::Duration,
) -> Result<Vec<String>> {
    let (kind, config, dataset_id): (String, String, i64) =
        sqlx::query_as("SELECT kind, config_toml, dataset_id FROM sweeps WHERE id = $1")
            .bind(sweep_id)
            .fetch_optional(pool)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no sweep with id {sweep_id}")))?;
    let mut images: Vec<String> = if kind == "eval" {
        let req: EvalRequest = serde_json::from_str(&config)
            .map_err(|e| Error::Internal(format!("evaluation {sweep_id}: stored request unreadable: {e}")))?;
        let keys = datasets::instance_keys(pool, dataset_id).await?;
        let ids: Vec<String> = keys.iter().map(|k| k.instance_id.clone()).collect();
        images_of(&keys, &ids, &req.sandbox)
    } else {
        sqlx::query_scalar("SELECT DISTINCT image FROM runs WHERE sweep_id = $1 AND image IS NOT NULL")
            .bind(sweep_id)
            .fetch_all(pool)
            .await?
    };
    let (_, held) = super::workers::live_images(pool, live_within).await?;
    images.retain(|i| held.contains(i));
    images.sort();
    images.dedup();
    Ok(images)
}

pub async fn results(pool: &PgPool, sweep_id: i64) -> Result<Vec<EvalResult>> {
    let rows = sqlx::query(
        "SELECT r.id, r.instance_id, a.model, r.state, r.outcome, e.resolved, e.report, r.last_error,
                COALESCE(r.patch, r.input_patch) AS patch, e.test_output, e.eval_script, e.instance_log,
                (COALESCE(r.input_patch, '') <> '' OR (s.spec -> 'executor' ->> 'patch') = 'gold') AS patch_submitted
         FROM runs r JOIN agents a ON a.id = r.agent_id JOIN sweeps s ON s.id = r.sweep_id
         LEFT JOIN evaluations e ON e.run_id = r.id
         WHERE r.sweep_id = $1 ORDER BY r.id",
    )
    .bind(sweep_id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| EvalResult {
            run_id: r.get("id"),
            instance_id: r.get("instance_id"),
            model_name_or_path: r.get("model"),
            state: r.get("state"),
            outcome: r.get("outcome"),
            resolved: r.get("resolved"),
            patch_submitted: r.get("patch_submitted"),
            report: r.get("report"),
            last_error: r.get("last_error"),
            patch: r.get("patch"),
            test_output: r.get("test_output"),
            eval_script: r.get("eval_script"),
            instance_log: r.get("instance_log"),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::import_demo;

    fn pred(id: &str, model: &str, patch: Option<&str>) -> Prediction {
        Prediction {
            instance_id: id.into(),
            model_name_or_path: model.into(),
            model_patch: patch.map(Into::into),
        }
    }

    fn request(predictions: Vec<Prediction>) -> EvalRequest {
        EvalRequest {
            dataset: "demo".into(),
            run_id: "eval-1".into(),
            profile: GradingProfile::V5,
            gold: false,
            instance_ids: vec![],
            predictions,
            sandbox: Default::default(),
            max_attempts: 3,
        }
    }

    #[sqlx::test(migrator = "crate::db::MIGRATOR")]
    async fn predictions_become_runs_carrying_their_patches(pool: PgPool) {
        import_demo(&pool, "demo").await;
        let preds = vec![
            pred("steerbench__demo-1", "org/model-a", Some("diff --git a/x b/x\n")),
            pred("steerbench__demo-2", "org/model-a", None),
            pred("steerbench__demo-1", "model-b", Some("diff --git a/y b/y\n")),
        ];
        let first = submit(&pool, &request(preds.clone())).await.unwrap();
        assert!(first.created);
        assert_eq!(first.runs, 3);
        let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
            "SELECT r.instance_id, a.model, r.input_patch FROM runs r JOIN agents a ON a.id = r.agent_id
             WHERE r.sweep_id = $1 ORDER BY r.id",
        )
        .bind(first.sweep_id)
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(
            rows[0],
            ("steerbench__demo-1".into(), "org/model-a".into(), Some("diff --git a/x b/x\n".into()))
        );
        assert_eq!(rows[1].2, None);
        assert_eq!(rows[2].1, "model-b");

        // The same predictions again: nothing new.
        let again = submit(&pool, &request(preds.clone())).await.unwrap();
        assert!(!again.created);
        assert_eq!(again.sweep_id, first.sweep_id);
        // A changed patch under the same run id is refused, naming the run id and what to do.
        let mut changed = preds;
        changed[0].model_patch = Some("diff --git a/z b/z\n".into());
        let err = submit(&pool, &request(changed.clone())).await.unwrap_err();
        assert!(matches!(err, Error::Conflict(_)), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("`eval-1`") && text.contains(&format!("evaluation {}", first.sweep_id)),
            "{text}"
        );
        assert!(text.contains("--run-id"), "{text}");
        // Under its default run id it is a new evaluation.
        let mut req = request(changed);
        req.run_id = default_run_id("preds", &req);
        assert_ne!(req.run_id, default_run_id("preds", &request(preds_again())));
        let regrade = submit(&pool, &req).await.unwrap();
        assert!(regrade.created);
        assert_ne!(regrade.sweep_id, first.sweep_id);
        let names: i64 = sqlx::query_scalar("SELECT count(*) FROM sweeps WHERE name = 'eval-1'")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(names, 1);
    }

    fn preds_again() -> Vec<Prediction> {
        vec![
            pred("steerbench__demo-1", "org/model-a", Some("diff --git a/x b/x\n")),
            pred("steerbench__demo-2", "org/model-a", None),
            pred("steerbench__demo-1", "model-b", Some("diff --git a/y b/y\n")),
        ]
    }

    #[test]
    fn the_default_run_id_follows_what_is_graded() {
        let base = request(preds_again());
        let id = default_run_id("preds", &base);
        assert!(id.starts_with("preds-") && id.len() == "preds-".len() + 8, "{id}");
        crate::sweep_file::validate_name(&id).unwrap();
        // Order of the predictions and the run id asked for do not matter.
        let mut reordered = base.clone();
        reordered.predictions.reverse();
        reordered.run_id = "other".into();
        assert_eq!(default_run_id("preds", &reordered), id);
        // A patch, the profile or the sandbox do.
        let mut patch = base.clone();
        patch.predictions[1].model_patch = Some(String::new());
        let mut profile = base.clone();
        profile.profile = GradingProfile::V4;
        let mut timeout = base.clone();
        timeout.sandbox.eval_timeout_s += 1;
        for other in [patch, profile, timeout] {
            assert_ne!(default_run_id("preds", &other), id);
        }
        assert_eq!(default_run_id("my preds!", &base), format!("my-preds-{}", &id["preds-".len()..]));
    }

    #[sqlx::test(migrator = "crate::db::MIGRATOR")]
    async fn evaluations_and_sweeps_never_share_a_name(pool: PgPool) {
        import_demo(&pool, "demo").await;
        let sweep = crate::testkit::submit(&pool, &crate::testkit::sweep_toml("taken", "", "")).await;
        let mut req = request(preds_again());
        req.run_id = "taken".into();
        let err = submit(&pool, &req).await.unwrap_err();
        assert!(matches!(err, Error::Conflict(_)), "{err:?}");
        assert!(err.to_string().contains(&format!("`taken` is taken by sweep {}", sweep.sweep_id)), "{err}");

        req.run_id = "graded".into();
        let eval = submit(&pool, &req).await.unwrap();
        let file =
            crate::sweep_file::parse(&crate::testkit::sweep_toml("graded", "", ""), "test.toml").unwrap();
        let err = crate::store::sweeps::submit(&pool, &file, "").await.unwrap_err();
        assert!(matches!(err, Error::Conflict(_)), "{err:?}");
        assert!(
            err.to_string().contains(&format!("`graded` is taken by evaluation {}", eval.sweep_id)),
            "{err}"
        );
        let sweeps: i64 = sqlx::query_scalar("SELECT count(*) FROM sweeps").fetch_one(&pool).await.unwrap();
        assert_eq!(sweeps, 2);
    }

    #[sqlx::test(migrator = "crate::db::MIGRATOR")]
    async fn unknown_instances_are_named_and_nothing_is_created(pool: PgPool) {
        import_demo(&pool, "demo").await;
        let err = submit(
            &pool,
            &request(vec![pred("steerbench__demo-1", "m", None), pred("nope__nope-9", "m", None)]),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("nope__nope-9"), "{err}");
        let sweeps: i64 = sqlx::query_scalar("SELECT count(*) FROM sweeps").fetch_one(&pool).await.unwrap();
        assert_eq!(sweeps, 0);
    }

    #[sqlx::test(migrator = "crate::db::MIGRATOR")]
    async fn gold_grades_every_instance_with_the_dataset_patch(pool: PgPool) {
        import_demo(&pool, "demo").await;
        let req = EvalRequest { gold: true, ..request(vec![]) };
        let s = submit(&pool, &req).await.unwrap();
        assert_eq!(s.runs, 6);
        let results = results(&pool, s.sweep_id).await.unwrap();
        assert!(results
            .iter()
            .all(|r| r.model_name_or_path == "gold" && r.patch_submitted && r.report.is_none()));
    }
}
