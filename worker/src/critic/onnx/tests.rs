//! Tests of the `onnx` backend against the models in `models/` and their Python references.
//!
//! Tests that run a model need the ONNX Runtime library ([`runtime_library`]): without it they
//! print why and pass, unless `CI` is set, where they fail (`scripts/ensure-ort` gets it).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::*;

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
}

fn scorer_dir() -> PathBuf {
    models().join("scorer")
}

fn generative_dir() -> PathBuf {
    models().join("tiny-generative")
}

fn reference(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("reference.json")).expect("reference.json");
    serde_json::from_str(&text).expect("reference.json is JSON")
}

/// The runtime library, or `None` (printed) when it is missing and `CI` is unset.
fn runtime() -> Option<PathBuf> {
    match runtime_library() {
        Ok(path) => Some(path),
        Err(e) if std::env::var_os("CI").is_some() => panic!("CI is set, so this test may not skip: {e}"),
        Err(e) => {
            eprintln!("skipped: {e}");
            None
        }
    }
}

fn options(library: &Path, max_batch: usize) -> OnnxOptions {
    OnnxOptions {
        max_batch,
        // Wide enough that concurrent callers on a loaded 2-core machine still meet.
        batch_window: Duration::from_millis(50),
        runtime_library: Some(library.to_path_buf()),
        ..OnnxOptions::default()
    }
}

fn load(dir: &Path, library: &Path, max_batch: usize) -> Arc<OnnxModel> {
    OnnxModel::load(dir, &options(library, max_batch)).unwrap_or_else(|e| panic!("{e}"))
}

/// A copy of a model directory in a fresh temporary directory, removed on drop.
struct TempModel {
    dir: PathBuf,
}

