//! The ONNX Runtime session of a model, and the check that the model's inputs and outputs are
//! those critic.toml describes (done once at load, so a run never meets a missing name).

use std::path::Path;

use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::Session;
use ort::value::{Outlet, TensorElementType, ValueType};

use super::config::{ModelConfig, Name};
use super::{DevicePreference, ModelForm, OnnxError, OnnxOptions};

/// Which names the model is run with, checked against the model.
#[derive(Debug, Clone)]
pub(super) struct Io {
    pub input_ids: String,
    pub attention_mask: String,
    pub position_ids: Option<String>,
    pub token_type_ids: Option<String>,
    pub use_cache_branch: Option<String>,
    /// The scorer's score, or the generative model's logits.
    pub output: String,
    /// The scorer's output width when the model states it (1, or the number of labels).
    pub output_width: Option<usize>,
    /// The generative model's vocabulary when the model states it (the logits' last dimension).
    pub vocab: Option<usize>,
    pub cache: Option<CacheIo>,
}

/// The key/value cache of a generative model.
#[derive(Debug, Clone)]
pub(super) struct CacheIo {
    /// Per layer: past key, past value (inputs), present key, present value (outputs).
    pub layers: Vec<[String; 4]>,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// Builds the session: the CUDA execution provider when the `cuda` feature is on, the device
/// preference allows it and it registers, else the CPU. Returns the session and "cuda" or "cpu".
pub(super) fn build(
    env: &ort::environment::Environment,
    dir: &Path,
    config: &ModelConfig,
    options: &OnnxOptions,
) -> Result<(Session, &'static str), OnnxError> {
    let file = config.model_file.as_str();
    let path = dir.join(file);
    if !path.is_file() {
        return Err(OnnxError::model(dir, file, "missing: the model's ONNX file".into()));
    }
    let model_err = |e: ort::Error| OnnxError::model(dir, file, format!("ONNX Runtime cannot load it: {e}"));
    if options.device == DevicePreference::Auto {
        if let Some(session) = cuda_session(env, &path, options) {
            return Ok((session, "cuda"));
        }
    }
    let session = builder(env, options).and_then(|mut b| b.commit_from_file(&path)).map_err(model_err)?;
    Ok((session, "cpu"))
}

fn builder(env: &ort::environment::Environment, options: &OnnxOptions) -> ort::Result<SessionBuilder> {
    let mut b = Session::builder(env)?.with_optimization_level(GraphOptimizationLevel::All).map_err(plain)?;
    if options.intra_threads > 0 {
        b = b.with_intra_threads(options.intra_threads).map_err(plain)?;
    }
    Ok(b)
}

/// A builder error without the builder it carries (which is not `Send`).
fn plain(e: ort::Error<SessionBuilder>) -> ort::Error {
    ort::Error::from(e)
}

#[cfg(feature = "cuda")]
fn cuda_session(env: &ort::environment::Environment, path: &Path, options: &OnnxOptions) -> Option<Session> {
    use ort::ep::ExecutionProvider;
    match ort::ep::CUDA::is_available() {
        Ok(true) => {}
        Ok(false) => {
            tracing::info!("this ONNX Runtime library has no CUDA execution provider; using the CPU");
            return None;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot ask ONNX Runtime for its execution providers; using the CPU");
            return None;
        }
    }
    let attempt = builder(env, options).and_then(|b| {
        b.with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
            .map_err(plain)?
            .commit_from_file(path)
    });
    match attempt {
        Ok(session) => Some(session),
        Err(e) => {
            tracing::warn!(error = %e, "the CUDA execution provider did not start (no GPU, or CUDA libraries missing); using the CPU");
            None
        }
    }
}

#[cfg(not(feature = "cuda"))]
fn cuda_session(
    _env: &ort::environment::Environment,
    _path: &Path,
    _options: &OnnxOptions,
) -> Option<Session> {
    None
}

/// Checks the model's inputs and outputs against the config.
pub(super) fn plan(dir: &Path, config: &ModelConfig, session: &Session) -> Result<Io, OnnxError> {
    let err = |reason: String| OnnxError::model(dir, &config.model_file, reason);
    let inputs = session.inputs();
    let outputs = session.outputs();
    let input = |n: &str| inputs.iter().find(|o| o.name() == n);
    let output = |n: &str| outputs.iter().find(|o| o.name() == n);
    let names = |list: &[Outlet]| list.iter().map(|o| o.name().to_string()).collect::<Vec<_>>().join(", ");
    let missing_input = |name: &Name, what: &str| {
        err(format!(
            "the model has no input {:?} ({what}){}; its inputs are: {}",
            name.name,
            if name.explicit {
                " although critic.toml names it"
            } else {
                "; name it in critic.toml [inputs]"
            },
            names(inputs)
        ))
    };
    let int64 = |o: &Outlet| -> Result<(), OnnxError> {
        match o.dtype().tensor_type() {
            Some(TensorElementType::Int64) => Ok(()),
            other => Err(err(format!("input {:?} is {other:?}, not int64", o.name()))),
        }
    };
    // Required and optional token inputs.
    let ids = input(&config.input_ids.name).ok_or_else(|| missing_input(&config.input_ids, "token ids"))?;
    int64(ids)?;
    let mask = input(&config.attention_mask.name)
        .ok_or_else(|| missing_input(&config.attention_mask, "attention mask"))?;
    int64(mask)?;
    let optional = |name: &Name, what: &str| -> Result<Option<String>, OnnxError> {
        match input(&name.name) {
            Some(o) => {
                int64(o)?;
                Ok(Some(name.name.clone()))
            }
            None if name.explicit => Err(missing_input(name, what)),
            None => Ok(None),
        }
    };
    let position_ids = optional(&config.position_ids, "position ids")?;
    let token_type_ids = optional(&config.token_type_ids, "token type ids")?;
    let use_cache_branch = match input(&config.use_cache_branch.name) {
        Some(o) if o.dtype().tensor_type() == Some(TensorElementType::Bool) => Some(o.name().to_string()),
        Some(o) => return Err(err(format!("input {:?} is not a bool tensor", o.name()))),
        None if config.use_cache_branch.explicit => {
            return Err(missing_input(&config.use_cache_branch, "use-cache switch"));
        }
        None => None,
    };
    let mut known: Vec<String> =
        [Some(config.input_ids.name.clone()), Some(config.attention_mask.name.clone()), position_ids.clone()]
            .into_iter()
            .chain([token_type_ids.clone(), use_cache_branch.clone()])
            .flatten()
            .collect();

    let io = match config.form {
        ModelForm::Scorer => {
            let name = match output(&config.score.name) {
                Some(o) => o.name().to_string(),
                // The default name is absent, but the model has one output: that is the score.
                None if !config.score.explicit && outputs.len() == 1 => outputs[0].name().to_string(),
                None => {
                    return Err(err(format!(
                        "the model has no output {:?}{}; its outputs are: {}",
                        config.score.name,
                        if config.score.explicit {
                            " although critic.toml names it"
                        } else {
                            "; set outputs.score"
                        },
                        names(outputs)
                    )))
                }
            };
            let o = output(&name).expect("found above");
            if o.dtype().tensor_type() != Some(TensorElementType::Float32) {
                return Err(err(format!("output {name:?} is {:?}, not float32", o.dtype().tensor_type())));
            }
            let width = width(o.dtype());
            let expected = if config.labels.is_empty() { 1 } else { config.labels.len() };
            if let Some(w) = width {
                if w != expected {
                    return Err(err(format!(
                        "output {name:?} has {w} values per input, but critic.toml expects {expected} ({})",
                        if config.labels.is_empty() { "one score" } else { "one per label" }
                    )));
                }
            }
            Io {
                input_ids: config.input_ids.name.clone(),
                attention_mask: config.attention_mask.name.clone(),
                position_ids,
                token_type_ids,
                use_cache_branch,
                output: name,
                output_width: width,
                vocab: None,
                cache: None,
            }
        }
        ModelForm::Generative => {
            let logits = output(&config.logits.name).ok_or_else(|| {
                err(format!(
                    "the model has no output {:?} (the logits); its outputs are: {}",
                    config.logits.name,
                    names(outputs)
                ))
            })?;
            if logits.dtype().tensor_type() != Some(TensorElementType::Float32) {
                return Err(err(format!(
                    "output {:?} is {:?}: only float32 models are supported (export with --dtype fp32)",
                    logits.name(),
                    logits.dtype().tensor_type()
                )));
            }
            let cache = cache(dir, config, inputs, outputs)?;
            for layer in &cache.layers {
                known.push(layer[0].clone());
                known.push(layer[1].clone());
            }
            Io {
                input_ids: config.input_ids.name.clone(),
                attention_mask: config.attention_mask.name.clone(),
                position_ids,
                token_type_ids,
                use_cache_branch,
                output: logits.name().to_string(),
                output_width: None,
                vocab: logits
                    .dtype()
                    .tensor_shape()
                    .and_then(|s| s.get(2).copied())
                    .filter(|&v| v > 0)
                    .map(|v| v as usize),
                cache: Some(cache),
            }
        }
    };
    if let Some(extra) = inputs.iter().find(|o| !known.iter().any(|k| k == o.name())) {
        return Err(err(format!(
            "the model has an input {:?} that critic.toml does not account for (known: {})",
            extra.name(),
            known.join(", ")
        )));
    }
    Ok(io)
}

/// Values per input of a [batch, n] or [batch] output, when the model states it.
fn width(dtype: &ValueType) -> Option<usize> {
    let shape = dtype.tensor_shape()?;
    match shape.len() {
        1 => Some(1),
        2 if shape[1] > 0 => Some(shape[1] as usize),
        _ => None,
    }
}

/// The cache inputs and outputs, layer by layer, with their geometry from the model (or from
/// critic.toml where the model leaves a dimension symbolic).
fn cache<'a>(
    dir: &Path,
    config: &ModelConfig,
    inputs: &'a [Outlet],
    outputs: &'a [Outlet],
) -> Result<CacheIo, OnnxError> {
    let err = |reason: String| OnnxError::model(dir, &config.model_file, reason);
    let layer_name = |pattern: &str, i: usize| pattern.replace("{i}", &i.to_string());
    let find = |list: &'a [Outlet], name: &str| list.iter().find(|o| o.name() == name);
    let mut layers = Vec::new();
    while find(inputs, &layer_name(&config.past_key, layers.len())).is_some() {
        let i = layers.len();
        layers.push([
            layer_name(&config.past_key, i),
            layer_name(&config.past_value, i),
            layer_name(&config.present_key, i),
            layer_name(&config.present_value, i),
        ]);
    }
    if layers.is_empty() {
        return Err(err(format!(
            "the model has no cache input {:?}: export it with its key/value cache \
             (optimum-cli export onnx --task text-generation-with-past), or set inputs.past_key",
            layer_name(&config.past_key, 0)
        )));
    }
    if let Some(n) = config.layers {
        if n != layers.len() {
            return Err(err(format!(
                "critic.toml says cache.layers = {n}, the model has {} cache layers",
                layers.len()
            )));
        }
    }
    let mut kv_heads = config.kv_heads;
    let mut head_dim = config.head_dim;
    for names in &layers {
        for (k, name) in names.iter().enumerate() {
            let outlet = if k < 2 { find(inputs, name) } else { find(outputs, name) }.ok_or_else(|| {
                err(format!("the model has no {} {name:?}", if k < 2 { "input" } else { "output" }))
            })?;
            if outlet.dtype().tensor_type() != Some(TensorElementType::Float32) {
                return Err(err(format!(
                    "{name:?} is {:?}: only float32 caches are supported (export with --dtype fp32)",
                    outlet.dtype().tensor_type()
                )));
            }
            let shape = outlet.dtype().tensor_shape().cloned().unwrap_or_default();
            if shape.len() != 4 {
                return Err(err(format!(
                    "{name:?} has shape {shape}, not [batch, kv_heads, sequence, head_dim]"
                )));
            }
            for (dim, value, key) in [(1, &mut kv_heads, "kv_heads"), (3, &mut head_dim, "head_dim")] {
                if shape[dim] > 0 {
                    let d = shape[dim] as usize;
                    match value {
                        Some(v) if *v != d => {
                            return Err(err(format!(
                                "critic.toml says cache.{key} = {v}, but {name:?} has {d}"
                            )));
                        }
                        _ => *value = Some(d),
                    }
                }
            }
        }
    }
    let missing = |key: &str| {
        err(format!("the model does not state its cache's {key}: set cache.{key} in critic.toml"))
    };
    Ok(CacheIo {
        layers,
        kv_heads: kv_heads.ok_or_else(|| missing("kv_heads"))?,
        head_dim: head_dim.ok_or_else(|| missing("head_dim"))?,
    })
}
