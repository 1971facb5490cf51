//! Constrained decoding: a grammar that the generated text must follow (JSON, a JSON schema,
//! a regex, a GBNF or Lark grammar), applied as a stage of the sampler.

/// What the output must match. Compiled against a tokenizer before generation starts.
#[derive(Debug, Clone, PartialEq)]
pub enum Grammar {
    /// Any JSON value whose top level is an object (OpenAI `json_object`, Ollama `"json"`).
    AnyJson,
    /// A JSON value valid under this JSON schema.
    JsonSchema(serde_json::Value),
    /// Text matching this regular expression (whole output).
    Regex(String),
    /// llama.cpp's GBNF (`root ::= ...`).
    Gbnf(String),
    /// llguidance's Lark-like syntax (may embed `%json { schema }`): used for tool calls.
    Lark(String),
}
