use anyhow::Context;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Model file (GGUF); only its tokenizer is used.
    model: PathBuf,
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
    let file = gguf::GgufFile::open(&a.model)
        .with_context(|| format!("cannot read {}", a.model.display()))?;
    let tok = engine::tokenizer::Tokenizer::from_gguf(&file)
        .with_context(|| format!("cannot read the tokenizer of {}", a.model.display()))?;
    let ids = tok.encode(&a.text, !a.no_bos, a.special);
    if a.json {
        println!("{}", serde_json::to_string(&ids)?);
    } else {
        for id in ids {
            let piece = String::from_utf8_lossy(&tok.token_bytes(id, true)).into_owned();
            println!("{id}\t{piece:?}");
        }
    }
    Ok(())
}
