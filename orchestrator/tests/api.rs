//! The coordinator's HTTP API from the outside: a real coordinator on port 0 over a fresh
//! database per test (`#[sqlx::test]`), spoken to with plain HTTP. Every request has a
//! deadline, and every test stops its coordinator and waits (with a deadline) for its tasks.

use std::time::Duration;

use orchestrator::server::{self, CoordinatorConfig};
use orchestrator::store::tokens;
use orchestrator::{dataset, testkit};
use protocol::{
    ClaimResponse, CompleteRun, DatasetInfo, Outcome, Registered, Role, RunState, RunTotals, StepRecord,
    SweepState, SweepStatus, SweepSubmitted, Trajectory, UploadSteps,
};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

/// Longest a single request may take before the test fails instead of hanging.
const REQUEST_DEADLINE: Duration = Duration::from_secs(30);
/// Longest the coordinator may take to stop once told to.
const STOP_DEADLINE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- harness

/// A coordinator serving on an ephemeral port, with one live token of each role.
struct Coordinator {
    base: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    admin: String,
    user: String,
    worker: String,
}

impl Coordinator {
    async fn start(pool: &PgPool) -> Self {
        Self::start_with(pool, CoordinatorConfig::default()).await
    }

    /// A coordinator with `config` (its address replaced by an ephemeral loopback port).
    async fn start_with(pool: &PgPool, config: CoordinatorConfig) -> Self {
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let config = CoordinatorConfig { bind: "127.0.0.1:0".parse().unwrap(), ..config };
        let addr = server::spawn(pool.clone(), config, shutdown.clone(), &tracker)
            .await
            .expect("coordinator starts");
        let token =
            |role: Role| async move { tokens::create(pool, role.as_str(), role).await.expect("token").token };
        Coordinator {
            base: format!("http://{addr}"),
            http: reqwest::Client::builder().timeout(REQUEST_DEADLINE).build().expect("HTTP client"),
            shutdown,
            tracker,
            admin: token(Role::Admin).await,
            user: token(Role::User).await,
            worker: token(Role::Worker).await,
        }
    }

    /// A request to `path` (which starts with `/`), with `token` as its bearer token if any.
    fn req(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let rb = self.http.request(method, format!("{}{path}", self.base));
        match token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    fn get(&self, path: &str, token: &str) -> RequestBuilder {
        self.req(Method::GET, path, Some(token))
    }

    fn post(&self, path: &str, token: &str, body: &impl serde::Serialize) -> RequestBuilder {
        self.req(Method::POST, path, Some(token)).json(body)
    }

    /// Stops the coordinator and waits for every one of its tasks to end.
    async fn stop(self) {
        self.shutdown.cancel();
        self.tracker.close();
        tokio::time::timeout(STOP_DEADLINE, self.tracker.wait())
            .await
            .expect("the coordinator's tasks end within the deadline after shutdown");
    }
}

impl Drop for Coordinator {
    /// A test that fails before `stop` still stops the server's tasks.
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Status and body of a response: the body as JSON when it is JSON, else as a JSON string.
async fn call(rb: RequestBuilder) -> (StatusCode, Value) {
    let resp = rb.send().await.expect("the coordinator answers");
    let status = resp.status();
    let text = resp.text().await.expect("a readable response body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// Asserts an API error `{code, message}` with this status and code; returns the message.
fn expect_error((status, body): &(StatusCode, Value), want_status: StatusCode, want_code: &str) -> String {
    assert_eq!(*status, want_status, "unexpected status; body: {body}");
    assert_eq!(body["code"], want_code, "unexpected error code; body: {body}");
    body["message"].as_str().unwrap_or_else(|| panic!("error body without a message: {body}")).to_string()
}

/// Asserts a success status and decodes the body.
fn expect_ok<T: serde::de::DeserializeOwned>((status, body): (StatusCode, Value), want: StatusCode) -> T {
    assert_eq!(status, want, "unexpected status; body: {body}");
    serde_json::from_value(body.clone()).unwrap_or_else(|e| panic!("body does not decode ({e}): {body}"))
}

fn demo_instances() -> Vec<protocol::Instance> {
    dataset::parse(dataset::Format::Jsonl, testkit::DEMO_DATASET.as_bytes()).expect("the demo dataset parses")
}

// ---------------------------------------------------------------- the route table

/// Which tokens a route accepts besides admin ones.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Guard {
    Workers,
    Users,
    AdminsOnly,
    UsersAndWorkers,
}

struct Route {
    method: &'static str,
    /// As written in the router and the OpenAPI document.
    template: &'static str,
    guard: Guard,
}

const fn route(method: &'static str, template: &'static str, guard: Guard) -> Route {
    Route { method, template, guard }
}

/// Every route under /api/v1, as `api::router` declares them.
const ROUTES: &[Route] = &[
    route("POST", "/api/v1/workers", Guard::Workers),
    route("POST", "/api/v1/workers/{worker_id}/heartbeat", Guard::Workers),
    route("POST", "/api/v1/workers/{worker_id}/claim", Guard::Workers),
    route("POST", "/api/v1/workers/{worker_id}/release", Guard::Workers),
    route("POST", "/api/v1/runs/{run_id}/steps", Guard::Workers),
    route("POST", "/api/v1/runs/{run_id}/complete", Guard::Workers),
    route("POST", "/api/v1/runs/{run_id}/fail", Guard::Workers),
    route("POST", "/api/v1/runs/{run_id}/release", Guard::Workers),
    route("POST", "/api/v1/datasets", Guard::Users),
    route("GET", "/api/v1/datasets", Guard::Users),
    route("GET", "/api/v1/datasets/{name}", Guard::Users),
    route("GET", "/api/v1/datasets/{name}/instances", Guard::Users),
    route("POST", "/api/v1/evals", Guard::Users),
    route("GET", "/api/v1/sweeps/{sweep}/evaluations", Guard::Users),
    route("GET", "/api/v1/sweeps/{sweep}/images", Guard::Users),
    route("GET", "/api/v1/sweeps/{sweep}/held-images", Guard::Users),
    route("POST", "/api/v1/sweeps", Guard::Users),
    route("GET", "/api/v1/sweeps", Guard::Users),
    route("POST", "/api/v1/sweep-validations", Guard::Users),
    route("GET", "/api/v1/sweeps/{sweep}", Guard::Users),
    route("DELETE", "/api/v1/sweeps/{sweep}", Guard::Users),
    route("POST", "/api/v1/sweeps/{sweep}/cancel", Guard::Users),
    route("POST", "/api/v1/sweeps/{sweep}/pause", Guard::Users),
    route("POST", "/api/v1/sweeps/{sweep}/resume", Guard::Users),
    route("GET", "/api/v1/sweeps/{sweep}/runs", Guard::Users),
    route("GET", "/api/v1/workers", Guard::Users),
    route("GET", "/api/v1/runs/{run_id}", Guard::Users),
    route("GET", "/api/v1/runs/{run_id}/trajectory", Guard::Users),
    route("GET", "/api/v1/runs/{run_id}/record", Guard::Users),
    route("GET", "/api/v1/report", Guard::Users),
    route("GET", "/api/v1/sweeps/{sweep}/events", Guard::Users),
    route("GET", "/api/v1/compare", Guard::Users),
    route("POST", "/api/v1/tokens", Guard::AdminsOnly),
    route("GET", "/api/v1/tokens", Guard::AdminsOnly),
    route("DELETE", "/api/v1/tokens/{id}", Guard::AdminsOnly),
    route("DELETE", "/api/v1/datasets/{name}", Guard::AdminsOnly),
    route("GET", "/api/v1/openapi.json", Guard::UsersAndWorkers),
];

impl Route {
    /// The route with made-up ids that name nothing in the database.
    fn path(&self) -> String {
        self.template
            .replace("{worker_id}", &Uuid::nil().to_string())
            .replace("{run_id}", "987654")
            .replace("{sweep}", "987654")
            .replace("{name}", "no-such-dataset")
            .replace("{id}", "987654")
    }

    fn label(&self) -> String {
        format!("{} {}", self.method, self.template)
    }

    /// A request to this route; POSTs carry an empty JSON object, which no handler accepts
    /// as work (so a request that gets past the guard changes nothing).
    fn request(&self, c: &Coordinator, token: Option<&str>) -> RequestBuilder {
        let method = Method::from_bytes(self.method.as_bytes()).unwrap();
        let rb = c.req(method.clone(), &self.path(), token);
        if method == Method::POST {
            rb.json(&json!({}))
        } else {
            rb
        }
    }

    fn accepts(&self, role: Role) -> bool {
        matches!(
            (role, self.guard),
            (Role::Admin, _)
                | (Role::Worker, Guard::Workers | Guard::UsersAndWorkers)
                | (Role::User, Guard::Users | Guard::UsersAndWorkers)
        )
    }
}

// ---------------------------------------------------------------- 1. auth

#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn every_api_route_requires_a_live_token(pool: PgPool) {
    let c = Coordinator::start(&pool).await;
    let malformed_headers = ["Basic dXNlcjpwYXNz", "Bearer", "stb_00"];
    for route in ROUTES {
        let label = route.label();
        let res = call(route.request(&c, None)).await;
        let message = expect_error(&res, StatusCode::UNAUTHORIZED, "unauthorized");
        assert!(message.contains("Authorization"), "{label}: {message}");

        let res = call(route.request(&c, Some("stb_not-a-real-token"))).await;
        expect_error(&res, StatusCode::UNAUTHORIZED, "unauthorized");

        for header in malformed_headers {
            let rb = route.request(&c, None).header(reqwest::header::AUTHORIZATION, header);
            let res = call(rb).await;
            assert_eq!(res.0, StatusCode::UNAUTHORIZED, "{label} with `Authorization: {header}`: {}", res.1);
            assert_eq!(res.1["code"], "unauthorized", "{label}: {}", res.1);
        }
    }
    c.stop().await;
}

#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn every_api_route_rejects_revoked_tokens_of_every_role(pool: PgPool) {
    let c = Coordinator::start(&pool).await;
    let mut revoked = Vec::new();
    for role in [Role::Admin, Role::User, Role::Worker] {
        let t = tokens::create(&pool, &format!("revoked-{}", role.as_str()), role).await.unwrap();
        // Live first, so the 401 below is the revocation's doing.
        let (status, _) = call(c.get("/api/v1/openapi.json", &t.token)).await;
        assert_eq!(status, StatusCode::OK, "a live {} token reads the OpenAPI document", role.as_str());
        tokens::revoke(&pool, t.id).await.unwrap();
        revoked.push((role, t.token));
    }
    for route in ROUTES {
        for (role, token) in &revoked {
            let res = call(route.request(&c, Some(token))).await;
            let message = expect_error(&res, StatusCode::UNAUTHORIZED, "unauthorized");
            assert!(
                message.contains("revoked"),
                "{} with a revoked {} token: {message}",
                route.label(),
                role.as_str()
            );
        }
    }
    c.stop().await;
}

#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn every_api_route_checks_the_role_and_admins_pass_everywhere(pool: PgPool) {
    let c = Coordinator::start(&pool).await;
    for route in ROUTES {
        for (role, token) in [(Role::Admin, &c.admin), (Role::User, &c.user), (Role::Worker, &c.worker)] {
            let label = format!("{} with a {} token", route.label(), role.as_str());
            let res = call(route.request(&c, Some(token))).await;
            if route.accepts(role) {
                let (status, body) = &res;
                assert!(
                    ![StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN].contains(status),
                    "{label}: the guard refused: {status} {body}"
                );
                assert!(!status.is_server_error(), "{label}: {status} {body}");
                // The route table above matches the router: no request fell through to the fallback.
                assert_ne!(body["message"], "no such route", "{label}: not routed");
                assert_ne!(*status, StatusCode::METHOD_NOT_ALLOWED, "{label}: not routed");
            } else {
                let message = expect_error(&res, StatusCode::FORBIDDEN, "forbidden");
                assert!(message.contains(role.as_str()), "{label}: {message}");
            }
        }
    }
    c.stop().await;
}

