//! `steer bench critic --model DIR`: what a local ONNX critic model costs, as one JSON object.
//!
//! - Latency of one call (median, p99) at 512, 2048 and 8192 input tokens, one caller at a time:
//!   tokenizing and inference for a scorer; tokenizing, prefill and `--new-tokens` greedy tokens
//!   (16 by default) for a generative model. Lengths beyond the model's context are null.
//! - Tokenizing time per call, from the same calls.
//! - Throughput (calls per second) at 1, 4 and 16 concurrent callers at `--throughput-tokens`
//!   (2048), with micro-batching (max_batch 16) and without (max_batch 1), each measured for
//!   `--seconds` (3) after a round of warm-up calls.
//! - The same latencies through Python onnxruntime on the same model and texts
//!   (`models/bench_reference.py`, run with the venv of `scripts/ensure-python-ref` when it
//!   exists); null, with the reason, when Python or onnxruntime is unavailable.
//!
//! `rust_over_python_latency` is the ratio of the medians at 2048 tokens;
//! `batched_over_unbatched_16` the ratio of the throughputs at 16 concurrent callers.

use crate::bench::percentile_of;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use worker::critic::onnx::{GenParams, ModelForm, OnnxModel, OnnxOptions};

#[derive(Args, Debug)]
pub struct CriticBenchArgs {
    /// The model directory (holding critic.toml, the .onnx file and tokenizer.json).
    #[arg(long)]
    pub model: PathBuf,
    /// Input lengths (tokens) of the latency figures, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "512,2048,8192")]
    pub lengths: Vec<usize>,
    /// Timed calls per length (after two warm-up calls).
    #[arg(long, default_value_t = 30)]
    pub runs: usize,
    /// Tokens a generative model generates per call.
    #[arg(long, default_value_t = 16)]
    pub new_tokens: usize,
    /// Concurrent callers of the throughput figures, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    pub concurrency: Vec<usize>,
    /// Input length (tokens) of the throughput figures.
    #[arg(long, default_value_t = 2048)]
    pub throughput_tokens: usize,
    /// Seconds each throughput measurement lasts (callers start no call after that).
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// ONNX Runtime threads inside an operator (0 = its default), for Rust and Python alike.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// The Python interpreter for the reference figures (default: the venv of
    /// scripts/ensure-python-ref in the cache directory, else python3).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// The Python side (default: models/bench_reference.py here, else beside the model directory).
    #[arg(long)]
    pub python_script: Option<PathBuf>,
    /// Where scripts/ensure-python-ref keeps its venvs.
    #[arg(long, env = "STEER_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Print only the JSON object.
    #[arg(long)]
    pub json: bool,
}

