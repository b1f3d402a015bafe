//! `critic.toml`, the file that says what a model directory holds and how to run it. Every key
//! is documented in `models/README.md`; unknown keys are errors.

use std::path::Path;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::Deserialize;

use super::{Label, ModelForm, OnnxError, Pricing};

pub(super) const FILE: &str = "critic.toml";

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    form: RawForm,
    #[serde(default)]
    description: String,
    #[serde(default = "default_model")]
    model: String,
    #[serde(default = "default_tokenizer")]
    tokenizer: String,
    context_length: usize,
    #[serde(default)]
    keep_start_tokens: usize,
    chat_template: Option<String>,
    chat_template_file: Option<String>,
    add_generation_prompt: Option<bool>,
    bos_token: Option<String>,
    eos_token: Option<String>,
    pad_token_id: Option<u32>,
    #[serde(default)]
    eos_token_ids: Vec<u32>,
    #[serde(default)]
    inputs: RawInputs,
    #[serde(default)]
    outputs: RawOutputs,
    cache: Option<RawCache>,
    scorer: Option<RawScorer>,
    price: RawPrice,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawForm {
    Scorer,
    Generative,
}

fn default_model() -> String {
    "model.onnx".into()
}

fn default_tokenizer() -> String {
    "tokenizer.json".into()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInputs {
    input_ids: Option<String>,
    attention_mask: Option<String>,
    position_ids: Option<String>,
    token_type_ids: Option<String>,
    past_key: Option<String>,
    past_value: Option<String>,
    use_cache_branch: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutputs {
    logits: Option<String>,
    score: Option<String>,
    present_key: Option<String>,
    present_value: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    layers: Option<usize>,
    kv_heads: Option<usize>,
    head_dim: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScorer {
    output: RawScorerOutput,
    #[serde(default)]
    labels: Vec<RawLabel>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawScorerOutput {
    Sigmoid,
    Probability,
    Softmax,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLabel {
    name: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    on_track: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrice {
    input_per_mtok: Option<Amount>,
    output_per_mtok: Option<Amount>,
    per_gpu_hour: Option<Amount>,
    per_cpu_hour: Option<Amount>,
}

/// A price as TOML allows it: a decimal string (exact) or a number.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Amount {
    Text(String),
    Integer(i64),
    Float(f64),
}

/// What is wrong with `[price]` (it becomes the reason of an [`OnnxError::Model`]).
#[derive(Debug, thiserror::Error)]
enum PriceError {
    /// `written` is the amount as the file spells it (a string quoted).
    #[error("{key} = {written}: {source}")]
    NotADecimal { key: String, written: String, source: rust_decimal::Error },
    #[error("{key} is negative")]
    Negative { key: String },
    #[error(
        "price must be exactly one of {{ input_per_mtok, output_per_mtok }} (both), {{ per_gpu_hour }} or \
         {{ per_cpu_hour }}"
    )]
    NotOneForm,
}

impl Amount {
    fn decimal(&self, key: &str) -> Result<Decimal, PriceError> {
        let not_a_decimal =
            |written: String| move |source| PriceError::NotADecimal { key: key.to_string(), written, source };
        let parsed = match self {
            Amount::Text(s) => Decimal::from_str(s.trim()).map_err(not_a_decimal(format!("{s:?}"))),
            Amount::Integer(i) => Ok(Decimal::from(*i)),
            // The shortest decimal that reads back as this float, so 0.05 is exactly 0.05.
            Amount::Float(f) => Decimal::from_str(&f.to_string()).map_err(not_a_decimal(f.to_string())),
        }?;
        if parsed.is_sign_negative() {
            return Err(PriceError::Negative { key: key.to_string() });
        }
        Ok(parsed)
    }
}

/// Which input or output names the model is run with. `required` names must exist in the model;
/// an optional one is fed only when the model has it.
#[derive(Debug, Clone)]
pub(super) struct Name {
    pub name: String,
    /// Written in critic.toml (so the model must have it), rather than a default.
    pub explicit: bool,
}

impl Name {
    fn new(raw: Option<String>, default: &str) -> Name {
        match raw {
            Some(name) => Name { name, explicit: true },
            None => Name { name: default.into(), explicit: false },
        }
    }
}

/// What the scorer's output means.
#[derive(Debug, Clone)]
pub(super) enum ScorerHead {
    /// One logit per input; P(on track) = sigmoid(logit).
    Sigmoid,
    /// One value per input that already is P(on track).
    Probability,
    /// One logit per label; softmax gives the distribution.
    Softmax,
}

/// critic.toml, checked.
#[derive(Debug, Clone)]
pub(super) struct ModelConfig {
    pub form: ModelForm,
    pub description: String,
    pub model_file: String,
    pub tokenizer_file: String,
    pub context_length: usize,
    pub keep_start_tokens: usize,
    /// The template's text, and the file it came from (for errors).
    pub chat_template: String,
    pub chat_template_source: String,
    pub add_generation_prompt: bool,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub pad_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub input_ids: Name,
    pub attention_mask: Name,
    pub position_ids: Name,
    pub token_type_ids: Name,
    pub use_cache_branch: Name,
    /// `{i}` stands for the layer index.
    pub past_key: String,
    pub past_value: String,
    pub present_key: String,
    pub present_value: String,
    pub logits: Name,
    pub score: Name,
    pub layers: Option<usize>,
    pub kv_heads: Option<usize>,
    pub head_dim: Option<usize>,
    pub scorer_head: ScorerHead,
    pub labels: Vec<Label>,
    pub price: Pricing,
}

/// Reads and checks `dir/critic.toml` (and the chat template file it names).
pub(super) fn read(dir: &Path) -> Result<ModelConfig, OnnxError> {
    let path = dir.join(FILE);
    let err = |reason: String| OnnxError::model(dir, FILE, reason);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(err(
                "missing: every model directory needs a critic.toml (see models/README.md)".into()
            ))
        }
        Err(e) => return Err(err(format!("cannot read: {e}"))),
    };
    let raw: Raw = toml::from_str(&text).map_err(|e| err(e.to_string().trim_end().to_string()))?;
    check(dir, raw)
}

fn check(dir: &Path, raw: Raw) -> Result<ModelConfig, OnnxError> {
    let err = |reason: String| OnnxError::model(dir, FILE, reason);
    let form = match raw.form {
        RawForm::Scorer => ModelForm::Scorer,
        RawForm::Generative => ModelForm::Generative,
    };
    if raw.context_length == 0 {
        return Err(err("context_length must be at least 1".into()));
    }
    if raw.keep_start_tokens >= raw.context_length {
        return Err(err(format!(
            "keep_start_tokens ({}) must be less than context_length ({})",
            raw.keep_start_tokens, raw.context_length
        )));
    }
    let (chat_template, chat_template_source) = match (raw.chat_template, raw.chat_template_file) {
        (Some(_), Some(_)) => {
            return Err(err("give chat_template or chat_template_file, not both".into()));
        }
        (Some(text), None) => (text, FILE.to_string()),
        (None, Some(file)) => {
            let text = std::fs::read_to_string(dir.join(&file))
                .map_err(|e| OnnxError::model(dir, &file, format!("cannot read the chat template: {e}")))?;
            (text, file)
        }
        (None, None) => default_template(dir)?,
    };
    let price = price(raw.price).map_err(|e| err(e.to_string()))?;
    let (scorer_head, labels) = match (form, raw.scorer) {
        (ModelForm::Scorer, None) => {
            return Err(
                err("a scorer needs a [scorer] table saying what its output is (output = ...)".into()),
            )
        }
        (ModelForm::Generative, Some(_)) => return Err(err("[scorer] is for form = \"scorer\" only".into())),
        (ModelForm::Generative, None) => (ScorerHead::Sigmoid, Vec::new()),
        (ModelForm::Scorer, Some(scorer)) => {
            let labels: Vec<Label> = scorer
                .labels
                .into_iter()
                .map(|l| Label { name: l.name, message: l.message, on_track: l.on_track })
                .collect();
            let head = match scorer.output {
                RawScorerOutput::Sigmoid | RawScorerOutput::Probability if !labels.is_empty() => {
                    return Err(err(
                        "scorer.labels go with output = \"softmax\" (a distribution over the labels)".into(),
                    ))
                }
                RawScorerOutput::Sigmoid => ScorerHead::Sigmoid,
                RawScorerOutput::Probability => ScorerHead::Probability,
                RawScorerOutput::Softmax if labels.len() < 2 => {
                    return Err(err("output = \"softmax\" needs at least two scorer.labels".into()))
                }
                RawScorerOutput::Softmax => ScorerHead::Softmax,
            };
            let mut names: Vec<&str> = labels.iter().map(|l| l.name.as_str()).collect();
            names.sort_unstable();
            if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
                return Err(err(format!("scorer.labels: the name {:?} appears twice", w[0])));
            }
            (head, labels)
        }
    };
    if form == ModelForm::Generative && raw.eos_token_ids.is_empty() {
        return Err(err("a generative model needs eos_token_ids (the ids that end an answer)".into()));
    }
    if form == ModelForm::Scorer && raw.cache.is_some() {
        return Err(err("[cache] is for form = \"generative\" only".into()));
    }
    let cache = raw.cache.unwrap_or(RawCache { layers: None, kv_heads: None, head_dim: None });
    for (key, value) in [("layers", cache.layers), ("kv_heads", cache.kv_heads), ("head_dim", cache.head_dim)]
    {
        if value == Some(0) {
            return Err(err(format!("cache.{key} must be at least 1")));
        }
    }
    let with_layer = |key: &str, value: Option<String>, default: &str| -> Result<String, OnnxError> {
        let value = value.unwrap_or_else(|| default.into());
        if value.contains("{i}") {
            Ok(value)
        } else {
            Err(err(format!("{key} = {value:?} must contain {{i}} (the layer index)")))
        }
    };
    Ok(ModelConfig {
        form,
        description: raw.description,
        model_file: raw.model,
        tokenizer_file: raw.tokenizer,
        context_length: raw.context_length,
        keep_start_tokens: raw.keep_start_tokens,
        chat_template,
        chat_template_source,
        add_generation_prompt: raw.add_generation_prompt.unwrap_or(form == ModelForm::Generative),
        bos_token: raw.bos_token,
        eos_token: raw.eos_token,
        pad_token_id: raw.pad_token_id,
        eos_token_ids: raw.eos_token_ids,
        input_ids: Name::new(raw.inputs.input_ids, "input_ids"),
        attention_mask: Name::new(raw.inputs.attention_mask, "attention_mask"),
        position_ids: Name::new(raw.inputs.position_ids, "position_ids"),
        token_type_ids: Name::new(raw.inputs.token_type_ids, "token_type_ids"),
        use_cache_branch: Name::new(raw.inputs.use_cache_branch, "use_cache_branch"),
        past_key: with_layer("inputs.past_key", raw.inputs.past_key, "past_key_values.{i}.key")?,
        past_value: with_layer("inputs.past_value", raw.inputs.past_value, "past_key_values.{i}.value")?,
        present_key: with_layer("outputs.present_key", raw.outputs.present_key, "present.{i}.key")?,
        present_value: with_layer("outputs.present_value", raw.outputs.present_value, "present.{i}.value")?,
        logits: Name::new(raw.outputs.logits, "logits"),
        score: Name::new(raw.outputs.score, "logits"),
        layers: cache.layers,
        kv_heads: cache.kv_heads,
        head_dim: cache.head_dim,
        scorer_head,
        labels,
        price,
    })
}