#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn healthz_and_metrics_are_open(pool: PgPool) {
    let c = Coordinator::start(&pool).await;
    let (status, body) = call(c.req(Method::GET, "/healthz", None)).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let resp = c.req(Method::GET, "/metrics", None).send().await.expect("the coordinator answers");
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    let runs_lines: Vec<&str> = text.lines().filter(|l| l.starts_with("steer_runs")).collect();
    assert!(!runs_lines.is_empty(), "no steer_runs lines in /metrics:\n{text}");
    // The per-state gauge is read from the store at scrape time, every state included.
    for state in RunState::ALL {
        let line = format!("steer_runs{{state=\"{}\"}} 0", state.as_str());
        assert!(runs_lines.contains(&line.as_str()), "missing `{line}` in /metrics:\n{text}");
    }
    c.stop().await;
}

// ---------------------------------------------------------------- 2. error bodies

#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn malformed_json_bodies_are_bad_requests_that_name_the_problem(pool: PgPool) {
    let c = Coordinator::start(&pool).await;

    // Not JSON at all.
    let rb = c
        .req(Method::POST, "/api/v1/sweeps", Some(&c.user))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(r#"{"config_toml": "#);
    let message = expect_error(&call(rb).await, StatusCode::BAD_REQUEST, "bad_request");
    assert!(message.contains("EOF while parsing") && message.contains("line 1"), "{message}");

    // A path parameter of the wrong type.
    let message = expect_error(
        &call(c.get("/api/v1/runs/not-a-number", &c.user)).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    assert!(message.contains("not-a-number") || message.contains("parse"), "{message}");
    c.stop().await;
}

/// Well-formed JSON of the wrong shape was answered `422` with code `bad_request`: the status
/// and the code disagreed, and the documented API (the `ApiError` codes, the OpenAPI
/// responses) has no 422. Such a body is a bad request like any other.
#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn json_body_with_missing_or_mistyped_field_is_400_not_422(pool: PgPool) {
    let c = Coordinator::start(&pool).await;

    let body = json!({"name": "w1", "host": "h", "version": "test"});
    let res = call(c.post("/api/v1/workers", &c.worker, &body)).await;
    let message = expect_error(&res, StatusCode::BAD_REQUEST, "bad_request");
    assert!(message.contains("missing field `slots`"), "{message}");

    let body = json!({"max_runs": "many", "wait_ms": 0});
    let path = format!("/api/v1/workers/{}/claim", Uuid::nil());
    let message =
        expect_error(&call(c.post(&path, &c.worker, &body)).await, StatusCode::BAD_REQUEST, "bad_request");
    assert!(message.contains("max_runs") && message.contains("invalid type"), "{message}");
    c.stop().await;
}

#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn bodies_over_the_limit_are_refused_with_413(pool: PgPool) {
    let c = Coordinator::start(&pool).await;
    let huge = "#".repeat(orchestrator::api::BODY_LIMIT + 1);
    let res = call(c.post("/api/v1/sweeps", &c.user, &json!({ "config_toml": huge }))).await;
    expect_error(&res, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    c.stop().await;
}

#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn dataset_uploads_may_exceed_the_default_body_limit(pool: PgPool) {
    let c = Coordinator::start(&pool).await;
    let mut body = serde_json::to_vec(&json!({"name": "demo", "instances": demo_instances()})).unwrap();
    // Trailing whitespace keeps it valid JSON while taking it past the default limit.
    body.resize(orchestrator::api::BODY_LIMIT + 1024 * 1024, b' ');
    let rb = c
        .req(Method::POST, "/api/v1/datasets", Some(&c.user))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    let info: DatasetInfo = expect_ok(call(rb).await, StatusCode::CREATED);
    assert_eq!(info.instances, 6);
    c.stop().await;
}

#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn unknown_routes_and_sweeps_are_json_404s(pool: PgPool) {
    let c = Coordinator::start(&pool).await;
    for path in ["/api/v1/no-such-route", "/api/v1/sweeps/1/no-such-action", "/api/v2/sweeps"] {
        let res = call(c.get(path, &c.user)).await;
        if path.starts_with("/api/v1") {
            expect_error(&res, StatusCode::NOT_FOUND, "not_found");
        } else {
            // Outside /api/v1 there is no JSON fallback; only the status is promised.
            assert_eq!(res.0, StatusCode::NOT_FOUND, "{path}: {}", res.1);
        }
    }
    let message = expect_error(
        &call(c.get("/api/v1/sweeps/424242", &c.user)).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert!(message.contains("424242"), "{message}");
    let message = expect_error(
        &call(c.get("/api/v1/sweeps/no-such-sweep", &c.user)).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert!(message.contains("no-such-sweep"), "{message}");
    for action in ["cancel", "pause", "resume"] {
        let path = format!("/api/v1/sweeps/424242/{action}");
        expect_error(&call(c.post(&path, &c.user, &json!({}))).await, StatusCode::NOT_FOUND, "not_found");
    }
    expect_error(&call(c.get("/api/v1/runs/424242", &c.user)).await, StatusCode::NOT_FOUND, "not_found");
    expect_error(&call(c.get("/api/v1/datasets/nope", &c.user)).await, StatusCode::NOT_FOUND, "not_found");
    c.stop().await;
}

// ---------------------------------------------------------------- 3. OpenAPI

#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn openapi_document_lists_every_route(pool: PgPool) {
    let c = Coordinator::start(&pool).await;
    let resp = c.get("/api/v1/openapi.json", &c.worker).send().await.expect("the coordinator answers");
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with('3')), "openapi: {}", doc["openapi"]);
    let paths = doc["paths"].as_object().expect("a paths object");
    for wanted in ["/api/v1/sweeps", "/api/v1/workers/{worker_id}/claim", "/api/v1/runs/{run_id}/complete"] {
        assert!(paths.contains_key(wanted), "{wanted} missing from {:?}", paths.keys().collect::<Vec<_>>());
    }
    // Every routed operation is documented (the document itself excepted).
    for route in ROUTES.iter().filter(|r| r.template != "/api/v1/openapi.json") {
        let op = &doc["paths"][route.template][route.method.to_ascii_lowercase()];
        assert!(op.is_object(), "{} is not in the OpenAPI document", route.label());
    }
    c.stop().await;
}

// ---------------------------------------------------------------- 4. a user's flow

