//! Tool calls in a model's output: which format a model writes them in (read from its chat
//! template), a streaming parser that separates calls from ordinary text, and the grammar that
//! forces a call when a client requires one.
//!
//! Formats:
//! - [`ToolFormat::Hermes`] (Qwen 2.5/3, Hermes, many others):
//!   `<tool_call>\n{"name": "f", "arguments": {..}}\n</tool_call>`, one block per call.
//! - [`ToolFormat::Llama3`]: a JSON object `{"name": "f", "parameters": {..}}` as the whole
//!   answer, optionally after `<|python_tag|>`; several separated by `;`.
//! - [`ToolFormat::Mistral`]: `[TOOL_CALLS][{"name": "f", "arguments": {..}}, ..]`, or the newer
//!   `[TOOL_CALLS]f[ARGS]{..}` (one call per marker).
//! - [`ToolFormat::FunctionGemma`]: `<start_function_call>` then `call:f{key:<escape>text<escape>,n:1}`
//!   then `<end_function_call>`; strings lie between `<escape>` tokens and keys are bare.
//!
//! The parser holds a call's text until the call is complete and only then reports it: a call
//! that turns out malformed is given back as ordinary content, never lost.

use crate::constraint::Grammar;
use serde_json::{Map, Value};

/// How a model writes tool calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolFormat {
    Hermes,
    Llama3,
    Mistral,
    FunctionGemma,
}

impl ToolFormat {
    /// The format a chat template teaches, from the markers it writes; None when the template
    /// has no tool calls at all.
    pub fn detect(template: &str) -> Option<ToolFormat> {
        if template.contains("<start_function_call>") {
            Some(ToolFormat::FunctionGemma)
        } else if template.contains("<tool_call>") {
            Some(ToolFormat::Hermes)
        } else if template.contains("[TOOL_CALLS]") {
            Some(ToolFormat::Mistral)
        } else if template.contains("<|python_tag|>")
            || (template.contains("<|start_header_id|>") && template.contains("tools"))
        {
            Some(ToolFormat::Llama3)
        } else {
            None
        }
    }

    /// The marker that opens a call anywhere in the output.
    fn marker(self) -> &'static str {
        match self {
            ToolFormat::Hermes => "<tool_call>",
            ToolFormat::Llama3 => "<|python_tag|>",
            ToolFormat::Mistral => "[TOOL_CALLS]",
            ToolFormat::FunctionGemma => "<start_function_call>",
        }
    }

    /// A call id in the shape the format's templates accept (Mistral's insist on nine
    /// letters and digits).
    pub fn call_id(self, seed: u64, index: usize) -> String {
        let mut x = seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut next = || {
            // splitmix64
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let mut word = |n: usize| -> String {
            (0..n)
                .map(|_| ALNUM[(next() % ALNUM.len() as u64) as usize] as char)
                .collect()
        };
        match self {
            ToolFormat::Mistral => word(9),
            _ => format!("call_{}", word(24)),
        }
    }
}

/// What the parser found in a piece of output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseEvent {
    /// Text outside any call.
    Content(String),
    /// Text inside `<think>...</think>` (from [`super::reasoning::ThinkSplitter`]).
    Reasoning(String),
    /// A call begins.
    ToolCallStart {
        index: usize,
        id: String,
        name: String,
    },
    /// More of the call's arguments (JSON text; the pieces of one call join into an object).
    ToolCallArgs { index: usize, delta: String },
}

/// A streaming tool-call parser: [`push`](Self::push) each piece of output as it comes,
/// [`finish`](Self::finish) at the end. The events of any split of a text equal those of the
/// whole text at once.
#[derive(Debug)]
pub struct ToolCallParser {
    format: ToolFormat,
    seed: u64,
    /// Text not yet decided (a possible marker's start, or a call being read).
    buf: String,
    /// Inside a call since this marker (its text is in `buf`, the marker included).
    in_call: bool,
    /// Whitespace held back: dropped when a call follows or the answer ends after calls.
    pending_space: String,
    /// Nothing but whitespace so far (a bare JSON call must open the answer).
    at_start: bool,
    /// After a Llama 3 call: `;` may join another.
    after_llama_call: bool,
    calls: usize,
}

impl ToolCallParser {
    /// A parser for `format`; `seed` makes the call ids.
    pub fn new(format: ToolFormat, seed: u64) -> ToolCallParser {
        ToolCallParser {
            format,
            seed,
            buf: String::new(),
            in_call: false,
            pending_space: String::new(),
            at_start: true,
            after_llama_call: false,
            calls: 0,
        }
    }

    /// How many calls were reported.
    pub fn calls(&self) -> usize {
        self.calls
    }

    pub fn push(&mut self, text: &str) -> Vec<ParseEvent> {
        self.buf.push_str(text);
        let mut out = Vec::new();
        self.run(&mut out, false);
        out
    }

