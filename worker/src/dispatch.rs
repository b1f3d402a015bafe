//! Routes each claimed run to the executor of its kind.

use protocol::{ClaimedRun, ExecutorKind, ExecutorSpec};

use crate::agent::AgentExecutor;
use crate::engine_watch::EngineWatch;
use crate::evaluate::EvaluateExecutor;
use crate::executor::{CleanupFuture, ExecError, ExecFuture, Executor, ImagesFuture, RunContext};
use crate::llm::RetryPolicy;
use crate::placeholder::PlaceholderExecutor;

/// The executors a worker has: the placeholder always, `evaluate` and `agent` when a Docker
/// engine is reachable. A worker registers the kinds it has, so the coordinator hands it
/// nothing else.
pub struct Dispatcher {
    placeholder: PlaceholderExecutor,
    evaluate: Option<EvaluateExecutor>,
    agent: Option<AgentExecutor>,
    /// What the agent executor's keyring allows (advertised at registration).
    key_envs: protocol::keys::KeyAllowList,
    /// Whether the container engine still answers (None: not watched).
    engine: Option<EngineWatch>,
}

impl Dispatcher {
    pub fn new(evaluate: Option<EvaluateExecutor>) -> Self {
        let agent = evaluate.as_ref().map(|e| AgentExecutor::new(e.grader().clone()));
        Dispatcher {
            placeholder: PlaceholderExecutor,
            evaluate,
            agent,
            key_envs: Default::default(),
            engine: None,
        }
    }

    /// How the agent executor retries model calls (tests shorten the waits).
    pub fn with_llm_retry(mut self, retry: RetryPolicy) -> Self {
        self.agent = self.agent.map(|a| a.with_retry_policy(retry));
        self
    }

    /// Reports the worker degraded while `engine` does not answer.
    pub fn with_engine_watch(mut self, engine: EngineWatch) -> Self {
        self.engine = Some(engine);
        self
    }

    /// The model API keys agents and critics may use.
    pub fn with_keyring(mut self, keys: std::sync::Arc<crate::llm::Keyring>) -> Self {
        self.key_envs = keys.allow_list().clone();
        self.agent = self.agent.map(|a| a.with_keyring(keys));
        self
    }

    /// What this worker registers it can do: its executor kinds and the API key variables
    /// it allows.
    pub fn capabilities(&self) -> protocol::Capabilities {
        protocol::Capabilities {
            key_envs: (!self.key_envs.is_empty()).then(|| self.key_envs.clone()),
            ..protocol::Capabilities::executors(self.kinds())
        }
    }

    /// The executor kinds this worker can run, as it registers them.
    pub fn kinds(&self) -> Vec<ExecutorKind> {
        let mut kinds = vec![ExecutorKind::Placeholder];
        if self.evaluate.is_some() {
            kinds.push(ExecutorKind::Evaluate);
        }
        if self.agent.is_some() {
            kinds.push(ExecutorKind::Agent);
        }
        kinds
    }
}

impl Executor for Dispatcher {
    fn execute<'a>(&'a self, run: &'a ClaimedRun, ctx: RunContext) -> ExecFuture<'a> {
        match (&run.executor, &self.evaluate) {
            (ExecutorSpec::Placeholder(_), _) => self.placeholder.execute(run, ctx),
            (ExecutorSpec::Evaluate(_), Some(evaluate)) => evaluate.execute(run, ctx),
            // Only reachable if the coordinator ignored our registered kinds.
            (ExecutorSpec::Evaluate(_), None) => Box::pin(async {
                Err(ExecError::infra_reason("this worker has no Docker engine and cannot evaluate"))
            }),
            (ExecutorSpec::Agent(_), _) => match &self.agent {
                Some(agent) => agent.execute(run, ctx),
                None => Box::pin(async {
                    Err(ExecError::infra_reason("this worker has no Docker engine and cannot run agents"))
                }),
            },
        }
    }

    fn status(&self) -> Option<String> {
        self.evaluate.as_ref().and_then(|e| e.status())
    }

    fn degraded(&self) -> Option<String> {
        self.engine.as_ref().and_then(EngineWatch::problem)
    }

