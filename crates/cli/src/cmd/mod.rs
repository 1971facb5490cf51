//! Subcommands: one module each.

mod bench;
mod logits;
mod perplexity;
mod run;
mod tokenize;

use clap::{Parser, Subcommand};
use kernels::pool::ThreadPool;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "hearth",
    version,
    about = "Run open-weight language models (GGUF) locally"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt.
    Run(run::Args),
    /// Print the token ids of a text.
    Tokenize(tokenize::Args),
    /// Evaluate token ids as one sequence and print the top next-token logits at every position.
    Logits(logits::Args),
    /// Perplexity of a text file, computed as llama-perplexity does.
    Perplexity(perplexity::Args),
    /// Measure prompt (pp) and generation (tg) speed, as llama-bench defines them.
    Bench(bench::Args),
}

pub fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(a) => run::run(a),
        Command::Tokenize(a) => tokenize::run(a),
        Command::Logits(a) => logits::run(a),
        Command::Perplexity(a) => perplexity::run(a),
        Command::Bench(a) => bench::run(a),
    }
}

/// Thread count: the flag, or the machine's cores.
pub fn thread_pool(threads: Option<usize>) -> Arc<ThreadPool> {
    let n = threads
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    Arc::new(ThreadPool::new(n))
}

/// Loads a model, saying which file failed.
pub fn load_model(path: &std::path::Path) -> anyhow::Result<engine::Model> {
    use anyhow::Context;
    engine::Model::load(path).with_context(|| format!("cannot load model {}", path.display()))
}

/// Peak resident memory of this process (Linux: VmHWM), if the platform tells.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
