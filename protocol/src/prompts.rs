//! The agent's prompt templates, rendered with minijinja (Jinja syntax, as mini-swe-agent's
//! templates are written). Undefined variables are errors, so a typo in a sweep's template is
//! caught when the sweep is submitted ([`check`]) rather than sent to a model.

use crate::PromptTemplates;
use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

/// The template names, as errors name them.
const NAMES: [&str; 4] = ["system", "instance", "observation", "format_error"];

/// The work one rendering may do at submit ([`check`]), in minijinja's fuel (about one unit per
/// instruction; a loop iteration takes a few). Sample values are small: a template that needs
/// more than this on them loops over far more than its input (nested `range` loops), and
/// would hold up the coordinator.
pub const CHECK_FUEL: u64 = 1_000_000;

/// The work one rendering may do on a worker: a hundred times the check's, since real values
/// (a command's output) are larger than the samples, yet bounded, so that a template which
/// passed the check but explodes on real input ends its run instead of stalling the worker.
pub const RENDER_FUEL: u64 = 100 * CHECK_FUEL;

/// The compiled templates of one run.
pub struct Prompts {
    env: Environment<'static>,
}

#[derive(Debug, thiserror::Error)]
#[error("template `{name}`: {message}")]
pub struct TemplateError {
    pub name: &'static str,
    pub message: String,
}

/// What the system and instance templates can use.
#[derive(Serialize)]
pub struct TaskVars<'a> {
    pub task: &'a str,
    pub instance_id: &'a str,
    pub repo: &'a str,
    pub base_commit: &'a str,
    pub hints: &'a str,
    pub workdir: &'a str,
    pub scaffold: &'a str,
    pub max_steps: u32,
    pub command_timeout_s: u64,
    pub submit_sentinel: &'a str,
}

/// What the observation template can use.
#[derive(Serialize)]
pub struct ObservationVars<'a> {
    /// The exit code; -1 when the command was killed (as mini-swe-agent reports it).
    pub returncode: i64,
    pub output: &'a str,
    pub timed_out: bool,
    pub output_truncated: bool,
    /// Length of the whole output, in characters.
    pub output_chars: usize,
    pub command_timeout_s: u64,
    /// The edited lines with context ("" when the option is off or nothing changed).
    pub edits: &'a str,
    pub step: u32,
    pub max_steps: u32,
    pub scaffold: &'a str,
}

/// What the format-error template can use.
#[derive(Serialize)]
pub struct FormatErrorVars<'a> {
    /// How many actions the reply had (0, or more than 1).
    pub actions: usize,
    /// Why the reply was rejected, in a sentence.
    pub error: &'a str,
    pub scaffold: &'a str,
}

impl Prompts {
    pub fn new(templates: &PromptTemplates) -> Result<Prompts, TemplateError> {
        Self::with_fuel(templates, RENDER_FUEL)
    }

    /// Templates of which each rendering may spend at most `fuel`.
    pub fn with_fuel(templates: &PromptTemplates, fuel: u64) -> Result<Prompts, TemplateError> {
        let mut env = Environment::new();
        env.set_fuel(Some(fuel));
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Keep a template's last newline out of the message, as mini-swe-agent does.
        env.set_keep_trailing_newline(false);
        let sources =
            [&templates.system, &templates.instance, &templates.observation, &templates.format_error];
        for (name, source) in NAMES.into_iter().zip(sources) {
            env.add_template_owned(name, source.clone())
                .map_err(|e| TemplateError { name, message: describe(&e) })?;
        }
        Ok(Prompts { env })
    }

    pub fn system(&self, vars: &TaskVars) -> Result<String, TemplateError> {
        self.render("system", vars)
    }
    pub fn instance(&self, vars: &TaskVars) -> Result<String, TemplateError> {
        self.render("instance", vars)
    }
    pub fn observation(&self, vars: &ObservationVars) -> Result<String, TemplateError> {
        self.render("observation", vars)
    }
    pub fn format_error(&self, vars: &FormatErrorVars) -> Result<String, TemplateError> {
        self.render("format_error", vars)
    }

    fn render<S: Serialize>(&self, name: &'static str, vars: &S) -> Result<String, TemplateError> {
        let template =
            self.env.get_template(name).map_err(|e| TemplateError { name, message: describe(&e) })?;
        template.render(vars).map_err(|e| TemplateError { name, message: describe(&e) })
    }
}

/// Compiles the templates and renders each once with sample values, so that a syntax error or
/// an unknown variable is reported when the sweep is submitted.
/// Each rendering may spend [`CHECK_FUEL`]; a template that needs more is an error saying so.
pub fn check(templates: &PromptTemplates) -> Result<(), TemplateError> {
    let prompts = Prompts::with_fuel(templates, CHECK_FUEL)?;
    for scaffold in ["bash_only", "tool_calling"] {
        let task = TaskVars {
            task: "issue text",
            instance_id: "owner__repo-1",
            repo: "owner/repo",
            base_commit: "0123abc",
            hints: "",
            workdir: "/testbed",
            scaffold,
            max_steps: 150,
            command_timeout_s: 60,
            submit_sentinel: crate::SUBMIT_SENTINEL,
        };
        prompts.system(&task)?;
        prompts.instance(&task)?;
        for (edits, timed_out) in [("", false), ("file.py:1-3", true)] {
            prompts.observation(&ObservationVars {
                returncode: 0,
                output: "out",
                timed_out,
                output_truncated: timed_out,
                output_chars: 3,
                command_timeout_s: 60,
                edits,
                step: 1,
                max_steps: 150,
                scaffold,
            })?;
        }
        prompts.format_error(&FormatErrorVars { actions: 2, error: "two actions", scaffold })?;
    }
    Ok(())
}

/// minijinja's error with its line, without the multi-line debug rendering.
fn describe(e: &minijinja::Error) -> String {
    if e.kind() == minijinja::ErrorKind::OutOfFuel {
        return out_of_fuel();
    }
    let mut message = e.to_string();
    if let Some(line) = e.line() {
        if !message.contains("line") {
            message.push_str(&format!(" (line {line})"));
        }
    }
    message
}

/// What a template that ran out of fuel is told.
pub(crate) fn out_of_fuel() -> String {
    "ran out of fuel: rendering it does too much work (nested loops over large ranges?); \
     a template must stay cheap to render"
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_templates_render_for_both_scaffolds() {
        check(&PromptTemplates::default()).unwrap();
    }

    #[test]
    fn an_unknown_variable_or_bad_syntax_names_the_template() {
        let t = PromptTemplates { observation: "{{ retrncode }}".into(), ..Default::default() };
        let e = check(&t).unwrap_err();
        assert_eq!(e.name, "observation");
        assert!(e.message.contains("undefined"), "{e}");
        let t = PromptTemplates { instance: "ok\n{% if task %}".into(), ..Default::default() };
        let e = check(&t).unwrap_err();
        assert_eq!(e.name, "instance");
        assert!(e.message.contains("line"), "{e}");
    }

    #[test]
    fn a_template_that_does_too_much_work_runs_out_of_fuel() {
        let nested = "{% for i in range(1000) %}{% for j in range(1000) %}{{ i }}{% endfor %}{% endfor %}";
        let t = PromptTemplates { observation: nested.into(), ..Default::default() };
        let started = std::time::Instant::now();
        let e = check(&t).unwrap_err();
        assert_eq!(e.name, "observation");
        assert!(e.to_string().starts_with("template `observation`: ran out of fuel"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "took {:?}", started.elapsed());
    }
}
