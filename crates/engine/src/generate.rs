//! Text generation as an iterator of UTF-8-safe pieces, with stop conditions and timings.

use crate::blocks::LogitRows;
use crate::constraint::{Constraint, ConstraintError};
use crate::error::EngineError;
use crate::model::Session;
use crate::sampler::{Sampler, SamplerConfig};
use crate::tokenizer::{StreamDecoder, Tokenizer};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    pub sampler: SamplerConfig,
    /// Stop at end-of-generation tokens (EOS, end-of-turn).
    pub stop_at_eog: bool,
    /// Render control tokens as text instead of hiding them.
    pub render_special: bool,
    /// Generation stops before any of these strings; they are never output, even when they
    /// span several tokens.
    pub stop: Vec<String>,
    /// Generation ends (`StopReason::Cancelled`) soon after this flag is set: a Ctrl-C or a
    /// client that went away. The prompt is checked between batches, generation every token.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Record each generated token's log-probability and this many alternatives (at most
    /// [`MAX_TOP_LOGPROBS`]); None: none.
    pub logprobs: Option<usize>,
    /// A compiled grammar the output must follow: it masks tokens ahead of the sampler,
    /// allows end-of-generation only where the text is complete, and ends generation
    /// (`EndOfGeneration`) when nothing more can follow.
    pub constraint: Option<Constraint>,
    /// Told how far prompt evaluation has got, after each batch (a long prompt can take
    /// many seconds before the first token).
    pub progress: Option<PromptProgress>,
}

/// A callback given (tokens evaluated so far, tokens in the prompt) after each batch of the
/// prompt.
#[derive(Clone)]
pub struct PromptProgress(pub Arc<dyn Fn(usize, usize) + Send + Sync>);

impl std::fmt::Debug for PromptProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PromptProgress")
    }
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 512,
            sampler: SamplerConfig::default(),
            stop_at_eog: true,
            render_special: false,
            stop: Vec::new(),
            cancel: None,
            logprobs: None,
            constraint: None,
            progress: None,
        }
    }
}

impl GenerateOptions {
    fn cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    MaxTokens,
    EndOfGeneration,
    StopString,
    ContextFull,
    /// The `cancel` flag was set.
    Cancelled,
}

#[derive(Debug, Clone, Default)]
pub struct Timings {
    pub prompt_tokens: usize,
    pub prompt_time: Duration,
    pub generated_tokens: usize,
    pub generation_time: Duration,
    /// From the start of prompt evaluation to the first generated token (None when none was).
    pub first_token: Option<Duration>,
}

impl Timings {
    pub fn prompt_tokens_per_second(&self) -> f64 {
        per_second(self.prompt_tokens, self.prompt_time)
    }

    pub fn generation_tokens_per_second(&self) -> f64 {
        per_second(self.generated_tokens, self.generation_time)
    }
}

fn per_second(n: usize, t: Duration) -> f64 {
    if t.is_zero() {
        0.0
    } else {
        n as f64 / t.as_secs_f64()
    }
}

/// One sampled token's log-probability under the model (the raw logits, before any sampler
/// stage) and the most likely alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub token: u32,
    pub logprob: f32,
    /// Up to `GenerateOptions::logprobs` (token, logprob) pairs, most likely first.
    pub top: Vec<(u32, f32)>,
}

/// Most alternatives reported per token.
pub const MAX_TOP_LOGPROBS: usize = 20;

/// What [`Decoding::choose`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    pub token: u32,
    /// Text that can be shown now (may be empty: held back for UTF-8 or a possible stop
    /// string).
    pub text: String,
    /// Generation goes on: the token must be evaluated to get the next logits.
    pub more: bool,
}

/// The per-sequence side of generation: sampling, stop conditions, UTF-8-safe text and timings,
/// apart from the forward pass, so that one batch can run it for many sequences.
pub struct Decoding {
    sampler: Sampler,
    decoder: StreamDecoder,
    opts: GenerateOptions,
    tokens: Vec<u32>,
    timings: Timings,
    stop: Option<StopReason>,
    flushed: bool,
    /// Text held back because it could be the start of a stop string.
    held: String,
    /// When prompt evaluation began (for the time to first token).
    start: Instant,
    logprobs: Vec<TokenLogprob>,
    /// Why the constraint ended generation early, if it failed.
    constraint_error: Option<ConstraintError>,
}

