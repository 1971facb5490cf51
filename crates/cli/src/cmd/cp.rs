//! `hearth cp SRC DST [--force]`: a second name for a model; both names use the same blob.

use super::pull::emit;
use store::{ModelName, Store};

#[derive(clap::Args)]
pub struct Args {
    /// The model to copy (its preset settings come along).
    src: String,
    /// The new name.
    dst: String,
    /// Replace DST when it already exists.
    #[arg(long)]
    force: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    // Both names are checked before the store is opened.
    let src = ModelName::parse(&a.src)?;
    let dst = ModelName::parse(&a.dst)?;
    let store = Store::open_default()?;
    let m = store.copy(&src, &dst, a.force)?;
    emit(&format!("copied {src} to {} ({})\n", m.name, m.digest))
}
