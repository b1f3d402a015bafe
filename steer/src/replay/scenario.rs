//! Scenario files: loading, validating, and choosing the scenario a conversation belongs to.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

/// One scripted conversation: what the replay agent answers, turn after turn.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// The file stem; requested as the model `replay/<name>`.
    pub name: String,
    pub description: String,
    /// Chosen for conversations whose user messages contain this text.
    pub matches: Option<String>,
    /// At least one; past the last one, the last one is repeated.
    pub turns: Vec<Turn>,
}

/// One answer, and the faults served before it.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    pub content: String,
    /// Answer this HTTP status (429 or 5xx) the first `fail_times` times a request is seen.
    pub fail_with: Option<u16>,
    /// How many times the fault (`fail_with` or `malformed`) is served before the answer.
    pub fail_times: u32,
    /// `Retry-After` header sent with a `fail_with` fault.
    pub retry_after_s: Option<u64>,
    /// The fault is a truncated JSON body with HTTP 200.
    pub malformed: bool,
    /// Waited before every answer of this turn, faults included.
    pub delay_ms: u64,
    /// Whether the answer carries `usage`.
    pub usage: bool,
}

impl Default for Turn {
    fn default() -> Self {
        Turn {
            content: String::new(),
            fail_with: None,
            fail_times: 0,
            retry_after_s: None,
            malformed: false,
            delay_ms: 0,
            usage: true,
        }
    }
}

impl Turn {
    /// A plain answer: no fault, no delay, with usage.
    pub fn answer(content: impl Into<String>) -> Turn {
        Turn { content: content.into(), ..Turn::default() }
    }
}

/// What is wrong with a scenario, and where: the file and line when it came from a file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ScenarioError {
    /// None for scenarios built in code (the message then names the scenario).
    pub file: Option<PathBuf>,
    /// 1-based.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{}:{line}: {}", file.display(), self.message),
            (Some(file), None) => write!(f, "{}: {}", file.display(), self.message),
            (None, _) => f.write_str(&self.message),
        }
    }
}

/// A validated set of scenarios, sorted by name; cheap to clone.
#[derive(Debug, Clone)]
pub struct Scenarios {
    list: Arc<Vec<Scenario>>,
}

/// Why no scenario was chosen for a request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum NoScenario {
    /// `replay/<name>` with an unknown name.
    UnknownName(String),
    /// No scenario's `matches` occurs in a user message.
    NoMatch,
}

