//! Tools as the APIs take them: checked, turned into the shape chat templates get
//! (`{"type": "function", "function": {"name", "description", "parameters"}}`), the choice of
//! calls, and the calls of an answer in each API's shape.

use crate::error::ApiError;
use engine::chat::tools::ToolChoice;
use serde_json::{json, Map, Value};

/// Longest function name (OpenAI's limit).
const MAX_NAME: usize = 64;
/// Most tools in one request.
pub const MAX_TOOLS: usize = 128;

/// `name` may name a function: letters, digits, `_` and `-`, 1 to 64 of them.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks `tools` (`param` names the field): each `{"type": "function", "function": {"name",
/// "description"?, "parameters"?}}`, or with `flat` (the Responses API) `{"type": "function",
/// "name", "description"?, "parameters"?}`. Returns them in the nested shape, names unique.
pub fn check_tools(param: &str, tools: Option<&Value>, flat: bool) -> Result<Vec<Value>, ApiError> {
    let list = match tools {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(ApiError::invalid(param, format!("{param} must be a list"))),
    };
    if list.len() > MAX_TOOLS {
        return Err(ApiError::invalid(
            param,
            format!("{param} may hold at most {MAX_TOOLS} tools"),
        ));
    }
    let mut out = Vec::with_capacity(list.len());
    let mut names: Vec<String> = Vec::new();
    for (i, t) in list.iter().enumerate() {
        let at = format!("{param}[{i}]");
        let Some(obj) = t.as_object() else {
            return Err(ApiError::invalid(&at, format!("{at} must be an object")));
        };
        match obj.get("type").and_then(Value::as_str) {
            Some("function") => {}
            Some(other) => {
                return Err(ApiError::invalid(
                    &format!("{at}.type"),
                    format!("{at}.type {other:?} is not supported: only \"function\""),
                ))
            }
            None => {
                return Err(ApiError::invalid(
                    &format!("{at}.type"),
                    format!("{at}.type must be \"function\""),
                ))
            }
        }
        let (f, fat) = if flat {
            (obj, at.clone())
        } else {
            let fat = format!("{at}.function");
            match obj.get("function").and_then(Value::as_object) {
                Some(f) => (f, fat),
                None => return Err(ApiError::invalid(&fat, format!("{fat} must be an object"))),
            }
        };
        let name = match f.get("name").and_then(Value::as_str) {
            Some(n) if valid_name(n) => n,
            _ => {
                return Err(ApiError::invalid(
                    &format!("{fat}.name"),
                    format!("{fat}.name must be 1 to {MAX_NAME} letters, digits, '_' or '-'"),
                ))
            }
        };
        if names.iter().any(|n| n == name) {
            return Err(ApiError::invalid(
                &format!("{fat}.name"),
                format!("{fat}.name {name:?} is given twice"),
            ));
        }
        names.push(name.to_string());
        let mut function = Map::new();
        function.insert("name".into(), json!(name));
        match f.get("description") {
            None | Some(Value::Null) => {}
            Some(Value::String(d)) => {
                function.insert("description".into(), json!(d));
            }
            Some(_) => {
                return Err(ApiError::invalid(
                    &format!("{fat}.description"),
                    format!("{fat}.description must be a string"),
                ))
            }
        }
        match f.get("parameters") {
            None | Some(Value::Null) => {}
            Some(p @ Value::Object(_)) => {
                function.insert("parameters".into(), p.clone());
            }
            Some(_) => {
                return Err(ApiError::invalid(
                    &format!("{fat}.parameters"),
                    format!("{fat}.parameters must be a JSON schema object"),
                ))
            }
        }
        out.push(json!({"type": "function", "function": Value::Object(function)}));
    }
    Ok(out)
}

/// The name of a checked tool.
pub fn tool_name(tool: &Value) -> &str {
    tool["function"]["name"].as_str().unwrap_or("")
}

