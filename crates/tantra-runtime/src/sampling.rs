//! Choosing the next token from logits: greedy, or sampled with temperature, top-k and top-p,
//! from a seeded generator so that a seed reproduces a run.
//!
//! The order of the filters is transformers': temperature, then top-k, then top-p (nucleus),
//! then a draw from the renormalized distribution. Probabilities are computed in f64 so that a
//! long tail of tiny probabilities does not round away the nucleus boundary.

use tantra_models::rng::Rng;

use super::error::{Result, RuntimeError};

/// How to pick tokens. `temperature == 0` is greedy (argmax; ties go to the lowest id, as
/// torch's `argmax` does); top-k and top-p then have no effect.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingConfig {
    /// 0 for greedy; otherwise logits are divided by it before the softmax.
    pub temperature: f32,
    /// Keep only the `k` most likely tokens; `None` (or `Some(0)`) keeps all.
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probability reaches `p`; 1 keeps all.
    pub top_p: f32,
    /// Seed of the draws.
    pub seed: u64,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig::greedy()
    }
}

impl SamplingConfig {
    /// Argmax decoding.
    pub fn greedy() -> Self {
        SamplingConfig {
            temperature: 0.0,
            top_k: None,
            top_p: 1.0,
            seed: 0,
        }
    }

    /// True when no randomness is involved.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// Checks the ranges: temperature finite and `>= 0`, top-p in `(0, 1]`.
    ///
    /// # Errors
    /// [`RuntimeError::Sampling`] naming the setting.
    pub fn validate(&self) -> Result<()> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(RuntimeError::Sampling {
                setting: "temperature",
                value: self.temperature.to_string(),
                rule: "must be 0 (greedy) or a positive number",
            });
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(RuntimeError::Sampling {
                setting: "top_p",
                value: self.top_p.to_string(),
                rule: "must be in (0, 1]",
            });
        }
        Ok(())
    }
}

/// Picks tokens from logits according to a [`SamplingConfig`].
#[derive(Debug, Clone)]
pub struct Sampler {
    config: SamplingConfig,
    rng: Rng,
}

impl Sampler {
    /// # Errors
    /// [`RuntimeError::Sampling`] for settings out of range.
    pub fn new(config: SamplingConfig) -> Result<Self> {
        config.validate()?;
        Ok(Sampler {
            config,
            rng: Rng::from_key(config.seed),
        })
    }

    pub fn config(&self) -> &SamplingConfig {
        &self.config
    }

    /// The next token. NaN logits count as impossible; an empty slice gives 0.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.config.is_greedy() {
            return argmax(logits);
        }
        let t = f64::from(self.config.temperature);
        // Candidates sorted by logit, most likely first (stable: lower id first on ties).
        let mut cand: Vec<(u32, f64)> = logits
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.is_nan())
            .map(|(i, &v)| (i as u32, f64::from(v) / t))
            .collect();
        if cand.is_empty() {
            return 0;
        }
        cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if let Some(k) = self.config.top_k.filter(|&k| k > 0) {
            if k < cand.len() {
                // Like transformers, keep every token tied with the k-th.
                let kth = cand[k - 1].1;
                let keep = cand.iter().take_while(|c| c.1 >= kth).count();
                cand.truncate(keep);
            }
        }
        let max = cand[0].1;
        let mut probs: Vec<f64> = cand.iter().map(|c| (c.1 - max).exp()).collect();
        let total: f64 = probs.iter().sum();
        for p in &mut probs {
            *p /= total;
        }
        if self.config.top_p < 1.0 {
            let p_max = f64::from(self.config.top_p);
            let mut cum = 0.0;
            let mut keep = probs.len();
            for (i, p) in probs.iter().enumerate() {
                cum += p;
                if cum >= p_max {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
            cand.truncate(keep);
        }
        let total: f64 = probs.iter().sum();
        let mut u = self.rng.uniform() * total;
        for (c, p) in cand.iter().zip(&probs) {
            if u < *p {
                return c.0;
            }
            u -= p;
        }
        // Rounding left u just above the last probability.
        cand.last().map_or(0, |c| c.0)
    }
}

/// Index of the largest value; the first on ties; NaN never wins; 0 for an empty slice.
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    let mut found = false;
    for (i, &v) in values.iter().enumerate() {
        if v.is_nan() {
            continue;
        }
        if !found || v > best_v {
            best = i;
            best_v = v;
            found = true;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(temperature: f32, top_k: Option<usize>, top_p: f32, seed: u64) -> SamplingConfig {
        SamplingConfig {
            temperature,
            top_k,
            top_p,
            seed,
        }
    }

    #[test]
    fn greedy_takes_first_max_and_skips_nan() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[f32::NAN, -1.0]), 1);
        assert_eq!(argmax(&[]), 0);
        let mut s = Sampler::new(SamplingConfig::greedy()).unwrap();
        assert_eq!(s.sample(&[0.0, 5.0, 1.0]), 1);
    }

    #[test]
    fn top_k_one_is_greedy_and_seed_reproduces() {
        let logits: Vec<f32> = (0..50).map(|i| ((i * 37) % 50) as f32 * 0.1).collect();
        let mut s = Sampler::new(cfg(1.0, Some(1), 1.0, 7)).unwrap();
        for _ in 0..20 {
            assert_eq!(s.sample(&logits), argmax(&logits));
        }
        let draw = |seed| {
            let mut s = Sampler::new(cfg(1.5, None, 1.0, seed)).unwrap();
            (0..30).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
    }

    #[test]
    fn top_k_and_top_p_restrict_the_support() {
        // Probabilities about 0.64, 0.24, 0.09, 0.03.
        let logits = [3.0f32, 2.0, 1.0, 0.0];
        let mut s = Sampler::new(cfg(1.0, Some(2), 1.0, 1)).unwrap();
        for _ in 0..200 {
            assert!(s.sample(&logits) < 2);
        }
        let mut s = Sampler::new(cfg(1.0, None, 0.5, 1)).unwrap();
        for _ in 0..200 {
            assert_eq!(s.sample(&logits), 0);
        }
        let mut s = Sampler::new(cfg(1.0, None, 0.8, 2)).unwrap();
        let seen: std::collections::BTreeSet<u32> = (0..500).map(|_| s.sample(&logits)).collect();
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![0, 1]);
    }

    #[test]
    fn high_temperature_spreads_low_concentrates() {
        let logits = [2.0f32, 1.0, 0.0];
        let count0 = |t| {
            let mut s = Sampler::new(cfg(t, None, 1.0, 9)).unwrap();
            (0..2000).filter(|_| s.sample(&logits) == 0).count()
        };
        assert!(count0(0.05) > 1990);
        let hot = count0(100.0);
        assert!((550..800).contains(&hot), "{hot}");
    }

    #[test]
    fn refuses_bad_settings() {
        assert!(Sampler::new(cfg(-1.0, None, 1.0, 0)).is_err());
        assert!(Sampler::new(cfg(f32::NAN, None, 1.0, 0)).is_err());
        assert!(Sampler::new(cfg(1.0, None, 0.0, 0)).is_err());
        assert!(Sampler::new(cfg(1.0, None, 1.5, 0)).is_err());
    }
}
