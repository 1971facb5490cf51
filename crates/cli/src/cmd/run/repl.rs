//! The interactive chat: reads messages and commands, answers, and carries out `/set`,
//! `/show`, `/clear`, `/save`, `/load`.

use super::command::{self, Command, Show};
use super::conversation::Conversation;
use super::input::{read_input, Input, LineSource};
use super::interrupt::Interrupt;
use super::{saved, settings};
use engine::generate::StopReason;
use std::path::Path;

/// What the chat needs to know about the model beyond the conversation.
pub struct ModelLabel {
    /// As the user named it (store name or file).
    pub name: String,
    pub info: store::ModelInfo,
}

pub fn chat(
    conv: &mut Conversation,
    src: &mut dyn LineSource,
    interrupt: Option<&Interrupt>,
    model: &ModelLabel,
) -> anyhow::Result<()> {
    eprintln!(
        "Chatting with {}. Type /help for commands; /bye or Ctrl-D to leave.",
        model.name
    );
    let mut interrupted = false;
    loop {
        if let Some(i) = interrupt {
            i.reset();
        }
        let text = match read_input(src)? {
            Input::Eof => break,
            Input::Interrupted if interrupted => break,
            Input::Interrupted => {
                interrupted = true;
                eprintln!("(press Ctrl-C again, Ctrl-D or type /bye to leave)");
                continue;
            }
            Input::Text(t) => t,
        };
        interrupted = false;
        if text.trim().is_empty() {
            continue;
        }
        src.add_history(&text);
        match command::parse(&text) {
            Some(Command::Bye) => break,
            Some(cmd) => {
                if let Err(e) = run_command(conv, cmd, model) {
                    eprintln!("error: {e:#}");
                }
            }
            None => {
                if let Some(i) = interrupt {
                    i.reset();
                }
                let quiet = interrupt.map(|_| super::interrupt::QuietControlKeys::start());
                let asked = conv.ask(&text, interrupt.map(Interrupt::flag));
                drop(quiet);
                match asked {
                    Ok(answer) => {
                        if answer.stop == Some(StopReason::Cancelled) {
                            eprintln!("(answer stopped)");
                        }
                        if conv.settings.verbose {
                            conv.report(&answer);
                        }
                    }
                    Err(e) => eprintln!("error: {e:#}"),
                }
            }
        }
    }
    Ok(())
}

/// Carries out a command; an error is reported and the chat goes on.
fn run_command(conv: &mut Conversation, cmd: Command, model: &ModelLabel) -> anyhow::Result<()> {
    match cmd {
        Command::Help => {
            crate::outln!("{}{}", command::HELP, settings::ranges())?;
        }
        Command::Bye => {}
        Command::Clear => {
            conv.clear();
            eprintln!("(conversation cleared)");
        }
        Command::SetOption { key, value } => set_option(conv, &key, &value)?,
        Command::SetSystem(text) => {
            conv.settings.set_system(text.as_deref())?;
            eprintln!(
                "{}",
                if text.is_some() {
                    "(system prompt set)"
                } else {
                    "(system prompt removed)"
                }
            );
        }
        Command::SetVerbose(on) => {
            conv.settings.verbose = on;
            eprintln!("(verbose {})", if on { "on" } else { "off" });
        }
        Command::Show(what) => show(conv, what, model)?,
        Command::Save(file) => {
            saved::save(
                Path::new(&file),
                &model.name,
                &conv.settings,
                &conv.messages,
            )?;
            eprintln!("(saved {} messages to {file})", conv.messages.len());
        }
        Command::Load(file) => {
            let loaded = saved::load(Path::new(&file))?;
            if let Some(m) = loaded.model.as_deref().filter(|m| *m != model.name) {
                eprintln!("(saved with model {m}; continuing with {})", model.name);
            }
            let mut s = loaded.settings;
            // How this session shows things stays as it is.
            s.verbose = conv.settings.verbose;
            // Token ids belong to one model: a bias saved with another is dropped.
            let other_model = loaded.model.as_deref().is_some_and(|m| m != model.name);
            if other_model && !s.logit_bias.is_empty() {
                eprintln!(
                    "(the saved logit bias is for another model's tokens: dropped; the current one stays)"
                );
                s.logit_bias = std::mem::take(&mut conv.settings.logit_bias);
            }
            let ctx_before = conv.session().n_ctx();
            conv.settings = s;
            conv.messages = loaded.messages;
            if conv.settings.num_ctx() != ctx_before {
                conv.set_context(conv.settings.num_ctx());
            }
            eprintln!("(loaded {} messages from {file})", conv.messages.len());
        }
        Command::Invalid(msg) => anyhow::bail!("{msg}"),
    }
    Ok(())
}

fn set_option(conv: &mut Conversation, key: &str, value: &str) -> anyhow::Result<()> {
    let key = key.replace('-', "_");
    if !settings::Settings::is_option(&key) {
        anyhow::bail!("unknown option {key:?}: type /help for the options");
    }
    if key == "num_ctx" {
        // Checked like every option, then the cache is made anew at that size.
        let mut next = conv.settings.clone();
        next.set(&key, value)?;
        let wanted = next.num_ctx();
        conv.settings = next;
        let given = conv.set_context(wanted);
        if given < wanted {
            eprintln!("(context set to {given} tokens: the model was trained for no more)");
        } else {
            eprintln!("(context set to {given} tokens; the conversation is evaluated again on the next turn)");
        }
        return Ok(());
    }
    if key == "stop" {
        // The list is replaced: a JSON array, or words separated by spaces.
        let stops: Vec<String> = if value.trim_start().starts_with('[') {
            serde_json::from_str(value)
                .map_err(|e| anyhow::anyhow!("stop: expected a JSON array of strings: {e}"))?
        } else {
            value.split_whitespace().map(str::to_owned).collect()
        };
        let mut next = conv.settings.clone();
        next.params.stop.clear();
        for s in &stops {
            next.set("stop", s)?;
        }
        conv.settings = next;
        if stops.is_empty() {
            eprintln!("(stop strings cleared)");
            return Ok(());
        }
    } else {
        conv.settings.set(&key, value)?;
    }
    eprintln!("(set {key} to {value})");
    Ok(())
}

fn show(conv: &Conversation, what: Show, model: &ModelLabel) -> anyhow::Result<()> {
    match what {
        Show::Parameters => crate::outln!("{}", conv.settings.describe().trim_end())?,
        Show::System => match &conv.settings.system {
            Some(s) => crate::outln!("{s}")?,
            None => crate::outln!("(no system prompt)")?,
        },
        Show::History => {
            if conv.messages.is_empty() {
                crate::outln!("(no messages yet)")?;
            }
            for m in &conv.messages {
                crate::outln!("[{}] {}", m.role, m.content)?;
            }
        }
        Show::Info => {
            let i = &model.info;
            let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "unknown".into());
            let session = conv.session();
            let train = i.context_length.map_or("unknown".into(), |n| n.to_string());
            crate::outln!(
                "model          {}\nname           {}\narchitecture   {}\nparameters     {}\nquantization   {}\ncontext        {} tokens in use ({} filled; trained for {})",
                model.name,
                opt(&i.model_name),
                opt(&i.architecture),
                i.parameters_human(),
                opt(&i.quantization),
                session.n_ctx(),
                session.pos(),
                train
            )?;
        }
    }
    Ok(())
}
