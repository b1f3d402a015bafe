//! Scrubbing known secret values out of text before it is stored, logged or returned.
//!
//! A model endpoint may echo the API key it was sent (in an error body, say); a worker's error
//! excerpts, step records and logs would then carry it to the coordinator's database and to
//! every user who reads the run. A worker knows the secrets it holds (its token, registry
//! password, metrics token, the model keys its allow-list lets it read), so it replaces each
//! with [`REDACTED`] in whatever leaves it.

use std::borrow::Cow;

/// What a secret is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Secrets shorter than this are not scrubbed: replacing every `a` or `1234` would mangle the
/// text while hiding nothing worth hiding. Real keys and tokens are far longer.
pub const MIN_SECRET_LEN: usize = 8;

/// The secret values to scrub, in every form they take in text (as given, and escaped inside a
/// JSON string).
#[derive(Clone, Default)]
pub struct Redactor {
    /// Longest first, so a secret containing another is replaced whole.
    needles: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} forms of secrets)", self.needles.len())
    }
}

impl Redactor {
    pub fn new<I, S>(secrets: I) -> Redactor
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut needles = Vec::new();
        for secret in secrets {
            let secret = secret.as_ref();
            if secret.len() < MIN_SECRET_LEN {
                continue;
            }
            needles.push(secret.to_string());
            // Inside a JSON string a quote, backslash or control character is escaped.
            let json = serde_json::to_string(secret).expect("a string serialises");
            let json = &json[1..json.len() - 1];
            if json != secret {
                needles.push(json.to_string());
            }
        }
        needles.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        needles.dedup();
        Redactor { needles }
    }

    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// `text` with every known secret replaced by [`REDACTED`] (borrowed when none occurs).
    pub fn scrub<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for needle in &self.needles {
            if out.contains(needle.as_str()) {
                out = Cow::Owned(out.replace(needle.as_str(), REDACTED));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_replaced_wherever_they_occur() {
        let r = Redactor::new(["sk-live-0123456789", "tok\"en\\with-quotes"]);
        assert_eq!(
            r.scrub("401: bad key sk-live-0123456789 (sk-live-0123456789)"),
            "401: bad key [redacted] ([redacted])"
        );
        // The JSON-escaped form, as it appears in a serialised body.
        let body = serde_json::to_string(&serde_json::json!({"e": "x tok\"en\\with-quotes y"})).unwrap();
        assert_eq!(r.scrub(&body), r#"{"e":"x [redacted] y"}"#);
        assert!(matches!(r.scrub("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn short_values_are_not_secrets() {
        let r = Redactor::new(["", "abc", "1234567"]);
        assert!(r.is_empty());
        assert_eq!(r.scrub("abc 1234567"), "abc 1234567");
    }

    #[test]
    fn a_secret_containing_another_is_replaced_whole() {
        let r = Redactor::new(["abcdefgh", "abcdefgh-longer"]);
        assert_eq!(r.scrub("abcdefgh-longer abcdefgh"), "[redacted] [redacted]");
    }
}
