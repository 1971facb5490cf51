use anyhow::{bail, Context};
use engine::generate::{GenerateOptions, Generator};
use engine::sampler::SamplerConfig;
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Model file (GGUF).
    model: PathBuf,
    /// The prompt.
    prompt: String,
    /// Use the prompt as it is, without the chat template (BOS as the model's metadata says).
    #[arg(long)]
    raw: bool,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    #[arg(long, default_value_t = 0.05)]
    min_p: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Tokens to generate at most.
    #[arg(short = 'n', long = "max-tokens", default_value_t = 256)]
    max_tokens: usize,
    /// Context size in tokens.
    #[arg(long, default_value_t = 4096)]
    ctx: usize,
    #[arg(long)]
    threads: Option<usize>,
    /// Timings and model details on stderr.
    #[arg(long)]
    verbose: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if !a.raw {
        bail!("chat templates are not supported yet: pass --raw to use the prompt as it is");
    }
    if !(a.temperature >= 0.0 && a.temperature.is_finite()) {
        bail!(
            "--temperature must be a finite number >= 0 (got {})",
            a.temperature
        );
    }
    if !(0.0..=1.0).contains(&a.top_p) || !(0.0..=1.0).contains(&a.min_p) {
        bail!("--top-p and --min-p must be between 0 and 1");
    }
    if a.ctx == 0 {
        bail!("--ctx must be at least 1");
    }
    let model = super::load_model(&a.model)?;
    let pool = super::thread_pool(a.threads);
    let n_threads = pool.n_threads();
    // Special-token text in a raw prompt is parsed, as llama-cli does, so chat markup works.
    let prompt = model.tokenizer().encode(&a.prompt, true, true);
    let mut session = model.session(a.ctx, pool);
    if prompt.len() >= session.n_ctx() {
        bail!(
            "the prompt has {} tokens but the context holds {}: use a larger --ctx",
            prompt.len(),
            session.n_ctx()
        );
    }
    let opts = GenerateOptions {
        max_tokens: a.max_tokens,
        sampler: SamplerConfig {
            temperature: a.temperature,
            top_k: a.top_k,
            top_p: a.top_p,
            min_p: a.min_p,
            seed: a.seed,
        },
        stop_at_eog: true,
        render_special: false,
    };
    let kv_bytes = session.kv_bytes();
    let mut gen =
        Generator::new(&mut session, &prompt, opts).context("prompt evaluation failed")?;
    let mut out = std::io::stdout().lock();
    for piece in gen.by_ref() {
        out.write_all(piece?.as_bytes())?;
        out.flush()?;
    }
    writeln!(out)?;
    if a.verbose {
        let t = gen.timings();
        eprintln!(
            "prompt: {} tokens, {:.1} tokens/s; generated: {} tokens, {:.1} tokens/s; {} threads",
            t.prompt_tokens,
            t.prompt_tokens_per_second(),
            t.generated_tokens,
            t.generation_tokens_per_second(),
            n_threads
        );
        if let Some(peak) = super::peak_rss_bytes() {
            eprintln!(
                "memory: peak RSS {} bytes ({:.1} MiB); model file {:.1} MiB, KV cache {:.1} MiB",
                peak,
                mib(peak),
                mib(model.file().file_size()),
                mib(kv_bytes as u64)
            );
        }
    }
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
