//! Text in and out of a model: its chat template and its tokenizer, with the truncation rule.

use std::path::Path;

use minijinja::{Environment, ErrorKind, Value};
use tokenizers::{Encoding, PostProcessor, Tokenizer, TruncationDirection};

use super::config::ModelConfig;
use super::OnnxError;

/// Tokens beyond the window that are encoded and thrown away when only the end of a long text is
/// encoded (see [`Text::encode_window`]): where the text was cut, the first tokens may differ
/// from those of the whole text; well past the cut they are the same.
const CUT_MARGIN_TOKENS: usize = 64;

/// Bytes of text per token assumed when cutting a long text before encoding it. A text denser
/// than this (one byte per token or less) makes the cut grow until it holds enough tokens.
const BYTES_PER_TOKEN_GUESS: usize = 6;

pub(super) struct Text {
    pub(super) tokenizer: Tokenizer,
    template: Environment<'static>,
    add_generation_prompt: bool,
    bos_token: String,
    eos_token: String,
    /// Tokens the model reads at most (specials included), and how many of the first ones
    /// truncation keeps.
    context_length: usize,
    keep_start: usize,
    specials: usize,
}

/// The template's name inside the environment.
const TEMPLATE: &str = "chat_template";

impl Text {
    pub(super) fn load(dir: &Path, config: &ModelConfig) -> Result<Text, OnnxError> {
        let file = config.tokenizer_file.as_str();
        let path = dir.join(file);
        if !path.is_file() {
            return Err(OnnxError::model(
                dir,
                file,
                "missing: the model's tokenizer (a Hugging Face tokenizer.json)".into(),
            ));
        }
        let mut tokenizer = Tokenizer::from_file(&path)
            .map_err(|e| OnnxError::model(dir, file, format!("not a tokenizer this build can read: {e}")))?;
        // Truncation and padding are ours (left truncation, batch padding), not the file's.
        tokenizer
            .with_truncation(None)
            .map_err(|e| OnnxError::model(dir, file, format!("cannot turn off its truncation: {e}")))?;
        tokenizer.with_padding(None);
        let specials = tokenizer.get_post_processor().map_or(0, |p| p.added_tokens(false));
        if specials >= config.context_length.saturating_sub(config.keep_start_tokens) {
            return Err(OnnxError::model(
                dir,
                super::config::FILE,
                format!(
                    "context_length {} leaves no room next to {specials} special tokens",
                    config.context_length
                ),
            ));
        }
        let token_text = |id: u32| tokenizer.id_to_token(id).unwrap_or_default();
        let bos_token = config.bos_token.clone().unwrap_or_default();
        let eos_token = config
            .eos_token
            .clone()
            .or_else(|| config.eos_token_ids.first().map(|&id| token_text(id)))
            .unwrap_or_default();
        let template = template_env(&config.chat_template).map_err(|e| {
            OnnxError::model(dir, &config.chat_template_source, format!("chat template: {e:#}"))
        })?;
        Ok(Text {
            tokenizer,
            template,
            add_generation_prompt: config.add_generation_prompt,
            bos_token,
            eos_token,
            context_length: config.context_length,
            keep_start: config.keep_start_tokens,
            specials,
        })
    }

    /// The chat template applied to `messages`, as Hugging Face's `apply_chat_template` does.
    pub(super) fn render(&self, messages: &[serde_json::Value]) -> Result<String, OnnxError> {
        let template =
            self.template.get_template(TEMPLATE).map_err(|e| OnnxError::Invalid(format!("{e:#}")))?;
        template
            .render(minijinja::context! {
                messages => Value::from_serialize(messages),
                add_generation_prompt => self.add_generation_prompt,
                bos_token => self.bos_token.as_str(),
                eos_token => self.eos_token.as_str(),
            })
            .map_err(|e| OnnxError::Invalid(format!("the chat template cannot render these messages: {e:#}")))
    }

    /// Tokens of `text` (no special tokens added).
    pub(super) fn count(&self, text: &str) -> usize {
        self.tokenizer.encode_fast(text, false).map_or_else(|_| text.len().div_ceil(4), |e| e.len())
    }

    /// The ids the model reads for `text`, at most `limit` of them (specials included): when the
    /// text is longer, the first `keep_start_tokens` tokens and the last ones are kept (left
    /// truncation: the end of a trajectory matters most). Special tokens of the tokenizer's
    /// post-processor are added around them.
    pub(super) fn encode_window(&self, text: &str, limit: usize) -> Result<Vec<i64>, OnnxError> {
        let limit = limit.min(self.context_length);
        let budget = limit.saturating_sub(self.specials);
        if budget <= self.keep_start {
            return Err(OnnxError::Invalid(format!(
                "{limit} tokens leave no room for the text (keep_start_tokens {}, {} special tokens)",
                self.keep_start, self.specials
            )));
        }
        let encode = |s: &str| {
            self.tokenizer
                .encode_fast(s, false)
                .map_err(|e| OnnxError::Invalid(format!("cannot tokenize the input: {e}")))
        };
        let mut encoding = match self.encode_tail(text, budget)? {
            Some(tail) => tail,
            None => encode(text)?,
        };
        if encoding.len() > budget {
            encoding = if self.keep_start == 0 {
                cut_left(encoding, budget)
            } else {
                let mut head = encoding.clone();
                head.truncate(self.keep_start, 0, TruncationDirection::Right);
                head.take_overflowing();
                let tail = cut_left(encoding, budget - self.keep_start);
                Encoding::merge([head, tail], false)
            };
        }
        let encoding = self
            .tokenizer
            .post_process(encoding, None, true)
            .map_err(|e| OnnxError::Invalid(format!("cannot add the special tokens: {e}")))?;
        Ok(encoding.get_ids().iter().map(|&id| i64::from(id)).collect())
    }

