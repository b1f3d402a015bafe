//! The client against a real HTTP server on a loopback port that answers from a script, as an
//! OpenAI-compatible endpoint would (status, headers, body), and records what it was sent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use serde_json::{json, Value};

use super::*;

#[derive(Clone)]
struct Reply {
    status: u16,
    retry_after: Option<&'static str>,
    body: String,
}

#[derive(Default)]
struct Script {
    replies: Vec<Reply>,
    next: usize,
    /// (authorization header, body) of every request.
    seen: Vec<(Option<String>, Value)>,
}

async fn answer(
    State(script): State<Arc<Mutex<Script>>>,
    headers: HeaderMap,
    body: String,
) -> impl IntoResponse {
    let mut s = script.lock().unwrap();
    let auth = headers.get("authorization").map(|v| v.to_str().unwrap().to_string());
    s.seen.push((auth, serde_json::from_str(&body).unwrap_or(Value::Null)));
    let reply = s.replies.get(s.next).cloned().unwrap_or(Reply {
        status: 500,
        retry_after: None,
        body: "script ran out".into(),
    });
    s.next += 1;
    let mut headers = HeaderMap::new();
    headers.insert("content-type", "application/json".parse().unwrap());
    if let Some(r) = reply.retry_after {
        headers.insert("retry-after", r.parse().unwrap());
    }
    (StatusCode::from_u16(reply.status).unwrap(), headers, reply.body)
}

async fn serve(replies: Vec<Reply>) -> (String, Arc<Mutex<Script>>) {
    let script = Arc::new(Mutex::new(Script { replies, ..Default::default() }));
    let app = axum::Router::new().route("/v1/chat/completions", post(answer)).with_state(script.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/v1"), script)
}

fn ok(content: &str, usage: Option<Value>) -> Reply {
    let mut body = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
    });
    if let Some(u) = usage {
        body["usage"] = u;
    }
    Reply { status: 200, retry_after: None, body: body.to_string() }
}

fn status(code: u16, retry_after: Option<&'static str>) -> Reply {
    Reply { status: code, retry_after, body: json!({"error": {"message": "busy"}}).to_string() }
}

const KEY: &str = "sk-test-DO-NOT-LEAK-1234567890";

fn client(base_url: &str) -> LlmClient {
    LlmClient::new(LlmConfig {
        base_url: base_url.into(),
        model: "qwen3".into(),
        api_key: Some(Secret::new(KEY)),
        sampling: Sampling {
            temperature: Some(0.0),
            max_tokens: Some(2048),
            seed: Some(7),
            ..Default::default()
        },
        price: Price {
            input_per_mtok: "0.15".parse().unwrap(),
            output_per_mtok: "1.5".parse().unwrap(),
            cached_input_per_mtok: "0.015".parse().unwrap(),
        },
        extra_body: [("top_k".to_string(), json!(20))].into_iter().collect(),
        tokenizer: None,
        retry: RetryPolicy {
            attempts: 3,
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            max_retry_after: Duration::from_millis(1500),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            max_reply_bytes: DEFAULT_MAX_REPLY_BYTES,
        },
    })
    .unwrap()
}

fn user(text: &str) -> Vec<Value> {
    vec![json!({"role": "user", "content": text})]
}