#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn user_flow_datasets_and_sweeps_over_http(pool: PgPool) {
    let c = Coordinator::start(&pool).await;
    let instances = demo_instances();

    // Datasets: created once, a second upload under the same name is a conflict.
    let upload = json!({"name": "demo", "source": "examples/demo-dataset.jsonl", "instances": instances});
    let info: DatasetInfo =
        expect_ok(call(c.post("/api/v1/datasets", &c.user, &upload)).await, StatusCode::CREATED);
    assert_eq!((info.name.as_str(), info.instances), ("demo", 6));
    let message = expect_error(
        &call(c.post("/api/v1/datasets", &c.user, &upload)).await,
        StatusCode::CONFLICT,
        "conflict",
    );
    assert!(message.contains("demo"), "{message}");

    // A hostile instance id is refused with its place and field, and nothing is stored.
    let mut hostile = instances.clone();
    hostile[2].instance_id = "../etc".into();
    let upload = json!({"name": "hostile", "instances": hostile});
    let message = expect_error(
        &call(c.post("/api/v1/datasets", &c.user, &upload)).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    assert!(
        message.contains("row 2") && message.contains("instance_id") && message.contains("../etc"),
        "{message}"
    );
    let listed: Vec<DatasetInfo> = expect_ok(call(c.get("/api/v1/datasets", &c.user)).await, StatusCode::OK);
    assert_eq!(listed.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), ["demo"]);
    expect_error(&call(c.get("/api/v1/datasets/hostile", &c.user)).await, StatusCode::NOT_FOUND, "not_found");
    let info: DatasetInfo = expect_ok(call(c.get("/api/v1/datasets/demo", &c.user)).await, StatusCode::OK);
    assert_eq!(info.instances, 6);

    // Sweeps: submitting is idempotent.
    let submit = json!({"config_toml": testkit::sweep_toml("s1", "", "")});
    let first: SweepSubmitted =
        expect_ok(call(c.post("/api/v1/sweeps", &c.user, &submit)).await, StatusCode::CREATED);
    assert!(first.created);
    assert_eq!((first.name.as_str(), first.runs), ("s1", 6));
    let again: SweepSubmitted =
        expect_ok(call(c.post("/api/v1/sweeps", &c.user, &submit)).await, StatusCode::OK);
    assert!(!again.created);
    assert_eq!((again.sweep_id, &again.config_hash), (first.sweep_id, &first.config_hash));

    // A sweep file with an error: the message names the file, line and key path.
    let bad = testkit::sweep_toml("bad", "", "temperature = 9");
    let line = bad.lines().position(|l| l == "temperature = 9").unwrap() + 1;
    let req = json!({"config_toml": bad, "file_name": "bad.toml"});
    let message = expect_error(
        &call(c.post("/api/v1/sweeps", &c.user, &req)).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    assert!(message.starts_with(&format!("bad.toml:{line}: agents[0].temperature")), "{message}");
    assert!(message.contains("between 0 and 2"), "{message}");
    expect_error(&call(c.get("/api/v1/sweeps/bad", &c.user)).await, StatusCode::NOT_FOUND, "not_found");

    // Status by id and by name.
    let by_id: SweepStatus =
        expect_ok(call(c.get(&format!("/api/v1/sweeps/{}", first.sweep_id), &c.user)).await, StatusCode::OK);
    let by_name: SweepStatus = expect_ok(call(c.get("/api/v1/sweeps/s1", &c.user)).await, StatusCode::OK);
    for st in [&by_id, &by_name] {
        assert_eq!((st.id, st.name.as_str(), st.state), (first.sweep_id, "s1", SweepState::Running));
        assert_eq!((st.total_runs, st.states["queued"]), (6, 6));
    }
    let listed: Vec<SweepStatus> = expect_ok(call(c.get("/api/v1/sweeps", &c.user)).await, StatusCode::OK);
    assert_eq!(listed.iter().map(|s| s.id).collect::<Vec<_>>(), [first.sweep_id]);

    // Pause, resume, cancel; transitions that make no sense are conflicts.
    let action = |what: &str| c.post(&format!("/api/v1/sweeps/s1/{what}"), &c.user, &json!({}));
    let st: SweepStatus = expect_ok(call(action("pause")).await, StatusCode::OK);
    assert_eq!((st.state, st.states["paused"], st.states["queued"]), (SweepState::Paused, 6, 0));
    expect_error(&call(action("pause")).await, StatusCode::CONFLICT, "conflict");
    let st: SweepStatus = expect_ok(call(action("resume")).await, StatusCode::OK);
    assert_eq!((st.state, st.states["queued"], st.states["paused"]), (SweepState::Running, 6, 0));
    expect_error(&call(action("resume")).await, StatusCode::CONFLICT, "conflict");
    let st: SweepStatus = expect_ok(call(action("cancel")).await, StatusCode::OK);
    assert_eq!((st.state, st.states["cancelled"], st.states["queued"]), (SweepState::Cancelled, 6, 0));
    let message = expect_error(&call(action("cancel")).await, StatusCode::CONFLICT, "conflict");
    assert!(message.contains("cancelled"), "{message}");
    let st: SweepStatus = expect_ok(call(c.get("/api/v1/sweeps/s1", &c.user)).await, StatusCode::OK);
    assert_eq!(st.state, SweepState::Cancelled);
    c.stop().await;
}

// ---------------------------------------------------------------- 5. the worker protocol

#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn worker_protocol_over_http(pool: PgPool) {
    testkit::import_demo(&pool, "demo").await;
    let sweep = testkit::submit(&pool, &testkit::sweep_toml("w", "", "")).await;
    let c = Coordinator::start(&pool).await;

    let register = json!({"name": "w1", "host": "test-host", "slots": 1, "version": "test"});
    let reg: Registered =
        expect_ok(call(c.post("/api/v1/workers", &c.worker, &register)).await, StatusCode::OK);
    assert!(reg.lease_ttl_ms > 0 && reg.heartbeat_interval_ms < reg.lease_ttl_ms, "{reg:?}");
    let worker_path = |what: &str| format!("/api/v1/workers/{}/{what}", reg.worker_id);

    // An unregistered worker cannot claim.
    let stranger = format!("/api/v1/workers/{}/claim", Uuid::new_v4());
    expect_error(
        &call(c.post(&stranger, &c.worker, &json!({"max_runs": 1, "wait_ms": 0}))).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    let claimed: ClaimResponse = expect_ok(
        call(c.post(&worker_path("claim"), &c.worker, &json!({"max_runs": 1, "wait_ms": 0}))).await,
        StatusCode::OK,
    );
    assert_eq!(claimed.runs.len(), 1, "{claimed:?}");
    let run = &claimed.runs[0];
    assert_eq!((run.sweep_id, run.attempt), (sweep.sweep_id, 1));
    let run_path = |what: &str| format!("/api/v1/runs/{}/{what}", run.run_id);

    let hb = json!({"leases": [run.lease()]});
    let ack: Value = expect_ok(call(c.post(&worker_path("heartbeat"), &c.worker, &hb)).await, StatusCode::OK);
    assert_eq!(ack, json!({"lost": [], "cancelled": []}));

    let step = StepRecord {
        index: 0,
        action: Some("ls".into()),
        observation: Some("README.md".into()),
        exit_code: Some(0),
        duration_ms: 12,
        input_tokens: 100,
        output_tokens: 7,
        cost_usd: "0.0012".parse().unwrap(),
        messages: json!([{"role": "assistant", "content": "ls"}]),
        ..Default::default()
    };
    let upload = UploadSteps {
        lease_token: run.lease_token,
        steps: vec![step.clone()],
        llm_calls: vec![],
        critic_calls: vec![],
    };
    let (status, body) = call(c.post(&run_path("steps"), &c.worker, &upload)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let stale = UploadSteps {
        lease_token: Uuid::new_v4(),
        steps: vec![StepRecord { index: 1, ..step.clone() }],
        llm_calls: vec![],
        critic_calls: vec![],
    };
    expect_error(
        &call(c.post(&run_path("steps"), &c.worker, &stale)).await,
        StatusCode::CONFLICT,
        "lease_lost",
    );

    let complete = CompleteRun {
        lease_token: run.lease_token,
        outcome: Outcome::SyntheticUnresolved,
        totals: RunTotals { steps: 1, input_tokens: 100, output_tokens: 7, ..Default::default() },
        patch: Some(String::new()),
        evaluation: None,
        detail: None,
    };
    let (status, body) = call(c.post(&run_path("complete"), &c.worker, &complete)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    // The same lease completing again (a retry whose answer was lost) is fine...
    let (status, body) = call(c.post(&run_path("complete"), &c.worker, &complete)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    // ...any other token is not.
    let forged = CompleteRun { lease_token: Uuid::new_v4(), ..complete.clone() };
    let message = expect_error(
        &call(c.post(&run_path("complete"), &c.worker, &forged)).await,
        StatusCode::CONFLICT,
        "lease_lost",
    );
    assert!(message.contains(&run.run_id.to_string()), "{message}");

    let traj: Trajectory = expect_ok(call(c.get(&run_path("record"), &c.user)).await, StatusCode::OK);
    assert!(traj.steps.iter().all(|s| s.recorded_at.is_some()), "the coordinator says when it stored it");
    let kept: Vec<StepRecord> =
        traj.steps.iter().map(|s| StepRecord { recorded_at: None, ..s.clone() }).collect();
    assert_eq!(kept, [StepRecord { attempt: 1, ..step }], "the step is kept under its attempt");
    let mini: serde_json::Value =
        expect_ok(call(c.get(&run_path("trajectory"), &c.user)).await, StatusCode::OK);
    assert_eq!(mini["trajectory_format"], "mini-swe-agent-1.1");
    assert_eq!(mini["instance_id"], traj.run.instance_id.as_str());
    assert_eq!(
        (traj.run.id, traj.run.state, traj.run.outcome),
        (run.run_id, RunState::Done, Some(Outcome::SyntheticUnresolved))
    );
    assert_eq!(traj.run.worker_id, Some(reg.worker_id));

    let metrics = c.req(Method::GET, "/metrics", None).send().await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l == "steer_runs{state=\"done\"} 1"), "{metrics}");
    c.stop().await;
}

/// Regression: the model calls workers uploaded were stored and charged but never counted on
/// `/metrics`. They are now, by endpoint (`host:port`, never the URL) and by agent, and a
/// re-sent upload's records only once.
#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn uploaded_model_calls_are_counted_by_endpoint_and_agent(pool: PgPool) {
    testkit::import_demo(&pool, "demo").await;
    testkit::submit(&pool, &testkit::sweep_toml("m", "", "")).await;
    let c = Coordinator::start(&pool).await;
    let register = json!({"name": "w1", "host": "test-host", "slots": 1, "version": "test"});
    let reg: Registered =
        expect_ok(call(c.post("/api/v1/workers", &c.worker, &register)).await, StatusCode::OK);
    let claimed: ClaimResponse = expect_ok(
        call(c.post(
            &format!("/api/v1/workers/{}/claim", reg.worker_id),
            &c.worker,
            &json!({"max_runs": 1, "wait_ms": 0}),
        ))
        .await,
        StatusCode::OK,
    );
    let run = &claimed.runs[0];
    assert_eq!(run.agent.base_url, "http://127.0.0.1:9/v1", "the label below is derived from it");
    let call_record = |index: i32, status: &str| protocol::LlmCallRecord {
        call_index: index,
        step_index: Some(0),
        model: "demo-model".into(),
        status: status.parse().unwrap(),
        retries: 1,
        latency_ms: 2000,
        input_tokens: 100,
        output_tokens: 10,
        cost_usd: "0.5".parse().unwrap(),
        ..Default::default()
    };
    let upload = UploadSteps {
        lease_token: run.lease_token,
        steps: vec![StepRecord { index: 0, action: Some("ls".into()), ..Default::default() }],
        llm_calls: vec![call_record(0, "ok"), call_record(1, "timeout")],
        critic_calls: vec![],
    };
    // Sent, then re-sent (its first answer lost) with one more step and call: what was stored
    // already is counted once, like the store charges it once.
    let resent = UploadSteps {
        steps: [
            upload.steps.clone(),
            vec![StepRecord { index: 1, action: Some("pwd".into()), ..Default::default() }],
        ]
        .concat(),
        llm_calls: [upload.llm_calls.clone(), vec![call_record(2, "ok")]].concat(),
        ..upload.clone()
    };
    for body in [&upload, &resent] {
        let (status, text) =
            call(c.post(&format!("/api/v1/runs/{}/steps", run.run_id), &c.worker, body)).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{text}");
    }

    let metrics = c.req(Method::GET, "/metrics", None).send().await.unwrap().text().await.unwrap();
    for line in [
        r#"steer_steps_total 2"#,
        r#"steer_llm_calls_total{endpoint="127.0.0.1:9",model="demo-model",status="ok"} 2"#,
        r#"steer_llm_calls_total{endpoint="127.0.0.1:9",model="demo-model",status="timeout"} 1"#,
        r#"steer_llm_retries_total{endpoint="127.0.0.1:9",model="demo-model"} 3"#,
        r#"steer_llm_seconds_count{endpoint="127.0.0.1:9",model="demo-model"} 3"#,
        r#"steer_llm_tokens_total{agent="agent-a",model="demo-model",kind="output"} 30"#,
        r#"steer_llm_cost_usd_total{agent="agent-a",model="demo-model"} 1.5"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "missing `{line}` in /metrics:\n{metrics}");
    }
    c.stop().await;
}

