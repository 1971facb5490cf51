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
    /// Tokens already in the cache when each test starts (evaluated first, not timed), as
    /// llama-bench's `-d`: attention's cost grows with it.
    #[arg(
        short = 'd',
        long = "n-depth",
        value_delimiter = ',',
        default_value = "0"
    )]
    n_depth: Vec<usize>,
    /// Also decode this many sequences together (as `serve --parallel` does), at each depth;
    /// tokens/s counts the tokens of all of them.
    #[arg(long, default_value_t = 1)]
    parallel: usize,
    /// Repetitions of each test.
    #[arg(short = 'r', long, default_value_t = 3)]
    repetitions: usize,
    /// Print a JSON array of results.
    #[arg(long)]
    json: bool,
    /// Also measure how fast memory reads at each thread count (before and after its tests,
    /// the faster counting; a few seconds each), and say what share of it each generation
    /// test used: a token reads every weight once, so that rate over the bytes a token reads
    /// bounds tokens/s.
    #[arg(long)]
    bandwidth: bool,
}

#[derive(Serialize)]
struct Result {
    #[serde(flatten)]
    model: ModelColumns,
    test: String,
    threads: usize,
    tokens_per_second: f64,
    stddev: f64,
    /// Generation tests: the bytes one token reads (weights, and the KV cache at the test's
    /// mean depth).
    #[serde(skip_serializing_if = "Option::is_none")]
    read_bytes_per_token: Option<u64>,
    /// With `--bandwidth`: how fast memory reads on this many threads.
    #[serde(skip_serializing_if = "Option::is_none")]
    memory_read_bytes_per_second: Option<f64>,
}

/// What was measured, as llama-bench's first columns say it: the model, its quantization,
/// size and parameters, and the kernels that ran it.
#[derive(Serialize, Clone)]
struct ModelColumns {
    model: String,
    quantization: String,
    size_bytes: u64,
    parameters: u64,
    kernels: String,
}

impl ModelColumns {
    fn of(model: &engine::Model) -> ModelColumns {
        let info = store::ModelInfo::of(model.file());
        let arch = info.architecture.clone().unwrap_or_else(|| "?".into());
        let name = match (&info.model_name, &info.size_label) {
            (Some(n), _) => n.clone(),
            (None, Some(size)) => format!("{arch} {size}"),
            (None, None) => format!("{arch} {}", info.parameters_human()),
        };
        let k = crate::insight::system::kernel_path();
        let packed = kernels::packed::Kernel::best();
        let kernels = if packed == kernels::packed::Kernel::Scalar {
            k.name.to_owned()
        } else {
            format!("{} packed-{}", k.name, packed.name())
        };
        ModelColumns {
            model: name,
            quantization: info.quantization.clone().unwrap_or_else(|| "?".into()),
            size_bytes: info.file_size,
            parameters: info.parameters,
            kernels,
        }
    }
}

/// The table's columns: (title, width; negative = left-aligned).
const COLUMNS: [(&str, i32); 8] = [
    ("model", -28),
    ("quant", -7),
    ("size", 10),
    ("params", 8),
    ("kernels", -18),
    ("threads", 7),
    ("test", 9),
    ("t/s", 20),
];

/// One row of the table in llama-bench's markdown layout.
fn table_row(cells: &[String]) -> String {
    let mut line = String::from("|");
    for (cell, (_, w)) in cells.iter().zip(COLUMNS) {
        let width = w.unsigned_abs() as usize;
        if w < 0 {
            line.push_str(&format!(" {cell:<width$} |"));
        } else {
            line.push_str(&format!(" {cell:>width$} |"));
        }
    }
    line
}

fn print_header() -> anyhow::Result<()> {
    let titles: Vec<String> = COLUMNS.iter().map(|c| c.0.to_owned()).collect();
    let rules: Vec<String> = COLUMNS
        .iter()
        .map(|&(_, w)| {
            let width = w.unsigned_abs() as usize;
            match w < 0 {
                true => "-".repeat(width),
                false => format!("{}:", "-".repeat(width - 1)),
            }
        })
        .collect();
    crate::outln!("{}\n{}", table_row(&titles), table_row(&rules))?;
    Ok(())
}

