//! Counting tokens with a model's own tokenizer (its `tokenizer.json`), for answers that report
//! no usage. Each file is loaded once per process and shared by every run that names it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;

/// A tokenizer that cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file is missing or is not a Hugging Face `tokenizer.json`.
    #[error("cannot load the tokenizer {path}: {source}")]
    Load { path: String, source: tokenizers::Error },
}

/// A loaded tokenizer.
pub struct TokenCounter {
    tokenizer: tokenizers::Tokenizer,
}

impl std::fmt::Debug for TokenCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenCounter")
    }
}

impl TokenCounter {
    /// The tokenizer at `path` (a Hugging Face `tokenizer.json`), loaded on first use.
    pub fn load(path: &str) -> Result<Arc<TokenCounter>, Error> {
        static LOADED: OnceLock<Mutex<HashMap<String, Arc<TokenCounter>>>> = OnceLock::new();
        let mut loaded = LOADED.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
        if let Some(counter) = loaded.get(path) {
            return Ok(counter.clone());
        }
        let tokenizer = tokenizers::Tokenizer::from_file(path)
            .map_err(|source| Error::Load { path: path.to_string(), source })?;
        let counter = Arc::new(TokenCounter { tokenizer });
        loaded.insert(path.to_string(), counter.clone());
        Ok(counter)
    }

    /// Tokens of `text` (special tokens not added).
    pub fn count(&self, text: &str) -> i64 {
        match self.tokenizer.encode(text, false) {
            Ok(encoding) => encoding.len() as i64,
            // A text the tokenizer cannot encode is counted as the fallback estimate does.
            Err(_) => (text.chars().count() as i64 + 3) / 4,
        }
    }

    /// Tokens of the text of `messages` (contents and tool-call arguments; the chat template's
    /// own tokens are not counted).
    pub fn count_messages(&self, messages: &[Value]) -> i64 {
        messages.iter().map(|m| self.count(&message_text(m))).sum()
    }
}

/// The text of a message that a model reads: its content and its tool calls' arguments.
pub fn message_text(message: &Value) -> String {
    let mut text = match message.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
        for call in calls {
            if let Some(args) = call.pointer("/function/arguments").and_then(Value::as_str) {
                text.push_str(args);
            }
        }
    }
    text
}
