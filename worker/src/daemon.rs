//! The worker daemon: register, then claim up to `slots` runs at once, heartbeat their leases,
//! execute them, and report how they ended. Two-phase shutdown: `drain` stops claiming and lets
//! runs finish for up to `drain_timeout`, then hands back what is left and removes whatever
//! containers its runs left.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use protocol::{ClaimedRun, CompleteRun, Heartbeat, LeaseRef, RegisterWorker};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use uuid::Uuid;

use crate::client::{self, CoordinatorClient};
use crate::executor::{ExecError, Executor, RunContext, RunResult};

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub coordinator_url: String,
    /// A `worker` token (from the environment; never logged).
    pub token: String,
    pub name: String,
    pub slots: u32,
    /// Long-poll length of each claim request.
    pub claim_wait: Duration,
    /// How long a draining worker lets its runs finish before handing them back.
    pub drain_timeout: Duration,
    /// What it reports it can do at registration.
    pub capabilities: protocol::Capabilities,
    /// The secrets it holds, scrubbed from everything it sends the coordinator.
    pub redactor: std::sync::Arc<protocol::redact::Redactor>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            coordinator_url: "http://127.0.0.1:8420".into(),
            token: String::new(),
            name: gethostname::gethostname().to_string_lossy().into_owned(),
            slots: 2,
            claim_wait: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(60),
            capabilities: protocol::Capabilities::executors(vec![protocol::ExecutorKind::Placeholder]),
            redactor: Default::default(),
        }
    }
}

/// Why a run in flight was told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    /// The coordinator says we no longer hold the lease: write nothing more.
    LeaseLost,
    /// Its sweep was cancelled: hand it back.
    Cancelled,
    /// The worker is shutting down: hand it back.
    Drain,
}

struct InFlight {
    lease: LeaseRef,
    cancel: CancellationToken,
    reason: Option<StopReason>,
}

type Table = Arc<Mutex<HashMap<i64, InFlight>>>;

fn stop_run(table: &Table, run_id: i64, reason: StopReason) {
    let mut t = table.lock().expect("in-flight table lock");
    if let Some(f) = t.get_mut(&run_id) {
        // A lost lease outranks any other reason: it forbids the hand-back.
        if f.reason != Some(StopReason::LeaseLost) {
            f.reason = Some(reason);
        }
        f.cancel.cancel();
    }
}

/// Runs a worker until `drain` fires and its runs are finished or handed back: register, claim
/// until drain (or until the coordinator refuses this worker), drain, hand back.
pub async fn run(
    config: WorkerConfig,
    executor: Arc<dyn Executor>,
    drain: CancellationToken,
) -> anyhow::Result<()> {
    let client =
        CoordinatorClient::new(&config.coordinator_url, &config.token).with_redactor(config.redactor.clone());
    let registration = registration(&config);
    let registered = tokio::select! {
        _ = drain.cancelled() => return Ok(()),
        r = client.register(&registration) => r?,
    };
    let worker_id = registered.worker_id;
    tracing::info!(%worker_id, slots = config.slots, coordinator = %client.base_url(), "worker registered");

    let daemon = Daemon {
        shared: Shared {
            client,
            executor,
            table: Arc::new(Mutex::new(HashMap::new())),
            slot_freed: Arc::new(Notify::new()),
        },
        worker_id,
        slots: config.slots,
        claim_wait: config.claim_wait,
        tracker: TaskTracker::new(),
        heartbeat_stop: CancellationToken::new(),
    };
    daemon.start_heartbeat(Duration::from_millis(registered.heartbeat_interval_ms.max(50)), &drain);
    let refused = daemon.claim_loop(&drain).await;
    daemon.drain(config.drain_timeout).await;
    if refused.is_none() {
        daemon.hand_back().await;
    }
    // No run is in flight now: the sandboxes of runs that were dropped (a lost lease, a
    // cancelled sweep, the drain deadline) are removed before the worker stops, not left
    // for the reaper of its next start.
    daemon.shared.executor.remove_leftovers().await;
    tracing::info!(%worker_id, "worker stopped");
    if let Some(why) = refused {
        anyhow::bail!(why);
    }
    Ok(())
}