#[tokio::test]
async fn usage_and_cost_are_exact_and_the_request_carries_everything() {
    let usage = json!({"prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500,
                       "prompt_tokens_details": {"cached_tokens": 1000},
                       "completion_tokens_details": {"reasoning_tokens": 120}});
    let (url, script) = serve(vec![ok("Let me look.\n```bash\nls\n```", Some(usage))]).await;
    let done = client(&url).chat(&user("fix the bug"), None).await.unwrap();
    assert_eq!(done.content, "Let me look.\n```bash\nls\n```");
    assert_eq!(done.finish_reason.as_deref(), Some("stop"));
    assert_eq!(done.response_id.as_deref(), Some("chatcmpl-1"), "the endpoint's id of the answer");
    assert_eq!(
        done.usage,
        Usage {
            prompt_tokens: 1200,
            completion_tokens: 300,
            cached_tokens: 1000,
            reasoning_tokens: 120,
            estimated: false
        }
    );
    // (200 uncached x 0.15 + 1000 cached x 0.015 + 300 x 1.5) / 1e6 = 495 / 1e6: exactly $0.000495.
    assert_eq!(done.cost_usd, "0.000495".parse::<Decimal>().unwrap());
    assert_eq!(done.retries, 0);
    let s = script.lock().unwrap();
    let (auth, body) = &s.seen[0];
    assert_eq!(auth.as_deref(), Some(format!("Bearer {KEY}").as_str()));
    assert_eq!(body["model"], "qwen3");
    assert_eq!(body["temperature"], 0.0);
    assert_eq!(body["max_tokens"], 2048);
    assert_eq!(body["seed"], 7);
    assert_eq!(body["top_k"], 20, "extra body parameters pass through");
    assert_eq!(body["messages"][0]["content"], "fix the bug");
}

#[tokio::test]
async fn a_429_with_retry_after_is_retried_and_billed_once() {
    let usage = json!({"prompt_tokens": 10, "completion_tokens": 10});
    let (url, script) = serve(vec![status(429, Some("1")), ok("done", Some(usage))]).await;
    let started = std::time::Instant::now();
    let done = client(&url).chat(&user("hi"), None).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(950), "Retry-After was honoured");
    assert_eq!(done.retries, 1);
    assert_eq!(done.usage.prompt_tokens, 10, "only the successful answer is billed");
    assert_eq!(script.lock().unwrap().seen.len(), 2);
}

#[tokio::test]
async fn the_response_id_is_the_answer_that_succeeded_and_none_when_absent() {
    let mut first = ok("done", None);
    first.body = first.body.replace("chatcmpl-1", "chatcmpl-after-a-retry");
    let (url, _) = serve(vec![status(503, None), first]).await;
    let done = client(&url).chat(&user("hi"), None).await.unwrap();
    assert_eq!((done.retries, done.response_id.as_deref()), (1, Some("chatcmpl-after-a-retry")));

    let answer = |id: Option<Value>| {
        let mut body = json!({"choices": [{"message": {"role": "assistant", "content": "x"}}]});
        if let Some(id) = id {
            body["id"] = id;
        }
        parse_completion(&body.to_string()).unwrap().response_id
    };
    assert_eq!(answer(None), None, "an endpoint that gives no id");
    assert_eq!(answer(Some(json!(""))), None, "an empty id is no id");
    assert_eq!(answer(Some(json!(42))), None, "an id that is not a string is no id");
    assert_eq!(answer(Some(json!("gen-123"))).as_deref(), Some("gen-123"));
}

#[tokio::test]
async fn persistent_5xx_makes_the_endpoint_unavailable_without_leaking_the_key() {
    let (url, script) = serve(vec![status(500, None), status(502, None), status(503, None)]).await;
    let err = client(&url).chat(&user("hi"), None).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { attempts: 3, last_status: Some(503), .. }), "{err}");
    assert_eq!(script.lock().unwrap().seen.len(), 3);
    assert!(!format!("{err} {err:?}").contains(KEY));
}

#[tokio::test]
async fn a_4xx_is_not_retried() {
    let (url, script) = serve(vec![status(400, None)]).await;
    let err = client(&url).chat(&user("hi"), None).await.unwrap_err();
    assert!(matches!(err, Error::Rejected { status: 400, .. }), "{err}");
    assert_eq!(script.lock().unwrap().seen.len(), 1);
}

