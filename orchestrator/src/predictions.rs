//! Predictions files in the official harness's formats: a `.json` list of objects, a `.json`
//! object keyed by instance id, or `.jsonl` (one object a line). Each prediction has
//! `instance_id`, `model_name_or_path` and `model_patch` (null or missing: an empty patch).
//! Errors name the line (JSONL) or the entry, and nothing is accepted when any entry is bad.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Prediction {
    pub instance_id: String,
    pub model_name_or_path: String,
    /// None when the prediction has no patch (graded as an empty patch).
    #[serde(default)]
    pub model_patch: Option<String>,
}

/// A prediction and where it came from in its file, for error messages.
#[derive(Debug, Clone, PartialEq)]
pub struct Located {
    pub prediction: Prediction,
    pub location: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: unknown format (use .json or .jsonl)")]
    UnknownFormat { path: String },
    #[error("{path}: {}", .problems.join("; "))]
    Bad { path: String, problems: Vec<String> },
}

pub fn load_path(path: &Path) -> Result<Vec<Located>, Error> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read { path: shown.clone(), source })?;
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("jsonl") | Some("ndjson") => parse_jsonl(&text, &shown),
        Some("json") => parse_json(&text, &shown),
        _ => Err(Error::UnknownFormat { path: shown }),
    }
}

pub fn parse_jsonl(text: &str, path: &str) -> Result<Vec<Located>, Error> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let location = format!("line {}", i + 1);
        match serde_json::from_str::<Value>(line) {
            Ok(v) => match prediction(&v, None) {
                Ok(p) => out.push(Located { prediction: p, location }),
                Err(m) => problems.push(format!("{location}: {m}")),
            },
            Err(e) => problems.push(format!("{location}: not valid JSON: {e}")),
        }
    }
    finish(out, problems, path)
}

pub fn parse_json(text: &str, path: &str) -> Result<Vec<Located>, Error> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| Error::Bad { path: path.to_string(), problems: vec![format!("not valid JSON: {e}")] })?;
    let mut out = Vec::new();
    let mut problems = Vec::new();
    match value {
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                let location = format!("entry {i}");
                match prediction(v, None) {
                    Ok(p) => out.push(Located { prediction: p, location }),
                    Err(m) => problems.push(format!("{location}: {m}")),
                }
            }
        }
        // The harness also accepts {instance_id: prediction}.
        Value::Object(map) => {
            for (key, v) in &map {
                let location = format!("entry `{key}`");
                match prediction(v, Some(key)) {
                    Ok(p) => out.push(Located { prediction: p, location }),
                    Err(m) => problems.push(format!("{location}: {m}")),
                }
            }
        }
        _ => problems.push("expected a list of predictions or an object keyed by instance id".into()),
    }
    finish(out, problems, path)
}

/// What is wrong with one entry of a predictions file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EntryError {
    #[error("expected an object")]
    NotAnObject,
    #[error("field \"{0}\" must be a string")]
    NotAString(&'static str),
    #[error("missing field \"{0}\"")]
    Missing(&'static str),
    #[error("field \"{0}\" is empty")]
    Empty(&'static str),
    /// An entry of an object keyed by instance id names another instance.
    #[error("instance_id \"{id}\" does not match its key \"{key}\"")]
    KeyMismatch { id: String, key: String },
}

fn prediction(v: &Value, key: Option<&str>) -> Result<Prediction, EntryError> {
    let obj = v.as_object().ok_or(EntryError::NotAnObject)?;
    let field = |name: &'static str| -> Result<Option<String>, EntryError> {
        match obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(EntryError::NotAString(name)),
        }
    };
    let instance_id = match (field("instance_id")?, key) {
        (Some(id), Some(k)) if id != k => {
            return Err(EntryError::KeyMismatch { id, key: k.to_string() });
        }
        (Some(id), _) => id,
        (None, Some(k)) => k.to_string(),
        (None, None) => return Err(EntryError::Missing("instance_id")),
    };
    let model = field("model_name_or_path")?.ok_or(EntryError::Missing("model_name_or_path"))?;
    if model.trim().is_empty() {
        return Err(EntryError::Empty("model_name_or_path"));
    }
    Ok(Prediction { instance_id, model_name_or_path: model, model_patch: field("model_patch")? })
}

