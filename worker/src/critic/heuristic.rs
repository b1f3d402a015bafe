//! The `heuristic` critic: cheap rules over what the steps did, no model, no cost. Each rule
//! speaks once per thing it notices (the same repeated command is not flagged at every step).

use std::collections::HashSet;

use protocol::HeuristicRules;

use crate::agent::hook::{Moment, StepFacts};

pub struct Heuristic {
    rules: HeuristicRules,
    /// What has been flagged already (rule and subject).
    said: HashSet<String>,
}

impl Heuristic {
    pub fn new(rules: HeuristicRules) -> Self {
        Heuristic { rules, said: HashSet::new() }
    }

    /// The feedback of the rules that fire now (None: nothing to say).
    pub fn review(&mut self, moment: Moment, facts: &[StepFacts]) -> Option<String> {
        let mut notes = Vec::new();
        if moment == Moment::BeforeSubmit {
            if self.rules.submit_without_tests
                && !facts.iter().any(|f| f.ran_tests)
                && self.once("submit", "")
            {
                notes.push(
                    "You are submitting without having run any test. Run the relevant tests (or a script that \
                     reproduces the issue) to check your change before you submit."
                        .to_string(),
                );
            }
            return join(notes);
        }
        let commands: Vec<&str> = facts.iter().rev().map_while(|f| f.command.as_deref()).collect();
        let n = self.rules.repeated_command as usize;
        if n > 1 && commands.len() >= n && commands[..n].iter().all(|c| *c == commands[0]) {
            let command = commands[0].to_string();
            if self.once("command", &command) {
                notes.push(format!(
                    "You have run the same command {n} times in a row (`{}`) without making progress. Step back, \
                     reconsider what you know, and try something different.",
                    first_line(&command)
                ));
            }
        }
        let errors: Vec<&str> = facts
            .iter()
            .rev()
            .filter(|f| f.command.is_some() && (f.timed_out || f.exit_code != Some(0)))
            .map(|f| last_line(&f.output))
            .take(self.rules.repeated_error as usize)
            .collect();
        let m = self.rules.repeated_error as usize;
        let newest_failed = facts.last().is_some_and(|f| f.command.is_some() && f.exit_code != Some(0));
        if m > 1
            && newest_failed
            && errors.len() == m
            && !errors[0].is_empty()
            && errors.iter().all(|e| *e == errors[0])
        {
            let error = errors[0].to_string();
            if self.once("error", &error) {
                notes.push(format!(
                    "The same error has come up {m} times (`{error}`). Read it carefully and address its cause \
                     instead of retrying."
                ));
            }
        }
        if self.rules.test_file_edited {
            let tests: Vec<String> = facts
                .last()
                .map(|f| f.modified_files.iter().filter(|p| is_test_file(p)).cloned().collect())
                .unwrap_or_default();
            for path in tests {
                if self.once("test-file", &path) {
                    notes.push(format!(
                        "You changed the test file `{path}`. The task is to change the code, not the tests: \
                         restore it (`git checkout -- {path}`) unless the issue asks for it."
                    ));
                }
            }
        }
        join(notes)
    }

    fn once(&mut self, rule: &str, subject: &str) -> bool {
        self.said.insert(format!("{rule}\n{subject}"))
    }
}

fn join(notes: Vec<String>) -> Option<String> {
    (!notes.is_empty()).then(|| notes.join("\n"))
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

fn last_line(s: &str) -> &str {
    s.lines().rev().map(str::trim).find(|l| !l.is_empty()).unwrap_or("")
}

/// A path that a test suite owns (as SWE-bench's test patches name them).
pub fn is_test_file(path: &str) -> bool {
    let file = path.rsplit('/').next().unwrap_or(path);
    path.split('/').any(|part| matches!(part, "tests" | "test" | "testing"))
        || file.starts_with("test_")
        || file.ends_with("_test.py")
        || file == "conftest.py"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ran(i: u32, command: &str, exit: i64, output: &str) -> StepFacts {
        StepFacts {
            step: i,
            command: Some(command.into()),
            exit_code: Some(exit),
            output: output.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_repeated_command_is_flagged_once() {
        let mut h = Heuristic::new(HeuristicRules::default());
        let mut facts = vec![ran(0, "ls", 0, ""), ran(1, "ls", 0, "")];
        assert_eq!(h.review(Moment::AfterStep, &facts), None);
        facts.push(ran(2, "ls", 0, ""));
        assert!(h.review(Moment::AfterStep, &facts).unwrap().contains("same command 3 times"));
        facts.push(ran(3, "ls", 0, ""));
        assert_eq!(h.review(Moment::AfterStep, &facts), None, "said once");
    }

    #[test]
    fn a_repeated_error_is_flagged() {
        let mut h = Heuristic::new(HeuristicRules::default());
        let err = "Traceback...\nImportError: no module named calc";
        let facts = vec![
            ran(0, "python a.py", 1, err),
            ran(1, "cat a.py", 0, "x"),
            ran(2, "python a.py", 1, err),
            ran(3, "python b.py", 1, err),
        ];
        let said = h.review(Moment::AfterStep, &facts).unwrap();
        assert!(said.contains("ImportError: no module named calc"), "{said}");
    }

    #[test]
    fn editing_a_test_file_and_submitting_untested_work_are_flagged() {
        let mut h = Heuristic::new(HeuristicRules::default());
        let edit = StepFacts {
            modified_files: vec!["tests/test_eval.py".into(), "minicalc/eval.py".into()],
            ..ran(0, "sed -i s/a/b/ tests/test_eval.py", 0, "")
        };
        let said = h.review(Moment::AfterStep, std::slice::from_ref(&edit)).unwrap();
        assert!(said.contains("tests/test_eval.py") && !said.contains("minicalc/eval.py"), "{said}");
        assert!(h
            .review(Moment::BeforeSubmit, std::slice::from_ref(&edit))
            .unwrap()
            .contains("without having run any test"));
        let mut h = Heuristic::new(HeuristicRules::default());
        let tested = StepFacts { ran_tests: true, ..ran(1, "python -m pytest", 0, "") };
        assert_eq!(h.review(Moment::BeforeSubmit, &[tested]), None);
        assert!(is_test_file("pkg/conftest.py") && !is_test_file("minicalc/testable.py"));
    }
}
