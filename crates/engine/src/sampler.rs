//! Picks the next token from logits through a chain of [`SamplerStage`]s, in llama.cpp's
//! default order: logit bias -> penalties (repeat, presence, frequency over the last N tokens)
//! -> top-k -> typical-p -> top-p -> min-p, then temperature and a seeded draw. Temperature 0
//! is greedy (after bias and penalties). A constraint (a grammar's token mask) runs ahead of
//! the chain through [`Sampler::sample_with`].

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

/// The repeat penalty of an interactive chat (Ollama's default, over the last 64 tokens):
/// without it small models often repeat a phrase until the token limit. [`SamplerConfig`]'s
/// own default stays 1 (off), as in llama.cpp and OpenAI's API.
pub const CHAT_REPEAT_PENALTY: f32 = 1.1;

impl SamplerConfig {
    /// The defaults of a chat with a person (`hearth run`, Ollama's API): [`Default`] plus
    /// [`CHAT_REPEAT_PENALTY`].
    pub fn chat() -> Self {
        SamplerConfig {
            repeat_penalty: CHAT_REPEAT_PENALTY,
            ..SamplerConfig::default()
        }
    }

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

/// The tokens still in the running and their logits, handed from stage to stage.
///
/// Candidates start in token-id order with every token whose logit is not NaN. A stage may
/// change logits, drop candidates, or sort them (most likely first). Truncating stages share
/// one set of probabilities: the softmax of the candidates when the first of them asked,
/// not renormalized as the set shrinks (so typical-p, top-p and min-p all see the
/// distribution after top-k, as llama.cpp's combined order does).
#[derive(Debug, Clone, Default)]
pub struct Candidates {
    items: Vec<(u32, f32)>,
    /// Softmax of `items` (same order and length), computed on demand; empty when stale.
    probs: Vec<f64>,
    sorted: bool,
}

impl Candidates {
    /// Fills the set from raw logits (NaN logits are left out).
    pub fn fill(&mut self, logits: &[f32]) {
        self.items.clear();
        self.items.extend(
            logits
                .iter()
                .enumerate()
                .filter(|(_, l)| !l.is_nan())
                .map(|(i, &l)| (i as u32, l)),
        );
        self.probs.clear();
        self.sorted = false;
    }

    /// (token, logit) pairs, in id order until a stage sorts them.
    pub fn items(&self) -> &[(u32, f32)] {
        &self.items
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether the candidates are sorted by logit, most likely first (ties: lower id first).
    pub fn is_sorted(&self) -> bool {
        self.sorted
    }

    /// Mutable access to the logits; invalidates the shared probabilities.
    pub fn logits_mut(&mut self) -> &mut [(u32, f32)] {
        self.probs.clear();
        &mut self.items
    }

    /// Keeps the candidates for which `keep(token)` holds (order unchanged).
    pub fn retain(&mut self, mut keep: impl FnMut(u32) -> bool) {
        self.probs.clear();
        self.items.retain(|&(id, _)| keep(id));
    }

    /// Keeps the first `n` candidates (and their probabilities).
    pub fn truncate(&mut self, n: usize) {
        self.items.truncate(n);
        self.probs.truncate(n);
    }

    /// Sorts most likely first (ties: lower id first), keeping only the `k` best when `k` is
    /// smaller than the set.
    pub fn sort_top(&mut self, k: usize) {
        let by_logit = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        let c = &mut self.items;
        if k > 0 && k < c.len() {
            c.select_nth_unstable_by(k - 1, by_logit);
            c.truncate(k);
        }
        c.sort_by(by_logit);
        self.probs.clear();
        self.sorted = true;
    }

    /// The shared probabilities (see the type's notes); computed on first use.
    pub fn probs(&mut self) -> &[f64] {
        if self.probs.len() != self.items.len() {
            let max = self
                .items
                .iter()
                .map(|e| e.1)
                .fold(f32::NEG_INFINITY, f32::max);
            let max = if self.sorted {
                self.items.first().map_or(max, |e| e.1)
            } else {
                max
            };
            self.probs.clear();
            self.probs
                .extend(self.items.iter().map(|&(_, l)| ((l - max) as f64).exp()));
            let sum: f64 = self.probs.iter().sum();
            self.probs.iter_mut().for_each(|p| *p /= sum);
        }
        &self.probs
    }
}

/// One step of the sampler chain: it narrows or reshapes the candidates, and may keep state
/// from the tokens of the sequence (the prompt's and the chosen ones).
pub trait SamplerStage: Send {
    /// Narrows or reshapes the candidates for the next token.
    fn apply(&mut self, candidates: &mut Candidates);
    /// Sees a token of the sequence (prompt tokens and chosen ones), in order.
    fn accept(&mut self, _token: u32) {}
    /// Forgets the tokens seen (a new sequence starts).
    fn reset(&mut self) {}
    /// A short name for logs and tests.
    fn name(&self) -> &'static str;
}

/// Adds configured amounts to given tokens' logits.
pub struct LogitBias(pub Vec<(u32, f32)>);

impl SamplerStage for LogitBias {
    fn apply(&mut self, c: &mut Candidates) {
        apply_bias(c.logits_mut(), &self.0);
    }

