use anyhow::{bail, Context};
use engine::chat::{ChatTemplate, Message};
use engine::generate::{GenerateOptions, Generator, Timings};
use engine::sampler::SamplerConfig;
use engine::{Model, Session};
use std::io::{BufRead, IsTerminal, Write};

#[derive(clap::Args)]
pub struct Args {
    /// Model: a store name (pulled on first use) or a GGUF file; `smollm2` when left out.
    model: Option<String>,
    /// The prompt. Without it, prompts are read from stdin: a chat on a terminal, one prompt
    /// otherwise.
    prompt: Option<String>,
    /// Use no network: the model must already be in the store (also HEARTH_OFFLINE=1).
    #[arg(long)]
    offline: bool,
    /// Use the prompt as it is, without the chat template (BOS as the model's metadata says).
    #[arg(long)]
    raw: bool,
    /// A system prompt for the chat.
    #[arg(long)]
    system: Option<String>,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    #[arg(long, default_value_t = 0.05)]
    min_p: f32,
    /// Locally typical sampling; 1 disables.
    #[arg(long, default_value_t = 1.0)]
    typical_p: f32,
    /// Penalize recently seen tokens (llama.cpp's repeat penalty); 1 disables.
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    presence_penalty: f32,
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    frequency_penalty: f32,
    /// How many recent tokens the penalties look at.
    #[arg(long, default_value_t = 64)]
    repeat_last_n: usize,
    /// Token bias as ID=BIAS (repeatable; BIAS may be -inf to ban a token).
    #[arg(long = "logit-bias", value_parser = parse_bias, allow_hyphen_values = true)]
    logit_bias: Vec<(u32, f32)>,
    /// Stop before this text (repeatable); it is not printed.
    #[arg(long = "stop")]
    stop: Vec<String>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Tokens to generate at most (per answer).
    #[arg(short = 'n', long = "max-tokens", default_value_t = 512)]
    max_tokens: usize,
    /// Context size in tokens.
    #[arg(long, default_value_t = 4096)]
    ctx: usize,
    #[arg(long)]
    threads: Option<usize>,
    /// Timings and memory on stderr after each answer.
    #[arg(long)]
    verbose: bool,
}

impl Args {
    fn validate(&self) -> anyhow::Result<()> {
        if let Err(e) = self.options().sampler.validate() {
            bail!("--{e}");
        }
        if self.ctx == 0 {
            bail!("--ctx must be at least 1");
        }
        Ok(())
    }

    fn options(&self) -> GenerateOptions {
        GenerateOptions {
            max_tokens: self.max_tokens,
            sampler: SamplerConfig {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                min_p: self.min_p,
                typical_p: self.typical_p,
                repeat_penalty: self.repeat_penalty,
                presence_penalty: self.presence_penalty,
                frequency_penalty: self.frequency_penalty,
                penalty_last_n: self.repeat_last_n,
                logit_bias: self.logit_bias.clone(),
                seed: self.seed,
            },
            stop_at_eog: true,
            render_special: false,
            stop: self.stop.clone(),
        }
    }
}

/// The model `run` uses when none is named.
pub const DEFAULT_MODEL: &str = "smollm2";

pub fn run(mut a: Args) -> anyhow::Result<()> {
    a.validate()?;
    let (model_arg, prompt) = model_and_prompt(a.model.take(), a.prompt.take());
    a.prompt = prompt;
    let path = super::resolve_model(&model_arg, a.offline)?;
    let model = super::load_model(&path)?;
    let pool = super::thread_pool(a.threads);
    let n_threads = pool.n_threads();
    let mut chat = Chat {
        session: model.session(a.ctx, pool),
        history: Vec::new(),
        args: &a,
        n_threads,
    };
    if a.raw {
        let prompt = match &a.prompt {
            Some(p) => p.clone(),
            None => read_stdin()?,
        };
        // Special-token text in a raw prompt is parsed, as llama-cli does, so chat markup works.
        let tokens = model.tokenizer().encode(&prompt, true, true);
        chat.answer(&tokens)?;
        return Ok(());
    }
    let template = chat_template(&model);
    let mut messages = Vec::new();
    if let Some(system) = &a.system {
        messages.push(Message::new("system", system));
    }
    let interactive = a.prompt.is_none() && std::io::stdin().is_terminal();
    if !interactive {
        let prompt = match &a.prompt {
            Some(p) => p.clone(),
            None => read_stdin()?,
        };
        messages.push(Message::new("user", &prompt));
        let tokens = chat.render(&template, &mut messages)?;
        chat.answer(&tokens)?;
        return Ok(());
    }
    eprintln!("Chatting with {model_arg}. Type /bye or press Ctrl-D to leave.");
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        eprint!(">>> ");
        let Some(line) = lines.next() else { break };
        let line = line.context("cannot read stdin")?;
        let text = line.trim();
        match text {
            "" => continue,
            "/bye" => break,
            "/clear" => {
                messages.retain(|m| m.role == "system");
                eprintln!("(conversation cleared)");
                continue;
            }
            _ => {}
        }
        messages.push(Message::new("user", text));
        let tokens = chat.render(&template, &mut messages)?;
        let answer = chat.answer(&tokens)?;
        messages.push(Message::new("assistant", answer.trim()));
    }
    Ok(())
}

/// `hearth run MODEL [PROMPT]`, or `hearth run PROMPT` with the default model: a lone argument
/// is the model when it is a file or a name the store knows, else the prompt.
fn model_and_prompt(model: Option<String>, prompt: Option<String>) -> (String, Option<String>) {
    match (model, prompt) {
        (Some(m), Some(p)) => (m, Some(p)),
        (Some(m), None) if names_a_model(&m) => (m, None),
        (Some(p), None) => (DEFAULT_MODEL.to_string(), Some(p)),
        (None, p) => (DEFAULT_MODEL.to_string(), p),
    }
}