#[tokio::test]
async fn persistently_malformed_and_truncated_bodies_are_errors_with_an_excerpt() {
    let truncated =
        Reply { status: 200, retry_after: None, body: r#"{"choices": [{"message": {"role": "assis"#.into() };
    // Retried like any transient fault; every attempt malformed: the error quotes the body.
    let (url, script) = serve(vec![truncated; 3]).await;
    let err = client(&url).chat(&user("hi"), None).await.unwrap_err();
    assert_eq!(script.lock().unwrap().seen.len(), 3);
    match &err {
        Error::Malformed { reason, excerpt } => {
            assert!(reason.contains("not JSON"), "{reason}");
            assert!(excerpt.contains(r#""role": "assis"#), "{excerpt}");
        }
        other => panic!("{other}"),
    }
    let no_choices =
        Reply { status: 200, retry_after: None, body: json!({"object": "chat.completion"}).to_string() };
    let (url, _) = serve(vec![no_choices; 3]).await;
    assert!(matches!(client(&url).chat(&user("hi"), None).await.unwrap_err(), Error::Malformed { .. }));
}

#[tokio::test]
async fn a_malformed_body_is_retried_and_the_success_keeps_its_excerpt() {
    let truncated = Reply { status: 200, retry_after: None, body: r#"{"choices": [{"mess"#.into() };
    let (url, script) = serve(vec![truncated, ok("fine", Some(json!({"prompt_tokens": 4})))]).await;
    let done = client(&url).chat(&user("hi"), None).await.unwrap();
    assert_eq!(done.content, "fine");
    assert_eq!(done.retries, 1);
    let last = done.last_error.expect("the failed attempt is kept");
    assert!(last.contains("malformed") && last.contains(r#"{"choices": [{"mess"#), "{last}");
    assert_eq!(script.lock().unwrap().seen.len(), 2);
}

#[tokio::test]
async fn a_response_without_usage_is_estimated_and_marked() {
    let (url, _) = serve(vec![ok("twelve chars", None)]).await;
    let done = client(&url).chat(&user("x".repeat(400).as_str()), None).await.unwrap();
    assert!(done.usage.estimated);
    assert!(done.usage.prompt_tokens >= 100, "{:?}", done.usage);
    assert_eq!(done.usage.completion_tokens, 3);
    assert!(done.cost_usd > Decimal::ZERO);
}

/// A word-level tokenizer.json: one token per whitespace-separated word.
const WORD_TOKENIZER: &str = r#"{"version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
  "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": null, "decoder": null,
  "model": {"type": "WordLevel", "vocab": {"[UNK]": 0, "fix": 1, "the": 2, "bug": 3}, "unk_token": "[UNK]"}}"#;

#[tokio::test]
async fn without_usage_a_configured_tokenizer_counts_the_tokens() {
    let dir = std::env::temp_dir().join(format!("steer-tok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, WORD_TOKENIZER).unwrap();
    let (url, _) = serve(vec![ok("two words", None)]).await;
    let mut config = client(&url).config.clone();
    config.tokenizer = Some(super::tokens::TokenCounter::load(path.to_str().unwrap()).unwrap());
    let done = LlmClient::new(config).unwrap().chat(&user("please fix the bug now"), None).await.unwrap();
    assert!(done.usage.estimated, "still marked as not reported by the endpoint");
    assert_eq!((done.usage.prompt_tokens, done.usage.completion_tokens), (5, 2));
    let err = super::tokens::TokenCounter::load("/nonexistent/tokenizer.json").unwrap_err().to_string();
    assert!(err.contains("/nonexistent/tokenizer.json"), "{err}");
}

#[tokio::test]
async fn an_unreachable_endpoint_is_unavailable() {
    // A port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let err = client(&format!("http://127.0.0.1:{port}/v1")).chat(&user("hi"), None).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { last_status: None, .. }), "{err}");
}

/// Regression: an endpoint that echoed the key in its error body had the key stored with the
/// run and logged. The client scrubs its own key from every answer before quoting it.
#[tokio::test]
async fn an_endpoint_echoing_the_key_has_it_scrubbed_from_errors_and_replies() {
    // Past the excerpt's length too, so the key straddles where the excerpt is cut.
    let echo = |status: u16, pad: usize| Reply {
        status,
        retry_after: None,
        body: json!({"error": {"message": format!("{}invalid key: Bearer {KEY}", "x".repeat(pad))}})
            .to_string(),
    };
    let (url, _) = serve(vec![echo(500, 0), echo(401, 0)]).await;
    let err = client(&url).chat(&user("hi"), None).await.unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(text.contains("Bearer [redacted]"), "{text}");
    assert!(!text.contains(KEY), "{text}");
    // The key begins 8 characters before the excerpt ends: no part of it is quoted.
    let (url, _) = serve(vec![echo(401, EXCERPT_CHARS - 50)]).await;
    let err = client(&url).chat(&user("hi"), None).await.unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(text.contains("[...]") && !text.contains(&KEY[..6]), "{text}");
    // A reply whose content repeats the key (a model told it, say) does not keep it either.
    let (url, _) = serve(vec![ok(&format!("the key is {KEY}"), None)]).await;
    let done = client(&url).chat(&user("hi"), None).await.unwrap();
    assert_eq!(done.content, "the key is [redacted]");
}

#[test]
fn secrets_and_url_credentials_stay_hidden() {
    assert_eq!(format!("{:?}", Secret::new(KEY)), "Secret(<redacted>)");
    let msg = without_url_secrets("error sending request for url (https://user:sk-abc@host/v1/chat)");
    assert!(!msg.contains("sk-abc"), "{msg}");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 300, ..Default::default() })]

    /// Any body, valid JSON or not, is a completion or a `Malformed` error with an excerpt: never a panic.
    #[test]
    fn any_answer_body_is_a_completion_or_a_clear_error(body in proptest::prelude::any::<String>()) {
        if let Err(e) = parse_completion(&body) {
            proptest::prop_assert!(matches!(e, Error::Malformed { .. }), "{e}");
        }
    }

    #[test]
    fn near_valid_answers_never_panic(content in ".{0,200}", usage in proptest::option::of(0i64..1_000_000), cut in 0usize..400) {
        let body = serde_json::json!({"choices": [{"message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                                     "usage": usage.map(|u| serde_json::json!({"prompt_tokens": u, "completion_tokens": u}))}).to_string();
        let cut = &body[..body.char_indices().map(|(i, _)| i).find(|&i| i >= cut.min(body.len())).unwrap_or(body.len())];
        let _ = parse_completion(cut);
        let done = parse_completion(&body).unwrap();
        proptest::prop_assert_eq!(done.content, content);
    }
}

/// Serves `total` bytes of an endless-looking JSON string in 64 KiB chunks (no Content-Length),
/// counting the bytes the server managed to hand to the connection.
async fn serve_huge(total: usize) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let produced = Arc::new(AtomicUsize::new(0));
    let counter = produced.clone();
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(move || {
            let counter = counter.clone();
            async move {
                const CHUNK: usize = 64 * 1024;
                let chunks = futures_util::stream::iter((0..total / CHUNK).map(move |i| {
                    counter.fetch_add(CHUNK, Ordering::Relaxed);
                    let byte = if i == 0 { b'{' } else { b' ' };
                    Ok::<_, std::io::Error>(bytes::Bytes::from(vec![byte; CHUNK]))
                }));
                (StatusCode::OK, axum::body::Body::from_stream(chunks))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/v1"), produced)
}

#[tokio::test]
async fn a_reply_over_the_size_limit_is_malformed_and_not_read_to_its_end() {
    const TOTAL: usize = 512 * 1024 * 1024;
    let (url, produced) = serve_huge(TOTAL).await;
    let mut config = client(&url).config.clone();
    config.retry.max_reply_bytes = 1024 * 1024;
    let err = LlmClient::new(config).unwrap().chat(&user("hi"), None).await.unwrap_err();
    match &err {
        Error::Malformed { reason, excerpt } => {
            assert!(reason.contains("1048576 bytes"), "the reason names the limit: {reason}");
            assert!(excerpt.len() < 1024, "the excerpt stays short: {} bytes", excerpt.len());
        }
        other => panic!("expected a malformed reply, got {other}"),
    }
    // Three attempts, each stopped at the limit (plus what the sockets buffer), not 3 x 512 MiB.
    let produced = produced.load(std::sync::atomic::Ordering::Relaxed);
    assert!(produced < 64 * 1024 * 1024, "the server produced {produced} bytes");
}