    fn name(&self) -> &'static str {
        "logit_bias"
    }
}

/// Repeat, presence and frequency penalties over the last `penalty_last_n` tokens.
pub struct Penalties {
    config: SamplerConfig,
    recent: Vec<u32>,
}

impl Penalties {
    pub fn new(config: &SamplerConfig) -> Penalties {
        Penalties {
            config: config.clone(),
            recent: Vec::new(),
        }
    }
}

impl SamplerStage for Penalties {
    fn apply(&mut self, c: &mut Candidates) {
        let n = self.config.penalty_last_n.min(self.recent.len());
        let recent = &self.recent[self.recent.len() - n..];
        let cfg = &self.config;
        if recent.is_empty()
            || (cfg.repeat_penalty == 1.0
                && cfg.presence_penalty == 0.0
                && cfg.frequency_penalty == 0.0)
        {
            return;
        }
        apply_penalties(c.logits_mut(), recent, cfg);
    }

    fn accept(&mut self, token: u32) {
        self.recent.push(token);
        let keep = self.config.penalty_last_n;
        if self.recent.len() > keep.saturating_mul(2).max(1024) {
            let drop = self.recent.len() - keep;
            self.recent.drain(..drop);
        }
    }

    fn reset(&mut self) {
        self.recent.clear();
    }

    fn name(&self) -> &'static str {
        "penalties"
    }
}

/// Keeps the `k` most likely tokens (0: all) and sorts the candidates, most likely first.
pub struct TopK(pub usize);

impl SamplerStage for TopK {
    fn apply(&mut self, c: &mut Candidates) {
        c.sort_top(self.0);
    }

    fn name(&self) -> &'static str {
        "top_k"
    }
}

/// Locally typical sampling (needs sorted candidates).
pub struct Typical(pub f32);

impl SamplerStage for Typical {
    fn apply(&mut self, c: &mut Candidates) {
        if self.0 < 1.0 && !c.is_empty() {
            // Typical sampling reorders by surprise; we keep the sorted prefix of that size,
            // which is the same set whenever the distribution is unimodal in surprise.
            let keep = typical_keep(c.probs(), self.0 as f64);
            c.truncate(keep);
        }
    }

    fn name(&self) -> &'static str {
        "typical_p"
    }
}

/// Nucleus sampling: the smallest sorted prefix whose probability reaches `p`.
pub struct TopP(pub f32);

