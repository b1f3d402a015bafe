//! Micro-batching: the model's inference thread and the queue in front of it.
//!
//! Callers tokenize, then queue a [`Job`] with a oneshot for the answer. The thread takes the
//! first job waiting, then keeps collecting for up to `batch_window` or `max_batch` jobs, but
//! only while more calls are on their way, so a lone call runs at once. `arriving` counts the
//! calls that have started and whose job the thread has not received yet: a caller adds itself
//! when it starts, and the thread takes it off when it receives the job (or the caller does, if
//! it gives up before queueing one). The batch runs as one padded input (scorer), or as one prefill and a
//! shared decoding loop (generative); jobs queued meanwhile wait for the next batch.
//!
//! Lifetime: the thread ends when every sender is gone (the model was dropped), after the batch
//! in hand. A job whose caller went away (its future dropped) is skipped before its batch runs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ort::session::Session;
use tokio::sync::oneshot;

use super::config::{ModelConfig, ScorerHead};
use super::session::Io;
use super::text::Text;
use super::{FinishReason, GenParams, OnnxError, OnnxOptions};

pub(super) type Reply<T> = oneshot::Sender<Result<T, OnnxError>>;

pub(super) enum Job {
    Score { ids: Vec<i64>, reply: Reply<Scored> },
    Generate { ids: Vec<i64>, params: GenParams, reply: Reply<Generated> },
}

impl Job {
    fn abandoned(&self) -> bool {
        match self {
            Job::Score { reply, .. } => reply.is_closed(),
            Job::Generate { reply, .. } => reply.is_closed(),
        }
    }
}

/// A scorer job's result (the caller adds what it measured itself).
pub(super) struct Scored {
    pub on_track: Option<f32>,
    pub distribution: Vec<f32>,
    pub batch_size: usize,
    pub compute: Duration,
}

pub(super) struct Generated {
    pub text: String,
    pub output_ids: Vec<u32>,
    pub finish: FinishReason,
    pub batch_size: usize,
    pub compute: Duration,
}

/// What the inference thread owns: the session and how to run it.
pub(super) struct Engine {
    pub session: Session,
    pub io: Io,
    pub pad_id: i64,
    pub eos_ids: Vec<u32>,
    pub context_length: usize,
    pub head: ScorerHead,
    pub on_track_labels: Vec<bool>,
    pub text: Arc<Text>,
}

impl Engine {
    pub(super) fn new(session: Session, io: Io, config: &ModelConfig, text: Arc<Text>) -> Engine {
        let pad_id = config.pad_token_id.or_else(|| config.eos_token_ids.first().copied()).unwrap_or(0);
        Engine {
            session,
            io,
            pad_id: i64::from(pad_id),
            eos_ids: config.eos_token_ids.clone(),
            context_length: config.context_length,
            head: config.scorer_head.clone(),
            on_track_labels: config.labels.iter().map(|l| l.on_track).collect(),
            text,
        }
    }

