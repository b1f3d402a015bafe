//! The HTTP server: OpenAI's Chat Completions wire format answered from scenarios.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::scenario::{NoScenario, Scenario, Scenarios, Turn};
use super::SUBMIT_COMMAND;

/// How the server is run.
#[derive(Clone, Default)]
pub struct ServeOptions {
    /// When set, every request must carry `Authorization: Bearer <key>`.
    pub required_api_key: Option<String>,
    /// Added before every answer, as a slow model would take.
    pub delay: Duration,
}

impl fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = self.required_api_key.as_ref().map(|_| "<redacted>");
        f.debug_struct("ServeOptions").field("required_api_key", &key).field("delay", &self.delay).finish()
    }
}

/// Serves until the future is dropped or the listener fails.
pub async fn serve(
    listener: TcpListener,
    scenarios: Scenarios,
    options: ServeOptions,
) -> std::io::Result<()> {
    axum::serve(listener, router(scenarios, options)).await
}

/// Binds 127.0.0.1:0 and serves there on a task of the current runtime. Returns the base URL
/// (`http://127.0.0.1:<port>/v1`) and the task, which the caller owns (abort it to stop).
pub async fn spawn_local(
    scenarios: Scenarios,
    options: ServeOptions,
) -> std::io::Result<(String, JoinHandle<std::io::Result<()>>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(serve(listener, scenarios, options));
    Ok((format!("http://{addr}/v1"), task))
}

/// Agent conversations grow; a long trajectory with large command outputs runs to megabytes.
const BODY_LIMIT: usize = 64 << 20;

/// Matches a mini-swe-agent style action: a fenced bash block.
static BASH_BLOCK: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(r"(?s)```bash\s*\n(.*?)\n```").expect("static regex"));

fn router(scenarios: Scenarios, options: ServeOptions) -> Router {
    let state = Arc::new(AppState {
        scenarios,
        required_api_key: options.required_api_key,
        delay: options.delay,
        storm: Mutex::new(None),
        seen: Mutex::new(HashMap::new()),
        stats: Mutex::new(Stats::default()),
        next_id: AtomicU64::new(1),
    });
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/replay/stats", get(stats))
        .route("/replay/storm", post(start_storm).delete(end_storm))
        .fallback(unknown_route)
        .layer(middleware::from_fn_with_state(state.clone(), require_key))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

struct AppState {
    scenarios: Scenarios,
    required_api_key: Option<String>,
    delay: Duration,
    /// A fault every chat completion gets until it ends (`POST /replay/storm`).
    storm: Mutex<Option<Storm>>,
    /// Times each faulty request was seen: (scenario index, turn index, hash of the messages).
    /// Only turns that script a fault are counted, so the map stays small.
    seen: Mutex<HashMap<(usize, usize, u64), u32>>,
    stats: Mutex<Stats>,
    /// For `replay-<n>` and `call_<n>` ids.
    next_id: AtomicU64,
}

/// What `GET /replay/stats` returns.
#[derive(Debug, Default)]
struct Stats {
    /// Chat completion requests received (bad ones included).
    requests: u64,
    /// Scripted faults served (error statuses and malformed bodies).
    faults: u64,
    /// Requests answered with a storm's fault (or held by a hang storm).
    storm_faults: u64,
    /// Chat completion requests per scenario they were routed to.
    by_scenario: BTreeMap<String, u64>,
}

/// A poisoned lock only means another request panicked mid-update of a counter; the
/// counters are still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
struct OpenAiError {
    status: StatusCode,
    kind: &'static str,
    code: Option<&'static str>,
    message: String,
}

impl OpenAiError {
    fn invalid_request(message: impl Into<String>) -> Self {
        OpenAiError {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code: None,
            message: message.into(),
        }
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {
            "message": self.message, "type": self.kind, "param": null, "code": self.code,
        }});
        (self.status, Json(body)).into_response()
    }
}

async fn require_key(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if let Some(key) = &state.required_api_key {
        // The header and the key are compared, never logged or echoed.
        let given = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let problem = match given.map(|v| v.strip_prefix("Bearer ")) {
            None => Some("no API key: send `Authorization: Bearer <key>`"),
            Some(None) => Some("the Authorization header is not `Bearer <key>`"),
            Some(Some(token)) if !same_bytes(token.trim().as_bytes(), key.as_bytes()) => {
                Some("wrong API key")
            }
            Some(Some(_)) => None,
        };
        if let Some(problem) = problem {
            return OpenAiError {
                status: StatusCode::UNAUTHORIZED,
                kind: "invalid_request_error",
                code: Some("invalid_api_key"),
                message: problem.to_string(),
            }
            .into_response();
        }
    }
    next.run(request).await
}

