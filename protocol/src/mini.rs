//! mini-swe-agent's configuration files, read as they are (`agent_config` on a sweep's agent).
//!
//! A file in mini-swe-agent 1.x's layout (`agent.action_observation_template`) or 2.x's
//! (`model.observation_template`) is read at submit ([`MiniConfig::parse`]) into the effective
//! configuration a run follows: its templates, limits, sandbox variables, command timeout,
//! action rule and submission rule. The worker renders the templates with [`MiniPrompts`],
//! with the variables mini-swe-agent passes (`task`, `output.output`, `output.returncode`,
//! `actions`, ...), so the messages are the ones mini-swe-agent itself would send.
//!
//! The project carries none of mini-swe-agent's text: what a file leaves to mini-swe-agent's
//! code (1.x's `timeout_template`, for one) is read from the package the file came with
//! ([`python_str_default`] on its `agents/default.py`), or the sweep is refused saying which
//! key to add.

use minijinja::{Environment, UndefinedBehavior, Value as JValue};
use regex::Regex;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use utoipa::ToSchema;
use yaml_rust2::{Yaml, YamlLoader};

use crate::prompts::{TemplateError, CHECK_FUEL, RENDER_FUEL};

/// The sentinel that submits (both lines); 1.x also takes [`MINI_V1_ALT_SENTINEL`].
pub const SENTINEL: &str = crate::SUBMIT_SENTINEL;
/// 1.x's second submit sentinel.
pub const MINI_V1_ALT_SENTINEL: &str = "MINI_SWE_AGENT_FINAL_OUTPUT";

/// The action regex of mini-swe-agent 1.x's agent and of 2.x's text-based models when the file
/// sets none (a pattern, not prompt text).
const V1_ACTION_REGEX: &str = r"```bash\s*\n(.*?)\n```";
const V2_TEXT_ACTION_REGEX: &str = r"```mswea_bash_command\s*\n(.*?)\n```";

/// Which mini-swe-agent line a file is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MiniLayout {
    /// 1.x: every template under `agent`, timeouts through `timeout_template`.
    V1,
    /// 2.x: observation and format-error templates under `model`, timeouts as observations.
    V2,
}

/// How replies carry actions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MiniActions {
    /// Exactly one match of `regex` (Python `re.findall` with DOTALL) in the reply's text.
    Text { regex: String },
    /// Native tool calls of mini-swe-agent 2.x's `bash` tool (one or more a reply).
    ToolCalls,
}

/// The effective configuration of one mini-swe-agent file, as a run follows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MiniConfig {
    /// The file as the sweep named it (for people; nothing reads it again).
    pub source: String,
    pub layout: MiniLayout,
    pub system_template: String,
    pub instance_template: String,
    pub observation_template: String,
    pub format_error_template: String,
    /// 1.x only: the message for a command past its time limit.
    #[serde(default)]
    pub timeout_template: Option<String>,
    pub actions: MiniActions,
    /// Model calls before `LimitsExceeded` (0: none).
    pub step_limit: u32,
    /// Dollars before `LimitsExceeded` (0: none).
    #[schema(value_type = String)]
    pub cost_limit: Decimal,
    /// 2.x's `wall_time_limit_seconds` (0: none).
    #[serde(default)]
    pub wall_time_limit_s: u64,
    /// 2.x's `max_consecutive_format_errors` (0: none; 1.x has no limit).
    #[serde(default)]
    pub max_consecutive_format_errors: u32,
    /// `environment.cwd`: where every command runs.
    pub cwd: String,
    /// `environment.timeout`: seconds per command.
    pub timeout_s: u64,
    /// `environment.env`, in the file's order (it is also the order of mini's `docker exec -e`).
    #[schema(value_type = Object)]
    pub env: Vec<(String, String)>,
    /// `environment.interpreter` (2.x; 1.x runs `bash -lc`).
    pub interpreter: Vec<String>,
    /// The file's `agent`, `environment` and `model` keys, merged as mini-swe-agent merges
    /// its template variables (later sections win).
    #[schema(value_type = Object)]
    pub vars: Map<String, Value>,
}

/// Why a file cannot be used; the sweep parser puts its key path before it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MiniError(pub String);

fn err(message: impl Into<String>) -> MiniError {
    MiniError(message.into())
}

