use std::str::FromStr;

use super::*;

/// A valid sweep; tests add lines to the agent (line 8) or replace text.
const MINIMAL: &str = r#"name = "t"
[dataset]
name = "demo"
[[agents]]
name = "a"
base_url = "http://127.0.0.1:8000/v1"
model = "m"
#AGENT
[[critics]]
name = "none"
kind = "none"
"#;

const AGENT_TABLE: &str =
    "[[agents]]\nname = \"a\"\nbase_url = \"http://127.0.0.1:8000/v1\"\nmodel = \"m\"\n#AGENT\n";

fn with_agent_line(line: &str) -> String {
    MINIMAL.replace("#AGENT", line)
}

/// MINIMAL with the `agent` executor (plus `lines` in its table), whose agent calls a model
/// and so says what it costs: `price` (e.g. `price = "free"`).
fn with_agent_executor(lines: &str, price: &str) -> String {
    MINIMAL
        .replace("[[agents]]", &format!("[executor]\nkind = \"agent\"\n{lines}\n[[agents]]"))
        .replace("#AGENT", price)
}

fn error(text: &str) -> String {
    match parse(text, "sweep.toml") {
        Ok(sweep) => panic!("expected an error, parsed {sweep:?}"),
        Err(e) => e.to_string(),
    }
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn example(name: &str, text: &str) -> SweepFile {
    parse(text, name).unwrap_or_else(|e| panic!("{e}"))
}

const PLACEHOLDER: &str = include_str!("../../../examples/placeholder-sweep.toml");
const DEMO: &str = include_str!("../../../examples/demo-sweep.toml");
const AGENT: &str = include_str!("../../../examples/agent-sweep.toml");
const FULL: &str = include_str!("../../../examples/full-sweep.toml");

#[test]
fn placeholder_example_parses() {
    let demo = example("placeholder-sweep.toml", PLACEHOLDER);
    assert_eq!(demo.dataset, DatasetRef { name: "demo".into(), path: Some("demo-dataset.jsonl".into()) });
    assert_eq!((demo.repeats, demo.agents.len(), demo.critics.len()), (2, 2, 1));
    assert!(demo.budget_usd.is_some());
    let ExecutorSpec::Placeholder(placeholder) = &demo.executor else { panic!("demo uses the placeholder") };
    assert!(placeholder.duration_ms <= 500);
}

#[test]
fn full_example_sets_every_key() {
    let full = example("full-sweep.toml", FULL);
    assert_eq!(full.name, "verified-qwen-critic");
    assert!(full.description.is_some());
    assert_eq!((full.repeats, full.max_attempts, full.max_running), (3, 3, Some(64)));
    assert_eq!(full.budget_usd, Some(dec("25")));
    assert_eq!(full.dataset.path.as_deref(), Some("data/verified.parquet"));
    let select = &full.select;
    assert_eq!((select.ids.len(), select.repos.len(), select.difficulty.len()), (3, 1, 2));
    assert_eq!(select.id_regex.as_deref(), Some("^django__"));
    assert_eq!(select.sample, Some(Sample { n: 2, seed: 7 }));
    let ExecutorSpec::Placeholder(placeholder) = &full.executor else {
        panic!("full example uses the placeholder")
    };
    assert_eq!(placeholder.cost_per_step_usd, dec("0.001"));

    let qwen = &full.agents[0];
    assert_eq!(qwen.api_key_env.as_deref(), Some("QWEN_API_KEY"));
    assert_eq!(
        qwen.sampling,
        Sampling {
            temperature: Some(0.0),
            top_p: Some(1.0),
            max_tokens: Some(2048),
            seed: Some(1),
            stop: vec![]
        }
    );
    assert_eq!(
        qwen.limits,
        AgentLimits { max_steps: 150, max_cost_usd: Some(dec("6")), max_wall_time_s: 3600 }
    );
    assert_eq!(qwen.max_concurrency, Some(16));
    // `[agents.price]` as a table, amounts as strings, cached price defaulting to input.
    assert_eq!(
        full.agents[1].price,
        Price { input_per_mtok: dec("0.1"), output_per_mtok: dec("0.3"), cached_input_per_mtok: dec("0.1") }
    );
    assert_eq!(full.critics[0], CriticSpec::none("none"));
    let scorer = &full.critics[1];
    assert_eq!((scorer.name.as_str(), scorer.kind(), full.critics.len()), ("scorer", CriticKind::Onnx, 2));
    let p: CriticParams = scorer.params().cloned().unwrap();
    assert_eq!((p.every_k, p.trained_on.as_deref()), (Some(5), Some("qwen3-next-80b")));
    assert_eq!(p.onnx.unwrap().model, "/opt/steerbench/models/scorer");
}

#[test]
fn defaults_apply_when_keys_are_absent() {
    let sweep = parse(MINIMAL, "sweep.toml").unwrap();
    assert_eq!((sweep.repeats, sweep.max_attempts, sweep.budget_usd, sweep.max_running), (1, 3, None, None));
    assert_eq!(sweep.select, Selection::default());
    assert_eq!(sweep.executor, ExecutorSpec::Placeholder(PlaceholderSpec::default()));
    let agent = &sweep.agents[0];
    assert_eq!((&agent.sampling, &agent.price), (&Sampling::default(), &Price::default()));
    assert_eq!(agent.limits, AgentLimits::default());
}

#[test]
fn float_money_is_exact() {
    let text = with_agent_line(
        "price = { input_per_mtok = 0.15, output_per_mtok = 1.50, cached_input_per_mtok = 0.015 }\nmax_cost_usd = 6",
    );
    let agent = &parse(&text, "sweep.toml").unwrap().agents[0];
    assert_eq!(agent.price.input_per_mtok.to_string(), "0.15");
    assert_eq!(agent.price.output_per_mtok.to_string(), "1.5");
    assert_eq!(agent.price.cached_input_per_mtok.to_string(), "0.015");
    assert_eq!(agent.limits.max_cost_usd, Some(dec("6")));
    // The same amounts written as strings give the same spec.
    let as_strings = with_agent_line(
        r#"price = { input_per_mtok = "0.15", output_per_mtok = "1.50", cached_input_per_mtok = "0.015" }
max_cost_usd = "6.00""#,
    );
    assert_eq!(parse(&as_strings, "sweep.toml").unwrap(), parse(&text, "sweep.toml").unwrap());
}

#[test]
fn config_hash_ignores_layout_key_order_comments_description_and_path() {
    let reordered = r#"
# the same sweep, written differently
[[critics]]
kind = "none"      # order of keys does not matter
name = "none"

[[agents]]
model = "m"
base_url = "http://127.0.0.1:8000/v1"
name = "a"

[dataset]
path = "somewhere/else.jsonl"
name = "demo"
"#;
    // Top-level keys must precede tables, so they go first.
    let reordered = format!("description = \"prose\"\nname = \"t\"\n{reordered}");
    let a = parse(MINIMAL, "sweep.toml").unwrap();
    let b = parse(&reordered, "other.toml").unwrap();
    assert_eq!(a.config_hash(), b.config_hash());
    assert_eq!(a.config_hash().len(), 64);
}

#[test]
fn config_hash_changes_with_meaningful_values() {
    let base = parse(MINIMAL, "sweep.toml").unwrap().config_hash();
    for change in [
        MINIMAL.replace("name = \"t\"", "name = \"t\"\nrepeats = 2"),
        MINIMAL.replace("name = \"demo\"", "name = \"verified\""),
        with_agent_line("temperature = 0.5"),
        with_agent_line("price = { input_per_mtok = 0.15, output_per_mtok = 1.5 }"),
        MINIMAL.replace("model = \"m\"", "model = \"m2\""),
    ] {
        assert_ne!(parse(&change, "sweep.toml").unwrap().config_hash(), base, "{change}");
    }
}

#[test]
fn validation_errors_name_path_and_line() {
    let cases = [
        (with_agent_line("temperature = 3"), "sweep.toml:8: agents[0].temperature: must be between 0 and 2 (found 3)"),
        (with_agent_line("top_p = 0"), "sweep.toml:8: agents[0].top_p: must be greater than 0 and at most 1 (found 0)"),
        (with_agent_line("max_tokens = 0"), "sweep.toml:8: agents[0].max_tokens: must be at least 1 (found 0)"),
        (with_agent_line("max_steps = 0"), "sweep.toml:8: agents[0].max_steps: must be at least 1 (found 0)"),
        (with_agent_line("max_wall_time_s = 0"), "sweep.toml:8: agents[0].max_wall_time_s: must be at least 1 (found 0)"),
        (with_agent_line("max_concurrency = 0"), "sweep.toml:8: agents[0].max_concurrency: must be at least 1 (found 0)"),
        (with_agent_line("max_tokens = \"2048\""), "sweep.toml:8: agents[0].max_tokens: expected an integer, found a string"),
        (with_agent_line("max_cost_usd = -1"), "sweep.toml:8: agents[0].max_cost_usd: must not be negative"),
        (
            with_agent_line("price = { input_per_mtok = 0.1 }"),
            "sweep.toml:8: agents[0].price.output_per_mtok: required but missing",
        ),
        (
            // A table made by dotted keys has no span of its own: its key's line is used.
            with_agent_line("price.input_per_mtok = 0.1"),
            "sweep.toml:8: agents[0].price.output_per_mtok: required but missing",
        ),
        (
            with_agent_line("price = { input_per_mtok = \"cheap\", output_per_mtok = 1 }"),
            "sweep.toml:8: agents[0].price.input_per_mtok: expected an amount in dollars (a number, or a string such as \"0.15\")",
        ),
        (
            MINIMAL.replace("http://127.0.0.1:8000/v1", "ftp://x"),
            "sweep.toml:6: agents[0].base_url: not a valid http(s) URL (\"ftp://x\")",
        ),
        (
            MINIMAL.replace("name = \"a\"", "name = \"a b\""),
            "sweep.toml:5: agents[0].name: \"a b\" is not a valid name (use letters, digits, `.`, `_` and `-`)",
        ),
        (
            MINIMAL.replace("#AGENT", "[[agents]]\nname = \"a\"\nbase_url = \"http://h/v1\"\nmodel = \"m\""),
            "sweep.toml:9: agents[1].name: another agent is already named `a`",
        ),
        (
            MINIMAL.replace("kind = \"none\"", "kind = \"onnx\""),
            "sweep.toml:9: critics[0].model: required but missing",
        ),
        (
            MINIMAL.replace("kind = \"none\"", "kind = \"nnoe\""),
            "sweep.toml:11: critics[0].kind: unknown critic kind `nnoe`; did you mean `none`?",
        ),
        (
            MINIMAL.replace("kind = \"none\"", "kind = \"none\"\nthreshold = 0.5"),
            "sweep.toml:12: critics[0].threshold: critic kind `none` takes no parameters",
        ),
        (
            MINIMAL.replace("[[agents]]", "[executor]\nkind = \"docker\"\n[[agents]]"),
            "sweep.toml:5: executor.kind: unknown executor kind `docker` (this build has: placeholder, evaluate, agent)",
        ),
        (
            MINIMAL.replace("[[agents]]", "[executor]\nkind = \"placeholder\"\nresolve_probability = 1.5\n[[agents]]"),
            "sweep.toml:6: executor.resolve_probability: must be between 0 and 1 (found 1.5)",
        ),
        (
            MINIMAL.replace("[[agents]]", "[select]\nsample = { n = 0 }\n[[agents]]"),
            "sweep.toml:5: select.sample.n: must be at least 1 (found 0)",
        ),
        (MINIMAL.replace("name = \"t\"", "name = \"t\"\nrepeats = 0"), "sweep.toml:2: repeats: must be at least 1 (found 0)"),
        (
            MINIMAL.replace(AGENT_TABLE, "").replace("name = \"t\"", "name = \"t\"\nagents = 3"),
            "sweep.toml:2: agents: expected an array of tables (`[[agents]]`)",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(error(&text), expected, "{text}");
    }
}

#[test]
fn secret_looking_api_key_env_is_rejected_without_echo() {
    for secret in ["sk-proj-abc123DEF456ghi789", "hf_AbCdEfGhIjKlMnOpQrStUvWxYz", "Xk3mQ9vT2pL8wR4nZ7bY1cF6"]
    {
        let message = error(&with_agent_line(&format!("api_key_env = \"{secret}\"")));
        assert!(
            message.starts_with("sweep.toml:8: agents[0].api_key_env: this looks like an API key itself"),
            "{message}"
        );
        assert!(message.contains("NAME of the environment variable"), "{message}");
        assert!(!message.contains(secret), "{message}");
    }
    // Not a valid name either, and still not echoed.
    let message = error(&with_agent_line("api_key_env = \"my key\""));
    assert!(
        message.starts_with("sweep.toml:8: agents[0].api_key_env: not an environment variable name"),
        "{message}"
    );
    assert!(!message.contains("my key"), "{message}");
    // Real variable names pass.
    for name in ["OPENAI_API_KEY", "HF_TOKEN", "_KEY2"] {
        parse(&with_agent_line(&format!("api_key_env = \"{name}\"")), "sweep.toml").unwrap();
    }
}

#[test]
fn worker_settings_are_refused_as_api_key_env() {
    for name in ["STEER_TOKEN", "STEER_REGISTRY_PASSWORD", "STEER_METRICS_TOKEN"] {
        let message = error(&with_agent_line(&format!("api_key_env = \"{name}\"")));
        assert!(
            message.starts_with(&format!(
                "sweep.toml:8: agents[0].api_key_env: `{name}` is one of the worker's own settings (`STEER_*`)"
            )),
            "{message}"
        );
    }
}

#[test]
fn credentials_in_base_url_are_not_echoed() {
    let message = error(&MINIMAL.replace("http://127.0.0.1:8000/v1", "https://user:hunter2@host/v1"));
    assert!(
        message.starts_with("sweep.toml:6: agents[0].base_url: must not contain credentials"),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");
}

#[test]
fn unknown_keys_are_rejected_with_a_suggestion() {
    assert_eq!(
        error(&with_agent_line("temprature = 0")),
        "sweep.toml:8: unknown key `temprature` in agents[0]; did you mean `temperature`?"
    );
    assert_eq!(
        error(&MINIMAL.replace("name = \"t\"", "nmae = \"t\"")),
        "sweep.toml:1: unknown key `nmae` at the top level; did you mean `name`?"
    );
    assert_eq!(
        error(&with_agent_line("price = { input_per_mtok = 1, output_per_mtok = 1, cahced_input_per_mtok = 1 }")),
        "sweep.toml:8: unknown key `cahced_input_per_mtok` in agents[0].price; did you mean `cached_input_per_mtok`?"
    );
    assert_eq!(
        error(&MINIMAL.replace("[dataset]", "[datasett]")),
        "sweep.toml:2: unknown key `datasett` at the top level; did you mean `dataset`?"
    );
    // Nothing close: list what is allowed.
    assert_eq!(
        error(&MINIMAL.replace("name = \"demo\"", "name = \"demo\"\nformat = \"jsonl\"")),
        "sweep.toml:4: unknown key `format` in dataset (known keys: name, path)"
    );
}

#[test]
fn missing_required_keys_are_named() {
    let cases = [
        (MINIMAL.replace("name = \"t\"\n", ""), "sweep.toml: name: required but missing"),
        (MINIMAL.replace("[dataset]\nname = \"demo\"\n", ""), "sweep.toml: dataset: required but missing"),
        (MINIMAL.replace("[dataset]\nname = \"demo\"", "[dataset]"), "sweep.toml:2: dataset.name: required but missing"),
        (MINIMAL.replace("model = \"m\"\n", ""), "sweep.toml:4: agents[0].model: required but missing"),
        (MINIMAL.replace("kind = \"none\"\n", ""), "sweep.toml:9: critics[0].kind: required but missing"),
        (
            MINIMAL.replace(AGENT_TABLE, ""),
            "sweep.toml: agents: no agents: add at least one `[[agents]]` table",
        ),
        (
            MINIMAL.replace("[[critics]]\nname = \"none\"\nkind = \"none\"\n", ""),
            "sweep.toml: critics: no critics: add at least one `[[critics]]` table (kind = \"none\" runs the agent alone)",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(error(&text), expected, "{text}");
    }
}

#[test]
fn bad_regex_is_rejected() {
    let message = error(&MINIMAL.replace("[[agents]]", "[select]\nid_regex = \"django__(\"\n[[agents]]"));
    assert_eq!(message, "sweep.toml:5: select.id_regex: not a valid regular expression (unclosed group)");
}

#[test]
fn toml_syntax_errors_have_a_line() {
    let message = error(&with_agent_line("temperature = = 0"));
    assert!(message.starts_with("sweep.toml:8: not valid TOML:"), "{message}");
}

#[test]
fn inline_arrays_of_tables_work_too() {
    let text = r#"
name = "t"
dataset = { name = "demo" }
agents = [{ name = "a", base_url = "https://h/v1", model = "m" }]
critics = [{ name = "none", kind = "none" }]
"#;
    let sweep = parse(text, "sweep.toml").unwrap();
    assert_eq!(sweep.agents[0].base_url, "https://h/v1");
    assert_eq!(
        error(&text.replace("model = \"m\"", "model = \"m\", top_p = 2")),
        "sweep.toml:4: agents[0].top_p: must be greater than 0 and at most 1 (found 2)"
    );
}

#[test]
fn spec_round_trips_through_json_with_the_same_hash() {
    let full = example("full-sweep.toml", FULL);
    let stored: SweepFile = serde_json::from_str(&serde_json::to_string(&full).unwrap()).unwrap();
    assert_eq!(stored, full);
    assert_eq!(stored.config_hash(), full.config_hash());
}

#[test]
fn critic_kind_list_matches_protocol() {
    for kind in CRITIC_KINDS {
        serde_json::from_value::<CriticKind>(Json::String((*kind).into())).unwrap();
    }
    for kind in PLANNED_CRITIC_KINDS {
        assert!(
            serde_json::from_value::<CriticKind>(Json::String((*kind).into())).is_err(),
            "{kind} is available now"
        );
    }
}

#[test]
fn evaluate_executor_and_sandbox_settings_parse() {
    let text = MINIMAL.replace(
        "[[agents]]",
        "[executor]\nkind = \"evaluate\"\nprofile = \"v4\"\npatch = \"gold\"\n\
         [sandbox]\nnetwork = true\nmemory_mb = 2048\nimage_namespace = \"steerbench\"\n\
         eval_timeout_s = 600\nimage_overrides = { \"x__y-1\" = \"local/x:1\" }\n[[agents]]",
    );
    let sweep = parse(&text, "sweep.toml").unwrap();
    assert_eq!(
        sweep.executor,
        ExecutorSpec::Evaluate(EvaluateSpec { profile: GradingProfile::V4, patch: PatchSource::Gold })
    );
    assert!(sweep.sandbox.network);
    assert_eq!(sweep.sandbox.memory_mb, Some(2048));
    assert_eq!(sweep.sandbox.image_namespace, "steerbench");
    assert_eq!(sweep.sandbox.image_tag, "latest");
    assert_eq!(sweep.sandbox.eval_timeout_s, 600);
    assert_eq!(sweep.sandbox.image_overrides["x__y-1"], "local/x:1");
    // Absent: no network, the official namespace, the harness's 1,800 s.
    let plain = parse(MINIMAL, "sweep.toml").unwrap();
    assert_eq!(plain.sandbox, SandboxSettings::default());
    assert!(!plain.sandbox.network);
}

#[test]
fn evaluate_and_sandbox_errors_name_their_keys() {
    let bad_profile =
        MINIMAL.replace("[[agents]]", "[executor]\nkind = \"evaluate\"\nprofile = \"v3\"\n[[agents]]");
    assert!(
        error(&bad_profile).contains("executor.profile: `v3` is not a grading profile"),
        "{}",
        error(&bad_profile)
    );
    let bad_sandbox = MINIMAL.replace("[[agents]]", "[sandbox]\nnetwork = \"yes\"\n[[agents]]");
    assert!(error(&bad_sandbox).contains("sandbox.network: expected a boolean"), "{}", error(&bad_sandbox));
}

#[test]
fn the_demo_runs_the_replay_agent_with_the_paper_preset() {
    let demo = example("demo-sweep.toml", DEMO);
    let ExecutorSpec::Agent(spec) = &demo.executor else { panic!("the demo runs an agent") };
    assert_eq!(spec.preset.as_deref(), Some("paper"));
    assert_eq!(demo.agents[0].model, "replay");
    assert_eq!(demo.dataset.path.as_deref(), Some("../docker/fixtures/dataset.jsonl"));
}

#[test]
fn the_paper_preset_sets_defaults_that_keys_override() {
    let agent_sweep = example("agent-sweep.toml", AGENT);
    let ExecutorSpec::Agent(spec) = &agent_sweep.executor else { panic!("an agent sweep") };
    assert_eq!((spec.command_timeout_s, spec.observation_max_chars), (60, 10_000));
    assert_eq!(spec.edit_context_lines, Some(5));
    let (qwen80, qwen32) = (&agent_sweep.agents[0], &agent_sweep.agents[1]);
    // Unset on the agent: the paper's 0.0 / 2,048 / 150 steps / $6.
    assert_eq!((qwen80.sampling.temperature, qwen80.sampling.max_tokens), (Some(0.0), Some(2048)));
    assert_eq!((qwen80.limits.max_steps, qwen80.limits.max_cost_usd), (150, Some(dec("6"))));
    assert_eq!(qwen80.extra_body["top_k"], serde_json::json!(20));
    assert_eq!(qwen80.tokenizer.as_deref(), Some("/models/qwen3-next-80b/tokenizer.json"));
    // Set on the agent: its own values.
    assert_eq!((qwen32.limits.max_steps, qwen32.limits.max_cost_usd), (100, Some(dec("3.0"))));

    // Without a preset: no edit context, the agent's defaults.
    let plain = parse(&with_agent_executor("", "price = \"free\""), "t.toml").unwrap();
    let ExecutorSpec::Agent(spec) = &plain.executor else { panic!() };
    assert_eq!(spec, &AgentExecSpec::default());
    assert_eq!(plain.agents[0].sampling.temperature, None);
    let off = with_agent_executor(
        "preset = \"paper\"\nedit_context_lines = -1\nscaffold = \"tool_calling\"",
        "price = \"free\"",
    );
    let ExecutorSpec::Agent(spec) = parse(&off, "t.toml").unwrap().executor else { panic!() };
    assert_eq!((spec.edit_context_lines, spec.scaffold), (None, Scaffold::ToolCalling));

    // mini-swe-agent 1.x's behaviour: no wall-time or format-error limit unless set, its
    // sandbox variables.
    let paper = parse(&with_agent_executor("preset = \"paper\"", "price = \"free\""), "t.toml").unwrap();
    let ExecutorSpec::Agent(spec) = &paper.executor else { panic!() };
    assert_eq!(spec.max_format_errors, u32::MAX);
    assert_eq!(
        spec.sandbox_env,
        ["PAGER=cat", "MANPAGER=cat", "LESS=-R", "PIP_PROGRESS_BAR=off", "TQDM_DISABLE=1"]
    );
    assert_eq!(paper.agents[0].limits.max_wall_time_s, 0);
    let set = with_agent_executor(
        "preset = \"paper\"\nmax_format_errors = 3",
        "price = \"free\"\nmax_wall_time_s = 60",
    );
    let set = parse(&set, "t.toml").unwrap();
    let ExecutorSpec::Agent(spec) = &set.executor else { panic!() };
    assert_eq!((spec.max_format_errors, set.agents[0].limits.max_wall_time_s), (3, 60));
}

#[test]
fn agent_executor_errors_name_their_keys() {
    let with_executor = |lines: &str| with_agent_executor(lines, "price = \"free\"");
    let cases = [
        ("preset = \"papr\"", "executor.preset: unknown preset `papr`"),
        ("scaffold = \"tools\"", "executor.scaffold: `tools` is not a scaffold"),
        ("workdir = \"testbed\"", "executor.workdir: must be an absolute path"),
        ("observation_template = \"{{ retrncode }}\"", "executor.observation_template: template error"),
        ("instance_template = \"{% if task %}\"", "executor.instance_template: template error"),
        (
            "system_template_file = \"s.j2\"",
            "executor.system_template_file: template files are read by `steer sweep submit`",
        ),
        ("max_steps = 3", "unknown key `max_steps` in executor"),
    ];
    for (line, expected) in cases {
        let e = error(&with_executor(line));
        assert!(e.contains(expected), "{line}: {e}");
        assert!(e.starts_with("sweep.toml:"), "{e}");
    }
    let reserved = with_agent_line("extra_body = { model = \"x\" }");
    assert!(
        error(&reserved).contains("agents[0].extra_body.model: `model` is set by the agent loop"),
        "{}",
        error(&reserved)
    );
}

#[test]
fn template_files_are_inlined_relative_to_the_sweep_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sys.j2"), "You fix bugs in {{ repo }}.").unwrap();
    let text = with_agent_executor("system_template_file = \"sys.j2\"", "price = \"free\"");
    let inlined = inline_template_files(&text, dir.path()).unwrap();
    let sweep = parse(&inlined, "t.toml").unwrap();
    let ExecutorSpec::Agent(spec) = sweep.executor else { panic!() };
    assert_eq!(spec.templates.system, "You fix bugs in {{ repo }}.");
    assert_eq!(inline_template_files(MINIMAL, dir.path()).unwrap(), MINIMAL, "nothing to inline: unchanged");
    let missing = text.replace("sys.j2", "nope.j2");
    let e = inline_template_files(&missing, dir.path()).unwrap_err();
    let e = e.to_string();
    assert!(e.contains("executor.system_template_file: cannot read") && e.contains("nope.j2"), "{e}");
}

fn with_critic(lines: &str) -> String {
    MINIMAL.replace(
        "[[critics]]\nname = \"none\"\nkind = \"none\"\n",
        &format!("[[critics]]\nname = \"c\"\n{lines}\n"),
    )
}

fn critic_params(lines: &str) -> (CriticKind, CriticParams) {
    let sweep = parse(&with_critic(lines), "t.toml").unwrap_or_else(|e| panic!("{e}"));
    let c = &sweep.critics[0];
    (c.kind(), c.params().cloned().unwrap())
}

#[test]
fn critic_conditions_are_normalised_with_their_defaults_and_presets() {
    let (kind, p) = critic_params("kind = \"heuristic\"\nrepeated_command = 4");
    assert_eq!(kind, CriticKind::Heuristic);
    assert_eq!((p.every_k, p.events.clone()), (Some(1), vec![CriticEvent::Submit]));
    assert_eq!(p.heuristic.unwrap().repeated_command, 4);

    let remote =
        "kind = \"remote\"\npreset = \"paper\"\nbase_url = \"http://127.0.0.1:9000/v1\"\nmodel = \"opus\"\n\
                  price = { input_per_mtok = 3, output_per_mtok = 15 }";
    let (kind, p) = critic_params(remote);
    assert_eq!(kind, CriticKind::Remote);
    // The paper: every 5 steps, 5 critiques of history, 1,500-character folds, the step note
    // from step 100, greedy decoding up to 4,096 tokens.
    assert_eq!((p.every_k, p.history, p.fold_chars, p.step_aware_after), (Some(5), 5, 1500, Some(100)));
    let r = p.remote.unwrap();
    assert_eq!((r.sampling.temperature, r.sampling.max_tokens), (Some(0.0), Some(4096)));
    assert_eq!(r.price.output_per_mtok, dec("15"));
    assert_eq!(p.stop_on_status, None, "stopping is off unless asked");
    let (_, p) = critic_params(&format!(
        "{remote}\nevery_k = 10\nevents = [\"edit\", \"submit\"]\nmax_interventions = 3"
    ));
    assert_eq!(
        (p.every_k, p.events, p.max_interventions),
        (Some(10), vec![CriticEvent::Edit, CriticEvent::Submit], Some(3))
    );
}

#[test]
fn critic_errors_name_their_keys() {
    let remote =
        "kind = \"remote\"\nbase_url = \"http://127.0.0.1:9000/v1\"\nmodel = \"m\"\nprice = \"free\"";
    let cases = [
        (remote.to_string(), "critics[0].every_k: this critic would never be asked"),
        (format!("{remote}\nevery_k = 5\nevents = [\"edits\"]"), "critics[0].events: unknown event `edits`"),
        (format!("{remote}\nevery_k = 5\nrepeated_command = 3"), "unknown key `repeated_command`"),
        (
            format!("{remote}\nevery_k = 5\nscore_threshold = 0.5"),
            "critics[0].score_threshold: applies to scorer critics",
        ),
        (format!("{remote}\npreset = \"paperr\""), "critics[0].preset: unknown critic preset `paperr`"),
        (
            format!("{remote}\nevery_k = 5\nfeedback_template = \"{{{{ curent }}}}\""),
            "critics[0].feedback_template: feedback template",
        ),
        (
            "kind = \"remote\"\nevery_k = 5\nmodel = \"m\"".to_string(),
            "critics[0].base_url: required but missing",
        ),
        ("kind = \"heuristic\"\nbase_url = \"http://x/v1\"".to_string(), "unknown key `base_url`"),
    ];
    for (lines, expected) in cases {
        let e = error(&with_critic(&lines));
        assert!(e.contains(expected), "{lines}: {e}");
    }
}

#[test]
fn prefix_replay_names_a_fresh_condition_of_the_sweep() {
    let base = "[[critics]]\nname = \"none\"\nkind = \"none\"\n";
    let critic = |lines: &str| format!("[[critics]]\nname = \"rules\"\nkind = \"heuristic\"\n{lines}\n");
    let sweep = |critics: String| MINIMAL.replace(base, &critics);
    let ok = parse(&sweep(format!("{base}{}", critic("prefix_from = \"none\"\nprefix_steps = 5"))), "t.toml")
        .unwrap();
    let (_, p) = (ok.critics[1].kind(), ok.critics[1].params().cloned().unwrap());
    assert_eq!((p.prefix_from.as_deref(), p.prefix_steps), (Some("none"), Some(5)));
    let cases = [
        (
            sweep(format!("{base}{}", critic("prefix_from = \"nope\""))),
            "critics[1].prefix_from: no critic condition is named `nope`",
        ),
        (
            sweep(format!("{base}{}", critic("prefix_from = \"rules\""))),
            "critics[1].prefix_from: a condition cannot replay itself",
        ),
        (
            sweep(format!("{base}{}", critic("prefix_steps = 5"))),
            "critics[1].prefix_steps: needs `prefix_from`",
        ),
    ];
    for (text, expected) in cases {
        let e = error(&text);
        assert!(e.contains(expected), "{e}");
    }
}

#[test]
fn every_example_sweep_parses() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            parse(&text, &path.display().to_string()).unwrap_or_else(|e| panic!("{e}"));
            seen += 1;
        }
    }
    assert!(seen >= 5, "{seen} example sweeps");
}

