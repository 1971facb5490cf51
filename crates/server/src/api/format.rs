//! Structured output as each API asks for it, read into the engine's [`Grammar`]: OpenAI's
//! `response_format`, Ollama's `format`, and llama.cpp's `grammar` / `json_schema` on
//! `/v1/completions`. Only the request's shape is checked here; the grammar itself is compiled
//! (and refused with the compiler's reason) against the model's tokenizer by the worker.

use crate::error::ApiError;
use engine::constraint::Grammar;
use serde_json::Value;

/// Largest schema or grammar text accepted (it is compiled per request).
pub const MAX_GRAMMAR_BYTES: usize = 256 * 1024;

/// OpenAI `response_format`: `{"type": "text"}`, `{"type": "json_object"}` (llama.cpp also
/// takes a `schema` beside it) or `{"type": "json_schema", "json_schema": {"name", "schema",
/// "strict"}}`.
pub fn openai_response_format(param: &str, v: Option<&Value>) -> Result<Option<Grammar>, ApiError> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let Some(obj) = v.as_object() else {
        return Err(ApiError::invalid(
            param,
            format!("{param} must be an object such as {{\"type\": \"json_object\"}} (got {v})"),
        ));
    };
    let kind = obj.get("type").and_then(Value::as_str).ok_or_else(|| {
        ApiError::invalid(
            &format!("{param}.type"),
            format!("{param}.type must be \"text\", \"json_object\" or \"json_schema\""),
        )
    })?;
    match kind {
        "text" => Ok(None),
        "json_object" => match obj.get("schema") {
            None | Some(Value::Null) => Ok(Some(Grammar::AnyJson)),
            Some(schema) => schema_grammar(&format!("{param}.schema"), schema).map(Some),
        },
        "json_schema" => {
            let at = format!("{param}.json_schema");
            let spec = obj
                .get("json_schema")
                .and_then(Value::as_object)
                .ok_or_else(|| {
                    ApiError::invalid(
                        &at,
                        format!("{at} must be an object with a \"schema\" (and a \"name\")"),
                    )
                })?;
            if let Some(name) = spec.get("name") {
                check_name(&format!("{at}.name"), name)?;
            }
            if let Some(strict) = spec.get("strict") {
                if !strict.is_boolean() && !strict.is_null() {
                    return Err(ApiError::invalid(
                        &format!("{at}.strict"),
                        format!("{at}.strict must be true or false (got {strict})"),
                    ));
                }
            }
            match spec.get("schema") {
                // OpenAI's default when a schema is left out: any JSON object.
                None | Some(Value::Null) => Ok(Some(Grammar::AnyJson)),
                Some(schema) => schema_grammar(&format!("{at}.schema"), schema).map(Some),
            }
        }
        other => Err(ApiError::invalid(
            &format!("{param}.type"),
            format!(
                "{param}.type must be \"text\", \"json_object\" or \"json_schema\" (got {other:?})"
            ),
        )),
    }
}

/// The Responses API's `text.format`: `{"type": "text" | "json_object" | "json_schema",
/// "name", "schema", "strict"}` (the schema sits beside the type, not under `json_schema`).
pub fn responses_text_format(param: &str, v: Option<&Value>) -> Result<Option<Grammar>, ApiError> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    match v.get("type").and_then(Value::as_str) {
        Some("json_schema") => {
            if let Some(name) = v.get("name") {
                check_name(&format!("{param}.name"), name)?;
            }
            match v.get("schema") {
                None | Some(Value::Null) => Err(ApiError::invalid(
                    &format!("{param}.schema"),
                    format!("{param}.schema is required when {param}.type is \"json_schema\""),
                )),
                Some(schema) => schema_grammar(&format!("{param}.schema"), schema).map(Some),
            }
        }
        _ => openai_response_format(param, Some(v)),
    }
}

/// Ollama `format`: `""` (none), `"json"` or a JSON schema.
pub fn ollama_format(v: Option<&Value>) -> Result<Option<Grammar>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s == "json" => Ok(Some(Grammar::AnyJson)),
        Some(Value::String(s)) => Err(ApiError::invalid(
            "format",
            format!("format must be \"json\" or a JSON schema object (got {s:?})"),
        )),
        Some(schema) => schema_grammar("format", schema).map(Some),
    }
}

/// llama.cpp's `/v1/completions` extensions: `grammar` (GBNF text) or `json_schema`, beside
/// OpenAI's `response_format`; at most one of them. With it, the field it came from.
pub fn completion_grammar(
    grammar: Option<&Value>,
    json_schema: Option<&Value>,
    response_format: Option<Grammar>,
) -> Result<Option<(&'static str, Grammar)>, ApiError> {
    let grammar = match grammar {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => {
            check_size("grammar", s.len())?;
            Some(Grammar::Gbnf(s.clone()))
        }
        Some(other) => {
            return Err(ApiError::invalid(
                "grammar",
                format!("grammar must be a string of GBNF rules (got {other})"),
            ))
        }
    };
    let schema = match json_schema {
        None | Some(Value::Null) => None,
        Some(s) => Some(schema_grammar("json_schema", s)?),
    };
    let given: Vec<(&'static str, Grammar)> = [
        ("grammar", grammar),
        ("json_schema", schema),
        ("response_format", response_format),
    ]
    .into_iter()
    .filter_map(|(param, g)| Some((param, g?)))
    .collect();
    if given.len() > 1 {
        return Err(ApiError::invalid(
            "grammar",
            "give at most one of grammar, json_schema and response_format",
        ));
    }
    Ok(given.into_iter().next())
}

