//! The `onnx` critic kind: a small local model (see `onnx`), one per worker process and model
//! directory, shared by every run on the worker (so concurrent runs' calls are micro-batched).
//!
//! - A **scorer** reads the agent's conversation as the agent saw it (supervisor messages left
//!   out) through the model's chat template and gives P(on track); below the condition's
//!   `score_threshold` (default 0.5) the agent gets the condition's `feedback` (or the winning
//!   label's message of a distribution scorer).
//! - A **generative** critic reads the paper's input (`input`) through its chat template and
//!   writes a critique, which is handled as a remote critic's is.
//!
//! Cost: per million tokens, or per hour of compute (the batch's compute time shared by its
//! requests), as the model's `critic.toml` prices it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use protocol::{CriticCallRecord, CriticCallStatus, CriticKind, CriticParams, OnnxCritic};
use rust_decimal::Decimal;
use serde_json::Value;

use super::onnx::{GenParams, ModelForm, OnnxError, OnnxModel, OnnxOptions, Pricing};

/// The models this process has loaded, by directory.
fn models() -> &'static Mutex<HashMap<PathBuf, Arc<OnnxModel>>> {
    static MODELS: OnceLock<Mutex<HashMap<PathBuf, Arc<OnnxModel>>>> = OnceLock::new();
    MODELS.get_or_init(Default::default)
}

/// How this process loads its models (`steer worker --critic-threads`); set before the first load.
static OPTIONS: OnceLock<OnnxOptions> = OnceLock::new();

/// Sets the ONNX Runtime options of every model this process loads (once, before any load).
pub fn set_options(options: OnnxOptions) {
    let _ = OPTIONS.set(options);
}

/// The model in `dir`, loaded once per process (a worker preloads its models at start with
/// `steer worker --critic-model DIR`, so that a bad directory stops it there).
pub fn model(dir: &Path) -> Result<Arc<OnnxModel>, OnnxError> {
    let mut loaded = models().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(m) = loaded.get(dir) {
        return Ok(m.clone());
    }
    let model = OnnxModel::load(dir, OPTIONS.get_or_init(OnnxOptions::default))?;
    tracing::info!(dir = %dir.display(), device = model.device(), "critic model loaded");
    loaded.insert(dir.to_path_buf(), model.clone());
    Ok(model)
}

pub struct Local {
    model: Arc<OnnxModel>,
    spec: OnnxCritic,
}

/// What the model said.
pub struct Said {
    pub feedback: Option<String>,
    /// A generative critique's TASK_STATUS (a scorer's score is in the call's record).
    pub status: Option<String>,
}

impl Local {
    pub fn new(spec: &OnnxCritic) -> Result<Local, OnnxError> {
        Ok(Local { model: model(Path::new(&spec.model))?, spec: spec.clone() })
    }

    /// One call; the record is filled in whatever happens (a failure means no feedback).
    pub async fn ask(
        &self,
        params: &CriticParams,
        agent: &[Value],
        history: &[(u32, String)],
        step: u32,
        max_steps: u32,
        record: &mut CriticCallRecord,
    ) -> Option<Said> {
        let started = Instant::now();
        record.kind = CriticKind::Onnx;
        record.model = Some(self.model.dir().display().to_string());
        record.device = Some(self.model.device().to_string());
        let said = match self.model.form() {
            ModelForm::Scorer => self.score(params, agent, record).await,
            ModelForm::Generative => self.critique(params, agent, history, step, max_steps, record).await,
        };
        record.latency_ms = started.elapsed().as_millis() as i64;
        match said {
            Ok(s) => Some(s),
            Err(e) => {
                record.status = CriticCallStatus::Failed;
                record.error = Some(e.to_string());
                None
            }
        }
    }

    async fn score(
        &self,
        params: &CriticParams,
        agent: &[Value],
        record: &mut CriticCallRecord,
    ) -> Result<Said, OnnxError> {
        let prompt = self.model.render(agent)?;
        let out = self.model.score(&prompt).await?;
        record.prompt = Value::String(prompt);
        record.input_tokens = out.input_tokens as i64;
        record.batch_size = Some(out.batch_size as i32);
        record.cost_usd =
            self.cost(out.input_tokens, 0, out.compute.as_secs_f64() / out.batch_size.max(1) as f64);
        let on_track = out.on_track.map(f64::from);
        record.score = on_track;
        let threshold = params.score_threshold.unwrap_or(0.5);
        let off_track = on_track.is_some_and(|p| p < threshold);
        // A distribution scorer: the winning label's message, when it has one.
        let label_message = out
            .distribution
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .and_then(|(i, _)| self.model.labels().get(i))
            .filter(|l| !l.on_track && !l.message.is_empty())
            .map(|l| l.message.clone());
        let feedback = off_track.then(|| label_message.unwrap_or_else(|| self.spec.feedback.clone()));
        Ok(Said { feedback, status: None })
    }

    async fn critique(
        &self,
        params: &CriticParams,
        agent: &[Value],
        history: &[(u32, String)],
        step: u32,
        max_steps: u32,
        record: &mut CriticCallRecord,
    ) -> Result<Said, OnnxError> {
        let model = &self.model;
        let messages =
            super::input::build(params, agent, history, step, max_steps, &|s| model.count_tokens(s));
        let prompt = model.render(&messages)?;
        let gen = GenParams {
            max_new_tokens: self.spec.max_new_tokens as usize,
            temperature: self.spec.temperature as f32,
            top_p: 1.0,
            seed: self.spec.seed,
            stop: self.spec.stop.clone(),
        };
        let out = model.generate(&prompt, &gen).await?;
        record.prompt = Value::Array(messages);
        record.input_tokens = out.input_tokens as i64;
        record.output_tokens = out.output_tokens as i64;
        record.batch_size = Some(out.batch_size as i32);
        record.cost_usd = self.cost(
            out.input_tokens,
            out.output_tokens,
            out.compute.as_secs_f64() / out.batch_size.max(1) as f64,
        );
        let (text, status) = super::input::parse_critique(&out.text);
        Ok(Said { feedback: (!text.is_empty()).then_some(text), status })
    }

    /// Exact cost of a call at the model's prices.
    fn cost(&self, input: usize, output: usize, compute_s: f64) -> Decimal {
        let million = Decimal::from(1_000_000u32);
        // Compute time is measured (a float); it becomes an exact decimal at microseconds.
        let hours = Decimal::from((compute_s * 1e6).round() as i64) / Decimal::from(3_600_000_000u64);
        match self.model.price() {
            Pricing::PerMtok { input: pi, output: po } => {
                (Decimal::from(input as u64) * pi + Decimal::from(output as u64) * po) / million
            }
            Pricing::PerGpuHour(p) | Pricing::PerCpuHour(p) => hours * p,
        }
    }
}
