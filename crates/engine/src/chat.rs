//! Chat prompts: renders the model's `tokenizer.chat_template` (a Jinja template) with minijinja,
//! sandboxed and bounded. A file without a template is taken for a base (pretrained) model,
//! which continues text and does not chat: [`ChatTemplate::for_model`] refuses it rather than
//! guess a format the model never learned. The built-in formats are there for a caller that
//! picks one on purpose ([`ChatTemplate::builtin`]).
//!
//! The environment matches what Hugging Face transformers gives templates (`trim_blocks`,
//! `lstrip_blocks`, `raise_exception`, `strftime_now`, its `tojson`), so prompts agree with
//! theirs byte for byte (`tests/data/templates/`).

mod guard;
mod pyjson;
pub mod reasoning;
pub mod tools;

pub use guard::ChatPrompt;

use minijinja::value::{Kwargs, Value};
use minijinja::{context, Environment, Error as JinjaError, ErrorKind};
use serde::{Deserialize, Serialize};

/// One turn of a conversation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
    /// The calls an assistant turn made (rendered as transformers passes them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// A `tool` turn: the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// A `tool` turn: the function's name (Ollama's `tool_name`, OpenAI's legacy `name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Message {
        Message {
            role: role.to_string(),
            content: content.to_string(),
            ..Message::default()
        }
    }
}

/// A function call an assistant made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as a JSON value (an object for every real template).
    pub arguments: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("the model's chat template is invalid: {0}")]
    Syntax(String),
    #[error("the model's chat template failed to render: {0}")]
    Render(String),
    #[error("the rendered prompt exceeds {MAX_OUTPUT} bytes")]
    TooLong,
    #[error("the model's chat template reads `{0}`, which is not allowed")]
    Unsafe(String),
    /// The sandbox refused or failed (memory limit, timeout, the helper process failing).
    #[error("the model's chat template could not be rendered: {0}")]
    Sandbox(String),
    /// The file has no chat template: a base model, trained to continue text.
    #[error(
        "the model has no chat template: it is a base (pretrained) model, which continues \
         text rather than answering messages"
    )]
    BaseModel,
}

/// Renders a template where its memory can be bounded, such as another process: minijinja
/// bounds loops, recursion, output and the size of `'x' * n`, but a template that doubles a
/// string again and again (`s ~ s` in a loop) would grow it until the process aborts.
pub trait Sandbox: Send + Sync {
    /// What [`ChatTemplate::render_here`] gives, computed elsewhere.
    fn render(
        &self,
        template: &ChatTemplate,
        messages: &[Message],
        tools: Option<&[serde_json::Value]>,
        add_generation_prompt: bool,
    ) -> Result<String, ChatError>;
}

/// Bounds on template work: no template of a real model needs more.
const FUEL: u64 = 5_000_000;
const MAX_OUTPUT: usize = 16 << 20;
const MAX_DEPTH: usize = 100;

/// Gemma 3's own template (google/gemma-3-*-it), for Gemma files that carry none.
pub const GEMMA3_TEMPLATE: &str = include_str!("chat/gemma3.jinja");

/// ChatML, the most common format, for other files without a template.
pub const CHATML_TEMPLATE: &str = include_str!("chat/chatml.jinja");

/// The built-in templates by name, for [`ChatTemplate::builtin`].
pub const BUILTIN_TEMPLATES: &[(&str, &str)] =
    &[("chatml", CHATML_TEMPLATE), ("gemma3", GEMMA3_TEMPLATE)];

/// A chat template ready to render.
#[derive(Clone)]
pub struct ChatTemplate {
    source: String,
    bos: String,
    eos: String,
    /// Built into hearth (not the file's): rendered in this process even with a sandbox.
    builtin: bool,
    sandbox: Option<std::sync::Arc<dyn Sandbox>>,
}