    /// The end of the output: a call left open is parsed as it is (a model may stop right
    /// before its closing tag) or given back as content.
    pub fn finish(&mut self) -> Vec<ParseEvent> {
        let mut out = Vec::new();
        self.run(&mut out, true);
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            self.content(&rest, &mut out);
        }
        if self.calls == 0 && !self.pending_space.is_empty() {
            out.push(ParseEvent::Content(std::mem::take(&mut self.pending_space)));
        }
        self.pending_space.clear();
        merge(out)
    }

    fn run(&mut self, out: &mut Vec<ParseEvent>, end: bool) {
        loop {
            if self.in_call {
                match self.try_call(end) {
                    CallScan::Incomplete => return,
                    CallScan::Done { calls, used } => {
                        self.pending_space.clear();
                        for (name, args) in calls {
                            let index = self.calls;
                            self.calls += 1;
                            out.push(ParseEvent::ToolCallStart {
                                index,
                                id: self.format.call_id(self.seed, index),
                                name,
                            });
                            out.push(ParseEvent::ToolCallArgs { index, delta: args });
                        }
                        let bare = self.buf.starts_with('{');
                        self.buf.drain(..used);
                        self.in_call = false;
                        // Bare JSON calls (Qwen's habit) may follow one another, one per line.
                        self.at_start = bare && self.format == ToolFormat::Hermes;
                        self.after_llama_call = self.format == ToolFormat::Llama3;
                    }
                    CallScan::Malformed => {
                        // The marker and what follows are ordinary text after all: give the
                        // marker back and scan on after it.
                        let marker_len = self.call_marker_len();
                        let text: String = self.buf.drain(..marker_len).collect();
                        self.in_call = false;
                        self.after_llama_call = false;
                        self.content(&text, out);
                    }
                }
                continue;
            }
            // Looking for the next call.
            if self.after_llama_call {
                let t = self.buf.trim_start();
                if t.is_empty() && !end {
                    return;
                }
                if let Some(rest) = t.strip_prefix(';') {
                    let skip = self.buf.len() - rest.len();
                    self.buf.drain(..skip);
                    self.at_start = true;
                }
                self.after_llama_call = false;
            }
            // Llama 3 writes a call as bare JSON; Hermes models (Qwen 2.5 above all) often
            // drop the <tool_call> tags and do the same.
            if self.at_start && matches!(self.format, ToolFormat::Llama3 | ToolFormat::Hermes) {
                let t = self.buf.trim_start();
                if t.is_empty() {
                    if end {
                        break;
                    }
                    return;
                }
                if t.starts_with('{') {
                    let skip = self.buf.len() - t.len();
                    let space: String = self.buf.drain(..skip).collect();
                    self.pending_space.push_str(&space);
                    self.in_call = true;
                    continue;
                }
            }
            let marker = self.format.marker();
            match self.buf.find(marker) {
                Some(at) => {
                    let before: String = self.buf.drain(..at).collect();
                    self.content(&before, out);
                    self.in_call = true;
                }
                None => {
                    // Keep back only what could still become the marker.
                    let keep = if end {
                        0
                    } else {
                        partial_suffix(&self.buf, marker)
                    };
                    let cut = self.buf.len() - keep;
                    let text: String = self.buf.drain(..cut).collect();
                    self.content(&text, out);
                    return;
                }
            }
        }
    }

    /// Length of the marker that opened the call in `buf` (0 for Llama 3's bare JSON).
    fn call_marker_len(&self) -> usize {
        let marker = self.format.marker();
        if self.buf.starts_with(marker) {
            marker.len()
        } else {
            // A bare JSON object that is not a call: give back its first character.
            self.buf.chars().next().map_or(0, char::len_utf8)
        }
    }

    /// Ordinary text: whitespace at its end is held until something other than a call
    /// follows it.
    fn content(&mut self, text: &str, out: &mut Vec<ParseEvent>) {
        if text.is_empty() {
            return;
        }
        let body = text.trim_end();
        if body.is_empty() {
            self.pending_space.push_str(text);
            return;
        }
        self.at_start = false;
        let mut s = std::mem::take(&mut self.pending_space);
        s.push_str(body);
        out.push(ParseEvent::Content(s));
        self.pending_space.push_str(&text[body.len()..]);
    }

    fn try_call(&self, end: bool) -> CallScan {
        let buf = self.buf.as_str();
        match self.format {
            ToolFormat::Hermes if buf.starts_with('{') => json_calls(buf, end, 0, |v| {
                name_and_args(&v, &["arguments", "parameters"]).map(|c| vec![c])
            }),
            ToolFormat::Hermes => tagged(buf, "<tool_call>", "</tool_call>", end, hermes_call),
            ToolFormat::FunctionGemma => tagged(
                buf,
                "<start_function_call>",
                "<end_function_call>",
                end,
                gemma_call,
            ),
            ToolFormat::Llama3 => {
                let (skip, body) = match buf.strip_prefix("<|python_tag|>") {
                    Some(rest) => (buf.len() - rest.len(), rest),
                    None => (0, buf),
                };
                json_calls(body, end, skip, |v| llama_call(v).map(|c| vec![c]))
            }
            ToolFormat::Mistral => {
                let Some(rest) = buf.strip_prefix("[TOOL_CALLS]") else {
                    return CallScan::Malformed;
                };
                let skip = buf.len() - rest.len();
                let t = rest.trim_start();
                if t.is_empty() {
                    return if end {
                        CallScan::Malformed
                    } else {
                        CallScan::Incomplete
                    };
                }
                if t.starts_with('[') || t.starts_with('{') {
                    return json_calls(rest, end, skip, mistral_calls);
                }
                // [TOOL_CALLS]name[ARGS]{...}
                let Some(args_at) = rest.find("[ARGS]") else {
                    let looks_like_name = rest
                        .chars()
                        .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '['));
                    return if end || !looks_like_name || rest.len() > 256 {
                        CallScan::Malformed
                    } else {
                        CallScan::Incomplete
                    };
                };
                let name = rest[..args_at].trim().to_string();
                if !valid_name(&name) {
                    return CallScan::Malformed;
                }
                let after = &rest[args_at + "[ARGS]".len()..];
                let skip = buf.len() - after.len();
                json_calls(after, end, skip, move |v| {
                    v.is_object().then(|| vec![(name.clone(), v.to_string())])
                })
            }
        }
    }
}

