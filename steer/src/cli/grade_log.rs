//! `steer grade-log`: grade a saved test log offline, as the harness would, and print the
//! one-instance report JSON.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use worker::grading::{self, GradeInput, END_TEST_OUTPUT, START_TEST_OUTPUT};

use super::eval::{GradingArg, ProfileArg};
use orchestrator::dataset;

#[derive(Args, Debug)]
pub struct GradeLogArgs {
    /// One dataset record (JSON object; FAIL_TO_PASS/PASS_TO_PASS as lists or JSON strings).
    #[arg(long)]
    pub instance: PathBuf,
    /// The log: a full eval log with the harness's markers, or the raw test output.
    #[arg(long)]
    pub log: PathBuf,
    #[arg(long, value_enum, default_value = "v5")]
    pub profile: ProfileArg,
    /// `checked`: a log showing signs of forged test output is not resolved (the report says
    /// why under "tampered"); `official`: exactly the harness's report.
    #[arg(long, value_enum, default_value = "checked")]
    pub grading: GradingArg,
}

pub async fn run(args: GradeLogArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.instance)
        .with_context(|| format!("reading {}", args.instance.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", args.instance.display()))?;
    // One record through the dataset parser, so its checks and error messages apply.
    let mut instances = dataset::parse(dataset::Format::Jsonl, serde_json::to_string(&value)?.as_bytes())
        .with_context(|| format!("{}: not a SWE-bench record", args.instance.display()))?;
    let instance = instances.remove(0);
    let bytes = std::fs::read(&args.log).with_context(|| format!("reading {}", args.log.display()))?;
    let invalid_utf8 = std::str::from_utf8(&bytes).is_err();
    let raw = String::from_utf8_lossy(&bytes).into_owned();
    // Raw test output gets the markers the eval script would have printed around it.
    let log = if raw.contains(START_TEST_OUTPUT) {
        raw
    } else {
        format!("{START_TEST_OUTPUT}\n{raw}\n{END_TEST_OUTPUT}\n")
    };
    let profile = grading::Profile::from(protocol::GradingProfile::from(args.profile));
    let graded = grading::grade(&GradeInput {
        instance: &instance,
        profile,
        mode: args.grading.into(),
        // A saved log means the patch applied and the tests ran.
        patch: Some("(graded from a saved log)"),
        patch_applied: true,
        eval_log: Some(&log),
        // Which harness's script printed it is not known: either's markers are accepted.
        eval_script: None,
        eval_exit_code: None,
        timed_out: false,
        eval_log_invalid_utf8: invalid_utf8,
    });
    for w in &graded.warnings {
        eprintln!("warning: {w:?}");
    }
    if let Some(tampering) = &graded.tampered {
        eprintln!("not resolved: the test output looks forged: {tampering}");
    }
    if let Some(problem) = &graded.problem {
        eprintln!("the log gave no usable result: {problem:?}");
    }
    println!("{}", serde_json::to_string_pretty(&graded.report)?);
    Ok(ExitCode::SUCCESS)
}
