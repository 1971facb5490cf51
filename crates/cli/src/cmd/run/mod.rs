//! `hearth run [MODEL] [PROMPT]`: one answer to a prompt (an argument or stdin), or a chat on
//! a terminal.

mod command;
mod conversation;
mod input;
mod interrupt;
mod prompt_progress;
mod repl;
mod saved;
mod settings;
mod wrap;

use crate::insight::usage_log::UsageLog;
use anyhow::{bail, Context};
use conversation::{Conversation, RunFacts};
use engine::chat::{ChatError, ChatTemplate, BUILTIN_TEMPLATES};
use engine::Model;
use settings::Settings;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

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
    /// Chat through a built-in template (chatml, gemma3) instead of the file's: for an
    /// instruct model whose file lacks the template it was trained with.
    #[arg(long, value_name = "NAME", conflicts_with = "raw")]
    chat_template: Option<String>,
    /// A system prompt for the chat (replaces a preset's).
    #[arg(long)]
    system: Option<String>,
    // Boxed: inline, these would make every subcommand's arguments as large.
    #[command(flatten)]
    sampling: Box<SamplingFlags>,
    /// The answer must be JSON: `json` for any JSON object, or a JSON schema file.
    #[arg(long, value_name = "json|SCHEMA.json", conflicts_with = "grammar")]
    format: Option<String>,
    /// The answer must follow this GBNF grammar file (its start rule is `root`).
    #[arg(long, value_name = "FILE.gbnf")]
    grammar: Option<PathBuf>,
    /// Context size in tokens (capped at the model's training context) [default: 4096]
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    ctx: Option<String>,
    /// Threads for the math, 1 to 1024 [default: the machine's cores]
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    threads: Option<String>,
    /// Timings and memory on stderr after each answer.
    #[arg(long)]
    verbose: bool,
    /// Record nothing in the usage ledger (also `ledger = false` in HEARTH_HOME/config.toml).
    #[arg(long)]
    no_ledger: bool,
}

/// Sampling flags: text, checked by [`Settings::set`] like `/set` and presets.
#[derive(clap::Args)]
struct SamplingFlags {
    /// Randomness, 0 to 100; 0 = greedy [default: 0.8]
    #[arg(long, value_name = "T", allow_hyphen_values = true)]
    temperature: Option<String>,
    /// Keep the K most likely tokens; 0 disables [default: 40]
    #[arg(long, value_name = "K", allow_hyphen_values = true)]
    top_k: Option<String>,
    /// Nucleus sampling, 0 to 1; 1 disables [default: 0.95]
    #[arg(long, value_name = "P", allow_hyphen_values = true)]
    top_p: Option<String>,
    /// Drop tokens less likely than P times the best one, 0 to 1 [default: 0.05]
    #[arg(long, value_name = "P", allow_hyphen_values = true)]
    min_p: Option<String>,
    /// Locally typical sampling, 0 to 1; 1 disables [default: 1]
    #[arg(long, value_name = "P", allow_hyphen_values = true)]
    typical_p: Option<String>,
    /// Penalize recently seen tokens (llama.cpp's repeat penalty), > 0; 1 disables [default: 1.1]
    #[arg(long, value_name = "X", allow_hyphen_values = true)]
    repeat_penalty: Option<String>,
    /// -2 to 2 [default: 0]
    #[arg(long, value_name = "X", allow_hyphen_values = true)]
    presence_penalty: Option<String>,
    /// -2 to 2 [default: 0]
    #[arg(long, value_name = "X", allow_hyphen_values = true)]
    frequency_penalty: Option<String>,
    /// How many recent tokens the penalties look at [default: 64]
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    repeat_last_n: Option<String>,
    /// Token bias as ID=BIAS (repeatable; BIAS may be -inf to ban a token).
    #[arg(long = "logit-bias", value_parser = parse_bias, allow_hyphen_values = true)]
    logit_bias: Vec<(u32, f32)>,
    /// Stop before this text (repeatable; replaces a preset's); it is not printed.
    #[arg(long = "stop", allow_hyphen_values = true)]
    stop: Vec<String>,
    /// Seed of the sampler's random draws: the same seed gives the same answer [default: a
    /// new one per answer]
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    seed: Option<String>,
    /// Tokens to generate at most, per answer [default: 512]
    #[arg(
        short = 'n',
        long = "max-tokens",
        value_name = "N",
        allow_hyphen_values = true
    )]
    max_tokens: Option<String>,
}

