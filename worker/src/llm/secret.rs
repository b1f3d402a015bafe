//! API keys: read only from the environment variables the worker's operator allows, never
//! shown.

use std::collections::BTreeMap;

use protocol::keys::KeyAllowList;

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

/// The model API keys a worker may use: the values, taken once at start, of the environment
/// variables its allow-list allows. A sweep names a variable (`api_key_env`); the worker hands
/// out its key only when the allow-list allows it, so a sweep can never make the worker send
/// another of its variables (its own token, a registry password) to the sweep's endpoint.
#[derive(Clone, Default)]
pub struct Keyring {
    allow: KeyAllowList,
    keys: BTreeMap<String, Secret>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keyring(allows {}; {} keys set)", self.allow, self.keys.len())
    }
}

impl Keyring {
    /// Keeps, of `env` (the process's variables), the non-empty values of those `allow`
    /// allows.
    pub fn capture(allow: KeyAllowList, env: impl IntoIterator<Item = (String, String)>) -> Keyring {
        let keys = env
            .into_iter()
            .filter(|(var, value)| !value.is_empty() && allow.allows(var))
            .map(|(var, value)| (var, Secret::new(value)))
            .collect();
        Keyring { allow, keys }
    }

    /// What this keyring allows.
    pub fn allow_list(&self) -> &KeyAllowList {
        &self.allow
    }

    /// The key in variable `var` (None when no variable is named). `who` (e.g. "agent `qwen`")
    /// words the error when the variable is not allowed, or unset or empty on this worker.
    pub fn key(&self, var: Option<&str>, who: &str) -> Result<Option<Secret>, Error> {
        let Some(var) = var else { return Ok(None) };
        if !self.allow.allows(var) {
            return Err(Error::NotAllowed {
                who: who.to_string(),
                var: var.to_string(),
                allowed: self.allow.to_string(),
            });
        }
        match self.keys.get(var) {
            Some(key) => Ok(Some(key.clone())),
            None => Err(Error::Unset { who: who.to_string(), var: var.to_string() }),
        }
    }

    /// Every key held, to be scrubbed from whatever the worker stores, logs or returns.
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.keys.values().map(Secret::expose)
    }
}

/// An API key that cannot be read on this worker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The variable is unset or empty: set it in the worker's environment.
    #[error("{who} reads its API key from ${var}, which is not set on this worker")]
    Unset { who: String, var: String },
    /// The worker's operator has not allowed the variable (`--allow-key-env`).
    #[error("{who} reads its API key from ${var}, which this worker does not allow (it allows: {allowed}; see `--allow-key-env`)")]
    NotAllowed { who: String, var: String, allowed: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Vec<(String, String)> {
        [
            ("OPENAI_API_KEY", "sk-openai-123456"),
            ("STEER_TOKEN", "worker-token-123"),
            ("LAB_A", "lab-a-key-1234"),
            ("LAB_B", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn only_allowed_variables_are_read() {
        let ring = Keyring::capture(KeyAllowList::new(["OPENAI_API_KEY", "LAB_*"]).unwrap(), env());
        assert_eq!(
            ring.key(Some("OPENAI_API_KEY"), "agent `a`").unwrap().unwrap().expose(),
            "sk-openai-123456"
        );
        assert_eq!(ring.key(Some("LAB_A"), "agent `a`").unwrap().unwrap().expose(), "lab-a-key-1234");
        assert!(ring.key(None, "agent `a`").unwrap().is_none());
        let unset = ring.key(Some("LAB_B"), "agent `a`").unwrap_err();
        assert_eq!(
            unset.to_string(),
            "agent `a` reads its API key from $LAB_B, which is not set on this worker"
        );
        let mut values: Vec<&str> = ring.values().collect();
        values.sort();
        assert_eq!(values, ["lab-a-key-1234", "sk-openai-123456"]);
    }

    #[test]
    fn the_workers_own_settings_are_never_handed_out() {
        let ring = Keyring::capture(KeyAllowList::new(["OPENAI_API_KEY"]).unwrap(), env());
        let refused = ring.key(Some("STEER_TOKEN"), "agent `a`").unwrap_err();
        assert_eq!(
            refused.to_string(),
            "agent `a` reads its API key from $STEER_TOKEN, which this worker does not allow (it allows: OPENAI_API_KEY; see `--allow-key-env`)"
        );
        assert!(Keyring::default().key(Some("OPENAI_API_KEY"), "x").is_err());
        assert!(!ring.values().any(|v| v == "worker-token-123"));
    }
}
