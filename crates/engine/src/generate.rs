//! Text generation as an iterator of UTF-8-safe pieces, with stop conditions and timings.

use crate::blocks::LogitRows;
use crate::error::EngineError;
use crate::model::Session;
use crate::sampler::{Sampler, SamplerConfig};
use crate::tokenizer::StreamDecoder;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    pub sampler: SamplerConfig,
    /// Stop at end-of-generation tokens (EOS, end-of-turn).
    pub stop_at_eog: bool,
    /// Render control tokens as text instead of hiding them.
    pub render_special: bool,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    MaxTokens,
    EndOfGeneration,
    ContextFull,
}

#[derive(Debug, Clone, Default)]
pub struct Timings {
    pub prompt_tokens: usize,
    pub prompt_time: Duration,
    pub generated_tokens: usize,
    pub generation_time: Duration,
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
}

impl<'a, 'm> Generator<'a, 'm> {
    /// Evaluates the prompt (appended to whatever the session holds) and prepares to generate.
    pub fn new(
        session: &'a mut Session<'m>,
        prompt: &[u32],
        opts: GenerateOptions,
    ) -> Result<Self, EngineError> {
        let start = Instant::now();
        let logits = session.eval(prompt, LogitRows::Last)?.to_vec();
        let timings = Timings {
            prompt_tokens: prompt.len(),
            prompt_time: start.elapsed(),
            ..Timings::default()
        };
        Ok(Generator {
            session,
            sampler: Sampler::new(opts.sampler.clone()),
            decoder: StreamDecoder::new(),
            opts,
            logits,
            tokens: Vec::new(),
            timings,
            stop: None,
            flushed: false,
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

impl Iterator for Generator<'_, '_> {
    type Item = Result<String, EngineError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.stop.is_some() {
                if self.flushed {
                    return None;
                }
                self.flushed = true;
                let rest = self.decoder.finish();
                return (!rest.is_empty()).then_some(Ok(rest));
            }
            match self.step() {
                Err(e) => {
                    self.stop = Some(StopReason::EndOfGeneration);
                    self.flushed = true;
                    return Some(Err(e));
                }
                Ok(Some(piece)) if !piece.is_empty() => return Some(Ok(piece)),
                Ok(_) => {}
            }
        }
    }
}
