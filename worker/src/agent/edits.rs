//! The paper's edit observation: after a command that changed tracked files, the observation
//! also shows the edited lines as they now read, with a few lines of context around each edit
//! ("Files edited after running command ..."). Found by comparing `git diff -U<n>` of the
//! working tree before and after the command: hunks that are new or changed are shown.

use std::collections::HashSet;

/// The diff command, for `n` lines of context (tracked files only, no colour, no pager).
pub fn diff_command(workdir: &str, context: u32) -> String {
    format!("git -C '{workdir}' -c core.pager=cat diff -U{context} --no-color --no-ext-diff 2>/dev/null")
}

/// Remembers the hunks of the last diff.
#[derive(Default)]
pub struct EditTracker {
    seen: HashSet<String>,
}

/// One hunk: its file and the lines it covers now, numbered.
struct Hunk {
    file: String,
    key: String,
    new_start: usize,
    lines: Vec<String>,
}

impl EditTracker {
    /// The edited lines new since the last call ("" when nothing changed), given the diff now.
    pub fn update(&mut self, diff: &str) -> String {
        let hunks = parse_hunks(diff);
        let mut out = String::new();
        for hunk in &hunks {
            if self.seen.contains(&hunk.key) {
                continue;
            }
            let end = hunk.new_start + hunk.lines.len().saturating_sub(1);
            out.push_str(&format!("--- {} (lines {}-{})\n", hunk.file, hunk.new_start, end));
            for (i, line) in hunk.lines.iter().enumerate() {
                out.push_str(&format!("{:>6}  {}\n", hunk.new_start + i, line));
            }
        }
        self.seen = hunks.into_iter().map(|h| h.key).collect();
        out.trim_end().to_string()
    }
}

/// The hunks of a unified diff, each with the new side's lines (context and added lines).
fn parse_hunks(diff: &str) -> Vec<Hunk> {
    let mut hunks: Vec<Hunk> = Vec::new();
    let mut file = String::new();
    for line in diff.lines() {
        if let Some(path) = line.strip_prefix("+++ ") {
            file = path.strip_prefix("b/").unwrap_or(path).to_string();
        } else if line.starts_with("--- ") || line.starts_with("diff --git") || line.starts_with("index ") {
            continue;
        } else if let Some(header) = line.strip_prefix("@@ ") {
            // @@ -a,b +c,d @@
            let new_start = header
                .split_whitespace()
                .find_map(|part| part.strip_prefix('+'))
                .and_then(|range| range.split(',').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            hunks.push(Hunk {
                file: file.clone(),
                key: format!("{file}\n{line}\n"),
                new_start,
                lines: Vec::new(),
            });
        } else if let Some(hunk) = hunks.last_mut() {
            hunk.key.push_str(line);
            hunk.key.push('\n');
            if let Some(rest) = line.strip_prefix('+').or_else(|| line.strip_prefix(' ')) {
                hunk.lines.push(rest.to_string());
            }
        }
    }
    hunks
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIFF: &str = "diff --git a/calc.py b/calc.py\nindex 1..2 100644\n--- a/calc.py\n+++ b/calc.py\n@@ -10,3 +10,3 @@ def f():\n a = 1\n-b = 2\n+b = 3\n c = 4\n";

    #[test]
    fn new_hunks_are_shown_once_with_their_new_line_numbers() {
        let mut t = EditTracker::default();
        let shown = t.update(DIFF);
        assert!(shown.starts_with("--- calc.py (lines 10-12)"), "{shown}");
        assert!(shown.contains("    11  b = 3"), "{shown}");
        assert!(!shown.contains("b = 2"), "{shown}");
        assert_eq!(t.update(DIFF), "", "an unchanged diff shows nothing");
        assert_eq!(t.update(""), "");
        assert!(!t.update(DIFF).is_empty(), "an edit made again after a revert shows again");
    }
}