impl ChatTemplate {
    /// The file's template, or a built-in one chosen by architecture when it has none.
    pub fn new(template: Option<&str>, arch: &str, bos: &str, eos: &str) -> ChatTemplate {
        let source = match template {
            Some(t) => t.to_string(),
            None if arch.starts_with("gemma") => GEMMA3_TEMPLATE.to_string(),
            None => CHATML_TEMPLATE.to_string(),
        };
        ChatTemplate {
            source,
            bos: bos.to_string(),
            eos: eos.to_string(),
            builtin: template.is_none(),
            sandbox: None,
        }
    }

    /// The model's `tokenizer.chat_template` with the model's BOS and EOS texts;
    /// [`ChatError::BaseModel`] when the file has none (or an empty one).
    pub fn for_model(model: &crate::Model) -> Result<ChatTemplate, ChatError> {
        match model_template(model.file()) {
            Some(source) => Ok(Self::with_model_tokens(Some(source), model)),
            None => Err(ChatError::BaseModel),
        }
    }

    /// A built-in template by name (`chatml`, `gemma3`) with the model's BOS and EOS texts,
    /// for a model whose file lacks the template it was trained with. Rendered in this process.
    pub fn builtin(name: &str, model: &crate::Model) -> Option<ChatTemplate> {
        let (_, source) = BUILTIN_TEMPLATES.iter().find(|(n, _)| *n == name)?;
        let mut t = Self::with_model_tokens(Some(source), model);
        t.builtin = true;
        Some(t)
    }

    fn with_model_tokens(source: Option<&str>, model: &crate::Model) -> ChatTemplate {
        let tok = model.tokenizer();
        let text = |id: Option<u32>| id.and_then(|i| tok.token_text(i)).unwrap_or("").to_string();
        ChatTemplate::new(
            source,
            &model.config().arch,
            &text(tok.bos()),
            &text(tok.eos()),
        )
    }

    /// A template given as it is (what a sandbox's helper receives).
    pub fn from_parts(source: &str, bos: &str, eos: &str) -> ChatTemplate {
        ChatTemplate {
            source: source.to_string(),
            bos: bos.to_string(),
            eos: eos.to_string(),
            builtin: false,
            sandbox: None,
        }
    }

    /// Renders the file's templates through `sandbox` from now on (built-in ones stay here).
    pub fn with_sandbox(mut self, sandbox: std::sync::Arc<dyn Sandbox>) -> ChatTemplate {
        self.sandbox = Some(sandbox);
        self
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn bos(&self) -> &str {
        &self.bos
    }

    pub fn eos(&self) -> &str {
        &self.eos
    }

    /// Renders `messages`, ending with the assistant's turn opened when `add_generation_prompt`:
    /// in the sandbox when one is set and the template came from the file.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        self.render_with_tools(messages, None, add_generation_prompt)
    }

    /// [`ChatTemplate::render`] with the tools the model may call, each in OpenAI's shape
    /// (`{"type": "function", "function": {"name", "description", "parameters"}}`), passed to
    /// the template as transformers passes them (`tools`; None when there are none).
    pub fn render_with_tools(
        &self,
        messages: &[Message],
        tools: Option<&[serde_json::Value]>,
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        let tools = tools.filter(|t| !t.is_empty());
        match &self.sandbox {
            Some(sandbox) if !self.builtin => {
                sandbox.render(self, messages, tools, add_generation_prompt)
            }
            _ => self.render_here(messages, tools, add_generation_prompt),
        }
    }