/// No template in critic.toml: `chat_template.jinja`, else the `chat_template` of
/// `tokenizer_config.json` (what an `optimum` export carries over from the Hugging Face model).
fn default_template(dir: &Path) -> Result<(String, String), OnnxError> {
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        let text = std::fs::read_to_string(&jinja)
            .map_err(|e| OnnxError::model(dir, "chat_template.jinja", format!("cannot read: {e}")))?;
        return Ok((text, "chat_template.jinja".into()));
    }
    let config = dir.join("tokenizer_config.json");
    if config.is_file() {
        let file = "tokenizer_config.json";
        let text = std::fs::read_to_string(&config)
            .map_err(|e| OnnxError::model(dir, file, format!("cannot read: {e}")))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| OnnxError::model(dir, file, format!("not JSON: {e}")))?;
        if let Some(template) = value.get("chat_template").and_then(|t| t.as_str()) {
            return Ok((template.to_string(), file.into()));
        }
    }
    Err(OnnxError::model(
        dir,
        FILE,
        "no chat template: set chat_template (or chat_template_file), or put chat_template.jinja or a \
         tokenizer_config.json with a chat_template in the directory"
            .into(),
    ))
}

fn price(raw: RawPrice) -> Result<Pricing, PriceError> {
    let d =
        |a: &Option<Amount>, key: &str| a.as_ref().map(|a| a.decimal(&format!("price.{key}"))).transpose();
    let input = d(&raw.input_per_mtok, "input_per_mtok")?;
    let output = d(&raw.output_per_mtok, "output_per_mtok")?;
    let gpu = d(&raw.per_gpu_hour, "per_gpu_hour")?;
    let cpu = d(&raw.per_cpu_hour, "per_cpu_hour")?;
    match (input, output, gpu, cpu) {
        (Some(input), Some(output), None, None) => Ok(Pricing::PerMtok { input, output }),
        (None, None, Some(hour), None) => Ok(Pricing::PerGpuHour(hour)),
        (None, None, None, Some(hour)) => Ok(Pricing::PerCpuHour(hour)),
        _ => Err(PriceError::NotOneForm),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ModelConfig, String> {
        let raw: Raw = toml::from_str(text).map_err(|e| e.to_string())?;
        check(Path::new("/nonexistent"), raw).map_err(|e| e.to_string())
    }

    const SCORER: &str = r#"
form = "scorer"
context_length = 512
chat_template = "{% for m in messages %}{{ m.content }}{% endfor %}"
[scorer]
output = "sigmoid"
[price]
per_cpu_hour = "0.04"
"#;

    #[test]
    fn defaults_are_those_of_an_optimum_export() {
        let c = parse(SCORER).unwrap();
        assert_eq!(c.form, ModelForm::Scorer);
        assert_eq!(c.model_file, "model.onnx");
        assert_eq!(c.tokenizer_file, "tokenizer.json");
        assert_eq!(c.input_ids.name, "input_ids");
        assert!(!c.input_ids.explicit);
        assert_eq!(c.past_key, "past_key_values.{i}.key");
        assert_eq!(c.present_value, "present.{i}.value");
        assert!(!c.add_generation_prompt);
        assert_eq!(c.price, Pricing::PerCpuHour(Decimal::from_str("0.04").unwrap()));
    }

    #[test]
    fn prices_are_exact_decimals_from_strings_or_numbers() {
        let per_token =
            SCORER.replace("per_cpu_hour = \"0.04\"", "input_per_mtok = 0.05\noutput_per_mtok = \"0.20\"");
        let c = parse(&per_token).unwrap();
        assert_eq!(
            c.price,
            Pricing::PerMtok {
                input: Decimal::from_str("0.05").unwrap(),
                output: Decimal::from_str("0.20").unwrap()
            }
        );
        let gpu = SCORER.replace("per_cpu_hour = \"0.04\"", "per_gpu_hour = 2");
        assert_eq!(parse(&gpu).unwrap().price, Pricing::PerGpuHour(Decimal::from(2)));
        let half = SCORER.replace("per_cpu_hour = \"0.04\"", "input_per_mtok = 1");
        assert!(parse(&half).unwrap_err().contains("exactly one of"));
        let negative = SCORER.replace("\"0.04\"", "\"-1\"");
        assert!(parse(&negative).unwrap_err().contains("negative"));
        let text = SCORER.replace("\"0.04\"", "\"four cents\"");
        assert!(parse(&text).unwrap_err().contains("price.per_cpu_hour"));
    }

    #[test]
    fn unknown_keys_and_bad_forms_are_named() {
        let unknown = SCORER.replace("context_length = 512", "context_length = 512\ncontext = 3");
        assert!(parse(&unknown).unwrap_err().contains("unknown field `context`"));
        let form = SCORER.replace("\"scorer\"\ncontext", "\"classifier\"\ncontext");
        let e = parse(&form).unwrap_err();
        assert!(e.contains("unknown variant `classifier`") && e.contains("scorer"), "{e}");
        let no_head = SCORER.replace("[scorer]\noutput = \"sigmoid\"\n", "");
        assert!(parse(&no_head).unwrap_err().contains("[scorer]"));
    }

    #[test]
    fn softmax_needs_labels_and_sigmoid_refuses_them() {
        let softmax = SCORER.replace(
            "output = \"sigmoid\"",
            "output = \"softmax\"\nlabels = [{ name = \"ok\", on_track = true }, { name = \"loop\", message = \"Stop repeating.\" }]",
        );
        let c = parse(&softmax).unwrap();
        assert_eq!(c.labels.len(), 2);
        assert_eq!(c.labels[1].message, "Stop repeating.");
        assert!(c.labels[0].on_track && !c.labels[1].on_track);
        let one =
            SCORER.replace("output = \"sigmoid\"", "output = \"softmax\"\nlabels = [{ name = \"ok\" }]");
        assert!(parse(&one).unwrap_err().contains("at least two"));
        let twice = SCORER.replace(
            "output = \"sigmoid\"",
            "output = \"softmax\"\nlabels = [{ name = \"ok\" }, { name = \"ok\" }]",
        );
        assert!(parse(&twice).unwrap_err().contains("appears twice"));
        let sigmoid =
            SCORER.replace("output = \"sigmoid\"", "output = \"sigmoid\"\nlabels = [{ name = \"a\" }]");
        assert!(parse(&sigmoid).unwrap_err().contains("softmax"));
    }

    #[test]
    fn generative_needs_eos_and_layer_patterns() {
        let generative =
            SCORER.replace("\"scorer\"", "\"generative\"").replace("[scorer]\noutput = \"sigmoid\"\n", "");
        assert!(parse(&generative).unwrap_err().contains("eos_token_ids"));
        let ok = generative.replace("context_length = 512", "context_length = 512\neos_token_ids = [2]");
        let c = parse(&ok).unwrap();
        assert!(c.add_generation_prompt);
        let bad = format!("{ok}\n[inputs]\npast_key = \"past.key\"\n");
        assert!(parse(&bad).unwrap_err().contains("{i}"));
        let cache = format!("{ok}\n[cache]\nlayers = 0\n");
        assert!(parse(&cache).unwrap_err().contains("cache.layers"));
    }

    #[test]
    fn truncation_keeps_room_for_the_tail() {
        let keep = SCORER.replace("context_length = 512", "context_length = 512\nkeep_start_tokens = 512");
        assert!(parse(&keep).unwrap_err().contains("keep_start_tokens"));
    }
}
