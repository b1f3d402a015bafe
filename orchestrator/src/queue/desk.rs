//! The claim desk: one task per coordinator that serves every waiting claim.
//!
//! A worker's claim is a long poll. Were each waiting request to query on its own (at once,
//! then on its own timer), the database work would grow with the number of waiting workers:
//! a thousand workers polling twice a second saturate any connection pool, and heartbeats
//! and completions wait behind claims until leases expire. The desk instead takes each claim
//! as a ticket and serves the tickets of one class of workers ([`ClaimClass`]) together, with
//! one claim window per batch ([`Queue::claim_batch`]). A class whose last window came back
//! short is not looked at again until something may have changed: a notification (a sweep
//! submitted or resumed, on any replica), a lease taken back, a run ending here, or the
//! desk's one poll timer. So the claim work in flight is one statement per coordinator, and
//! waiting costs nothing.
//!
//! Invariants:
//! - at most one claim transaction at a time per coordinator (the desk's task), whatever the
//!   number of waiting workers;
//! - at most `max_waiting` tickets wait; past that a claim is answered `overloaded` with a
//!   retry hint at once, and nothing is queued for it;
//! - a ticket is answered exactly once: with leases, with nothing at its deadline, or with the
//!   error its batch met. A ticket whose request went away is dropped without being served;
//!   runs leased to a request that went away while its window was taken are handed straight
//!   back (a hand-back, not a failed attempt).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{ClaimClass, ClaimTicket, Lease, Queue};
use crate::db::{Error, Result};

/// How the desk serves claims (`steer serve --max-waiting-claims`, ...).
#[derive(Debug, Clone)]
pub struct DeskConfig {
    /// Claims that may wait at once; more are told to come back later.
    pub max_waiting: usize,
    /// Most runs one claim window asks for (the tickets of a batch share them).
    pub batch_runs: u32,
    /// How often a class found empty is looked at again without any other cause.
    pub poll: Duration,
    /// The retry hint given when `max_waiting` claims already wait.
    pub retry_after: Duration,
}

impl Default for DeskConfig {
    fn default() -> Self {
        DeskConfig {
            max_waiting: 4096,
            batch_runs: 512,
            poll: Duration::from_millis(500),
            retry_after: Duration::from_secs(2),
        }
    }
}

/// Why the desk did not take a claim.
#[derive(Debug)]
pub enum Refused {
    /// `max_waiting` claims already wait: ask again after this long.
    Busy(Duration),
    /// The coordinator is shutting down, or the claim window failed.
    Failed(Error),
}

/// The handle the API holds: cheap to clone.
#[derive(Clone)]
pub struct ClaimDesk {
    tickets: mpsc::UnboundedSender<Waiting>,
    signal: Arc<Signal>,
    waiting: Arc<AtomicUsize>,
    config: DeskConfig,
}

/// Something may have made runs claimable: bumps the generation and wakes the desk.
struct Signal {
    generation: AtomicU64,
    notify: Notify,
}

struct Waiting {
    class: ClaimClass,
    ticket: ClaimTicket,
    deadline: Instant,
    /// A claim window was taken for it (or its class was found empty since it came): it may
    /// be answered with nothing at its deadline. A claim asking not to wait still gets one look.
    looked: bool,
    reply: oneshot::Sender<Result<Vec<Lease>>>,
}

impl ClaimDesk {
    /// Starts the desk's task on `tracker`; it stops when `shutdown` fires, answering every
    /// waiting claim with nothing.
    pub fn spawn(
        queue: Queue,
        config: DeskConfig,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let signal = Arc::new(Signal { generation: AtomicU64::new(0), notify: Notify::new() });
        let waiting = Arc::new(AtomicUsize::new(0));
        let task = DeskTask {
            queue,
            config: config.clone(),
            signal: signal.clone(),
            waiting: waiting.clone(),
            pending: VecDeque::new(),
            empty: HashMap::new(),
        };
        tracker.spawn(task.run(rx, shutdown));
        ClaimDesk { tickets: tx, signal, waiting, config }
    }

    /// Something may have made runs claimable (a sweep submitted or resumed, a lease taken
    /// back, a run ended): every class is looked at again.
    pub fn wake(&self) {
        self.signal.generation.fetch_add(1, Ordering::Relaxed);
        self.signal.notify.notify_one();
    }

    /// Claims waiting now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Waits up to `wait` for runs for `ticket`; an empty list when none came in time.
    pub async fn claim(
        &self,
        class: ClaimClass,
        ticket: ClaimTicket,
        wait: Duration,
    ) -> std::result::Result<Vec<Lease>, Refused> {
        // Reserve a place first, so that no more than `max_waiting` are ever queued.
        let before = self.waiting.fetch_add(1, Ordering::AcqRel);
        if before >= self.config.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::Busy(self.config.retry_after));
        }
        let (reply, answer) = oneshot::channel();
        let waiting = Waiting { class, ticket, deadline: Instant::now() + wait, looked: false, reply };
        if self.tickets.send(waiting).is_err() {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::Failed(Error::Unavailable("the coordinator is shutting down".into())));
        }
        self.signal.notify.notify_one();
        match answer.await {
            Ok(Ok(leases)) => Ok(leases),
            Ok(Err(e)) => Err(Refused::Failed(e)),
            Err(_) => Err(Refused::Failed(Error::Unavailable("the coordinator is shutting down".into()))),
        }
    }
}