fn names_a_model(arg: &str) -> bool {
    if std::path::Path::new(arg).is_file() || arg.to_ascii_lowercase().ends_with(".gguf") {
        return true;
    }
    let Ok(name) = store::ModelName::parse(arg) else {
        return false;
    };
    name.is_hf()
        || store::catalog::lookup(&name).is_some()
        || store::Store::open_default()
            .ok()
            .and_then(|s| s.find(&name).ok().flatten())
            .is_some()
}

fn read_stdin() -> anyhow::Result<String> {
    let mut s = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
        .context("cannot read the prompt from stdin")?;
    if s.trim().is_empty() {
        bail!("no prompt: give one as an argument or on stdin");
    }
    Ok(s)
}

/// The model's chat template, or a built-in one when the file has none.
fn chat_template(model: &Model) -> ChatTemplate {
    let file = model.file();
    let tok = model.tokenizer();
    let text = |id: Option<u32>| id.and_then(|i| tok.token_text(i)).unwrap_or("").to_string();
    let template = file.get_str("tokenizer.chat_template").ok().flatten();
    ChatTemplate::new(
        template,
        &model.config().arch,
        &text(tok.bos()),
        &text(tok.eos()),
    )
}

/// One conversation: the session's cache holds `history`, so a new turn evaluates only what
/// differs from it.
struct Chat<'m, 'a> {
    session: Session<'m>,
    history: Vec<u32>,
    args: &'a Args,
    n_threads: usize,
}

impl Chat<'_, '_> {
    /// Renders the conversation into tokens, dropping the oldest turns (never the system
    /// prompt) when it would not leave room for an answer.
    fn render(
        &self,
        template: &ChatTemplate,
        messages: &mut Vec<Message>,
    ) -> anyhow::Result<Vec<u32>> {
        let tok = self.session.model().tokenizer();
        let bos_text = tok.bos().and_then(|b| tok.token_text(b)).unwrap_or("");
        let room = self
            .session
            .n_ctx()
            .saturating_sub(self.args.max_tokens.min(self.session.n_ctx() / 2));
        loop {
            let text = template.render(messages, true)?;
            // A template that writes BOS itself must not get a second one.
            let add_bos = bos_text.is_empty() || !text.starts_with(bos_text);
            let tokens = tok.encode(&text, add_bos, true);
            if tokens.len() <= room {
                return Ok(tokens);
            }
            let first_turn = messages.iter().position(|m| m.role != "system");
            match first_turn {
                Some(i) if messages.len() - i > 1 => {
                    messages.remove(i);
                    eprintln!("(context full: dropped the oldest turn to make room)");
                }
                _ => bail!(
                    "the prompt has {} tokens but the context holds {} with room for the answer: use a larger --ctx",
                    tokens.len(),
                    self.session.n_ctx()
                ),
            }
        }
    }

    /// Generates an answer to `tokens` (the whole conversation so far), streaming it to stdout.
    fn answer(&mut self, tokens: &[u32]) -> anyhow::Result<String> {
        let reused = common_prefix(&self.history, tokens).min(tokens.len().saturating_sub(1));
        self.session.truncate(reused);
        let new = &tokens[reused..];
        if self.session.pos() + new.len() >= self.session.n_ctx() {
            bail!(
                "the prompt has {} tokens but the context holds {}: use a larger --ctx",
                tokens.len(),
                self.session.n_ctx()
            );
        }
        let kv_bytes = self.session.kv_bytes();
        let mut gen = Generator::new(&mut self.session, new, self.args.options())
            .context("prompt evaluation failed")?;
        let mut out = std::io::stdout().lock();
        let mut text = String::new();
        for piece in gen.by_ref() {
            let piece = piece?;
            out.write_all(piece.as_bytes())?;
            out.flush()?;
            text.push_str(&piece);
        }
        writeln!(out)?;
        let generated = gen.tokens().to_vec();
        let timings = gen.timings().clone();
        drop(gen);
        self.history.clear();
        self.history.extend_from_slice(tokens);
        self.history.extend_from_slice(&generated);
        self.history.truncate(self.session.pos());
        if self.args.verbose {
            self.report(&timings, reused, kv_bytes);
        }
        Ok(text)
    }

    fn report(&self, t: &Timings, reused: usize, kv_bytes: usize) {
        eprintln!(
            "prompt: {} tokens ({} reused from the cache), {:.1} tokens/s; generated: {} tokens, {:.1} tokens/s; {} threads",
            t.prompt_tokens,
            reused,
            t.prompt_tokens_per_second(),
            t.generated_tokens,
            t.generation_tokens_per_second(),
            self.n_threads
        );
        if let Some(peak) = super::peak_rss_bytes() {
            let model = self.session.model();
            eprintln!(
                "memory: peak RSS {} bytes ({:.1} MiB); model file {:.1} MiB, KV cache {:.1} MiB",
                peak,
                mib(peak),
                mib(model.file().file_size()),
                mib(kv_bytes as u64)
            );
        }
    }
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// `ID=BIAS`, e.g. `42=-1.5` or `42=-inf`.
fn parse_bias(s: &str) -> Result<(u32, f32), String> {
    let (id, bias) = s
        .split_once('=')
        .ok_or_else(|| format!("expected ID=BIAS, got {s:?}"))?;
    let id = id
        .trim()
        .parse()
        .map_err(|_| format!("token id {id:?} is not a number"))?;
    let bias: f32 = bias
        .trim()
        .parse()
        .map_err(|_| format!("bias {bias:?} is not a number"))?;
    if bias.is_nan() {
        return Err("bias must be a number or ±inf".into());
    }
    Ok((id, bias))
}