/// A JSON schema as a grammar: an object (or `true`, any JSON), bounded in size.
fn schema_grammar(param: &str, schema: &Value) -> Result<Grammar, ApiError> {
    match schema {
        Value::Bool(true) => Ok(Grammar::AnyJson),
        Value::Object(o) => {
            check_size(param, schema.to_string().len())?;
            if o.is_empty() {
                // `{}` allows any JSON value; an object is what clients mean by it.
                return Ok(Grammar::AnyJson);
            }
            Ok(Grammar::JsonSchema(schema.clone()))
        }
        other => Err(ApiError::invalid(
            param,
            format!("{param} must be a JSON schema object (got {other})"),
        )),
    }
}

fn check_size(param: &str, len: usize) -> Result<(), ApiError> {
    if len > MAX_GRAMMAR_BYTES {
        return Err(ApiError::invalid(
            param,
            format!("{param} is {len} bytes; the limit is {MAX_GRAMMAR_BYTES}"),
        ));
    }
    Ok(())
}

/// OpenAI's rule for a schema's name: letters, digits, `_` and `-`, at most 64.
fn check_name(param: &str, name: &Value) -> Result<(), ApiError> {
    let ok = name.as_str().is_some_and(|s| {
        !s.is_empty()
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    });
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            param,
            format!("{param} must be 1 to 64 letters, digits, '_' or '-' (got {name})"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rf(v: Value) -> Result<Option<Grammar>, ApiError> {
        openai_response_format("response_format", Some(&v))
    }

    #[test]
    fn openai_shapes() {
        assert_eq!(rf(json!({"type": "text"})).unwrap(), None);
        assert_eq!(
            rf(json!({"type": "json_object"})).unwrap(),
            Some(Grammar::AnyJson)
        );
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        assert_eq!(
            rf(json!({"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": true}}))
                .unwrap(),
            Some(Grammar::JsonSchema(schema.clone()))
        );
        assert_eq!(
            rf(json!({"type": "json_object", "schema": schema})).unwrap(),
            Some(Grammar::JsonSchema(schema))
        );
    }

    #[test]
    fn openai_bad_shapes_name_the_field() {
        let e = rf(json!({"type": "yaml"})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("response_format.type"));
        assert!(e.message.contains("yaml"), "{}", e.message);
        let e = rf(json!("json")).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("response_format"));
        let e = rf(json!({"type": "json_schema"})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("response_format.json_schema"));
        let e = rf(json!({"type": "json_schema", "json_schema": {"schema": 3}})).unwrap_err();
        assert_eq!(
            e.param.as_deref(),
            Some("response_format.json_schema.schema")
        );
        let e = rf(json!({"type": "json_schema", "json_schema": {"name": "a b", "schema": {}}}))
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("response_format.json_schema.name"));
        let huge = "x".repeat(MAX_GRAMMAR_BYTES);
        let e =
            rf(json!({"type": "json_schema", "json_schema": {"schema": {"description": huge}}}))
                .unwrap_err();
        assert!(e.message.contains("limit"), "{}", e.message);
    }

    #[test]
    fn ollama_shapes() {
        assert_eq!(ollama_format(None).unwrap(), None);
        assert_eq!(ollama_format(Some(&json!(""))).unwrap(), None);
        assert_eq!(
            ollama_format(Some(&json!("json"))).unwrap(),
            Some(Grammar::AnyJson)
        );
        let schema = json!({"type": "object", "properties": {"a": {"type": "string"}}});
        assert_eq!(
            ollama_format(Some(&schema)).unwrap(),
            Some(Grammar::JsonSchema(schema))
        );
        let e = ollama_format(Some(&json!("xml"))).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("format"));
        assert!(ollama_format(Some(&json!(7))).is_err());
    }

    #[test]
    fn completion_fields() {
        assert_eq!(
            completion_grammar(Some(&json!("root ::= \"a\"")), None, None).unwrap(),
            Some(("grammar", Grammar::Gbnf("root ::= \"a\"".into())))
        );
        assert_eq!(
            completion_grammar(Some(&json!(" ")), Some(&json!({"type": "object"})), None)
                .unwrap()
                .map(|(param, _)| param),
            Some("json_schema")
        );
        assert_eq!(completion_grammar(None, None, None).unwrap(), None);
        let e = completion_grammar(
            Some(&json!("root ::= \"a\"")),
            Some(&json!({"type": "object"})),
            None,
        )
        .unwrap_err();
        assert!(e.message.contains("at most one"), "{}", e.message);
        assert!(completion_grammar(Some(&json!(1)), None, None).is_err());
    }

    #[test]
    fn responses_format() {
        let schema = json!({"type": "object"});
        assert_eq!(
            responses_text_format(
                "text.format",
                Some(
                    &json!({"type": "json_schema", "name": "r", "schema": schema, "strict": true})
                )
            )
            .unwrap(),
            Some(Grammar::JsonSchema(schema))
        );
        let e = responses_text_format("text.format", Some(&json!({"type": "json_schema"})))
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("text.format.schema"));
        assert_eq!(
            responses_text_format("text.format", Some(&json!({"type": "text"}))).unwrap(),
            None
        );
    }
}
