//! Constrained decoding: a grammar that the generated text must follow (JSON, a JSON schema,
//! a regex, a GBNF or Lark grammar), applied as a stage of the sampler.
//!
//! A [`Grammar`] is compiled against a tokenizer into a [`Constraint`] (one per sequence) by
//! llguidance. Each step the constraint gives the [`TokenMask`] of tokens that keep the text
//! valid; the mask runs ahead of the sampler chain, so greedy picks the best allowed token.
//! End-of-generation tokens are allowed only where the grammar accepts the text as complete.
//! The token trie and parser factory are built once per tokenizer and cached in it.

mod env;
pub mod gbnf;

pub(crate) use env::EnvCache;

use crate::sampler::{Candidates, SamplerStage};
use crate::tokenizer::Tokenizer;
use env::Shared;
use llguidance::api::TopLevelGrammar;
use llguidance::Matcher;
use std::sync::Arc;
use std::time::Duration;
use toktrie::SimpleVob;

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

/// JSON nesting allowed in a schema (serde_json's own parser stops at 128).
pub const MAX_SCHEMA_DEPTH: usize = 100;

/// Why a grammar could not be compiled, or failed while generating.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConstraintError {
    #[error(
        "invalid JSON schema: {message} (give a JSON object schema using type, properties, \
         required, items, enum, const, anyOf, minimum/maximum, minLength/maxLength, pattern, …)"
    )]
    Schema { message: String },
    #[error(
        "invalid regular expression: {message} (Rust regex syntax; it must match the whole \
         output)"
    )]
    Regex { message: String },
    #[error(
        "invalid GBNF grammar at line {line}, column {column}: {message} (rules are written \
         `name ::= alternatives`, and the grammar starts at `root`)"
    )]
    Gbnf {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("invalid {syntax} grammar: {message} (fix the grammar and try again)")]
    Grammar {
        /// "GBNF" or "Lark".
        syntax: &'static str,
        message: String,
    },
    #[error("this model's vocabulary cannot be used for constrained decoding: {message}")]
    Vocabulary { message: String },
    #[error("the output constraint failed while generating: {message}")]
    Generation { message: String },
}

impl Grammar {
    /// llguidance's form of the grammar.
    fn to_llguidance(&self) -> Result<TopLevelGrammar, ConstraintError> {
        Ok(match self {
            Grammar::AnyJson => json_grammar(&serde_json::json!({ "type": "object" }))?,
            Grammar::JsonSchema(schema) => json_grammar(schema)?,
            Grammar::Regex(rx) => {
                if rx.is_empty() {
                    return Err(ConstraintError::Regex {
                        message: "the regular expression is empty".into(),
                    });
                }
                TopLevelGrammar::from_regex(rx)
            }
            Grammar::Gbnf(text) => {
                let lark = gbnf::to_lark(text).map_err(|e| ConstraintError::Gbnf {
                    line: e.line,
                    column: e.column,
                    message: e.message,
                })?;
                TopLevelGrammar::from_lark(lark)
            }
            Grammar::Lark(text) => {
                if text.trim().is_empty() {
                    return Err(ConstraintError::Grammar {
                        syntax: "Lark",
                        message: "the grammar is empty".into(),
                    });
                }
                TopLevelGrammar::from_lark(text.clone())
            }
        })
    }

    /// The error for a message from llguidance about this grammar.
    fn error(&self, message: String) -> ConstraintError {
        let message = clean(&message);
        match self {
            Grammar::AnyJson | Grammar::JsonSchema(_) => ConstraintError::Schema { message },
            Grammar::Regex(_) => ConstraintError::Regex { message },
            Grammar::Gbnf(_) => ConstraintError::Grammar {
                syntax: "GBNF",
                message,
            },
            Grammar::Lark(_) => ConstraintError::Grammar {
                syntax: "Lark",
                message,
            },
        }
    }
}

/// A JSON schema with hearth's formatting: `", "` and `": "` between items, no other
/// whitespace (small models otherwise loop on free whitespace), `oneOf` read as `anyOf`.
fn json_grammar(schema: &serde_json::Value) -> Result<TopLevelGrammar, ConstraintError> {
    let bad = |message: &str| ConstraintError::Schema {
        message: message.to_string(),
    };
    if depth(schema) > MAX_SCHEMA_DEPTH {
        return Err(bad(&format!(
            "the schema is nested deeper than {MAX_SCHEMA_DEPTH} levels"
        )));
    }
    let mut schema = match schema {
        serde_json::Value::Bool(true) => serde_json::json!({}),
        serde_json::Value::Bool(false) => return Err(bad("the schema `false` accepts nothing")),
        serde_json::Value::Object(_) => schema.clone(),
        _ => return Err(bad("a schema is a JSON object (or `true`)")),
    };
    set_json_style(&mut schema);
    Ok(TopLevelGrammar::from_json_schema(schema))
}

/// Gives a schema object hearth's JSON formatting (see [`json_grammar`]); also for the
/// `%json` rules of Lark grammars such as the forced tool call's.
pub fn set_json_style(schema: &mut serde_json::Value) {
    if let Some(obj) = schema.as_object_mut() {
        obj.insert(
            "x-guidance".into(),
            serde_json::json!({
                "whitespace_flexible": false,
                "item_separator": ", ",
                "key_separator": ": ",
                "coerce_one_of": true,
            }),
        );
    }
}