impl Decoding {
    /// Starts decoding after `prompt` (the penalties see it), whose evaluation began at `start`.
    pub fn new(opts: GenerateOptions, prompt: &[u32], start: Instant) -> Decoding {
        let mut sampler = Sampler::new(opts.sampler.clone());
        for &t in prompt {
            sampler.accept(t);
        }
        Decoding {
            sampler,
            decoder: StreamDecoder::new(),
            opts,
            tokens: Vec::new(),
            timings: Timings::default(),
            stop: None,
            flushed: false,
            held: String::new(),
            start,
            logprobs: Vec::new(),
            constraint_error: None,
        }
    }

    /// The constraint's failure that ended generation (it ends as `EndOfGeneration`).
    pub fn constraint_error(&self) -> Option<&ConstraintError> {
        self.constraint_error.as_ref()
    }

    /// Notes that the prompt's `tokens` were evaluated in `time`.
    pub fn prompt_done(&mut self, tokens: usize, time: Duration) {
        self.timings.prompt_tokens = tokens;
        self.timings.prompt_time = time;
    }

    /// Adds the time of a forward pass that produced this sequence's next logits.
    pub fn add_generation_time(&mut self, time: Duration) {
        self.timings.generation_time += time;
    }

    /// Ends generation for `reason` (unless it has ended already).
    pub fn stop(&mut self, reason: StopReason) {
        self.stop.get_or_insert(reason);
    }

    pub fn stop_reason(&self) -> Option<StopReason> {
        self.stop
    }

    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    pub fn timings(&self) -> &Timings {
        &self.timings
    }

    pub fn options(&self) -> &GenerateOptions {
        &self.opts
    }

    /// The log-probabilities of the tokens chosen since the last call.
    pub fn take_logprobs(&mut self) -> Vec<TokenLogprob> {
        std::mem::take(&mut self.logprobs)
    }

    /// Picks the next token from `logits`, or ends generation (cancelled, token budget spent,
    /// end of generation, a stop string completed). None once generation has ended.
    pub fn choose(&mut self, tokenizer: &Tokenizer, logits: &[f32]) -> Option<Chosen> {
        if self.stop.is_some() {
            return None;
        }
        if self.opts.cancelled() {
            self.stop = Some(StopReason::Cancelled);
            return None;
        }
        if self.tokens.len() >= self.opts.max_tokens {
            self.stop = Some(StopReason::MaxTokens);
            return None;
        }
        if logits.is_empty() {
            // An empty prompt gives nothing to continue from.
            self.stop = Some(StopReason::EndOfGeneration);
            return None;
        }
        let token = match self.opts.constraint.is_some() {
            false => self.sampler.sample(logits),
            true => match self.constrained_choice(tokenizer, logits) {
                Some(t) => t,
                None => {
                    self.stop = Some(StopReason::EndOfGeneration);
                    return None;
                }
            },
        };
        if self.opts.stop_at_eog && tokenizer.is_eog(token) {
            self.stop = Some(StopReason::EndOfGeneration);
            return None;
        }
        if let Some(n) = self.opts.logprobs {
            self.logprobs.push(logprob_of(logits, token, n));
        }
        let bytes = tokenizer.token_bytes(token, self.opts.render_special);
        self.tokens.push(token);
        self.timings.generated_tokens += 1;
        if self.timings.first_token.is_none() {
            self.timings.first_token = Some(self.start.elapsed());
        }
        let piece = self.decoder.push(&bytes);
        let text = self.release(&piece);
        if self
            .opts
            .constraint
            .as_ref()
            .is_some_and(|c| c.is_finished())
        {
            // The grammar is complete and nothing more can follow.
            self.stop.get_or_insert(StopReason::EndOfGeneration);
        }
        // The last token needs no forward pass: nothing will read its logits.
        let more = self.stop.is_none() && self.tokens.len() < self.opts.max_tokens;
        Some(Chosen { token, text, more })
    }