/// Every model call keeps the endpoint's id of its answer (`chatcmpl-...`), agent and remote
/// critic calls alike, so they can be joined with a provider's or proxy's spend logs: stored,
/// returned by the run's record and shown on the step's message in the mini-swe-agent export.
/// A call without one (failed, or from a worker that predates the field) has none.
#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn model_calls_keep_the_endpoints_response_id(pool: PgPool) {
    testkit::import_demo(&pool, "demo").await;
    testkit::submit(&pool, &testkit::sweep_toml("ids", "", "")).await;
    let c = Coordinator::start(&pool).await;
    let register = json!({"name": "w1", "host": "test-host", "slots": 1, "version": "test"});
    let reg: Registered =
        expect_ok(call(c.post("/api/v1/workers", &c.worker, &register)).await, StatusCode::OK);
    let claimed: ClaimResponse = expect_ok(
        call(c.post(
            &format!("/api/v1/workers/{}/claim", reg.worker_id),
            &c.worker,
            &json!({"max_runs": 1, "wait_ms": 0}),
        ))
        .await,
        StatusCode::OK,
    );
    let run = &claimed.runs[0];
    let llm_call = |index: i32, status: &str, id: Option<&str>| protocol::LlmCallRecord {
        call_index: index,
        step_index: Some(0),
        model: "demo-model".into(),
        status: status.parse().unwrap(),
        response_id: id.map(str::to_string),
        ..Default::default()
    };
    let upload = UploadSteps {
        lease_token: run.lease_token,
        steps: vec![StepRecord {
            index: 0,
            action: Some("ls".into()),
            messages: json!([{"role": "assistant", "content": "ls"}]),
            ..Default::default()
        }],
        llm_calls: vec![
            llm_call(0, "timeout", None),
            llm_call(1, "ok", Some("chatcmpl-agent-1")),
            llm_call(2, "ok", Some("dropped-by-an-old-worker")),
        ],
        critic_calls: vec![protocol::CriticCallRecord {
            step_index: 0,
            kind: protocol::CriticKind::Remote,
            model: Some("critic".into()),
            trigger: "every_k".into(),
            response_id: Some("chatcmpl-critic-1".into()),
            ..Default::default()
        }],
    };
    // A worker from before response ids sends no such field: the call is stored without one.
    let mut body = serde_json::to_value(&upload).unwrap();
    body["llm_calls"][2].as_object_mut().unwrap().remove("response_id");
    let run_path = |what: &str| format!("/api/v1/runs/{}/{what}", run.run_id);
    let (status, text) = call(c.post(&run_path("steps"), &c.worker, &body)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{text}");

    let stored: Vec<Option<String>> =
        sqlx::query_scalar("SELECT response_id FROM llm_calls WHERE run_id = $1 ORDER BY call_index")
            .bind(run.run_id)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(stored, [None, Some("chatcmpl-agent-1".to_string()), None]);
    let traj: Trajectory = expect_ok(call(c.get(&run_path("record"), &c.user)).await, StatusCode::OK);
    let ids: Vec<Option<&str>> = traj.llm_calls.iter().map(|c| c.call.response_id.as_deref()).collect();
    assert_eq!(ids, [None, Some("chatcmpl-agent-1"), None]);
    assert_eq!(traj.critic_calls[0].call.response_id.as_deref(), Some("chatcmpl-critic-1"));
    let mini: Value = expect_ok(call(c.get(&run_path("trajectory"), &c.user)).await, StatusCode::OK);
    assert_eq!(mini["messages"][0]["extra"]["response_id"], "chatcmpl-agent-1", "{mini}");
    let steerbench = &mini["info"]["steerbench"];
    assert_eq!(steerbench["llm_calls"][1]["response_id"], "chatcmpl-agent-1");
    assert_eq!(steerbench["critic_calls"][0]["response_id"], "chatcmpl-critic-1");
    c.stop().await;
}

/// The endpoints' circuit breakers are on `/metrics` (read from the database at scrape time) and
/// in the status of sweeps that use them, only while not closed.
#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn resting_endpoints_are_on_metrics_and_sweep_status_until_their_breaker_closes(pool: PgPool) {
    testkit::import_demo(&pool, "demo").await;
    let sweep = testkit::submit(&pool, &testkit::sweep_toml("rest", "", "")).await.sweep_id;
    let c = Coordinator::start(&pool).await;
    let scrape =
        || async { c.req(Method::GET, "/metrics", None).send().await.unwrap().text().await.unwrap() };
    sqlx::query("UPDATE endpoints SET outage_failures = 2, cooldown_until = now() + interval '30 seconds'")
        .execute(&pool)
        .await
        .unwrap();
    let metrics = scrape().await;
    assert!(metrics.lines().any(|l| l == r#"steer_endpoint_outages{endpoint="127.0.0.1:9"} 2"#), "{metrics}");
    let left: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"steer_endpoint_cooldown_seconds{endpoint="127.0.0.1:9"} "#))
        .unwrap_or_else(|| panic!("no cooldown gauge:\n{metrics}"))
        .parse()
        .unwrap();
    assert!(left > 20.0 && left <= 30.0, "{left}");
    let status_path = format!("/api/v1/sweeps/{sweep}");
    let status: protocol::SweepStatus = expect_ok(call(c.get(&status_path, &c.user)).await, StatusCode::OK);
    let resting = &status.resting_endpoints;
    assert_eq!(resting.len(), 1, "{resting:?}");
    assert_eq!((resting[0].endpoint.as_str(), resting[0].outages), ("127.0.0.1:9", 2));
    assert!(resting[0].resting_s > 20.0 && resting[0].resting_s <= 30.0, "{resting:?}");
    sqlx::query("UPDATE endpoints SET outage_failures = 0, cooldown_until = NULL")
        .execute(&pool)
        .await
        .unwrap();
    let status: protocol::SweepStatus = expect_ok(call(c.get(&status_path, &c.user)).await, StatusCode::OK);
    assert!(status.resting_endpoints.is_empty());
    let metrics = scrape().await;
    assert!(!metrics.lines().any(|l| l.starts_with("steer_endpoint_outages{")), "{metrics}");
    assert!(!metrics.lines().any(|l| l.starts_with("steer_endpoint_cooldown_seconds{")), "{metrics}");
    c.stop().await;
}

// ---------------------------------------------------------------- 6. workers bound to their token

/// Everything a worker route can change, as text: runs and their leases, the attempt ledger,
/// steps, and the workers' rows.
async fn queue_snapshot(pool: &PgPool) -> String {
    sqlx::query_scalar(
        "SELECT concat_ws(' | ',
            (SELECT string_agg(concat_ws(',', id, state, attempt, failed_attempts, lease_owner, lease_token,
                                         lease_expires_at, last_error, outcome), ';' ORDER BY id) FROM runs),
            (SELECT string_agg(concat_ws(',', run_id, attempt, worker_id, ending, ended_at, reason), ';'
                               ORDER BY run_id, attempt) FROM run_attempts),
            (SELECT count(*) FROM steps),
            (SELECT string_agg(concat_ws(',', id, last_heartbeat, draining, status, images), ';' ORDER BY id)
             FROM workers))",
    )
    .fetch_one(pool)
    .await
    .expect("a snapshot of the queue")
}

async fn register_worker(c: &Coordinator, token: &str, name: &str) -> Uuid {
    let body = json!({"name": name, "host": "test-host", "slots": 4, "version": "test"});
    let reg: Registered = expect_ok(call(c.post("/api/v1/workers", token, &body)).await, StatusCode::OK);
    reg.worker_id
}

async fn claim_runs(c: &Coordinator, token: &str, worker: Uuid, n: u32) -> Vec<protocol::ClaimedRun> {
    let path = format!("/api/v1/workers/{worker}/claim");
    let claimed: ClaimResponse =
        expect_ok(call(c.post(&path, token, &json!({"max_runs": n, "wait_ms": 0}))).await, StatusCode::OK);
    assert_eq!(claimed.runs.len(), n as usize, "{claimed:?}");
    claimed.runs
}

