//! The replay agent over real HTTP on 127.0.0.1, and the bundled scenarios.

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use super::*;

/// A server on a free port, stopped when dropped.
struct Server {
    base: String,
    http: reqwest::Client,
    task: JoinHandle<std::io::Result<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start_with(list: Vec<Scenario>, options: ServeOptions) -> Server {
    let scenarios = Scenarios::from_scenarios(list).expect("valid scenarios");
    let (base, task) = spawn_local(scenarios, options).await.expect("binding 127.0.0.1:0");
    assert!(base.starts_with("http://127.0.0.1:") && base.ends_with("/v1"), "{base}");
    Server { base, http: reqwest::Client::new(), task }
}

async fn start(list: Vec<Scenario>) -> Server {
    start_with(list, ServeOptions::default()).await
}

impl Server {
    /// POSTs a raw body; returns the status, the Retry-After header and the body text.
    async fn post_raw(&self, body: impl Into<reqwest::Body>) -> (StatusCode, Option<String>, String) {
        let response = self
            .http
            .post(format!("{}/chat/completions", self.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        let status = response.status();
        let retry_after =
            response.headers().get("retry-after").map(|v| v.to_str().expect("ascii header").to_string());
        (status, retry_after, response.text().await.expect("body"))
    }

    async fn post(&self, body: &Value) -> (StatusCode, Option<String>, String) {
        self.post_raw(body.to_string()).await
    }

    /// A request that must succeed; returns the completion.
    async fn chat(&self, body: &Value) -> Value {
        let (status, _, text) = self.post(body).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        serde_json::from_str(&text).expect("a JSON completion")
    }

    async fn stats(&self) -> Value {
        let url = self.base.replace("/v1", "/replay/stats");
        self.http.get(url).send().await.expect("stats").json().await.expect("stats JSON")
    }
}

fn scenario(name: &str, matches: Option<&str>, turns: Vec<Turn>) -> Scenario {
    Scenario {
        name: name.into(),
        description: format!("test scenario {name}"),
        matches: matches.map(str::to_string),
        turns,
    }
}

fn action(thought: &str, command: &str) -> String {
    format!("THOUGHT: {thought}\n\n```bash\n{command}\n```")
}

/// A bash-only conversation about `task` after `steps` actions (each answered by a user
/// message carrying the observation, as mini-swe-agent does).
fn conversation(task: &str, steps: usize) -> Vec<Value> {
    let mut messages = vec![
        json!({"role": "system", "content": "You are a helpful assistant that can interact with a computer."}),
        json!({"role": "user", "content": format!("<pr_description>\n{task}\n</pr_description>")}),
    ];
    for step in 0..steps {
        messages.push(json!({"role": "assistant", "content": action("step", &format!("echo {step}"))}));
        messages.push(json!({"role": "user", "content": format!("<returncode>0</returncode>\n<output>{step}</output>")}));
    }
    messages
}

fn body(model: &str, messages: Vec<Value>) -> Value {
    json!({"model": model, "messages": messages, "temperature": 0.0, "max_tokens": 1000, "seed": 1, "stop": ["</s>"]})
}

fn content(completion: &Value) -> &str {
    completion["choices"][0]["message"]["content"].as_str().expect("text content")
}

fn error_message(text: &str) -> String {
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("not an OpenAI error ({e}): {text}"));
    assert!(v["error"]["type"].as_str().is_some(), "{text}");
    v["error"]["message"].as_str().expect("error.message").to_string()
}

fn three_turns() -> Vec<Turn> {
    vec![
        Turn::answer(action("one", "ls")),
        Turn::answer(action("two", "cat x")),
        Turn::answer(action("three", "pwd")),
    ]
}

#[tokio::test]
async fn scenario_is_chosen_by_the_longest_matches_text_or_by_replay_name() {
    let server = start(vec![
        scenario("power", Some("Exponentiation is left-associative"), vec![Turn::answer("power answer")]),
        scenario("assoc", Some("left-associative"), vec![Turn::answer("assoc answer")]),
        scenario("other", Some("Division by zero"), vec![Turn::answer("other answer")]),
    ])
    .await;
    let task = "Exponentiation is left-associative: `2^3^2` evaluates to 64";
    let completion = server.chat(&body("gpt-4o-mini", conversation(task, 0))).await;
    assert_eq!(content(&completion), "power answer");
    assert_eq!(completion["model"], "gpt-4o-mini", "the model is echoed as requested");

    let completion = server.chat(&body("any", conversation("it is left-associative", 0))).await;
    assert_eq!(content(&completion), "assoc answer");

    // A name wins over the text.
    let completion = server.chat(&body("replay/other", conversation(task, 0))).await;
    assert_eq!(content(&completion), "other answer");
    assert_eq!(completion["model"], "replay/other");

    // `matches` is looked for in user messages only.
    let messages = vec![
        json!({"role": "system", "content": "Division by zero"}),
        json!({"role": "user", "content": "hi"}),
    ];
    let (status, _, text) = server.post(&body("any", messages)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{text}");
}

#[tokio::test]
async fn unknown_scenarios_are_404s_listing_the_known_ones() {
    let server = start(vec![scenario("alpha", Some("needle"), vec![Turn::answer("a")])]).await;
    let (status, _, text) = server.post(&body("replay/nope", conversation("needle", 0))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let message = error_message(&text);
    assert!(message.contains("replay/nope") && message.contains("replay/alpha"), "{message}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["code"], "model_not_found");

    let (status, _, text) = server.post(&body("gpt-4o", conversation("haystack", 0))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let message = error_message(&text);
    assert!(message.contains("no replay scenario matches") && message.contains("replay/alpha"), "{message}");
}

#[tokio::test]
async fn the_turn_is_the_number_of_assistant_messages_and_the_last_turn_repeats() {
    let server = start(vec![scenario("three", None, three_turns())]).await;
    let mut answers = Vec::new();
    for steps in 0..6 {
        let completion = server.chat(&body("replay/three", conversation("task", steps))).await;
        answers.push(content(&completion).to_string());
    }
    let expected: Vec<String> = ["one", "two", "three", "three", "three", "three"]
        .iter()
        .zip(["ls", "cat x", "pwd", "pwd", "pwd", "pwd"])
        .map(|(thought, command)| action(thought, command))
        .collect();
    assert_eq!(answers, expected);
}

#[tokio::test]
async fn a_429_is_served_once_per_request_then_the_answer() {
    let turn =
        Turn { fail_with: Some(429), fail_times: 1, retry_after_s: Some(1), ..Turn::answer("after the 429") };
    let server = start(vec![scenario("limited", None, vec![turn])]).await;
    let request = body("replay/limited", conversation("task", 0));

    let (status, retry_after, text) = server.post(&request).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{text}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    // The same request again: answered.
    assert_eq!(content(&server.chat(&request).await), "after the 429");
    assert_eq!(content(&server.chat(&request).await), "after the 429");
    // Another conversation at the same turn gets its own fault.
    let (status, _, _) = server.post(&body("replay/limited", conversation("another task", 0))).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);

    let stats = server.stats().await;
    assert_eq!(stats, json!({"requests": 4, "faults": 2, "storm_faults": 0, "by_scenario": {"limited": 4}}));
}

#[tokio::test]
async fn a_500_twice_then_the_answer() {
    let turn = Turn { fail_with: Some(500), fail_times: 2, ..Turn::answer("after two 500s") };
    let server = start(vec![scenario("errors", None, vec![turn])]).await;
    let request = body("replay/errors", conversation("task", 0));
    for _ in 0..2 {
        let (status, retry_after, text) = server.post(&request).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{text}");
        assert_eq!(retry_after, None);
        assert!(error_message(&text).contains("scripted fault"), "{text}");
    }
    assert_eq!(content(&server.chat(&request).await), "after two 500s");
    assert_eq!(server.stats().await["faults"], 2);
}

#[tokio::test]
async fn a_malformed_body_once_then_a_valid_one() {
    let turn = Turn { malformed: true, fail_times: 1, ..Turn::answer("after the truncated body") };
    let server = start(vec![scenario("broken", None, vec![turn])]).await;
    let request = body("replay/broken", conversation("task", 0));
    let (status, _, text) = server.post(&request).await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.starts_with("{\""), "a truncated completion: {text}");
    assert!(serde_json::from_str::<Value>(&text).is_err(), "not valid JSON: {text}");
    assert_eq!(content(&server.chat(&request).await), "after the truncated body");
}

impl Server {
    async fn storm(&self, body: Value) -> (StatusCode, Value) {
        let url = self.base.replace("/v1", "/replay/storm");
        let response = self.http.post(url).json(&body).send().await.expect("storm");
        (response.status(), response.json().await.expect("storm JSON"))
    }
}

#[tokio::test]
async fn a_storm_fails_every_request_its_way_until_it_ends() {
    let server = start(vec![scenario("a", None, vec![Turn::answer("calm")])]).await;
    let request = body("replay/a", conversation("task", 0));
    for (kind, want) in [("429", StatusCode::TOO_MANY_REQUESTS), ("500", StatusCode::INTERNAL_SERVER_ERROR)] {
        let (status, _) = server.storm(json!({"kind": kind, "seconds": 60})).await;
        assert_eq!(status, StatusCode::OK);
        for _ in 0..3 {
            let (status, retry_after, text) = server.post(&request).await;
            assert_eq!(status, want, "{text}");
            assert_eq!(retry_after.is_some(), kind == "429");
            assert!(error_message(&text).contains("storm"), "{text}");
        }
        let url = server.base.replace("/v1", "/replay/storm");
        let ended: Value = server.http.delete(url).send().await.unwrap().json().await.unwrap();
        assert_eq!(ended["was"], true);
        assert_eq!(content(&server.chat(&request).await), "calm");
    }
    // A storm ends by itself.
    server.storm(json!({"kind": "500", "seconds": 0.2})).await;
    assert_eq!(server.post(&request).await.0, StatusCode::INTERNAL_SERVER_ERROR);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(content(&server.chat(&request).await), "calm");
    assert_eq!(server.stats().await["storm_faults"], 7);
}

#[tokio::test]
async fn a_hang_storm_holds_requests_until_it_ends() {
    let server = start(vec![scenario("a", None, vec![Turn::answer("late")])]).await;
    server.storm(json!({"kind": "hang", "seconds": 0.4})).await;
    let started = tokio::time::Instant::now();
    assert_eq!(content(&server.chat(&body("replay/a", conversation("task", 0))).await), "late");
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
}

#[tokio::test]
async fn bad_storms_are_400s_saying_what_is_wrong() {
    let server = start(vec![scenario("a", None, vec![Turn::answer("x")])]).await;
    for (bad, expected) in [
        (json!({"kind": "404", "seconds": 1}), "unknown variant"),
        (json!({"kind": "429"}), "seconds"),
        (json!({"kind": "429", "seconds": -1}), "more than 0"),
        (json!({"kind": "hang", "seconds": 1, "extra": 1}), "unknown field"),
    ] {
        let (status, v) = server.storm(bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{bad}: {message}");
    }
}

#[tokio::test]
async fn a_server_wide_delay_slows_every_answer() {
    let options = ServeOptions { delay: Duration::from_millis(300), ..Default::default() };
    let server = start_with(vec![scenario("a", None, vec![Turn::answer("slowly")])], options).await;
    let started = tokio::time::Instant::now();
    server.chat(&body("replay/a", conversation("task", 0))).await;
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
}

#[tokio::test]
async fn delay_ms_delays_every_answer() {
    let turn = Turn { delay_ms: 300, ..Turn::answer("slowly") };
    let server = start(vec![scenario("slow", None, vec![turn])]).await;
    for _ in 0..2 {
        let started = tokio::time::Instant::now();
        server.chat(&body("replay/slow", conversation("task", 0))).await;
        assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
    }
}

#[tokio::test]
async fn usage_is_left_out_when_the_turn_says_so() {
    let server = start(vec![
        scenario("bare", None, vec![Turn { usage: false, ..Turn::answer("no usage") }]),
        scenario("full", None, vec![Turn::answer("usage")]),
    ])
    .await;
    let completion = server.chat(&body("replay/bare", conversation("task", 0))).await;
    assert!(completion.get("usage").is_none(), "{completion}");
    assert_eq!(content(&completion), "no usage");
    let completion = server.chat(&body("replay/full", conversation("task", 0))).await;
    assert!(completion["usage"]["prompt_tokens"].as_u64().is_some(), "{completion}");
}

#[tokio::test]
async fn the_completion_has_openai_shape_and_deterministic_token_counts() {
    let server = start(vec![scenario("count", None, vec![Turn::answer("12345")])]).await;
    // 4 + 11 + (3 + 13 of tool-call arguments) + 6 = 37 characters: 10 prompt tokens, of which
    // everything but the last message (31 characters, 8 tokens) is "cached".
    let messages = vec![
        json!({"role": "system", "content": "abcd"}),
        json!({"role": "user", "content": [{"type": "text", "text": "hello"}, {"type": "text", "text": " world"}]}),
        json!({"role": "assistant", "content": "abc", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "bash", "arguments": "{\"command\":1}"}}
        ]}),
        json!({"role": "tool", "tool_call_id": "call_1", "content": "output"}),
    ];
    let first = server.chat(&body("replay/count", messages.clone())).await;
    let second = server.chat(&body("replay/count", messages)).await;
    let expected = json!({
        "prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12,
        "prompt_tokens_details": {"cached_tokens": 8},
    });
    assert_eq!(first["usage"], expected);
    assert_eq!(second["usage"], expected);
    assert_eq!(first["object"], "chat.completion");
    assert_eq!(first["system_fingerprint"], "steerbench-replay");
    assert!(first["id"].as_str().unwrap().starts_with("replay-"));
    assert_ne!(first["id"], second["id"]);
    assert!(first["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(first["choices"][0]["index"], 0);
    assert_eq!(first["choices"][0]["finish_reason"], "stop");
    assert_eq!(first["choices"][0]["message"], json!({"role": "assistant", "content": "12345"}));
}

#[tokio::test]
async fn with_tools_a_bash_block_becomes_a_tool_call_and_the_submit_command_submit() {
    let turns = vec![
        Turn::answer(action("Let me look.", "ls -la\ngit status")),
        Turn::answer("```bash\nls\n```"),
        Turn::answer("I forgot the block."),
        Turn::answer("THOUGHT: two.\n\n```bash\nls\n```\n\n```bash\npwd\n```"),
        Turn::answer(action("Done.", SUBMIT_COMMAND)),
    ];
    let server = start(vec![scenario("tools", None, turns)]).await;
    let tools = json!([{"type": "function", "function": {"name": "bash", "parameters": {"type": "object"}}}]);
    let request = |steps| {
        let mut b = body("replay/tools", conversation("task", steps));
        b["tools"] = tools.clone();
        b
    };

    let completion = server.chat(&request(0)).await;
    let choice = &completion["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], "THOUGHT: Let me look.");
    let call = &choice["message"]["tool_calls"][0];
    assert!(call["id"].as_str().unwrap().starts_with("call_"), "{call}");
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "bash");
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().expect("a JSON string")).unwrap();
    assert_eq!(arguments, json!({"command": "ls -la\ngit status"}));
    assert_eq!(choice["message"]["tool_calls"].as_array().unwrap().len(), 1);

    // Nothing before the block: null content.
    let completion = server.chat(&request(1)).await;
    assert_eq!(completion["choices"][0]["message"]["content"], Value::Null);
    assert_eq!(completion["choices"][0]["message"]["tool_calls"][0]["function"]["name"], "bash");

    // No block, or two: plain text (the agent's format error).
    for steps in [2, 3] {
        let completion = server.chat(&request(steps)).await;
        assert_eq!(completion["choices"][0]["finish_reason"], "stop");
        assert!(completion["choices"][0]["message"].get("tool_calls").is_none(), "{completion}");
    }

    let completion = server.chat(&request(4)).await;
    let call = &completion["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"], json!({"name": "submit", "arguments": "{}"}));
    assert_eq!(completion["choices"][0]["message"]["content"], "THOUGHT: Done.");

    // An empty tools array is no tools.
    let mut b = body("replay/tools", conversation("task", 0));
    b["tools"] = json!([]);
    assert_eq!(content(&server.chat(&b).await), action("Let me look.", "ls -la\ngit status"));
}

#[tokio::test]
async fn bad_bodies_are_400s_saying_what_is_wrong() {
    let server = start(vec![scenario("any", Some("x"), vec![Turn::answer("a")])]).await;
    let cases: Vec<(String, &str)> = vec![
        ("not json".into(), "not JSON"),
        ("[1, 2]".into(), "JSON object"),
        (json!({"messages": []}).to_string(), "`model`"),
        (json!({"model": 3, "messages": []}).to_string(), "`model` must be a string"),
        (json!({"model": "m"}).to_string(), "`messages` is required"),
        (json!({"model": "m", "messages": "hi"}).to_string(), "`messages` must be an array"),
        (json!({"model": "m", "messages": []}).to_string(), "must not be empty"),
        (json!({"model": "m", "messages": [1]}).to_string(), "messages[0] is not an object"),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}, {"content": "x"}]})
                .to_string(),
            "messages[1] has no `role`",
        ),
        (json!({"model": "m", "messages": [{"role": 1}]}).to_string(), "messages[0].role"),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": 5}]}).to_string(),
            "messages[0].content",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": true}).to_string(),
            "`stream`",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": {}}).to_string(),
            "`tools`",
        ),
    ];
    for (raw, expected) in cases {
        let (status, _, text) = server.post_raw(raw.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{raw}: {text}");
        let v: Value = serde_json::from_str(&text).expect("a JSON error");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{text}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{raw}: {message:?} should mention {expected:?}");
    }
    // The server is still up, and counted every request.
    let completion = server.chat(&body("m", vec![json!({"role": "user", "content": "x"})])).await;
    assert_eq!(content(&completion), "a");
    assert_eq!(server.stats().await["requests"], 14);
}

