//! Subcommands: one module each.

mod bench;
mod cp;
mod create;
mod fit;
mod format;
mod hw;
mod list;
mod logits;
mod perplexity;
mod privacy;
mod ps;
mod pull;
mod rm;
mod run;
mod serve;
mod show;
mod tokenize;
mod usage;

use clap::{Parser, Subcommand};
use engine::{CpuBackend, SharedBackend};

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
    /// Download a model into the store (progress on stderr): smollm2, gemma3:270m, …
    Pull(pull::Args),
    /// List the models in the store.
    #[command(alias = "ls")]
    List(list::Args),
    /// Describe a model: architecture, parameters, quantization, context length, license.
    Show(show::Args),
    /// Remove models from the store; files no other model uses are deleted.
    Rm(rm::Args),
    /// Give a model a second name (no bytes are copied).
    Cp(cp::Args),
    /// Make a model from a GGUF file, or a preset of another model (system prompt, options).
    Create(create::Args),
    /// Describe this machine: CPU, SIMD and kernel path, memory, GPUs, free disk.
    Hw(hw::Args),
    /// Will a model run here? Memory needed at a context size against memory available.
    Fit(fit::Args),
    /// Serve the OpenAI- and Ollama-compatible HTTP API (127.0.0.1:11434 by default).
    Serve(serve::Args),
    /// Models a running server holds in memory, and when they unload.
    Ps(ps::Args),
    /// What running models here used: tokens, time, energy and its cost, and the cloud price
    /// of the same tokens (from the usage ledger; never any text).
    Usage(usage::Args),
    /// Where hearth keeps its files, what each holds, and whether anything can use the network.
    Privacy(privacy::Args),
}

pub fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(a) => run::run(a),
        Command::Tokenize(a) => tokenize::run(a),
        Command::Logits(a) => logits::run(a),
        Command::Perplexity(a) => perplexity::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Pull(a) => pull::run(a),
        Command::List(a) => list::run(a),
        Command::Show(a) => show::run(a),
        Command::Rm(a) => rm::run(a),
        Command::Cp(a) => cp::run(a),
        Command::Create(a) => create::run(a),
        Command::Hw(a) => hw::run(a),
        Command::Fit(a) => fit::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Usage(a) => usage::run(a),
        Command::Privacy(a) => privacy::run(a),
        Command::Ps(a) => ps::run(a),
    }
}

/// The CPU backend on the flag's thread count, or on every core.
pub fn cpu_backend(threads: Option<usize>) -> SharedBackend {
    let n = threads
        .filter(|&n| n > 0)
        .unwrap_or_else(CpuBackend::default_threads);
    CpuBackend::shared(n)
}

/// Why hearth cannot run models of this `general.architecture` (naming those it can); None
/// when it can. What `fit`, `pull` and `show` tell before a model is loaded.
pub fn unsupported(arch: &str) -> Option<String> {
    engine::arch::find(arch).err().map(|e| e.to_string())
}

/// The architectures hearth runs, for messages: `llama, gemma3`.
pub fn supported_architectures() -> String {
    engine::arch::ARCHITECTURES
        .iter()
        .map(|a| a.name)
        .collect::<Vec<_>>()
        .join(", ")
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

/// The model file for a command's model argument: the path unchanged when it is an existing
/// file, else the store's file for that model name, pulled first when it is absent (never
/// when `offline` or HEARTH_OFFLINE is set: then a missing model is an error).
// Until every model-taking command calls it.
pub fn resolve_model(name_or_path: &str, offline: bool) -> anyhow::Result<std::path::PathBuf> {
    let path = std::path::Path::new(name_or_path);
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    pull::resolve(name_or_path, offline)
}
