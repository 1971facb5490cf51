//! `hearth list [--json]`: the models in the store. A broken manifest is listed as broken;
//! presets show the model they were made from.

use super::pull::{clean, emit, human_bytes};
use serde::Serialize;
use store::{ModelInfo, Store};

#[derive(clap::Args)]
pub struct Args {
    /// Print JSON: {"models": [{name, digest, size, modified, architecture, …, kind, base,
    /// system, params, broken}]}; `kind` is `instruct` or `base` (a pretrained model), `base`
    /// the model a preset was made from.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Row {
    name: String,
    digest: Option<String>,
    size: Option<u64>,
    modified: Option<String>,
    architecture: Option<String>,
    parameters: Option<u64>,
    quantization: Option<String>,
    /// `instruct`, or `base` (pretrained: continues text, does not chat).
    kind: Option<store::ModelKind>,
    path: Option<String>,
    /// For a preset: the model it was made from.
    base: Option<String>,
    system: Option<String>,
    params: Option<store::Params>,
    /// Why the entry is unusable; null when it is fine.
    broken: Option<String>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let store = Store::open_default()?;
    let rows: Vec<Row> = store
        .list()?
        .into_iter()
        .map(|e| match e.model {
            Ok((m, path)) => {
                let info = ModelInfo::read(&path).ok();
                Row {
                    name: e.name,
                    digest: Some(m.digest.to_string()),
                    size: Some(m.size),
                    modified: Some(m.modified.clone()),
                    architecture: info.as_ref().and_then(|i| i.architecture.clone()),
                    parameters: info.as_ref().map(|i| i.parameters),
                    quantization: info.as_ref().and_then(|i| i.quantization.clone()),
                    kind: info
                        .as_ref()
                        .map(|i| store::ModelKind::of(i, Some(&m.digest))),
                    path: Some(path.display().to_string()),
                    base: m.base.as_ref().map(ToString::to_string),
                    system: m.system.clone(),
                    params: Some(m.params.clone()).filter(|p| !p.is_empty()),
                    broken: None,
                }
            }
            Err(why) => Row {
                name: e.name,
                digest: None,
                size: None,
                modified: None,
                architecture: None,
                parameters: None,
                quantization: None,
                kind: None,
                path: None,
                base: None,
                system: None,
                params: None,
                broken: Some(why),
            },
        })
        .collect();
    if a.json {
        let json = serde_json::to_string_pretty(&serde_json::json!({ "models": rows }))?;
        return emit(&format!("{json}\n"));
    }
    let dash = || "-".to_owned();
    // The BASE column appears only when there is a preset to show.
    let with_base = rows.iter().any(|r| r.base.is_some());
    let mut header: Vec<String> = [
        "NAME", "ID", "SIZE", "ARCH", "PARAMS", "QUANT", "KIND", "MODIFIED",
    ]
    .map(String::from)
    .to_vec();
    if with_base {
        header.push("BASE".into());
    }
    let mut table: Vec<Vec<String>> = vec![header];
    let mut broken = Vec::new();
    for r in &rows {
        if let Some(why) = &r.broken {
            broken.push(format!("{}  BROKEN: {}", clean(&r.name), clean(why)));
            continue;
        }
        let mut row = vec![
            clean(&r.name),
            r.digest
                .as_deref()
                .and_then(|d| d.strip_prefix("sha256:"))
                .map(|h| h[..12.min(h.len())].to_owned())
                .unwrap_or_else(dash),
            r.size.map(human_bytes).unwrap_or_else(dash),
            r.architecture.as_deref().map(clean).unwrap_or_else(dash),
            r.parameters
                .map(store::info::human_count)
                .unwrap_or_else(dash),
            r.quantization.as_deref().map(clean).unwrap_or_else(dash),
            r.kind.map(|k| k.to_string()).unwrap_or_else(dash),
            r.modified
                .as_deref()
                .map(|t| t.replacen('T', " ", 1).trim_end_matches('Z').to_owned() + " UTC")
                .unwrap_or_else(dash),
        ];
        if with_base {
            row.push(r.base.as_deref().map(clean).unwrap_or_else(dash));
        }
        table.push(row);
    }
    let mut widths = vec![0usize; table[0].len()];
    for row in &table {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &table {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, &w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    for b in broken {
        out.push_str(&b);
        out.push('\n');
    }
    emit(&out)
}
