//! Which environment variables a worker lets sweeps read model API keys from.
//!
//! A sweep names the variable holding an agent's or a remote critic's key (`api_key_env`); the
//! worker reads it and sends its value as a bearer token to the sweep's own `base_url`. Were any
//! variable allowed, a user could have a worker send its own `STEER_TOKEN` or registry password
//! to an endpoint of their choosing. So a worker's operator lists the variables (names, or
//! prefixes ending in `*`) its sweeps may name; `STEER_*` names are never allowed, whatever the
//! list says. The coordinator applies the same rule when it hands out runs, so both sides must
//! agree on it: it lives here.

use serde::{Deserialize, Serialize};

/// Variables with this prefix are the worker's own settings (its token among them).
pub const RESERVED_PREFIX: &str = "STEER_";

/// True for a variable a sweep may never name (the worker's own settings).
pub fn is_reserved(var: &str) -> bool {
    var.starts_with(RESERVED_PREFIX)
}

/// True for a valid environment variable name: letters, digits and `_`, not starting with a
/// digit.
pub fn is_var_name(var: &str) -> bool {
    let mut chars = var.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A worker's allow-list: exact names (`OPENAI_API_KEY`) and prefixes (`LAB_KEY_*`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct KeyAllowList {
    entries: Vec<String>,
}

/// An allow-list entry that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllowListError {
    #[error("`{0}` is not a variable name or a prefix ending in `*` (letters, digits and `_`)")]
    Malformed(String),
    #[error("`{0}` would allow the worker's own `STEER_*` settings (its token among them), which sweeps may never read")]
    Reserved(String),
}

impl KeyAllowList {
    /// Parses entries (empty ones are skipped). Refuses malformed entries and any that would
    /// allow a `STEER_*` variable (a bare `*`, `S*`, `STEER_*`, ...).
    pub fn new<I, S>(entries: I) -> Result<KeyAllowList, AllowListError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.as_ref().trim();
            if entry.is_empty() {
                continue;
            }
            let stem = entry.strip_suffix('*').unwrap_or(entry);
            if stem.is_empty() || !is_var_name(stem) {
                return Err(AllowListError::Malformed(entry.to_string()));
            }
            let covers_reserved = if entry.ends_with('*') {
                RESERVED_PREFIX.starts_with(stem) || is_reserved(stem)
            } else {
                is_reserved(stem)
            };
            if covers_reserved {
                return Err(AllowListError::Reserved(entry.to_string()));
            }
            if !out.iter().any(|e| e == entry) {
                out.push(entry.to_string());
            }
        }
        Ok(KeyAllowList { entries: out })
    }

    /// Whether a sweep may have this worker read `var`.
    pub fn allows(&self, var: &str) -> bool {
        !is_reserved(var)
            && self.entries.iter().any(|e| match e.strip_suffix('*') {
                Some(prefix) => var.starts_with(prefix),
                None => e == var,
            })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries, as given (`NAME` or `PREFIX*`).
    pub fn entries(&self) -> &[String] {
        &self.entries
    }
}

impl TryFrom<Vec<String>> for KeyAllowList {
    type Error = AllowListError;
    fn try_from(entries: Vec<String>) -> Result<Self, Self::Error> {
        KeyAllowList::new(entries)
    }
}

impl From<KeyAllowList> for Vec<String> {
    fn from(list: KeyAllowList) -> Self {
        list.entries
    }
}

impl std::fmt::Display for KeyAllowList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.entries.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&self.entries.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_prefixes_allow_what_they_say() {
        let list = KeyAllowList::new(["OPENAI_API_KEY", "LAB_*", ""]).unwrap();
        assert!(list.allows("OPENAI_API_KEY"));
        assert!(!list.allows("OPENAI_API_KEY2"));
        assert!(list.allows("LAB_QWEN"));
        assert!(!list.allows("HOME"));
        assert_eq!(list.to_string(), "OPENAI_API_KEY, LAB_*");
        assert!(!KeyAllowList::default().allows("OPENAI_API_KEY"));
    }

    #[test]
    fn entries_that_reach_steer_settings_are_refused() {
        for entry in ["STEER_TOKEN", "STEER_*", "STE*", "S*", "*"] {
            let err = KeyAllowList::new([entry]).unwrap_err();
            assert!(
                matches!(err, AllowListError::Reserved(_))
                    || (entry == "*" && matches!(err, AllowListError::Malformed(_))),
                "{entry}: {err}"
            );
        }
        // Whatever slips into a list, a reserved name is never allowed.
        let list = KeyAllowList { entries: vec!["STEER_TOKEN".into()] };
        assert!(!list.allows("STEER_TOKEN"));
    }

    #[test]
    fn malformed_entries_are_named() {
        let err = KeyAllowList::new(["MY KEY"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`MY KEY` is not a variable name or a prefix ending in `*` (letters, digits and `_`)"
        );
        assert!(KeyAllowList::new(["A*B"]).is_err());
        assert!(KeyAllowList::new(["1ABC"]).is_err());
    }

    #[test]
    fn deserialising_validates() {
        assert!(serde_json::from_str::<KeyAllowList>(r#"["STEER_*"]"#).is_err());
        let list: KeyAllowList = serde_json::from_str(r#"["A_*","B"]"#).unwrap();
        assert_eq!(serde_json::to_string(&list).unwrap(), r#"["A_*","B"]"#);
    }
}
