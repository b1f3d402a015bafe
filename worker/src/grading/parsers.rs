//! Test-log parsers: line-for-line ports of `swebench.harness.log_parsers.python`.
//!
//! The expected test ids in the dataset were produced by these very parsers, so their quirks
//! are part of the contract and are kept on purpose: the first-whitespace split that cuts ids
//! containing spaces, `XPASS` not being a status, the raw status word stored as found (a line
//! `ERROR: file not found` yields the key `file` with the status `ERROR:`), the django
//! multi-line special cases, sympy's failure-header regex. Where v4.1.0 and v5.0.2 differ the
//! [`Profile`] picks the behaviour. A line that makes the Python parser raise (an `IndexError`)
//! becomes [`Error::ParserCrash`]: the harness then writes no report and counts the instance
//! as an error.
//!
//! Python text semantics are reproduced where they matter: `str.split()` and `str.strip()`
//! split on Python's whitespace set (Rust's plus U+001C..U+001F), `\s` likewise, `\d` is
//! Unicode `Nd` in both engines, and `.` stops at `\n` only in both.

use std::sync::LazyLock;

use regex::Regex;

use super::{Error, Profile, StatusMap, TestStatus};

/// The parser implementations of the harness; every registry name is an alias of one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParserKind {
    Pytest,
    PytestOptions,
    PytestV2,
    Django,
    Seaborn,
    Sympy,
    Matplotlib,
}

impl ParserKind {
    /// The short name used by [`super::parser_name_for`] (the Python function minus `parse_log_`).
    pub fn name(self) -> &'static str {
        match self {
            ParserKind::Pytest => "pytest",
            ParserKind::PytestOptions => "pytest_options",
            ParserKind::PytestV2 => "pytest_v2",
            ParserKind::Django => "django",
            ParserKind::Seaborn => "seaborn",
            ParserKind::Sympy => "sympy",
            ParserKind::Matplotlib => "matplotlib",
        }
    }

    /// Resolves a registry name, with or without the `parse_log_` prefix, including the
    /// harness's per-repo aliases (`parse_log_flask` is `parse_log_pytest`, ...).
    pub fn from_name(name: &str) -> Option<ParserKind> {
        let short = name.trim().strip_prefix("parse_log_").unwrap_or(name.trim());
        Some(match short {
            "pytest" | "astroid" | "flask" | "marshmallow" | "pvlib" | "pyvista" | "sqlfluff" | "xarray" => {
                ParserKind::Pytest
            }
            "pytest_options" | "pydicom" | "requests" | "pylint" => ParserKind::PytestOptions,
            "pytest_v2" | "astropy" | "scikit" | "sphinx" => ParserKind::PytestV2,
            "django" => ParserKind::Django,
            "seaborn" => ParserKind::Seaborn,
            "sympy" => ParserKind::Sympy,
            "matplotlib" => ParserKind::Matplotlib,
            _ => return None,
        })
    }
}

/// Parses `log` (normally the text between the markers) the way the harness's parser would.
pub fn parse(kind: ParserKind, profile: Profile, log: &str) -> Result<StatusMap, Error> {
    match kind {
        ParserKind::Pytest => Ok(pytest(profile, log, false)),
        ParserKind::Matplotlib => Ok(pytest(profile, log, true)),
        ParserKind::PytestOptions => Ok(pytest_options(profile, log)),
        ParserKind::PytestV2 => Ok(pytest_v2(profile, log)),
        ParserKind::Django => django(log),
        ParserKind::Seaborn => seaborn(profile, log),
        ParserKind::Sympy => Ok(sympy(log)),
    }
}

// ------------------------------------------------------------------ Python text helpers

