//! Importing SWE-bench datasets: JSON, JSON Lines and Parquet files into [`Instance`]s.
//!
//! Every format is first turned into one JSON object per row, and every row then goes through
//! the same conversion ([`row`]) and the same checks ([`validate`]). A load is all or nothing:
//! one bad row fails the whole file, and the error lists every problem found (up to
//! [`Problems::SHOWN`]) with its place in the file, so a user can fix a file in one pass.

use std::fmt;
use std::path::{Path, PathBuf};

use protocol::Instance;
use serde_json::Value;

mod json;
mod parquet;
mod row;
mod validate;

#[cfg(test)]
mod tests;

/// How a dataset file is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A JSON array of row objects. A `.json` file holding one object per line (what Hugging
    /// Face's `Dataset.to_json` writes) is read as JSON Lines.
    Json,
    /// One row object per line (`.jsonl`, `.ndjson`).
    Jsonl,
    /// A Parquet file as published on the Hugging Face hub.
    Parquet,
}

impl Format {
    /// The format named by the file's extension (case-insensitive).
    pub fn from_path(path: &Path) -> Result<Format, Error> {
        let extension = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        match extension.as_deref() {
            Some("json") => Ok(Format::Json),
            Some("jsonl" | "ndjson") => Ok(Format::Jsonl),
            Some("parquet") => Ok(Format::Parquet),
            _ => Err(Error::UnknownFormat { path: path.to_path_buf() }),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{}: unknown dataset format (the file name must end in .json, .jsonl, .ndjson or .parquet)",
        path.display()
    )]
    UnknownFormat { path: PathBuf },
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file as a whole is not JSON (rows of JSON Lines are reported as [`Error::BadRows`]).
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("expected a JSON array of rows, got {0}")]
    NotAnArray(&'static str),
    /// The file is not Parquet, or is damaged.
    #[error("not a readable Parquet file: {0}")]
    Parquet(String),
    #[error("the dataset has no rows")]
    Empty,
    /// Some rows are malformed or fail the checks; none were imported.
    #[error("{0}")]
    BadRows(Problems),
}

/// Where a row is in its file, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// 1-based line of a JSON Lines file.
    Line(usize),
    /// 0-based row of a JSON array or Parquet file, with its 1-based line when known.
    Row { index: usize, line: Option<usize> },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Line(line) => write!(f, "line {line}"),
            Location::Row { index, line: None } => write!(f, "row {index}"),
            Location::Row { index, line: Some(line) } => write!(f, "row {index} (line {line})"),
        }
    }
}

/// One thing wrong with one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub location: Location,
    pub message: String,
}

/// The problems found in a dataset: the first [`Problems::SHOWN`], and how many more there were.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Problems {
    pub shown: Vec<Problem>,
    pub more: usize,
}

impl Problems {
    /// Enough to fix a file in one go without burying the user under a broken file's output.
    pub const SHOWN: usize = 20;

    fn push(&mut self, location: Location, message: String) {
        if self.shown.len() < Self::SHOWN {
            self.shown.push(Problem { location, message });
        } else {
            self.more += 1;
        }
    }

    fn is_empty(&self) -> bool {
        self.shown.is_empty()
    }

    pub fn count(&self) -> usize {
        self.shown.len() + self.more
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A single problem reads as one line: `line 3: missing field "base_commit"`.
        if let ([only], 0) = (self.shown.as_slice(), self.more) {
            return write!(f, "{}: {}", only.location, only.message);
        }
        write!(f, "{} problems in the dataset, nothing was imported:", self.count())?;
        for problem in &self.shown {
            write!(f, "\n  {}: {}", problem.location, problem.message)?;
        }
        if self.more > 0 {
            write!(f, "\n  ... and {} more", self.more)?;
        }
        Ok(())
    }
}

/// Reads a dataset file, picking the format from its extension; see [`parse`].
pub fn load_path(path: &Path) -> Result<Vec<Instance>, Error> {
    let format = Format::from_path(path)?;
    let bytes = std::fs::read(path).map_err(|source| Error::Read { path: path.to_path_buf(), source })?;
    parse(format, &bytes)
}

/// Parses a dataset and checks it as [`validate`] does, so that every problem, including a
/// duplicate id, is reported with its place in the file.
pub fn parse(format: Format, bytes: &[u8]) -> Result<Vec<Instance>, Error> {
    let mut rows = Rows::default();
    match format {
        Format::Json => json::read_json(bytes, &mut rows)?,
        Format::Jsonl => json::read_lines(bytes, &mut rows),
        Format::Parquet => parquet::read(bytes, &mut rows)?,
    }
    rows.finish()
}

/// Checks instances that did not come from a file (e.g. rows uploaded to the API); locations
/// are their 0-based positions in `instances`.
pub fn validate(instances: &[Instance]) -> Result<(), Error> {
    let located =
        instances.iter().enumerate().map(|(index, instance)| (Location::Row { index, line: None }, instance));
    let mut problems = Problems::default();
    validate::check(located, &mut problems);
    if instances.is_empty() {
        Err(Error::Empty)
    } else if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::BadRows(problems))
    }
}

/// Gathers the converted rows of a file and the problems met on the way. The readers feed it
/// one row at a time, so a file is never held both as JSON values and as instances.
#[derive(Default)]
struct Rows {
    instances: Vec<(Location, Instance)>,
    problems: Problems,
}

impl Rows {
    fn push(&mut self, location: Location, value: Value) {
        match row::to_instance(value) {
            Ok(instance) => self.instances.push((location, instance)),
            Err(messages) => {
                for message in messages {
                    self.problems.push(location, message);
                }
            }
        }
    }

    fn problem(&mut self, location: Location, message: String) {
        self.problems.push(location, message);
    }

    fn finish(mut self) -> Result<Vec<Instance>, Error> {
        validate::check(self.instances.iter().map(|(l, i)| (*l, i)), &mut self.problems);
        if !self.problems.is_empty() {
            return Err(Error::BadRows(self.problems));
        }
        if self.instances.is_empty() {
            return Err(Error::Empty);
        }
        Ok(self.instances.into_iter().map(|(_, instance)| instance).collect())
    }
}

/// The JSON type of a value, for messages ("got a number").
fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// `text` cut to a length that fits in a message: ids and values can be arbitrarily long.
fn shorten(text: &str) -> String {
    const MAX_CHARS: usize = 80;
    match text.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}