#[test]
fn a_critic_names_the_agent_that_trained_it() {
    let remote = "kind = \"remote\"\npreset = \"paper\"\nbase_url = \"http://127.0.0.1:9000/v1\"\n\
                  model = \"critic\"\nprice = \"free\"";
    let (_, p) = critic_params(&format!("{remote}\ntrained_on = \"qwen3-next-80b\""));
    assert_eq!(p.trained_on.as_deref(), Some("qwen3-next-80b"));
    assert_eq!(critic_params(remote).1.trained_on, None, "unknown unless said");
    let cases = [
        (format!("{remote}\ntrained_on = \" \""), "critics[0].trained_on: names the agent"),
        (format!("{remote}\ntrained_on = 3"), "critics[0].trained_on"),
        ("kind = \"heuristic\"\ntrained_on = \"a\"".to_string(), "a rule-based critic"),
        ("kind = \"none\"\ntrained_on = \"a\"".to_string(), "critic kind `none` takes no parameters"),
    ];
    for (lines, expected) in cases {
        let e = error(&with_critic(&lines));
        assert!(e.contains(expected), "{lines}: {e}");
    }
}

#[test]
fn sandbox_limits_default_to_a_swe_bench_task_and_are_settable() {
    // Unset: every container gets 4 GiB, 2 CPUs, 4,096 processes and 10 GiB of disk.
    let plain = parse(MINIMAL, "sweep.toml").unwrap();
    let s = &plain.sandbox;
    assert_eq!(
        (s.memory_mb, s.cpus, s.pids_limit, s.disk_mb),
        (Some(4096), Some(2.0), Some(4096), Some(10240))
    );
    let set = MINIMAL.replace(
        "[[agents]]",
        "[sandbox]\nmemory_mb = 8192\ncpus = 0.5\npids_limit = 512\ndisk_mb = 20480\n[[agents]]",
    );
    let s = parse(&set, "sweep.toml").unwrap().sandbox;
    assert_eq!(
        (s.memory_mb, s.cpus, s.pids_limit, s.disk_mb),
        (Some(8192), Some(0.5), Some(512), Some(20480))
    );
}