const MAX_THREADS: usize = 1024;

impl Args {
    /// The flags' settings, laid over `base` (a preset's): a flag given replaces the
    /// preset's value. Every value is range-checked; the error names the flag.
    fn settings(&self, mut base: Settings) -> anyhow::Result<Settings> {
        let f = &self.sampling;
        let numeric = [
            ("temperature", "temperature", &f.temperature),
            ("top-k", "top_k", &f.top_k),
            ("top-p", "top_p", &f.top_p),
            ("min-p", "min_p", &f.min_p),
            ("typical-p", "typical_p", &f.typical_p),
            ("repeat-penalty", "repeat_penalty", &f.repeat_penalty),
            ("presence-penalty", "presence_penalty", &f.presence_penalty),
            (
                "frequency-penalty",
                "frequency_penalty",
                &f.frequency_penalty,
            ),
            ("repeat-last-n", "repeat_last_n", &f.repeat_last_n),
            ("seed", "seed", &f.seed),
            ("max-tokens", "num_predict", &f.max_tokens),
            ("ctx", "num_ctx", &self.ctx),
        ];
        for (flag, key, value) in numeric {
            if let Some(v) = value {
                base.set(key, v)
                    .map_err(|e| anyhow::anyhow!("--{flag}: {}", e.reason))?;
            }
        }
        if !f.stop.is_empty() {
            base.params.stop.clear();
            for s in &f.stop {
                base.set("stop", s)
                    .map_err(|e| anyhow::anyhow!("--stop: {}", e.reason))?;
            }
        }
        if let Some(s) = &self.system {
            base.set_system(Some(s))
                .map_err(|e| anyhow::anyhow!("--system: {}", e.reason))?;
        }
        base.logit_bias = f.logit_bias.clone();
        base.verbose = self.verbose;
        base.check_sampler()
            .map_err(|e| anyhow::anyhow!("--{}: {}", e.key.replace('_', "-"), e.reason))?;
        Ok(base)
    }

    fn threads(&self) -> anyhow::Result<Option<usize>> {
        let Some(t) = &self.threads else {
            return Ok(None);
        };
        match t.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_THREADS).contains(&n) => Ok(Some(n)),
            _ => bail!("--threads: must be an integer between 1 and {MAX_THREADS} (got {t:?})"),
        }
    }
}

/// The model `run` uses when none is named.
pub const DEFAULT_MODEL: &str = "smollm2";