/// Compares in time independent of where the first difference is.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn unknown_route(method: Method, uri: Uri) -> OpenAiError {
    OpenAiError {
        status: StatusCode::NOT_FOUND,
        kind: "invalid_request_error",
        code: None,
        message: format!(
            "no route {method} {}: the replay agent serves POST /v1/chat/completions, GET /v1/models, \
             GET /replay/stats and POST/DELETE /replay/storm",
            uri.path()
        ),
    }
}

async fn models(State(state): State<Arc<AppState>>) -> Json<Value> {
    let data: Vec<Value> = state
        .scenarios
        .iter()
        .map(|s| {
            json!({
                "id": format!("replay/{}", s.name),
                "object": "model",
                "created": 0,
                "owned_by": "steerbench-replay",
                "description": s.description,
            })
        })
        .collect();
    Json(json!({"object": "list", "data": data}))
}

async fn stats(State(state): State<Arc<AppState>>) -> Json<Value> {
    let stats = lock(&state.stats);
    Json(json!({
        "requests": stats.requests,
        "faults": stats.faults,
        "storm_faults": stats.storm_faults,
        "by_scenario": stats.by_scenario,
    }))
}

/// A stretch of one fault for every chat completion, whatever its scenario scripts: how an
/// endpoint behaves when it is overloaded (429), broken (500) or wedged (hang).
#[derive(Debug, Clone, Copy)]
struct Storm {
    kind: StormKind,
    until: tokio::time::Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
enum StormKind {
    /// `429 Too Many Requests` with `Retry-After: 1`.
    #[serde(rename = "429")]
    RateLimited,
    /// `500 Internal Server Error`.
    #[serde(rename = "500")]
    ServerError,
    /// No answer until the storm ends (clients time out first).
    #[serde(rename = "hang")]
    Hang,
    /// `500 Internal Server Error` whose message repeats the request's `Authorization` header,
    /// as some endpoints' error pages do: what a client stores or logs of it must not keep the key.
    #[serde(rename = "500-echo")]
    ServerErrorEchoingKey,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StormRequest {
    kind: StormKind,
    seconds: f64,
}

/// `POST /replay/storm {"kind": "429"|"500"|"500-echo"|"hang", "seconds": N}`: starts (or
/// replaces) a storm.
async fn start_storm(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Json<Value>, OpenAiError> {
    let request: StormRequest = serde_json::from_slice(&body).map_err(|e| {
        OpenAiError::invalid_request(format!(
            "a storm is {{\"kind\": \"429\"|\"500\"|\"500-echo\"|\"hang\", \"seconds\": N}}: {e}"
        ))
    })?;
    if !(request.seconds.is_finite() && request.seconds > 0.0 && request.seconds <= 3600.0) {
        return Err(OpenAiError::invalid_request("`seconds` must be more than 0 and at most 3600"));
    }
    let until = tokio::time::Instant::now() + Duration::from_secs_f64(request.seconds);
    *lock(&state.storm) = Some(Storm { kind: request.kind, until });
    tracing::warn!(kind = ?request.kind, seconds = request.seconds, "replay: storm started");
    Ok(Json(json!({"storm": true, "seconds": request.seconds})))
}

/// `DELETE /replay/storm`: ends a storm now.
async fn end_storm(State(state): State<Arc<AppState>>) -> Json<Value> {
    let was = lock(&state.storm).take().is_some();
    tracing::warn!(was, "replay: storm ended");
    Json(json!({"storm": false, "was": was}))
}

/// The storm's answer to a chat completion, while one lasts; `None` lets the request through
/// (a hang storm holds it until the storm ends, then lets it through).
async fn storm_fault(state: &AppState, headers: &HeaderMap) -> Option<Response> {
    let storm = {
        let mut slot = lock(&state.storm);
        match *slot {
            Some(storm) if storm.until > tokio::time::Instant::now() => storm,
            Some(_) => {
                *slot = None;
                return None;
            }
            None => return None,
        }
    };
    lock(&state.stats).storm_faults += 1;
    let (status, kind, code) = match storm.kind {
        StormKind::Hang => {
            tokio::time::sleep_until(storm.until).await;
            return None;
        }
        StormKind::RateLimited => {
            (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", Some("rate_limit_exceeded"))
        }
        StormKind::ServerError | StormKind::ServerErrorEchoingKey => {
            (StatusCode::INTERNAL_SERVER_ERROR, "server_error", None)
        }
    };
    let mut message = format!("storm of the replay agent: every request answers {} for now", status.as_u16());
    if storm.kind == StormKind::ServerErrorEchoingKey {
        let sent = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("nothing");
        message += &format!(" (you sent Authorization: {sent})");
    }
    let mut response = OpenAiError { status, kind, code, message }.into_response();
    if storm.kind == StormKind::RateLimited {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(1u32));
    }
    Some(response)
}

/// The parts of a request body the replay agent reads.
struct ChatRequest {
    model: String,
    messages: Vec<Value>,
    tools: bool,
}

fn parse_request(body: &[u8]) -> Result<ChatRequest, OpenAiError> {
    fn bad(message: impl Into<String>) -> OpenAiError {
        OpenAiError::invalid_request(message)
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("the request body is not JSON: {e}")))?;
    let Value::Object(mut body) = value else {
        return Err(bad("the request body must be a JSON object"));
    };
    let model = match body.remove("model") {
        Some(Value::String(model)) => model,
        None | Some(Value::Null) => return Err(bad("`model` is required")),
        Some(_) => return Err(bad("`model` must be a string")),
    };
    if body.get("stream").is_some_and(|s| s.as_bool() != Some(false) && !s.is_null()) {
        return Err(bad("`stream` is not supported: the replay agent answers whole completions only"));
    }
    let messages = match body.remove("messages") {
        Some(Value::Array(messages)) => messages,
        None | Some(Value::Null) => return Err(bad("`messages` is required (an array of messages)")),
        Some(_) => return Err(bad("`messages` must be an array of messages")),
    };
    if messages.is_empty() {
        return Err(bad("`messages` must not be empty"));
    }
    for (i, message) in messages.iter().enumerate() {
        let Some(message) = message.as_object() else {
            return Err(bad(format!("messages[{i}] is not an object")));
        };
        match message.get("role") {
            Some(Value::String(_)) => {}
            None | Some(Value::Null) => return Err(bad(format!("messages[{i}] has no `role`"))),
            Some(_) => return Err(bad(format!("messages[{i}].role must be a string"))),
        }
        match message.get("content") {
            None | Some(Value::Null | Value::String(_) | Value::Array(_)) => {}
            Some(_) => {
                return Err(bad(format!(
                    "messages[{i}].content must be a string, an array of content parts or null"
                )))
            }
        }
    }
    let tools = match body.get("tools") {
        None | Some(Value::Null) => false,
        Some(Value::Array(tools)) => !tools.is_empty(),
        Some(_) => return Err(bad("`tools` must be an array")),
    };
    Ok(ChatRequest { model, messages, tools })
}

/// A message's text: its content (a string, or the `text` of its parts).
fn content_text(message: &Value) -> String {
    match message.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().concat()
        }
        _ => String::new(),
    }
}

