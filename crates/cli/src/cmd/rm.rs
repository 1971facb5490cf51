//! `hearth rm NAME…`: remove models from the store; blobs no other model uses are freed.

use super::pull::{emit, human_bytes};
use store::{ModelName, Store};

#[derive(clap::Args)]
pub struct Args {
    /// Model names (every name is checked before anything is removed).
    #[arg(required = true)]
    names: Vec<String>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let names = a
        .names
        .iter()
        .map(|n| ModelName::parse(n))
        .collect::<Result<Vec<_>, _>>()?;
    let store = Store::open_default()?;
    for name in names {
        let r = store.remove(&name)?;
        if r.bytes_freed > 0 {
            emit(&format!(
                "removed {} (freed {})\n",
                r.name,
                human_bytes(r.bytes_freed)
            ))?;
        } else {
            emit(&format!("removed {}\n", r.name))?;
        }
    }
    Ok(())
}