impl TempModel {
    fn empty() -> TempModel {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("steer-onnx-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempModel { dir }
    }

    fn copy_of(source: &Path) -> TempModel {
        let temp = TempModel::empty();
        let dir = temp.dir.clone();
        for entry in std::fs::read_dir(source).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
        temp
    }

    fn edit_config(&self, edit: impl FnOnce(String) -> String) {
        let path = self.dir.join("critic.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, edit(text)).unwrap();
    }
}

impl Drop for TempModel {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn load_error(dir: &Path, library: &Path) -> String {
    match OnnxModel::load(dir, &options(library, 16)) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Parity with Python onnxruntime

#[tokio::test]
async fn scorer_matches_the_python_reference() {
    let Some(library) = runtime() else { return };
    let model = load(&scorer_dir(), &library, 1);
    assert_eq!(model.form(), ModelForm::Scorer);
    assert_eq!(model.device(), "cpu");
    assert_eq!(model.context_length(), 8192);
    assert!(model.labels().is_empty());
    assert_eq!(model.price(), &Pricing::PerCpuHour("0.04".parse().unwrap()));
    let reference = reference(&scorer_dir());
    let cases = reference["cases"].as_array().unwrap();
    let lengths: HashSet<u64> = cases.iter().map(|c| c["input_tokens"].as_u64().unwrap()).collect();
    for n in [512, 2048, 8192] {
        assert!(lengths.contains(&n), "the reference has no case of {n} tokens");
    }
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let text = case["text"].as_str().unwrap();
        let ids = model.text.encode_window(text, model.context_length()).unwrap();
        let expect_ids = |key: &str| -> Vec<i64> {
            case[key].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect()
        };
        assert_eq!(ids.len() as u64, case["input_tokens"].as_u64().unwrap(), "{name}: token count");
        assert_eq!(ids[..8], expect_ids("first_ids")[..], "{name}: first ids");
        assert_eq!(ids[ids.len() - 8..], expect_ids("last_ids")[..], "{name}: last ids");
        assert_eq!(
            model.count_tokens(text) as u64,
            case["text_tokens"].as_u64().unwrap(),
            "{name}: count_tokens"
        );
        let out = model.score(text).await.unwrap();
        let expected = case["on_track"].as_f64().unwrap();
        let got = f64::from(out.on_track.unwrap());
        assert!((got - expected).abs() < 1e-4, "{name}: rust {got} python {expected}");
        assert_eq!(out.input_tokens, ids.len());
        assert_eq!(out.batch_size, 1);
        assert!(out.distribution.is_empty());
    }
}

#[test]
fn the_chat_template_renders_as_in_python() {
    // Rendering needs the tokenizer and template only, not the runtime.
    let dir = scorer_dir();
    let config = config::read(&dir).unwrap();
    let text = Text::load(&dir, &config).unwrap();
    let examples: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("examples.json")).unwrap()).unwrap();
    let first = examples["examples"][0]["messages"].as_array().unwrap();
    let reference = reference(&dir);
    let case =
        reference["cases"].as_array().unwrap().iter().find(|c| c["name"] == "heldout-productive").unwrap();
    assert_eq!(text.render(first).unwrap(), case["text"].as_str().unwrap());

    let dir = generative_dir();
    let config = config::read(&dir).unwrap();
    let text = Text::load(&dir, &config).unwrap();
    for case in reference_cases(&dir) {
        let messages = case["messages"].as_array().unwrap();
        assert_eq!(text.render(messages).unwrap(), case["prompt"].as_str().unwrap());
    }
}

fn reference_cases(dir: &Path) -> Vec<Value> {
    reference(dir)["cases"].as_array().unwrap().clone()
}

#[test]
fn encoding_only_the_end_of_a_long_text_gives_the_tokens_of_the_whole() {
    let dir = scorer_dir();
    let mut config = config::read(&dir).unwrap();
    let text = Text::load(&dir, &config).unwrap();
    let long: String =
        reference_cases(&dir).iter().map(|c| c["text"].as_str().unwrap()).collect::<String>().repeat(3);
    let all: Vec<i64> = text
        .tokenizer
        .encode(long.as_str(), false)
        .unwrap()
        .get_ids()
        .iter()
        .map(|&i| i64::from(i))
        .collect();
    assert!(all.len() > 6 * 8192, "{} tokens", all.len());
    for limit in [512, 2048, 8192] {
        let window = text.encode_window(&long, limit).unwrap();
        assert_eq!(window, all[all.len() - limit..], "last {limit} tokens");
    }
    // With a head kept: the first tokens, then the end.
    config.keep_start_tokens = 100;
    let text = Text::load(&dir, &config).unwrap();
    let window = text.encode_window(&long, 1000).unwrap();
    assert_eq!(window[..100], all[..100]);
    assert_eq!(window[100..], all[all.len() - 900..]);
    // A short text is left whole.
    assert_eq!(text.encode_window("ls -la", 1000).unwrap().len(), text.count("ls -la"));
}

#[tokio::test]
async fn generative_greedy_tokens_match_the_python_reference() {
    let Some(library) = runtime() else { return };
    let dir = generative_dir();
    let model = load(&dir, &library, 1);
    assert_eq!(model.form(), ModelForm::Generative);
    let reference = reference(&dir);
    let eos: Vec<u32> =
        reference["eos_token_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let max_new_tokens = reference["max_new_tokens"].as_u64().unwrap() as usize;
    for case in reference_cases(&dir) {
        let prompt = model.render(case["messages"].as_array().unwrap()).unwrap();
        assert_eq!(prompt, case["prompt"].as_str().unwrap());
        let out =
            model.generate(&prompt, &GenParams { max_new_tokens, ..GenParams::default() }).await.unwrap();
        let python: Vec<u32> =
            case["greedy_tokens"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        // Python decoded past an end-of-sequence token; the worker stops at it.
        let expected: Vec<u32> = match python.iter().position(|t| eos.contains(t)) {
            Some(at) => python[..=at].to_vec(),
            None => python.clone(),
        };
        assert_eq!(out.output_ids, expected, "prompt {prompt:?}");
        assert_eq!(out.input_tokens as u64, case["input_tokens"].as_u64().unwrap());
        assert_eq!(out.output_tokens, expected.len());
        if expected.len() == python.len() && !eos.contains(expected.last().unwrap()) {
            assert_eq!(out.text, case["greedy_text"].as_str().unwrap());
            assert_eq!(out.finish, FinishReason::Length);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Micro-batching gives the unbatched results

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn micro_batched_scores_equal_unbatched_ones() {
    let Some(library) = runtime() else { return };
    let batched = load(&scorer_dir(), &library, 16);
    let single = load(&scorer_dir(), &library, 1);
    let cases = reference_cases(&scorer_dir());
    // 12 texts of different lengths: the reference texts and cuts of them.
    let texts: Vec<String> = (0..12)
        .map(|i| {
            let text = cases[i % cases.len()]["text"].as_str().unwrap();
            let keep = text.len() * (12 - i) / 12;
            let mut cut = text.len() - keep;
            while !text.is_char_boundary(cut) {
                cut += 1;
            }
            text[cut..].to_string()
        })
        .collect();
    let mut expected = Vec::new();
    for text in &texts {
        expected.push(single.score(text).await.unwrap());
    }
    let mut tasks = Vec::new();
    for text in texts.clone() {
        let model = batched.clone();
        tasks.push(tokio::spawn(async move { model.score(&text).await }));
    }
    let mut largest = 0;
    for (task, want) in tasks.into_iter().zip(&expected) {
        let got = task.await.unwrap().unwrap();
        let (g, w) = (got.on_track.unwrap(), want.on_track.unwrap());
        assert!((g - w).abs() < 1e-5, "batched {g} unbatched {w}");
        assert_eq!(got.input_tokens, want.input_tokens);
        largest = largest.max(got.batch_size);
    }
    assert!(largest > 1, "no two of 12 concurrent calls were batched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn micro_batched_generations_equal_unbatched_ones() {
    let Some(library) = runtime() else { return };
    let dir = generative_dir();
    let batched = load(&dir, &library, 16);
    let single = load(&dir, &library, 1);
    let words = ["the agent", "ran ls again", "tests pass", "a traceback", "submit now", "edit parser.py"];
    let requests: Vec<(String, GenParams)> = (0..10)
        .map(|i| {
            let content = words.iter().cycle().skip(i).take(1 + i * 3).copied().collect::<Vec<_>>().join(" ");
            let prompt = single.render(&[serde_json::json!({"role": "user", "content": content})]).unwrap();
            let params = GenParams {
                max_new_tokens: 6 + i * 3,
                temperature: if i % 3 == 2 { 0.8 } else { 0.0 },
                top_p: if i % 3 == 2 { 0.9 } else { 1.0 },
                seed: i as u64,
                stop: Vec::new(),
            };
            (prompt, params)
        })
        .collect();
    let mut expected = Vec::new();
    for (prompt, params) in &requests {
        expected.push(single.generate(prompt, params).await.unwrap());
    }
    let mut tasks = Vec::new();
    for (prompt, params) in requests.clone() {
        let model = batched.clone();
        tasks.push(tokio::spawn(async move { model.generate(&prompt, &params).await }));
    }
    let mut largest = 0;
    for (task, want) in tasks.into_iter().zip(&expected) {
        let got = task.await.unwrap().unwrap();
        assert_eq!(got.output_ids, want.output_ids);
        assert_eq!(got.text, want.text);
        assert_eq!(got.finish, want.finish);
        largest = largest.max(got.batch_size);
    }
    assert!(largest > 1, "no two of 10 concurrent calls were batched");
}

// ---------------------------------------------------------------------------------------------
// Generation's stopping rules

#[tokio::test]
async fn generation_stops_at_a_stop_string_and_at_an_eos_token() {
    let Some(library) = runtime() else { return };
    let model = load(&generative_dir(), &library, 1);
    let prompt =
        model.render(&[serde_json::json!({"role": "user", "content": "Is the agent on track?"})]).unwrap();
    let free =
        model.generate(&prompt, &GenParams { max_new_tokens: 24, ..GenParams::default() }).await.unwrap();
    assert_eq!(free.output_tokens, 24);
    assert_eq!(free.finish, FinishReason::Length);

    // A stop string from the middle of the free text: the text ends before it.
    let chars: Vec<char> = free.text.chars().collect();
    assert!(chars.len() > 6, "{:?}", free.text);
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
    let params = GenParams {
        max_new_tokens: 24,
        stop: vec![stop.clone(), "never printed".into()],
        ..GenParams::default()
    };
    let stopped = model.generate(&prompt, &params).await.unwrap();
    assert_eq!(stopped.finish, FinishReason::Stop);
    assert_eq!(stopped.text, free.text[..free.text.find(&stop).unwrap()]);
    assert!(stopped.output_tokens < 24);
    assert_eq!(stopped.output_ids[..], free.output_ids[..stopped.output_tokens]);

    // The fourth token declared an end-of-sequence token.
    let copy = TempModel::copy_of(&generative_dir());
    let eos = free.output_ids[3];
    copy.edit_config(|t| t.replace("eos_token_ids = [2, 0]", &format!("eos_token_ids = [{eos}]")));
    let model = load(&copy.dir, &library, 1);
    let ended =
        model.generate(&prompt, &GenParams { max_new_tokens: 24, ..GenParams::default() }).await.unwrap();
    let first = free.output_ids.iter().position(|&t| t == eos).unwrap();
    assert_eq!(ended.finish, FinishReason::Eos);
    assert_eq!(ended.output_ids, free.output_ids[..=first]);
}

#[tokio::test]
async fn a_call_of_the_wrong_form_or_with_bad_parameters_is_invalid() {
    let Some(library) = runtime() else { return };
    let scorer = load(&scorer_dir(), &library, 1);
    let generative = load(&generative_dir(), &library, 1);
    assert!(matches!(scorer.generate("x", &GenParams::default()).await, Err(OnnxError::Invalid(_))));
    assert!(matches!(generative.score("x").await, Err(OnnxError::Invalid(_))));
    for params in [
        GenParams { max_new_tokens: 0, ..GenParams::default() },
        GenParams { max_new_tokens: 4096, ..GenParams::default() },
        GenParams { temperature: -1.0, ..GenParams::default() },
        GenParams { top_p: 0.0, ..GenParams::default() },
    ] {
        assert!(matches!(generative.generate("x", &params).await, Err(OnnxError::Invalid(_))), "{params:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// The scorer does its job

#[tokio::test]
async fn the_scorer_tells_productive_from_unproductive_trajectories_it_never_saw() {
    let Some(library) = runtime() else { return };
    let model = load(&scorer_dir(), &library, 16);
    let examples: Value =
        serde_json::from_str(&std::fs::read_to_string(scorer_dir().join("examples.json")).unwrap()).unwrap();
    let mut families = HashSet::new();
    for example in examples["examples"].as_array().unwrap() {
        let family = example["family"].as_str().unwrap();
        families.insert(family.to_string());
        let prompt = model.render(example["messages"].as_array().unwrap()).unwrap();
        let p = model.score(&prompt).await.unwrap().on_track.unwrap();
        let task = example["task"].as_str().unwrap();
        if example["label"] == 1 {
            assert!(p > 0.5, "{task} {family}: on track {p}");
        } else {
            assert!(p < 0.5, "{task} {family}: on track {p}");
        }
    }
    for family in ["productive", "loop", "repeated-error", "edits-without-tests", "format-errors"] {
        assert!(families.contains(family), "no held-out {family} example");
    }
}

// ---------------------------------------------------------------------------------------------
// A bad model directory fails at load, saying what is wrong

#[test]
fn a_missing_directory_is_named() {
    let library = Path::new("/nonexistent/libonnxruntime.so");
    let e = load_error(Path::new("/nonexistent/model"), library);
    assert!(e.contains("/nonexistent/model") && e.contains("no such directory"), "{e}");
}

#[test]
fn a_missing_or_invalid_critic_toml_is_named() {
    let library = Path::new("/nonexistent/libonnxruntime.so");
    let copy = TempModel::copy_of(&scorer_dir());
    copy.edit_config(|t| t.replace("context_length = 8192", "context_length = 8192\ncontext_window = 8192"));
    let e = load_error(&copy.dir, library);
    assert!(e.contains("critic.toml") && e.contains("unknown field `context_window`"), "{e}");
    assert!(e.contains(&copy.dir.display().to_string()), "{e}");

    copy.edit_config(|t| {
        t.replace("context_window = 8192\n", "").replace("form = \"scorer\"", "form = \"judge\"")
    });
    let e = load_error(&copy.dir, library);
    assert!(e.contains("critic.toml") && e.contains("unknown variant `judge`"), "{e}");

    std::fs::remove_file(copy.dir.join("critic.toml")).unwrap();
    let e = load_error(&copy.dir, library);
    assert!(e.contains("critic.toml") && e.contains("missing"), "{e}");
}

#[test]
fn a_missing_runtime_library_says_how_to_get_it() {
    let e = load_error(&scorer_dir(), Path::new("/nonexistent/libonnxruntime.so.1.31.1"));
    assert!(e.contains("/nonexistent/libonnxruntime.so.1.31.1") && e.contains("scripts/ensure-ort"), "{e}");
}

#[test]
fn a_missing_tokenizer_or_model_file_is_named() {
    let Some(library) = runtime() else { return };
    let copy = TempModel::copy_of(&scorer_dir());
    std::fs::remove_file(copy.dir.join("tokenizer.json")).unwrap();
    let e = load_error(&copy.dir, &library);
    assert!(e.contains("tokenizer.json") && e.contains("missing"), "{e}");

    let copy = TempModel::copy_of(&scorer_dir());
    std::fs::remove_file(copy.dir.join("model.onnx")).unwrap();
    let e = load_error(&copy.dir, &library);
    assert!(e.contains("model.onnx") && e.contains("missing"), "{e}");

    let copy = TempModel::copy_of(&scorer_dir());
    std::fs::write(copy.dir.join("model.onnx"), b"not a model").unwrap();
    let e = load_error(&copy.dir, &library);
    assert!(e.contains("model.onnx") && e.contains("cannot load"), "{e}");
}

#[test]
fn inputs_and_outputs_that_do_not_match_the_config_are_named() {
    let Some(library) = runtime() else { return };
    let copy = TempModel::copy_of(&scorer_dir());
    copy.edit_config(|t| format!("{t}\n[inputs]\nposition_ids = \"position_ids\"\n"));
    let e = load_error(&copy.dir, &library);
    assert!(
        e.contains("model.onnx") && e.contains("no input \"position_ids\"") && e.contains("names it"),
        "{e}"
    );

    let copy = TempModel::copy_of(&scorer_dir());
    copy.edit_config(|t| format!("{t}\n[outputs]\nscore = \"score\"\n"));
    let e = load_error(&copy.dir, &library);
    assert!(e.contains("no output \"score\"") && e.contains("logits"), "{e}");

    let copy = TempModel::copy_of(&scorer_dir());
    copy.edit_config(|t| {
        t.replace(
            "output = \"sigmoid\"",
            "output = \"softmax\"\nlabels = [{ name = \"ok\", on_track = true }, { name = \"stuck\" }, { name = \"lost\" }]",
        )
    });
    let e = load_error(&copy.dir, &library);
    assert!(e.contains("1 values per input") && e.contains("expects 3"), "{e}");

    let copy = TempModel::copy_of(&generative_dir());
    copy.edit_config(|t| format!("{t}\n[cache]\nkv_heads = 4\n"));
    let e = load_error(&copy.dir, &library);
    assert!(e.contains("cache.kv_heads = 4") && e.contains("has 2"), "{e}");

    let copy = TempModel::copy_of(&generative_dir());
    copy.edit_config(|t| format!("{t}\n[inputs]\npast_key = \"past.{{i}}.k\"\n"));
    let e = load_error(&copy.dir, &library);
    assert!(e.contains("no cache input \"past.0.k\""), "{e}");

    // A generative model's cache inputs are not a scorer's.
    let copy = TempModel::copy_of(&generative_dir());
    copy.edit_config(|t| {
        t.replace("form = \"generative\"", "form = \"scorer\"")
            .replace("[price]", "[scorer]\noutput = \"sigmoid\"\n\n[price]")
    });
    let e = load_error(&copy.dir, &library);
    assert!(e.contains("past_key_values.0.key") && e.contains("does not account for"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Finding the runtime library

#[test]
fn the_runtime_library_is_found_by_variable_then_beside_the_executable_then_in_the_cache() {
    let root = TempModel::empty();
    let exe_dir = root.dir.join("bin");
    let cache = root.dir.join("cache");
    let in_cache = cache.join(format!("onnxruntime-{ORT_VERSION}"));
    std::fs::create_dir_all(&exe_dir).unwrap();
    std::fs::create_dir_all(&in_cache).unwrap();
    let env = |vars: Vec<(&'static str, PathBuf)>| {
        move |key: &str| vars.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone().into_os_string())
    };

    // Nothing anywhere: the error says how to get it.
    let e = runtime::find(&env(vec![("STEER_CACHE_DIR", cache.clone())]), Some(&exe_dir))
        .unwrap_err()
        .to_string();
    assert!(e.contains("scripts/ensure-ort") && e.contains(&in_cache.display().to_string()), "{e}");

    std::fs::write(in_cache.join("libonnxruntime.so"), b"").unwrap();
    let found = runtime::find(&env(vec![("STEER_CACHE_DIR", cache.clone())]), Some(&exe_dir)).unwrap();
    assert_eq!(found, in_cache.join("libonnxruntime.so"));
    // HOME's cache when STEER_CACHE_DIR is unset.
    let home = root.dir.join("home");
    let in_home = home.join(".cache/steerbench").join(format!("onnxruntime-{ORT_VERSION}"));
    std::fs::create_dir_all(&in_home).unwrap();
    assert!(runtime::find(&env(vec![("HOME", home.clone())]), None).is_err());
    std::fs::write(in_home.join("libonnxruntime.so"), b"").unwrap();
    assert_eq!(
        runtime::find(&env(vec![("HOME", home.clone())]), None).unwrap(),
        in_home.join("libonnxruntime.so")
    );

    std::fs::write(exe_dir.join("libonnxruntime.so"), b"").unwrap();
    let found = runtime::find(&env(vec![("STEER_CACHE_DIR", cache.clone())]), Some(&exe_dir)).unwrap();
    assert_eq!(found, exe_dir.join("libonnxruntime.so"));

    let explicit = root.dir.join("custom.so");
    std::fs::write(&explicit, b"").unwrap();
    let found = runtime::find(&env(vec![("ORT_DYLIB_PATH", explicit.clone())]), Some(&exe_dir)).unwrap();
    assert_eq!(found, explicit);
    let e = runtime::find(&env(vec![("ORT_DYLIB_PATH", root.dir.join("gone.so"))]), Some(&exe_dir))
        .unwrap_err()
        .to_string();
    assert!(e.contains("ORT_DYLIB_PATH") && e.contains("gone.so") && e.contains("scripts/ensure-ort"), "{e}");
}