    /// Renders in this process (bounded in work and output, not in memory: see [`Sandbox`]).
    pub fn render_here(
        &self,
        messages: &[Message],
        tools: Option<&[serde_json::Value]>,
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        if let Some(name) = dunder_access(&self.source) {
            return Err(ChatError::Unsafe(name));
        }
        let env = environment();
        let tmpl = env
            .template_from_str(&self.source)
            .map_err(|e| ChatError::Syntax(e.to_string()))?;
        let msgs: Vec<Value> = messages.iter().map(message_value).collect();
        let tools = match tools.filter(|t| !t.is_empty()) {
            Some(list) => Value::from(list.iter().map(json_value).collect::<Vec<_>>()),
            None => Value::from(()),
        };
        let ctx = context! {
            messages => msgs,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos,
            eos_token => self.eos,
            // transformers passes these as None when a chat has none.
            tools => tools,
            documents => Value::from(()),
        };
        let mut out = Bounded(Vec::new());
        match tmpl.render_captured_to(ctx, &mut out) {
            Ok(_) => {}
            Err(_) if out.0.len() > MAX_OUTPUT => return Err(ChatError::TooLong),
            Err(e) => return Err(ChatError::Render(render_error(&e))),
        }
        String::from_utf8(out.0).map_err(|e| ChatError::Render(e.to_string()))
    }
}

/// A message as transformers gives it to templates: `role` and `content`, plus `tool_calls`
/// (`[{"id", "type": "function", "function": {"name", "arguments": {..}}}]`, the arguments a
/// dict), `tool_call_id` and `name` only when the message has them. An assistant turn made
/// only of calls has `content` None, as OpenAI clients send it.
fn message_value(m: &Message) -> Value {
    let mut pairs: Vec<(&str, Value)> = vec![("role", Value::from(m.role.as_str()))];
    let content = if m.content.is_empty() && !m.tool_calls.is_empty() {
        Value::from(())
    } else {
        Value::from(m.content.as_str())
    };
    pairs.push(("content", content));
    if !m.tool_calls.is_empty() {
        let calls: Vec<Value> = m
            .tool_calls
            .iter()
            .map(|c| {
                let function = Value::from_iter([
                    ("name", Value::from(c.name.as_str())),
                    ("arguments", json_value(&c.arguments)),
                ]);
                Value::from_iter([
                    ("id", Value::from(c.id.as_str())),
                    ("type", Value::from("function")),
                    ("function", function),
                ])
            })
            .collect();
        pairs.push(("tool_calls", Value::from(calls)));
    }
    if let Some(id) = &m.tool_call_id {
        pairs.push(("tool_call_id", Value::from(id.as_str())));
    }
    if let Some(name) = &m.name {
        pairs.push(("name", Value::from(name.as_str())));
    }
    Value::from_iter(pairs)
}

/// A JSON value for a template, its objects' keys in the order the JSON map keeps them.
fn json_value(v: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    match v {
        J::Null => Value::from(()),
        J::Bool(b) => Value::from(*b),
        J::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        J::String(s) => Value::from(s.as_str()),
        J::Array(a) => Value::from(a.iter().map(json_value).collect::<Vec<_>>()),
        J::Object(o) => Value::from_iter(o.iter().map(|(k, v)| (k.as_str(), json_value(v)))),
    }
}

/// The file's chat template, unless it is missing or blank (a base model).
pub fn model_template(file: &gguf::GgufFile) -> Option<&str> {
    file.get_str("tokenizer.chat_template")
        .ok()
        .flatten()
        .filter(|t| !t.trim().is_empty())
}

/// The template environment: Jinja as transformers configures it, plus bounds on work.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    minijinja_contrib::add_to_environment(&mut env);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(MAX_DEPTH);
    env.add_function(
        "raise_exception",
        |msg: String| -> Result<String, JinjaError> {
            Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
        },
    );
    env.add_function("strftime_now", strftime_now);
    env.add_filter(
        "tojson",
        |v: Value, indent: Option<Value>, kwargs: Kwargs| -> Result<Value, JinjaError> {
            let text = pyjson::Style::from_args(indent, &kwargs)?.dumps(&v)?;
            // Safe: the text goes into a prompt, not HTML.
            Ok(Value::from_safe_string(text))
        },
    );
    env
}