#[test]
fn bad_sandbox_limits_are_line_numbered_errors() {
    let bad = |line: &str| error(&MINIMAL.replace("[[agents]]", &format!("[sandbox]\n{line}\n[[agents]]")));
    for (line, expected) in [
        ("memory_mb = 0", "sweep.toml:5: sandbox.memory_mb: must be at least 16 (found 0)"),
        ("disk_mb = 1", "sweep.toml:5: sandbox.disk_mb: must be at least 64 (found 1)"),
        ("disk_mb = \"10G\"", "sweep.toml:5: sandbox.disk_mb: expected an integer, found a string"),
        ("pids_limit = -1", "sweep.toml:5: sandbox.pids_limit: must be at least 16 (found -1)"),
        ("cpus = 0", "sweep.toml:5: sandbox.cpus: must be greater than 0 and at most 1024 (found 0)"),
        ("cpus = inf", "sweep.toml:5: sandbox.cpus: must be greater than 0 and at most 1024 (found inf)"),
    ] {
        assert_eq!(bad(line), expected, "{line}");
    }
}

#[test]
fn a_model_that_is_called_without_a_price_is_refused_naming_the_key() {
    // An unpriced agent would cost $0 a call: max_cost_usd and budget_usd could never stop it.
    assert_eq!(
        error(&with_agent_executor("", "")),
        "sweep.toml:7: agents[0].price: required: this agent calls a model, and without a price \
         its calls would cost $0, so max_cost_usd and budget_usd could not stop it; set price = \
         { input_per_mtok = ..., output_per_mtok = ... } (dollars per million tokens), or \
         price = \"free\" for an endpoint that costs nothing"
    );
    // A remote critic calls its model whenever it is asked, whatever the executor.
    let critic =
        with_critic("kind = \"remote\"\nevery_k = 5\nbase_url = \"http://127.0.0.1:9000/v1\"\nmodel = \"m\"");
    let e = error(&critic);
    assert!(
        e.starts_with("sweep.toml:9: critics[0].price: required: this critic calls a model")
            && e.contains("so budget_usd could not stop it; set price = {")
            && e.ends_with("or price = \"free\" for an endpoint that costs nothing"),
        "{e}"
    );
    // The placeholder and evaluate executors never call the agents: no price needed.
    let placeholder = parse(MINIMAL, "t.toml").unwrap();
    assert_eq!(placeholder.agents[0].price, Price::default());
    let evaluate = MINIMAL.replace("[[agents]]", "[executor]\nkind = \"evaluate\"\n[[agents]]");
    assert_eq!(parse(&evaluate, "t.toml").unwrap().agents[0].price, Price::default());
}

