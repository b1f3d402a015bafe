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

/// Why an agent's mini-swe-agent configuration file cannot be inlined.
#[derive(Debug, thiserror::Error)]
pub enum AgentConfigError {
    /// `agent_config` holds something other than a path.
    #[error("agents[{index}].agent_config: expected a file path (a string)")]
    NotAPath { index: usize },
    /// The file cannot be read.
    #[error("agents[{index}].agent_config: cannot read {}: {source}", path.display())]
    Unreadable { index: usize, path: PathBuf, source: std::io::Error },
}

/// How far above a configuration file mini-swe-agent's package root may be (1.x keeps its
/// SWE-bench file in `config/extra/`, 2.x in `config/benchmarks/`).
const PACKAGE_DEPTH: usize = 3;

/// Inlines each agent's `agent_config = "path"` (relative to `base_dir`) as
/// `agent_config = { path, yaml, code }`: the file's text and, when the file sits in an
/// installed mini-swe-agent package, that package's `agents/default.py`, whose defaults the
/// coordinator reads for what the file leaves out. The stored sweep so holds everything the
/// agent follows, whatever later happens to the files. Returns the text unchanged when there
/// is nothing to inline.
pub fn inline_agent_configs(text: &str, base_dir: &std::path::Path) -> Result<String, AgentConfigError> {
    let mut doc: toml_edit::DocumentMut = match text.parse() {
        Ok(doc) => doc,
        Err(_) => return Ok(text.to_string()),
    };
    let Some(agents) = doc.get_mut("agents").and_then(|a| a.as_array_of_tables_mut()) else {
        return Ok(text.to_string());
    };
    let mut changed = false;
    for (index, agent) in agents.iter_mut().enumerate() {
        let Some(item) = agent.get("agent_config") else { continue };
        if item.is_inline_table() || item.is_table() {
            continue; // already inlined
        }
        let Some(rel) = item.as_str() else { return Err(AgentConfigError::NotAPath { index }) };
        let path = base_dir.join(rel);
        let yaml = std::fs::read_to_string(&path).map_err(|source| AgentConfigError::Unreadable {
            index,
            path: path.clone(),
            source,
        })?;
        let mut inline = toml_edit::InlineTable::new();
        inline.insert("path", rel.into());
        inline.insert("yaml", yaml.into());
        if let Some(code) = package_defaults(&path) {
            inline.insert("code", code.into());
        }
        agent.insert("agent_config", toml_edit::value(inline));
        changed = true;
    }
    Ok(if changed { doc.to_string() } else { text.to_string() })
}

/// `agents/default.py` of the mini-swe-agent package a configuration file belongs to, if any.
fn package_defaults(config: &std::path::Path) -> Option<String> {
    let config = config.canonicalize().ok()?;
    config
        .ancestors()
        .skip(1)
        .take(PACKAGE_DEPTH)
        .map(|dir| dir.join("agents").join("default.py"))
        .find(|p| p.is_file())
        .and_then(|p| std::fs::read_to_string(p).ok())
}