enum CallScan {
    Incomplete,
    /// The calls found, and how many bytes of `buf` they used.
    Done {
        calls: Vec<(String, String)>,
        used: usize,
    },
    Malformed,
}

/// Joins neighbouring content events (so that any split gives the same events).
fn merge(events: Vec<ParseEvent>) -> Vec<ParseEvent> {
    let mut out: Vec<ParseEvent> = Vec::with_capacity(events.len());
    for e in events {
        match (out.last_mut(), e) {
            (Some(ParseEvent::Content(a)), ParseEvent::Content(b)) => a.push_str(&b),
            (Some(ParseEvent::Reasoning(a)), ParseEvent::Reasoning(b)) => a.push_str(&b),
            (_, e) => out.push(e),
        }
    }
    out
}

/// The longest end of `text` that is a proper start of `marker` (and on a char boundary).
pub(crate) fn partial_suffix(text: &str, marker: &str) -> usize {
    let max = marker.len().saturating_sub(1).min(text.len());
    (1..=max)
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n) && marker.starts_with(&text[text.len() - n..])
        })
        .unwrap_or(0)
}

/// A call between `open` and `close` tags; `parse` reads what lies between.
fn tagged(
    buf: &str,
    open: &str,
    close: &str,
    end: bool,
    parse: fn(&str) -> Option<(String, String)>,
) -> CallScan {
    let Some(body) = buf.strip_prefix(open) else {
        return CallScan::Malformed;
    };
    let (inner, used) = match body.find(close) {
        Some(at) => (&body[..at], open.len() + at + close.len()),
        None if end => (body, buf.len()),
        None => return CallScan::Incomplete,
    };
    match parse(inner.trim()) {
        Some(call) => CallScan::Done {
            calls: vec![call],
            used,
        },
        None => CallScan::Malformed,
    }
}

/// One JSON value at the start of `text` (after whitespace), read by `parse` into calls.
fn json_calls(
    text: &str,
    end: bool,
    skip: usize,
    parse: impl Fn(Value) -> Option<Vec<(String, String)>>,
) -> CallScan {
    let lead = text.len() - text.trim_start().len();
    match json_extent(&text[lead..]) {
        Extent::Complete(n) => {
            let Ok(v) = serde_json::from_str::<Value>(&text[lead..lead + n]) else {
                return CallScan::Malformed;
            };
            match parse(v) {
                Some(calls) if !calls.is_empty() => CallScan::Done {
                    calls,
                    used: skip + lead + n,
                },
                _ => CallScan::Malformed,
            }
        }
        Extent::Incomplete if !end => CallScan::Incomplete,
        _ => CallScan::Malformed,
    }
}

enum Extent {
    Complete(usize),
    Incomplete,
    NotJson,
}

