//! Picks the next token from logits, in llama.cpp's default order:
//! logit bias -> penalties (repeat, presence, frequency over the last N tokens) -> top-k ->
//! typical-p -> top-p -> min-p -> temperature -> a seeded draw. Temperature 0 is greedy (after
//! bias and penalties).

use std::collections::HashMap;

/// Sampling settings.
#[derive(Debug, Clone)]
pub struct SamplerConfig {
    /// 0 means greedy.
    pub temperature: f32,
    /// 0 disables.
    pub top_k: usize,
    /// 1.0 disables.
    pub top_p: f32,
    /// 0.0 disables.
    pub min_p: f32,
    /// 1.0 disables.
    pub typical_p: f32,
    /// 1.0 disables. Logits of recent tokens are divided by it (multiplied when negative).
    pub repeat_penalty: f32,
    /// 0.0 disables. Subtracted once from every recent token's logit.
    pub presence_penalty: f32,
    /// 0.0 disables. Subtracted per occurrence of a recent token.
    pub frequency_penalty: f32,
    /// How many recent tokens the penalties look at.
    pub penalty_last_n: usize,
    /// Added to the logits of the given tokens (`f32::NEG_INFINITY` bans a token).
    pub logit_bias: Vec<(u32, f32)>,
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            typical_p: 1.0,
            repeat_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_last_n: 64,
            logit_bias: Vec::new(),
            seed: 0,
        }
    }
}

impl SamplerConfig {
    pub fn greedy() -> Self {
        SamplerConfig {
            temperature: 0.0,
            ..SamplerConfig::default()
        }
    }

    /// Checks every value's range; the error names the setting (as `/set` spells it: `top_p`)
    /// and its range.
    pub fn validate(&self) -> Result<(), SettingError> {
        let bad = |option, range, got: f32| {
            Err(SettingError {
                option,
                range,
                got: got.to_string(),
            })
        };
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad("temperature", "a number >= 0", self.temperature);
        }
        for (name, v) in [
            ("top_p", self.top_p),
            ("min_p", self.min_p),
            ("typical_p", self.typical_p),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return bad(name, "between 0 and 1", v);
            }
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return bad("repeat_penalty", "a number > 0", self.repeat_penalty);
        }
        for (name, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if !(-2.0..=2.0).contains(&v) {
                return bad(name, "between -2 and 2", v);
            }
        }
        if let Some(&(_, b)) = self.logit_bias.iter().find(|(_, b)| b.is_nan()) {
            return bad("logit_bias", "a number or -inf", b);
        }
        Ok(())
    }
}

/// A setting outside its range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{option} must be {range} (got {got})")]
pub struct SettingError {
    /// The setting's name in snake case (`top_p`).
    pub option: &'static str,
    /// The allowed values, in words: "between 0 and 1".
    pub range: &'static str,
    pub got: String,
}

pub struct Sampler {
    config: SamplerConfig,
    rng: SplitMix64,
    candidates: Vec<(u32, f32)>,
    recent: Vec<u32>,
}

impl Sampler {
    pub fn new(config: SamplerConfig) -> Sampler {
        Sampler {
            rng: SplitMix64(config.seed),
            config,
            candidates: Vec::new(),
            recent: Vec::new(),
        }
    }

    /// Records a token the penalties should see (prompt tokens and sampled ones).
    pub fn accept(&mut self, token: u32) {
        self.recent.push(token);
        let keep = self.config.penalty_last_n;
        if self.recent.len() > keep.saturating_mul(2).max(1024) {
            let drop = self.recent.len() - keep;
            self.recent.drain(..drop);
        }
    }

    /// Picks a token from `logits` (the token is also recorded for the penalties).
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let token = self.pick(logits);
        self.accept(token);
        token
    }

    fn pick(&mut self, logits: &[f32]) -> u32 {
        let c = &mut self.candidates;
        c.clear();
        c.extend(
            logits
                .iter()
                .enumerate()
                .filter(|(_, l)| !l.is_nan())
                .map(|(i, &l)| (i as u32, l)),
        );
        if c.is_empty() {
            return 0;
        }
        apply_bias(c, &self.config.logit_bias);
        let n = self.config.penalty_last_n.min(self.recent.len());
        apply_penalties(c, &self.recent[self.recent.len() - n..], &self.config);
        if self.config.temperature <= 0.0 {
            return c
                .iter()
                .fold((0u32, f32::NEG_INFINITY), |best, &(id, l)| {
                    if l > best.1 {
                        (id, l)
                    } else {
                        best
                    }
                })
                .0;
        }
        let by_logit = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        let k = if self.config.top_k == 0 {
            c.len()
        } else {
            self.config.top_k.min(c.len())
        };
        if k < c.len() {
            c.select_nth_unstable_by(k - 1, by_logit);
            c.truncate(k);
        }
        c.sort_by(by_logit);
        let keep = truncation(c, &self.config);
        c.truncate(keep.max(1));
        let t = self.config.temperature;
        let max = c[0].1;
        let weights: Vec<f32> = c.iter().map(|&(_, l)| ((l - max) / t).exp()).collect();
        let total: f32 = weights.iter().sum();
        if !(total.is_finite() && total > 0.0) {
            return c[0].0;
        }
        let mut r = self.rng.next_f32() * total;
        for (i, w) in weights.iter().enumerate() {
            r -= w;
            if r <= 0.0 {
                return c[i].0;
            }
        }
        c[c.len() - 1].0
    }
}

