//! The agent's prompt templates, rendered with minijinja (Jinja syntax, as mini-swe-agent's
//! templates are written). Undefined variables are errors, so a typo in a sweep's template is
//! caught when the sweep is submitted ([`check`]) rather than sent to a model.

use crate::PromptTemplates;
use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

/// The template names, as errors name them.
const NAMES: [&str; 4] = ["system", "instance", "observation", "format_error"];

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
        let mut env = Environment::new();
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
pub fn check(templates: &PromptTemplates) -> Result<(), TemplateError> {
    let prompts = Prompts::new(templates)?;
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
    let mut message = e.to_string();
    if let Some(line) = e.line() {
        if !message.contains("line") {
            message.push_str(&format!(" (line {line})"));
        }
    }
    message
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
}