/// `strftime_now(format)`: the local time now, formatted as Python's `strftime` does.
fn strftime_now(format: String) -> Result<String, JinjaError> {
    use chrono::format::{Item, StrftimeItems};
    use std::fmt::Write as _;
    let items: Vec<Item> = StrftimeItems::new(&format).collect();
    if items.iter().any(|i| matches!(i, Item::Error)) {
        return Err(JinjaError::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: invalid format {format:?}"),
        ));
    }
    let mut out = String::new();
    write!(
        out,
        "{}",
        chrono::Local::now().format_with_items(items.into_iter())
    )
    .map_err(|_| {
        JinjaError::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: cannot format {format:?}"),
        )
    })?;
    Ok(out)
}

/// The error with its cause (minijinja keeps `raise_exception`'s message in the chain).
fn render_error(e: &JinjaError) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Output capped at `MAX_OUTPUT` bytes: writing past it fails, which ends the render.
struct Bounded(Vec<u8>);

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_OUTPUT {
            self.0.resize(MAX_OUTPUT + 1, 0);
            return Err(std::io::Error::other("output too long"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A `.__name__` or `['__name__']` inside a template tag: Python's object internals, which
/// transformers' sandbox hides and no real template reads. Refused rather than rendered as "".
fn dunder_access(source: &str) -> Option<String> {
    let mut rest = source;
    while let Some(open) = rest.find(['{']) {
        let after = &rest[open + 1..];
        let close = match after.chars().next() {
            Some('{') => "}}",
            Some('%') => "%}",
            _ => {
                rest = after;
                continue;
            }
        };
        let body = &after[1..];
        let end = body.find(close).unwrap_or(body.len());
        if let Some(name) = dunder_in_tag(&body[..end]) {
            return Some(name);
        }
        rest = &body[end..];
    }
    None
}

fn dunder_in_tag(tag: &str) -> Option<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let bytes = tag.as_bytes();
    let mut i = 0;
    let mut last_significant = b' ';
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'\'' || c == b'"' {
            let start = i + 1;
            let mut j = start;
            while j < bytes.len() && bytes[j] != c {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            let lit = &tag[start..j.min(bytes.len())];
            if last_significant == b'[' && lit.starts_with("__") {
                return Some(lit.to_string());
            }
            i = j + 1;
            last_significant = c;
            continue;
        }
        if c == b'.' {
            let name = ident(tag[i + 1..].trim_start());
            if name.starts_with("__") {
                return Some(name);
            }
        }
        if !c.is_ascii_whitespace() {
            last_significant = c;
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOL: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn renders_smollm_template() {
        let t = ChatTemplate::new(Some(SMOL), "llama", "<|im_start|>", "<|im_end|>");
        let out = t.render(&[Message::new("user", "Hi")], true).unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn gemma_builtin() {
        let t = ChatTemplate::new(None, "gemma3", "<bos>", "<eos>");
        let out = t
            .render(
                &[
                    Message::new("system", "Be brief."),
                    Message::new("user", "Hi "),
                    Message::new("assistant", "Hello"),
                    Message::new("user", "Bye"),
                ],
                true,
            )
            .unwrap();
        assert_eq!(
            out,
            "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
        );
        // Gemma refuses two user turns in a row, clearly.
        let e = t
            .render(
                &[Message::new("user", "a"), Message::new("user", "b")],
                true,
            )
            .unwrap_err();
        assert!(e.to_string().contains("must alternate"), "{e}");
    }

    #[test]
    fn bad_templates_are_errors_not_hangs() {
        let t = ChatTemplate::new(Some("{% for x in messages %}"), "llama", "", "");
        assert!(matches!(t.render(&[], true), Err(ChatError::Syntax(_))));
        let t = ChatTemplate::new(
            Some("{{ raise_exception('no system role') }}"),
            "llama",
            "",
            "",
        );
        let e = t.render(&[], true).unwrap_err().to_string();
        assert!(e.contains("no system role"), "{e}");
        let t = ChatTemplate::new(
            Some(
                "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            ),
            "llama",
            "",
            "",
        );
        assert!(matches!(t.render(&[], true), Err(ChatError::Render(_))));
    }

    fn render_source(source: &str, messages: &[Message]) -> Result<String, ChatError> {
        ChatTemplate::new(Some(source), "llama", "<s>", "</s>").render(messages, true)
    }

    #[test]
    fn tojson_is_pythons_json_dumps() {
        let msgs = [Message::new("user", "Hi \"there\"\né <b>&")];
        assert_eq!(
            render_source("{{ messages | tojson }}", &msgs).unwrap(),
            r#"[{"role": "user", "content": "Hi \"there\"\né <b>&"}]"#
        );
        assert_eq!(
            render_source(
                "{{ {'b': 1, 'a': [1.5, none, true]} | tojson(indent=2) }}",
                &[]
            )
            .unwrap(),
            "{\n  \"b\": 1,\n  \"a\": [\n    1.5,\n    null,\n    true\n  ]\n}"
        );
        assert_eq!(
            render_source(
                "{{ {'b': 1, 'a': 2} | tojson(sort_keys=true, separators=[',', ':']) }}",
                &[]
            )
            .unwrap(),
            r#"{"a":2,"b":1}"#
        );
        assert_eq!(
            render_source("{{ 'é' | tojson(ensure_ascii=true) }}", &[]).unwrap(),
            r#""\u00e9""#
        );
        let e = render_source("{{ 1 | tojson(bogus=1) }}", &[]).unwrap_err();
        assert!(matches!(e, ChatError::Render(_)), "{e}");
    }

    #[test]
    fn strftime_now_formats_the_local_time() {
        let year = render_source("{{ strftime_now('%Y') }}", &[]).unwrap();
        assert_eq!(year, chrono::Local::now().format("%Y").to_string());
        let day = render_source("{{ strftime_now('%d %b %Y') }}", &[]).unwrap();
        assert_eq!(day.len(), 11, "{day}");
        let e = render_source("{{ strftime_now('%Q') }}", &[]).unwrap_err();
        assert!(e.to_string().contains("strftime_now"), "{e}");
    }

    #[test]
    fn trims_blocks_like_transformers() {
        let src = "{% for m in messages %}\n  {% if m.role == 'user' %}\n[{{ m.content }}]\n  {% endif %}\n{% endfor %}";
        let out = render_source(src, &[Message::new("user", "a"), Message::new("user", "b")]);
        assert_eq!(out.unwrap(), "[a]\n[b]\n");
    }

    #[test]
    fn hostile_templates_fail_clearly_and_quickly() {
        let start = std::time::Instant::now();
        for (src, want) in [
            ("{{ ''.__class__ }}", "__class__"),
            ("{{ messages.__class__.__mro__ }}", "__class__"),
            ("{% set x = ''['__class__'] %}", "__class__"),
            ("{% for i in range(10**9) %}x{% endfor %}", "range"),
            (
                "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
                "recursion",
            ),
            (
                "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
                "fuel",
            ),
        ] {
            let e = render_source(src, &[]).unwrap_err().to_string();
            assert!(e.contains(want), "{src}: {e}");
        }
        // Output past the bound stops the render, however it is produced.
        let huge = "{% set s = 'x' * 10000000 %}{% for i in range(10) %}{{ s }}{% endfor %}";
        assert!(matches!(render_source(huge, &[]), Err(ChatError::TooLong)));
        assert!(start.elapsed() < std::time::Duration::from_secs(60));
    }

    #[test]
    fn dunder_scan_ignores_text_and_strings() {
        assert_eq!(dunder_access("a.__b {{ x }} {% if y %}"), None);
        assert_eq!(dunder_access("{{ '.__x' + \"a.__y\" }}"), None);
        assert_eq!(dunder_access("{%}"), None);
        assert_eq!(dunder_access("{{ x . __y }}"), Some("__y".into()));
    }
}