/// Nesting depth of a JSON value, without recursion.
fn depth(v: &serde_json::Value) -> usize {
    let mut max = 0;
    let mut stack = vec![(v, 1usize)];
    while let Some((v, d)) = stack.pop() {
        max = max.max(d);
        match v {
            serde_json::Value::Array(a) => stack.extend(a.iter().map(|x| (x, d + 1))),
            serde_json::Value::Object(o) => stack.extend(o.values().map(|x| (x, d + 1))),
            _ => {}
        }
    }
    max
}

/// How long building the token trie and parser factory took for `tokenizer` (built now when
/// it was not yet; later calls return the first build's time).
pub fn prepare(tokenizer: &Tokenizer) -> Result<Duration, ConstraintError> {
    shared(tokenizer).map(|s| s.build_time)
}

fn shared(tokenizer: &Tokenizer) -> Result<Arc<Shared>, ConstraintError> {
    tokenizer
        .constraint_env()
        .get(tokenizer)
        .map_err(|message| ConstraintError::Vocabulary { message })
}

/// A compiled grammar following one sequence: which tokens may come next, and whether the
/// text so far is complete.
#[derive(Clone)]
pub struct Constraint {
    matcher: Matcher,
    shared: Arc<Shared>,
    /// Tokens consumed.
    consumed: usize,
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint")
            .field("consumed", &self.consumed)
            .field("stopped", &self.matcher.is_stopped())
            .field("error", &self.matcher.get_error())
            .finish()
    }
}

impl Constraint {
    /// Compiles `grammar` for `tokenizer`'s vocabulary.
    pub fn new(tokenizer: &Tokenizer, grammar: &Grammar) -> Result<Constraint, ConstraintError> {
        let shared = shared(tokenizer)?;
        let top = grammar.to_llguidance()?;
        let parser = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            shared.factory.create_parser(top)
        }))
        .map_err(|_| grammar.error("the grammar compiler failed".into()))?
        .map_err(|e| grammar.error(e.to_string()))?;
        let mut matcher = Matcher::new(Ok(parser));
        // A grammar that fails at its first step, or accepts nothing, is a bad grammar.
        let first = matcher.compute_mask().map_err(|e| {
            grammar.error(format!(
                "it fails at its first step ({})",
                clean(&e.to_string())
            ))
        })?;
        let accepting = matcher
            .is_accepting()
            .map_err(|e| grammar.error(e.to_string()))?;
        if first.is_zero() && !accepting {
            return Err(grammar.error("it accepts no text at all".into()));
        }
        Ok(Constraint {
            matcher,
            shared,
            consumed: 0,
        })
    }

    /// The tokens allowed next: those that keep the text a valid prefix, and every
    /// end-of-generation token where the text is complete.
    pub fn mask(&mut self) -> Result<TokenMask, ConstraintError> {
        let mut allowed = self.matcher.compute_mask().map_err(generation)?;
        let accepting = self.matcher.is_accepting().map_err(generation)?;
        for &t in &self.shared.eog {
            if accepting {
                allowed.allow_token(t);
            } else {
                allowed.disallow_token(t);
            }
        }
        Ok(TokenMask {
            allowed,
            n_vocab: self.shared.n_vocab,
        })
    }

    /// Moves past `token` (which the mask allowed).
    pub fn consume(&mut self, token: u32) -> Result<(), ConstraintError> {
        if self.shared.eog.binary_search(&token).is_ok() {
            // Our end-of-generation tokens all stand for llguidance's EOS.
            let eos = self.matcher.tok_env().map_err(generation)?.eos_token();
            self.matcher.consume_token(eos).map_err(generation)?;
        } else {
            self.matcher.consume_token(token).map_err(generation)?;
        }
        self.consumed += 1;
        Ok(())
    }

    /// Whether the text is complete and nothing more can follow (or the matcher failed).
    pub fn is_finished(&self) -> bool {
        self.matcher.is_stopped()
    }

    /// Whether the text so far is a complete match (an end-of-generation token is allowed).
    pub fn is_accepting(&mut self) -> bool {
        self.matcher.is_accepting().unwrap_or(false)
    }

    /// The matcher's error, once it failed.
    pub fn error(&self) -> Option<String> {
        self.matcher.get_error()
    }
}

fn generation(e: impl std::fmt::Display) -> ConstraintError {
    ConstraintError::Generation {
        message: clean(&e.to_string()),
    }
}

/// llguidance's message without the placeholder it adds when verbose errors are off.
fn clean(message: &str) -> String {
    message
        .lines()
        .filter(|l| l.trim() != "<non-verbose/>")
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_string()
}

/// The set of tokens a constraint allows next, as a [`SamplerStage`] that drops the others.
#[derive(Clone)]
pub struct TokenMask {
    allowed: SimpleVob,
    n_vocab: usize,
}

impl std::fmt::Debug for TokenMask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenMask({} allowed)", self.allowed.num_set())
    }
}

impl TokenMask {
    pub fn allows(&self, token: u32) -> bool {
        (token as usize) < self.n_vocab && self.allowed.is_allowed(token)
    }

    /// How many tokens are allowed.
    pub fn count(&self) -> usize {
        self.allowed.num_set()
    }

    /// The lowest allowed id.
    pub fn first(&self) -> Option<u32> {
        self.allowed.first_bit_set().map(|t| t as u32)
    }
}

impl SamplerStage for TokenMask {
    fn apply(&mut self, candidates: &mut Candidates) {
        let mask = &*self;
        candidates.retain(|id| mask.allows(id));
    }

    fn name(&self) -> &'static str {
        "constraint"
    }
}