/// Checks `tool_choice`: "none", "auto", "required", or a named function
/// (`{"type": "function", "function": {"name"}}`; with `flat`, `{"type": "function", "name"}`)
/// that must be one of `tools`.
pub fn check_choice(
    param: &str,
    v: Option<&Value>,
    tools: &[Value],
    flat: bool,
) -> Result<ToolChoice, ApiError> {
    let choice = match v {
        None | Some(Value::Null) => ToolChoice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => {
                return Err(ApiError::invalid(
                    param,
                    format!(
                        "{param} must be \"none\", \"auto\", \"required\" or a function (got {other:?})"
                    ),
                ))
            }
        },
        Some(Value::Object(o)) => {
            if o.get("type").and_then(Value::as_str) != Some("function") {
                return Err(ApiError::invalid(
                    &format!("{param}.type"),
                    format!("{param}.type must be \"function\""),
                ));
            }
            let (name, at) = if flat {
                (o.get("name"), format!("{param}.name"))
            } else {
                (
                    o.get("function").and_then(|f| f.get("name")),
                    format!("{param}.function.name"),
                )
            };
            let Some(name) = name.and_then(Value::as_str) else {
                return Err(ApiError::invalid(&at, format!("{at} must be a string")));
            };
            if !tools.iter().any(|t| tool_name(t) == name) {
                return Err(ApiError::invalid(
                    &at,
                    format!("{at} {name:?} is not one of the tools given"),
                ));
            }
            ToolChoice::Function(name.to_string())
        }
        Some(_) => {
            return Err(ApiError::invalid(
                param,
                format!("{param} must be a string or an object"),
            ))
        }
    };
    if tools.is_empty() && matches!(choice, ToolChoice::Required | ToolChoice::Function(_)) {
        return Err(ApiError::invalid(
            param,
            format!("{param} asks for a tool call, but no tools were given"),
        ));
    }
    Ok(choice)
}

/// A call's arguments given as OpenAI sends them (a JSON text holding an object; an object is
/// taken too), read into the object. `at` names the field for the error.
pub fn arguments(v: Option<&Value>, at: &str) -> Result<Value, ApiError> {
    let parsed = match v {
        None | Some(Value::Null) => return Ok(json!({})),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(json!({})),
        Some(Value::String(s)) => serde_json::from_str::<Value>(s)
            .map_err(|e| ApiError::invalid(at, format!("{at} is not valid JSON: {e}")))?,
        Some(o @ Value::Object(_)) => o.clone(),
        Some(_) => {
            return Err(ApiError::invalid(
                at,
                format!("{at} must be a JSON object (as a string)"),
            ))
        }
    };
    if !parsed.is_object() {
        return Err(ApiError::invalid(
            at,
            format!("{at} must hold a JSON object"),
        ));
    }
    Ok(parsed)
}

/// One call as the parser reported it.
#[derive(Debug, Clone, Default)]
pub struct Call {
    pub id: String,
    pub name: String,
    /// JSON text of an object.
    pub arguments: String,
}

/// A whole answer read through the output parser.
#[derive(Debug, Default)]
pub struct Parsed {
    pub content: String,
    pub reasoning: String,
    pub calls: Vec<Call>,
}

impl Parsed {
    pub fn add(&mut self, events: Vec<engine::chat::tools::ParseEvent>) {
        use engine::chat::tools::ParseEvent as P;
        for e in events {
            match e {
                P::Content(t) => self.content.push_str(&t),
                P::Reasoning(t) => self.reasoning.push_str(&t),
                P::ToolCallStart { index, id, name } => {
                    if index >= self.calls.len() {
                        self.calls.resize_with(index + 1, Call::default);
                    }
                    self.calls[index].id = id;
                    self.calls[index].name = name;
                }
                P::ToolCallArgs { index, delta } => {
                    if let Some(c) = self.calls.get_mut(index) {
                        c.arguments.push_str(&delta);
                    }
                }
            }
        }
    }

    /// The whole text through `parser`.
    pub fn of(text: &str, parser: &mut engine::chat::reasoning::OutputParser) -> Parsed {
        let mut p = Parsed::default();
        p.add(parser.push(text));
        p.add(parser.finish());
        p
    }
}

/// The arguments' JSON text as a value (an empty object if it somehow is not JSON).
pub fn args_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| json!({}))
}