/// The candidate for token `id`: candidates start in id order, so look there first.
fn entry_mut(c: &mut [(u32, f32)], id: u32) -> Option<&mut (u32, f32)> {
    let at = id as usize;
    if c.get(at).is_some_and(|e| e.0 == id) {
        return c.get_mut(at);
    }
    c.iter_mut().find(|e| e.0 == id)
}

fn apply_bias(c: &mut [(u32, f32)], bias: &[(u32, f32)]) {
    for &(id, b) in bias {
        if let Some(e) = entry_mut(c, id) {
            e.1 += b;
        }
    }
}

/// Repeat penalty as llama.cpp applies it (divide positive logits, multiply negative ones),
/// then presence and frequency penalties as OpenAI defines them.
fn apply_penalties(c: &mut [(u32, f32)], recent: &[u32], cfg: &SamplerConfig) {
    if recent.is_empty()
        || (cfg.repeat_penalty == 1.0
            && cfg.presence_penalty == 0.0
            && cfg.frequency_penalty == 0.0)
    {
        return;
    }
    let mut counts: HashMap<u32, u32> = HashMap::new();
    for &t in recent {
        *counts.entry(t).or_default() += 1;
    }
    for (&id, &count) in &counts {
        if let Some(e) = entry_mut(c, id) {
            if e.1 > 0.0 {
                e.1 /= cfg.repeat_penalty;
            } else {
                e.1 *= cfg.repeat_penalty;
            }
            e.1 -= count as f32 * cfg.frequency_penalty + cfg.presence_penalty;
        }
    }
}

/// How many of the sorted candidates survive typical-p, top-p and min-p.
fn truncation(c: &[(u32, f32)], cfg: &SamplerConfig) -> usize {
    let max = c[0].1;
    let mut probs: Vec<f64> = c.iter().map(|&(_, l)| ((l - max) as f64).exp()).collect();
    let sum: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= sum);
    let mut keep = c.len();
    if cfg.typical_p < 1.0 {
        keep = keep.min(typical_keep(&probs, cfg.typical_p as f64));
        // Typical sampling reorders by surprise; we keep the sorted prefix of that size, which is
        // the same set whenever the distribution is unimodal in surprise (the common case).
    }
    if cfg.top_p < 1.0 {
        let mut cum = 0.0;
        for (i, p) in probs.iter().enumerate().take(keep) {
            cum += p;
            if cum >= cfg.top_p as f64 {
                keep = i + 1;
                break;
            }
        }
    }
    if cfg.min_p > 0.0 {
        let floor = probs[0] * cfg.min_p as f64;
        keep = keep.min(probs.iter().take_while(|&&p| p >= floor).count().max(1));
    }
    keep
}

/// Locally typical sampling: the smallest set, ordered by closeness of -log p to the entropy,
/// whose mass reaches `p`; returned as a count.
fn typical_keep(probs: &[f64], p: f64) -> usize {
    let entropy: f64 = probs
        .iter()
        .filter(|&&q| q > 0.0)
        .map(|&q| -q * q.ln())
        .sum();
    let mut order: Vec<usize> = (0..probs.len()).collect();
    let dist = |i: usize| (-(probs[i].max(f64::MIN_POSITIVE)).ln() - entropy).abs();
    order.sort_by(|&a, &b| dist(a).total_cmp(&dist(b)));
    let mut cum = 0.0;
    for (n, &i) in order.iter().enumerate() {
        cum += probs[i];
        if cum >= p {
            return n + 1;
        }
    }
    probs.len()
}