    fn held_images(&self) -> ImagesFuture<'_> {
        match &self.evaluate {
            Some(evaluate) => evaluate.held_images(),
            None => Box::pin(async { Vec::new() }),
        }
    }

    fn remove_leftovers(&self) -> CleanupFuture<'_> {
        // The agent executor opens its sandboxes (and its grader's) from the same factory.
        match &self.evaluate {
            Some(evaluate) => Box::pin(evaluate.grader().sandboxes().remove_leftovers()),
            None => Box::pin(async {}),
        }
    }
}

/// Against the real Docker engine (skipped without one unless `CI` is set): what a run dropped
/// mid-way leaves behind, as a lost lease, a cancelled sweep or the drain deadline drops it.
/// Each test's containers carry a worker name of its own and are removed however it ends.
#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use protocol::{AgentExecSpec, AgentLimits, AgentSpec, ClaimedRun, CriticSpec, ExecutorSpec};
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::sandbox::{Docker, SandboxSpec};

    const IMAGE: &str = "steerbench/debian-base:bookworm";

    /// A worker name of the test's own; removes its containers when dropped (through the CLI,
    /// so that it works while a panic unwinds).
    struct Worker(String);

    impl Worker {
        fn new(test: &str) -> Worker {
            Worker(format!("leftovers-{test}-{:08x}", rand::random::<u32>()))
        }

        /// Its containers, running or not (`docker ps -a --filter label=...`).
        async fn containers(&self) -> usize {
            let out = tokio::process::Command::new("docker")
                .args(["ps", "-aq", "--filter", &format!("label=steerbench.worker={}", self.0)])
                .output()
                .await
                .expect("running `docker ps`");
            assert!(out.status.success(), "docker ps: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).lines().count()
        }
    }

    impl Drop for Worker {
        fn drop(&mut self) {
            let filter = format!("label=steerbench.worker={}", self.0);
            let Ok(out) =
                std::process::Command::new("docker").args(["ps", "-aq", "--filter", &filter]).output()
            else {
                return;
            };
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
            if !ids.is_empty() {
                let _ = std::process::Command::new("docker").arg("rm").arg("-f").args(&ids).output();
            }
        }
    }

    async fn docker() -> Option<Docker> {
        match Docker::connect().await {
            Ok(docker) if docker.image_present(IMAGE).await.unwrap_or(false) => Some(docker),
            Ok(_) if std::env::var_os("CI").is_none() => {
                eprintln!("skipping: {IMAGE} is not built (docker/build-base.sh)");
                None
            }
            Err(e) if std::env::var_os("CI").is_none() => {
                eprintln!("skipping: {e}");
                None
            }
            other => panic!("CI is set and Docker or {IMAGE} is unavailable: {:?}", other.err()),
        }
    }

    /// A model endpoint answering every request `503`: the agent's first model call is retried
    /// for as long as the run lasts. Its URL, and how many requests it has answered.
    async fn unavailable_model() -> (String, Arc<AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        let answered = Arc::new(AtomicUsize::new(0));
        let count = answered.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let count = count.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut len = 0;
                    while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") && len < buf.len() {
                        match conn.read(&mut buf[len..]).await {
                            Ok(n) if n > 0 => len += n,
                            _ => return,
                        }
                    }
                    let reply =
                        "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
                    let _ = conn.write_all(reply.as_bytes()).await;
                    count.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        (url, answered)
    }

    fn agent_run(model_url: &str) -> ClaimedRun {
        let instance = serde_json::from_value(serde_json::json!({
            "instance_id": "steerbench__leftovers-1", "repo": "steerbench/leftovers", "base_commit": "abc1234",
            "patch": "", "test_patch": "", "problem_statement": "Nothing to do.", "version": "1.0",
            "FAIL_TO_PASS": [], "PASS_TO_PASS": [], "image": IMAGE,
        }))
        .expect("a valid instance");
        ClaimedRun {
            run_id: i64::from(rand::random::<u32>()),
            sweep_id: 0,
            attempt: 1,
            lease_token: uuid::Uuid::new_v4(),
            lease_expires_at: chrono::Utc::now(),
            repeat_index: 0,
            instance,
            agent: AgentSpec {
                name: "unavailable".into(),
                base_url: model_url.into(),
                model: "unavailable".into(),
                api_key_env: None,
                sampling: Default::default(),
                price: Default::default(),
                limits: AgentLimits { max_steps: 10, max_cost_usd: None, max_wall_time_s: 600 },
                max_concurrency: None,
                extra_body: Default::default(),
                tokenizer: None,
                agent_config: None,
            },
            critic: CriticSpec::none("none"),
            executor: ExecutorSpec::Agent(AgentExecSpec::default()),
            sandbox: Default::default(),
            input_patch: None,
            prefix: None,
        }
    }

    /// Retries every 20-50 ms, for longer than any test lasts.
    fn endless_retries() -> RetryPolicy {
        RetryPolicy {
            attempts: 10_000,
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(50),
            ..Default::default()
        }
    }

    /// Starts the run as the daemon does (`execute` with a context whose coordinator is never
    /// reached: nothing is recorded before the first model call answers) and waits until its
    /// sandbox exists and its model call has been retried.
    async fn start_run(
        dispatcher: &Arc<Dispatcher>,
        worker: &Worker,
    ) -> (tokio::task::JoinHandle<Result<crate::RunResult, ExecError>>, CancellationToken) {
        let (url, answered) = unavailable_model().await;
        let run = agent_run(&url);
        let cancel = CancellationToken::new();
        let client = crate::CoordinatorClient::new("http://127.0.0.1:9", "unused");
        let ctx = RunContext::new(client, &run, cancel.clone());
        let executor = dispatcher.clone();
        let task = tokio::spawn(async move { executor.execute(&run, ctx).await });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while worker.containers().await == 0 || answered.load(Ordering::SeqCst) < 2 {
            assert!(!task.is_finished(), "the run ended early: {:?}", task.await);
            assert!(tokio::time::Instant::now() < deadline, "no sandbox and retried model call within 60 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (task, cancel)
    }

    fn dispatcher(docker: &Docker, worker: &Worker) -> Arc<Dispatcher> {
        let evaluate = EvaluateExecutor::new(docker.clone(), &worker.0);
        Arc::new(Dispatcher::new(Some(evaluate)).with_llm_retry(endless_retries()))
    }

    #[tokio::test]
    async fn a_run_stopped_while_its_model_call_is_retried_leaves_no_container() {
        let Some(docker) = docker().await else { return };
        let worker = Worker::new("lease-lost");
        let dispatcher = dispatcher(&docker, &worker);
        let (task, cancel) = start_run(&dispatcher, &worker).await;
        assert_eq!(worker.containers().await, 1, "the agent's sandbox");

        // The lease is lost: the daemon cancels the run, whose future is dropped mid-call.
        cancel.cancel();
        let stopped = tokio::time::timeout(Duration::from_secs(10), task).await.expect("stops at once");
        assert!(matches!(stopped, Ok(Err(ExecError::Stopped))), "{stopped:?}");
        // The worker goes on; the container is removed in the background meanwhile.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while worker.containers().await > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the stopped run's sandbox is still there after 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    #[tokio::test]
    async fn a_stopping_worker_leaves_no_container_of_its_runs() {
        let Some(docker) = docker().await else { return };
        let worker = Worker::new("drained");
        let dispatcher = dispatcher(&docker, &worker);
        let (task, _cancel) = start_run(&dispatcher, &worker).await;
        // A container of this worker whose removal never happened (as one whose removal failed
        // while the engine was busy): its guard is forgotten, nothing in the process owns it.
        let mut spec = SandboxSpec::new(IMAGE);
        spec.labels.insert("steerbench.worker".into(), worker.0.clone());
        std::mem::forget(docker.create(&spec).await.expect("create a container"));
        assert_eq!(worker.containers().await, 2);

        // The drain deadline passes: the run's future is dropped mid-call, and the worker,
        // holding no run any more, stops at once.
        task.abort();
        assert!(task.await.expect_err("aborted").is_cancelled());
        dispatcher.remove_leftovers().await;
        assert_eq!(worker.containers().await, 0, "containers of a stopped worker are left");
    }
}
