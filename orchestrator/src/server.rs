//! Starting a coordinator: the HTTP API, the listener that wakes waiting claims, and the
//! maintenance loop (lease expiry, sweep completion). Every task is owned by the caller's
//! `TaskTracker` and stops on its `CancellationToken`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use crate::api::limits::RequestLimits;
use crate::api::{self, AppState};
use crate::queue::desk::ClaimDesk;
pub use crate::queue::desk::DeskConfig;
pub use crate::queue::EndpointCooldown;
use crate::queue::{Queue, RunState};

/// What a coordinator needs beyond its database.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    pub bind: SocketAddr,
    /// How long a lease lasts without a heartbeat.
    pub lease_ttl: Duration,
    /// How often expired leases are taken back and finished sweeps closed.
    pub maintenance_interval: Duration,
    /// The model endpoints' circuit breaker: how long an endpoint rests after an outage.
    pub endpoint_cooldown: EndpointCooldown,
    /// Bounds on the work of one request: runs per sweep, upload size, uploads at once.
    pub limits: RequestLimits,
    /// When set, `/metrics` answers only `Authorization: Bearer <metrics_token>` (401 otherwise).
    pub metrics_token: Option<String>,
    /// How waiting claims are served: how many may wait, how many runs one window asks for.
    pub desk: DeskConfig,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 8420)),
            lease_ttl: Duration::from_secs(30),
            maintenance_interval: Duration::from_secs(1),
            endpoint_cooldown: EndpointCooldown::default(),
            limits: RequestLimits::default(),
            metrics_token: None,
            desk: DeskConfig::default(),
        }
    }
}

/// Binds the listener and starts the coordinator's tasks on `tracker`. Returns the bound
/// address (useful with port 0).
pub async fn spawn(
    pool: PgPool,
    config: CoordinatorConfig,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> anyhow::Result<SocketAddr> {
    let queue = Queue::new(pool.clone(), config.lease_ttl).with_endpoint_cooldown(config.endpoint_cooldown);
    let state = AppState::new(
        queue,
        config.limits,
        config.desk,
        config.metrics_token.as_deref().map(Arc::from),
        shutdown.clone(),
        tracker,
    );
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("binding the coordinator to {}", config.bind))?;
    let addr = listener.local_addr()?;

    let app = api::router(state.clone());
    let stop = shutdown.clone();
    tracker.spawn(async move {
        let served = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await;
        if let Err(e) = served {
            tracing::error!(error = %e, "coordinator HTTP server stopped with an error");
        }
    });
    tracker.spawn(wake_on_notify(pool.clone(), state.desk.clone(), shutdown.clone()));
    tracker.spawn(maintenance(state, config.maintenance_interval, shutdown));
    tracing::info!(%addr, "coordinator listening");
    Ok(addr)
}

/// Runs `serve` until `shutdown` fires: the coordinator on its own (`steer serve`).
pub async fn serve(
    pool: PgPool,
    config: CoordinatorConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let tracker = TaskTracker::new();
    spawn(pool, config, shutdown.clone(), &tracker).await?;
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// Wakes long-polling claims when a sweep is submitted or resumed (on any replica).
async fn wake_on_notify(pool: PgPool, desk: ClaimDesk, shutdown: CancellationToken) {
    loop {
        let listen = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen("steer_runs").await?;
            loop {
                listener.recv().await?;
                desk.wake();
            }
            #[allow(unreachable_code)]
            Ok::<(), sqlx::Error>(())
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            res = listen => {
                // Waiting claims still poll, so a lost listener only adds latency.
                if let Err(e) = res {
                    tracing::warn!(error = %e, "LISTEN connection lost; reconnecting");
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Takes back expired leases and closes finished sweeps, every `interval`. Safe on every
/// replica at once (SKIP LOCKED; idempotent updates).
async fn maintenance(state: AppState, interval: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Biased: after a slow pass (a database that does not answer) the tick is ready at
        // once, and a fair pick could start pass after pass while shutdown waits.
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // A coordinator that could not serve heartbeats in time must not take back the
        // leases whose heartbeats it failed: expiry waits until it has kept up for a lease
        // lifetime (api::pressure).
        if state.pressure.behind() {
            tracing::warn!("the coordinator is behind: lease expiry paused");
        } else {
            expire(&state).await;
        }
        // Both settle what a crash or a race between two last completions may have left.
        if let Err(e) = state.queue.stop_over_budget(None).await {
            tracing::warn!(error = %e, "budget pass failed; will retry");
        }
        if let Err(e) = state.queue.finish_sweeps(None).await {
            tracing::warn!(error = %e, "sweep completion pass failed; will retry");
        }
    }
}

/// Takes back expired leases; wakes the claim desk when runs went back to the queue.
async fn expire(state: &AppState) {
    match state.queue.expire_leases(1000).await {
        Ok(expired) if !expired.is_empty() => {
            tracing::warn!(%expired, "took back runs whose lease expired");
            state.metrics.lease_expired(&expired);
            if expired.get(RunState::Queued) > 0 {
                state.desk.wake();
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "lease expiry pass failed; will retry"),
    }
}