/// Index of the largest logit (the lowest index among equals).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Small, fast, seedable generator (SplitMix64): sampling needs reproducibility, not crypto.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(temperature: f32, seed: u64) -> SamplerConfig {
        SamplerConfig {
            temperature,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed,
            ..SamplerConfig::default()
        }
    }

    #[test]
    fn greedy_picks_max() {
        let mut s = Sampler::new(SamplerConfig::greedy());
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 2.9]), 1);
    }

    #[test]
    fn same_seed_same_draws() {
        let logits: Vec<f32> = (0..100).map(|i| (i as f32 * 0.37).sin()).collect();
        let draw = |seed| {
            let mut s = Sampler::new(plain(1.0, seed));
            (0..20).map(|_| s.sample(&logits)).collect::<Vec<u32>>()
        };
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
        let a = draw(42);
        assert!(a.iter().any(|&t| t != a[0]), "temperature 1 should vary");
    }

    #[test]
    fn draws_follow_the_softmax() {
        // Sampled frequencies against exp(l/T)/Z, within 4 standard errors.
        let logits = [1.0f32, 0.0, -1.0, 0.5];
        let t = 0.7;
        let z: f64 = logits.iter().map(|&l| ((l / t) as f64).exp()).sum();
        let mut s = Sampler::new(plain(t, 7));
        let n = 40_000;
        let mut counts = [0usize; 4];
        for _ in 0..n {
            counts[s.pick(&logits) as usize] += 1;
        }
        for (i, &l) in logits.iter().enumerate() {
            let p = ((l / t) as f64).exp() / z;
            let se = (p * (1.0 - p) / n as f64).sqrt();
            let f = counts[i] as f64 / n as f64;
            assert!((f - p).abs() < 4.0 * se, "token {i}: {f} vs {p}");
        }
    }

    #[test]
    fn top_k_one_is_greedy() {
        let mut s = Sampler::new(SamplerConfig {
            temperature: 5.0,
            top_k: 1,
            ..SamplerConfig::default()
        });
        for _ in 0..10 {
            assert_eq!(s.sample(&[0.0, 1.0, 0.5]), 1);
        }
    }

    #[test]
    fn top_p_and_min_p_cut_the_tail() {
        let logits = [2.0f32, 1.0, 0.0, -5.0];
        let mut c: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l))
            .collect();
        c.sort_by(|a, b| b.1.total_cmp(&a.1));
        let cfg = SamplerConfig {
            top_p: 0.7,
            min_p: 0.0,
            ..plain(1.0, 0)
        };
        // softmax: 0.6648, 0.2446, 0.0900, 0.0006 -> 0.7 is reached at the second.
        assert_eq!(truncation(&c, &cfg), 2);
        let cfg = SamplerConfig {
            top_p: 1.0,
            min_p: 0.2,
            ..plain(1.0, 0)
        };
        assert_eq!(truncation(&c, &cfg), 2); // 0.0900 < 0.2 * 0.6648
    }

    #[test]
    fn penalties_and_bias() {
        let mut c = vec![(0u32, 2.0f32), (1, -1.0), (2, 1.0)];
        let cfg = SamplerConfig {
            repeat_penalty: 2.0,
            presence_penalty: 0.5,
            frequency_penalty: 0.25,
            ..SamplerConfig::default()
        };
        apply_penalties(&mut c, &[0, 1, 1], &cfg);
        assert_eq!(c[0].1, 2.0 / 2.0 - 0.25 - 0.5);
        assert_eq!(c[1].1, -2.0 - 0.5 - 0.5); // -1 times 2, minus two occurrences, minus presence
        assert_eq!(c[2].1, 1.0);
        apply_bias(&mut c, &[(2, f32::NEG_INFINITY)]);
        assert_eq!(c[2].1, f32::NEG_INFINITY);
        // A banned token is never picked, even greedily.
        let mut s = Sampler::new(SamplerConfig {
            logit_bias: vec![(1, f32::NEG_INFINITY)],
            ..SamplerConfig::greedy()
        });
        assert_eq!(s.sample(&[0.0, 9.0, 1.0]), 2);
    }

    #[test]
    fn repeat_penalty_steers_greedy_away_from_recent_tokens() {
        let mut s = Sampler::new(SamplerConfig {
            repeat_penalty: 1.5,
            ..SamplerConfig::greedy()
        });
        s.accept(0);
        assert_eq!(s.sample(&[3.0, 2.5, 0.0]), 1);
    }

    #[test]
    fn typical_keeps_the_tokens_near_the_entropy() {
        let probs = [0.5, 0.3, 0.2];
        assert_eq!(typical_keep(&probs, 1.0), 3);
        assert!(typical_keep(&probs, 0.2) >= 1);
    }

    #[test]
    fn nan_logits_are_ignored() {
        let mut s = Sampler::new(plain(1.0, 0));
        for _ in 0..10 {
            assert_eq!(s.sample(&[f32::NAN, 1.0, f32::NAN]), 1);
        }
    }

    #[test]
    fn validate_names_the_option() {
        let bad = [
            SamplerConfig {
                temperature: -1.0,
                ..SamplerConfig::default()
            },
            SamplerConfig {
                temperature: f32::NAN,
                ..SamplerConfig::default()
            },
            SamplerConfig {
                top_p: 2.0,
                ..SamplerConfig::default()
            },
            SamplerConfig {
                min_p: -0.1,
                ..SamplerConfig::default()
            },
            SamplerConfig {
                typical_p: 1.5,
                ..SamplerConfig::default()
            },
            SamplerConfig {
                repeat_penalty: 0.0,
                ..SamplerConfig::default()
            },
            SamplerConfig {
                presence_penalty: 3.0,
                ..SamplerConfig::default()
            },
        ];
        let names = [
            "temperature",
            "temperature",
            "top_p",
            "min_p",
            "typical_p",
            "repeat_penalty",
            "presence_penalty",
        ];
        for (cfg, name) in bad.iter().zip(names) {
            let e = cfg.validate().unwrap_err();
            assert_eq!(e.option, name);
            assert!(e.to_string().contains(name), "{e}");
        }
        let e = bad[2].validate().unwrap_err().to_string();
        assert_eq!(e, "top_p must be between 0 and 1 (got 2)");
        assert!(SamplerConfig::default().validate().is_ok());
    }
}