/// Where the object or array that opens `s` ends (strings and escapes respected).
fn json_extent(s: &str) -> Extent {
    let bytes = s.as_bytes();
    match bytes.first() {
        Some(b'{' | b'[') => {}
        None => return Extent::Incomplete,
        _ => return Extent::NotJson,
    }
    let mut depth = 0usize;
    let mut in_str = false;
    let mut escaped = false;
    for (i, &c) in bytes.iter().enumerate() {
        if in_str {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            b'"' => in_str = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return Extent::Complete(i + 1);
                }
            }
            _ => {}
        }
    }
    Extent::Incomplete
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// `{"name": .., "arguments": {..}}` (arguments may be a JSON string holding the object).
fn name_and_args(v: &Value, args_keys: &[&str]) -> Option<(String, String)> {
    let o = v.as_object()?;
    let name = o.get("name")?.as_str()?;
    if !valid_name(name) {
        return None;
    }
    let args = args_keys.iter().find_map(|k| o.get(*k));
    let args = match args {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(Value::String(s)) => serde_json::from_str::<Value>(s).ok()?,
        Some(a) => a.clone(),
    };
    if !args.is_object() {
        return None;
    }
    Some((name.to_string(), args.to_string()))
}

fn hermes_call(inner: &str) -> Option<(String, String)> {
    let v: Value = serde_json::from_str(inner).ok()?;
    name_and_args(&v, &["arguments", "parameters"])
}

fn llama_call(v: Value) -> Option<(String, String)> {
    name_and_args(&v, &["parameters", "arguments"])
}

fn mistral_calls(v: Value) -> Option<Vec<(String, String)>> {
    match v {
        Value::Array(list) => list
            .iter()
            .map(|c| name_and_args(c, &["arguments", "parameters"]))
            .collect(),
        v @ Value::Object(_) => name_and_args(&v, &["arguments", "parameters"]).map(|c| vec![c]),
        _ => None,
    }
}

/// `call:name{key:<escape>text<escape>,n:1,list:[..],obj:{..}}` into the name and JSON.
fn gemma_call(inner: &str) -> Option<(String, String)> {
    let rest = inner.strip_prefix("call:")?;
    let brace = rest.find('{')?;
    let name = rest[..brace].trim();
    if !valid_name(name) {
        return None;
    }
    let mut p = GemmaArgs {
        s: &rest[brace..],
        at: 0,
    };
    let v = p.value(0)?;
    p.skip_ws();
    if p.at != p.s.len() || !v.is_object() {
        return None;
    }
    Some((name.to_string(), v.to_string()))
}

/// FunctionGemma's argument syntax.
struct GemmaArgs<'a> {
    s: &'a str,
    at: usize,
}

impl GemmaArgs<'_> {
    const ESCAPE: &'static str = "<escape>";

    fn skip_ws(&mut self) {
        let rest = &self.s[self.at..];
        self.at += rest.len() - rest.trim_start().len();
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_ws();
        if self.s[self.at..].starts_with(c) {
            self.at += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Option<Value> {
        if depth > 64 {
            return None;
        }
        self.skip_ws();
        let rest = &self.s[self.at..];
        if let Some(body) = rest.strip_prefix(Self::ESCAPE) {
            let end = body.find(Self::ESCAPE)?;
            self.at += Self::ESCAPE.len() * 2 + end;
            return Some(Value::String(body[..end].to_string()));
        }
        if self.eat('{') {
            let mut map = Map::new();
            if self.eat('}') {
                return Some(Value::Object(map));
            }
            loop {
                self.skip_ws();
                let rest = &self.s[self.at..];
                let key_len = rest.find(':')?;
                let key = rest[..key_len].trim();
                let key = key
                    .strip_prefix(Self::ESCAPE)
                    .and_then(|k| k.strip_suffix(Self::ESCAPE))
                    .unwrap_or(key);
                if key.is_empty() || key.contains(['{', '}', ',', '[', ']']) {
                    return None;
                }
                let key = key.to_string();
                self.at += key_len + 1;
                let v = self.value(depth + 1)?;
                map.insert(key, v);
                if self.eat(',') {
                    continue;
                }
                return self.eat('}').then_some(Value::Object(map));
            }
        }
        if self.eat('[') {
            let mut list = Vec::new();
            if self.eat(']') {
                return Some(Value::Array(list));
            }
            loop {
                list.push(self.value(depth + 1)?);
                if self.eat(',') {
                    continue;
                }
                return self.eat(']').then_some(Value::Array(list));
            }
        }
        // A bare word: a number, true/false/null, or unquoted text.
        let len = rest.find([',', '}', ']']).unwrap_or(rest.len());
        let word = rest[..len].trim();
        if word.is_empty() {
            return None;
        }
        self.at += len;
        Some(match word {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            "null" | "None" => Value::Null,
            _ => match serde_json::from_str::<serde_json::Number>(word) {
                Ok(n) => Value::Number(n),
                Err(_) => Value::String(word.to_string()),
            },
        })
    }
}

/// Which calls a client allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// The model decides (the default when tools are given).
    Auto,
    /// No calls: tools are not shown to the model and its output is not parsed for calls.
    None,
    /// At least one call, to any of the tools.
    Required,
    /// A call to this function.
    Function(String),
}

