//! The `onnx` critic backend: small local models run through ONNX Runtime, on the CPU (or CUDA
//! with the `cuda` feature).
//!
//! A model is a directory holding the `.onnx` file, the tokenizer (`tokenizer.json`) and
//! `critic.toml` (its form, chat template, input and output names, context length, price;
//! `models/README.md` documents every key). Two forms:
//!
//! - **scorer**: reads the rendered trajectory and gives P(on track), or a distribution over a
//!   fixed list of feedback messages;
//! - **generative**: a decoder with a key/value cache (an `optimum` text-generation-with-past
//!   export) that writes a critique.
//!
//! One [`OnnxModel`] per model per worker is shared by every run (`Arc`). It owns one session and
//! one inference thread; concurrent [`OnnxModel::score`] and [`OnnxModel::generate`] calls are
//! collected into micro-batches there (see `batcher`), and their results equal unbatched ones.
//! Tokenizing runs on tokio's blocking threads, inference on the model's thread: async callers
//! never block.
//!
//! Only this module imports `ort`.

mod batcher;
mod config;
mod generate;
mod runtime;
mod scorer;
mod session;
#[cfg(test)]
mod tests;
mod text;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;

pub use runtime::{runtime_library, ORT_VERSION};

use batcher::{Batcher, Job};
use config::ModelConfig;
use text::Text;

/// How a model is run.
#[derive(Debug, Clone)]
pub struct OnnxOptions {
    /// Threads ONNX Runtime uses inside one operator; 0 = its default (the machine's cores).
    pub intra_threads: usize,
    /// Requests run together at most (1 = no micro-batching).
    pub max_batch: usize,
    /// How long a batch waits for more requests, at most. It waits only while other calls are
    /// on their way (being tokenized): a lone call runs at once.
    pub batch_window: Duration,
    pub device: DevicePreference,
    /// The ONNX Runtime library to load; `None` = [`runtime_library`]'s search. The first model
    /// loaded decides it for the whole process.
    pub runtime_library: Option<PathBuf>,
}

impl Default for OnnxOptions {
    fn default() -> Self {
        OnnxOptions {
            intra_threads: 0,
            max_batch: 16,
            batch_window: Duration::from_millis(3),
            device: DevicePreference::Auto,
            runtime_library: None,
        }
    }
}

/// Where a model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DevicePreference {
    /// CUDA when the build has the `cuda` feature, the library has the provider and a GPU is
    /// there; else the CPU.
    #[default]
    Auto,
    Cpu,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelForm {
    Scorer,
    Generative,
}

/// What a model's calls cost, from critic.toml. Exact decimals, never floats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pricing {
    /// Dollars per million input and output tokens.
    PerMtok { input: Decimal, output: Decimal },
    /// Dollars per hour of a GPU (charged by compute time).
    PerGpuHour(Decimal),
    /// Dollars per hour of a CPU core (charged by compute time).
    PerCpuHour(Decimal),
}

/// One of a distribution scorer's fixed feedback messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub name: String,
    /// The feedback the critic gives when this label wins (may be empty).
    pub message: String,
    /// Whether this label means "on track" (their probabilities add up to `on_track`).
    pub on_track: bool,
}

/// A scorer's verdict on one input.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreOutput {
    /// P(on track): the sigmoid of the logit, the model's own probability, or the summed
    /// probability of the labels marked `on_track` (`None` when no label is).
    pub on_track: Option<f32>,
    /// The distribution over [`OnnxModel::labels`]; empty for a one-score model.
    pub distribution: Vec<f32>,
    /// Tokens the model read (after truncation, special tokens included).
    pub input_tokens: usize,
    /// Requests in the batch this one ran in.
    pub batch_size: usize,
    /// Wall time of the batch's inference (shared by its requests).
    pub compute: Duration,
    pub tokenize: Duration,
}

/// How to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenParams {
    pub max_new_tokens: usize,
    /// 0 = greedy; above 0, seeded sampling.
    pub temperature: f32,
    /// Nucleus sampling: the smallest set of tokens whose probability reaches `top_p` (1 = all).
    pub top_p: f32,
    pub seed: u64,
    /// The answer ends before the first of these (which is left out of the text).
    pub stop: Vec<String>,
}

impl Default for GenParams {
    fn default() -> Self {
        GenParams { max_new_tokens: 256, temperature: 0.0, top_p: 1.0, seed: 0, stop: Vec::new() }
    }
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-sequence token.
    Eos,
    /// One of the stop strings.
    Stop,
    /// `max_new_tokens`, or the context length.
    Length,
}

