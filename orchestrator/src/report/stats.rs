//! The statistics of the reports: Wilson score intervals, exact McNemar tests, and percentile
//! bootstrap intervals that resample instances (so repeats of one instance stay together).
//! Deterministic: bootstrap resamples come from a seeded generator.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use statrs::distribution::{Binomial, ContinuousCDF, DiscreteCDF, Normal};

/// A two-sided interval.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Interval {
    pub lo: f64,
    pub hi: f64,
}

/// The normal quantile for a two-sided `level` (1.959964 for 0.95).
fn z(level: f64) -> f64 {
    Normal::new(0.0, 1.0).expect("standard normal").inverse_cdf(1.0 - (1.0 - level) / 2.0)
}

/// Wilson score interval of k successes in n trials (as statsmodels' `method="wilson"`).
pub fn wilson(k: u64, n: u64, level: f64) -> Option<Interval> {
    if n == 0 {
        return None;
    }
    let (k, n, z) = (k as f64, n as f64, z(level));
    let p = k / n;
    let denom = 1.0 + z * z / n;
    let center = (p + z * z / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / denom;
    Some(Interval { lo: (center - half).max(0.0), hi: (center + half).min(1.0) })
}

/// Exact (binomial) two-sided McNemar p-value for b and c discordant pairs (as statsmodels'
/// `mcnemar(exact=True)`): twice the smaller tail, at most 1.
pub fn mcnemar_exact(b: u64, c: u64) -> f64 {
    let n = b + c;
    if n == 0 {
        return 1.0;
    }
    let binom = Binomial::new(0.5, n).expect("valid binomial");
    (2.0 * binom.cdf(b.min(c))).min(1.0)
}

/// Resamples in a bootstrap.
pub const BOOTSTRAP_RESAMPLES: usize = 2000;
/// The bootstrap's seed: the same data give the same interval.
pub const BOOTSTRAP_SEED: u64 = 20261124;

/// Percentile bootstrap interval of `statistic` over clusters (instances): each resample draws
/// as many clusters as there are, with replacement, and passes them to `statistic`.
pub fn bootstrap<C, F>(clusters: &[C], level: f64, statistic: F) -> Option<Interval>
where
    F: Fn(&[&C]) -> Option<f64>,
{
    if clusters.is_empty() {
        return None;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(BOOTSTRAP_SEED);
    let mut values = Vec::with_capacity(BOOTSTRAP_RESAMPLES);
    let mut sample: Vec<&C> = Vec::with_capacity(clusters.len());
    for _ in 0..BOOTSTRAP_RESAMPLES {
        sample.clear();
        for _ in 0..clusters.len() {
            sample.push(&clusters[rng.gen_range(0..clusters.len())]);
        }
        if let Some(v) = statistic(&sample) {
            values.push(v);
        }
    }
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| values[((values.len() - 1) as f64 * p).round() as usize];
    let alpha = (1.0 - level) / 2.0;
    Some(Interval { lo: q(alpha), hi: q(1.0 - alpha) })
}

/// The mean of values (None for none).
pub fn mean(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.into_iter().fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn reference() -> Value {
        serde_json::from_str(include_str!("../../tests/fixtures/stats_reference.json")).unwrap()
    }

    #[test]
    fn wilson_matches_statsmodels() {
        for case in reference()["wilson_95"].as_array().unwrap() {
            let (k, n) = (case["k"].as_u64().unwrap(), case["n"].as_u64().unwrap());
            let got = wilson(k, n, 0.95).unwrap();
            for (ours, theirs) in [(got.lo, &case["lo"]), (got.hi, &case["hi"])] {
                assert!((ours - theirs.as_f64().unwrap()).abs() < 1e-9, "{k}/{n}: {got:?} vs {case}");
            }
        }
        assert_eq!(wilson(0, 0, 0.95), None);
    }

    #[test]
    fn mcnemar_matches_statsmodels() {
        for case in reference()["mcnemar_exact"].as_array().unwrap() {
            let (b, c) = (case["b"].as_u64().unwrap(), case["c"].as_u64().unwrap());
            let p = mcnemar_exact(b, c);
            assert!((p - case["p"].as_f64().unwrap()).abs() < 1e-9, "b={b} c={c}: {p} vs {case}");
        }
    }

    #[test]
    fn bootstrap_is_deterministic_and_covers_the_estimate() {
        let clusters: Vec<f64> = (0..100).map(|i| if i % 4 == 0 { 1.0 } else { 0.0 }).collect();
        let stat = |s: &[&f64]| mean(s.iter().map(|v| **v));
        let a = bootstrap(&clusters, 0.95, stat).unwrap();
        assert_eq!(a, bootstrap(&clusters, 0.95, stat).unwrap(), "seeded");
        assert!(a.lo < 0.25 && 0.25 < a.hi && a.lo > 0.1 && a.hi < 0.4, "{a:?}");
    }
}
