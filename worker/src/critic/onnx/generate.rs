//! Batched generation with a key/value cache.
//!
//! Each prompt of a batch is prefilled on its own (prefill is compute-bound: batching it gains
//! nothing on a CPU), in chunks through the cache when its logits would be large. The caches are
//! then stacked left-padded to the longest prompt (attention mask 0 on the padding, position ids
//! counting real tokens only, as Hugging Face does), and all unfinished sequences decode one
//! token per step together, the cache shared as one [rows, kv_heads, length, head_dim] tensor
//! per layer. A sequence that finishes leaves the
//! batch: its row is dropped from the cache. Each sequence samples with its own seeded
//! generator, so its tokens do not depend on what it was batched with.

use ort::session::SessionInputValue;
use ort::value::{DynValue, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::batcher::Engine;
use super::scorer::inference_error;
use super::session::CacheIo;
use super::{FinishReason, GenParams, OnnxError};

/// The prefill's logits ([1, prompt length, vocabulary] floats: every position, as `optimum`
/// exports compute them) are kept under this size by prefilling a long prompt in chunks.
const PREFILL_LOGITS_BYTES: usize = 512 << 20;

/// The vocabulary assumed for that bound when the model does not state its own.
const VOCAB_GUESS: usize = 256_000;

pub(super) struct Finished {
    pub text: String,
    /// Tokens generated, the end-of-sequence token included.
    pub ids: Vec<u32>,
    pub finish: FinishReason,
}

struct Sequence {
    params: GenParams,
    prompt_len: usize,
    /// Generated tokens, without an end-of-sequence token.
    generated: Vec<u32>,
    /// The end-of-sequence token that ended it.
    eos: Option<u32>,
    rng: ChaCha8Rng,
    text: Option<String>,
    finish: Option<FinishReason>,
}

impl Engine {
    pub(super) fn generate(
        &mut self,
        requests: Vec<(Vec<i64>, GenParams)>,
    ) -> Result<Vec<Finished>, OnnxError> {
        let cache = self.io.cache.clone().ok_or_else(|| OnnxError::Inference("no cache".into()))?;
        let longest = requests.iter().map(|(ids, _)| ids.len()).max().unwrap_or(0);
        let mut seqs: Vec<Sequence> = requests
            .iter()
            .map(|(ids, params)| Sequence {
                params: params.clone(),
                prompt_len: ids.len(),
                generated: Vec::new(),
                eos: None,
                rng: ChaCha8Rng::seed_from_u64(params.seed),
                text: None,
                finish: None,
            })
            .collect();
        // Row r of the batch is sequence active[r]; masks[r] is its attention mask so far.
        let mut active: Vec<usize> = (0..seqs.len()).collect();
        let mut masks: Vec<Vec<i64>> = requests
            .iter()
            .map(|(ids, _)| {
                let mut mask = vec![0i64; longest - ids.len()];
                mask.resize(longest, 1);
                mask
            })
            .collect();
        let (mut logits, mut past) = self.prefill(&requests, longest, &cache)?;

        loop {
            // Choose each row's next token; note who is done.
            for (row, &s) in active.iter().enumerate() {
                let token = choose(&logits[row], &mut seqs[s]);
                let seq = &mut seqs[s];
                if self.eos_ids.contains(&token) {
                    seq.eos = Some(token);
                    seq.finish = Some(FinishReason::Eos);
                    continue;
                }
                seq.generated.push(token);
                if !seq.params.stop.is_empty() {
                    let text = self.text.decode(&seq.generated);
                    if let Some(at) = seq.params.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
                        seq.text = Some(text[..at].to_string());
                        seq.finish = Some(FinishReason::Stop);
                        continue;
                    }
                }
                let tokens = seq.generated.len();
                if tokens >= seq.params.max_new_tokens || seq.prompt_len + tokens >= self.context_length {
                    seq.finish = Some(FinishReason::Length);
                }
            }
            let keep: Vec<usize> =
                (0..active.len()).filter(|&row| seqs[active[row]].finish.is_none()).collect();
            if keep.is_empty() {
                break;
            }
            if keep.len() < active.len() {
                past = past.into_iter().map(|v| keep_rows(v, &keep)).collect::<Result<_, _>>()?;
                active = keep.iter().map(|&row| active[row]).collect();
                masks = keep.iter().map(|&row| std::mem::take(&mut masks[row])).collect();
            }
            // One step for every row still going.
            let rows = active.len();
            let last: Vec<i64> =
                active.iter().map(|&s| i64::from(*seqs[s].generated.last().expect("a token"))).collect();
            let positions: Vec<i64> =
                active.iter().map(|&s| (seqs[s].prompt_len + seqs[s].generated.len() - 1) as i64).collect();
            for mask in &mut masks {
                mask.push(1);
            }
            let total = masks[0].len();
            let mask: Vec<i64> = masks.iter().flatten().copied().collect();
            let (next_logits, next_past) = self.step(rows, last, mask, total, positions, past, &cache)?;
            logits = next_logits;
            past = next_past;
        }

        Ok(seqs
            .into_iter()
            .map(|seq| {
                let text = match seq.text {
                    Some(text) => text,
                    None => self.text.decode(&seq.generated),
                };
                let mut ids = seq.generated;
                ids.extend(seq.eos);
                Finished { text, ids, finish: seq.finish.unwrap_or(FinishReason::Length) }
            })
            .collect())
    }

    /// Runs each prompt on its own (in chunks that keep the logits within bounds), then stacks
    /// the caches left-padded into one batch. Prefill is compute-bound, so batching it gains
    /// nothing on a CPU; each row's prefill is exactly its unbatched computation.
    /// Returns each row's last logits and the cache (one value per past input, rows in order).
    fn prefill(
        &mut self,
        requests: &[(Vec<i64>, GenParams)],
        longest: usize,
        cache: &CacheIo,
    ) -> Result<(Vec<Vec<f32>>, Vec<DynValue>), OnnxError> {
        let vocab = self.io.vocab.unwrap_or(VOCAB_GUESS);
        let chunk = (PREFILL_LOGITS_BYTES / (vocab * 4)).max(16);
        let mut logits = Vec::with_capacity(requests.len());
        let mut caches = Vec::with_capacity(requests.len());
        for (prompt, _) in requests {
            let mut past = (0..cache.layers.len() * 2)
                .map(|_| {
                    Tensor::from_array(([1, cache.kv_heads, 0, cache.head_dim], Vec::<f32>::new()))
                        .map(|t| t.into_dyn())
                        .map_err(inference_error)
                })
                .collect::<Result<Vec<_>, _>>()?;
            let mut last = Vec::new();
            let mut done = 0;
            for part in prompt.chunks(chunk) {
                let end = done + part.len();
                let (l, p) = self.step(
                    1,
                    part.to_vec(),
                    vec![1; end],
                    end,
                    (done as i64..end as i64).collect(),
                    past,
                    cache,
                )?;
                (last, past, done) = (l, p, end);
            }
            logits.extend(last);
            caches.push(past);
        }
        if caches.len() == 1 {
            return Ok((logits, caches.pop().expect("one row")));
        }
        let stacked = (0..cache.layers.len() * 2)
            .map(|k| stack_left_padded(caches.iter().map(|c| &c[k]).collect(), longest))
            .collect::<Result<_, _>>()?;
        Ok((logits, stacked))
    }

    /// One run of the model over `ids` ([rows, ids.len() / rows]) after the cache `past`.
    /// Returns each row's logits at the last position, and the new cache.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        rows: usize,
        ids: Vec<i64>,
        mask: Vec<i64>,
        total: usize,
        positions: Vec<i64>,
        past: Vec<DynValue>,
        cache: &CacheIo,
    ) -> Result<(Vec<Vec<f32>>, Vec<DynValue>), OnnxError> {
        let seq = ids.len() / rows;
        let first_step =
            past.first().and_then(|p| p.dtype().tensor_shape().and_then(|s| s.get(2).copied())) == Some(0);
        let mut feed: Vec<(String, SessionInputValue<'_>)> = vec![
            (
                self.io.input_ids.clone(),
                Tensor::from_array(([rows, seq], ids)).map_err(inference_error)?.into(),
            ),
            (
                self.io.attention_mask.clone(),
                Tensor::from_array(([rows, total], mask)).map_err(inference_error)?.into(),
            ),
        ];
        if let Some(name) = &self.io.position_ids {
            feed.push((
                name.clone(),
                Tensor::from_array(([rows, seq], positions)).map_err(inference_error)?.into(),
            ));
        }
        if let Some(name) = &self.io.token_type_ids {
            feed.push((
                name.clone(),
                Tensor::from_array(([rows, seq], vec![0i64; rows * seq])).map_err(inference_error)?.into(),
            ));
        }
        if let Some(name) = &self.io.use_cache_branch {
            feed.push((
                name.clone(),
                Tensor::from_array(([1usize], vec![!first_step])).map_err(inference_error)?.into(),
            ));
        }
        let mut past = past.into_iter();
        for names in &cache.layers {
            for name in &names[0..2] {
                let value =
                    past.next().ok_or_else(|| OnnxError::Inference(format!("no cache value for {name}")))?;
                feed.push((name.clone(), value.into()));
            }
        }
        let mut outputs = self.session.run(feed).map_err(inference_error)?;
        let value =
            outputs.get(&self.io.output).ok_or_else(|| OnnxError::Inference("no logits output".into()))?;
        let (shape, data) = value.try_extract_tensor::<f32>().map_err(inference_error)?;
        if shape.len() != 3 || shape[0] as usize != rows || shape[1] as usize != seq {
            return Err(OnnxError::Inference(format!(
                "logits of shape {shape} for {rows} rows of {seq} tokens"
            )));
        }
        let vocab = shape[2] as usize;
        let logits = (0..rows)
            .map(|r| data[((r * seq) + seq - 1) * vocab..(r * seq + seq) * vocab].to_vec())
            .collect();
        let mut present = Vec::with_capacity(cache.layers.len() * 2);
        for names in &cache.layers {
            for name in &names[2..4] {
                present.push(
                    outputs.remove(name).ok_or_else(|| OnnxError::Inference(format!("no output {name}")))?,
                );
            }
        }
        Ok((logits, present))
    }
}

