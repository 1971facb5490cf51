use anyhow::Context;

#[derive(clap::Args)]
pub struct Args {
    /// Model: a store name (pulled when absent) or a GGUF file; only its tokenizer is used.
    model: String,
    /// Text to tokenize.
    text: String,
    /// Do not add BOS/EOS even if the model's metadata asks for them.
    #[arg(long)]
    no_bos: bool,
    /// Parse special-token text such as <|im_start|> into the special tokens.
    #[arg(long)]
    special: bool,
    /// Print a JSON array of ids instead of one `id<TAB>piece` line per token.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let path = super::resolve_model(&a.model, false)?;
    let file =
        gguf::GgufFile::open(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let tok = engine::tokenizer::Tokenizer::from_gguf(&file)
        .with_context(|| format!("cannot read the tokenizer of {}", path.display()))?;
    let ids = tok.encode(&a.text, !a.no_bos, a.special);
    if a.json {
        crate::outln!("{}", serde_json::to_string(&ids)?)?;
    } else {
        for id in ids {
            let piece = String::from_utf8_lossy(&tok.token_bytes(id, true)).into_owned();
            crate::outln!("{id}\t{piece:?}")?;
        }
    }
    Ok(())
}
