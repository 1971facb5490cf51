//! One conversation with a model: its messages, its settings, and a session whose KV cache holds
//! the tokens of the conversation so far, so that a new turn evaluates only what is new.

use super::settings::Settings;
use crate::insight::usage_log::UsageLog;
use anyhow::{bail, Context};
use engine::chat::{ChatTemplate, Message};
use engine::generate::{Generator, StopReason, Timings};
use engine::Session;
use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// Facts for the `--verbose` report that do not change between answers.
pub struct RunFacts {
    pub load_time: Duration,
    pub n_threads: usize,
}

pub struct Conversation<'m> {
    session: Session<'m>,
    /// The tokens whose keys and values the session holds, position by position.
    cached: Vec<u32>,
    /// None for raw completion only (`--raw`): a chat turn is then an error.
    template: Option<ChatTemplate>,
    /// User and assistant turns; the system prompt lives in `settings`.
    pub messages: Vec<Message>,
    pub settings: Settings,
    facts: RunFacts,
    /// The usage ledger: one row per answer (off unless [`Conversation::with_usage`]).
    usage: UsageLog,
    /// The grammar every answer follows (`--format`, `--grammar`), compiled and unused: each
    /// answer starts from a copy.
    constraint: Option<engine::constraint::Constraint>,
}

/// What one answer did.
pub struct Answer {
    pub text: String,
    pub stop: Option<StopReason>,
    pub timings: Timings,
    /// Prompt tokens whose cache entries were reused rather than evaluated.
    pub reused: usize,
    /// All the prompt's tokens: reused and new.
    pub prompt_len: usize,
}

impl<'m> Conversation<'m> {
    pub fn new(
        session: Session<'m>,
        template: Option<ChatTemplate>,
        settings: Settings,
        facts: RunFacts,
    ) -> Self {
        Conversation {
            session,
            cached: Vec::new(),
            template,
            messages: Vec::new(),
            settings,
            facts,
            usage: UsageLog::off(),
            constraint: None,
        }
    }

    /// Makes every answer follow `constraint`'s grammar.
    pub fn with_constraint(mut self, constraint: Option<engine::constraint::Constraint>) -> Self {
        self.constraint = constraint;
        self
    }

    /// Records every answer in the usage ledger.
    pub fn with_usage(mut self, usage: UsageLog) -> Self {
        self.usage = usage;
        self
    }