/// `91800000` → `87.55 MiB`, as llama-bench writes sizes.
fn size_text(bytes: u64) -> String {
    let mib = bytes as f64 / (1024.0 * 1024.0);
    if mib >= 1024.0 {
        format!("{:.2} GiB", mib / 1024.0)
    } else if mib >= 1.0 {
        format!("{mib:.2} MiB")
    } else {
        format!("{:.2} KiB", bytes as f64 / 1024.0)
    }
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if a.repetitions == 0 {
        bail!("-r must be at least 1");
    }
    if !(1..=64).contains(&a.parallel) {
        bail!("--parallel must be between 1 and 64");
    }
    let model = super::load_model(&super::resolve_model(&a.model, false)?)?;
    let columns = ModelColumns::of(&model);
    // Every test must fit the model's context (checked before the table starts).
    let longest_test = a
        .n_prompt
        .iter()
        .copied()
        .chain([a.n_gen])
        .max()
        .unwrap_or(0);
    let n_ctx = model.config().n_ctx_train;
    for &depth in &a.n_depth {
        if depth.checked_add(longest_test).is_none_or(|n| n > n_ctx) {
            bail!(
                "a test at depth {depth} needs {depth} + {longest_test} positions but the \
                 model's context is {n_ctx}: lower -d, -p or -n"
            );
        }
    }
    // What a generated token reads; None where the estimate cannot read the model's shape.
    let reads = crate::insight::estimate::estimate(model.file(), 1).ok();
    let read_bytes_per_token = |depth: usize, n: usize| {
        reads.as_ref().map(|e| {
            let mean_depth = (depth + n / 2) as u64;
            e.decode_read_bytes + e.kv_bytes_per_token * mean_depth
        })
    };
    if !a.json {
        print_header()?;
    }
    let threads = if a.threads.is_empty() {
        vec![super::cpu_backend(None).threads()]
    } else {
        a.threads.clone()
    };
    let mut results = Vec::new();
    for &t in &threads {
        let backend = super::cpu_backend(Some(t));
        // Probed before and after this thread count's tests; the faster counts (others' load
        // on a shared machine only ever slows a probe), so the bound is the least stale. Only
        // generation tests use it.
        let probe = || match a.bandwidth && a.n_gen > 0 {
            true => crate::insight::bandwidth::probe(backend.threads())
                .map(|m| Some(m.bytes_per_second)),
            false => Ok(None),
        };
        let memory_read_before = probe()?;
        let first_of_these = results.len();
        let mut tests: Vec<(String, usize, bool)> = a
            .n_prompt
            .iter()
            .filter(|&&n| n > 0)
            .map(|&n| (format!("pp{n}"), n, true))
            .collect();
        if a.n_gen > 0 {
            tests.push((format!("tg{}", a.n_gen), a.n_gen, false));
        }
        let at_depth = |name: &str, depth: usize| match depth {
            0 => name.to_owned(),
            d => format!("{name} @ d{d}"),
        };
        if a.n_gen > 0 && a.parallel > 1 {
            for &depth in &a.n_depth {
                let name = at_depth(&format!("tg{}x{}", a.n_gen, a.parallel), depth);
                let speeds =
                    parallel_decode(&model, &backend, depth, a.n_gen, a.parallel, a.repetitions)
                        .with_context(|| format!("{name} failed"))?;
                results.push(report(&columns, name, backend.threads(), &speeds, a.json)?);
            }
        }
        for &depth in &a.n_depth {
            for (name, n, is_prompt) in &tests {
                let name = at_depth(name, depth);
                let speeds = time_test(&model, &backend, depth, *n, *is_prompt, a.repetitions)
                    .with_context(|| format!("{name} failed"))?;
                let mut r = report(&columns, name, backend.threads(), &speeds, a.json)?;
                if !is_prompt {
                    r.read_bytes_per_token = read_bytes_per_token(depth, *n);
                }
                results.push(r);
            }
        }
        if let Some(before) = memory_read_before {
            let best = probe()?.map_or(before, |after| after.max(before));
            for r in &mut results[first_of_these..] {
                if r.read_bytes_per_token.is_some() {
                    r.memory_read_bytes_per_second = Some(best);
                }
            }
        }
    }
    if a.json {
        crate::outln!("{}", serde_json::to_string_pretty(&results)?)?;
    } else if a.bandwidth {
        crate::outln!()?;
        for r in &results {
            if let Some(line) = bandwidth_line(r) {
                crate::outln!("{line}")?;
            }
        }
    }
    Ok(())
}

/// How much of the memory's read rate a generation test used, and the tokens/s that rate
/// allows at most; `None` for tests without both figures.
fn bandwidth_line(r: &Result) -> Option<String> {
    let (bytes, memory) = (r.read_bytes_per_token?, r.memory_read_bytes_per_second?);
    let used = r.tokens_per_second * bytes as f64;
    let threads = if r.threads == 1 { "thread" } else { "threads" };
    let share = if used > memory {
        // The probe ran while others loaded the memory harder than during the test.
        format!(
            "faster than the {} the probe measured before and after it (the memory was \
             busier then)",
            crate::insight::bandwidth::rate_text(memory)
        )
    } else {
        format!(
            "{:.0}% of the {} memory reads; at most {:.1} t/s",
            100.0 * used / memory,
            crate::insight::bandwidth::rate_text(memory),
            memory / bytes.max(1) as f64,
        )
    };
    Some(format!(
        "{} on {} {threads}: {} read ({} a token), {share}",
        r.test,
        r.threads,
        crate::insight::bandwidth::rate_text(used),
        crate::insight::human(bytes),
    ))
}

