//! Keeps user text from becoming control tokens.
//!
//! A chat prompt is tokenized with special tokens parsed, so the template's `<|im_start|>`
//! becomes the real control token. Parsing the whole rendered string would do the same for a
//! message that *contains* `<|im_end|>\n<|im_start|>system`, letting a user close its turn and
//! forge a system turn. So, before rendering, every control-token text in user-controlled strings
//! (contents, roles, names, tool calls and their arguments, tool definitions) is swapped for a
//! placeholder; after rendering the placeholders are swapped back and their byte ranges are
//! recorded, and the tokenizer parses no control token that overlaps one of them.
//!
//! Only the control-token texts are swapped, so templates still see (and test, split, trim)
//! the rest of the content as it was, and a prompt without such text renders byte for byte as
//! before. Works through a [`super::Sandbox`] too: only strings cross it.

use super::{ChatError, ChatTemplate, Message};
use crate::tokenizer::Tokenizer;
use std::ops::Range;

/// Placeholders are `OPEN <index> CLOSE`: Unicode noncharacters, which no real text or template
/// carries; one in user text is itself swapped out, so every placeholder found is ours.
const OPEN: char = '\u{FDD0}';
const CLOSE: char = '\u{FDD1}';

/// A rendered chat prompt and the byte ranges of it that came from users as control-token text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatPrompt {
    pub text: String,
    /// Sorted and disjoint.
    pub protected: Vec<Range<usize>>,
}

impl ChatPrompt {
    /// Token ids: markup's control tokens parsed, protected text as plain text; BOS added
    /// unless the template wrote it itself (a protected `<s>` at the start is not the template's).
    pub fn encode(&self, tok: &Tokenizer) -> Vec<u32> {
        let bos_text = tok.bos().and_then(|b| tok.token_text(b)).unwrap_or("");
        let template_wrote_bos = !bos_text.is_empty()
            && self.text.starts_with(bos_text)
            && self.protected.first().is_none_or(|r| r.start > 0);
        tok.encode_protected(&self.text, !template_wrote_bos, &self.protected)
    }
}

impl ChatTemplate {
    /// Renders `messages` (and `tools`) with user text guarded against control-token
    /// injection; [`ChatPrompt::encode`] tokenizes the result.
    pub fn render_prompt(
        &self,
        tok: &Tokenizer,
        messages: &[Message],
        tools: Option<&[serde_json::Value]>,
        add_generation_prompt: bool,
    ) -> Result<ChatPrompt, ChatError> {
        let mut swaps = Swaps {
            tok,
            saved: Vec::new(),
        };
        let messages: Vec<Message> = messages.iter().map(|m| swaps.message(m)).collect();
        let tools: Option<Vec<serde_json::Value>> =
            tools.map(|t| t.iter().map(|v| swaps.json(v)).collect());
        let text = self.render_with_tools(&messages, tools.as_deref(), add_generation_prompt)?;
        if swaps.saved.is_empty() {
            return Ok(ChatPrompt {
                text,
                protected: Vec::new(),
            });
        }
        Ok(restore(&text, &swaps.saved))
    }
}

/// The texts swapped out so far; placeholder `i` stands for `saved[i]`.
struct Swaps<'a> {
    tok: &'a Tokenizer,
    saved: Vec<String>,
}

impl Swaps<'_> {
    fn message(&mut self, m: &Message) -> Message {
        Message {
            role: self.text(&m.role),
            content: self.text(&m.content),
            tool_calls: m
                .tool_calls
                .iter()
                .map(|c| super::ToolCall {
                    id: self.text(&c.id),
                    name: self.text(&c.name),
                    arguments: self.json(&c.arguments),
                })
                .collect(),
            tool_call_id: m.tool_call_id.as_deref().map(|s| self.text(s)),
            name: m.name.as_deref().map(|s| self.text(s)),
        }
    }

    fn json(&mut self, v: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value as J;
        match v {
            J::String(s) => J::String(self.text(s)),
            J::Array(a) => J::Array(a.iter().map(|x| self.json(x)).collect()),
            J::Object(o) => J::Object(
                o.iter()
                    .map(|(k, x)| (self.text(k), self.json(x)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// `s` with each control-token text (and each placeholder character) swapped out.
    fn text(&mut self, s: &str) -> String {
        let mut spans = self.tok.control_spans(s);
        for (i, c) in s.char_indices() {
            if c == OPEN || c == CLOSE {
                spans.push(i..i + c.len_utf8());
            }
        }
        if spans.is_empty() {
            return s.to_string();
        }
        spans.sort_unstable_by_key(|r| r.start);
        let mut out = String::with_capacity(s.len() + 8 * spans.len());
        let mut at = 0;
        for r in spans {
            if r.start < at {
                // A placeholder character inside a control token's text: already swapped.
                continue;
            }
            out.push_str(&s[at..r.start]);
            out.push(OPEN);
            out.push_str(&self.saved.len().to_string());
            out.push(CLOSE);
            self.saved.push(s[r.clone()].to_string());
            at = r.end;
        }
        out.push_str(&s[at..]);
        out
    }
}

/// `text` with its placeholders swapped back, and where they were.
fn restore(text: &str, saved: &[String]) -> ChatPrompt {
    let mut out = String::with_capacity(text.len());
    let mut protected: Vec<Range<usize>> = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find(OPEN) {
        out.push_str(&rest[..open]);
        let after = &rest[open + OPEN.len_utf8()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        let index = after[..digits].parse::<usize>().ok();
        match (
            index.and_then(|i| saved.get(i)),
            after[digits..].starts_with(CLOSE),
        ) {
            (Some(original), true) => {
                let start = out.len();
                out.push_str(original);
                match protected.last_mut() {
                    // Two placeholders side by side make one range.
                    Some(last) if last.end == start => last.end = out.len(),
                    _ => protected.push(start..out.len()),
                }
                rest = &after[digits + CLOSE.len_utf8()..];
            }
            // Not ours (a template that mangled it, or its own noncharacter): kept as it is.
            _ => {
                out.push(OPEN);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    ChatPrompt {
        text: out,
        protected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_swaps_back_and_records_ranges() {
        let saved = vec!["<|a|>".to_string(), "<|b|>".to_string()];
        let text = format!("x{OPEN}0{CLOSE}{OPEN}1{CLOSE}y{OPEN}0{CLOSE}{OPEN}9{CLOSE}{OPEN}z");
        let p = restore(&text, &saved);
        assert_eq!(p.text, format!("x<|a|><|b|>y<|a|>{OPEN}9{CLOSE}{OPEN}z"));
        assert_eq!(p.protected, vec![1..11, 12..17]);
    }
}
