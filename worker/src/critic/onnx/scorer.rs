//! Running a batch of scorer inputs: right-padded to the longest, with the attention mask.

use ort::session::SessionInputValue;
use ort::value::Tensor;

use super::batcher::Engine;
use super::config::ScorerHead;
use super::OnnxError;

/// Per input: P(on track) and the distribution over the labels.
pub(super) type Verdict = (Option<f32>, Vec<f32>);

pub(super) fn inference_error(e: ort::Error) -> OnnxError {
    OnnxError::Inference(e.to_string())
}

impl Engine {
    pub(super) fn score(&mut self, inputs: &[Vec<i64>]) -> Result<Vec<Verdict>, OnnxError> {
        let batch = inputs.len();
        let len = inputs.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = vec![self.pad_id; batch * len];
        let mut mask = vec![0i64; batch * len];
        for (row, input) in inputs.iter().enumerate() {
            ids[row * len..row * len + input.len()].copy_from_slice(input);
            mask[row * len..row * len + input.len()].fill(1);
        }
        let shape = [batch, len];
        let mut feed: Vec<(String, SessionInputValue<'_>)> = vec![
            (self.io.input_ids.clone(), Tensor::from_array((shape, ids)).map_err(inference_error)?.into()),
            (
                self.io.attention_mask.clone(),
                Tensor::from_array((shape, mask)).map_err(inference_error)?.into(),
            ),
        ];
        if let Some(name) = &self.io.position_ids {
            let positions: Vec<i64> = (0..batch).flat_map(|_| 0..len as i64).collect();
            feed.push((
                name.clone(),
                Tensor::from_array((shape, positions)).map_err(inference_error)?.into(),
            ));
        }
        if let Some(name) = &self.io.token_type_ids {
            feed.push((
                name.clone(),
                Tensor::from_array((shape, vec![0i64; batch * len])).map_err(inference_error)?.into(),
            ));
        }
        let outputs = self.session.run(feed).map_err(inference_error)?;
        let value =
            outputs.get(&self.io.output).ok_or_else(|| OnnxError::Inference("no score output".into()))?;
        let (out_shape, data) = value.try_extract_tensor::<f32>().map_err(inference_error)?;
        let width =
            if out_shape.len() == 1 { 1 } else { out_shape.get(1).copied().unwrap_or(0).max(0) as usize };
        if data.len() != batch * width || width == 0 {
            return Err(OnnxError::Inference(format!(
                "the score output has shape {out_shape} for a batch of {batch}"
            )));
        }
        if let Some(expected) = self.io.output_width {
            if expected != width {
                return Err(OnnxError::Inference(format!(
                    "the score output has {width} values per input, not {expected}"
                )));
            }
        }
        Ok(data.chunks(width).map(|row| verdict(&self.head, &self.on_track_labels, row)).collect())
    }
}

fn verdict(head: &ScorerHead, on_track_labels: &[bool], row: &[f32]) -> Verdict {
    match head {
        ScorerHead::Sigmoid => (Some(sigmoid(row[0])), Vec::new()),
        ScorerHead::Probability => (Some(row[0]), Vec::new()),
        ScorerHead::Softmax => {
            let distribution = softmax(row);
            let on_track = if on_track_labels.iter().any(|&t| t) {
                Some(distribution.iter().zip(on_track_labels).filter(|(_, &t)| t).map(|(p, _)| p).sum())
            } else {
                None
            };
            (on_track, distribution)
        }
    }
}

fn sigmoid(x: f32) -> f32 {
    (1.0 / (1.0 + (-f64::from(x)).exp())) as f32
}

pub(super) fn softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f64> = row.iter().map(|&x| f64::from(x - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|e| (e / sum) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigmoid_and_softmax_are_stable_at_the_extremes() {
        assert_eq!(sigmoid(0.0), 0.5);
        assert!(sigmoid(-100.0) >= 0.0 && sigmoid(100.0) <= 1.0);
        let p = softmax(&[1000.0, 0.0, -1000.0]);
        assert!((p[0] - 1.0).abs() < 1e-6 && p[2] == 0.0);
        let p = softmax(&[1.0, 1.0]);
        assert_eq!(p, vec![0.5, 0.5]);
    }
}
