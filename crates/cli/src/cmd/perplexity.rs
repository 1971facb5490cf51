use anyhow::Context;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Model: a store name (pulled when absent) or a GGUF file.
    model: String,
    /// Text file to score.
    file: PathBuf,
    /// Tokens per chunk.
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    #[arg(long)]
    threads: Option<usize>,
    /// Print {"perplexity", "chunks", "ctx"} as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("cannot read {} as UTF-8 text", a.file.display()))?;
    // As llama-perplexity reads its file: one trailing newline is dropped.
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let model = super::load_model(&super::resolve_model(&a.model, false)?)?;
    let tokens = model.tokenizer().encode(text, true, false);
    eprintln!(
        "{} tokens, {} chunks of {}",
        tokens.len(),
        tokens.len() / a.ctx.max(1),
        a.ctx
    );
    let result = engine::perplexity::perplexity(
        &model,
        &tokens,
        a.ctx,
        super::cpu_backend(a.threads),
        |done, total, ppl| eprintln!("[{done}/{total}] perplexity so far {ppl:.4}"),
    )?;
    if a.json {
        let out = serde_json::json!({
            "perplexity": result.perplexity,
            "chunks": result.chunks,
            "ctx": result.ctx,
        });
        crate::outln!("{out}")?;
    } else {
        crate::outln!(
            "perplexity: {:.4} ({} chunks of {})",
            result.perplexity,
            result.chunks,
            result.ctx
        )?;
    }
    Ok(())
}