/// Characters a message counts for in the token estimate: its text and its tool calls' arguments.
fn message_chars(message: &Value) -> usize {
    let arguments: usize = message
        .get("tool_calls")
        .and_then(Value::as_array)
        .map(|calls| {
            calls
                .iter()
                .filter_map(|c| c.pointer("/function/arguments").and_then(Value::as_str))
                .map(|a| a.chars().count())
                .sum()
        })
        .unwrap_or(0);
    content_text(message).chars().count() + arguments
}

fn tokens(chars: usize) -> u64 {
    chars.div_ceil(4) as u64
}

async fn chat_completions(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    lock(&state.stats).requests += 1;
    if let Some(fault) = storm_fault(&state, &headers).await {
        return fault;
    }
    if !state.delay.is_zero() {
        tokio::time::sleep(state.delay).await;
    }
    answer(&state, &body).await.unwrap_or_else(IntoResponse::into_response)
}

/// The answer to a well-formed request for a known scenario: the completion, or the fault the
/// turn scripts.
async fn answer(state: &AppState, body: &[u8]) -> Result<Response, OpenAiError> {
    let request = parse_request(body)?;
    let user_texts: Vec<String> = request
        .messages
        .iter()
        .filter(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(content_text)
        .collect();
    let user_refs: Vec<&str> = user_texts.iter().map(String::as_str).collect();
    let (scenario_index, scenario) = state
        .scenarios
        .choose(&request.model, &user_refs)
        .map_err(|e| no_scenario(&state.scenarios, &request.model, e))?;
    *lock(&state.stats).by_scenario.entry(scenario.name.clone()).or_default() += 1;

    let turn_index = request
        .messages
        .iter()
        .filter(|m| m.get("role").and_then(Value::as_str) == Some("assistant"))
        .count();
    let turn = &scenario.turns[turn_index.min(scenario.turns.len() - 1)];
    if turn.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(turn.delay_ms)).await;
    }
    let fault = turn.fail_times > 0 && {
        let key = (scenario_index, turn_index, hash_messages(&request.messages));
        let mut seen = lock(&state.seen);
        let count = seen.entry(key).or_insert(0);
        let before = *count;
        *count = count.saturating_add(1);
        before < turn.fail_times
    };
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let completion = completion(&request, turn, id);
    if fault {
        lock(&state.stats).faults += 1;
        tracing::info!(scenario = %scenario.name, turn = turn_index, status = ?turn.fail_with, malformed = turn.malformed, "replay: scripted fault");
        return Ok(fault_response(scenario, turn, turn_index, &completion));
    }
    tracing::debug!(scenario = %scenario.name, turn = turn_index, "replay: answered");
    Ok((StatusCode::OK, Json(completion)).into_response())
}

