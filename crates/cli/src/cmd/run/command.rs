//! Chat commands (`/set`, `/show`, …): parsed from an input line, nothing done here.

/// What a line starting with `/` asks for.
#[derive(Debug, PartialEq)]
pub enum Command {
    Help,
    Bye,
    Clear,
    /// `/set KEY VALUE` (also `/set parameter KEY VALUE`, as Ollama spells it).
    SetOption {
        key: String,
        value: String,
    },
    /// `/set system TEXT`; no text removes the system prompt.
    SetSystem(Option<String>),
    SetVerbose(bool),
    Show(Show),
    Save(String),
    Load(String),
    /// A malformed or unknown command, with what to say.
    Invalid(String),
}

#[derive(Debug, PartialEq)]
pub enum Show {
    Info,
    Parameters,
    System,
    History,
}

pub const HELP: &str = "\
Commands:
  /set KEY VALUE     set a sampling option (see below), e.g. /set temperature 0.3
  /set stop A B      stop strings (replaces the list; /set stop alone clears it)
  /set system TEXT   set the system prompt (/set system alone removes it)
  /set verbose       print timings and memory after each answer (/set quiet: stop)
  /show info         the model: name, architecture, parameters, quantization, context
  /show parameters   the options in force
  /show system       the system prompt
  /show history      the conversation so far
  /clear             forget the conversation (the system prompt stays)
  /save FILE         save the conversation and settings as JSON
  /load FILE         load a conversation saved with /save
  /bye               leave (Ctrl-D too)
  /help              this text

Write \"\"\" to begin a message of several lines and \"\"\" again to end it.
Ctrl-C stops an answer; at an empty prompt, press it twice to leave.

Options and their ranges:
";

/// `None` when the line is a message, not a command.
pub fn parse(line: &str) -> Option<Command> {
    let line = line.trim_start();
    let rest = line.strip_prefix('/')?;
    let (word, args) = split_word(rest);
    Some(match word {
        "help" | "?" => Command::Help,
        "bye" | "exit" | "quit" => Command::Bye,
        "clear" => Command::Clear,
        "set" => parse_set(args),
        "show" => match args.trim() {
            "info" => Command::Show(Show::Info),
            "parameters" | "params" => Command::Show(Show::Parameters),
            "system" => Command::Show(Show::System),
            "history" => Command::Show(Show::History),
            other => Command::Invalid(format!(
                "unknown /show {other:?}: use /show info, parameters, system or history"
            )),
        },
        "save" | "load" => {
            let file = args.trim();
            if file.is_empty() {
                Command::Invalid(format!("usage: /{word} FILE"))
            } else if word == "save" {
                Command::Save(file.to_string())
            } else {
                Command::Load(file.to_string())
            }
        }
        _ => Command::Invalid(format!("unknown command /{word}: type /help for the list")),
    })
}

fn parse_set(args: &str) -> Command {
    let (key, value) = split_word(args);
    let (key, value) = if key == "parameter" {
        split_word(value)
    } else {
        (key, value)
    };
    match key {
        "" => Command::Invalid("usage: /set KEY VALUE (type /help for the options)".into()),
        "system" => {
            // The text is kept as typed, apart from the space after `system`.
            let text = value.strip_prefix(' ').unwrap_or(value);
            Command::SetSystem((!text.trim().is_empty()).then(|| text.to_string()))
        }
        "verbose" => Command::SetVerbose(true),
        "quiet" => Command::SetVerbose(false),
        _ => Command::SetOption {
            key: key.to_string(),
            value: value.trim().to_string(),
        },
    }
}

/// The first word and the rest after the whitespace that follows it.
fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(key: &str, value: &str) -> Option<Command> {
        Some(Command::SetOption {
            key: key.into(),
            value: value.into(),
        })
    }

    #[test]
    fn parses_commands() {
        assert_eq!(parse("hello /bye"), None);
        assert_eq!(parse("/bye"), Some(Command::Bye));
        assert_eq!(parse("  /help"), Some(Command::Help));
        assert_eq!(parse("/set temperature 0.3"), set("temperature", "0.3"));
        assert_eq!(parse("/set parameter top_p  0.9 "), set("top_p", "0.9"));
        assert_eq!(parse("/set stop"), set("stop", ""));
        assert_eq!(
            parse("/set system You are\nbrief. "),
            Some(Command::SetSystem(Some("You are\nbrief. ".into())))
        );
        assert_eq!(parse("/set system"), Some(Command::SetSystem(None)));
        assert_eq!(parse("/set verbose"), Some(Command::SetVerbose(true)));
        assert_eq!(parse("/set quiet"), Some(Command::SetVerbose(false)));
        assert_eq!(parse("/show info"), Some(Command::Show(Show::Info)));
        assert_eq!(
            parse("/show parameters"),
            Some(Command::Show(Show::Parameters))
        );
        assert_eq!(
            parse("/save a b.json"),
            Some(Command::Save("a b.json".into()))
        );
        assert_eq!(parse("/load x.json"), Some(Command::Load("x.json".into())));
        for bad in ["/save", "/show", "/show nothing", "/nope", "/set"] {
            assert!(matches!(parse(bad), Some(Command::Invalid(_))), "{bad}");
        }
    }
}