fn registration(config: &WorkerConfig) -> RegisterWorker {
    RegisterWorker {
        name: config.name.clone(),
        host: gethostname::gethostname().to_string_lossy().into_owned(),
        slots: config.slots,
        capabilities: Some(config.capabilities.clone()),
        version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// What each run's task shares with the daemon.
#[derive(Clone)]
struct Shared {
    client: CoordinatorClient,
    executor: Arc<dyn Executor>,
    table: Table,
    /// Fires whenever a run leaves the table.
    slot_freed: Arc<Notify>,
}

/// A registered worker's lease loop: the runs it holds and the tasks running them.
struct Daemon {
    shared: Shared,
    worker_id: Uuid,
    slots: u32,
    claim_wait: Duration,
    /// Every run's task and the heartbeat.
    tracker: TaskTracker,
    heartbeat_stop: CancellationToken,
}

impl Daemon {
    fn start_heartbeat(&self, every: Duration, drain: &CancellationToken) {
        let beat = Beat {
            client: self.shared.client.clone(),
            worker_id: self.worker_id,
            table: self.shared.table.clone(),
            every,
            executor: self.shared.executor.clone(),
        };
        self.tracker.spawn(heartbeat_loop(beat, drain.clone(), self.heartbeat_stop.clone()));
    }

    fn held(&self) -> usize {
        self.shared.table.lock().expect("in-flight table lock").len()
    }

    /// Phase one: claims runs into free slots until `drain` fires. Returns why the coordinator
    /// will not let this worker claim any more, if it will not.
    async fn claim_loop(&self, drain: &CancellationToken) -> Option<String> {
        while !drain.is_cancelled() {
            let free = self.slots.saturating_sub(self.held() as u32);
            if free == 0 {
                let freed = self.shared.slot_freed.notified();
                tokio::select! {
                    _ = drain.cancelled() => break,
                    _ = freed => continue,
                    // Belt and braces against a missed notification.
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
            let claimed = tokio::select! {
                _ = drain.cancelled() => break,
                c = self.shared.client.claim(self.worker_id, free, self.claim_wait) => c,
            };
            match claimed {
                Ok(claimed) => claimed.runs.into_iter().for_each(|run| self.start(run, drain)),
                Err(e) => {
                    if let Some(why) = self.refusal(&e) {
                        return Some(why);
                    }
                    // An overloaded coordinator says when to ask again (jittered).
                    let pause = e.retry_hint().unwrap_or(Duration::from_secs(1));
                    tracing::warn!(error = %e, retry_in = ?pause, "claim failed; backing off");
                    tokio::select! {
                        _ = drain.cancelled() => break,
                        _ = tokio::time::sleep(pause) => continue,
                    }
                }
            }
        }
        None
    }

    /// Why a failed claim means this worker must stop claiming, if it does.
    fn refusal(&self, e: &client::Error) -> Option<String> {
        let worker_id = self.worker_id;
        match e {
            client::Error::Rejected { status: 404, message, .. } => {
                // The coordinator's database no longer has this worker (reset or restored):
                // stop claiming and let the drain hand back what we hold; the operator (or a
                // supervisor) restarts the worker, which registers anew.
                tracing::error!(%message, "the coordinator does not know this worker any more; stopping");
                Some(format!(
                    "the coordinator does not know worker {worker_id} (was its database reset?); restart the worker"
                ))
            }
            client::Error::Rejected { status: 403, message, .. } => {
                // This worker is bound to another API token (it registered under a token that
                // was since replaced, or before the coordinator recorded tokens): registering
                // anew under ours is the way back.
                tracing::error!(%message, "the coordinator refuses this worker's token; stopping");
                Some(format!(
                    "the coordinator refuses claims for worker {worker_id} with this token: {message}; restart the worker"
                ))
            }
            _ => None,
        }
    }

    /// Runs a claimed run in a task of its own.
    fn start(&self, run: ClaimedRun, drain: &CancellationToken) {
        let table = &self.shared.table;
        let cancel = CancellationToken::new();
        let in_flight = InFlight { lease: run.lease(), cancel: cancel.clone(), reason: None };
        table.lock().expect("in-flight table lock").insert(run.run_id, in_flight);
        // A claim that raced with drain: hand it back at once rather than start it.
        if drain.is_cancelled() {
            stop_run(table, run.run_id, StopReason::Drain);
        }
        let span = tracing::info_span!("run", run_id = run.run_id, attempt = run.attempt, worker_id = %self.worker_id);
        self.tracker.spawn(execute_one(self.shared.clone(), run, cancel).instrument(span));
    }

    /// Phase two: no more claims; lets runs finish for up to `timeout`, then stops the rest
    /// (they hand themselves back), and waits for every task, the heartbeat last.
    async fn drain(&self, timeout: Duration) {
        tracing::info!(in_flight = self.held(), ?timeout, "draining");
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let ids: Vec<i64> =
                self.shared.table.lock().expect("in-flight table lock").keys().copied().collect();
            if ids.is_empty() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                for id in ids {
                    stop_run(&self.shared.table, id, StopReason::Drain);
                }
                break;
            }
            let freed = self.shared.slot_freed.notified();
            let _ = tokio::time::timeout_at(deadline, freed).await;
        }
        self.heartbeat_stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Holding nothing now, hands back whatever the coordinator still has leased to us: a
    /// claim that was in flight when the drain began (its response dropped unread), or one
    /// whose response was lost. Without this such a run waits out its lease before anyone
    /// retries it.
    async fn hand_back(&self) {
        match self.shared.client.release_held(self.worker_id, "worker stopped before reading the claim").await
        {
            Ok(ids) if !ids.is_empty() => {
                tracing::warn!(runs = ?ids, "handed back runs claimed for this worker that it never received")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not hand back unreceived runs; their leases will expire")
            }
        }
    }
}

/// Executes one run and reports how it ended, then frees its slot.
async fn execute_one(shared: Shared, run: ClaimedRun, cancel: CancellationToken) {
    let ctx = RunContext::new(shared.client.clone(), &run, cancel);
    let metrics = &crate::metrics::METRICS;
    metrics.runs_active.inc();
    let result = shared.executor.execute(&run, ctx).await;
    metrics.runs_active.dec();
    let reason = shared.table.lock().expect("in-flight table lock").get(&run.run_id).and_then(|f| f.reason);
    match report(&shared.client, &run, reason, result).await {
        Ok(()) => {}
        Err(client::Error::LeaseLost(m)) => {
            tracing::warn!(run_id = run.run_id, message = %m, "result rejected: lease lost")
        }
        // The lease will expire and the run will be re-queued: nothing is lost.
        Err(e) => {
            tracing::error!(run_id = run.run_id, error = %e, "could not report the run; its lease will expire")
        }
    }
    shared.table.lock().expect("in-flight table lock").remove(&run.run_id);
    shared.slot_freed.notify_waiters();
}

/// Tells the coordinator how a run ended: its result, a hand-back, or a failure; nothing once
/// the lease is lost.
async fn report(
    client: &CoordinatorClient,
    run: &ClaimedRun,
    reason: Option<StopReason>,
    result: Result<RunResult, ExecError>,
) -> Result<(), client::Error> {
    let metrics = &crate::metrics::METRICS;
    let kind = run.executor.kind().as_str();
    match (reason, result) {
        (Some(StopReason::LeaseLost), _) => {
            tracing::warn!(run_id = run.run_id, "lease lost; dropping the run's result");
            metrics.run_ended(kind, "lease_lost");
            Ok(())
        }
        // Finished before it noticed the stop: its result is still good.
        (_, Ok(done)) => {
            let req = CompleteRun {
                lease_token: run.lease_token,
                outcome: done.outcome,
                totals: done.totals,
                patch: done.patch,
                evaluation: done.evaluation,
                detail: done.detail,
            };
            tracing::info!(run_id = run.run_id, outcome = done.outcome.as_str(), "run finished");
            metrics.run_ended(kind, "completed");
            client.complete(run.run_id, &req).await
        }
        (Some(StopReason::Cancelled), Err(_)) => {
            metrics.run_ended(kind, "released");
            client.release(run.run_id, run.lease_token, "sweep cancelled").await
        }
        (Some(StopReason::Drain), Err(_)) | (None, Err(ExecError::Stopped)) => {
            metrics.run_ended(kind, "released");
            client.release(run.run_id, run.lease_token, "worker draining").await
        }
        (None, Err(ExecError::Infra { reason, .. })) => {
            tracing::warn!(run_id = run.run_id, %reason, "run failed on infrastructure");
            metrics.run_ended(kind, "failed");
            client.fail(run.run_id, run.lease_token, &reason, false).await
        }
        (None, Err(ExecError::EndpointUnavailable(reason))) => {
            tracing::warn!(run_id = run.run_id, %reason, "run failed: its model endpoint is unavailable");
            metrics.run_ended(kind, "failed");
            client.fail(run.run_id, run.lease_token, &reason, true).await
        }
    }
}

/// What the heartbeat task needs.
struct Beat {
    client: CoordinatorClient,
    worker_id: Uuid,
    table: Table,
    every: Duration,
    executor: Arc<dyn Executor>,
}

/// Every this many heartbeats, the worker also reports the images it holds.
const IMAGES_EVERY: u64 = 6;

async fn heartbeat_loop(beat: Beat, drain: CancellationToken, stop: CancellationToken) {
    let Beat { client, worker_id, table, every, executor } = beat;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let images = if n.is_multiple_of(IMAGES_EVERY) { Some(executor.held_images().await) } else { None };
        n += 1;
        let leases: Vec<LeaseRef> =
            table.lock().expect("in-flight table lock").values().map(|f| f.lease).collect();
        let req = Heartbeat {
            leases,
            draining: drain.is_cancelled(),
            images,
            status: executor.status(),
            degraded: executor.degraded(),
        };
        match client.heartbeat(worker_id, &req).await {
            Ok(ack) => {
                for id in ack.lost {
                    tracing::warn!(run_id = id, "coordinator says the lease is lost; stopping the run");
                    stop_run(&table, id, StopReason::LeaseLost);
                }
                for id in ack.cancelled {
                    tracing::info!(run_id = id, "sweep cancelled; stopping the run");
                    stop_run(&table, id, StopReason::Cancelled);
                }
            }
            // Missing a beat is fine: the lease lasts three intervals.
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table_with(run_id: i64) -> (Table, CancellationToken) {
        let cancel = CancellationToken::new();
        let lease = LeaseRef { run_id, lease_token: Uuid::new_v4() };
        let table: Table = Arc::new(Mutex::new(HashMap::new()));
        table.lock().unwrap().insert(run_id, InFlight { lease, cancel: cancel.clone(), reason: None });
        (table, cancel)
    }

    #[test]
    fn a_lost_lease_outranks_a_later_stop_reason() {
        let (table, cancel) = table_with(7);
        stop_run(&table, 7, StopReason::LeaseLost);
        // A drain or cancel after the loss must not turn it into a hand-back, which would be a
        // write under a lease we no longer hold.
        stop_run(&table, 7, StopReason::Drain);
        stop_run(&table, 7, StopReason::Cancelled);
        assert!(cancel.is_cancelled());
        assert_eq!(table.lock().unwrap()[&7].reason, Some(StopReason::LeaseLost));
    }

    #[test]
    fn stopping_an_unknown_run_is_harmless() {
        let (table, cancel) = table_with(7);
        stop_run(&table, 8, StopReason::Drain);
        assert!(!cancel.is_cancelled());
        assert_eq!(table.lock().unwrap()[&7].reason, None);
    }
}
