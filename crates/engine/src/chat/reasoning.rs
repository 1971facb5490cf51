//! Reasoning in a model's output: `<think>...</think>` (Qwen3, DeepSeek-R1, QwQ) split from the
//! answer, streaming. The block is recognised only where the answer opens (after whitespace),
//! or from the first byte when the prompt itself ended with `<think>` (templates that open the
//! block for the model): a `<think>` later in an answer is text the model is writing about.

use super::tools::{partial_suffix, ParseEvent, ToolCallParser};

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";

/// Whether a template's output has reasoning blocks to split, and whether a rendered prompt
/// opened one already.
pub fn template_thinks(template: &str) -> bool {
    template.contains(CLOSE)
}

/// The rendered prompt ends inside an open `<think>` block.
pub fn prompt_opens_thinking(prompt: &str) -> bool {
    let t = prompt.trim_end();
    match (t.rfind(OPEN), t.rfind(CLOSE)) {
        (Some(o), Some(c)) => o > c,
        (Some(_), None) => true,
        _ => false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before anything but whitespace: a `<think>` may open here.
    Start,
    Thinking,
    Answer,
}

/// Splits output into [`ParseEvent::Reasoning`] and [`ParseEvent::Content`].
#[derive(Debug)]
pub struct ThinkSplitter {
    state: State,
    buf: String,
    /// Strip leading newlines of what comes next (after `<think>` and `</think>`).
    trim_next: bool,
}

impl ThinkSplitter {
    /// `opened`: the prompt ended with `<think>`, so the output starts inside the block.
    pub fn new(opened: bool) -> ThinkSplitter {
        ThinkSplitter {
            state: if opened {
                State::Thinking
            } else {
                State::Start
            },
            buf: String::new(),
            trim_next: opened,
        }
    }

    pub fn push(&mut self, text: &str) -> Vec<ParseEvent> {
        self.buf.push_str(text);
        let mut out = Vec::new();
        self.run(&mut out, false);
        out
    }

    pub fn finish(&mut self) -> Vec<ParseEvent> {
        let mut out = Vec::new();
        self.run(&mut out, true);
        out
    }

    fn emit(&mut self, text: &str, out: &mut Vec<ParseEvent>) {
        let text = if self.trim_next {
            let t = text.trim_start_matches(['\n', '\r']);
            if !t.is_empty() {
                self.trim_next = false;
            }
            t
        } else {
            text
        };
        if text.is_empty() {
            return;
        }
        let ev = match self.state {
            State::Thinking => ParseEvent::Reasoning(text.to_string()),
            _ => ParseEvent::Content(text.to_string()),
        };
        match (out.last_mut(), ev) {
            (Some(ParseEvent::Reasoning(a)), ParseEvent::Reasoning(b)) => a.push_str(&b),
            (Some(ParseEvent::Content(a)), ParseEvent::Content(b)) => a.push_str(&b),
            (_, ev) => out.push(ev),
        }
    }

    fn run(&mut self, out: &mut Vec<ParseEvent>, end: bool) {
        loop {
            match self.state {
                State::Start => {
                    let t = self.buf.trim_start();
                    if t.starts_with(OPEN) {
                        let skip = self.buf.len() - t.len() + OPEN.len();
                        self.buf.drain(..skip);
                        self.state = State::Thinking;
                        self.trim_next = true;
                        continue;
                    }
                    if !end && (t.is_empty() || OPEN.starts_with(t)) {
                        return;
                    }
                    self.state = State::Answer;
                }
                State::Thinking => match self.buf.find(CLOSE) {
                    Some(at) => {
                        let text: String = self.buf.drain(..at).collect();
                        self.buf.drain(..CLOSE.len());
                        self.emit(&text, out);
                        self.state = State::Answer;
                        self.trim_next = true;
                    }
                    None => {
                        let keep = if end {
                            0
                        } else {
                            partial_suffix(&self.buf, CLOSE)
                        };
                        let text: String = self.buf.drain(..self.buf.len() - keep).collect();
                        self.emit(&text, out);
                        return;
                    }
                },
                State::Answer => {
                    let text = std::mem::take(&mut self.buf);
                    self.emit(&text, out);
                    return;
                }
            }
        }
    }
}

/// The whole output pipeline of a chat answer: reasoning split first (when the template has
/// it), then tool calls in the answer (when tools were offered).
#[derive(Debug)]
pub struct OutputParser {
    think: Option<ThinkSplitter>,
    tools: Option<ToolCallParser>,
}

impl OutputParser {
    pub fn new(think: Option<ThinkSplitter>, tools: Option<ToolCallParser>) -> OutputParser {
        OutputParser { think, tools }
    }

    /// Calls reported so far.
    pub fn calls(&self) -> usize {
        self.tools.as_ref().map_or(0, ToolCallParser::calls)
    }

    pub fn push(&mut self, text: &str) -> Vec<ParseEvent> {
        let first = match &mut self.think {
            Some(t) => t.push(text),
            None => vec![ParseEvent::Content(text.to_string())],
        };
        self.through_tools(first, false)
    }

    pub fn finish(&mut self) -> Vec<ParseEvent> {
        let first = match &mut self.think {
            Some(t) => t.finish(),
            None => Vec::new(),
        };
        self.through_tools(first, true)
    }

    fn through_tools(&mut self, events: Vec<ParseEvent>, end: bool) -> Vec<ParseEvent> {
        let Some(tools) = &mut self.tools else {
            return events
                .into_iter()
                .filter(|e| !matches!(e, ParseEvent::Content(t) if t.is_empty()))
                .collect();
        };
        let mut out = Vec::new();
        for e in events {
            match e {
                ParseEvent::Content(t) => out.extend(tools.push(&t)),
                e => out.push(e),
            }
        }
        if end {
            out.extend(tools.finish());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::tools::ToolFormat;

    fn split(opened: bool, text: &str) -> (String, String) {
        let collect = |events: Vec<ParseEvent>| {
            let (mut r, mut c) = (String::new(), String::new());
            for e in events {
                match e {
                    ParseEvent::Reasoning(t) => r.push_str(&t),
                    ParseEvent::Content(t) => c.push_str(&t),
                    e => panic!("{e:?}"),
                }
            }
            (r, c)
        };
        let mut s = ThinkSplitter::new(opened);
        let mut whole = s.push(text);
        whole.extend(s.finish());
        let whole = collect(whole);
        let mut s = ThinkSplitter::new(opened);
        let mut ev = Vec::new();
        for (i, c) in text.char_indices() {
            ev.extend(s.push(&text[i..i + c.len_utf8()]));
        }
        ev.extend(s.finish());
        assert_eq!(collect(ev), whole, "streaming differs for {text:?}");
        whole
    }

    #[test]
    fn splits_think_blocks() {
        assert_eq!(
            split(false, "<think>\nLet me see.\n</think>\n\nParis."),
            ("Let me see.\n".into(), "Paris.".into())
        );
        assert_eq!(
            split(true, "\nThe user asks.\n</think>\n\nHi!"),
            ("The user asks.\n".into(), "Hi!".into())
        );
        assert_eq!(
            split(false, "No thinking."),
            ("".into(), "No thinking.".into())
        );
        assert_eq!(
            split(false, "Text then <think>x</think>"),
            ("".into(), "Text then <think>x</think>".into())
        );
        // Cut off while thinking: all of it is reasoning.
        assert_eq!(
            split(false, "<think>still going <"),
            ("still going <".into(), "".into())
        );
        assert_eq!(split(false, "<thin"), ("".into(), "<thin".into()));
        assert_eq!(split(false, ""), ("".into(), "".into()));
    }

    #[test]
    fn prompt_state() {
        assert!(prompt_opens_thinking("<|im_start|>assistant\n<think>\n"));
        assert!(!prompt_opens_thinking(
            "<|im_start|>assistant\n<think>\n\n</think>\n\n"
        ));
        assert!(!prompt_opens_thinking("<|im_start|>assistant\n"));
        assert!(template_thinks("{{ '</think>' }}"));
    }

    #[test]
    fn reasoning_then_a_tool_call() {
        let text = "<think>\nI need the weather.\n</think>\n\n<tool_call>\n{\"name\": \"w\", \"arguments\": {\"c\": \"Oslo\"}}\n</tool_call>";
        let mut p = OutputParser::new(
            Some(ThinkSplitter::new(false)),
            Some(ToolCallParser::new(ToolFormat::Hermes, 1)),
        );
        let mut ev = Vec::new();
        for (i, c) in text.char_indices() {
            ev.extend(p.push(&text[i..i + c.len_utf8()]));
        }
        ev.extend(p.finish());
        let reasoning: String = ev
            .iter()
            .filter_map(|e| match e {
                ParseEvent::Reasoning(t) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(reasoning, "I need the weather.\n");
        assert!(
            !ev.iter().any(|e| matches!(e, ParseEvent::Content(_))),
            "{ev:?}"
        );
        assert!(ev.contains(&ParseEvent::ToolCallArgs {
            index: 0,
            delta: "{\"c\":\"Oslo\"}".into()
        }));
        assert_eq!(p.calls(), 1);
    }
}