pub async fn critic(args: CriticBenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.runs >= 1, "--runs must be at least 1");
    anyhow::ensure!(args.seconds > 0.0, "--seconds must be positive");
    anyhow::ensure!(args.concurrency.iter().all(|&c| c >= 1), "--concurrency values must be at least 1");
    let say = |line: String| {
        if !args.json {
            eprintln!("{line}");
        }
    };
    let options =
        |max_batch| OnnxOptions { intra_threads: args.threads, max_batch, ..OnnxOptions::default() };
    let batched = OnnxModel::load(&args.model, &options(16)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let unbatched = OnnxModel::load(&args.model, &options(1)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let form = batched.form();
    let device = batched.device().to_string();
    let generative = form == ModelForm::Generative;
    // The longest prompt a call can have: a generative model keeps room for its answer.
    let limit = if generative {
        batched
            .context_length()
            .checked_sub(args.new_tokens)
            .filter(|&l| l > 0)
            .context("--new-tokens exceeds the context")?
    } else {
        batched.context_length()
    };
    say(format!(
        "critic benchmark: {} ({form:?}, {}), context {}",
        args.model.display(),
        batched.device(),
        batched.context_length()
    ));

    // Texts of each length, from a made-up agent conversation in the model's chat template.
    let mut lengths: Vec<usize> = args.lengths.clone();
    if !lengths.contains(&args.throughput_tokens) {
        lengths.push(args.throughput_tokens);
    }
    let mut texts = BTreeMap::new();
    for &n in &lengths {
        if n <= limit {
            texts.insert(n, text_of_tokens(&batched, n)?);
        }
    }
    let params = GenParams { max_new_tokens: args.new_tokens, ..GenParams::default() };

    // Latency, one caller.
    let mut latency = serde_json::Map::new();
    let mut tokenize = serde_json::Map::new();
    for &n in &args.lengths {
        let Some(text) = texts.get(&n) else {
            latency.insert(
                n.to_string(),
                json!({"skipped": format!("longer than the model's {limit} input tokens")}),
            );
            continue;
        };
        let mut totals = Vec::new();
        let mut tokenizing = Vec::new();
        let mut computing = Vec::new();
        let mut tokens = (0, 0);
        for i in 0..args.runs + 2 {
            let started = Instant::now();
            let (input, output, tok, compute) = call(&batched, text, &params).await?;
            if i >= 2 {
                totals.push(ms(started.elapsed()));
                tokenizing.push(ms(tok));
                computing.push(ms(compute));
                tokens = (input, output);
            }
        }
        let mut figures = json!({
            "median": round(percentile_of(&mut totals, 0.5)),
            "p99": round(percentile_of(&mut totals, 0.99)),
            "compute_median": round(percentile_of(&mut computing, 0.5)),
            "tokenize_median": round(percentile_of(&mut tokenizing, 0.5)),
            "input_tokens": tokens.0,
        });
        if generative {
            figures["output_tokens"] = tokens.1.into();
        }
        say(format!("latency at {n} tokens: median {} ms, p99 {} ms", figures["median"], figures["p99"]));
        tokenize.insert(n.to_string(), figures["tokenize_median"].clone());
        latency.insert(n.to_string(), figures);
    }

    // Throughput, with and without micro-batching.
    let mut throughput = json!({
        "input_tokens": args.throughput_tokens,
        "seconds": args.seconds,
        "batched": {},
        "unbatched": {},
        "mean_batch_size": {},
    });
    if let Some(text) = texts.get(&args.throughput_tokens) {
        for &c in &args.concurrency {
            let period = Duration::from_secs_f64(args.seconds);
            let (rate, mean_batch) = calls_per_second(&batched, text, &params, c, period).await?;
            let (plain, _) = calls_per_second(&unbatched, text, &params, c, period).await?;
            say(format!("{c} concurrent: {rate:.1} calls/s batched (mean batch {mean_batch:.1}), {plain:.1} unbatched"));
            throughput["batched"][c.to_string()] = round(rate).into();
            throughput["unbatched"][c.to_string()] = round(plain).into();
            throughput["mean_batch_size"][c.to_string()] = round(mean_batch).into();
        }
    }
    drop((batched, unbatched));

    // Python onnxruntime on the same texts.
    let latency_texts: BTreeMap<usize, &String> =
        texts.iter().filter(|(n, _)| args.lengths.contains(n)).map(|(n, t)| (*n, t)).collect();
    let python = python_reference(&args, &latency_texts).await;
    match &python {
        Ok(p) => say(format!("python onnxruntime {}: {}", p["onnxruntime"], p["latency_ms"])),
        Err(reason) => say(format!("no Python figures: {reason}")),
    }

    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Value::from(round(a / b)),
        _ => Value::Null,
    };
    let rust_2048 = latency.get("2048").and_then(|l| l["median"].as_f64());
    let python_2048 = python.as_ref().ok().and_then(|p| p["latency_ms"]["2048"]["median"].as_f64());
    let batched_16 = throughput["batched"]["16"].as_f64();
    let unbatched_16 = throughput["unbatched"]["16"].as_f64();
    let out = json!({
        "model": args.model.display().to_string(),
        "form": format!("{form:?}").to_lowercase(),
        "device": device,
        "intra_threads": args.threads,
        "runs": args.runs,
        "new_tokens": if generative { Value::from(args.new_tokens) } else { Value::Null },
        "latency_ms": latency,
        "tokenize_ms_per_call": tokenize,
        "throughput_calls_per_s": throughput,
        "python": match &python {
            Ok(p) => json!({"available": true, "onnxruntime": p["onnxruntime"], "latency_ms": p["latency_ms"]}),
            Err(reason) => json!({"available": false, "reason": reason.to_string(), "latency_ms": null}),
        },
        "rust_over_python_latency": ratio(rust_2048, python_2048),
        "batched_over_unbatched_16": ratio(batched_16, unbatched_16),
    });
    println!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// One call; returns (input tokens, output tokens, tokenizing time, compute time).
async fn call(
    model: &OnnxModel,
    text: &str,
    params: &GenParams,
) -> anyhow::Result<(usize, usize, Duration, Duration)> {
    match model.form() {
        ModelForm::Scorer => {
            let out = model.score(text).await?;
            Ok((out.input_tokens, 0, out.tokenize, out.compute))
        }
        ModelForm::Generative => {
            let out = model.generate(text, params).await?;
            Ok((out.input_tokens, out.output_tokens, out.tokenize, out.compute))
        }
    }
}

/// `callers` concurrent callers calling for `period`: calls per second, and the mean batch size.
async fn calls_per_second(
    model: &Arc<OnnxModel>,
    text: &str,
    params: &GenParams,
    callers: usize,
    period: Duration,
) -> anyhow::Result<(f64, f64)> {
    // Warm-up: one call per caller.
    run_callers(model, text, params, callers, Instant::now()).await?;
    let started = Instant::now();
    let batch_sizes = run_callers(model, text, params, callers, started + period).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let mean = batch_sizes.iter().sum::<usize>() as f64 / batch_sizes.len() as f64;
    Ok((batch_sizes.len() as f64 / elapsed, mean))
}

/// Each caller calls until `until` (at least once); the batch size of every call.
async fn run_callers(
    model: &Arc<OnnxModel>,
    text: &str,
    params: &GenParams,
    callers: usize,
    until: Instant,
) -> anyhow::Result<Vec<usize>> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..callers {
        let (model, text, params) = (model.clone(), text.to_string(), params.clone());
        tasks.spawn(async move {
            let mut sizes = Vec::new();
            loop {
                let size = match model.form() {
                    ModelForm::Scorer => model.score(&text).await?.batch_size,
                    ModelForm::Generative => model.generate(&text, &params).await?.batch_size,
                };
                sizes.push(size);
                if Instant::now() >= until {
                    break;
                }
            }
            anyhow::Ok(sizes)
        });
    }
    let mut sizes = Vec::new();
    while let Some(done) = tasks.join_next().await {
        sizes.extend(done.context("a benchmark caller panicked")??);
    }
    Ok(sizes)
}