    /// The token the constraint allows and the sampler picks, already consumed by the
    /// constraint; None when generation must end there: the grammar is complete, it allows
    /// an end-of-generation token that was picked, or it failed (see `constraint_error`).
    fn constrained_choice(&mut self, tokenizer: &Tokenizer, logits: &[f32]) -> Option<u32> {
        let c = self.opts.constraint.as_mut()?;
        if c.is_finished() {
            return None;
        }
        let mut mask = match c.mask() {
            Ok(m) => m,
            Err(e) => {
                self.constraint_error = Some(e);
                return None;
            }
        };
        let mut token = self.sampler.sample_with(logits, &mut mask).or_else(|| {
            // Every allowed token had a NaN logit: take the first allowed one.
            mask.first()
        })?;
        if !mask.allows(token) {
            // Greedy over logits that are all -inf falls back to token 0.
            token = mask.first()?;
        }
        if tokenizer.is_eog(token) {
            return None;
        }
        if let Err(e) = c.consume(token) {
            self.constraint_error = Some(e);
            return None;
        }
        Some(token)
    }

    /// The text still held back, once generation has ended (empty before, and after the
    /// first call).
    pub fn finish(&mut self) -> String {
        if self.stop.is_none() || self.flushed {
            return String::new();
        }
        self.flushed = true;
        let mut rest = std::mem::take(&mut self.held);
        let length = matches!(
            self.stop,
            Some(StopReason::MaxTokens | StopReason::ContextFull)
        );
        if length {
            // The token limit cut a character in its bytes: its rest was never generated, so
            // there is no character to show (not a U+FFFD).
            self.decoder.discard();
        }
        if self.stop != Some(StopReason::StopString) {
            rest.push_str(&self.decoder.finish());
            // A stop string may still complete in the flushed tail.
            if let Some(at) = first_stop(&rest, &self.opts.stop) {
                rest.truncate(at);
            }
        }
        rest
    }

    /// Adds `piece` to the held-back text and returns what can be released: everything before
    /// a complete stop string (ending generation), else everything that cannot start one.
    fn release(&mut self, piece: &str) -> String {
        self.held.push_str(piece);
        if self.opts.stop.is_empty() {
            return std::mem::take(&mut self.held);
        }
        if let Some(at) = first_stop(&self.held, &self.opts.stop) {
            self.held.truncate(at);
            self.stop = Some(StopReason::StopString);
            self.flushed = true;
            return std::mem::take(&mut self.held);
        }
        // Keep the longest suffix that is a proper prefix of some stop string.
        let keep = self
            .opts
            .stop
            .iter()
            .map(|s| longest_suffix_prefix(&self.held, s))
            .max()
            .unwrap_or(0);
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_string();
        self.held.drain(..cut);
        out
    }
}

/// Where the earliest stop string starts in `text`.
fn first_stop(text: &str, stops: &[String]) -> Option<usize> {
    stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min()
}

/// log softmax of `logits` at `token`, and the `n` most likely tokens.
fn logprob_of(logits: &[f32], token: u32, n: usize) -> TokenLogprob {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
    let log_z = max as f64 + sum.ln();
    let lp = |l: f32| (l as f64 - log_z) as f32;
    let n = n.min(MAX_TOP_LOGPROBS).min(logits.len());
    let mut top: Vec<(u32, f32)> = Vec::with_capacity(n + 1);
    if n > 0 {
        for (i, &l) in logits.iter().enumerate() {
            if top.len() < n || l > top[top.len() - 1].1 {
                let at = top.partition_point(|&(_, v)| v >= l);
                top.insert(at, (i as u32, l));
                top.truncate(n);
            }
        }
    }
    TokenLogprob {
        token,
        logprob: logits
            .get(token as usize)
            .map_or(f32::NEG_INFINITY, |&l| lp(l)),
        top: top.into_iter().map(|(t, l)| (t, lp(l))).collect(),
    }
}

/// Yields text pieces as tokens are generated. Pieces never split a UTF-8 character.
pub struct Generator<'a, 'm> {
    session: &'a mut Session<'m>,
    decoding: Decoding,
    logits: Vec<f32>,
    failed: bool,
}

/// Evaluates `prompt` (in batches when it can be cancelled or progress is wanted, so that a
/// Ctrl-C does not wait for a long prompt). Returns the last logits and how many tokens were
/// evaluated.
fn eval_prompt(
    session: &mut Session<'_>,
    prompt: &[u32],
    opts: &GenerateOptions,
) -> Result<(Vec<f32>, usize), EngineError> {
    if opts.cancel.is_none() && opts.progress.is_none() {
        return Ok((
            session.eval(prompt, LogitRows::Last)?.to_vec(),
            prompt.len(),
        ));
    }
    let mut logits = Vec::new();
    let mut done = 0;
    for chunk in prompt.chunks(session.batch()) {
        if opts.cancelled() {
            break;
        }
        logits = session.eval(chunk, LogitRows::Last)?.to_vec();
        done += chunk.len();
        if let Some(p) = &opts.progress {
            (p.0)(done, prompt.len());
        }
    }
    Ok((logits, done))
}