impl Scenarios {
    /// Loads every `*.toml` file of `dir` (not its subdirectories), one scenario each.
    pub fn load_dir(dir: &Path) -> Result<Scenarios, ScenarioError> {
        let dir_error =
            |message: String| ScenarioError { file: Some(dir.to_path_buf()), line: None, message };
        let entries =
            std::fs::read_dir(dir).map_err(|e| dir_error(format!("cannot read the directory: {e}")))?;
        let mut paths = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| dir_error(format!("cannot read the directory: {e}")))?.path();
            if path.extension().is_some_and(|ext| ext == "toml") && path.is_file() {
                paths.push(path);
            }
        }
        if paths.is_empty() {
            return Err(dir_error("no scenario files (*.toml) in this directory".into()));
        }
        paths.sort();
        let mut loaded = Vec::new();
        for path in paths {
            let text = std::fs::read_to_string(&path).map_err(|e| ScenarioError {
                file: Some(path.clone()),
                line: None,
                message: format!("cannot read the file: {e}"),
            })?;
            let parsed = parse_file(&path, &text)?;
            loaded.push((path, parsed));
        }
        // Two files cannot share a stem, but they can share a `matches` text.
        let mut seen: HashMap<&str, &Path> = HashMap::new();
        for (path, parsed) in &loaded {
            if let Some(matches) = &parsed.scenario.matches {
                if let Some(first) = seen.insert(matches, path) {
                    return Err(ScenarioError {
                        file: Some(path.clone()),
                        line: parsed.matches_line,
                        message: format!(
                            "matches: {matches:?} is already the `matches` of {}; a conversation could \
                             not tell the two apart",
                            first.display()
                        ),
                    });
                }
            }
        }
        Scenarios::from_scenarios(loaded.into_iter().map(|(_, parsed)| parsed.scenario).collect())
    }

    /// Validates scenarios built in code (the same rules as files).
    pub fn from_scenarios(mut list: Vec<Scenario>) -> Result<Scenarios, ScenarioError> {
        let error = |message: String| ScenarioError { file: None, line: None, message };
        if list.is_empty() {
            return Err(error("no scenarios".into()));
        }
        for scenario in &list {
            let name = &scenario.name;
            check_name(name).map_err(|m| error(format!("scenario {name:?}: {m}")))?;
            check_scenario(scenario).map_err(|p| error(format!("scenario `{name}`: {}", p.message)))?;
        }
        list.sort_by(|a, b| a.name.cmp(&b.name));
        for pair in list.windows(2) {
            if pair[0].name == pair[1].name {
                return Err(error(format!("two scenarios are named `{}`", pair[0].name)));
            }
        }
        let mut seen: HashMap<&str, &str> = HashMap::new();
        for scenario in &list {
            if let Some(matches) = &scenario.matches {
                if let Some(first) = seen.insert(matches, &scenario.name) {
                    return Err(error(format!(
                        "scenarios `{first}` and `{}` have the same `matches`: {matches:?}",
                        scenario.name
                    )));
                }
            }
        }
        Ok(Scenarios { list: Arc::new(list) })
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// In name order.
    pub fn iter(&self) -> impl Iterator<Item = &Scenario> {
        self.list.iter()
    }

    pub fn get(&self, name: &str) -> Option<&Scenario> {
        self.list.iter().find(|s| s.name == name)
    }

    /// The scenario of a request: `replay/<name>` names it; any other model leaves the choice
    /// to the user messages, where the longest `matches` text found wins (ties: first by name).
    pub(crate) fn choose(&self, model: &str, user_texts: &[&str]) -> Result<(usize, &Scenario), NoScenario> {
        if let Some(name) = model.strip_prefix("replay/") {
            return self
                .list
                .iter()
                .enumerate()
                .find(|(_, s)| s.name == name)
                .ok_or_else(|| NoScenario::UnknownName(name.to_string()));
        }
        let mut best: Option<(usize, &Scenario, usize)> = None;
        for (index, scenario) in self.list.iter().enumerate() {
            let Some(matches) = &scenario.matches else { continue };
            if !user_texts.iter().any(|text| text.contains(matches.as_str())) {
                continue;
            }
            let len = matches.chars().count();
            if best.is_none_or(|(_, _, best_len)| len > best_len) {
                best = Some((index, scenario, len));
            }
        }
        best.map(|(index, scenario, _)| (index, scenario)).ok_or(NoScenario::NoMatch)
    }
}

/// A scenario read from a file, with what cross-file checks need to point at.
struct Parsed {
    scenario: Scenario,
    matches_line: Option<usize>,
}

/// The file as written. Every key is listed here; any other key is an error.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    description: Spanned<String>,
    matches: Option<Spanned<String>>,
    #[serde(default)]
    turns: Vec<Spanned<RawTurn>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTurn {
    content: String,
    fail_with: Option<Spanned<u16>>,
    fail_times: Option<Spanned<u32>>,
    retry_after_s: Option<Spanned<u64>>,
    malformed: Option<Spanned<bool>>,
    delay_ms: Option<Spanned<u64>>,
    usage: Option<bool>,
}

/// The key of a turn a problem is about, so a file's error can point at its line.
#[derive(Debug, Clone, Copy)]
enum Key {
    Description,
    Matches,
    /// The scenario's turns as a whole, or a turn as a whole.
    Turn,
    FailWith,
    FailTimes,
    RetryAfter,
    Malformed,
    DelayMs,
}

#[derive(Debug)]
struct Problem {
    key: Key,
    message: String,
}

fn problem(key: Key, message: impl Into<String>) -> Problem {
    Problem { key, message: message.into() }
}

/// Longest wait a turn may script: more than any client should tolerate anyway.
const MAX_DELAY_MS: u64 = 600_000;

