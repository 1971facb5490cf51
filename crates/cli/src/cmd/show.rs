//! `hearth show NAME|FILE [--json] [--template]`: what a model is, from its manifest and its
//! GGUF metadata; for a preset also its base model, system prompt and options.

use super::pull::{clean, emit, human_bytes};
use anyhow::bail;
use std::path::{Path, PathBuf};
use store::{Manifest, ModelInfo, ModelKind, ModelName, Store};

#[derive(clap::Args)]
pub struct Args {
    /// A model name in the store, or a GGUF file.
    model: String,
    /// Print JSON (the full chat template included).
    #[arg(long)]
    json: bool,
    /// Print only the chat template.
    #[arg(long, conflicts_with = "json")]
    template: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let (manifest, path): (Option<Manifest>, PathBuf) = if Path::new(&a.model).is_file() {
        (None, PathBuf::from(&a.model))
    } else {
        let name = ModelName::parse(&a.model)?;
        let store = Store::open_default()?;
        match store.find(&name)? {
            Some((m, p)) => (Some(m), p),
            None => bail!("{name} is not in the store; get it with `hearth pull {name}`"),
        }
    };
    let info = ModelInfo::read(&path)?;
    // A file given by path is not hashed to find it in the catalog: its template decides.
    let kind = ModelKind::of(&info, manifest.as_ref().map(|m| &m.digest));
    let unsupported = info.architecture.as_deref().and_then(super::unsupported);
    let license = manifest
        .as_ref()
        .and_then(|m| m.license.clone())
        .or_else(|| info.license.clone());

    if a.template {
        match &info.chat_template {
            Some(t) => return emit(&format!("{}\n", clean(t))),
            None => bail!("{} has no chat template", a.model),
        }
    }
    if a.json {
        let v = serde_json::json!({
            "name": manifest.as_ref().map(|m| m.name.to_string()),
            "digest": manifest.as_ref().map(|m| m.digest.to_string()),
            "path": path.display().to_string(),
            "size": info.file_size,
            "modified": manifest.as_ref().map(|m| m.modified.clone()),
            "source": manifest.as_ref().and_then(|m| m.source.clone()),
            "base": manifest.as_ref().and_then(|m| m.base.as_ref().map(ToString::to_string)),
            "system": manifest.as_ref().and_then(|m| m.system.clone()),
            "params": manifest.as_ref().map(|m| m.params.clone()).unwrap_or_default(),
            "license": license,
            "architecture": info.architecture,
            // Whether this hearth can run the architecture (null: the file names none).
            "architecture_supported": info.architecture.as_ref().map(|_| unsupported.is_none()),
            "kind": kind,
            "model_name": info.model_name,
            "size_label": info.size_label,
            "parameters": info.parameters,
            "quantization": info.quantization,
            "context_length": info.context_length,
            "embedding_length": info.embedding_length,
            "block_count": info.block_count,
            "tokenizer": info.tokenizer,
            "chat_template": info.chat_template,
            "gguf_version": info.gguf_version,
            "tensor_count": info.tensor_count,
        });
        return emit(&format!("{}\n", serde_json::to_string_pretty(&v)?));
    }

    let mut rows: Vec<(&str, String)> = Vec::new();
    if let Some(m) = &manifest {
        rows.push(("name", m.name.to_string()));
        rows.push(("digest", m.digest.to_string()));
    }
    rows.push(("path", path.display().to_string()));
    rows.push(("size", human_bytes(info.file_size)));
    let opt = |v: &Option<String>| v.as_deref().map(clean);
    let num = |v: Option<u64>| v.map(|n| n.to_string());
    let params = match &info.size_label {
        Some(l) => format!("{} ({})", info.parameters_human(), clean(l)),
        None => info.parameters_human(),
    };
    let template = info.chat_template.as_ref().map(|t| {
        format!(
            "yes, {} characters (`hearth show {} --template` prints it)",
            t.chars().count(),
            a.model
        )
    });
    let architecture = opt(&info.architecture).map(|arch| match &unsupported {
        Some(_) => format!(
            "{arch} (hearth cannot run it yet; it runs {})",
            super::supported_architectures()
        ),
        None => arch,
    });
    let kind_text = match kind {
        ModelKind::Instruct => "instruct (chats)".to_owned(),
        ModelKind::Base => format!(
            "base (pretrained: continues text and does not chat; `hearth run {} --raw TEXT`)",
            clean(&a.model)
        ),
    };
    let optional: [(&str, Option<String>); 12] = [
        ("model", opt(&info.model_name)),
        ("architecture", architecture),
        ("kind", Some(kind_text)),
        ("parameters", Some(params)),
        ("quantization", opt(&info.quantization)),
        ("context length", num(info.context_length)),
        ("embedding length", num(info.embedding_length)),
        ("layers", num(info.block_count)),
        ("tokenizer", opt(&info.tokenizer)),
        ("chat template", template.or_else(|| Some("none".into()))),
        ("license", opt(&license)),
        (
            "source",
            manifest
                .as_ref()
                .and_then(|m| m.source.as_deref().map(clean)),
        ),
    ];
    rows.extend(optional.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
    if let Some(m) = &manifest {
        if let Some(base) = &m.base {
            rows.push(("base model", base.to_string()));
        }
        if let Some(system) = &m.system {
            rows.push(("system prompt", one_line(system)));
        }
        if !m.params.is_empty() {
            rows.push(("options", clean(&m.params.entries().join(" "))));
        }
    }
    if let Some(m) = &manifest {
        rows.push(("modified", m.modified.clone()));
    }
    // Fixed, so that scripts and people see the same layout for every model.
    let width = "embedding length".len();
    let mut out = String::new();
    for (k, v) in rows {
        out.push_str(&format!("{k:<width$}  {v}\n"));
    }
    emit(&out)
}

/// A system prompt on one line: newlines shown as `⏎`, long ones cut (`--json` has it whole).
fn one_line(text: &str) -> String {
    const MAX: usize = 100;
    let flat: String = clean(&text.replace("\r\n", "\n"))
        .replace('\n', " ⏎ ")
        .replace('\t', " ");
    let n = flat.chars().count();
    if n <= MAX {
        return flat;
    }
    let cut: String = flat.chars().take(MAX).collect();
    format!("{cut}… ({} characters in all)", text.chars().count())
}