    fn run(&mut self, jobs: Vec<Job>) {
        let mut scores = Vec::new();
        let mut generations = Vec::new();
        for job in jobs {
            match job {
                Job::Score { ids, reply } => scores.push((ids, reply)),
                Job::Generate { ids, params, reply } => generations.push((ids, params, reply)),
            }
        }
        if !scores.is_empty() {
            let started = Instant::now();
            let (ids, replies): (Vec<_>, Vec<_>) = scores.into_iter().unzip();
            let batch_size = ids.len();
            let result = self.score(&ids);
            let compute = started.elapsed();
            match result {
                Ok(rows) => {
                    for (reply, (on_track, distribution)) in replies.into_iter().zip(rows) {
                        let _ = reply.send(Ok(Scored { on_track, distribution, batch_size, compute }));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        }
        if !generations.is_empty() {
            let started = Instant::now();
            let batch_size = generations.len();
            let (requests, replies): (Vec<_>, Vec<_>) =
                generations.into_iter().map(|(ids, params, reply)| ((ids, params), reply)).unzip();
            let result = self.generate(requests);
            let compute = started.elapsed();
            match result {
                Ok(outputs) => {
                    for (reply, out) in replies.into_iter().zip(outputs) {
                        let _ = reply.send(Ok(Generated {
                            text: out.text,
                            output_ids: out.ids,
                            finish: out.finish,
                            batch_size,
                            compute,
                        }));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        }
    }
}

/// The handle callers queue jobs through.
pub(super) struct Batcher {
    queue: mpsc::Sender<Job>,
}

impl Batcher {
    pub(super) fn spawn(
        name: &str,
        engine: Engine,
        options: &OnnxOptions,
        arriving: Arc<AtomicUsize>,
    ) -> std::io::Result<Batcher> {
        let (queue, jobs) = mpsc::channel();
        let policy = Policy { max_batch: options.max_batch.max(1), window: options.batch_window };
        std::thread::Builder::new()
            .name(format!("onnx-{name}"))
            .spawn(move || serve(engine, jobs, policy, arriving))?;
        Ok(Batcher { queue })
    }

    pub(super) fn send(&self, job: Job) -> Result<(), OnnxError> {
        self.queue.send(job).map_err(|_| OnnxError::Closed)
    }
}

#[derive(Debug, Clone, Copy)]
struct Policy {
    max_batch: usize,
    window: Duration,
}

fn serve(mut engine: Engine, jobs: mpsc::Receiver<Job>, policy: Policy, arriving: Arc<AtomicUsize>) {
    while let Some(batch) = next_batch(&jobs, policy, &arriving) {
        let batch: Vec<Job> = batch.into_iter().filter(|j| !j.abandoned()).collect();
        if !batch.is_empty() {
            engine.run(batch);
        }
    }
    tracing::debug!("ONNX inference thread stopped: the model was dropped");
}

/// The next batch: the first job waiting (blocking), then whatever is queued or arrives within
/// the window while calls are on their way. `None` when the model is gone.
fn next_batch(jobs: &mpsc::Receiver<Job>, policy: Policy, arriving: &AtomicUsize) -> Option<Vec<Job>> {
    let received = |job: Job| {
        let _ = arriving.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| Some(n.saturating_sub(1)));
        job
    };
    let first = received(jobs.recv().ok()?);
    let mut batch = vec![first];
    let deadline = Instant::now() + policy.window;
    while batch.len() < policy.max_batch {
        match jobs.try_recv() {
            Ok(job) => {
                batch.push(received(job));
                continue;
            }
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) => {}
        }
        if arriving.load(Ordering::SeqCst) == 0 {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        match jobs.recv_timeout(deadline - now) {
            Ok(job) => batch.push(received(job)),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
        }
    }
    Some(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> (Job, oneshot::Receiver<Result<Scored, OnnxError>>) {
        let (reply, rx) = oneshot::channel();
        (Job::Score { ids: vec![1], reply }, rx)
    }

    #[test]
    fn a_lone_call_does_not_wait_for_the_window() {
        let (tx, rx) = mpsc::channel();
        let (j, _keep) = job();
        tx.send(j).unwrap();
        let arriving = AtomicUsize::new(1);
        let started = Instant::now();
        let batch =
            next_batch(&rx, Policy { max_batch: 16, window: Duration::from_secs(10) }, &arriving).unwrap();
        assert_eq!(batch.len(), 1);
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(arriving.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn queued_jobs_join_up_to_max_batch() {
        let (tx, rx) = mpsc::channel();
        let mut keep = Vec::new();
        for _ in 0..5 {
            let (j, r) = job();
            keep.push(r);
            tx.send(j).unwrap();
        }
        let arriving = AtomicUsize::new(5);
        let policy = Policy { max_batch: 3, window: Duration::from_secs(10) };
        assert_eq!(next_batch(&rx, policy, &arriving).unwrap().len(), 3);
        assert_eq!(next_batch(&rx, policy, &arriving).unwrap().len(), 2);
        assert_eq!(arriving.load(Ordering::SeqCst), 0);
        drop(tx);
        assert!(next_batch(&rx, policy, &arriving).is_none());
    }

    #[test]
    fn the_batch_waits_for_calls_on_their_way_within_the_window() {
        // Two calls started; the first is queued, the second is still tokenizing.
        let (tx, rx) = mpsc::channel();
        let (j, _k1) = job();
        tx.send(j).unwrap();
        let arriving = AtomicUsize::new(2);
        let (late, _k2) = job();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            tx.send(late).unwrap();
            tx
        });
        let batch =
            next_batch(&rx, Policy { max_batch: 16, window: Duration::from_secs(30) }, &arriving).unwrap();
        assert_eq!(batch.len(), 2);
        assert_eq!(arriving.load(Ordering::SeqCst), 0);
        drop(sender.join().unwrap());

        // A call that never arrives costs the window, no more.
        let (tx, rx) = mpsc::channel();
        let (j, _k3) = job();
        tx.send(j).unwrap();
        let stuck = AtomicUsize::new(2);
        let started = Instant::now();
        let batch =
            next_batch(&rx, Policy { max_batch: 16, window: Duration::from_millis(20) }, &stuck).unwrap();
        assert_eq!(batch.len(), 1);
        assert!(started.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn abandoned_jobs_are_recognised() {
        let (j, rx) = job();
        assert!(!j.abandoned());
        drop(rx);
        assert!(j.abandoned());
    }
}