impl MiniConfig {
    /// Reads a file's text. `code` is mini-swe-agent's `agents/default.py` from the package the
    /// file came with, when there is one: 1.x's defaults that the file leaves out are read there.
    pub fn parse(source: &str, yaml: &str, code: Option<&str>) -> Result<MiniConfig, MiniError> {
        let docs = YamlLoader::load_from_str(yaml).map_err(|e| err(format!("not YAML: {e}")))?;
        let doc = docs.first();
        let root = doc.map(yaml_to_json).unwrap_or(Value::Null);
        let Value::Object(root) = root else { return Err(err("the file is not a YAML mapping")) };
        let section = |name: &str| -> Result<Map<String, Value>, MiniError> {
            match root.get(name) {
                None | Some(Value::Null) => Ok(Map::new()),
                Some(Value::Object(m)) => Ok(m.clone()),
                Some(_) => Err(err(format!("`{name}` is not a mapping"))),
            }
        };
        let (agent, environment, model) = (section("agent")?, section("environment")?, section("model")?);
        let layout = match (agent.contains_key("action_observation_template"), model.contains_key("observation_template")) {
            (true, false) => MiniLayout::V1,
            (false, true) => MiniLayout::V2,
            (true, true) => return Err(err("both `agent.action_observation_template` (1.x) and `model.observation_template` (2.x): which mini-swe-agent is it for?")),
            (false, false) => return Err(err("neither `agent.action_observation_template` (mini-swe-agent 1.x) nor `model.observation_template` (2.x): is this a mini-swe-agent agent configuration?")),
        };
        let text = |m: &Map<String, Value>, section: &str, key: &str| -> Result<Option<String>, MiniError> {
            match m.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(err(format!("`{section}.{key}` is not a string"))),
            }
        };
        let required = |m: &Map<String, Value>, section: &str, key: &str| -> Result<String, MiniError> {
            text(m, section, key)?.ok_or_else(|| {
                err(format!(
                    "`{section}.{key}` is missing: mini-swe-agent's shipped SWE-bench configurations set it"
                ))
            })
        };
        let number = |m: &Map<String, Value>, section: &str, key: &str| -> Result<Option<f64>, MiniError> {
            match m.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Number(n)) => Ok(n.as_f64()),
                Some(_) => Err(err(format!("`{section}.{key}` is not a number"))),
            }
        };
        let count = |m: &Map<String, Value>, section: &str, key: &str| -> Result<Option<u64>, MiniError> {
            match number(m, section, key)? {
                None => Ok(None),
                Some(n) if n >= 0.0 && n.fract() == 0.0 => Ok(Some(n as u64)),
                Some(n) => {
                    Err(err(format!("`{section}.{key}` must be a whole number of at least 0 (found {n})")))
                }
            }
        };
        let system_template = required(&agent, "agent", "system_template")?;
        let instance_template = required(&agent, "agent", "instance_template")?;
        let (observation_template, format_error_template, timeout_template, actions) = match layout {
            MiniLayout::V1 => {
                let from_code = |key: &str| -> Result<String, MiniError> {
                    match text(&agent, "agent", key)? {
                        Some(t) => Ok(t),
                        None => code.and_then(|c| python_str_default(c, key)).ok_or_else(|| {
                            err(format!(
                                "`agent.{key}` is not in the file and mini-swe-agent's own default could not be read \
                                 (from `agents/default.py` of the package the file came with): add `{key}` to the file"
                            ))
                        }),
                    }
                };
                let regex = text(&agent, "agent", "action_regex")?.unwrap_or_else(|| V1_ACTION_REGEX.into());
                (
                    required(&agent, "agent", "action_observation_template")?,
                    from_code("format_error_template")?,
                    Some(from_code("timeout_template")?),
                    MiniActions::Text { regex },
                )
            }
            MiniLayout::V2 => {
                let class = text(&model, "model", "model_class")?.unwrap_or_default();
                let actions = match text(&model, "model", "action_regex")? {
                    Some(regex) => MiniActions::Text { regex },
                    None if class.contains("textbased") => {
                        MiniActions::Text { regex: V2_TEXT_ACTION_REGEX.into() }
                    }
                    None => MiniActions::ToolCalls,
                };
                (
                    required(&model, "model", "observation_template")?,
                    required(&model, "model", "format_error_template")?,
                    None,
                    actions,
                )
            }
        };
        if let MiniActions::Text { regex } = &actions {
            action_regex(regex).map_err(|e| err(format!("action_regex: {e}")))?;
        }
        let step_limit = count(&agent, "agent", "step_limit")?.unwrap_or(0);
        let step_limit = u32::try_from(step_limit).map_err(|_| err("`agent.step_limit` is too large"))?;
        let cost_limit = match number(&agent, "agent", "cost_limit")? {
            None => Decimal::from(3),
            Some(c) if c >= 0.0 => Decimal::from_f64_retain(c)
                .ok_or_else(|| err("`agent.cost_limit` is not a finite number"))?
                .normalize(),
            Some(c) => return Err(err(format!("`agent.cost_limit` must be at least 0 (found {c})"))),
        };
        let (wall_time_limit_s, max_consecutive_format_errors) = match layout {
            MiniLayout::V1 => (0, 0),
            MiniLayout::V2 => (
                count(&agent, "agent", "wall_time_limit_seconds")?.unwrap_or(0),
                u32::try_from(count(&agent, "agent", "max_consecutive_format_errors")?.unwrap_or(3))
                    .map_err(|_| err("`agent.max_consecutive_format_errors` is too large"))?,
            ),
        };
        let cwd = text(&environment, "environment", "cwd")?.unwrap_or_else(|| "/".into());
        if !cwd.starts_with('/') {
            return Err(err(format!("`environment.cwd` must be an absolute path (found {cwd:?})")));
        }
        let timeout_s = count(&environment, "environment", "timeout")?.unwrap_or(30);
        if timeout_s == 0 {
            return Err(err("`environment.timeout` must be at least 1 second"));
        }
        // Read from the YAML itself: JSON maps here do not keep the file's order.
        let ordered_env = doc.map(|d| &d["environment"]["env"]).and_then(Yaml::as_hash).map(|h| {
            h.iter().filter_map(|(k, v)| Some((k.as_str()?.to_string(), yaml_to_json(v)))).collect::<Vec<_>>()
        });
        let env = match environment.get("env") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Object(_)) => ordered_env
                .unwrap_or_default()
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k.clone(), s.clone())),
                    Value::Number(n) => Ok((k.clone(), n.to_string())),
                    Value::Bool(b) => Ok((k.clone(), if *b { "True" } else { "False" }.to_string())),
                    _ => Err(err(format!("`environment.env.{k}` is not a string"))),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(err("`environment.env` is not a mapping")),
        };
        for (k, _) in &env {
            if k.is_empty() || k.contains('=') {
                return Err(err(format!("`environment.env`: {k:?} is not a variable name")));
            }
        }
        let interpreter = match (layout, environment.get("interpreter")) {
            (MiniLayout::V1, _) | (MiniLayout::V2, None | Some(Value::Null)) => {
                vec!["bash".into(), "-lc".into()]
            }
            (MiniLayout::V2, Some(Value::Array(a))) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| err("`environment.interpreter` must be a list of strings"))
                })
                .collect::<Result<_, _>>()?,
            (MiniLayout::V2, Some(_)) => {
                return Err(err("`environment.interpreter` must be a list of strings"))
            }
        };
        let mut vars = Map::new();
        for section in [&agent, &environment, &model] {
            vars.extend(section.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        let config = MiniConfig {
            source: source.to_string(),
            layout,
            system_template,
            instance_template,
            observation_template,
            format_error_template,
            timeout_template,
            actions,
            step_limit,
            cost_limit,
            wall_time_limit_s,
            max_consecutive_format_errors,
            cwd,
            timeout_s,
            env,
            interpreter,
            vars,
        };
        config.check()?;
        Ok(config)
    }

    /// Compiles the templates and renders each once with sample values, so that a template
    /// mini-swe-agent could render but minijinja cannot is found at submit.
    pub fn check(&self) -> Result<(), MiniError> {
        let p = MiniPrompts::with_fuel(self, CHECK_FUEL).map_err(|e| err(e.to_string()))?;
        let e = |e: TemplateError| err(e.to_string());
        p.system("issue text").map_err(e)?;
        p.instance("issue text").map_err(e)?;
        let out = CommandOutput { output: "out", returncode: 0, exception_info: "", action: "ls" };
        p.observation(&out, &RunState::default()).map_err(e)?;
        p.format_error(
            &FormatErrorFacts {
                actions: &["a".into(), "b".into()],
                error: "Expected exactly 1 action, found 2.",
                finish_reason: Some("stop"),
                has_tool_calls: true,
            },
            &RunState::default(),
        )
        .map_err(e)?;
        p.timeout(
            &TimeoutFacts { command: "sleep 100", reply: "THOUGHT", output: "", container_id: "c0ffee" },
            &RunState::default(),
        )
        .map_err(e)?;
        Ok(())
    }

    /// The sandbox's environment variables as `NAME=value`.
    pub fn env_vars(&self) -> Vec<String> {
        self.env.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    /// The submission of a command's output, as mini-swe-agent takes it: the first line (after
    /// leading whitespace) is the sentinel and the command exited 0; the submission is every
    /// line after it. None when the command did not submit.
    pub fn submission(&self, output: &str, returncode: Option<i64>) -> Option<String> {
        let lines = python_splitlines_keepends(output.trim_start());
        let first = lines.first()?.trim();
        let is_sentinel =
            first == SENTINEL || (self.layout == MiniLayout::V1 && first == MINI_V1_ALT_SENTINEL);
        if !is_sentinel || returncode != Some(0) {
            return None;
        }
        Some(lines[1..].concat())
    }

    /// The actions of a text reply: every match of the action regex (group 1 when it has a
    /// group), stripped, as Python's `re.findall(regex, content, re.DOTALL)`. Empty for tool calls.
    pub fn text_actions(&self, content: &str) -> Vec<String> {
        let MiniActions::Text { regex } = &self.actions else { return Vec::new() };
        let Ok(re) = action_regex(regex) else { return Vec::new() };
        re.captures_iter(content)
            .map(|c| {
                c.get(if re.captures_len() > 1 { 1 } else { 0 }).map_or("", |m| m.as_str()).trim().to_string()
            })
            .collect()
    }
}

/// A mini-swe-agent action regex compiled as Python's `re.DOTALL` reads it.
pub fn action_regex(regex: &str) -> Result<Regex, String> {
    Regex::new(&format!("(?s){regex}")).map_err(|e| {
        format!("cannot be compiled here (lookaround and backreferences are not supported): {e}")
    })
}

/// What changes between renderings of one run (2.x's extra variables).
#[derive(Debug, Clone, Default)]
pub struct RunState {
    pub n_model_calls: u32,
    pub model_cost: f64,
    pub elapsed_seconds: u64,
}

/// One command's result, as mini-swe-agent's environment returns it.
pub struct CommandOutput<'a> {
    pub output: &'a str,
    pub returncode: i64,
    /// 2.x: why the command failed to run ("" when it ran).
    pub exception_info: &'a str,
    /// The command (1.x puts it in the output as `action`).
    pub action: &'a str,
}