/// The next token of a sequence from its logits: the first maximum when greedy, else sampled
/// (temperature, then nucleus) with the sequence's own generator.
fn choose(logits: &[f32], seq: &mut Sequence) -> u32 {
    let t = seq.params.temperature;
    if t <= 0.0 {
        return argmax(logits) as u32;
    }
    let max = logits.iter().copied().filter(|x| !x.is_nan()).fold(f32::NEG_INFINITY, f32::max);
    let mut probs: Vec<(usize, f64)> = logits
        .iter()
        .enumerate()
        .map(|(i, &x)| (i, if x.is_nan() { 0.0 } else { (f64::from(x - max) / f64::from(t)).exp() }))
        .collect();
    let sum: f64 = probs.iter().map(|p| p.1).sum();
    probs.iter_mut().for_each(|p| p.1 /= sum);
    if seq.params.top_p < 1.0 {
        probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut acc = 0.0;
        let mut keep = probs.len();
        for (i, p) in probs.iter().enumerate() {
            acc += p.1;
            if acc >= f64::from(seq.params.top_p) {
                keep = i + 1;
                break;
            }
        }
        probs.truncate(keep);
    }
    let total: f64 = probs.iter().map(|p| p.1).sum();
    let mut draw = seq.rng.gen::<f64>() * total;
    for &(i, p) in &probs {
        if draw < p {
            return i as u32;
        }
        draw -= p;
    }
    probs.last().map_or(0, |p| p.0 as u32)
}

fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] || values[best].is_nan() {
            best = i;
        }
    }
    best
}

/// The rows `keep` of a [rows, ...] cache tensor (a copy).
fn keep_rows(value: DynValue, keep: &[usize]) -> Result<DynValue, OnnxError> {
    let (shape, data) = value.try_extract_tensor::<f32>().map_err(inference_error)?;
    let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    let row = dims[1..].iter().product::<usize>();
    let mut out = Vec::with_capacity(keep.len() * row);
    for &r in keep {
        out.extend_from_slice(&data[r * row..(r + 1) * row]);
    }
    let mut new_dims = dims.clone();
    new_dims[0] = keep.len();
    Ok(Tensor::from_array((new_dims, out)).map_err(inference_error)?.into_dyn())
}

/// One-row caches [1, heads, length, dim] of different lengths as one [rows, heads, longest,
/// dim] tensor, each row's positions at the end (zeros before them, which the attention mask
/// hides), as if the prompts had been left-padded.
fn stack_left_padded(values: Vec<&DynValue>, longest: usize) -> Result<DynValue, OnnxError> {
    let rows = values.len();
    let mut out: Vec<f32> = Vec::new();
    let mut dims = [rows, 0, longest, 0];
    for (r, value) in values.into_iter().enumerate() {
        let (shape, data) = value.try_extract_tensor::<f32>().map_err(inference_error)?;
        let (heads, len, dim) = (shape[1] as usize, shape[2] as usize, shape[3] as usize);
        if r == 0 {
            dims = [rows, heads, longest, dim];
            out = vec![0.0; rows * heads * longest * dim];
        }
        for h in 0..heads {
            let to = ((r * heads + h) * longest + (longest - len)) * dim;
            out[to..to + len * dim].copy_from_slice(&data[h * len * dim..(h + 1) * len * dim]);
        }
    }
    Ok(Tensor::from_array((dims, out)).map_err(inference_error)?.into_dyn())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(temperature: f32, top_p: f32, seed: u64) -> Sequence {
        Sequence {
            params: GenParams { temperature, top_p, seed, ..GenParams::default() },
            prompt_len: 1,
            generated: Vec::new(),
            eos: None,
            rng: ChaCha8Rng::seed_from_u64(seed),
            text: None,
            finish: None,
        }
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        assert_eq!(argmax(&[0.0, 2.0, 2.0, 1.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 1.0]), 1);
        assert_eq!(choose(&[0.0, 3.0, 1.0], &mut seq(0.0, 1.0, 0)), 1);
    }

    #[test]
    fn sampling_is_reproducible_by_seed_and_respects_top_p() {
        let logits = [1.0, 1.2, 0.8, 3.0, 2.9];
        let draw = |seed| {
            let mut s = seq(1.0, 1.0, seed);
            (0..50).map(|_| choose(&logits, &mut s)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        // top_p small enough that only the two best remain.
        let mut s = seq(1.0, 0.6, 3);
        for _ in 0..200 {
            assert!(matches!(choose(&logits, &mut s), 3 | 4));
        }
        // A low temperature makes the best token nearly certain.
        let mut s = seq(0.01, 1.0, 3);
        assert!((0..50).all(|_| choose(&logits, &mut s) == 3));
    }
}