    pub fn session(&self) -> &Session<'m> {
        &self.session
    }

    /// A cache of `n_ctx` positions from now on. The messages stay; the next turn evaluates
    /// them again (dropping the oldest exchanges if they no longer fit). Returns the size
    /// given, which the model's training context may cap.
    pub fn set_context(&mut self, n_ctx: usize) -> usize {
        self.session.resize(n_ctx);
        self.cached.clear();
        self.session.n_ctx()
    }

    /// Forgets the conversation and empties the cache; the settings stay.
    pub fn clear(&mut self) {
        self.messages.clear();
        self.session.reset();
        self.cached.clear();
    }

    /// Adds the user's message and answers it (streamed to stdout). A cancelled answer is
    /// kept as far as it went, so turns still alternate. On error the message is taken back.
    pub fn ask(&mut self, text: &str, cancel: Option<Arc<AtomicBool>>) -> anyhow::Result<Answer> {
        self.messages.push(Message::new("user", text));
        let result = self
            .prompt_tokens()
            .and_then(|tokens| self.generate(&tokens, cancel));
        match result {
            Ok(answer) => {
                self.messages.push(Message::new("assistant", &answer.text));
                Ok(answer)
            }
            Err(e) => {
                self.messages.pop();
                Err(e)
            }
        }
    }

    /// Continues `text` as it is, without the chat template (`--raw`). Control-token text in
    /// it is parsed, as llama-cli does, so hand-written chat markup works.
    pub fn complete_raw(&mut self, text: &str) -> anyhow::Result<Answer> {
        let tokens = self.session.model().tokenizer().encode(text, true, true);
        if tokens.len() >= self.session.n_ctx() {
            bail!(
                "the prompt has {} tokens but the context holds {}: use a larger --ctx",
                tokens.len(),
                self.session.n_ctx()
            );
        }
        self.generate(&tokens, None)
    }

    /// Renders the conversation into tokens. When it would leave no room for an answer, the
    /// oldest exchanges are dropped (never the system prompt), saying so on stderr.
    fn prompt_tokens(&mut self) -> anyhow::Result<Vec<u32>> {
        let n_ctx = self.session.n_ctx();
        let room = n_ctx - self.settings.num_predict().min(n_ctx / 2);
        loop {
            let tokens = self.render()?;
            if tokens.len() <= room {
                return Ok(tokens);
            }
            let dropped = self.drop_oldest_exchange();
            if dropped == 0 {
                bail!(
                    "the prompt has {} tokens but the context holds {n_ctx}, with room for the answer: \
                     use a larger --ctx or a shorter message",
                    tokens.len()
                );
            }
            eprintln!(
                "(context full: dropped the oldest exchange, {dropped} message{}, to make room; \
                 the system prompt stays)",
                if dropped == 1 { "" } else { "s" }
            );
        }
    }

    fn render(&self) -> anyhow::Result<Vec<u32>> {
        let mut all = Vec::with_capacity(self.messages.len() + 1);
        if let Some(s) = &self.settings.system {
            all.push(Message::new("system", s));
        }
        all.extend(self.messages.iter().cloned());
        let Some(template) = &self.template else {
            bail!("no chat template: this conversation only completes raw text (--raw)");
        };
        let tok = self.session.model().tokenizer();
        // Typed text stays text: `<|im_end|>` in a message is not the control token.
        let prompt = template.render_prompt(tok, &all, None, true)?;
        Ok(prompt.encode(tok))
    }

    /// Removes the first user message and the answers after it, never the last message.
    /// Returns how many messages went.
    fn drop_oldest_exchange(&mut self) -> usize {
        if self.messages.len() <= 1 {
            return 0;
        }
        let end = self.messages[1..]
            .iter()
            .position(|m| m.role == "user")
            .map_or(self.messages.len() - 1, |i| i + 1);
        self.messages.drain(..end);
        end
    }

    /// Generates an answer to `tokens` (the whole conversation), streaming it to stdout. Only
    /// the tokens after the longest prefix already in the cache are evaluated.
    fn generate(
        &mut self,
        tokens: &[u32],
        cancel: Option<Arc<AtomicBool>>,
    ) -> anyhow::Result<Answer> {
        // At least one token is evaluated: its logits start the answer.
        let reused = common_prefix(&self.cached, tokens).min(tokens.len().saturating_sub(1));
        self.session.truncate(reused);
        self.cached.truncate(reused);
        let new = &tokens[reused..];
        if self.session.pos() + new.len() >= self.session.n_ctx() {
            bail!(
                "the prompt has {} tokens but the context holds {}: use a larger --ctx",
                tokens.len(),
                self.session.n_ctx()
            );
        }
        let started = self.usage.start();
        let mut opts = self.settings.generate_options();
        opts.cancel = cancel;
        opts.constraint = self.constraint.clone();
        let spinner = super::prompt_progress::start(new.len(), self.session.batch()).map(
            |(spinner, progress)| {
                opts.progress = Some(progress);
                spinner
            },
        );
        let generator = Generator::new(&mut self.session, new, opts);
        // Gone before the answer is printed.
        drop(spinner);
        let mut gen = match generator {
            Ok(g) => g,
            Err(e) => {
                // Part of the prompt may be in the cache; forget it.
                self.session.truncate(reused);
                return Err(e).context("prompt evaluation failed");
            }
        };
        let mut out = std::io::stdout().lock();
        // Wrapped for the eye only: the answer's text stays as the model wrote it.
        let mut wrap = super::wrap::WordWrap::for_stdout();
        let mut text = String::new();
        let mut failed = None;
        for piece in gen.by_ref() {
            match piece {
                Ok(p) => {
                    match &mut wrap {
                        Some(w) => out.write_all(w.push(&p).as_bytes())?,
                        None => out.write_all(p.as_bytes())?,
                    }
                    out.flush()?;
                    text.push_str(&p);
                }
                Err(e) => failed = Some(e),
            }
        }
        if let Some(w) = &mut wrap {
            out.write_all(w.finish().as_bytes())?;
        }
        writeln!(out)?;
        let timings = gen.timings().clone();
        let stop = gen.stop_reason();
        let generated = gen.tokens().to_vec();
        drop(gen);
        // What the session now holds: the evaluated prompt, then every generated token but
        // the last (whose logits nobody needed).
        self.cached
            .extend_from_slice(&new[..timings.prompt_tokens.min(new.len())]);
        self.cached.extend_from_slice(&generated);
        self.cached.truncate(self.session.pos());
        self.session.truncate(self.cached.len());
        if let Some(e) = failed {
            return Err(e).context("generation failed");
        }
        // Counts and durations only, never the text.
        self.usage.record(
            started,
            tokens.len(),
            generated.len(),
            timings.prompt_time,
            timings.generation_time,
        );
        if stop == Some(StopReason::ContextFull) {
            eprintln!(
                "(context full: the answer stopped after {} tokens; the oldest turns will be dropped \
                 to make room for the next one)",
                generated.len()
            );
        }
        Ok(Answer {
            text,
            stop,
            timings,
            reused,
            prompt_len: tokens.len(),
        })
    }

    /// Timings and memory after an answer, on stderr (`--verbose`, `/set verbose`).
    pub fn report(&self, a: &Answer) {
        let t = &a.timings;
        eprintln!(
            "prompt: {} new tokens ({} reused from the cache, {} in all), {:.1} tokens/s",
            t.prompt_tokens,
            a.reused,
            a.prompt_len,
            t.prompt_tokens_per_second()
        );
        let first = t.first_token.map_or("no token".to_string(), |d| {
            format!("{:.3} s", d.as_secs_f64())
        });
        eprintln!(
            "generated: {} tokens, {:.1} tokens/s; time to first token: {first}",
            t.generated_tokens,
            t.generation_tokens_per_second(),
        );
        eprintln!(
            "load: {:.3} s; {} threads",
            self.facts.load_time.as_secs_f64(),
            self.facts.n_threads
        );
        let model = self.session.model();
        let peak = match crate::cmd::peak_rss_bytes() {
            Some(peak) => format!("{peak} bytes ({:.1} MiB)", mib(peak)),
            None => "unknown on this platform".to_string(),
        };
        eprintln!(
            "memory: peak RSS {peak}; model file {:.1} MiB (mapped), KV cache {:.1} MiB",
            mib(model.file().file_size()),
            mib(self.session.kv_bytes() as u64),
        );
    }
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::common_prefix;

    #[test]
    fn prefix() {
        assert_eq!(common_prefix(&[1, 2, 3], &[1, 2, 4]), 2);
        assert_eq!(common_prefix(&[], &[1]), 0);
        assert_eq!(common_prefix(&[1, 2], &[1, 2, 3]), 2);
    }
}