/// A reply that broke the format.
pub struct FormatErrorFacts<'a> {
    /// The actions found (text replies: the regex's matches).
    pub actions: &'a [String],
    /// 2.x's error sentence.
    pub error: &'a str,
    /// The endpoint's finish reason.
    pub finish_reason: Option<&'a str>,
    /// 2.x tool calls: whether the reply had any.
    pub has_tool_calls: bool,
}

/// A command past its time limit.
pub struct TimeoutFacts<'a> {
    pub command: &'a str,
    /// The reply's text.
    pub reply: &'a str,
    /// What the command printed before it was killed.
    pub output: &'a str,
    /// The sandbox's container id (2.x quotes mini's `docker exec` command line).
    pub container_id: &'a str,
}

/// A [`MiniConfig`]'s templates, compiled for one run.
pub struct MiniPrompts<'c> {
    config: &'c MiniConfig,
    env: Environment<'static>,
}

impl<'c> MiniPrompts<'c> {
    pub fn new(config: &'c MiniConfig) -> Result<MiniPrompts<'c>, TemplateError> {
        Self::with_fuel(config, RENDER_FUEL)
    }

    pub fn with_fuel(config: &'c MiniConfig, fuel: u64) -> Result<MiniPrompts<'c>, TemplateError> {
        let mut env = Environment::new();
        env.set_fuel(Some(fuel));
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // jinja2's `Template(...)` drops a template's last newline, as here.
        env.set_keep_trailing_newline(false);
        let mut add = |name: &'static str, source: &str| {
            env.add_template_owned(name, source.to_string())
                .map_err(|e| TemplateError { name, message: e.to_string() })
        };
        add("system", &config.system_template)?;
        add("instance", &config.instance_template)?;
        add("observation", &config.observation_template)?;
        add("format_error", &config.format_error_template)?;
        if let Some(t) = &config.timeout_template {
            add("timeout", t)?;
        }
        Ok(MiniPrompts { config, env })
    }

    /// The file's variables, 2.x's run state and `task` (mini's `extra_template_vars`).
    fn base(&self, state: &RunState, task: Option<&str>) -> Map<String, Value> {
        let mut vars = self.config.vars.clone();
        // Both lines' models add these; 2.x's agent adds the elapsed time.
        vars.insert("n_model_calls".into(), json!(state.n_model_calls));
        vars.insert("model_cost".into(), json!(state.model_cost));
        if self.config.layout == MiniLayout::V2 {
            vars.insert("elapsed_seconds".into(), json!(state.elapsed_seconds));
        }
        if let Some(task) = task {
            vars.insert("task".into(), json!(task));
        }
        vars
    }

    pub fn system(&self, task: &str) -> Result<String, TemplateError> {
        self.render("system", self.base(&RunState::default(), Some(task)))
    }

    pub fn instance(&self, task: &str) -> Result<String, TemplateError> {
        self.render("instance", self.base(&RunState::default(), Some(task)))
    }

    /// The observation of a command that ran (2.x: also of one that failed to run).
    pub fn observation(&self, out: &CommandOutput, state: &RunState) -> Result<String, TemplateError> {
        let mut vars = self.base(state, None);
        let output = match self.config.layout {
            MiniLayout::V1 => {
                json!({"output": out.output, "returncode": out.returncode, "action": out.action})
            }
            MiniLayout::V2 => {
                json!({"output": out.output, "returncode": out.returncode, "exception_info": out.exception_info})
            }
        };
        vars.insert("output".into(), output);
        self.render("observation", vars)
    }

    /// The answer to a reply that broke the format: 1.x renders it with every variable and
    /// `actions`; 2.x with only `actions`, `error`, `finish_reason` (and `has_tool_calls` for tool calls).
    pub fn format_error(&self, facts: &FormatErrorFacts, state: &RunState) -> Result<String, TemplateError> {
        let vars = match (self.config.layout, &self.config.actions) {
            (MiniLayout::V1, _) => {
                let mut vars = self.base(state, None);
                vars.insert("actions".into(), json!(facts.actions));
                vars
            }
            (MiniLayout::V2, MiniActions::Text { .. }) => {
                let mut vars = Map::new();
                vars.insert("actions".into(), json!(facts.actions));
                vars.insert("error".into(), json!(facts.error));
                vars.insert("finish_reason".into(), json!(facts.finish_reason));
                vars
            }
            (MiniLayout::V2, MiniActions::ToolCalls) => {
                let mut vars = Map::new();
                vars.insert("actions".into(), json!([]));
                vars.insert("error".into(), json!(facts.error));
                vars.insert("has_tool_calls".into(), json!(facts.has_tool_calls));
                vars.insert("finish_reason".into(), json!(facts.finish_reason));
                vars
            }
        };
        self.render("format_error", vars)
    }

    /// The message for a command past `environment.timeout`: 1.x's `timeout_template`; 2.x's
    /// observation with return code -1 and the exception mini's `subprocess.run` raises.
    pub fn timeout(&self, facts: &TimeoutFacts, state: &RunState) -> Result<String, TemplateError> {
        match self.config.layout {
            MiniLayout::V1 => {
                let mut vars = self.base(state, None);
                vars.insert("action".into(), json!({"action": facts.command, "content": facts.reply}));
                vars.insert("output".into(), json!(facts.output));
                self.render("timeout", vars)
            }
            MiniLayout::V2 => {
                let info = self.timeout_exception(facts);
                let out = CommandOutput {
                    output: facts.output,
                    returncode: -1,
                    exception_info: &info,
                    action: facts.command,
                };
                self.observation(&out, state)
            }
        }
    }

    /// 2.x's `exception_info` for a timeout: `subprocess.TimeoutExpired`'s text over the
    /// `docker exec` command line mini-swe-agent builds.
    pub fn timeout_exception(&self, facts: &TimeoutFacts) -> String {
        let mut cmd: Vec<String> = vec!["docker".into(), "exec".into(), "-w".into(), self.config.cwd.clone()];
        for (k, v) in &self.config.env {
            cmd.push("-e".into());
            cmd.push(format!("{k}={v}"));
        }
        cmd.push(facts.container_id.into());
        cmd.extend(self.config.interpreter.iter().cloned());
        cmd.push(facts.command.into());
        let list: Vec<String> = cmd.iter().map(|s| python_repr(s)).collect();
        format!(
            "An error occurred while executing the command: Command '[{}]' timed out after {} seconds",
            list.join(", "),
            self.config.timeout_s
        )
    }

    fn render(&self, name: &'static str, vars: Map<String, Value>) -> Result<String, TemplateError> {
        let template =
            self.env.get_template(name).map_err(|e| TemplateError { name, message: e.to_string() })?;
        template
            .render(JValue::from_serialize(&vars))
            .map_err(|e| TemplateError { name, message: e.to_string() })
    }
}

/// Python's `str.splitlines(keepends=True)`.
pub fn python_splitlines_keepends(s: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let end = match c {
            '\r' => match chars.peek() {
                Some((_, '\n')) => {
                    chars.next();
                    i + 2
                }
                _ => i + 1,
            },
            '\n' | '\x0b' | '\x0c' | '\x1c' | '\x1d' | '\x1e' | '\u{85}' | '\u{2028}' | '\u{2029}' => {
                i + c.len_utf8()
            }
            _ => continue,
        };
        lines.push(&s[start..end]);
        start = end;
    }
    if start < s.len() {
        lines.push(&s[start..]);
    }
    lines
}