/// The grammar that makes the model call a tool, for `Required` and `Function` choices (None
/// for `Auto` and `None`, which leave the output free). `tools` are in OpenAI's shape
/// (`{"type": "function", "function": {"name", "parameters"}}`); each call's arguments follow
/// the tool's `parameters` schema. With `parallel`, several calls may follow one another.
///
/// The text is llguidance's Lark-like syntax: literals are JSON strings, and each tool's
/// arguments are a `%json { schema }` rule.
pub fn tool_call_grammar(
    format: ToolFormat,
    tools: &[Value],
    choice: &ToolChoice,
    parallel: bool,
) -> Option<Grammar> {
    let chosen: Vec<(&str, Value)> = tools
        .iter()
        .filter_map(|t| {
            let f = t.get("function").unwrap_or(t);
            let name = f.get("name")?.as_str()?;
            let mut params = match f.get("parameters") {
                Some(p) if p.is_object() => p.clone(),
                _ => serde_json::json!({"type": "object"}),
            };
            crate::constraint::set_json_style(&mut params);
            Some((name, params))
        })
        .filter(|(name, _)| match choice {
            ToolChoice::Required => true,
            ToolChoice::Function(want) => name == want,
            ToolChoice::Auto | ToolChoice::None => false,
        })
        .collect();
    if chosen.is_empty() {
        return None;
    }
    let many = parallel && matches!(choice, ToolChoice::Required);
    let mut g = String::new();
    let alts: Vec<String> = (0..chosen.len()).map(|i| format!("fn_{i}")).collect();
    let alts = alts.join(" | ");
    match format {
        ToolFormat::Hermes => {
            g.push_str(if many {
                "start: call (\"\\n\" call)*\n"
            } else {
                "start: call\n"
            });
            g.push_str(&format!(
                "call: \"<tool_call>\\n\" ({alts}) \"\\n</tool_call>\"\n"
            ));
        }
        ToolFormat::Llama3 => {
            g.push_str(if many {
                "start: call (\"; \" call)*\n"
            } else {
                "start: call\n"
            });
            g.push_str(&format!("call: {alts}\n"));
        }
        ToolFormat::Mistral => {
            g.push_str(if many {
                "start: \"[TOOL_CALLS][\" call (\", \" call)* \"]\"\n"
            } else {
                "start: \"[TOOL_CALLS][\" call \"]\"\n"
            });
            g.push_str(&format!("call: {alts}\n"));
        }
        ToolFormat::FunctionGemma => {
            g.push_str(if many {
                "start: call+\n"
            } else {
                "start: call\n"
            });
            g.push_str(&format!(
                "call: \"<start_function_call>\" ({alts}) \"<end_function_call>\"\n"
            ));
        }
    }
    for (i, (name, params)) in chosen.iter().enumerate() {
        let head = match format {
            ToolFormat::Hermes | ToolFormat::Mistral => {
                format!("{{\"name\": {}, \"arguments\": ", json_text(name))
            }
            ToolFormat::Llama3 => format!("{{\"name\": {}, \"parameters\": ", json_text(name)),
            ToolFormat::FunctionGemma => format!("call:{name}"),
        };
        match format {
            ToolFormat::FunctionGemma => {
                g.push_str(&format!("fn_{i}: {} gemma_object\n", lark_string(&head)));
            }
            _ => {
                g.push_str(&format!("fn_{i}: {} args_{i} \"}}\"\n", lark_string(&head)));
                g.push_str(&format!("args_{i}: %json {params}\n"));
            }
        }
    }
    if format == ToolFormat::FunctionGemma {
        // FunctionGemma's arguments are not JSON: the shape only, not the schema.
        g.push_str(concat!(
            "gemma_object: \"{\" (gemma_pair (\",\" gemma_pair)*)? \"}\"\n",
            "gemma_pair: /[A-Za-z_][A-Za-z0-9_]*/ \":\" gemma_value\n",
            "gemma_value: gemma_text | gemma_object | gemma_list | /-?[0-9]+(\\.[0-9]+)?/ ",
            "| \"true\" | \"false\" | \"null\"\n",
            "gemma_list: \"[\" (gemma_value (\",\" gemma_value)*)? \"]\"\n",
            "gemma_text: \"<escape>\" /[^<]*/ \"<escape>\"\n",
        ));
    }
    Some(Grammar::Lark(g))
}