/// Python's `str.isspace()`: Unicode White_Space plus the four ASCII separators U+001C..U+001F.
pub(crate) fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.split()` with no argument.
pub(crate) fn py_split(s: &str) -> Vec<&str> {
    s.split(is_py_space).filter(|t| !t.is_empty()).collect()
}

/// Python's `str.strip()` with no argument.
pub(crate) fn py_strip(s: &str) -> &str {
    s.trim_matches(is_py_space)
}

const STATUS_WORDS: [&str; 5] = ["FAILED", "PASSED", "SKIPPED", "ERROR", "XFAIL"];

/// `any(line.startswith(x.value) for x in TestStatus)`.
fn starts_with_status(line: &str) -> bool {
    STATUS_WORDS.iter().any(|w| line.starts_with(w))
}

/// `any(line.endswith(x.value) for x in TestStatus)`.
fn ends_with_status(line: &str) -> bool {
    STATUS_WORDS.iter().any(|w| line.ends_with(w))
}

static SKIP_SUMMARY_COUNT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\[\d+\]$").expect("valid regex"));

/// v5's `_is_skip_summary`: `SKIPPED [N] path:line: reason` names no test.
fn is_skip_summary(status: &str, name: &str) -> bool {
    status == "SKIPPED" && SKIP_SUMMARY_COUNT.is_match(name)
}

// ------------------------------------------------------------------ pytest family

/// `parse_log_pytest`, and `parse_log_matplotlib` when `mouse_buttons` (which first rewrites
/// `MouseButton.LEFT` to `1` and `MouseButton.RIGHT` to `3`).
fn pytest(profile: Profile, log: &str, mouse_buttons: bool) -> StatusMap {
    pytest_lines(profile, log, mouse_buttons, str::to_string)
}

/// `parse_log_pytest_options`: as pytest, but a parameter that is an absolute path
/// (`/...`, not `//...`, no `*`) is cut down to `/` plus its last component.
fn pytest_options(profile: Profile, log: &str) -> StatusMap {
    pytest_lines(profile, log, false, normalize_option)
}

/// The line loop the pytest-family parsers share: `STATUS test_id ...` lines (FAILED lines with
/// ` - ` removed), v5 skipping SKIPPED summaries, ids passed through `test_id`.
fn pytest_lines(profile: Profile, log: &str, mouse_buttons: bool, test_id: fn(&str) -> String) -> StatusMap {
    let mut map = StatusMap::new();
    for raw in log.split('\n') {
        let owned;
        let mut line = raw;
        if mouse_buttons {
            owned = raw.replace("MouseButton.LEFT", "1").replace("MouseButton.RIGHT", "3");
            line = &owned;
        }
        if !starts_with_status(line) {
            continue;
        }
        let replaced;
        if line.starts_with("FAILED") {
            replaced = line.replace(" - ", " ");
            line = &replaced;
        }
        let tokens = py_split(line);
        if tokens.len() <= 1 {
            continue;
        }
        if profile == Profile::V5 && is_skip_summary(tokens[0], tokens[1]) {
            continue;
        }
        map.insert(test_id(tokens[1]), TestStatus::from_word(tokens[0]));
    }
    map
}

/// `re.compile(r"(.*?)\[(.*)\]").search(name)`: `main` is what precedes the first `[`,
/// `option` what lies between it and the last `]` (anything after that `]` is dropped).
fn normalize_option(name: &str) -> String {
    let Some(open) = name.find('[') else { return name.to_string() };
    let Some(close) = name.rfind(']').filter(|&c| c > open) else { return name.to_string() };
    let main = &name[..open];
    let mut option = &name[open + 1..close];
    let cut;
    if option.starts_with('/') && !option.starts_with("//") && !option.contains('*') {
        cut = format!("/{}", option.rsplit('/').next().unwrap_or(""));
        option = &cut;
    }
    format!("{main}[{option}]")
}