impl<'a, 'm> Generator<'a, 'm> {
    /// Evaluates the prompt (appended to whatever the session holds) and prepares to generate.
    pub fn new(
        session: &'a mut Session<'m>,
        prompt: &[u32],
        opts: GenerateOptions,
    ) -> Result<Self, EngineError> {
        let start = Instant::now();
        let (logits, evaluated) = eval_prompt(session, prompt, &opts)?;
        let mut decoding = Decoding::new(opts, prompt, start);
        decoding.prompt_done(evaluated, start.elapsed());
        if evaluated < prompt.len() {
            decoding.stop(StopReason::Cancelled);
        }
        Ok(Generator {
            session,
            decoding,
            logits,
            failed: false,
        })
    }

    /// Token ids generated so far.
    pub fn tokens(&self) -> &[u32] {
        self.decoding.tokens()
    }

    pub fn timings(&self) -> &Timings {
        self.decoding.timings()
    }

    /// Set once generation has ended.
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.decoding.stop_reason()
    }

    /// The log-probabilities of the tokens generated since the last call (when
    /// `GenerateOptions::logprobs` asked for them).
    pub fn take_logprobs(&mut self) -> Vec<TokenLogprob> {
        self.decoding.take_logprobs()
    }

    /// Chooses a token and evaluates it when generation goes on; returns the text released.
    fn step(&mut self) -> Result<Option<String>, EngineError> {
        let tokenizer = self.session.model().tokenizer();
        let Some(chosen) = self.decoding.choose(tokenizer, &self.logits) else {
            return Ok(None);
        };
        if chosen.more {
            if self.session.pos() >= self.session.n_ctx() {
                self.decoding.stop(StopReason::ContextFull);
            } else {
                let start = Instant::now();
                let logits = self.session.eval(&[chosen.token], LogitRows::Last)?;
                self.logits.clear();
                self.logits.extend_from_slice(logits);
                self.decoding.add_generation_time(start.elapsed());
            }
        }
        Ok(Some(chosen.text))
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of `stop` (on char boundaries).
fn longest_suffix_prefix(text: &str, stop: &str) -> usize {
    let max = stop.len().saturating_sub(1).min(text.len());
    (1..=max)
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n)
                && stop.is_char_boundary(n)
                && text.ends_with(&stop[..n])
        })
        .unwrap_or(0)
}