/// Tokens per second of each repetition of one test: `n` tokens in one batch (a prompt) or
/// one at a time, after `depth` tokens that are evaluated but not timed.
fn time_test(
    model: &engine::Model,
    backend: &engine::SharedBackend,
    depth: usize,
    n: usize,
    is_prompt: bool,
    repetitions: usize,
) -> anyhow::Result<Vec<f64>> {
    let n_vocab = model.n_vocab() as u32;
    // `run` checked that depth + n fits the model's context.
    let mut session = model.session(depth + n + 1, backend.clone());
    // Deterministic pseudo-random tokens, as llama-bench uses random ones.
    let tokens: Vec<u32> = (0..(depth + n) as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) % n_vocab)
        .collect();
    let (context, timed) = tokens.split_at(depth);
    let mut speeds = Vec::with_capacity(repetitions);
    // One warm-up run, then the measured ones.
    for rep in 0..=repetitions {
        session.reset();
        if !context.is_empty() {
            session.eval(context, LogitRows::Last)?;
        }
        let start = Instant::now();
        if is_prompt {
            session.eval(timed, LogitRows::Last)?;
        } else {
            for &tok in timed {
                session.eval(&[tok], LogitRows::Last)?;
            }
        }
        let secs = start.elapsed().as_secs_f64();
        if rep > 0 {
            speeds.push(n as f64 / secs);
        }
    }
    Ok(speeds)
}

/// Mean and spread of the measured speeds, printed unless JSON is wanted.
fn report(
    model: &ModelColumns,
    test: String,
    threads: usize,
    speeds: &[f64],
    json: bool,
) -> anyhow::Result<Result> {
    let mean = speeds.iter().sum::<f64>() / speeds.len() as f64;
    let var =
        speeds.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (speeds.len().max(2) - 1) as f64;
    let r = Result {
        model: model.clone(),
        test,
        threads,
        tokens_per_second: mean,
        stddev: var.sqrt(),
        read_bytes_per_token: None,
        memory_read_bytes_per_second: None,
    };
    if !json {
        let m = &r.model;
        let cells = [
            m.model.clone(),
            m.quantization.clone(),
            size_text(m.size_bytes),
            store::info::human_count(m.parameters),
            m.kernels.clone(),
            r.threads.to_string(),
            r.test.clone(),
            format!("{:.2} ± {:.2}", r.tokens_per_second, r.stddev),
        ];
        crate::outln!("{}", table_row(&cells))?;
    }
    Ok(r)
}

/// Tokens per second of `parallel` sequences each decoding `n` tokens, one forward pass per
/// step for all of them, after each has `depth` tokens of its own in its cache (evaluated,
/// not timed).
fn parallel_decode(
    model: &engine::Model,
    backend: &engine::SharedBackend,
    depth: usize,
    n: usize,
    parallel: usize,
    repetitions: usize,
) -> anyhow::Result<Vec<f64>> {
    let n_vocab = model.n_vocab() as u32;
    // Sequence p's token at position i: deterministic pseudo-random, different per sequence.
    let token = |p: usize, i: usize| {
        ((i as u32)
            .wrapping_add(31 * p as u32)
            .wrapping_mul(2_654_435_761)
            >> 7)
            % n_vocab
    };
    // `run` checked that depth + n fits the model's context.
    let mut sessions: Vec<Session> = (0..parallel)
        .map(|_| model.session(depth + n + 1, backend.clone()))
        .collect();
    let mut speeds = Vec::with_capacity(repetitions);
    let mut logits = Vec::new();
    for rep in 0..=repetitions {
        for (p, s) in sessions.iter_mut().enumerate() {
            s.reset();
            if depth > 0 {
                let context: Vec<u32> = (0..depth).map(|i| token(p, i)).collect();
                s.eval(&context, LogitRows::Last)?;
            }
        }
        let start = Instant::now();
        for i in depth..depth + n {
            let toks: Vec<[u32; 1]> = (0..parallel).map(|p| [token(p, i)]).collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tg(tokens_per_second: f64, memory: Option<f64>) -> Result {
        Result {
            model: ModelColumns {
                model: "m".into(),
                quantization: "Q4_K".into(),
                size_bytes: 0,
                parameters: 0,
                kernels: "scalar".into(),
            },
            test: "tg64".into(),
            threads: 2,
            tokens_per_second,
            stddev: 0.0,
            read_bytes_per_token: Some(500 << 20),
            memory_read_bytes_per_second: memory,
        }
    }

    #[test]
    fn the_bandwidth_line_gives_the_share_and_the_bound() {
        // 40 t/s of 500 MiB: 20.97 GB/s of a 30 GB/s probe.
        let line = bandwidth_line(&tg(40.0, Some(30e9))).unwrap();
        assert_eq!(
            line,
            "tg64 on 2 threads: 21.0 GB/s read (500.0 MiB a token), 70% of the 30.0 GB/s \
             memory reads; at most 57.2 t/s"
        );
        assert!(bandwidth_line(&tg(40.0, None)).is_none());
    }

    #[test]
    fn a_test_faster_than_the_probe_is_not_given_a_bound_it_broke() {
        let line = bandwidth_line(&tg(80.0, Some(30e9))).unwrap();
        assert!(!line.contains("at most") && !line.contains('%'), "{line}");
        assert!(
            line.contains("faster than the 30.0 GB/s the probe measured"),
            "{line}"
        );
    }
}