static ANSI_CODE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\[\d+m").expect("valid regex"));

/// `parse_log_pytest_v2`: strips `[NNm` colour codes and control characters 1..31, then reads
/// `STATUS id` lines, or (older verbose pytest) lines ending with a status word.
fn pytest_v2(profile: Profile, log: &str) -> StatusMap {
    let mut map = StatusMap::new();
    for raw in log.split('\n') {
        let stripped = ANSI_CODE.replace_all(raw, "");
        let mut line: String = stripped.chars().filter(|&c| !('\u{1}'..='\u{1f}').contains(&c)).collect();
        if starts_with_status(&line) {
            if line.starts_with("FAILED") {
                line = match profile {
                    // v5: drop the trailing " - <message>" so it cannot enter the id
                    Profile::V5 => line.split(" - ").next().unwrap_or("").to_string(),
                    Profile::V4 => line.replace(" - ", " "),
                };
            }
            let tokens = py_split(&line);
            if tokens.len() < 2 {
                continue;
            }
            match profile {
                Profile::V5 => {
                    if !is_skip_summary(tokens[0], tokens[1]) {
                        map.insert(tokens[1..].join(" "), TestStatus::from_word(tokens[0]));
                    }
                }
                Profile::V4 => map.insert(tokens[1].to_string(), TestStatus::from_word(tokens[0])),
            }
        } else if ends_with_status(&line) {
            let tokens = py_split(&line);
            if tokens.len() < 2 {
                continue;
            }
            match profile {
                Profile::V5 => {
                    let last = tokens.len() - 1;
                    map.insert(tokens[..last].join(" "), TestStatus::from_word(tokens[last]))
                }
                Profile::V4 => map.insert(tokens[0].to_string(), TestStatus::from_word(tokens[1])),
            }
        }
    }
    map
}

/// `parse_log_seaborn`. In v4 a status line with a single token raises `IndexError`.
fn seaborn(profile: Profile, log: &str) -> Result<StatusMap, Error> {
    let mut map = StatusMap::new();
    for line in log.split('\n') {
        let parts = py_split(line);
        if parts.len() < 2 {
            let v4_raises =
                line.starts_with("FAILED") || line.contains(" PASSED ") || line.starts_with("PASSED");
            match profile {
                Profile::V5 => continue,
                Profile::V4 if v4_raises => return Err(crash("seaborn", line)),
                Profile::V4 => continue,
            }
        }
        if line.starts_with("FAILED") {
            map.insert(parts[1].to_string(), TestStatus::Failed);
        } else if line.contains(" PASSED ") {
            if parts[1] == "PASSED" {
                map.insert(parts[0].to_string(), TestStatus::Passed);
            }
        } else if line.starts_with("PASSED") {
            map.insert(parts[1].to_string(), TestStatus::Passed);
        }
    }
    Ok(map)
}

// ------------------------------------------------------------------ sympy

static SYMPY_FAILURE_HEADER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(_*) (.*)\.py:(.*) (_*)").expect("valid regex"));

/// `parse_log_sympy`: failure headers `____ path.py:test_name ____` mark `path.py:test_name`
/// FAILED; then each stripped line starting with `test_` is read by its ending
/// (` E` ERROR, ` F` FAILED, ` ok` PASSED), keyed by its first token.
fn sympy(log: &str) -> StatusMap {
    let mut map = StatusMap::new();
    for caps in SYMPY_FAILURE_HEADER.captures_iter(log) {
        let file = caps.get(2).map_or("", |m| m.as_str());
        let name = caps.get(3).map_or("", |m| m.as_str());
        map.insert(format!("{file}.py:{name}"), TestStatus::Failed);
    }
    for raw in log.split('\n') {
        let line = py_strip(raw);
        if !line.starts_with("test_") {
            continue;
        }
        // `line` starts with "test_", so it has a first token
        let first = py_split(line).first().copied().unwrap_or("").to_string();
        if line.ends_with(" E") {
            map.insert(first.clone(), TestStatus::Error);
        }
        if line.ends_with(" F") {
            map.insert(first.clone(), TestStatus::Failed);
        }
        if line.ends_with(" ok") {
            map.insert(first, TestStatus::Passed);
        }
    }
    map
}

// ------------------------------------------------------------------ django

/// Python's `\s` (in a `str` pattern) is `str.isspace()`, which Rust's `\s` lacks U+001C..U+001F of;
/// hence `[\s\x1C-\x1F]` wherever the harness wrote `\s`.
static DJANGO_MULTILINE: LazyLock<[Regex; 3]> = LazyLock::new(|| {
    [
        r"(?m)^(.*?)[\s\x1C-\x1F]\.\.\.[\s\x1C-\x1F]Testing against Django installed in ((?s:.*?)) silenced\)\.\nok$",
        r"(?m)^(.*?)[\s\x1C-\x1F]\.\.\.[\s\x1C-\x1F]Internal Server Error: /(.*)/\nok$",
        r"(?m)^(.*?)[\s\x1C-\x1F]\.\.\.[\s\x1C-\x1F]System check identified no issues \(0 silenced\)\nok$",
    ]
    .map(|p| Regex::new(p).expect("valid regex"))
});

/// `parse_log_django`, the same in v4 and v5.
fn django(log: &str) -> Result<StatusMap, Error> {
    const PASS_SUFFIXES: [&str; 3] = [" ... ok", " ... OK", " ...  OK"];
    let mut map = StatusMap::new();
    let mut prev_test: Option<String> = None;
    for raw in log.split('\n') {
        let mut line: String = py_strip(raw).to_string();

        // the test's output spans several lines
        if line.contains("--version is equivalent to version") {
            map.insert("--version is equivalent to version".to_string(), TestStatus::Passed);
        }

        // remembered in case the result comes on a later line
        if line.contains(" ... ") {
            prev_test = line.split(" ... ").next().map(str::to_string);
        }

        for suffix in PASS_SUFFIXES {
            if line.ends_with(suffix) {
                // the harness's exclusive fix for django__django-7188
                if py_strip(&line).starts_with("Applying sites.0002_alter_domain_unique...test_no_migrations")
                {
                    line =
                        py_strip(line.split_once("...").map_or(line.as_str(), |(_, rest)| rest)).to_string();
                }
                let test = line.rsplit_once(suffix).map_or(line.as_str(), |(head, _)| head).to_string();
                map.insert(test, TestStatus::Passed);
                break;
            }
        }
        if line.contains(" ... skipped") {
            let test = line.split(" ... skipped").next().unwrap_or("").to_string();
            map.insert(test, TestStatus::Skipped);
        }
        if line.ends_with(" ... FAIL") {
            let test = line.split(" ... FAIL").next().unwrap_or("").to_string();
            map.insert(test, TestStatus::Failed);
        }
        if line.starts_with("FAIL:") {
            let test = py_split(&line).get(1).map(|t| py_strip(t).to_string());
            map.insert(test.ok_or_else(|| crash("django", &line))?, TestStatus::Failed);
        }
        if line.ends_with(" ... ERROR") {
            let test = line.split(" ... ERROR").next().unwrap_or("").to_string();
            map.insert(test, TestStatus::Error);
        }
        if line.starts_with("ERROR:") {
            let test = py_split(&line).get(1).map(|t| py_strip(t).to_string());
            map.insert(test.ok_or_else(|| crash("django", &line))?, TestStatus::Error);
        }

        // the test passed, but other output came between its "..." and its "ok"
        if line.trim_start_matches(is_py_space).starts_with("ok") {
            if let Some(test) = &prev_test {
                map.insert(test.clone(), TestStatus::Passed);
            }
        }
    }

    // a long multi-line print from django's logger can interrupt a test's result line
    for pattern in DJANGO_MULTILINE.iter() {
        for caps in pattern.captures_iter(log) {
            let name = caps.get(1).map_or("", |m| m.as_str());
            map.insert(name.to_string(), TestStatus::Passed);
        }
    }
    Ok(map)
}

fn crash(parser: &'static str, line: &str) -> Error {
    let mut shown: String = line.chars().take(200).collect();
    if shown.len() < line.len() {
        shown.push('…');
    }
    Error::ParserCrash { parser, line: shown }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(map: &StatusMap) -> Vec<(String, String)> {
        map.iter().map(|(k, v)| (k.to_string(), v.as_str().to_string())).collect()
    }

    fn p(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn pytest_reads_status_then_id_and_keeps_raw_words() {
        let log = "PASSED a.py::t1\nFAILED a.py::t2 - assert 1 - 2\nERROR: not found: x\nSKIPPED [1] a.py:3: why\nXPASS a.py::t3\n";
        let v5 = parse(ParserKind::Pytest, Profile::V5, log).unwrap();
        assert_eq!(pairs(&v5), p(&[("a.py::t1", "PASSED"), ("a.py::t2", "FAILED"), ("not", "ERROR:")]));
        let v4 = parse(ParserKind::Pytest, Profile::V4, log).unwrap();
        assert_eq!(v4.get("[1]"), Some(&TestStatus::Skipped));
    }

    #[test]
    fn later_lines_overwrite_but_keep_first_position() {
        let log = "FAILED a::x\nPASSED a::y\nPASSED a::x\n";
        let map = parse(ParserKind::Pytest, Profile::V5, log).unwrap();
        assert_eq!(pairs(&map), p(&[("a::x", "PASSED"), ("a::y", "PASSED")]));
    }

    #[test]
    fn pytest_options_shortens_absolute_path_parameters() {
        let log = "PASSED t.py::test_x[/tmp/a/b/c.txt]\nPASSED t.py::test_y[//net/a]\nPASSED t.py::test_z[/a/*]\nPASSED t.py::w[a]tail\n";
        let map = parse(ParserKind::PytestOptions, Profile::V5, log).unwrap();
        assert_eq!(
            map.iter().map(|(k, _)| k.to_string()).collect::<Vec<_>>(),
            vec!["t.py::test_x[/c.txt]", "t.py::test_y[//net/a]", "t.py::test_z[/a/*]", "t.py::w[a]"]
        );
    }

    #[test]
    fn pytest_v2_strips_colour_and_reads_both_layouts() {
        let log = "\u{1b}[32mPASSED\u{1b}[0m t.py::a[x y]\nFAILED t.py::b - boom - bang\nt.py::c PASSED\nt.py::d[p q] XFAIL\n";
        let v5 = parse(ParserKind::PytestV2, Profile::V5, log).unwrap();
        assert_eq!(
            pairs(&v5),
            p(&[
                ("t.py::a[x y]", "PASSED"),
                ("t.py::b", "FAILED"),
                ("t.py::c", "PASSED"),
                ("t.py::d[p q]", "XFAIL")
            ])
        );
        let v4 = parse(ParserKind::PytestV2, Profile::V4, log).unwrap();
        assert_eq!(
            pairs(&v4),
            p(&[("t.py::a[x", "PASSED"), ("t.py::b", "FAILED"), ("t.py::c", "PASSED"), ("t.py::d[p", "q]")])
        );
    }

    #[test]
    fn matplotlib_rewrites_mouse_buttons() {
        let log = "PASSED lib/t.py::test_press[MouseButton.LEFT-MouseButton.RIGHT]\n";
        let map = parse(ParserKind::Matplotlib, Profile::V5, log).unwrap();
        assert_eq!(map.get("lib/t.py::test_press[1-3]"), Some(&TestStatus::Passed));
    }

    #[test]
    fn seaborn_v4_raises_where_v5_skips() {
        let log = "t.py::a PASSED [ 50%]\nFAILED\n";
        assert!(parse(ParserKind::Seaborn, Profile::V5, log).unwrap().get("t.py::a").is_some());
        assert!(matches!(parse(ParserKind::Seaborn, Profile::V4, log), Err(Error::ParserCrash { .. })));
    }

    #[test]
    fn django_handles_results_on_later_lines_and_prefix_lines() {
        let log = "test_a (m.T) ... ok\ntest_b (m.T) ... some output\nmore output\nok\n\
                   test_c (m.T) ... skipped 'no'\ntest_d (m.T) ... FAIL\nERROR: test_e (m.T)\n\
                   test_f (m.T) ... System check identified no issues (0 silenced)\nok\n";
        let map = parse(ParserKind::Django, Profile::V5, log).unwrap();
        assert_eq!(
            pairs(&map),
            p(&[
                ("test_a (m.T)", "PASSED"),
                ("test_b (m.T)", "PASSED"),
                ("test_c (m.T)", "SKIPPED"),
                ("test_d (m.T)", "FAILED"),
                ("test_e", "ERROR"),
                ("test_f (m.T)", "PASSED"),
            ])
        );
        assert!(matches!(
            parse(ParserKind::Django, Profile::V5, "  FAIL:  \n"),
            Err(Error::ParserCrash { .. })
        ));
    }

    #[test]
    fn sympy_reads_headers_and_endings() {
        let log = "test_a ok\ntest_b F\n  test_c E\n________ sympy/x/tests/test_y.py:test_b _________\n";
        let map = parse(ParserKind::Sympy, Profile::V5, log).unwrap();
        assert_eq!(
            pairs(&map),
            p(&[
                ("sympy/x/tests/test_y.py:test_b", "FAILED"),
                ("test_a", "PASSED"),
                ("test_b", "FAILED"),
                ("test_c", "ERROR")
            ])
        );
    }

    #[test]
    fn python_whitespace_includes_file_separators() {
        assert_eq!(py_split("a\u{1c}b c"), vec!["a", "b", "c"]);
        assert_eq!(py_strip("\u{1f} x \u{a0}"), "x");
    }
}