/// `s` as a JSON string.
fn json_text(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// `s` as a Lark string literal (JSON string syntax without raw control characters or DEL).
fn lark_string(s: &str) -> String {
    json_text(s).replace('\u{7f}', "\\u007f")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run_whole(format: ToolFormat, text: &str) -> Vec<ParseEvent> {
        let mut p = ToolCallParser::new(format, 7);
        let mut ev = p.push(text);
        ev.extend(p.finish());
        merge(ev)
    }

    /// Every split of `text` into pieces at each byte boundary gives the events of the
    /// whole text.
    fn check_streaming(format: ToolFormat, text: &str) -> Vec<ParseEvent> {
        let whole = run_whole(format, text);
        let mut p = ToolCallParser::new(format, 7);
        let mut ev = Vec::new();
        let mut start = 0;
        for i in 1..=text.len() {
            if text.is_char_boundary(i) {
                ev.extend(p.push(&text[start..i]));
                start = i;
            }
        }
        ev.extend(p.finish());
        assert_eq!(merge(ev), whole, "byte-at-a-time differs for {text:?}");
        // And in pieces of 3 and 7 bytes.
        for step in [3, 7] {
            let mut p = ToolCallParser::new(format, 7);
            let mut ev = Vec::new();
            let mut start = 0;
            let mut i = 0;
            while i < text.len() {
                i = (i + step).min(text.len());
                while !text.is_char_boundary(i) {
                    i += 1;
                }
                ev.extend(p.push(&text[start..i]));
                start = i;
            }
            ev.extend(p.finish());
            assert_eq!(merge(ev), whole, "{step}-byte pieces differ for {text:?}");
        }
        whole
    }

    /// (content, [(name, args as JSON)]) of the events.
    fn summary(events: &[ParseEvent]) -> (String, Vec<(String, Value)>) {
        let mut content = String::new();
        let mut calls: Vec<(String, String)> = Vec::new();
        for e in events {
            match e {
                ParseEvent::Content(t) => content.push_str(t),
                ParseEvent::ToolCallStart { index, name, id } => {
                    assert_eq!(*index, calls.len());
                    assert!(!id.is_empty());
                    calls.push((name.clone(), String::new()));
                }
                ParseEvent::ToolCallArgs { index, delta } => calls[*index].1.push_str(delta),
                ParseEvent::Reasoning(_) => panic!("no reasoning here"),
            }
        }
        let calls = calls
            .into_iter()
            .map(|(n, a)| (n, serde_json::from_str(&a).expect("arguments are JSON")))
            .collect();
        (content, calls)
    }

    #[test]
    fn detects_formats_from_templates() {
        assert_eq!(
            ToolFormat::detect("{{- '<tool_call>\\n' }}"),
            Some(ToolFormat::Hermes)
        );
        assert_eq!(
            ToolFormat::detect("{{ '[TOOL_CALLS]' }}"),
            Some(ToolFormat::Mistral)
        );
        assert_eq!(
            ToolFormat::detect("{{ '<|python_tag|>' }}"),
            Some(ToolFormat::Llama3)
        );
        assert_eq!(
            ToolFormat::detect("<start_function_call>call:"),
            Some(ToolFormat::FunctionGemma)
        );
        assert_eq!(ToolFormat::detect("{{ messages }}"), None);
    }

    #[test]
    fn hermes_calls_and_content() {
        let text = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"tz\": \"CET\"}}\n</tool_call>";
        let ev = check_streaming(ToolFormat::Hermes, text);
        let (content, calls) = summary(&ev);
        assert_eq!(content, "Let me check.");
        assert_eq!(
            calls,
            vec![
                ("get_weather".into(), json!({"city": "Paris"})),
                ("get_time".into(), json!({"tz": "CET"})),
            ]
        );
        // Ids differ per call.
        let ids: Vec<_> = ev
            .iter()
            .filter_map(|e| match e {
                ParseEvent::ToolCallStart { id, .. } => Some(id.clone()),
                _ => None,
            })
            .collect();
        assert_ne!(ids[0], ids[1]);
        assert!(ids[0].starts_with("call_"));
    }

    #[test]
    fn hermes_bare_json_calls_at_the_start_are_calls() {
        // Qwen 2.5 often answers with the call's JSON and no <tool_call> tags.
        let text = "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n{\"name\": \"get_time\", \"arguments\": {}}\n";
        let (content, calls) = summary(&check_streaming(ToolFormat::Hermes, text));
        assert_eq!(content, "");
        assert_eq!(
            calls,
            vec![
                ("get_weather".into(), json!({"city": "Paris"})),
                ("get_time".into(), json!({})),
            ]
        );
        // JSON that is not a call, or JSON after text, stays content.
        for text in [
            "{\"answer\": 42}",
            "Here: {\"name\": \"f\", \"arguments\": {}}",
            "{\"name\": \"f\", \"arguments\": {\"a\": ",
        ] {
            let (content, calls) = summary(&check_streaming(ToolFormat::Hermes, text));
            assert_eq!((content.as_str(), calls.len()), (text, 0), "{text:?}");
        }
    }

    #[test]
    fn hermes_plain_text_and_lookalikes_stay_content() {
        for text in [
            "Just an answer.",
            "a < b and <tool> is not a call",
            "ends with a partial marker <tool_ca",
            "  spaced  \n",
        ] {
            let ev = check_streaming(ToolFormat::Hermes, text);
            assert_eq!(ev, vec![ParseEvent::Content(text.into())], "{text:?}");
        }
    }

    #[test]
    fn malformed_calls_fall_back_to_content() {
        for text in [
            "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1}\n</tool_call> after",
            "<tool_call>not json</tool_call>",
            "<tool_call>{\"arguments\": {}}</tool_call>",
            "<tool_call>{\"name\": \"f\", \"arguments\": [1]}</tool_call>",
            "<tool_call>{\"name\": \"f\"",
        ] {
            let ev = check_streaming(ToolFormat::Hermes, text);
            let (content, calls) = summary(&ev);
            assert!(calls.is_empty(), "{text:?}");
            assert_eq!(content, text, "{text:?}");
        }
        // A good call after a bad one is still found.
        let text = "<tool_call>oops</tool_call><tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call>";
        let (content, calls) = summary(&check_streaming(ToolFormat::Hermes, text));
        assert_eq!(content, "<tool_call>oops</tool_call>");
        assert_eq!(calls, vec![("f".into(), json!({}))]);
    }

    #[test]
    fn an_unclosed_call_at_the_end_is_still_a_call() {
        let text = "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": \"</tool\"}}\n";
        let (content, calls) = summary(&check_streaming(ToolFormat::Hermes, text));
        assert_eq!(content, "");
        assert_eq!(calls, vec![("f".into(), json!({"x": "</tool"}))]);
    }

    #[test]
    fn llama3_json_calls() {
        let text = "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\", \"days\": 2}}";
        let (content, calls) = summary(&check_streaming(ToolFormat::Llama3, text));
        assert_eq!(content, "");
        assert_eq!(
            calls,
            vec![("get_weather".into(), json!({"city": "Oslo", "days": 2}))]
        );
        let text = "<|python_tag|>{\"name\": \"a\", \"parameters\": {}}; {\"name\": \"b\", \"parameters\": {\"q\": \"}{\"}}";
        let (content, calls) = summary(&check_streaming(ToolFormat::Llama3, text));
        assert_eq!(content, "");
        assert_eq!(
            calls,
            vec![("a".into(), json!({})), ("b".into(), json!({"q": "}{"}))]
        );
        // JSON that is not a call, or JSON later in the text, is content.
        for text in [
            "{\"answer\": 42}",
            "The JSON is {\"name\": \"a\", \"parameters\": {}}",
        ] {
            let (content, calls) = summary(&check_streaming(ToolFormat::Llama3, text));
            assert!(calls.is_empty(), "{text}");
            assert_eq!(content, text);
        }
    }

    #[test]
    fn mistral_calls_both_styles() {
        let text = "[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {\"x\": 1}}, {\"name\": \"b\", \"arguments\": {}}]";
        let ev = check_streaming(ToolFormat::Mistral, text);
        let (content, calls) = summary(&ev);
        assert_eq!(content, "");
        assert_eq!(
            calls,
            vec![("a".into(), json!({"x": 1})), ("b".into(), json!({}))]
        );
        match &ev[0] {
            ParseEvent::ToolCallStart { id, .. } => {
                assert_eq!(id.len(), 9);
                assert!(id.chars().all(|c| c.is_ascii_alphanumeric()));
            }
            e => panic!("{e:?}"),
        }
        let text = "[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Rome\"}[TOOL_CALLS]b[ARGS]{}";
        let (content, calls) = summary(&check_streaming(ToolFormat::Mistral, text));
        assert_eq!(content, "");
        assert_eq!(
            calls,
            vec![
                ("get_weather".into(), json!({"city": "Rome"})),
                ("b".into(), json!({}))
            ]
        );
        let text = "[TOOL_CALLS] sorry, no";
        let (content, calls) = summary(&check_streaming(ToolFormat::Mistral, text));
        assert!(calls.is_empty());
        assert_eq!(content, text);
    }

    #[test]
    fn function_gemma_calls() {
        let text = "<start_function_call>call:get_weather{city:<escape>New York, NY<escape>,days:3,metric:true,tags:[<escape>a<escape>,2],opt:{x:null}}<end_function_call>";
        let (content, calls) = summary(&check_streaming(ToolFormat::FunctionGemma, text));
        assert_eq!(content, "");
        assert_eq!(
            calls,
            vec![(
                "get_weather".into(),
                json!({"city": "New York, NY", "days": 3, "metric": true, "tags": ["a", 2], "opt": {"x": null}})
            )]
        );
        let text = "<start_function_call>call:f{a:<escape>unterminated}<end_function_call>";
        let (content, calls) = summary(&check_streaming(ToolFormat::FunctionGemma, text));
        assert!(calls.is_empty());
        assert_eq!(content, text);
    }

    #[test]
    fn multibyte_text_streams_whole() {
        let text = "Ünïcödé 🙂 <tool_call>{\"name\": \"f\", \"arguments\": {\"s\": \"é🙂\"}}</tool_call> ✓";
        let (content, calls) = summary(&check_streaming(ToolFormat::Hermes, text));
        assert_eq!(content, "Ünïcödé 🙂 ✓");
        assert_eq!(calls, vec![("f".into(), json!({"s": "é🙂"}))]);
    }

    fn tools() -> Vec<Value> {
        vec![
            json!({"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}),
            json!({"type": "function", "function": {"name": "now"}}),
        ]
    }

    fn lark(g: Option<Grammar>) -> String {
        match g {
            Some(Grammar::Lark(s)) => s,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn grammar_for_a_named_hermes_call() {
        let g = lark(tool_call_grammar(
            ToolFormat::Hermes,
            &tools(),
            &ToolChoice::Function("get_weather".into()),
            true,
        ));
        assert_eq!(
            g,
            concat!(
                "start: call\n",
                "call: \"<tool_call>\\n\" (fn_0) \"\\n</tool_call>\"\n",
                "fn_0: \"{\\\"name\\\": \\\"get_weather\\\", \\\"arguments\\\": \" args_0 \"}\"\n",
                "args_0: %json {\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},\"required\":[\"city\"],\"x-guidance\":{\"whitespace_flexible\":false,\"item_separator\":\", \",\"key_separator\":\": \",\"coerce_one_of\":true}}\n",
            )
        );
        assert_well_formed(&g);
    }

    #[test]
    fn grammar_for_required_calls_in_each_format() {
        for format in [
            ToolFormat::Hermes,
            ToolFormat::Llama3,
            ToolFormat::Mistral,
            ToolFormat::FunctionGemma,
        ] {
            for parallel in [false, true] {
                let g = lark(tool_call_grammar(
                    format,
                    &tools(),
                    &ToolChoice::Required,
                    parallel,
                ));
                assert_well_formed(&g);
                assert!(g.contains("fn_0") && g.contains("fn_1"), "{g}");
                if format != ToolFormat::FunctionGemma {
                    // A tool without parameters takes any object.
                    assert!(
                        g.contains("args_1: %json {\"type\":\"object\",\"x-guidance\""),
                        "{g}"
                    );
                }
                let start = g.lines().next().unwrap_or("");
                assert_eq!(parallel, start.contains('*') || start.contains('+'), "{g}");
            }
        }
        assert!(tool_call_grammar(ToolFormat::Hermes, &tools(), &ToolChoice::Auto, true).is_none());
        assert!(tool_call_grammar(ToolFormat::Hermes, &tools(), &ToolChoice::None, true).is_none());
        assert!(tool_call_grammar(
            ToolFormat::Hermes,
            &tools(),
            &ToolChoice::Function("nope".into()),
            true
        )
        .is_none());
    }

    /// Checks the grammar against llguidance's Lark syntax: every line is `name: expansion`
    /// (lowercase rule names), literals are JSON strings without raw control characters,
    /// `%json` is followed by one JSON object, every rule used is defined, `start` exists,
    /// and parentheses balance outside literals.
    fn assert_well_formed(g: &str) {
        let mut defined = Vec::new();
        let mut used = Vec::new();
        for line in g.lines() {
            let (name, body) = line.split_once(": ").unwrap_or_else(|| panic!("{line}"));
            assert!(
                name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                    && name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "rule name {name:?}"
            );
            defined.push(name.to_string());
            if let Some(schema) = body.strip_prefix("%json ") {
                let v: Value = serde_json::from_str(schema).expect("%json takes a JSON object");
                assert!(v.is_object(), "{line}");
                continue;
            }
            let mut depth = 0i32;
            let mut rest = body;
            while let Some(c) = rest.chars().next() {
                match c {
                    '"' => {
                        // A JSON string literal.
                        let mut de = serde_json::Deserializer::from_str(rest).into_iter::<String>();
                        de.next().expect("literal").expect("a JSON string literal");
                        let n = de.byte_offset();
                        assert!(!rest[..n].chars().any(|c| c.is_control()), "{line}");
                        rest = &rest[n..];
                        continue;
                    }
                    '/' => {
                        let end = rest[1..].find('/').expect("regex closes") + 2;
                        rest = &rest[end..];
                        continue;
                    }
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    c if c.is_ascii_lowercase() => {
                        let word: String = rest
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        used.push(word.clone());
                        rest = &rest[word.len()..];
                        continue;
                    }
                    ' ' | '|' | '*' | '+' | '?' => {}
                    other => panic!("unexpected {other:?} in {line}"),
                }
                assert!(depth >= 0, "{line}");
                rest = &rest[c.len_utf8()..];
            }
            assert_eq!(depth, 0, "{line}");
        }
        assert!(defined.contains(&"start".to_string()), "{g}");
        for u in used {
            assert!(defined.contains(&u), "{u} is used but not defined in\n{g}");
        }
    }
}
