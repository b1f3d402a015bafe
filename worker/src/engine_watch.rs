//! Whether the container engine still answers. A worker whose engine stops answering after it
//! started cannot run container runs; it says so in every heartbeat (`degraded`), and the
//! coordinator hands it placeholder runs only until the engine answers again.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::sandbox::Docker;

/// How often the engine is asked, and how long an answer may take.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// The last answer of a watched engine: None while it answers, else why not.
#[derive(Clone, Default)]
pub struct EngineWatch {
    problem: Arc<Mutex<Option<String>>>,
}

impl EngineWatch {
    /// Starts asking `docker` (at `host`, named in the problem) every `every`; the task ends
    /// when the last clone of the watch is dropped.
    pub fn spawn(docker: Docker, host: String, every: Duration) -> EngineWatch {
        let watch = EngineWatch::default();
        let problem = Arc::downgrade(&watch.problem);
        tokio::spawn(check_loop(docker, host, every, problem));
        watch
    }

    /// Why the engine cannot be used now, if it cannot.
    pub fn problem(&self) -> Option<String> {
        self.problem.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

async fn check_loop(docker: Docker, host: String, every: Duration, problem: Weak<Mutex<Option<String>>>) {
    loop {
        tokio::time::sleep(every).await;
        let answer = match tokio::time::timeout(CHECK_TIMEOUT, docker.ping()).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("the container engine at {host} does not answer: {e}")),
            Err(_) => Some(format!("the container engine at {host} did not answer within {CHECK_TIMEOUT:?}")),
        };
        let Some(slot) = problem.upgrade() else { return };
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        if *slot != answer {
            match &answer {
                Some(why) => tracing::error!(%why, "container runs stop until the engine answers again"),
                None => tracing::info!(%host, "the container engine answers again"),
            }
            *slot = answer;
        }
    }
}
