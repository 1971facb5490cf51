//! Where chat input comes from: a line editor on a terminal (history, editing, Ctrl-C and
//! Ctrl-D as keys), or plain lines otherwise; and `"""` blocks that span several lines.

use anyhow::Context;
use std::io::BufRead;

/// One line as read.
#[derive(Debug, PartialEq)]
pub enum Line {
    Text(String),
    /// Ctrl-C at the prompt.
    Interrupted,
    /// Ctrl-D or the end of input.
    Eof,
}

pub trait LineSource {
    fn read_line(&mut self, prompt: &str) -> anyhow::Result<Line>;
    fn add_history(&mut self, _entry: &str) {}
}

/// rustyline: used when stdin and stdout are terminals.
pub struct Editor(rustyline::DefaultEditor);

impl Editor {
    pub fn new() -> anyhow::Result<Editor> {
        let config = rustyline::Config::builder()
            .auto_add_history(false)
            .max_history_size(1000)
            .context("line editor settings")?
            .build();
        let ed = rustyline::DefaultEditor::with_config(config)
            .context("cannot start the line editor")?;
        Ok(Editor(ed))
    }
}

impl LineSource for Editor {
    fn read_line(&mut self, prompt: &str) -> anyhow::Result<Line> {
        use rustyline::error::ReadlineError;
        match self.0.readline(prompt) {
            Ok(line) => Ok(Line::Text(line)),
            Err(ReadlineError::Interrupted) => Ok(Line::Interrupted),
            Err(ReadlineError::Eof) => Ok(Line::Eof),
            Err(e) => Err(e).context("cannot read the terminal"),
        }
    }

    fn add_history(&mut self, entry: &str) {
        // History is a convenience: a failure to record it is not worth a message.
        let _ = self.0.add_history_entry(entry);
    }
}

/// Lines from any reader, the prompt on stderr.
pub struct Plain<R>(pub R);

impl<R: BufRead> LineSource for Plain<R> {
    fn read_line(&mut self, prompt: &str) -> anyhow::Result<Line> {
        eprint!("{prompt}");
        let mut line = String::new();
        if self.0.read_line(&mut line).context("cannot read stdin")? == 0 {
            return Ok(Line::Eof);
        }
        let len = line.trim_end_matches(['\n', '\r']).len();
        line.truncate(len);
        Ok(Line::Text(line))
    }
}

/// One message or command, possibly several lines long.
#[derive(Debug, PartialEq)]
pub enum Input {
    Text(String),
    Interrupted,
    Eof,
}

pub const PROMPT: &str = ">>> ";
const MORE: &str = "... ";
const QUOTES: &str = "\"\"\"";

/// Reads one input. A line starting with `"""` (or `/set system """`) opens a block that ends
/// at the next `"""`; the block's lines are joined with newlines, the quotes left out.
pub fn read_input(src: &mut dyn LineSource) -> anyhow::Result<Input> {
    let first = match src.read_line(PROMPT)? {
        Line::Text(t) => t,
        Line::Interrupted => return Ok(Input::Interrupted),
        Line::Eof => return Ok(Input::Eof),
    };
    let Some((prefix, rest)) = opener(&first) else {
        return Ok(Input::Text(first));
    };
    let mut body = String::new();
    let mut current = rest.to_string();
    loop {
        if let Some(end) = current.find(QUOTES) {
            body.push_str(&current[..end]);
            break;
        }
        body.push_str(&current);
        body.push('\n');
        match src.read_line(MORE)? {
            Line::Text(t) => current = t,
            Line::Interrupted => return Ok(Input::Interrupted),
            // An unclosed block at the end of input is still sent.
            Line::Eof => break,
        }
    }
    // `"""` alone on the first or last line adds no blank line.
    let body = body.strip_prefix('\n').unwrap_or(&body);
    let body = body.strip_suffix('\n').unwrap_or(body);
    Ok(Input::Text(format!("{prefix}{body}")))
}

/// The text before a block's opening quotes and the rest of the line after them.
fn opener(line: &str) -> Option<(&str, &str)> {
    let trimmed = line.trim_start();
    if let Some(rest) = trimmed.strip_prefix(QUOTES) {
        return Some(("", rest));
    }
    let after = trimmed.strip_prefix("/set system")?;
    let rest = after.trim_start().strip_prefix(QUOTES)?;
    Some(("/set system ", rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Script(Vec<Line>);

    impl LineSource for Script {
        fn read_line(&mut self, _prompt: &str) -> anyhow::Result<Line> {
            Ok(if self.0.is_empty() {
                Line::Eof
            } else {
                self.0.remove(0)
            })
        }
    }

    fn read(lines: &[&str]) -> Input {
        let mut s = Script(lines.iter().map(|l| Line::Text(l.to_string())).collect());
        read_input(&mut s).unwrap()
    }

    fn text(s: &str) -> Input {
        Input::Text(s.to_string())
    }

    #[test]
    fn blocks_span_lines() {
        assert_eq!(read(&["hello"]), text("hello"));
        assert_eq!(read(&["\"\"\"", "one", "two", "\"\"\""]), text("one\ntwo"));
        assert_eq!(read(&["\"\"\"one", "two\"\"\""]), text("one\ntwo"));
        assert_eq!(read(&["\"\"\"just one\"\"\""]), text("just one"));
        assert_eq!(read(&["\"\"\"", "", "a", "\"\"\""]), text("\na"));
        assert_eq!(
            read(&["/set system \"\"\"Be", "brief.\"\"\""]),
            text("/set system Be\nbrief.")
        );
        assert_eq!(read(&["say \"\"\"hi\"\"\""]), text("say \"\"\"hi\"\"\""));
        // A bracketed paste arrives as one line holding newlines.
        assert_eq!(
            read(&["\"\"\"\nSay hello\nin French.\n\"\"\""]),
            text("Say hello\nin French.")
        );
        assert_eq!(read(&["pasted\nlines"]), text("pasted\nlines"));
        // Unclosed at the end of input: sent as it is.
        assert_eq!(read(&["\"\"\"", "tail"]), text("tail"));
    }

    #[test]
    fn ctrl_c_abandons_a_block() {
        let mut s = Script(vec![Line::Text("\"\"\"".into()), Line::Interrupted]);
        assert_eq!(read_input(&mut s).unwrap(), Input::Interrupted);
        let mut s = Script(vec![]);
        assert_eq!(read_input(&mut s).unwrap(), Input::Eof);
    }
}