#[test]
fn free_and_explicit_zero_prices_are_accepted_and_hash_alike() {
    let free = parse(&with_agent_executor("", "price = \"free\""), "t.toml").unwrap();
    let zeros = parse(
        &with_agent_executor("", "price = { input_per_mtok = 0, output_per_mtok = \"0.00\" }"),
        "t.toml",
    )
    .unwrap();
    assert_eq!(free.agents[0].price, Price::default());
    assert_eq!(zeros.agents[0].price, Price::default());
    assert_eq!(free.config_hash(), zeros.config_hash(), "free is zero prices, said explicitly");
    let critic = with_critic(
        "kind = \"remote\"\nevery_k = 5\nbase_url = \"http://127.0.0.1:9000/v1\"\nmodel = \"m\"\nprice = \"free\"",
    );
    let sweep = parse(&critic, "t.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sweep.critics[0].params().unwrap().remote.as_ref().unwrap().price, Price::default());
    let priced =
        parse(&with_agent_executor("", "price = { input_per_mtok = 1, output_per_mtok = 2 }"), "t.toml")
            .unwrap();
    assert_ne!(priced.config_hash(), free.config_hash());
}

#[test]
fn a_price_that_is_neither_a_table_nor_free_is_refused_naming_the_key() {
    // The word is not echoed: a key pasted into the wrong place must not reach logs.
    let e = error(&with_agent_executor("", "price = \"sk-cheap\""));
    assert!(
        e.starts_with(
            "sweep.toml:11: agents[0].price: the only word a price may be is \"free\"; set price = {"
        ),
        "{e}"
    );
    assert!(!e.contains("sk-cheap"), "{e}");
    let e = error(&with_agent_line("price = \"Free\""));
    assert!(e.starts_with("sweep.toml:8: agents[0].price: the only word a price may be is \"free\""), "{e}");
    let e = error(&with_agent_line("price = 0"));
    assert!(
        e.starts_with("sweep.toml:8: agents[0].price: expected a table of prices or \"free\"; set price"),
        "{e}"
    );
}

/// A mini-swe-agent 1.x file (steerbench's own text, in mini's layout), and a package
/// `agents/default.py` beside it holding the default it leaves out.
const MINI_V1_FILE: &str = "agent:\n  system_template: |\n    You solve {{ task | length }}-character tasks.\n  instance_template: |\n    {{task}}\n  action_observation_template: |\n    <returncode>{{output.returncode}}</returncode>\n  format_error_template: |\n    Found {{actions|length}} actions.\n  step_limit: 40\n  cost_limit: 2.5\nenvironment:\n  cwd: /work\n  timeout: 30\n  env:\n    PAGER: cat\n    TQDM_DISABLE: '1'\nmodel:\n  model_name: m\n";
const MINI_DEFAULTS_PY: &str = "class AgentConfig:\n    timeout_template: str = (\n        \"Timed out: {{action['action']}}\\n\"  # a comment\n        'after {{ timeout }} s'\n    )\n";

fn mini_package() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("pkg/config/extra")).unwrap();
    std::fs::create_dir_all(dir.path().join("pkg/agents")).unwrap();
    std::fs::write(dir.path().join("pkg/config/extra/swebench.yaml"), MINI_V1_FILE).unwrap();
    std::fs::write(dir.path().join("pkg/agents/default.py"), MINI_DEFAULTS_PY).unwrap();
    dir
}