    /// For a text far longer than the window (and no head to keep): the encoding of only its
    /// end, holding at least `budget` tokens plus a margin that is dropped with the cut. `None`
    /// when the whole text must be encoded.
    fn encode_tail(&self, text: &str, budget: usize) -> Result<Option<Encoding>, OnnxError> {
        if self.keep_start > 0 {
            return Ok(None);
        }
        let mut bytes = (budget + CUT_MARGIN_TOKENS) * BYTES_PER_TOKEN_GUESS;
        while bytes * 2 < text.len() {
            let mut cut = text.len() - bytes;
            while !text.is_char_boundary(cut) {
                cut += 1;
            }
            let encoding = self
                .tokenizer
                .encode_fast(&text[cut..], false)
                .map_err(|e| OnnxError::Invalid(format!("cannot tokenize the input: {e}")))?;
            if encoding.len() >= budget + CUT_MARGIN_TOKENS {
                return Ok(Some(cut_left(encoding, budget)));
            }
            bytes *= 2;
        }
        Ok(None)
    }

    pub(super) fn decode(&self, ids: &[u32]) -> String {
        self.tokenizer.decode(ids, true).unwrap_or_default()
    }
}

/// The last `n` tokens.
fn cut_left(mut encoding: Encoding, n: usize) -> Encoding {
    encoding.truncate(n, 0, TruncationDirection::Left);
    encoding.take_overflowing();
    encoding
}

/// A template environment that renders as Hugging Face's does (jinja2 with `trim_blocks` and
/// `lstrip_blocks`, Python string methods such as `.startswith`, `raise_exception`).
fn template_env(source: &str) -> Result<Environment<'static>, minijinja::Error> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(false);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |message: String| -> Result<Value, minijinja::Error> {
        Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
    });
    env.add_template_owned(TEMPLATE, source.to_string())?;
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(source: &str, messages: serde_json::Value) -> Result<String, String> {
        let env = template_env(source).map_err(|e| e.to_string())?;
        let template = env.get_template(TEMPLATE).map_err(|e| e.to_string())?;
        template
            .render(minijinja::context! { messages => messages, add_generation_prompt => true })
            .map_err(|e| format!("{e:#}"))
    }

    /// The constructs of Hugging Face chat templates (Qwen's among them): namespaces, reversed
    /// slices, Python string methods, `is string`, `tojson`, `raise_exception`, and jinja2's
    /// `trim_blocks`/`lstrip_blocks` whitespace.
    #[test]
    fn hugging_face_style_templates_render() {
        let source = r#"
{%- set ns = namespace(last_user=-1) %}
{%- for message in messages[::-1] %}
    {%- if ns.last_user < 0 and message.role == "user" and message.content is string %}
        {%- set ns.last_user = (messages|length - 1) - loop.index0 %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.role not in ["system", "user", "assistant"] %}
        {{- raise_exception("unknown role " + message.role) }}
    {%- endif %}
    {%- set content = message.content %}
    {%- if '</think>' in content %}
        {%- set content = content.split('</think>')[-1].lstrip('\n') %}
    {%- endif %}
    {%- if content.startswith('#') and content.endswith('!') %}
        {%- set content = content.strip('#!').upper() %}
    {%- endif %}
    {{- '<|im_start|>' + message.role + '\n' + content.rstrip() + '<|im_end|>\n' }}
    {%- if loop.index0 == ns.last_user %}{{ {"last": true}|tojson }}
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"#;
        let messages = serde_json::json!([
            {"role": "system", "content": "Be brief.  "},
            {"role": "user", "content": "#hello!"},
            {"role": "assistant", "content": "<think>hm</think>\n\nok"},
        ]);
        assert_eq!(
            render(source, messages).unwrap(),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHELLO<|im_end|>\n{\"last\":true}\n\
             <|im_start|>assistant\nok<|im_end|>\n<|im_start|>assistant\n"
        );
        let e = render(source, serde_json::json!([{"role": "tool", "content": "x"}])).unwrap_err();
        assert!(e.contains("unknown role tool"), "{e}");
    }

    #[test]
    fn block_tags_eat_their_line_as_in_jinja2_with_trim_blocks() {
        let source =
            "{% for m in messages %}\n  {% if m.role %}\n[{{ m.role }}]\n  {% endif %}\n{% endfor %}";
        let messages = serde_json::json!([{"role": "a"}, {"role": "b"}]);
        assert_eq!(render(source, messages).unwrap(), "[a]\n[b]\n");
    }
}
