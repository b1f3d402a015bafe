//! API keys: read from the environment variable a sweep names, never shown.

/// A secret (an API key) that never shows itself in `Debug` or `Display`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub(super) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    /// The key in environment variable `var` (None when no variable is named). `who` (e.g.
    /// "agent `qwen`") words the error when the variable is unset or empty on this worker.
    pub fn from_env(var: Option<&str>, who: &str) -> Result<Option<Secret>, Error> {
        match var {
            None => Ok(None),
            Some(var) => match std::env::var(var) {
                Ok(key) if !key.is_empty() => Ok(Some(Secret::new(key))),
                _ => Err(Error::Unset { who: who.to_string(), var: var.to_string() }),
            },
        }
    }
}

/// An API key that cannot be read on this worker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The variable is unset or empty: set it in the worker's environment.
    #[error("{who} reads its API key from ${var}, which is not set on this worker")]
    Unset { who: String, var: String },
}