/// A generative model's answer to one prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct GenOutput {
    pub text: String,
    /// The generated token ids (the end-of-sequence token included when there was one).
    pub output_ids: Vec<u32>,
    pub input_tokens: usize,
    /// Tokens generated: `output_ids.len()`.
    pub output_tokens: usize,
    pub finish: FinishReason,
    /// Requests in the batch this one ran in.
    pub batch_size: usize,
    /// Wall time of the batch's inference (prefill and decoding, shared by its requests).
    pub compute: Duration,
    pub tokenize: Duration,
}

/// What went wrong. The variant says what to do about it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OnnxError {
    /// The ONNX Runtime library is missing or unusable: install it (`scripts/ensure-ort`).
    #[error("ONNX Runtime: {0}")]
    Runtime(String),
    /// The model directory is unusable: fix the named file.
    #[error("model directory {}: {file}: {reason}", dir.display())]
    Model { dir: PathBuf, file: String, reason: String },
    /// This request cannot be served as given (the wrong form of model, messages the chat
    /// template rejects, parameters out of range). Retrying will not help.
    #[error("{0}")]
    Invalid(String),
    /// ONNX Runtime failed while running the model (e.g. out of memory).
    #[error("inference failed: {0}")]
    Inference(String),
    /// The model's inference thread has stopped (the model was dropped or the thread died).
    #[error("the model's inference thread has stopped")]
    Closed,
}

impl OnnxError {
    fn model(dir: &Path, file: &str, reason: String) -> OnnxError {
        OnnxError::Model { dir: dir.to_path_buf(), file: file.to_string(), reason }
    }
}

/// A loaded model. `Send + Sync`; share it with `Arc`. Dropping the last handle stops its
/// inference thread once the batch in hand is done.
pub struct OnnxModel {
    dir: PathBuf,
    config: ModelConfig,
    text: Arc<Text>,
    device: &'static str,
    batcher: Batcher,
    /// Calls that have started and whose job the batcher has not received yet (mostly: being
    /// tokenized). The batcher waits for them, within the batch window.
    arriving: Arc<AtomicUsize>,
}

impl std::fmt::Debug for OnnxModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxModel")
            .field("dir", &self.dir)
            .field("form", &self.config.form)
            .field("device", &self.device)
            .finish()
    }
}

