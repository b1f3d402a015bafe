//! How feedback reaches the agent: one supervisor message holding the current critique in full
//! and the earlier ones folded in, each cut to `fold_chars` (the paper's format, through the
//! condition's template).

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

/// The condition's feedback template does not compile or render.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("feedback template: {0}")]
    Template(#[from] minijinja::Error),
    /// Rendering took more than its fuel (see [`crate::prompts::CHECK_FUEL`]).
    #[error("feedback template: {}", crate::prompts::out_of_fuel())]
    OutOfFuel,
}

#[derive(Serialize)]
struct Previous {
    n: usize,
    step: u32,
    text: String,
}

/// Renders the supervisor message. `history` holds (step, text) of every earlier feedback,
/// oldest first; `step` is 1-based (the number of agent steps done).
pub fn render(
    template: &str,
    current: &str,
    step: u32,
    history: &[(u32, String)],
    fold_chars: usize,
) -> Result<String, Error> {
    render_with_fuel(template, current, step, history, fold_chars, crate::prompts::RENDER_FUEL)
}

fn render_with_fuel(
    template: &str,
    current: &str,
    step: u32,
    history: &[(u32, String)],
    fold_chars: usize,
    fuel: u64,
) -> Result<String, Error> {
    let mut env = Environment::new();
    env.set_fuel(Some(fuel));
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.add_template("feedback", template)?;
    let previous: Vec<Previous> = history
        .iter()
        .enumerate()
        .map(|(i, (s, text))| Previous { n: i + 1, step: *s, text: fold(text, fold_chars) })
        .collect();
    env.get_template("feedback")
        .and_then(|t| t.render(minijinja::context! { current, step, previous }))
        .map_err(|e| match e.kind() {
            minijinja::ErrorKind::OutOfFuel => Error::OutOfFuel,
            _ => Error::Template(e),
        })
}

fn fold(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let cut: String = text.chars().take(max).collect();
    format!("{cut}...")
}

/// Compiles and renders the template once with sample values (at sweep submission).
/// Each rendering may spend [`crate::prompts::CHECK_FUEL`].
pub fn check(template: &str) -> Result<(), Error> {
    render_with_fuel(template, "guidance", 5, &[(5, "earlier".into())], 1500, crate::prompts::CHECK_FUEL)
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = include_str!("../templates/critic_feedback.j2");

    #[test]
    fn earlier_feedback_is_folded_and_cut() {
        let long = "x".repeat(2000);
        let text = render(TEMPLATE, "Run the tests.", 10, &[(5, long.clone())], 1500).unwrap();
        assert!(text.starts_with("SUPERVISOR FEEDBACK:"), "{text}");
        assert!(text.contains("### Feedback #1 (after step 5):"), "{text}");
        assert!(text.contains(&format!("{}...", "x".repeat(1500))) && !text.contains(&long), "cut to 1,500");
        assert!(text.ends_with("## Current Feedback (after step 10):\nRun the tests."), "{text}");
        let first = render(TEMPLATE, "Look at the parser.", 5, &[], 1500).unwrap();
        assert!(!first.contains("Previous"), "{first}");
        check(TEMPLATE).unwrap();
        assert!(check("{{ curent }}").is_err());
    }

    #[test]
    fn a_template_that_does_too_much_work_runs_out_of_fuel() {
        let nested = "{% for i in range(1000) %}{% for j in range(1000) %}{{ i }}{% endfor %}{% endfor %}";
        let e = check(nested).unwrap_err();
        assert!(matches!(e, Error::OutOfFuel), "{e}");
        assert!(e.to_string().starts_with("feedback template: ran out of fuel"), "{e}");
    }
}