fn finish(out: Vec<Located>, mut problems: Vec<String>, path: &str) -> Result<Vec<Located>, Error> {
    // One prediction per (model, instance): the harness keys its reports that way.
    let mut seen: HashMap<(&str, &str), &str> = HashMap::new();
    for p in &out {
        let key = (p.prediction.model_name_or_path.as_str(), p.prediction.instance_id.as_str());
        if let Some(first) = seen.insert(key, &p.location) {
            problems.push(format!(
                "{}: a second prediction of `{}` for `{}` (the first is at {first})",
                p.location, key.0, key.1
            ));
        }
    }
    if out.is_empty() && problems.is_empty() {
        problems.push("no predictions".into());
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(Error::Bad { path: path.to_string(), problems })
    }
}

/// Turns a model name into a name usable for agents, folders and reports.
pub fn model_slug(model: &str) -> String {
    let slug: String = model
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '-' })
        .collect();
    slug.trim_matches('-').chars().take(100).collect::<String>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_with_null_patch_and_bad_lines() {
        let text =
            "{\"instance_id\": \"a__b-1\", \"model_name_or_path\": \"m\", \"model_patch\": \"diff\"}\n\n\
                    {\"instance_id\": \"a__b-2\", \"model_name_or_path\": \"m\", \"model_patch\": null}\n";
        let got = parse_jsonl(text, "p.jsonl").unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].prediction.model_patch, None);
        assert_eq!(got[1].location, "line 3");

        let bad = "{\"instance_id\": \"a__b-1\", \"model_name_or_path\": \"m\"}\n{not json\n{\"model_name_or_path\": \"m\"}\n";
        let err = parse_jsonl(bad, "p.jsonl").unwrap_err().to_string();
        assert!(err.contains("line 2: not valid JSON"), "{err}");
        assert!(err.contains("line 3: missing field \"instance_id\""), "{err}");
    }

    #[test]
    fn json_list_and_dict_forms() {
        let list = r#"[{"instance_id": "a__b-1", "model_name_or_path": "m", "model_patch": "x"}]"#;
        assert_eq!(parse_json(list, "p.json").unwrap()[0].prediction.instance_id, "a__b-1");
        let dict = r#"{"a__b-1": {"model_name_or_path": "m", "model_patch": "x"}}"#;
        assert_eq!(parse_json(dict, "p.json").unwrap()[0].prediction.instance_id, "a__b-1");
        let mismatch = r#"{"a__b-1": {"instance_id": "c__d-2", "model_name_or_path": "m"}}"#;
        assert!(parse_json(mismatch, "p.json").unwrap_err().to_string().contains("does not match its key"));
    }

    #[test]
    fn duplicates_and_wrong_types_are_named() {
        let text = "{\"instance_id\": \"a__b-1\", \"model_name_or_path\": \"m\"}\n\
                    {\"instance_id\": \"a__b-1\", \"model_name_or_path\": \"m\", \"model_patch\": 3}\n\
                    {\"instance_id\": \"a__b-1\", \"model_name_or_path\": \"m\"}\n";
        let err = parse_jsonl(text, "p.jsonl").unwrap_err().to_string();
        assert!(err.contains("line 2: field \"model_patch\" must be a string"), "{err}");
        assert!(
            err.contains("line 3: a second prediction of `m` for `a__b-1` (the first is at line 1)"),
            "{err}"
        );
    }

    #[test]
    fn slugs_are_safe_names() {
        assert_eq!(model_slug("Qwen/Qwen3-Next-80B"), "Qwen-Qwen3-Next-80B");
        assert_eq!(model_slug("gold"), "gold");
    }
}