#[test]
fn an_agent_config_file_is_inlined_and_read_into_the_agent_spec() {
    let dir = mini_package();
    let text = with_agent_executor("", "price = \"free\"\nagent_config = \"pkg/config/extra/swebench.yaml\"");
    assert!(
        error(&text).contains(
            "agents[0].agent_config: mini-swe-agent configuration files are read by `steer sweep submit`"
        ),
        "{}",
        error(&text)
    );
    let inlined = inline_agent_configs(&text, dir.path()).unwrap();
    let sweep = parse(&inlined, "t.toml").unwrap_or_else(|e| panic!("{e}"));
    let config = sweep.agents[0].agent_config.as_ref().expect("read");
    assert_eq!(config.layout, protocol::mini::MiniLayout::V1);
    assert_eq!(
        config.timeout_template.as_deref(),
        Some("Timed out: {{action['action']}}\nafter {{ timeout }} s")
    );
    assert_eq!((config.cwd.as_str(), config.timeout_s), ("/work", 30));
    assert_eq!(config.env_vars(), vec!["PAGER=cat".to_string(), "TQDM_DISABLE=1".to_string()]);
    // The file's limits stand where the agent sets none; 1.x has no wall-time limit.
    let limits = &sweep.agents[0].limits;
    assert_eq!((limits.max_steps, limits.max_cost_usd, limits.max_wall_time_s), (40, Some(dec("2.5")), 0));
    let own = inline_agent_configs(
        &text.replace("price = \"free\"", "price = \"free\"\nmax_steps = 7"),
        dir.path(),
    )
    .unwrap();
    assert_eq!(parse(&own, "t.toml").unwrap().agents[0].limits.max_steps, 7);
    assert_eq!(inline_agent_configs(&inlined, dir.path()).unwrap(), inlined, "inlined once");
}