#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn a_worker_token_acts_only_on_runs_held_by_workers_it_registered(pool: PgPool) {
    testkit::import_demo(&pool, "demo").await;
    testkit::submit(&pool, &testkit::sweep_toml("bound", "", "")).await;
    let c = Coordinator::start(&pool).await;
    let token_b = tokens::create(&pool, "worker-b", Role::Worker).await.unwrap().token;
    let worker_a = register_worker(&c, &c.worker, "a").await;
    let worker_b = register_worker(&c, &token_b, "b").await;
    let held = claim_runs(&c, &c.worker, worker_a, 3).await;
    let run = &held[0];
    let run_path = |run: &protocol::ClaimedRun, what: &str| format!("/api/v1/runs/{}/{what}", run.run_id);
    let step = StepRecord { index: 0, action: Some("ls".into()), ..Default::default() };
    let upload = UploadSteps {
        lease_token: run.lease_token,
        steps: vec![step.clone()],
        llm_calls: vec![],
        critic_calls: vec![],
    };
    let complete = CompleteRun {
        lease_token: run.lease_token,
        outcome: Outcome::SyntheticUnresolved,
        totals: RunTotals { steps: 1, ..Default::default() },
        patch: None,
        evaluation: None,
        detail: None,
    };
    let fail = json!({"lease_token": run.lease_token, "reason": "docker daemon unreachable"});
    let release = json!({"lease_token": run.lease_token, "reason": "draining"});
    let beat = json!({"leases": [run.lease()]});
    let worker_path = |w: Uuid, what: &str| format!("/api/v1/workers/{w}/{what}");

    // Token B, and an admin token, with A's lease token: refused, naming the problem, and
    // nothing changes.
    for (who, token) in [("worker token B", token_b.as_str()), ("an admin token", c.admin.as_str())] {
        let before = queue_snapshot(&pool).await;
        let requests = [
            ("steps", c.post(&run_path(run, "steps"), token, &upload)),
            ("complete", c.post(&run_path(run, "complete"), token, &complete)),
            ("fail", c.post(&run_path(run, "fail"), token, &fail)),
            ("release", c.post(&run_path(run, "release"), token, &release)),
        ];
        for (what, rb) in requests {
            let message = expect_error(&call(rb).await, StatusCode::FORBIDDEN, "forbidden");
            assert!(
                message.contains(&format!("run {}", run.run_id)) && message.contains("another API token"),
                "{what} by {who}: {message}"
            );
        }
        for what in ["heartbeat", "claim", "release"] {
            let body = match what {
                "claim" => json!({"max_runs": 3, "wait_ms": 0}),
                "release" => json!({"reason": "worker stopped"}),
                _ => beat.clone(),
            };
            let res = call(c.post(&worker_path(worker_a, what), token, &body)).await;
            let message = expect_error(&res, StatusCode::FORBIDDEN, "forbidden");
            assert!(
                message.contains(&format!("worker {worker_a}")) && message.contains("another API token"),
                "{what} for worker A by {who}: {message}"
            );
        }
        assert_eq!(queue_snapshot(&pool).await, before, "a refused request by {who} changed the queue");
    }
    // B's own worker naming A's lease in its heartbeat does not extend it: the lease is lost to it.
    let ack: Value =
        expect_ok(call(c.post(&worker_path(worker_b, "heartbeat"), &token_b, &beat)).await, StatusCode::OK);
    assert_eq!(ack["lost"], json!([run.run_id]), "{ack}");
    // A stale or made-up lease token is still a lost lease, whoever sends it.
    let forged = CompleteRun { lease_token: Uuid::new_v4(), ..complete.clone() };
    expect_error(
        &call(c.post(&run_path(run, "complete"), &token_b, &forged)).await,
        StatusCode::CONFLICT,
        "lease_lost",
    );

    // A still can do everything with its runs.
    let ack: Value =
        expect_ok(call(c.post(&worker_path(worker_a, "heartbeat"), &c.worker, &beat)).await, StatusCode::OK);
    assert_eq!(ack, json!({"lost": [], "cancelled": []}));
    for (path, body) in [
        (run_path(run, "steps"), serde_json::to_value(&upload).unwrap()),
        (run_path(run, "complete"), serde_json::to_value(&complete).unwrap()),
        (run_path(&held[1], "fail"), json!({"lease_token": held[1].lease_token, "reason": "disk full"})),
        (run_path(&held[2], "release"), json!({"lease_token": held[2].lease_token, "reason": "draining"})),
    ] {
        let (status, body) = call(c.post(&path, &c.worker, &body)).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{path}: {body}");
    }
    // After completion, B cannot claim A's completion as a retry of its own.
    let message = expect_error(
        &call(c.post(&run_path(run, "complete"), &token_b, &complete)).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert!(message.contains("another API token"), "{message}");

    // The run record lists its attempts.
    for (run, ending) in [(&held[0], "completed"), (&held[1], "failed"), (&held[2], "released")] {
        let record: Value = expect_ok(call(c.get(&run_path(run, "record"), &c.user)).await, StatusCode::OK);
        let attempts = record["attempts"].as_array().unwrap_or_else(|| panic!("no attempts: {record}"));
        assert_eq!(attempts.len(), 1, "{record}");
        assert_eq!(attempts[0]["attempt"], 1);
        assert_eq!(attempts[0]["worker_id"], worker_a.to_string());
        assert_eq!(attempts[0]["ending"], ending, "{record}");
    }
    let traj: Trajectory = expect_ok(call(c.get(&run_path(run, "record"), &c.user)).await, StatusCode::OK);
    assert_eq!(traj.steps.len(), 1, "only A's upload was stored");
    c.stop().await;
}