pub fn run(mut a: Args) -> anyhow::Result<()> {
    // Flags are checked before anything is loaded or pulled.
    a.settings(Settings::default())?;
    if let Some(name) = &a.chat_template {
        if !BUILTIN_TEMPLATES.iter().any(|(n, _)| n == name) {
            return Err(no_such_builtin(name));
        }
    }
    let threads = a.threads()?;
    let grammar = super::format::grammar_from_flags(a.format.as_deref(), a.grammar.as_deref())?;
    let (model_arg, prompt) = model_and_prompt(a.model.take(), a.prompt.take());
    let (path, preset) = resolve(&model_arg, a.offline)?;
    let settings = a.settings(preset)?;
    let start = Instant::now();
    let model = super::load_model(&path)?;
    if model.is_embedding_only() {
        bail!(
            "{model_arg} is an embedding model ({}): it makes embeddings, not text; serve it \
             with `hearth serve` and ask /v1/embeddings or /api/embed",
            model.config().arch
        );
    }
    let load_time = start.elapsed();
    let constraint = match &grammar {
        None => None,
        Some(g) => {
            let flag = if a.format.is_some() {
                "--format"
            } else {
                "--grammar"
            };
            Some(super::format::compile(&model, g, flag)?)
        }
    };
    let backend = super::cpu_backend(threads);
    let facts = RunFacts {
        load_time,
        n_threads: backend.threads(),
    };
    // Raw completion needs no template; a chat with a base model is refused here, before
    // anything is generated.
    let template = match a.raw {
        true => None,
        false => Some(chat_template(
            &model,
            &model_arg,
            a.chat_template.as_deref(),
        )?),
    };
    let session = model.session(settings.num_ctx(), backend);
    let usage = UsageLog::open(a.no_ledger, &model_arg, "cli", load_time);
    let mut conv = Conversation::new(session, template, settings, facts)
        .with_usage(usage)
        .with_constraint(constraint);
    let interactive = !a.raw && prompt.is_none() && std::io::stdin().is_terminal();
    if !interactive {
        let prompt = match prompt {
            Some(p) => p,
            None => read_stdin()?,
        };
        let answer = if a.raw {
            conv.complete_raw(&prompt)?
        } else {
            conv.ask(&prompt, None)?
        };
        if conv.settings.verbose {
            conv.report(&answer);
        }
        return Ok(());
    }
    let label = repl::ModelLabel {
        name: model_arg,
        info: store::ModelInfo::of(model.file()),
    };
    // The line editor needs a terminal on both sides; otherwise plain lines.
    let mut source: Box<dyn input::LineSource> = if std::io::stdout().is_terminal() {
        Box::new(input::Editor::new()?)
    } else {
        Box::new(input::Plain(std::io::stdin().lock()))
    };
    // After the editor starts: the SIGINT handler must be the last one installed.
    let interrupt = interrupt::Interrupt::install().context("cannot handle Ctrl-C")?;
    repl::chat(&mut conv, source.as_mut(), Some(&interrupt), &label)
}

/// The model's file and a preset's settings (none for a file given by path).
fn resolve(model_arg: &str, offline: bool) -> anyhow::Result<(PathBuf, Settings)> {
    if Path::new(model_arg).is_file() {
        return Ok((PathBuf::from(model_arg), Settings::default()));
    }
    let resolved = super::pull::resolve_store(model_arg, offline)?;
    let mut settings = Settings {
        params: resolved.params,
        ..Settings::default()
    };
    settings
        .set_system(resolved.system.as_deref())
        .with_context(|| format!("the preset {} is broken", resolved.name))?;
    Ok((resolved.path, settings))
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
    if Path::new(arg).is_file() || arg.to_ascii_lowercase().ends_with(".gguf") {
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

/// The model's chat template, rendered in a child process with capped memory, or the
/// built-in one `--chat-template` names. A model without a template is a base model: the
/// error says so and what to do instead (the model is named as the user gave it).
fn chat_template(
    model: &Model,
    model_arg: &str,
    builtin: Option<&str>,
) -> anyhow::Result<ChatTemplate> {
    if let Some(name) = builtin {
        return ChatTemplate::builtin(name, model).ok_or_else(|| no_such_builtin(name));
    }
    let t = match ChatTemplate::for_model(model) {
        Ok(t) => t,
        Err(ChatError::BaseModel) => bail!("{}", base_model_refusal(model_arg)),
        Err(e) => return Err(e.into()),
    };
    Ok(match crate::template_sandbox::ProcessSandbox::new() {
        Some(sandbox) => t.with_sandbox(std::sync::Arc::new(sandbox)),
        None => t,
    })
}

/// Why `run` will not chat with a base model, and the three ways on.
fn base_model_refusal(model_arg: &str) -> String {
    let shown = super::pull::clean(model_arg);
    format!(
        "{shown} is a base model: its file has no chat template, so it continues text rather \
         than answering messages, and a chat with it gives nonsense.\n\
         - to continue text: hearth run {shown} --raw \"The sky is blue because\"\n\
         - to chat: use an instruct model, e.g. hearth run {DEFAULT_MODEL}\n\
         - if {shown} is an instruct model whose file lacks its template: add --chat-template \
         NAME ({})",
        builtin_names()
    )
}

fn no_such_builtin(name: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "--chat-template: no built-in template {name:?} (there are: {})",
        builtin_names()
    )
}

fn builtin_names() -> String {
    BUILTIN_TEMPLATES
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
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