/// Python's `repr` of a `str`.
pub fn python_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (0x80..0xa0).contains(&(c as u32)) => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// The default of a `str` field `name: str = ...` of a Python dataclass or pydantic model in
/// `code`: one string literal, or adjacent literals in parentheses, as Python joins them.
pub fn python_str_default(code: &str, name: &str) -> Option<String> {
    let needle = format!("{name}: str = ");
    let mut rest = &code[code.find(&needle)? + needle.len()..];
    let parenthesised = rest.starts_with('(');
    if parenthesised {
        rest = &rest[1..];
    }
    let mut value = String::new();
    loop {
        rest = rest.trim_start();
        if rest.starts_with('#') {
            rest = rest.split_once('\n').map_or("", |(_, r)| r);
            continue;
        }
        if parenthesised && rest.starts_with(')') {
            return Some(value);
        }
        let (literal, after) = python_str_literal(rest)?;
        value.push_str(&literal);
        rest = after;
        if !parenthesised {
            return Some(value);
        }
    }
}

/// One Python string literal at the start of `s` (plain or raw; not triple-quoted, not
/// f-strings): its value and what follows it.
fn python_str_literal(s: &str) -> Option<(String, &str)> {
    let (raw, s) = match s.strip_prefix(['r', 'R']) {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let quote = s.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    if s.starts_with(&quote.to_string().repeat(3)) {
        return None;
    }
    let mut value = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            c if c == quote => return Some((value, &s[i + 1..])),
            '\n' => return None,
            '\\' => {
                let (_, next) = chars.next()?;
                if raw {
                    value.push('\\');
                    value.push(next);
                    continue;
                }
                match next {
                    'n' => value.push('\n'),
                    't' => value.push('\t'),
                    'r' => value.push('\r'),
                    '\\' => value.push('\\'),
                    '\'' => value.push('\''),
                    '"' => value.push('"'),
                    '\n' => {}
                    other => {
                        value.push('\\');
                        value.push(other);
                    }
                }
            }
            c => value.push(c),
        }
    }
    None
}

/// YAML as JSON, keys in the file's order (mappings with non-string keys are refused later
/// as "not a mapping" where it matters; their keys are written as YAML scalars).
fn yaml_to_json(y: &Yaml) -> Value {
    match y {
        Yaml::Real(s) => {
            s.parse::<f64>().ok().and_then(serde_json::Number::from_f64).map_or(Value::Null, Value::Number)
        }
        Yaml::Integer(i) => json!(i),
        Yaml::String(s) => json!(s),
        Yaml::Boolean(b) => json!(b),
        Yaml::Array(a) => Value::Array(a.iter().map(yaml_to_json).collect()),
        Yaml::Hash(h) => {
            let mut m = Map::new();
            for (k, v) in h {
                let key = match k {
                    Yaml::String(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    Yaml::Real(r) => r.clone(),
                    Yaml::Boolean(b) => if *b { "True" } else { "False" }.into(),
                    _ => continue,
                };
                m.insert(key, yaml_to_json(v));
            }
            Value::Object(m)
        }
        _ => Value::Null,
    }
}