#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn revoking_a_worker_token_stops_its_worker(pool: PgPool) {
    testkit::import_demo(&pool, "demo").await;
    testkit::submit(&pool, &testkit::sweep_toml("revoke", "", "")).await;
    let c = Coordinator::start(&pool).await;
    let t = tokens::create(&pool, "gpu-box-1", Role::Worker).await.unwrap();
    let w = register_worker(&c, &t.token, "gpu-box-1").await;
    let held = claim_runs(&c, &t.token, w, 1).await;
    tokens::revoke(&pool, t.id).await.unwrap();

    let claim = format!("/api/v1/workers/{w}/claim");
    let body = json!({"max_runs": 1, "wait_ms": 0});
    let before = queue_snapshot(&pool).await;
    let message =
        expect_error(&call(c.post(&claim, &t.token, &body)).await, StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(message.contains("revoked"), "{message}");
    let beat = json!({"leases": [held[0].lease()]});
    let res = call(c.post(&format!("/api/v1/workers/{w}/heartbeat"), &t.token, &beat)).await;
    expect_error(&res, StatusCode::UNAUTHORIZED, "unauthorized");
    // Nor can the worker carry on under another live worker token: it is bound to the revoked one.
    expect_error(&call(c.post(&claim, &c.worker, &body)).await, StatusCode::FORBIDDEN, "forbidden");
    let release = json!({"lease_token": held[0].lease_token});
    let res = call(c.post(&format!("/api/v1/runs/{}/release", held[0].run_id), &c.worker, &release)).await;
    expect_error(&res, StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(queue_snapshot(&pool).await, before, "nothing was claimed, extended or released");
    c.stop().await;
}

// ---------------------------------------------------------------- 7. ownership and API edges

/// Regression: any user could pause, resume with a larger budget, or cancel any other user's
/// sweep. A sweep belongs to the owner (the name) of the token that submitted it: other users
/// read it, only its owner and admins change it, and a refused change changes nothing.
#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn other_users_may_read_a_sweep_but_not_change_it(pool: PgPool) {
    testkit::import_demo(&pool, "demo").await;
    let c = Coordinator::start(&pool).await;
    let alice = &c.user;
    let bob = tokens::create(&pool, "bob", Role::User).await.unwrap().token;

    let submit = json!({"config_toml": testkit::sweep_toml("alices", "budget_usd = 5", "")});
    let sweep: SweepSubmitted =
        expect_ok(call(c.post("/api/v1/sweeps", alice, &submit)).await, StatusCode::CREATED);
    let before: SweepStatus = expect_ok(call(c.get("/api/v1/sweeps/alices", alice)).await, StatusCode::OK);

    // Bob reads everything of it...
    for path in ["/api/v1/sweeps/alices", "/api/v1/sweeps/alices/runs", "/api/v1/report?sweeps=alices"] {
        let (status, body) = call(c.get(path, &bob)).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    // ...but changes nothing, by name or by id, with or without a budget.
    let refused = |action: &str, key: String, body: Value| {
        let path = format!("/api/v1/sweeps/{key}/{action}");
        let rb = c.post(&path, &bob, &body);
        async move {
            let message = expect_error(&call(rb).await, StatusCode::FORBIDDEN, "forbidden");
            assert!(message.contains("alices") && message.contains("`user`"), "{path}: {message}");
        }
    };
    for key in ["alices".to_string(), sweep.sweep_id.to_string()] {
        refused("pause", key.clone(), json!({})).await;
        refused("cancel", key.clone(), json!({})).await;
        refused("resume", key.clone(), json!({"budget_usd": "1000"})).await;
    }
    let after: SweepStatus = expect_ok(call(c.get("/api/v1/sweeps/alices", alice)).await, StatusCode::OK);
    assert_eq!(
        (after.state, after.budget_usd, &after.states),
        (before.state, before.budget_usd, &before.states)
    );

    // Paused by its owner, it stays paused when Bob tries to resume it with a larger budget.
    let action =
        |token: &str, what: &str, body: Value| c.post(&format!("/api/v1/sweeps/alices/{what}"), token, &body);
    let st: SweepStatus = expect_ok(call(action(alice, "pause", json!({}))).await, StatusCode::OK);
    assert_eq!(st.state, SweepState::Paused);
    refused("resume", "alices".into(), json!({"budget_usd": "1000"})).await;
    let st: SweepStatus = expect_ok(call(c.get("/api/v1/sweeps/alices", alice)).await, StatusCode::OK);
    assert_eq!((st.state, st.budget_usd), (SweepState::Paused, Some("5".parse().unwrap())));

    // Another token under the owner's name is the same owner (a rotated token keeps its sweeps).
    let alice_again = tokens::create(&pool, "user", Role::User).await.unwrap().token;
    let st: SweepStatus = expect_ok(call(action(&alice_again, "resume", json!({}))).await, StatusCode::OK);
    assert_eq!(st.state, SweepState::Running);
    // Admins may do all.
    let st: SweepStatus = expect_ok(call(action(&c.admin, "pause", json!({}))).await, StatusCode::OK);
    assert_eq!(st.state, SweepState::Paused);
    let st: SweepStatus =
        expect_ok(call(action(&c.admin, "resume", json!({"budget_usd": "7"}))).await, StatusCode::OK);
    assert_eq!((st.state, st.budget_usd), (SweepState::Running, Some("7".parse().unwrap())));
    let st: SweepStatus = expect_ok(call(action(&c.admin, "cancel", json!({}))).await, StatusCode::OK);
    assert_eq!(st.state, SweepState::Cancelled);

    // Evaluations are sweeps too: Bob's belongs to Bob.
    let eval = json!({"dataset": "demo", "run_id": "bobs-eval", "gold": true});
    expect_ok::<SweepSubmitted>(call(c.post("/api/v1/evals", &bob, &eval)).await, StatusCode::CREATED);
    // Other instances under the same run id, or a sweep under it: refused, naming the holder.
    let other = json!({"dataset": "demo", "run_id": "bobs-eval", "gold": true, "instance_ids": ["steerbench__demo-1"]});
    let message =
        expect_error(&call(c.post("/api/v1/evals", &bob, &other)).await, StatusCode::CONFLICT, "conflict");
    assert!(message.contains("`bobs-eval` is taken by evaluation"), "{message}");
    let message = expect_error(
        &call(c.post("/api/v1/sweeps/bobs-eval/cancel", alice, &json!({}))).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert!(message.contains("`bob`"), "{message}");
    let st: SweepStatus =
        expect_ok(call(c.post("/api/v1/sweeps/bobs-eval/cancel", &bob, &json!({}))).await, StatusCode::OK);
    assert_eq!(st.state, SweepState::Cancelled);

    // A sweep with no recorded owner (submitted before owners were recorded, or through the
    // store) is changed by admins only.
    testkit::submit(&pool, &testkit::sweep_toml("ownerless", "", "")).await;
    expect_error(
        &call(c.post("/api/v1/sweeps/ownerless/pause", alice, &json!({}))).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    let st: SweepStatus =
        expect_ok(call(c.post("/api/v1/sweeps/ownerless/pause", &c.admin, &json!({}))).await, StatusCode::OK);
    assert_eq!(st.state, SweepState::Paused);
    c.stop().await;
}

/// Regression: `alive_within_s=NaN` was a 500 (Postgres refused the interval), and a malformed
/// number on `/report` a plain-text 400. Every malformed number in a query string is a JSON
/// `bad_request` that names its parameter.
#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn malformed_numbers_in_query_strings_are_400s_naming_the_parameter(pool: PgPool) {
    testkit::import_demo(&pool, "demo").await;
    testkit::submit(&pool, &testkit::sweep_toml("s1", "", "")).await;
    let c = Coordinator::start(&pool).await;
    let cases = [
        ("/api/v1/workers?alive_within_s=NaN", "alive_within_s"),
        ("/api/v1/workers?alive_within_s=inf", "alive_within_s"),
        ("/api/v1/workers?alive_within_s=-1", "alive_within_s"),
        ("/api/v1/workers?alive_within_s=1e400", "alive_within_s"),
        ("/api/v1/workers?alive_within_s=soon", "alive_within_s"),
        ("/api/v1/sweeps/s1/runs?limit=lots", "limit"),
        ("/api/v1/sweeps/s1/runs?after=1.5", "after"),
        ("/api/v1/report?sweeps=s1&total=-3", "total"),
        ("/api/v1/report?sweeps=s1&total=many", "total"),
    ];
    for (path, param) in cases {
        let message = expect_error(&call(c.get(path, &c.user)).await, StatusCode::BAD_REQUEST, "bad_request");
        assert!(message.contains(param), "{path}: {message}");
    }
    // Well-formed numbers still pass.
    for path in ["/api/v1/workers?alive_within_s=30", "/api/v1/workers?alive_within_s=0.5"] {
        let (status, body) = call(c.get(path, &c.user)).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    c.stop().await;
}

/// Regression: a missing sweep was a 404 on `/sweeps/{sweep}` but `200 []` on its sub-routes
/// (runs, evaluations, images) and a 200 event stream of errors on `events`. Every route about
/// a sweep answers 404 `not_found` for one that does not exist, by id or by name.
#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn every_route_of_a_missing_sweep_is_a_404(pool: PgPool) {
    testkit::import_demo(&pool, "demo").await;
    testkit::submit(&pool, &testkit::sweep_toml("s1", "", "")).await;
    let c = Coordinator::start(&pool).await;
    let sweep_routes: Vec<&Route> = ROUTES.iter().filter(|r| r.template.contains("{sweep}")).collect();
    assert!(sweep_routes.len() >= 8, "{} routes about a sweep", sweep_routes.len());
    for key in ["424242", "no-such-sweep"] {
        let mut paths: Vec<(Method, String)> = sweep_routes
            .iter()
            .map(|r| (Method::from_bytes(r.method.as_bytes()).unwrap(), r.template.replace("{sweep}", key)))
            .collect();
        paths.push((Method::GET, format!("/api/v1/report?sweeps=s1,{key}")));
        paths.push((Method::GET, format!("/api/v1/compare?a=s1:none&b={key}:none")));
        for (method, path) in paths {
            let rb = c.req(method.clone(), &path, Some(&c.user));
            let rb = if method == Method::POST { rb.json(&json!({})) } else { rb };
            let message = expect_error(&call(rb).await, StatusCode::NOT_FOUND, "not_found");
            assert!(message.contains(key), "{method} {path}: {message}");
        }
    }
    // The sweep that exists still answers.
    let (status, body) = call(c.get("/api/v1/sweeps/s1/runs", &c.user)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    c.stop().await;
}

/// Regression: with the database down, `/healthz` waited out the pool's acquire timeout
/// (10 s and more) before answering 503. It answers within a second, whatever the pool's
/// settings; other requests keep the pool's own timeout.
#[tokio::test]
async fn healthz_answers_503_within_a_second_when_the_database_is_down() {
    // Nothing listens on port 1 of the loopback. The pool waits 2 s for a connection: longer
    // than /healthz may take, short enough for the maintenance pass (which waits out the pool
    // on each of its queries) to end within STOP_DEADLINE.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy("postgres://steer@127.0.0.1:1/steer")
        .expect("a lazy pool");
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let config = CoordinatorConfig { bind: "127.0.0.1:0".parse().unwrap(), ..Default::default() };
    let addr = server::spawn(pool, config, shutdown.clone(), &tracker).await.expect("coordinator starts");
    let http = reqwest::Client::builder().timeout(REQUEST_DEADLINE).build().unwrap();
    for _ in 0..2 {
        let started = std::time::Instant::now();
        let resp = http.get(format!("http://{addr}/healthz")).send().await.expect("the coordinator answers");
        let took = started.elapsed();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(took < Duration::from_secs(1), "/healthz took {took:?}");
        let text = resp.text().await.unwrap();
        assert!(text.starts_with("database unreachable: "), "{text}");
    }
    shutdown.cancel();
    tracker.close();
    tokio::time::timeout(STOP_DEADLINE, tracker.wait()).await.expect("the coordinator's tasks end");
}

// ---------------------------------------------------------------- bounded work per request

/// Imports the demo dataset (6 instances) over HTTP.
async fn upload_demo(c: &Coordinator) {
    let upload = json!({"name": "demo", "instances": demo_instances()});
    let _: DatasetInfo =
        expect_ok(call(c.post("/api/v1/datasets", &c.user, &upload)).await, StatusCode::CREATED);
}

/// Regression: `repeats = 4294967295` made the coordinator allocate for 25 billion runs and
/// abort. The run count is computed (with checked arithmetic) before anything is allocated,
/// and a sweep over the coordinator's limit is a 400 naming the count and the limit.
#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn a_sweep_over_the_run_limit_is_refused_and_the_coordinator_lives_on(pool: PgPool) {
    let c = Coordinator::start(&pool).await;
    upload_demo(&c).await;
    let huge = json!({"config_toml": testkit::sweep_toml("huge", &format!("repeats = {}", u32::MAX), "")});
    let message = expect_error(
        &call(c.post("/api/v1/sweeps", &c.user, &huge)).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    let runs = 6 * u64::from(u32::MAX);
    assert!(message.contains(&runs.to_string()) && message.contains("1000000"), "{message}");
    let (status, body) = call(c.req(Method::GET, "/healthz", None)).await;
    assert_eq!(status, StatusCode::OK, "the coordinator is alive: {body}");
    let listed: Vec<SweepStatus> = expect_ok(call(c.get("/api/v1/sweeps", &c.user)).await, StatusCode::OK);
    assert!(listed.is_empty(), "nothing was stored: {listed:?}");
    c.stop().await;
}

/// The run limit is the operator's: with 10, 6 x 2 runs are refused and 6 x 1 accepted.
#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn the_run_limit_is_a_coordinator_setting(pool: PgPool) {
    let limits = server::RequestLimits { max_runs_per_sweep: 10, ..Default::default() };
    let c = Coordinator::start_with(&pool, CoordinatorConfig { limits, ..Default::default() }).await;
    upload_demo(&c).await;
    let two = json!({"config_toml": testkit::sweep_toml("two", "repeats = 2", "")});
    let message = expect_error(
        &call(c.post("/api/v1/sweeps", &c.user, &two)).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    assert!(message.contains("12 runs") && message.contains("10"), "{message}");
    let one = json!({"config_toml": testkit::sweep_toml("one", "", "")});
    let done: SweepSubmitted =
        expect_ok(call(c.post("/api/v1/sweeps", &c.user, &one)).await, StatusCode::CREATED);
    assert_eq!(done.runs, 6);
    c.stop().await;
}

/// A sweep whose observation template nests two loops of a thousand.
fn nested_loop_sweep(name: &str) -> String {
    testkit::sweep_toml(name, "", "").replace(
        "kind = \"placeholder\"\nduration_ms = 0\nsteps = 1",
        "kind = \"agent\"\nobservation_template = \"{% for i in range(1000) %}{% for j in range(1000) %}{{ i }}{% endfor %}{% endfor %}\"",
    )
}

/// Regression: a template with nested loops was rendered at submit on the async runtime, for
/// seconds per submit, and every other request (`/healthz` included) waited. Template checks
/// now run off the runtime with a fuel limit: both submits are clear 400s, and `/healthz`
/// answers within a second all the while.
#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn nested_loop_templates_are_refused_without_stalling_the_coordinator(pool: PgPool) {
    let c = Coordinator::start(&pool).await;
    upload_demo(&c).await;
    let toml = nested_loop_sweep("loops");
    assert!(toml.contains("range(1000)"), "the template is in the sweep file:\n{toml}");
    let submits: Vec<_> = ["loops-a", "loops-b"]
        .into_iter()
        .map(|name| {
            let rb = c.post("/api/v1/sweeps", &c.user, &json!({"config_toml": nested_loop_sweep(name)}));
            tokio::spawn(call(rb))
        })
        .collect();
    let mut slowest = Duration::ZERO;
    while submits.iter().any(|s| !s.is_finished()) {
        let started = std::time::Instant::now();
        let (status, body) = call(c.req(Method::GET, "/healthz", None)).await;
        slowest = slowest.max(started.elapsed());
        assert_eq!(status, StatusCode::OK, "{body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(slowest < Duration::from_secs(1), "/healthz took {slowest:?} during the submits");
    for submit in submits {
        let res = submit.await.expect("the submit task");
        let message = expect_error(&res, StatusCode::BAD_REQUEST, "bad_request");
        assert!(message.contains("observation_template") && message.contains("ran out of fuel"), "{message}");
    }
    c.stop().await;
}

/// Regression: a 200 MB dataset upload took the coordinator to 540 MB. Uploads are capped by
/// a setting; a body over it is a 413 that names the limit, before it is read.
#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn dataset_uploads_over_the_limit_are_refused_with_413(pool: PgPool) {
    let limits = server::RequestLimits { max_upload_bytes: 1 << 20, ..Default::default() };
    let c = Coordinator::start_with(&pool, CoordinatorConfig { limits, ..Default::default() }).await;
    let mut body = serde_json::to_vec(&json!({"name": "demo", "instances": demo_instances()})).unwrap();
    body.resize(2 << 20, b' ');
    let rb = c
        .req(Method::POST, "/api/v1/datasets", Some(&c.user))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    let message = expect_error(&call(rb).await, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    assert!(message.contains("1048576"), "the message names the limit: {message}");
    // Under the limit, the same upload is imported.
    upload_demo(&c).await;
    c.stop().await;
}

// ---------------------------------------------------------------- model API keys

/// Regression: `api_key_env = "STEER_TOKEN"` had workers send their own token to the sweep's
/// endpoint. The worker's own settings are refused at submit, naming the field.
#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn a_sweep_naming_a_worker_setting_as_its_key_is_refused(pool: PgPool) {
    let c = Coordinator::start(&pool).await;
    upload_demo(&c).await;
    for var in ["STEER_TOKEN", "STEER_REGISTRY_PASSWORD"] {
        let sweep =
            json!({"config_toml": testkit::sweep_toml("steal", "", &format!("api_key_env = \"{var}\""))});
        let message = expect_error(
            &call(c.post("/api/v1/sweeps", &c.user, &sweep)).await,
            StatusCode::BAD_REQUEST,
            "bad_request",
        );
        assert!(
            message.contains("agents[0].api_key_env") && message.contains("worker's own settings"),
            "{message}"
        );
    }
    let listed: Vec<SweepStatus> = expect_ok(call(c.get("/api/v1/sweeps", &c.user)).await, StatusCode::OK);
    assert!(listed.is_empty(), "nothing was stored: {listed:?}");
    c.stop().await;
}

/// A sweep reading a variable no live worker allows is accepted with a warning; its queued
/// runs say why they wait until a worker allowing it registers, which then takes them.
#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn a_key_variable_no_worker_allows_is_a_warning_and_a_waiting_reason(pool: PgPool) {
    let c = Coordinator::start(&pool).await;
    upload_demo(&c).await;
    let plain_worker = register_worker(&c, &c.worker, "no-keys").await;
    let sweep = json!({"config_toml": testkit::sweep_toml("keyed", "", "api_key_env = \"LAB_KEY\"")});
    let submitted: SweepSubmitted =
        expect_ok(call(c.post("/api/v1/sweeps", &c.user, &sweep)).await, StatusCode::CREATED);
    assert_eq!(submitted.warnings.len(), 1, "{:?}", submitted.warnings);
    assert!(submitted.warnings[0].contains("`LAB_KEY`"), "{}", submitted.warnings[0]);

    let path = format!("/api/v1/workers/{plain_worker}/claim");
    let claimed: ClaimResponse = expect_ok(
        call(c.post(&path, &c.worker, &json!({"max_runs": 8, "wait_ms": 0}))).await,
        StatusCode::OK,
    );
    assert!(claimed.runs.is_empty(), "{claimed:?}");
    let status: SweepStatus = expect_ok(call(c.get("/api/v1/sweeps/keyed", &c.user)).await, StatusCode::OK);
    assert_eq!(status.waiting.len(), 1, "{:?}", status.waiting);
    assert_eq!(status.waiting[0].runs, 6);

    // Malformed or reserved allow-lists are refused at registration.
    for bad in [json!(["STEER_*"]), json!(["A B"]), json!("LAB_KEY")] {
        let body = json!({"name": "w", "host": "h", "slots": 1, "version": "t",
                          "capabilities": {"executors": ["placeholder"], "key_envs": bad}});
        expect_error(
            &call(c.post("/api/v1/workers", &c.worker, &body)).await,
            StatusCode::BAD_REQUEST,
            "bad_request",
        );
    }
    let body = json!({"name": "lab", "host": "h", "slots": 8, "version": "t",
                      "capabilities": {"executors": ["placeholder"], "key_envs": ["LAB_*"]}});
    let lab: Registered = expect_ok(call(c.post("/api/v1/workers", &c.worker, &body)).await, StatusCode::OK);
    // Workers advertise their allow-lists.
    let listed: Vec<protocol::WorkerInfo> =
        expect_ok(call(c.get("/api/v1/workers", &c.admin)).await, StatusCode::OK);
    let shown: Vec<(&str, &[String])> =
        listed.iter().map(|w| (w.name.as_str(), w.key_envs.as_slice())).collect();
    assert!(
        shown.contains(&("lab", &["LAB_*".to_string()][..])) && shown.contains(&("no-keys", &[][..])),
        "{shown:?}"
    );
    let runs = claim_runs(&c, &c.worker, lab.worker_id, 6).await;
    assert!(runs.iter().all(|r| r.agent.api_key_env.as_deref() == Some("LAB_KEY")));
    let status: SweepStatus = expect_ok(call(c.get("/api/v1/sweeps/keyed", &c.user)).await, StatusCode::OK);
    assert!(status.waiting.is_empty(), "{:?}", status.waiting);
    // With a worker allowing it live, a new sweep reading it gets no warning.
    let again = json!({"config_toml": testkit::sweep_toml("keyed-2", "", "api_key_env = \"LAB_KEY\"")});
    let submitted: SweepSubmitted =
        expect_ok(call(c.post("/api/v1/sweeps", &c.user, &again)).await, StatusCode::CREATED);
    assert!(submitted.warnings.is_empty(), "{:?}", submitted.warnings);
    c.stop().await;
}

// ---------------------------------------------------------------- checking and deleting sweeps

/// Rows in the tables a sweep's configuration and runs live in (all sweeps).
async fn table_rows(pool: &PgPool) -> Vec<(&'static str, i64)> {
    let mut rows = Vec::new();
    for table in ["sweeps", "agents", "critics", "endpoints", "runs", "run_attempts", "steps", "llm_calls"] {
        let n: i64 =
            sqlx::query_scalar(&format!("SELECT count(*) FROM {table}")).fetch_one(pool).await.unwrap();
        rows.push((table, n));
    }
    rows
}

#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn validating_a_sweep_reports_what_it_would_be_and_writes_nothing(pool: PgPool) {
    testkit::import_demo(&pool, "demo").await;
    let c = Coordinator::start(&pool).await;
    register_worker(&c, &c.worker, "w1").await;
    let before = table_rows(&pool).await;

    let capped = testkit::sweep_toml("v", "repeats = 2\nbudget_usd = 10", "max_cost_usd = 0.5");
    let req = json!({"config_toml": capped, "file_name": "v.toml"});
    let v: protocol::SweepValidation =
        expect_ok(call(c.post("/api/v1/sweep-validations", &c.user, &req)).await, StatusCode::OK);
    assert_eq!((v.name.as_str(), v.dataset.as_str(), v.already_submitted), ("v", "demo", None));
    assert_eq!(
        (v.instances, v.repeats, v.runs),
        (6, 2, 12),
        "6 demo instances x 1 agent x 1 critic x 2 repeats"
    );
    assert_eq!(v.first_instances.len(), protocol::VALIDATION_SAMPLE);
    assert!(v.first_instances.windows(2).all(|w| w[0] < w[1]), "{:?}", v.first_instances);
    assert_eq!(v.conditions.len(), 1);
    let cond = &v.conditions[0];
    assert_eq!((cond.agent.as_str(), cond.critic.as_str(), cond.runs), ("agent-a", "none", 12));
    assert_eq!(v.endpoints, ["127.0.0.1:9"]);
    assert_eq!(v.max_spend_usd, Some("6".parse().unwrap()), "12 runs x $0.5");
    assert!(v.uncapped_agents.is_empty());
    assert_eq!(v.budget_usd, Some("10".parse().unwrap()));
    assert_eq!((v.images.live_workers, v.images.held), (1, 0), "{:?}", v.images);
    assert!(v.images.needed >= 1 && !v.images.missing.is_empty(), "{:?}", v.images);

    // Once a live worker reports holding an image, it counts as held.
    let image = v.images.missing[0].clone();
    sqlx::query("UPDATE workers SET images = ARRAY[$1]").bind(&image).execute(&pool).await.unwrap();
    let v: protocol::SweepValidation =
        expect_ok(call(c.post("/api/v1/sweep-validations", &c.user, &req)).await, StatusCode::OK);
    assert_eq!(v.images.held, 1, "{:?}", v.images);
    assert!(!v.images.missing.contains(&image), "{:?}", v.images);

    // An agent without a cost cap makes the most it can spend unbounded.
    let uncapped = json!({"config_toml": testkit::sweep_toml("u", "", "")});
    let v: protocol::SweepValidation =
        expect_ok(call(c.post("/api/v1/sweep-validations", &c.user, &uncapped)).await, StatusCode::OK);
    assert_eq!((v.max_spend_usd, v.uncapped_agents.as_slice()), (None, ["agent-a".to_string()].as_slice()));
    assert_eq!(v.budget_usd, None);

    // A bad file: the same 400 as submitting it, naming the file, line and key.
    let bad = testkit::sweep_toml("bad", "", "temperature = 9");
    let line = bad.lines().position(|l| l == "temperature = 9").unwrap() + 1;
    let bad = json!({"config_toml": bad, "file_name": "bad.toml"});
    let message = expect_error(
        &call(c.post("/api/v1/sweep-validations", &c.user, &bad)).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    assert!(message.starts_with(&format!("bad.toml:{line}: agents[0].temperature")), "{message}");
    // Over the run limit, or with an unknown dataset: refused as submitting refuses.
    let huge = json!({"config_toml": testkit::sweep_toml("huge", "repeats = 4294967295", "")});
    let message = expect_error(
        &call(c.post("/api/v1/sweep-validations", &c.user, &huge)).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    assert!(message.contains("runs per sweep"), "{message}");
    let elsewhere = testkit::sweep_toml("elsewhere", "", "").replace("name = \"demo\"", "name = \"absent\"");
    let message = expect_error(
        &call(c.post("/api/v1/sweep-validations", &c.user, &json!({"config_toml": elsewhere}))).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert!(message.contains("`absent` is not imported"), "{message}");
    assert_eq!(table_rows(&pool).await, before, "validating wrote nothing");

    // Submitted, the same file validates as already submitted; another configuration under
    // its name is the conflict submitting it would be.
    let sweep: SweepSubmitted =
        expect_ok(call(c.post("/api/v1/sweeps", &c.user, &req)).await, StatusCode::CREATED);
    let v: protocol::SweepValidation =
        expect_ok(call(c.post("/api/v1/sweep-validations", &c.user, &req)).await, StatusCode::OK);
    assert_eq!((v.already_submitted, v.runs), (Some(sweep.sweep_id), 12));
    let renamed = json!({"config_toml": testkit::sweep_toml("v", "", "")});
    expect_error(
        &call(c.post("/api/v1/sweep-validations", &c.user, &renamed)).await,
        StatusCode::CONFLICT,
        "conflict",
    );
    // `validate` does not shadow a sweep of that name.
    let message = expect_error(
        &call(c.get("/api/v1/sweeps/validate", &c.user)).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert!(message.contains("no sweep named `validate`"), "{message}");
    c.stop().await;
}

/// Rows recorded for the runs `ids`: runs, attempts, steps, model calls.
async fn rows_of_runs(pool: &PgPool, ids: &[i64]) -> [i64; 4] {
    let mut out = [0; 4];
    for (i, (table, column)) in
        [("runs", "id"), ("run_attempts", "run_id"), ("steps", "run_id"), ("llm_calls", "run_id")]
            .iter()
            .enumerate()
    {
        out[i] = sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE {column} = ANY($1)"))
            .bind(ids)
            .fetch_one(pool)
            .await
            .unwrap();
    }
    out
}

async fn run_ids(pool: &PgPool, sweep_id: i64) -> Vec<i64> {
    sqlx::query_scalar("SELECT id FROM runs WHERE sweep_id = $1")
        .bind(sweep_id)
        .fetch_all(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn sweeps_and_datasets_are_deleted_only_when_nothing_runs_and_by_whom_may(pool: PgPool) {
    testkit::import_demo(&pool, "demo").await;
    let c = Coordinator::start(&pool).await;
    let alice = &c.user;
    let bob = tokens::create(&pool, "bob", Role::User).await.unwrap().token;
    let submit = |name: &str| json!({"config_toml": testkit::sweep_toml(name, "", "")});
    let alices: SweepSubmitted =
        expect_ok(call(c.post("/api/v1/sweeps", alice, &submit("alices"))).await, StatusCode::CREATED);
    let worker = register_worker(&c, &c.worker, "w1").await;
    let run = claim_runs(&c, &c.worker, worker, 1).await.remove(0);
    let upload = UploadSteps {
        lease_token: run.lease_token,
        steps: vec![StepRecord { index: 0, action: Some("ls".into()), ..Default::default() }],
        llm_calls: vec![protocol::LlmCallRecord {
            call_index: 0,
            step_index: Some(0),
            model: "demo-model".into(),
            ..Default::default()
        }],
        critic_calls: vec![],
    };
    let (status, body) =
        call(c.post(&format!("/api/v1/runs/{}/steps", run.run_id), &c.worker, &upload)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let bobs: SweepSubmitted =
        expect_ok(call(c.post("/api/v1/sweeps", &bob, &submit("bobs"))).await, StatusCode::CREATED);
    let delete = |path: &str, token: &str| c.req(Method::DELETE, path, Some(token));

    // A run in flight: refused, even to an admin, and even with the dataset.
    let message = expect_error(
        &call(delete("/api/v1/sweeps/alices", &c.admin)).await,
        StatusCode::CONFLICT,
        "conflict",
    );
    assert!(message.contains("alices") && message.contains("1 running run"), "{message}");
    let message = expect_error(
        &call(delete("/api/v1/datasets/demo?with_sweeps=true", &c.admin)).await,
        StatusCode::CONFLICT,
        "conflict",
    );
    assert!(message.contains("alices") && message.contains("running"), "{message}");
    // Another user's sweep: refused before anything else.
    let message =
        expect_error(&call(delete("/api/v1/sweeps/alices", &bob)).await, StatusCode::FORBIDDEN, "forbidden");
    assert!(message.contains("only its owner or an admin may delete it"), "{message}");

    let complete = CompleteRun {
        lease_token: run.lease_token,
        outcome: Outcome::SyntheticUnresolved,
        totals: RunTotals { steps: 1, ..Default::default() },
        patch: Some(String::new()),
        evaluation: None,
        detail: None,
    };
    let (status, body) =
        call(c.post(&format!("/api/v1/runs/{}/complete", run.run_id), &c.worker, &complete)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    let alice_runs = run_ids(&pool, alices.sweep_id).await;
    let bob_runs = run_ids(&pool, bobs.sweep_id).await;
    assert_eq!(rows_of_runs(&pool, &alice_runs).await, [6, 1, 1, 1], "runs, attempts, steps, model calls");
    let bobs_before = rows_of_runs(&pool, &bob_runs).await;
    let deleted: protocol::Deleted =
        expect_ok(call(delete("/api/v1/sweeps/alices", alice)).await, StatusCode::OK);
    assert_eq!(
        (deleted.name.as_str(), deleted.sweeps.as_slice(), deleted.runs),
        ("alices", ["alices".to_string()].as_slice(), 6)
    );
    assert_eq!(
        rows_of_runs(&pool, &alice_runs).await,
        [0, 0, 0, 0],
        "everything recorded for the sweep is gone"
    );
    assert_eq!(rows_of_runs(&pool, &bob_runs).await, bobs_before, "another sweep keeps its rows");
    let left: Vec<(&str, i64)> = table_rows(&pool).await;
    assert!(
        left.contains(&("sweeps", 1)) && left.contains(&("agents", 1)) && left.contains(&("critics", 1)),
        "{left:?}"
    );
    assert!(left.contains(&("endpoints", 1)), "the shared endpoint stays: {left:?}");
    expect_error(&call(c.get("/api/v1/sweeps/alices", alice)).await, StatusCode::NOT_FOUND, "not_found");
    expect_error(&call(delete("/api/v1/sweeps/alices", alice)).await, StatusCode::NOT_FOUND, "not_found");

    // Datasets: admins only; refused while a sweep uses it, naming the sweep.
    expect_error(&call(delete("/api/v1/datasets/demo", &bob)).await, StatusCode::FORBIDDEN, "forbidden");
    let message = expect_error(
        &call(delete("/api/v1/datasets/demo", &c.admin)).await,
        StatusCode::CONFLICT,
        "conflict",
    );
    assert!(
        message.contains(&format!("`bobs` (id {})", bobs.sweep_id)) && message.contains("--with-sweeps"),
        "{message}"
    );
    let deleted: protocol::Deleted =
        expect_ok(call(delete("/api/v1/datasets/demo?with_sweeps=true", &c.admin)).await, StatusCode::OK);
    assert_eq!((deleted.sweeps.as_slice(), deleted.runs), (["bobs".to_string()].as_slice(), 6));
    expect_error(&call(c.get("/api/v1/datasets/demo", alice)).await, StatusCode::NOT_FOUND, "not_found");
    let instances: i64 = sqlx::query_scalar("SELECT count(*) FROM instances").fetch_one(&pool).await.unwrap();
    assert_eq!(instances, 0);
    assert_eq!(rows_of_runs(&pool, &bob_runs).await, [0, 0, 0, 0]);
    c.stop().await;
}