impl SamplerStage for TopP {
    fn apply(&mut self, c: &mut Candidates) {
        if self.0 < 1.0 {
            let mut cum = 0.0;
            let mut keep = c.len();
            for (i, p) in c.probs().iter().enumerate() {
                cum += p;
                if cum >= self.0 as f64 {
                    keep = i + 1;
                    break;
                }
            }
            c.truncate(keep);
        }
    }

    fn name(&self) -> &'static str {
        "top_p"
    }
}

/// Drops tokens less likely than `p` times the most likely one.
pub struct MinP(pub f32);

impl SamplerStage for MinP {
    fn apply(&mut self, c: &mut Candidates) {
        if self.0 > 0.0 && !c.is_empty() {
            let probs = c.probs();
            let floor = probs[0] * self.0 as f64;
            let keep = probs.iter().take_while(|&&p| p >= floor).count().max(1);
            c.truncate(keep);
        }
    }

    fn name(&self) -> &'static str {
        "min_p"
    }
}

/// How the chain's survivors become one token.
enum Draw {
    /// The largest logit (the lowest id among equals).
    Greedy,
    /// A seeded draw from softmax(logit / temperature) over the sorted candidates.
    Seeded { temperature: f32, rng: SplitMix64 },
}

/// A chain of [`SamplerStage`]s ended by a draw. [`Sampler::new`] builds llama.cpp's default
/// order from a [`SamplerConfig`]; greedy (temperature 0) runs only bias and penalties.
pub struct Sampler {
    seed: u64,
    stages: Vec<Box<dyn SamplerStage>>,
    draw: Draw,
    candidates: Candidates,
}

impl Sampler {
    pub fn new(config: SamplerConfig) -> Sampler {
        let mut stages: Vec<Box<dyn SamplerStage>> = vec![
            Box::new(LogitBias(config.logit_bias.clone())),
            Box::new(Penalties::new(&config)),
        ];
        let draw = if config.temperature <= 0.0 {
            Draw::Greedy
        } else {
            stages.push(Box::new(TopK(config.top_k)));
            stages.push(Box::new(Typical(config.typical_p)));
            stages.push(Box::new(TopP(config.top_p)));
            stages.push(Box::new(MinP(config.min_p)));
            Draw::Seeded {
                temperature: config.temperature,
                rng: SplitMix64(config.seed),
            }
        };
        Sampler {
            seed: config.seed,
            stages,
            draw,
            candidates: Candidates::default(),
        }
    }

    /// Adds `stage` at the front of the chain (it sees the raw logits first).
    pub fn push_front(&mut self, stage: Box<dyn SamplerStage>) {
        self.stages.insert(0, stage);
    }