struct DeskTask {
    queue: Queue,
    config: DeskConfig,
    signal: Arc<Signal>,
    waiting: Arc<AtomicUsize>,
    /// Tickets in arrival order.
    pending: VecDeque<Waiting>,
    /// Classes whose last window came back short, with the generation it was taken at.
    empty: HashMap<ClaimClass, u64>,
}

impl DeskTask {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Waiting>, shutdown: CancellationToken) {
        let mut poll = tokio::time::interval(self.config.poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            while let Ok(w) = rx.try_recv() {
                self.pending.push_back(w);
            }
            let generation = self.signal.generation.load(Ordering::Relaxed);
            self.settle(Instant::now(), generation);
            if let Some(class) = self.next_class(generation) {
                self.serve(&class, generation).await;
                continue;
            }
            let deadline = self.pending.iter().map(|w| w.deadline).min();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                w = rx.recv() => match w {
                    Some(w) => self.pending.push_back(w),
                    None => break,
                },
                _ = self.signal.notify.notified() => {}
                _ = poll.tick() => {
                    self.signal.generation.fetch_add(1, Ordering::Relaxed);
                }
                _ = sleep_until(deadline) => {}
            }
        }
        // Shutting down: every waiting claim gets nothing (its worker asks the next coordinator).
        rx.close();
        while let Ok(w) = rx.try_recv() {
            self.pending.push_back(w);
        }
        for w in self.pending.drain(..) {
            let _ = w.reply.send(Ok(Vec::new()));
            self.waiting.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Answers tickets past their deadline with nothing and forgets those nobody waits for.
    fn settle(&mut self, now: Instant, generation: u64) {
        let mut kept = VecDeque::with_capacity(self.pending.len());
        for w in std::mem::take(&mut self.pending) {
            let looked = w.looked || self.empty.get(&w.class) == Some(&generation);
            if w.reply.is_closed() {
                self.waiting.fetch_sub(1, Ordering::AcqRel);
            } else if w.deadline <= now && looked {
                let _ = w.reply.send(Ok(Vec::new()));
                self.waiting.fetch_sub(1, Ordering::AcqRel);
            } else {
                kept.push_back(w);
            }
        }
        self.pending = kept;
        if self.pending.is_empty() && self.empty.len() > 1024 {
            self.empty.clear();
        }
    }

    /// The class of the oldest ticket that may find runs now: not found empty since
    /// `generation` began.
    fn next_class(&self, generation: u64) -> Option<ClaimClass> {
        self.pending.iter().map(|w| &w.class).find(|c| self.empty.get(*c) != Some(&generation)).cloned()
    }

    /// One claim window for the oldest tickets of `class`.
    async fn serve(&mut self, class: &ClaimClass, generation: u64) {
        let mut batch = Vec::new();
        let mut runs = 0u32;
        let mut rest = VecDeque::with_capacity(self.pending.len());
        for w in self.pending.drain(..) {
            if &w.class == class && (batch.is_empty() || runs + w.ticket.max <= self.config.batch_runs) {
                runs += w.ticket.max;
                batch.push(w);
            } else {
                rest.push_back(w);
            }
        }
        self.pending = rest;
        let tickets: Vec<ClaimTicket> = batch.iter().map(|w| w.ticket.clone()).collect();
        match self.queue.claim_batch(class, &tickets).await {
            Ok(leases) => {
                let mut short = false;
                let mut unserved = Vec::new();
                for (mut w, leases) in batch.into_iter().zip(leases) {
                    if leases.is_empty() {
                        short = true;
                        w.looked = true;
                        unserved.push(w);
                    } else {
                        self.answer(w, Ok(leases));
                    }
                }
                if short {
                    self.empty.insert(class.clone(), generation);
                }
                // Unserved tickets keep their place at the front: they are the oldest.
                for w in unserved.into_iter().rev() {
                    self.pending.push_front(w);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, tickets = tickets.len(), "claim window failed");
                let message = e.to_string();
                for w in batch {
                    self.answer(w, Err(Error::Unavailable(message.clone())));
                }
                // The database is failing: do not spin on it.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    fn answer(&self, w: Waiting, result: Result<Vec<Lease>>) {
        if let Err(Ok(leases)) = w.reply.send(result) {
            // The request went away while its window was taken: nobody will hear of these
            // runs, so they go straight back to the queue (a hand-back, not a failed attempt).
            tracing::info!(runs = leases.len(), worker = %w.ticket.worker, "a claim went away before its answer; handing its runs back");
            let (queue, by) = (self.queue.clone(), w.ticket.by);
            tokio::spawn(async move {
                for lease in leases {
                    let handed = queue.release(
                        lease.run_id,
                        by,
                        lease.lease_token,
                        "its claim's answer could not be delivered",
                    );
                    if let Err(e) = handed.await {
                        tracing::warn!(run_id = lease.run_id, error = %e, "could not hand back an undelivered run; its lease will expire");
                    }
                }
            });
        }
        self.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