fn parse_file(path: &Path, text: &str) -> Result<Parsed, ScenarioError> {
    let at = |span: Option<Range<usize>>, message: String| ScenarioError {
        file: Some(path.to_path_buf()),
        line: span.map(|s| line_of(text, s.start)),
        message,
    };
    let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
    check_name(&name)
        .map_err(|m| at(None, format!("the file name gives the scenario name {name:?}: {m}")))?;
    let raw: RawScenario =
        toml::from_str(text).map_err(|e| at(e.span(), e.message().trim().replace('\n', "; ")))?;
    let matches_line = raw.matches.as_ref().map(|m| line_of(text, m.span().start));
    let mut turns = Vec::with_capacity(raw.turns.len());
    for raw_turn in &raw.turns {
        let turn = to_turn(raw_turn.get_ref());
        check_turn(&turn).map_err(|p| {
            let t = raw_turn.get_ref();
            let span = match p.key {
                Key::Description | Key::Matches | Key::Turn => None,
                Key::FailWith => t.fail_with.as_ref().map(Spanned::span),
                Key::FailTimes => t.fail_times.as_ref().map(Spanned::span),
                Key::RetryAfter => t.retry_after_s.as_ref().map(Spanned::span),
                Key::Malformed => t.malformed.as_ref().map(Spanned::span),
                Key::DelayMs => t.delay_ms.as_ref().map(Spanned::span),
            };
            at(span.or(Some(raw_turn.span())), format!("turns[{}]: {}", turns.len(), p.message))
        })?;
        turns.push(turn);
    }
    let scenario = Scenario {
        name,
        description: raw.description.get_ref().clone(),
        matches: raw.matches.as_ref().map(|m| m.get_ref().clone()),
        turns,
    };
    check_scenario(&scenario).map_err(|p| {
        let span = match p.key {
            Key::Description => Some(raw.description.span()),
            Key::Matches => raw.matches.as_ref().map(Spanned::span),
            // Turns were checked above, with their own spans; what is left has no place.
            _ => None,
        };
        at(span, p.message)
    })?;
    Ok(Parsed { scenario, matches_line })
}

fn to_turn(raw: &RawTurn) -> Turn {
    let malformed = raw.malformed.as_ref().is_some_and(|m| *m.get_ref());
    let fail_with = raw.fail_with.as_ref().map(|f| *f.get_ref());
    let faulty = malformed || fail_with.is_some();
    Turn {
        content: raw.content.clone(),
        fail_with,
        fail_times: raw.fail_times.as_ref().map(|f| *f.get_ref()).unwrap_or(if faulty { 1 } else { 0 }),
        retry_after_s: raw.retry_after_s.as_ref().map(|r| *r.get_ref()),
        malformed,
        delay_ms: raw.delay_ms.as_ref().map(|d| *d.get_ref()).unwrap_or(0),
        usage: raw.usage.unwrap_or(true),
    }
}

/// What is wrong with a scenario's name.
#[derive(Debug, thiserror::Error)]
enum NameError {
    #[error("a scenario name must not be empty")]
    Empty,
    #[error("a scenario name may hold only letters, digits, `.`, `_` and `-`")]
    BadCharacter,
}

/// Letters, digits, `.`, `_` and `-`: the name goes into a model id (`replay/<name>`).
fn check_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        return Err(NameError::BadCharacter);
    }
    Ok(())
}

fn check_scenario(scenario: &Scenario) -> Result<(), Problem> {
    if scenario.description.trim().is_empty() {
        return Err(problem(Key::Description, "description: must not be empty"));
    }
    if scenario.matches.as_deref().is_some_and(|m| m.trim().is_empty()) {
        return Err(problem(Key::Matches, "matches: must not be empty (leave the key out instead)"));
    }
    if scenario.turns.is_empty() {
        return Err(problem(Key::Turn, "no turns: a scenario needs at least one [[turns]] table"));
    }
    for (i, turn) in scenario.turns.iter().enumerate() {
        check_turn(turn)
            .map_err(|p| Problem { key: p.key, message: format!("turns[{i}]: {}", p.message) })?;
    }
    Ok(())
}

fn check_turn(turn: &Turn) -> Result<(), Problem> {
    if let Some(status) = turn.fail_with {
        if status != 429 && !(500..=599).contains(&status) {
            return Err(problem(
                Key::FailWith,
                format!("fail_with = {status}: a scripted fault is 429 or a 5xx status"),
            ));
        }
        if turn.malformed {
            return Err(problem(
                Key::Malformed,
                "fail_with and malformed together: a turn scripts one kind of fault",
            ));
        }
    }
    let faulty = turn.fail_with.is_some() || turn.malformed;
    if faulty && turn.fail_times == 0 {
        return Err(problem(
            Key::FailTimes,
            "fail_times = 0 scripts no fault: leave out fail_with/malformed",
        ));
    }
    if !faulty && turn.fail_times > 0 {
        return Err(problem(
            Key::FailTimes,
            "fail_times without fail_with or malformed: nothing to fail with",
        ));
    }
    if turn.retry_after_s.is_some() && turn.fail_with.is_none() {
        return Err(problem(Key::RetryAfter, "retry_after_s is sent with a fail_with fault only"));
    }
    if turn.delay_ms > MAX_DELAY_MS {
        return Err(problem(Key::DelayMs, format!("delay_ms = {}: at most {MAX_DELAY_MS}", turn.delay_ms)));
    }
    Ok(())
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
}