    /// The stages' names, in order.
    pub fn stage_names(&self) -> Vec<&'static str> {
        self.stages.iter().map(|s| s.name()).collect()
    }

    /// Records a token the stages should see (prompt tokens and sampled ones).
    pub fn accept(&mut self, token: u32) {
        for s in &mut self.stages {
            s.accept(token);
        }
    }

    /// Forgets every token seen and restarts the random draws from the seed.
    pub fn reset(&mut self) {
        for s in &mut self.stages {
            s.reset();
        }
        if let Draw::Seeded { rng, .. } = &mut self.draw {
            *rng = SplitMix64(self.seed);
        }
    }

    /// Picks a token from `logits` (the token is also recorded for the stages).
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let token = self.pick(logits);
        self.accept(token);
        token
    }

    /// Picks a token after `first` has narrowed the candidates ahead of the whole chain (a
    /// grammar's mask); the token is recorded for the chain's stages, not for `first`. None
    /// when `first` left no candidate.
    pub fn sample_with(&mut self, logits: &[f32], first: &mut dyn SamplerStage) -> Option<u32> {
        self.candidates.fill(logits);
        first.apply(&mut self.candidates);
        if self.candidates.is_empty() {
            return None;
        }
        let token = self.run_chain();
        self.accept(token);
        Some(token)
    }

    fn pick(&mut self, logits: &[f32]) -> u32 {
        self.candidates.fill(logits);
        if self.candidates.is_empty() {
            return 0;
        }
        self.run_chain()
    }

    /// Runs the stages over the filled candidates and draws.
    fn run_chain(&mut self) -> u32 {
        let c = &mut self.candidates;
        for s in &mut self.stages {
            s.apply(c);
        }
        match &mut self.draw {
            Draw::Greedy => {
                c.items
                    .iter()
                    .fold((0u32, f32::NEG_INFINITY), |best, &(id, l)| {
                        if l > best.1 {
                            (id, l)
                        } else {
                            best
                        }
                    })
                    .0
            }
            Draw::Seeded { temperature, rng } => {
                if !c.sorted {
                    c.sort_top(0);
                }
                if c.is_empty() {
                    return 0;
                }
                let c = &c.items;
                let t = *temperature;
                let max = c[0].1;
                let weights: Vec<f32> = c.iter().map(|&(_, l)| ((l - max) / t).exp()).collect();
                let total: f32 = weights.iter().sum();
                if !(total.is_finite() && total > 0.0) {
                    return c[0].0;
                }
                let mut r = rng.next_f32() * total;
                for (i, w) in weights.iter().enumerate() {
                    r -= w;
                    if r <= 0.0 {
                        return c[i].0;
                    }
                }
                c[c.len() - 1].0
            }
        }
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

/// How many of the sorted candidates survive typical-p, top-p and min-p (the three stages run
/// over a copy).
#[cfg(test)]
fn truncation(c: &[(u32, f32)], cfg: &SamplerConfig) -> usize {
    let mut cands = Candidates {
        items: c.to_vec(),
        probs: Vec::new(),
        sorted: true,
    };
    Typical(cfg.typical_p).apply(&mut cands);
    TopP(cfg.top_p).apply(&mut cands);
    MinP(cfg.min_p).apply(&mut cands);
    cands.len()
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
/// A seed for a run or request that names none (as Ollama and OpenAI behave): the process's
/// hash keys (random per process) mixed with the time, so two in one process differ too.
pub fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

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

#[cfg(test)]
mod regression {
    use super::*;

    /// Every stage combination over pseudo-random logits; the draws hashed (FNV-1a).
    pub(super) fn draws_hash() -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut gen = SplitMix64(99);
        for case in 0..64u64 {
            let n = 5 + (gen.next_u64() % 300) as usize;
            let logits: Vec<f32> = (0..n).map(|_| (gen.next_f32() - 0.5) * 12.0).collect();
            let pick = |g: &mut SplitMix64, a: &[f32]| a[(g.next_u64() % a.len() as u64) as usize];
            let cfg = SamplerConfig {
                temperature: pick(&mut gen, &[0.0, 0.3, 0.8, 1.0, 1.7]),
                top_k: [0usize, 1, 5, 40][(gen.next_u64() % 4) as usize],
                top_p: pick(&mut gen, &[1.0, 0.9, 0.5]),
                min_p: pick(&mut gen, &[0.0, 0.05, 0.3]),
                typical_p: pick(&mut gen, &[1.0, 0.7]),
                repeat_penalty: pick(&mut gen, &[1.0, 1.3]),
                presence_penalty: pick(&mut gen, &[0.0, 0.5]),
                frequency_penalty: pick(&mut gen, &[0.0, 0.25]),
                penalty_last_n: [0usize, 8, 64][(gen.next_u64() % 3) as usize],
                logit_bias: vec![(1, 2.0), (3, f32::NEG_INFINITY)],
                seed: case,
            };
            let mut s = Sampler::new(cfg);
            s.accept(2);
            for step in 0..30 {
                let mut l = logits.clone();
                l[step % n] += 1.0;
                let t = s.sample(&l);
                h = (h ^ t as u64).wrapping_mul(0x0100_0000_01b3);
            }
        }
        h
    }

    /// The hash the single-function sampler gave before it became a chain of stages: the
    /// chain must draw exactly the same tokens for the same seed.
    #[test]
    fn the_chain_draws_what_the_single_function_drew() {
        assert_eq!(draws_hash(), 0x08b1_3fa9_7bfc_fdd7);
    }

    struct Recorder(std::sync::Arc<std::sync::Mutex<Vec<String>>>, &'static str);

    impl SamplerStage for Recorder {
        fn apply(&mut self, c: &mut Candidates) {
            self.0
                .lock()
                .unwrap()
                .push(format!("{} {}", self.1, c.len()));
            // Drops the highest id each time, so the order of stages shows in the counts.
            let last = c.items().iter().map(|e| e.0).max().unwrap_or(0);
            c.retain(|id| id != last);
        }
        fn accept(&mut self, token: u32) {
            self.0
                .lock()
                .unwrap()
                .push(format!("{} accept {token}", self.1));
        }
        fn reset(&mut self) {
            self.0.lock().unwrap().push(format!("{} reset", self.1));
        }
        fn name(&self) -> &'static str {
            self.1
        }
    }

    #[test]
    fn stages_run_in_order_and_see_accept_and_reset() {
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut s = Sampler::new(SamplerConfig::greedy());
        assert_eq!(s.stage_names(), ["logit_bias", "penalties"]);
        s.push_front(Box::new(Recorder(log.clone(), "b")));
        s.push_front(Box::new(Recorder(log.clone(), "a")));
        assert_eq!(s.stage_names(), ["a", "b", "logit_bias", "penalties"]);
        // a drops 3, b drops 2: greedy picks the best of 0 and 1.
        assert_eq!(s.sample(&[0.0, 1.0, 5.0, 9.0]), 1);
        s.reset();
        let got = log.lock().unwrap().clone();
        assert_eq!(
            got,
            [
                "a 4",
                "b 3",
                "a accept 1",
                "b accept 1",
                "a reset",
                "b reset"
            ]
        );
        let names = Sampler::new(SamplerConfig::default()).stage_names();
        assert_eq!(
            names,
            [
                "logit_bias",
                "penalties",
                "top_k",
                "typical_p",
                "top_p",
                "min_p"
            ]
        );
    }

    #[test]
    fn reset_restarts_draws_and_forgets_penalties() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.7).cos()).collect();
        let cfg = SamplerConfig {
            repeat_penalty: 1.5,
            seed: 5,
            ..SamplerConfig::default()
        };
        let mut s = Sampler::new(cfg);
        let first: Vec<u32> = (0..10).map(|_| s.sample(&logits)).collect();
        s.reset();
        let again: Vec<u32> = (0..10).map(|_| s.sample(&logits)).collect();
        assert_eq!(first, again);
    }

    #[test]
    fn a_first_stage_masks_before_the_chain() {
        struct Only(Vec<u32>);
        impl SamplerStage for Only {
            fn apply(&mut self, c: &mut Candidates) {
                c.retain(|id| self.0.contains(&id));
            }
            fn accept(&mut self, _: u32) {
                panic!("the mask must not see the chain's tokens");
            }
            fn name(&self) -> &'static str {
                "only"
            }
        }
        let mut s = Sampler::new(SamplerConfig::greedy());
        // Greedy picks the best allowed token, not the best one.
        assert_eq!(
            s.sample_with(&[9.0, 1.0, 2.0, 0.5], &mut Only(vec![1, 3])),
            Some(1)
        );
        assert_eq!(s.sample_with(&[9.0, 1.0], &mut Only(vec![])), None);
        let mut s = Sampler::new(SamplerConfig {
            seed: 3,
            ..SamplerConfig::default()
        });
        for _ in 0..50 {
            let t = s.sample_with(&[9.0, 1.0, 2.0, 0.5], &mut Only(vec![1, 3]));
            assert!(matches!(t, Some(1 | 3)), "{t:?}");
        }
    }
}
