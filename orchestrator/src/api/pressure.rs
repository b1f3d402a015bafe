//! Bounds on the database work workers' requests cause, and what the coordinator does when it
//! falls behind.
//!
//! Workers' writes go through two lanes, each a fixed share of the connection pool: the
//! **lease** lane (heartbeats, completions, failures, hand-backs: what keeps a lease alive or
//! ends it) and the **bulk** lane (step uploads). Claims go through the claim desk, one
//! statement at a time. Together they never take the whole pool, so a flood of one kind cannot
//! starve the others, and never make a request wait on the pool's own timeout: a request that
//! cannot enter its lane in time is answered `overloaded` with a retry hint, having done
//! nothing. A lease-lane request that waited long, or was turned away, marks the coordinator
//! *behind*: while it is, and for one lease lifetime after, lease expiry is paused (a worker
//! whose heartbeat the coordinator could not serve has not stopped).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, SemaphorePermit};

use super::error::ApiErr;

/// Which lane a request takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Heartbeats, completions, failures, hand-backs.
    Lease,
    /// Step uploads.
    Bulk,
}

/// The lanes and the coordinator's "behind" mark.
pub struct Pressure {
    lease: Semaphore,
    bulk: Semaphore,
    lease_ttl: Duration,
    /// How long a bulk request waits for its lane before it is told to come back.
    bulk_wait: Duration,
    started: Instant,
    /// Milliseconds since `started` until which the coordinator counts as behind.
    behind_until_ms: AtomicU64,
    shed: AtomicU64,
}

impl Pressure {
    /// Lanes sized from a pool of `connections`: a quarter for the lease lane, half for bulk
    /// (at least two each); the rest is the claim desk's, maintenance's and users'.
    pub fn new(connections: u32, lease_ttl: Duration) -> Self {
        let c = connections as usize;
        Pressure::with_lanes((c / 4).max(2), (c / 2).max(2), lease_ttl, Duration::from_secs(2))
    }

    pub fn with_lanes(lease: usize, bulk: usize, lease_ttl: Duration, bulk_wait: Duration) -> Self {
        Pressure {
            lease: Semaphore::new(lease),
            bulk: Semaphore::new(bulk),
            lease_ttl,
            bulk_wait,
            started: Instant::now(),
            behind_until_ms: AtomicU64::new(0),
            shed: AtomicU64::new(0),
        }
    }

    /// Waits for a place in `lane`. A lease-lane request waits up to a quarter of the lease
    /// lifetime (its worker heartbeats three times per lifetime), a bulk one `bulk_wait`; then
    /// it is refused with a retry hint.
    pub async fn enter(&self, lane: Lane) -> Result<SemaphorePermit<'_>, ApiErr> {
        let (sem, wait, retry) = match lane {
            Lane::Lease => (&self.lease, self.lease_ttl / 4, self.lease_ttl / 10),
            Lane::Bulk => (&self.bulk, self.bulk_wait, self.bulk_wait),
        };
        let t0 = Instant::now();
        match tokio::time::timeout(wait, sem.acquire()).await {
            Ok(Ok(permit)) => {
                if lane == Lane::Lease && t0.elapsed() > self.lease_ttl / 8 {
                    self.mark_behind();
                }
                Ok(permit)
            }
            Ok(Err(_)) | Err(_) => {
                self.shed.fetch_add(1, Ordering::Relaxed);
                if lane == Lane::Lease {
                    self.mark_behind();
                }
                Err(ApiErr::overloaded(
                    format!(
                        "the coordinator is behind: this request waited {} ms for the database; ask again later",
                        wait.as_millis()
                    ),
                    retry.max(Duration::from_millis(100)),
                ))
            }
        }
    }

    /// A place in `lane`, however long it takes: for work that must not be refused once
    /// begun (describing runs already leased).
    pub async fn wait(&self, lane: Lane) -> Option<SemaphorePermit<'_>> {
        let sem = match lane {
            Lane::Lease => &self.lease,
            Lane::Bulk => &self.bulk,
        };
        sem.acquire().await.ok()
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The coordinator could not serve a lease-keeping request in time: pause lease expiry
    /// until one lease lifetime from now.
    pub fn mark_behind(&self) {
        let until = self.now_ms() + self.lease_ttl.as_millis() as u64;
        self.behind_until_ms.fetch_max(until, Ordering::Relaxed);
    }

    /// Whether lease expiry must wait: the coordinator was behind within a lease lifetime.
    pub fn behind(&self) -> bool {
        self.now_ms() < self.behind_until_ms.load(Ordering::Relaxed)
    }

    /// Requests refused with a retry hint so far.
    pub fn shed(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_lane_refuses_with_a_hint_and_a_lease_lane_marks_the_coordinator_behind() {
        let p = Pressure::with_lanes(1, 1, Duration::from_millis(400), Duration::from_millis(50));
        let held = p.enter(Lane::Bulk).await.unwrap();
        let refused = p.enter(Lane::Bulk).await.unwrap_err();
        assert_eq!(refused.code, protocol::ErrorCode::Overloaded);
        assert!(refused.retry_after.is_some());
        assert!(!p.behind(), "shedding uploads does not pause lease expiry");
        drop(held);
        assert!(p.enter(Lane::Bulk).await.is_ok(), "a freed place is taken at once");

        let lease = p.enter(Lane::Lease).await.unwrap();
        assert!(p.enter(Lane::Lease).await.is_err());
        assert!(p.behind(), "a heartbeat turned away pauses expiry");
        assert_eq!(p.shed(), 2);
        drop(lease);
        tokio::time::sleep(Duration::from_millis(450)).await;
        assert!(!p.behind(), "one lease lifetime later expiry resumes");
    }
}