fn no_scenario(scenarios: &Scenarios, model: &str, why: NoScenario) -> OpenAiError {
    let known: Vec<String> = scenarios.iter().map(|s| format!("replay/{}", s.name)).collect();
    let message = match why {
        NoScenario::UnknownName(name) => format!(
            "The model `{model}` does not exist: the replay agent has no scenario `{name}`. Known: {}",
            known.join(", ")
        ),
        NoScenario::NoMatch => format!(
            "no replay scenario matches this conversation (model `{model}`): no scenario's `matches` \
             text occurs in a user message. Ask for one by name with the model `replay/<name>`; known: {}",
            known.join(", ")
        ),
    };
    OpenAiError {
        status: StatusCode::NOT_FOUND,
        kind: "invalid_request_error",
        code: Some("model_not_found"),
        message,
    }
}

fn hash_messages(messages: &[Value]) -> u64 {
    let mut hasher = DefaultHasher::new();
    for message in messages {
        message.to_string().hash(&mut hasher);
    }
    hasher.finish()
}

fn fault_response(scenario: &Scenario, turn: &Turn, turn_index: usize, completion: &Value) -> Response {
    if turn.malformed {
        // The real answer cut in half, as a dropped connection or a broken proxy leaves it.
        let text = completion.to_string();
        let mut cut = text.len() / 2;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut response = Response::new(Body::from(text[..cut].to_string()));
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return response;
    }
    let status = turn
        .fail_with
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (kind, code) = if status == StatusCode::TOO_MANY_REQUESTS {
        ("rate_limit_error", Some("rate_limit_exceeded"))
    } else {
        ("server_error", None)
    };
    let mut response = OpenAiError {
        status,
        kind,
        code,
        message: format!(
            "scripted fault of the replay agent: scenario `{}`, turn {turn_index} answers {} the first {} \
             time(s) this request is seen",
            scenario.name,
            status.as_u16(),
            turn.fail_times
        ),
    }
    .into_response();
    if let Some(seconds) = turn.retry_after_s {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// The chat completion a real endpoint would return for this turn.
fn completion(request: &ChatRequest, turn: &Turn, id: u64) -> Value {
    let (message, finish_reason) = if request.tools {
        tool_message(&turn.content, id)
    } else {
        (json!({"role": "assistant", "content": turn.content}), "stop")
    };
    let created = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut body = Map::new();
    body.insert("id".into(), format!("replay-{id}").into());
    body.insert("object".into(), "chat.completion".into());
    body.insert("created".into(), created.into());
    body.insert("model".into(), request.model.clone().into());
    body.insert("system_fingerprint".into(), "steerbench-replay".into());
    let reply_chars = message_chars(&message);
    body.insert("choices".into(), json!([{"index": 0, "message": message, "finish_reason": finish_reason}]));
    if turn.usage {
        let all: usize = request.messages.iter().map(message_chars).sum();
        let last = request.messages.last().map(message_chars).unwrap_or(0);
        let prompt = tokens(all);
        let cached = tokens(all - last).min(prompt);
        let completion = tokens(reply_chars);
        body.insert(
            "usage".into(),
            json!({
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
                "prompt_tokens_details": {"cached_tokens": cached},
            }),
        );
    }
    Value::Object(body)
}

/// A turn as a tool-calling model would say it: its one bash block becomes a `bash` call (or
/// `submit`, for the submit command), the text before it the content. A turn without exactly
/// one block is answered as text, which is the agent's format error to handle.
fn tool_message(content: &str, id: u64) -> (Value, &'static str) {
    let blocks: Vec<regex::Captures> = BASH_BLOCK.captures_iter(content).collect();
    let [block] = blocks.as_slice() else {
        return (json!({"role": "assistant", "content": content}), "stop");
    };
    let (Some(whole), Some(command)) = (block.get(0), block.get(1)) else {
        return (json!({"role": "assistant", "content": content}), "stop");
    };
    let before = content[..whole.start()].trim();
    let (name, arguments) = if command.as_str().trim() == SUBMIT_COMMAND {
        ("submit", "{}".to_string())
    } else {
        ("bash", json!({"command": command.as_str()}).to_string())
    };
    let message = json!({
        "role": "assistant",
        "content": if before.is_empty() { Value::Null } else { before.into() },
        "tool_calls": [{
            "id": format!("call_{id}"),
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }],
    });
    (message, "tool_calls")
}