impl Iterator for Generator<'_, '_> {
    type Item = Result<String, EngineError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            if self.decoding.stop_reason().is_some() {
                let rest = self.decoding.finish();
                return (!rest.is_empty()).then_some(Ok(rest));
            }
            match self.step() {
                Err(e) => {
                    self.decoding.stop(StopReason::EndOfGeneration);
                    self.failed = true;
                    return Some(Err(e));
                }
                Ok(Some(text)) if !text.is_empty() => return Some(Ok(text)),
                Ok(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CpuBackend;
    use crate::Model;

    fn synthetic() -> Model {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/data/synthetic/llama_f32.gguf");
        Model::load(&path).expect("synthetic model")
    }

    fn options(cancel: &Arc<AtomicBool>, max_tokens: usize) -> GenerateOptions {
        GenerateOptions {
            max_tokens,
            sampler: SamplerConfig::greedy(),
            stop_at_eog: false,
            cancel: Some(Arc::clone(cancel)),
            ..GenerateOptions::default()
        }
    }

    #[test]
    fn a_set_flag_stops_generation_and_the_prompt() {
        let model = synthetic();
        let pool = CpuBackend::shared(1);
        let cancel = Arc::new(AtomicBool::new(false));
        let mut session = model.session(64, Arc::clone(&pool));
        let mut gen = Generator::new(&mut session, &[1, 5, 9], options(&cancel, 20)).unwrap();
        let mut pieces = 0;
        while let Some(p) = gen.next() {
            p.unwrap();
            pieces += 1;
            if gen.tokens().len() >= 3 {
                cancel.store(true, Ordering::Relaxed);
            }
        }
        assert_eq!(gen.stop_reason(), Some(StopReason::Cancelled));
        assert_eq!(gen.tokens().len(), 3, "{pieces} pieces");
        let t = gen.timings().clone();
        assert_eq!(t.prompt_tokens, 3);
        assert!(t.first_token.is_some());
        drop(gen);
        // Every generated token but none after the flag was evaluated.
        assert_eq!(session.pos(), 3 + 3);

        // Set before the prompt: nothing is evaluated or generated.
        let mut session = model.session(64, pool);
        let gen = Generator::new(&mut session, &[1, 5, 9], options(&cancel, 20)).unwrap();
        assert_eq!(gen.stop_reason(), Some(StopReason::Cancelled));
        assert_eq!(gen.timings().prompt_tokens, 0);
        assert_eq!(gen.count(), 0);
        assert_eq!(session.pos(), 0);
    }

    #[test]
    fn prompt_progress_is_told_after_each_batch() {
        let model = synthetic();
        let pool = CpuBackend::shared(1);
        let mut session = model.session(256, pool);
        session.set_batch(64);
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let opts = GenerateOptions {
            max_tokens: 1,
            sampler: SamplerConfig::greedy(),
            progress: Some(PromptProgress(Arc::new(
                move |done: usize, total: usize| {
                    log.lock().unwrap().push((done, total));
                },
            ))),
            ..GenerateOptions::default()
        };
        let prompt: Vec<u32> = (0..150).map(|i| i % 30 + 1).collect();
        let gen = Generator::new(&mut session, &prompt, opts).unwrap();
        assert_eq!(gen.timings().prompt_tokens, 150);
        assert_eq!(
            *seen.lock().unwrap(),
            vec![(64, 150), (128, 150), (150, 150)]
        );
    }

    #[test]
    fn logprobs_are_a_log_softmax_with_sorted_alternatives() {
        let logits = [1.0f32, 3.0, -2.0, 3.0, 0.5];
        let z: f64 = logits.iter().map(|&l| (l as f64).exp()).sum();
        let lp = logprob_of(&logits, 4, 3);
        assert_eq!(lp.token, 4);
        assert!((lp.logprob as f64 - (0.5 - z.ln())).abs() < 1e-5);
        let ids: Vec<u32> = lp.top.iter().map(|t| t.0).collect();
        assert_eq!(ids.len(), 3);
        assert!(
            ids[..2].contains(&1) && ids[..2].contains(&3) && ids[2] == 0,
            "{ids:?}"
        );
        assert!(lp.top.windows(2).all(|w| w[0].1 >= w[1].1));
        let total: f64 = logits.iter().map(|&l| (l as f64 - z.ln()).exp()).sum();
        assert!((total - 1.0).abs() < 1e-9);
        assert!(logprob_of(&logits, 0, 0).top.is_empty());
        assert_eq!(logprob_of(&logits, 0, 100).top.len(), 5);
    }

    #[test]
    fn generation_reports_logprobs_of_greedy_tokens() {
        let model = synthetic();
        let pool = CpuBackend::shared(1);
        let mut session = model.session(64, pool);
        let opts = GenerateOptions {
            max_tokens: 5,
            sampler: SamplerConfig::greedy(),
            stop_at_eog: false,
            logprobs: Some(2),
            ..GenerateOptions::default()
        };
        let mut gen = Generator::new(&mut session, &[1, 5, 9], opts).unwrap();
        let mut got = Vec::new();
        while let Some(p) = gen.next() {
            p.unwrap();
            got.extend(gen.take_logprobs());
        }
        got.extend(gen.take_logprobs());
        assert_eq!(got.len(), 5);
        for (lp, &tok) in got.iter().zip(gen.tokens()) {
            assert_eq!(lp.token, tok);
            // Greedy: the chosen token is the most likely one.
            assert_eq!(lp.top[0].0, tok);
            assert!(lp.logprob <= 0.0 && (lp.logprob - lp.top[0].1).abs() < 1e-6);
        }
    }

    #[test]
    fn suffix_prefix() {
        assert_eq!(longest_suffix_prefix("hello <|im", "<|im_end|>"), 4);
        assert_eq!(longest_suffix_prefix("hello", "<|im_end|>"), 0);
        assert_eq!(longest_suffix_prefix("ab", "abc"), 2);
        assert_eq!(longest_suffix_prefix("abc", "abc"), 0);
        assert_eq!(longest_suffix_prefix("xé", "é!"), 2);
    }
}
