//! `--format json|SCHEMA.json` and `--grammar FILE.gbnf`: the grammar an answer must follow,
//! read and checked before any model is loaded (`run` and `bench` share it).

use anyhow::{bail, Context};
use engine::constraint::{Constraint, Grammar};
use std::path::Path;

/// The flags' grammar. `format`: `json` (any JSON object) or a JSON schema file; `grammar`:
/// a GBNF file. Files are read and parsed here; compiling needs the model's tokenizer.
pub fn grammar_from_flags(
    format: Option<&str>,
    grammar: Option<&Path>,
) -> anyhow::Result<Option<Grammar>> {
    match (format, grammar) {
        (Some(_), Some(_)) => bail!("--format and --grammar cannot be used together"),
        (Some("json"), None) => Ok(Some(Grammar::AnyJson)),
        (Some(path), None) => {
            let p = Path::new(path);
            if !p.is_file() {
                bail!(
                    "--format: expected `json` or a JSON schema file, and {path:?} is not a \
                     file"
                );
            }
            let text = read(p, "--format")?;
            let schema: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("--format: {path} is not JSON"))?;
            if !(schema.is_object() || schema.is_boolean()) {
                bail!(
                    "--format: {path} is not a JSON schema: a schema is a JSON object such as \
                     {{\"type\": \"object\", \"properties\": {{…}}}}"
                );
            }
            Ok(Some(Grammar::JsonSchema(schema)))
        }
        (None, Some(p)) => {
            let text = read(p, "--grammar")?;
            Ok(Some(Grammar::Gbnf(text)))
        }
        (None, None) => Ok(None),
    }
}

/// Grammar files are small; a huge one is a mistake (or a device).
const MAX_GRAMMAR_FILE: u64 = 4 << 20;

fn read(p: &Path, flag: &str) -> anyhow::Result<String> {
    let meta =
        std::fs::metadata(p).with_context(|| format!("{flag}: cannot read {}", p.display()))?;
    if !meta.is_file() {
        bail!("{flag}: {} is not a file", p.display());
    }
    if meta.len() > MAX_GRAMMAR_FILE {
        bail!(
            "{flag}: {} is {} bytes; grammar and schema files are at most {MAX_GRAMMAR_FILE}",
            p.display(),
            meta.len()
        );
    }
    std::fs::read_to_string(p).with_context(|| format!("{flag}: cannot read {}", p.display()))
}

/// Compiles `grammar` for `model`'s vocabulary; the error names the flag.
pub fn compile(model: &engine::Model, grammar: &Grammar, flag: &str) -> anyhow::Result<Constraint> {
    Constraint::new(model.tokenizer(), grammar).map_err(|e| anyhow::anyhow!("{flag}: {e}"))
}
