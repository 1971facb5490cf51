use anyhow::{bail, Context};
use engine::{LogitRows, Session};
use serde::Serialize;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Model: a store name (pulled when absent) or a GGUF file.
    model: String,
    /// Prompt sizes to test (pp): tokens evaluated from an empty cache.
    #[arg(
        short = 'p',
        long = "n-prompt",
        value_delimiter = ',',
        default_value = "512"
    )]
    n_prompt: Vec<usize>,
    /// Tokens to generate one at a time (tg); 0 skips the test.
    #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
    n_gen: usize,
    #[arg(short = 't', long, value_delimiter = ',')]
    threads: Vec<usize>,
    /// Also decode this many sequences together (as `serve --parallel` does); tokens/s counts
    /// the tokens of all of them.
    #[arg(long, default_value_t = 1)]
    parallel: usize,
    /// Repetitions of each test.
    #[arg(short = 'r', long, default_value_t = 3)]
    repetitions: usize,
    /// Print a JSON array of results.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Result {
    test: String,
    threads: usize,
    tokens_per_second: f64,
    stddev: f64,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if a.repetitions == 0 {
        bail!("-r must be at least 1");
    }
    if !(1..=64).contains(&a.parallel) {
        bail!("--parallel must be between 1 and 64");
    }
    let model = super::load_model(&super::resolve_model(&a.model, false)?)?;
    let n_vocab = model.n_vocab() as u32;
    let threads = if a.threads.is_empty() {
        vec![super::thread_pool(None).n_threads()]
    } else {
        a.threads.clone()
    };
    let mut results = Vec::new();
    for &t in &threads {
        let pool = super::thread_pool(Some(t));
        let mut tests: Vec<(String, usize, bool)> = a
            .n_prompt
            .iter()
            .filter(|&&n| n > 0)
            .map(|&n| (format!("pp{n}"), n, true))
            .collect();
        if a.n_gen > 0 {
            tests.push((format!("tg{}", a.n_gen), a.n_gen, false));
        }
        if a.n_gen > 0 && a.parallel > 1 {
            let name = format!("tg{}x{}", a.n_gen, a.parallel);
            let speeds = parallel_decode(&model, &pool, a.n_gen, a.parallel, a.repetitions)?;
            results.push(report(name, pool.n_threads(), &speeds, a.json)?);
        }
        for (name, n, is_prompt) in tests {
            let mut session = model.session(n + 1, pool.clone());
            if session.n_ctx() < n {
                bail!(
                    "{name} needs {n} positions but the model's context is {}",
                    session.n_ctx()
                );
            }
            // Deterministic pseudo-random tokens, as llama-bench uses random ones.
            let tokens: Vec<u32> = (0..n as u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) % n_vocab)
                .collect();
            let mut speeds = Vec::with_capacity(a.repetitions);
            // One warm-up run, then the measured ones.
            for rep in 0..=a.repetitions {
                session.reset();
                let start = Instant::now();
                if is_prompt {
                    session
                        .eval(&tokens, LogitRows::Last)
                        .context("evaluation failed")?;
                } else {
                    for &tok in &tokens {
                        session
                            .eval(&[tok], LogitRows::Last)
                            .context("evaluation failed")?;
                    }
                }
                let secs = start.elapsed().as_secs_f64();
                if rep > 0 {
                    speeds.push(n as f64 / secs);
                }
            }
            results.push(report(name, pool.n_threads(), &speeds, a.json)?);
        }
    }
    if a.json {
        crate::outln!("{}", serde_json::to_string_pretty(&results)?)?;
    }
    Ok(())
}

/// Mean and spread of the measured speeds, printed unless JSON is wanted.
fn report(test: String, threads: usize, speeds: &[f64], json: bool) -> anyhow::Result<Result> {
    let mean = speeds.iter().sum::<f64>() / speeds.len() as f64;
    let var =
        speeds.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (speeds.len().max(2) - 1) as f64;
    let r = Result {
        test,
        threads,
        tokens_per_second: mean,
        stddev: var.sqrt(),
    };
    if !json {
        crate::outln!(
            "{:>8} {:>3} threads {:>10.2} ± {:.2} tokens/s",
            r.test,
            r.threads,
            r.tokens_per_second,
            r.stddev
        )?;
    }
    Ok(r)
}

/// Tokens per second of `parallel` sequences each decoding `n` tokens, one forward pass per
/// step for all of them.
fn parallel_decode(
    model: &engine::Model,
    pool: &std::sync::Arc<kernels::pool::ThreadPool>,
    n: usize,
    parallel: usize,
    repetitions: usize,
) -> anyhow::Result<Vec<f64>> {
    let n_vocab = model.n_vocab() as u32;
    let mut sessions: Vec<Session> = (0..parallel)
        .map(|_| model.session(n + 1, pool.clone()))
        .collect();
    let mut speeds = Vec::with_capacity(repetitions);
    let mut logits = Vec::new();
    for rep in 0..=repetitions {
        for s in &mut sessions {
            s.reset();
        }
        let start = Instant::now();
        for i in 0..n as u32 {
            let toks: Vec<[u32; 1]> = (0..parallel as u32)
                .map(|p| [((i + 31 * p).wrapping_mul(2_654_435_761) >> 7) % n_vocab])
                .collect();
            let slices: Vec<&[u32]> = toks.iter().map(|t| t.as_slice()).collect();
            let mut refs: Vec<&mut Session> = sessions.iter_mut().collect();
            Session::eval_together(&mut refs, &slices, &mut logits).context("evaluation failed")?;
        }
        let secs = start.elapsed().as_secs_f64();
        if rep > 0 {
            speeds.push((n * parallel) as f64 / secs);
        }
    }
    Ok(speeds)
}
