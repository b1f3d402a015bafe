//! The process's log, with the secrets a worker holds scrubbed out of every line.
//!
//! A model endpoint may echo a worker's API key back in an error; the worker logs such errors.
//! Once a worker is built, `steer worker` and `steer up` hand its [`Redactor`] here, and every
//! log line written afterwards has the worker's keys and tokens replaced.

use std::io::Write;
use std::sync::{Arc, RwLock};

use protocol::redact::Redactor;
use tracing_subscriber::fmt::MakeWriter;

static SECRETS: RwLock<Option<Arc<Redactor>>> = RwLock::new(None);

/// Scrubs `redactor`'s secrets from every log line from now on.
pub fn hide(redactor: Arc<Redactor>) {
    *SECRETS.write().unwrap_or_else(|e| e.into_inner()) = Some(redactor);
}

/// Standard error, scrubbed: what the log is written to.
pub struct ScrubbedStderr;

impl<'a> MakeWriter<'a> for ScrubbedStderr {
    type Writer = ScrubbingWriter;
    fn make_writer(&'a self) -> Self::Writer {
        ScrubbingWriter { redactor: SECRETS.read().unwrap_or_else(|e| e.into_inner()).clone() }
    }
}

/// One event's writer. The formatter writes a whole event in one call, so a secret never
/// straddles two writes.
pub struct ScrubbingWriter {
    redactor: Option<Arc<Redactor>>,
}

impl Write for ScrubbingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut err = std::io::stderr().lock();
        match &self.redactor {
            Some(redactor) if !redactor.is_empty() => {
                err.write_all(redactor.scrub(&String::from_utf8_lossy(buf)).as_bytes())?
            }
            _ => err.write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