/// A prompt of about `n` tokens: the end of a made-up agent conversation rendered with the
/// model's chat template (the shortest end holding `n` tokens).
fn text_of_tokens(model: &OnnxModel, n: usize) -> anyhow::Result<String> {
    let mut turns = 8;
    let text = loop {
        let text = model.render(&conversation(turns)).map_err(|e| anyhow::anyhow!("{e}"))?;
        if model.count_tokens(&text) >= n + 64 {
            break text;
        }
        turns *= 2;
        anyhow::ensure!(turns < 1 << 16, "cannot make a text of {n} tokens with this tokenizer");
    };
    // The latest start whose suffix still holds n tokens.
    let (mut lo, mut hi) = (0, text.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        let mut start = mid;
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        if model.count_tokens(&text[start..]) >= n {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let mut start = lo;
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    Ok(text[start..].to_string())
}

/// A made-up agent conversation of `turns` steps (varied so that it does not compress to a
/// few repeated tokens).
fn conversation(turns: usize) -> Vec<Value> {
    let mut messages = vec![
        json!({"role": "system", "content": "You are a helpful assistant that can interact with a computer shell to solve programming tasks."}),
        json!({"role": "user", "content": "<pr_description>\nExponentiation is left-associative: `2^3^2` evaluates to 64.\n</pr_description>"}),
    ];
    let files =
        ["minicalc/parser.py", "minicalc/tokenizer.py", "minicalc/evaluator.py", "tests/test_eval.py"];
    for step in 0..turns {
        let file = files[step % files.len()];
        let (from, to) = (10 + (step * 37) % 200, 40 + (step * 37) % 200);
        messages.push(json!({"role": "assistant", "content": format!(
            "THOUGHT: Step {step}: let me read lines {from} to {to} of `{file}` to see how the power rule is parsed.\n\n```bash\nsed -n {from},{to}p {file}\n```"
        )}));
        let body: String = (from..to)
            .map(|line| {
                format!("{line:4}    node = BinOp(\"^\", node, self.unary())  # step {step} line {line}\n")
            })
            .take(12)
            .collect();
        messages.push(json!({"role": "user", "content": format!("<returncode>0</returncode>\n<output>\n{body}</output>")}));
    }
    messages
}

/// Latencies of Python onnxruntime on the same texts, or why there are none.
async fn python_reference(args: &CriticBenchArgs, texts: &BTreeMap<usize, &String>) -> anyhow::Result<Value> {
    let script = match &args.python_script {
        Some(path) => path.clone(),
        None => [PathBuf::from("models/bench_reference.py"), args.model.join("../bench_reference.py")]
            .into_iter()
            .find(|p| p.is_file())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "models/bench_reference.py not found (run from the repository, or pass --python-script)"
                )
            })?,
    };
    let python = args.python.clone().unwrap_or_else(|| venv_python(args.cache_dir.as_deref()));
    let check = tokio::process::Command::new(&python)
        .args(["-c", "import numpy, onnxruntime, tokenizers, jinja2"])
        .output()
        .await
        .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", python.display()))?;
    if !check.status.success() {
        anyhow::bail!(
            "{} lacks numpy/onnxruntime/tokenizers/jinja2 (make a venv with scripts/ensure-python-ref): {}",
            python.display(),
            String::from_utf8_lossy(&check.stderr).lines().last().unwrap_or("")
        );
    }
    let model = args.model.canonicalize().map_err(|e| anyhow::anyhow!("{}: {e}", args.model.display()))?;
    let request = json!({
        "model": model,
        "texts": texts.iter().map(|(n, t)| (n.to_string(), Value::from(t.as_str()))).collect::<serde_json::Map<_, _>>(),
        "runs": args.runs,
        "warmup": 2,
        "new_tokens": args.new_tokens,
        "threads": args.threads,
    });
    let mut child = tokio::process::Command::new(&python)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", python.display()))?;
    let mut stdin = child.stdin.take().ok_or_else(|| anyhow::anyhow!("no stdin"))?;
    stdin
        .write_all(request.to_string().as_bytes())
        .await
        .map_err(|e| anyhow::anyhow!("writing to Python: {e}"))?;
    drop(stdin);
    let out =
        child.wait_with_output().await.map_err(|e| anyhow::anyhow!("running {}: {e}", script.display()))?;
    if !out.status.success() {
        anyhow::bail!("{} failed: {}", script.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    serde_json::from_slice(&out.stdout)
        .map_err(|e| anyhow::anyhow!("{} printed no JSON: {e}", script.display()))
}

/// The newest venv of scripts/ensure-python-ref, else `python3`.
fn venv_python(cache_dir: Option<&Path>) -> PathBuf {
    let cache = cache_dir
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("steerbench")));
    let newest = cache.and_then(|cache| {
        std::fs::read_dir(cache)
            .ok()?
            .flatten()
            .filter(|e| {
                e.file_name().to_string_lossy().starts_with("pyref-") && e.path().join(".complete").is_file()
            })
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path().join("bin").join("python"))))
            .max()
            .map(|(_, python)| python)
    });
    newest.unwrap_or_else(|| PathBuf::from("python3"))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
