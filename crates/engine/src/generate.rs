//! Text generation as an iterator of UTF-8-safe pieces, with stop conditions and timings.

use crate::blocks::LogitRows;
use crate::error::EngineError;
use crate::model::Session;
use crate::sampler::{Sampler, SamplerConfig};
use crate::tokenizer::StreamDecoder;
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

/// Yields text pieces as tokens are generated. Pieces never split a UTF-8 character.
pub struct Generator<'a, 'm> {
    session: &'a mut Session<'m>,
    sampler: Sampler,
    decoder: StreamDecoder,
    opts: GenerateOptions,
    logits: Vec<f32>,
    tokens: Vec<u32>,
    timings: Timings,
    stop: Option<StopReason>,
    flushed: bool,
    /// Text held back because it could be the start of a stop string.
    held: String,
    /// When prompt evaluation began (for the time to first token).
    start: Instant,
}

/// Evaluates `prompt` (in batches when it can be cancelled, so that a Ctrl-C does not wait
/// for a long prompt). Returns the last logits and how many tokens were evaluated.
fn eval_prompt(
    session: &mut Session<'_>,
    prompt: &[u32],
    opts: &GenerateOptions,
) -> Result<(Vec<f32>, usize), EngineError> {
    if opts.cancel.is_none() {
        return Ok((
            session.eval(prompt, LogitRows::Last)?.to_vec(),
            prompt.len(),
        ));
    }
    let mut logits = Vec::new();
    let mut done = 0;
    for chunk in prompt.chunks(crate::model::DEFAULT_BATCH) {
        if opts.cancelled() {
            break;
        }
        logits = session.eval(chunk, LogitRows::Last)?.to_vec();
        done += chunk.len();
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
        let timings = Timings {
            prompt_tokens: evaluated,
            prompt_time: start.elapsed(),
            ..Timings::default()
        };
        let stop = (evaluated < prompt.len()).then_some(StopReason::Cancelled);
        let mut sampler = Sampler::new(opts.sampler.clone());
        for &t in prompt {
            sampler.accept(t);
        }
        Ok(Generator {
            session,
            sampler,
            decoder: StreamDecoder::new(),
            opts,
            logits,
            tokens: Vec::new(),
            timings,
            stop,
            flushed: false,
            start,
            held: String::new(),
        })
    }

    /// Token ids generated so far.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    pub fn timings(&self) -> &Timings {
        &self.timings
    }

    /// Set once generation has ended.
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.stop
    }

    fn step(&mut self) -> Result<Option<String>, EngineError> {
        if self.opts.cancelled() {
            self.stop = Some(StopReason::Cancelled);
            return Ok(None);
        }
        if self.tokens.len() >= self.opts.max_tokens {
            self.stop = Some(StopReason::MaxTokens);
            return Ok(None);
        }
        if self.logits.is_empty() {
            // An empty prompt gives nothing to continue from.
            self.stop = Some(StopReason::EndOfGeneration);
            return Ok(None);
        }
        let tokenizer = self.session.model().tokenizer();
        let token = self.sampler.sample(&self.logits);
        if self.opts.stop_at_eog && tokenizer.is_eog(token) {
            self.stop = Some(StopReason::EndOfGeneration);
            return Ok(None);
        }
        let bytes = tokenizer.token_bytes(token, self.opts.render_special);
        self.tokens.push(token);
        self.timings.generated_tokens += 1;
        if self.timings.first_token.is_none() {
            self.timings.first_token = Some(self.start.elapsed());
        }
        let piece = self.decoder.push(&bytes);
        // The last token needs no forward pass: nothing will read its logits.
        if self.tokens.len() < self.opts.max_tokens {
            if self.session.pos() >= self.session.n_ctx() {
                self.stop = Some(StopReason::ContextFull);
                return Ok(Some(piece));
            }
            let start = Instant::now();
            let logits = self.session.eval(&[token], LogitRows::Last)?;
            self.logits.clear();
            self.logits.extend_from_slice(logits);
            self.timings.generation_time += start.elapsed();
        }
        Ok(Some(piece))
    }
}

impl Generator<'_, '_> {
    /// Adds `piece` to the held-back text and returns what can be released: everything before
    /// a complete stop string (ending generation), else everything that cannot start one.
    fn release(&mut self, piece: &str) -> String {
        self.held.push_str(piece);
        if self.opts.stop.is_empty() {
            return std::mem::take(&mut self.held);
        }
        if let Some(at) = self
            .opts
            .stop
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            self.held.truncate(at);
            self.stop = Some(StopReason::StopString);
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
        loop {
            if self.stop.is_some() {
                if self.flushed {
                    return None;
                }
                self.flushed = true;
                let mut rest = std::mem::take(&mut self.held);
                if self.stop != Some(StopReason::StopString) {
                    rest.push_str(&self.decoder.finish());
                    // A stop string may still complete in the flushed tail.
                    if let Some(at) = self
                        .opts
                        .stop
                        .iter()
                        .filter(|s| !s.is_empty())
                        .filter_map(|s| rest.find(s.as_str()))
                        .min()
                    {
                        rest.truncate(at);
                    }
                }
                return (!rest.is_empty()).then_some(Ok(rest));
            }
            match self.step() {
                Err(e) => {
                    self.stop = Some(StopReason::EndOfGeneration);
                    self.flushed = true;
                    return Some(Err(e));
                }
                Ok(Some(piece)) if !piece.is_empty() => {
                    let out = self.release(&piece);
                    if !out.is_empty() {
                        return Some(Ok(out));
                    }
                }
                Ok(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Model;
    use kernels::pool::ThreadPool;

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
        let pool = Arc::new(ThreadPool::new(1));
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
    fn suffix_prefix() {
        assert_eq!(longest_suffix_prefix("hello <|im", "<|im_end|>"), 4);
        assert_eq!(longest_suffix_prefix("hello", "<|im_end|>"), 0);
        assert_eq!(longest_suffix_prefix("ab", "abc"), 2);
        assert_eq!(longest_suffix_prefix("abc", "abc"), 0);
        assert_eq!(longest_suffix_prefix("xé", "é!"), 2);
    }
}