#[tokio::test]
async fn a_required_key_is_checked_on_every_route() {
    let key = "sk-replay-test-key";
    let options = ServeOptions { required_api_key: Some(key.into()), ..Default::default() };
    assert!(!format!("{options:?}").contains(key), "Debug redacts the key");
    let server = start_with(vec![scenario("a", None, vec![Turn::answer("hi")])], options).await;
    let url = format!("{}/chat/completions", server.base);
    let request = body("replay/a", conversation("task", 0));

    for auth in [None, Some("Bearer given-xyz"), Some("Basic c2stcmVwbGF5"), Some("Bearer sk-replay-test-ke")]
    {
        let mut req = server.http.post(&url).json(&request);
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        let response = req.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        let text = response.text().await.unwrap();
        assert!(!text.contains("test-ke") && !text.contains("xyz"), "the answer echoes no key: {text}");
        assert!(!error_message(&text).is_empty());
    }
    let response = server.http.post(&url).bearer_auth(key).json(&request).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let models = format!("{}/models", server.base);
    assert_eq!(server.http.get(&models).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(server.http.get(&models).bearer_auth(key).send().await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn models_lists_the_scenarios_and_stats_counts_requests() {
    let server = start(vec![
        scenario("b", Some("bee"), vec![Turn::answer("b")]),
        scenario("a", Some("ay"), vec![Turn { fail_with: Some(503), fail_times: 1, ..Turn::answer("a") }]),
    ])
    .await;
    let models: Value =
        server.http.get(format!("{}/models", server.base)).send().await.unwrap().json().await.unwrap();
    let ids: Vec<&str> =
        models["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["replay/a", "replay/b"]);
    assert_eq!(models["object"], "list");

    assert_eq!(
        server.stats().await,
        json!({"requests": 0, "faults": 0, "storm_faults": 0, "by_scenario": {}})
    );
    let (status, _, _) = server.post(&body("m", conversation("say ay", 0))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    server.chat(&body("m", conversation("say ay", 0))).await;
    server.chat(&body("m", conversation("bee", 0))).await;
    server.post(&body("m", conversation("nothing", 0))).await;
    assert_eq!(
        server.stats().await,
        json!({"requests": 4, "faults": 1, "storm_faults": 0, "by_scenario": {"a": 2, "b": 1}})
    );

    let response = server.http.get(format!("{}/nope", server.base)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(error_message(&response.text().await.unwrap()).contains("/v1/chat/completions"));
}

const BUNDLED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/replay");
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docker/fixtures/dataset.jsonl");

fn bash_blocks(content: &str) -> Vec<String> {
    let re = regex::Regex::new(r"(?s)```bash\s*\n(.*?)\n```").unwrap();
    re.captures_iter(content).map(|c| c[1].to_string()).collect()
}

#[test]
fn the_bundled_scenarios_load_and_each_fixture_instance_has_a_solving_one() {
    let scenarios = Scenarios::load_dir(Path::new(BUNDLED)).unwrap_or_else(|e| panic!("{e}"));
    let misbehaving = [
        "down",
        "format-errors",
        "instant",
        "loop",
        "malformed",
        "no-usage",
        "rate-limited",
        "server-errors",
        "slow",
    ];
    for name in misbehaving {
        let s = scenarios.get(name).unwrap_or_else(|| panic!("no bundled scenario `{name}`"));
        assert!(s.matches.is_none(), "{name} is chosen by name only");
    }
    // Scripted critics (for `remote` critic conditions), chosen by name.
    let critics = ["critic", "critic-stop"];
    for name in critics {
        let s = scenarios.get(name).unwrap_or_else(|| panic!("no bundled scenario `{name}`"));
        assert!(s.matches.is_none() && s.turns[0].content.contains("TASK_STATUS:"), "{name}");
    }
    let dataset = std::fs::read_to_string(FIXTURES).expect("the fixture dataset");
    let records: Vec<Value> = dataset.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records.len(), 8);
    assert_eq!(scenarios.len(), misbehaving.len() + critics.len() + records.len());
    for record in &records {
        let id = record["instance_id"].as_str().unwrap();
        let s = scenarios.get(id).unwrap_or_else(|| panic!("no solving scenario for {id}"));
        let problem = record["problem_statement"].as_str().unwrap();
        let title = problem.lines().next().unwrap().trim();
        assert_eq!(s.matches.as_deref(), Some(title), "{id}: matches is the issue's title");
        for other in &records {
            if other["instance_id"] != record["instance_id"] {
                assert!(
                    !other["problem_statement"].as_str().unwrap().contains(title),
                    "{id}: title not unique"
                );
            }
        }
        assert!((5..=9).contains(&s.turns.len()), "{id}: {} turns", s.turns.len());
        for (i, turn) in s.turns.iter().enumerate() {
            assert!(turn.content.starts_with("THOUGHT: "), "{id} turn {i}");
            assert_eq!(bash_blocks(&turn.content).len(), 1, "{id} turn {i}: one bash block");
            assert_eq!(
                (turn.fail_times, turn.delay_ms, turn.usage),
                (0, 0, true),
                "{id} turn {i}: no faults"
            );
        }
        let last = bash_blocks(&s.turns.last().unwrap().content).remove(0);
        assert_eq!(last.trim(), SUBMIT_COMMAND, "{id} ends by submitting");
        assert!(s.turns[..s.turns.len() - 1].iter().all(|t| !t.content.contains(SUBMIT_COMMAND)));
    }
    // What the misbehaving ones promise.
    let turns = |name: &str| scenarios.get(name).unwrap().turns.clone();
    assert!(turns("format-errors").iter().all(|t| bash_blocks(&t.content).len() != 1));
    assert_eq!(turns("loop").len(), 1);
    assert_eq!(bash_blocks(&turns("loop")[0].content), ["ls"]);
    assert!(turns("slow").iter().all(|t| t.delay_ms == 1500));
    assert_eq!(
        (turns("rate-limited")[0].fail_with, turns("rate-limited")[0].retry_after_s),
        (Some(429), Some(1))
    );
    assert_eq!((turns("server-errors")[0].fail_with, turns("server-errors")[0].fail_times), (Some(500), 2));
    assert!(turns("down").iter().all(|t| t.fail_with == Some(503) && t.fail_times >= 1_000_000));
    assert!(turns("malformed")[0].malformed);
    assert!(turns("no-usage").iter().all(|t| !t.usage));
    assert_eq!(bash_blocks(&turns("instant")[0].content), ["true"]);
    for name in ["slow", "rate-limited", "server-errors", "malformed", "no-usage"] {
        let last = bash_blocks(&turns(name).last().unwrap().content).remove(0);
        assert_eq!(last, SUBMIT_COMMAND, "{name} ends by submitting");
    }
}

#[tokio::test]
async fn a_fixture_issue_selects_its_solving_scenario() {
    let scenarios = Scenarios::load_dir(Path::new(BUNDLED)).unwrap();
    let (base, task) = spawn_local(scenarios.clone(), ServeOptions::default()).await.unwrap();
    let server = Server { base, http: reqwest::Client::new(), task };
    let dataset = std::fs::read_to_string(FIXTURES).unwrap();
    for line in dataset.lines() {
        let record: Value = serde_json::from_str(line).unwrap();
        let id = record["instance_id"].as_str().unwrap();
        let expected = &scenarios.get(id).unwrap().turns[1].content;
        let completion = server
            .chat(&body("some-model", conversation(record["problem_statement"].as_str().unwrap(), 1)))
            .await;
        assert_eq!(content(&completion), expected, "{id}");
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn load_error(files: &[(&str, &str)]) -> ScenarioError {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        write(dir.path(), name, text);
    }
    Scenarios::load_dir(dir.path()).expect_err("a bad scenario")
}

#[test]
fn a_bad_file_is_reported_with_its_name_and_line() {
    let cases: [(&str, usize, &str); 7] = [
        (
            "description = \"d\"\n\n[[turns]]\ncontent = \"a\"\nfail_time = 2\n",
            5,
            "unknown field `fail_time`",
        ),
        ("description = \"d\"\n[[turns]]\ncontent = \"a\"\nfail_with = 404\n", 4, "fail_with = 404"),
        (
            "description = \"d\"\n[[turns]]\ncontent = \"a\"\n[[turns]]\ncontent = \"b\"\nfail_times = 3\n",
            6,
            "turns[1]: fail_times",
        ),
        ("description = \"d\"\n[[turns]]\ncontent = \"a\"\nretry_after_s = 3\n", 4, "retry_after_s"),
        (
            "description = \"d\"\n[[turns]]\ncontent = \"a\"\nfail_with = 500\nmalformed = true\n",
            5,
            "together",
        ),
        ("description = \"d\"\nmatches = \"  \"\n[[turns]]\ncontent = \"a\"\n", 2, "matches"),
        ("description = \"d\"\n[[turns]]\ncontent = \"a\"\ndelay_ms = \"fast\"\n", 4, "invalid type"),
    ];
    for (text, line, expected) in cases {
        let e = load_error(&[("bad.toml", text)]);
        assert!(e.file.as_ref().is_some_and(|f| f.ends_with("bad.toml")), "{e}");
        assert_eq!(e.line, Some(line), "{e}");
        assert!(e.message.contains(expected), "{e}");
        let shown = e.to_string();
        assert!(shown.contains(&format!("bad.toml:{line}: ")), "{shown}");
    }

    let e = load_error(&[("empty.toml", "description = \"d\"\n")]);
    assert!(e.to_string().contains("empty.toml") && e.message.contains("no turns"), "{e}");
    let e = load_error(&[("syntax.toml", "description = \"d\"\n[[turns]\n")]);
    assert_eq!(e.line, Some(2), "{e}");
    let e = load_error(&[("bad name.toml", "description = \"d\"\n[[turns]]\ncontent = \"a\"\n")]);
    assert!(e.message.contains("bad name"), "{e}");
    let e = load_error(&[("README.md", "not a scenario")]);
    assert!(e.message.contains("no scenario files"), "{e}");

    let same = "description = \"d\"\n\nmatches = \"the same text\"\n[[turns]]\ncontent = \"a\"\n";
    let e = load_error(&[("one.toml", same), ("two.toml", same)]);
    assert!(e.file.as_ref().is_some_and(|f| f.ends_with("two.toml")), "{e}");
    assert_eq!(e.line, Some(3), "{e}");
    assert!(e.message.contains("one.toml"), "{e}");
}

#[test]
fn scenarios_built_in_code_are_checked_by_the_same_rules() {
    let bad_status = Turn { fail_with: Some(404), fail_times: 1, ..Turn::answer("a") };
    let cases = [
        (vec![scenario("a", None, vec![])], "no turns"),
        (vec![scenario("a", None, vec![bad_status])], "fail_with = 404"),
        (vec![scenario("a", None, vec![Turn { fail_times: 1, ..Turn::answer("a") }])], "fail_times"),
        (
            vec![scenario("a", Some("x"), three_turns()), scenario("b", Some("x"), three_turns())],
            "same `matches`",
        ),
        (
            vec![scenario("a", None, three_turns()), scenario("a", None, three_turns())],
            "two scenarios are named",
        ),
        (vec![scenario("a/b", None, three_turns())], "letters, digits"),
        (vec![], "no scenarios"),
    ];
    for (list, expected) in cases {
        let e = Scenarios::from_scenarios(list).expect_err(expected);
        assert_eq!(e.file, None);
        assert!(e.to_string().contains(expected), "{e} should mention {expected:?}");
    }
}
