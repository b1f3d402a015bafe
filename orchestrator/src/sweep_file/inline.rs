//! `steer sweep submit`'s inlining of template files: the stored sweep holds exactly the
//! prompts its agents saw, never a path that only meant something on the submitter's machine.

use std::path::PathBuf;

use super::TEMPLATE_KEYS;

/// Why a template file cannot be inlined.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `*_template_file` key holds something other than a path.
    #[error("executor.{file_key}: expected a file path (a string)")]
    NotAPath { file_key: String },
    /// The file cannot be read.
    #[error("executor.{file_key}: cannot read {}: {source}", path.display())]
    Unreadable { file_key: String, path: PathBuf, source: std::io::Error },
    /// Both the template and its file are given.
    #[error("executor: give `{key}` or `{file_key}`, not both")]
    Both { key: &'static str, file_key: String },
}

/// Inlines the `*_template_file` keys of an `agent` executor: each file (relative to
/// `base_dir`) is read and its text put under the matching `*_template` key, so that the
/// stored sweep holds exactly the prompts its agents saw. Returns the text unchanged when
/// there is nothing to inline.
pub fn inline_template_files(text: &str, base_dir: &std::path::Path) -> Result<String, Error> {
    let mut doc: toml_edit::DocumentMut = match text.parse() {
        Ok(doc) => doc,
        // The parser reports this with its line; nothing to inline here.
        Err(_) => return Ok(text.to_string()),
    };
    let Some(executor) = doc.get_mut("executor").and_then(|e| e.as_table_like_mut()) else {
        return Ok(text.to_string());
    };
    let mut changed = false;
    for key in TEMPLATE_KEYS {
        let file_key = format!("{key}_file");
        let Some(item) = executor.get(&file_key) else { continue };
        let Some(rel) = item.as_str() else {
            return Err(Error::NotAPath { file_key });
        };
        let path = base_dir.join(rel);
        let body = match std::fs::read_to_string(&path) {
            Ok(body) => body,
            Err(source) => return Err(Error::Unreadable { file_key, path, source }),
        };
        if executor.contains_key(key) {
            return Err(Error::Both { key, file_key });
        }
        executor.remove(&file_key);
        executor.insert(key, toml_edit::value(body));
        changed = true;
    }
    Ok(if changed { doc.to_string() } else { text.to_string() })
}
