use anyhow::{bail, Context};
use engine::LogitRows;
use serde::Serialize;

#[derive(clap::Args)]
pub struct Args {
    /// Model: a store name (pulled when absent) or a GGUF file.
    model: String,
    /// Comma-separated token ids, evaluated as one sequence.
    #[arg(long, value_delimiter = ',', required = true)]
    tokens: Vec<u32>,
    /// How many of the best next tokens to print per position.
    #[arg(long, default_value_t = 5)]
    top: usize,
    #[arg(long)]
    threads: Option<usize>,
    /// Print JSON: one array per position of {"id", "text", "logit"}, best first.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Entry {
    id: u32,
    /// The token as text (control tokens by name), so ids need no lookup.
    text: String,
    logit: f32,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if a.top == 0 {
        bail!("--top must be at least 1");
    }
    let model = super::load_model(&super::resolve_model(&a.model, false)?)?;
    let n_vocab = model.n_vocab();
    if let Some(&bad) = a.tokens.iter().find(|&&t| t as usize >= n_vocab) {
        bail!("token id {bad} is out of range: the model's vocabulary has {n_vocab} tokens");
    }
    let mut session = model.session(a.tokens.len(), super::cpu_backend(a.threads));
    if session.n_ctx() < a.tokens.len() {
        bail!(
            "{} tokens do not fit the model's context of {}",
            a.tokens.len(),
            session.n_ctx()
        );
    }
    let logits = session
        .eval(&a.tokens, LogitRows::All)
        .context("evaluation failed")?;
    let text = |id: u32| model.tokenizer().decode(&[id], true);
    let rows: Vec<Vec<Entry>> = logits
        .chunks_exact(n_vocab)
        .map(|row| top_k(row, a.top, &text))
        .collect();
    if a.json {
        crate::outln!("{}", serde_json::to_string(&rows)?)?;
    } else {
        // Position, the token there, then the best next tokens: id, text, logit.
        for ((pos, row), &input) in rows.iter().enumerate().zip(&a.tokens) {
            let best: Vec<String> = row
                .iter()
                .map(|e| format!("{} {:?} {:.4}", e.id, e.text, e.logit))
                .collect();
            crate::outln!("{pos}\t{input} {:?}\t-> {}", text(input), best.join(" | "))?;
        }
    }
    Ok(())
}

fn top_k(row: &[f32], k: usize, text: &dyn Fn(u32) -> String) -> Vec<Entry> {
    let mut idx: Vec<u32> = (0..row.len() as u32).collect();
    let k = k.min(idx.len());
    let cmp = |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b));
    idx.select_nth_unstable_by(k - 1, cmp);
    idx.truncate(k);
    idx.sort_by(cmp);
    idx.into_iter()
        .map(|id| Entry {
            id,
            text: text(id),
            logit: row[id as usize],
        })
        .collect()
}