#[test]
fn a_bad_agent_config_file_is_refused_naming_the_file_and_key() {
    let dir = mini_package();
    std::fs::remove_file(dir.path().join("pkg/agents/default.py")).unwrap();
    let text = with_agent_executor("", "price = \"free\"\nagent_config = \"pkg/config/extra/swebench.yaml\"");
    let e = error(&inline_agent_configs(&text, dir.path()).unwrap());
    assert!(
        e.contains("agents[0].agent_config: pkg/config/extra/swebench.yaml:")
            && e.contains("add `timeout_template`"),
        "{e}"
    );
    let missing = text.replace("swebench.yaml", "nope.yaml");
    let e = inline_agent_configs(&missing, dir.path()).unwrap_err().to_string();
    assert!(e.contains("agents[0].agent_config: cannot read") && e.contains("nope.yaml"), "{e}");
    let regex = MINI_V1_FILE.replace("  step_limit: 40", "  step_limit: 40\n  action_regex: '(?<=x)y'");
    for (bad, expected) in [
        ("agent: [1]", "`agent` is not a mapping"),
        ("agent:\n  system_template: x\n", "neither `agent.action_observation_template`"),
        (&MINI_V1_FILE.replace("{{task}}", "{% if task %}"), "template `instance`"),
        (&MINI_V1_FILE.replace("cwd: /work", "cwd: work"), "`environment.cwd` must be an absolute path"),
        (&regex, "action_regex: cannot be compiled here"),
    ] {
        let with_timeout = bad.replace("  step_limit: 40", "  step_limit: 40\n  timeout_template: t");
        std::fs::write(dir.path().join("pkg/config/extra/swebench.yaml"), with_timeout).unwrap();
        let e = error(&inline_agent_configs(&text, dir.path()).unwrap());
        assert!(e.contains(expected), "{bad}: {e}");
    }
}