impl OnnxModel {
    /// Loads and checks everything: the config, the runtime library, the tokenizer and chat
    /// template, the session, and that the model's inputs and outputs match the config. Every
    /// problem is an [`OnnxError`] naming the directory, the file and what is wrong (or, for the
    /// runtime library, how to get it).
    pub fn load(dir: &Path, options: &OnnxOptions) -> Result<Arc<OnnxModel>, OnnxError> {
        let started = Instant::now();
        if !dir.is_dir() {
            let reason = if dir.exists() { "not a directory" } else { "no such directory" };
            return Err(OnnxError::model(dir, "", reason.into()));
        }
        if options.max_batch == 0 {
            return Err(OnnxError::Invalid("max_batch must be at least 1".into()));
        }
        let config = config::read(dir)?;
        let library = match &options.runtime_library {
            Some(path) => path.clone(),
            None => runtime_library()?,
        };
        let env = runtime::environment(&library)?;
        let text = Arc::new(Text::load(dir, &config)?);
        let (session, device) = session::build(&env, dir, &config, options)?;
        let io = session::plan(dir, &config, &session)?;
        let arriving = Arc::new(AtomicUsize::new(0));
        let engine = batcher::Engine::new(session, io, &config, text.clone());
        let name = dir.file_name().map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned());
        let batcher = Batcher::spawn(&name, engine, options, arriving.clone())
            .map_err(|e| OnnxError::Runtime(format!("cannot start the inference thread: {e}")))?;
        tracing::info!(
            dir = %dir.display(),
            form = ?config.form,
            device,
            context_length = config.context_length,
            load_ms = started.elapsed().as_millis() as u64,
            "loaded ONNX critic model"
        );
        Ok(Arc::new(OnnxModel { dir: dir.to_path_buf(), config, text, device, batcher, arriving }))
    }

    pub fn form(&self) -> ModelForm {
        self.config.form
    }

    /// "cpu" or "cuda", as chosen at load.
    pub fn device(&self) -> &str {
        self.device
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// critic.toml's `description`.
    pub fn description(&self) -> &str {
        &self.config.description
    }

    pub fn context_length(&self) -> usize {
        self.config.context_length
    }

    pub fn price(&self) -> &Pricing {
        &self.config.price
    }

    /// A distribution scorer's labels; empty otherwise.
    pub fn labels(&self) -> &[Label] {
        &self.config.labels
    }

    /// Tokens of `text` by the model's tokenizer (no special tokens).
    pub fn count_tokens(&self, text: &str) -> usize {
        self.text.count(text)
    }

    /// The model's chat template applied to messages (`[{"role": .., "content": ..}]`).
    pub fn render(&self, messages: &[serde_json::Value]) -> Result<String, OnnxError> {
        self.text.render(messages)
    }

    /// A scorer's verdict on `prompt` (usually [`OnnxModel::render`]'s output), micro-batched
    /// with concurrent callers. The prompt is truncated from the left to the context length.
    pub async fn score(&self, prompt: &str) -> Result<ScoreOutput, OnnxError> {
        if self.config.form != ModelForm::Scorer {
            return Err(OnnxError::Invalid(format!(
                "{} holds a generative model: use generate",
                self.dir.display()
            )));
        }
        let arrival = Arrival::new(&self.arriving);
        let limit = self.config.context_length;
        let (ids, tokenize) = self.tokenize(prompt, limit).await?;
        let input_tokens = ids.len();
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.batcher.send(Job::Score { ids, reply })?;
        arrival.handed_over();
        let done = answer.await.map_err(|_| OnnxError::Closed)??;
        Ok(ScoreOutput {
            on_track: done.on_track,
            distribution: done.distribution,
            input_tokens,
            batch_size: done.batch_size,
            compute: done.compute,
            tokenize,
        })
    }

    /// A generative model's answer to `prompt`: greedy when `temperature` is 0, else sampled
    /// with `seed`; it stops at an end-of-sequence token, a stop string or `max_new_tokens`.
    /// The prompt is truncated from the left so that it and the answer fit the context.
    pub async fn generate(&self, prompt: &str, params: &GenParams) -> Result<GenOutput, OnnxError> {
        if self.config.form != ModelForm::Generative {
            return Err(OnnxError::Invalid(format!("{} holds a scorer: use score", self.dir.display())));
        }
        if params.max_new_tokens == 0 || params.max_new_tokens >= self.config.context_length {
            return Err(OnnxError::Invalid(format!(
                "max_new_tokens must be between 1 and {} (the context length, less room for the prompt)",
                self.config.context_length - 1
            )));
        }
        if !(params.temperature >= 0.0 && params.temperature.is_finite()) {
            return Err(OnnxError::Invalid(format!(
                "temperature {} is not a number >= 0",
                params.temperature
            )));
        }
        if !(params.top_p > 0.0 && params.top_p <= 1.0) {
            return Err(OnnxError::Invalid(format!("top_p {} is not in (0, 1]", params.top_p)));
        }
        let arrival = Arrival::new(&self.arriving);
        let limit = self.config.context_length - params.max_new_tokens;
        let (ids, tokenize) = self.tokenize(prompt, limit).await?;
        let input_tokens = ids.len();
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.batcher.send(Job::Generate { ids, params: params.clone(), reply })?;
        arrival.handed_over();
        let done = answer.await.map_err(|_| OnnxError::Closed)??;
        Ok(GenOutput {
            text: done.text,
            output_tokens: done.output_ids.len(),
            output_ids: done.output_ids,
            input_tokens,
            finish: done.finish,
            batch_size: done.batch_size,
            compute: done.compute,
            tokenize,
        })
    }

    /// Tokenizes on a blocking thread (a long trajectory takes milliseconds).
    async fn tokenize(&self, prompt: &str, limit: usize) -> Result<(Vec<i64>, Duration), OnnxError> {
        let text = self.text.clone();
        let prompt = prompt.to_string();
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let ids = text.encode_window(&prompt, limit)?;
            if ids.is_empty() {
                return Err(OnnxError::Invalid("the prompt has no tokens".into()));
            }
            Ok((ids, started.elapsed()))
        })
        .await
        .map_err(|e| OnnxError::Inference(format!("the tokenizing task failed: {e}")))?
    }
}

/// Counts a call as on its way to the batcher from its start until the batcher receives its
/// job (the batcher then takes it off the count), or until the call gives up before queueing one
/// (an error, or its future dropped while tokenizing: the guard takes it off).
struct Arrival<'a>(Option<&'a AtomicUsize>);

impl<'a> Arrival<'a> {
    fn new(counter: &'a AtomicUsize) -> Arrival<'a> {
        counter.fetch_add(1, Ordering::SeqCst);
        Arrival(Some(counter))
    }

    /// The job is queued: from now on the batcher accounts for it.
    fn handed_over(mut self) {
        self.0 = None;
    }
}

impl Drop for Arrival<'_> {
    fn drop(&mut self) {
        if let Some(counter) = self.0 {
            counter.fetch_sub(1, Ordering::SeqCst);
        }
    }
}
