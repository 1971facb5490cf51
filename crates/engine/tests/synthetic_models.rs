//! End-to-end check of every weight format in both architectures against llama.cpp.
//!
//! `tests/data/synthetic/` holds tiny random-weight GGUF models (one `llama` model per format,
//! `gemma3` models for a few) and, for each, llama.cpp's logits for every position of a fixed
//! token sequence (`<name>.logits.json`, made by `scripts/golden/make_synthetic.py`). Each model
//! is loaded and evaluated here and its logits compared with llama.cpp's.
//!
//! The tolerance is tied to how well llama.cpp agrees with itself (flash attention on vs off,
//! recorded in the JSON): quantized formats quantize activations before every product, and a
//! tiny difference in an activation flips roundings, so llama.cpp's own two attention paths
//! differ by up to ~0.2 on quantized models but by ~0.01 on float ones.

use engine::{CpuBackend, SharedBackend};
use engine::{LogitRows, Model};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Every format must run in a llama model; these must also run in a gemma3 one.
const LLAMA_FORMATS: &[&str] = &[
    "F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K",
    "Q6_K",
];
const GEMMA3_FORMATS: &[&str] = &["Q4_K", "Q8_0", "F16"];

/// Tolerances relative to llama.cpp's own disagreement (flash attention on vs off).
const MAX_FACTOR: f64 = 3.0;
const MAX_FLOOR: f64 = 0.05;
const MEAN_FACTOR: f64 = 2.0;
const MEAN_FLOOR: f64 = 0.01;
/// Positions whose llama.cpp top-2 margin is at least this (and at least twice llama.cpp's own
/// disagreement) must have the same argmax.
const MARGIN_FLOOR: f64 = 0.1;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/synthetic")
}

struct Golden {
    name: String,
    model: PathBuf,
    arch: String,
    format: String,
    n_vocab: usize,
    tokens: Vec<u32>,
    /// `tokens.len() × n_vocab`, row-major.
    logits: Vec<f64>,
    self_max: f64,
    self_mean: f64,
}

fn read_goldens() -> Vec<Golden> {
    let dir = data_dir();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".logits.json"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).expect("read golden json");
            let v: Value = serde_json::from_str(&text).expect("parse golden json");
            let s = |k: &str| {
                v[k].as_str()
                    .unwrap_or_else(|| panic!("{}: no {k}", p.display()))
                    .to_string()
            };
            let n_vocab = v["n_vocab"].as_u64().expect("n_vocab") as usize;
            let tokens: Vec<u32> = v["tokens"]
                .as_array()
                .expect("tokens")
                .iter()
                .map(|t| t.as_u64().expect("token id") as u32)
                .collect();
            let rows = v["logits"].as_array().expect("logits");
            assert_eq!(
                rows.len(),
                tokens.len(),
                "{}: one logit row per token",
                p.display()
            );
            let mut logits = Vec::with_capacity(tokens.len() * n_vocab);
            for row in rows {
                let row = row.as_array().expect("logit row");
                assert_eq!(row.len(), n_vocab, "{}: logit row length", p.display());
                logits.extend(row.iter().map(|x| x.as_f64().expect("logit")));
            }
            let model = s("model");
            Golden {
                name: model.trim_end_matches(".gguf").to_string(),
                model: dir.join(&model),
                arch: s("arch"),
                format: s("format"),
                n_vocab,
                tokens,
                logits,
                self_max: v["self_diff"]["max"].as_f64().expect("self_diff.max"),
                self_mean: v["self_diff"]["mean"].as_f64().expect("self_diff.mean"),
            }
        })
        .collect()
}

#[test]
fn every_format_and_architecture_is_covered() {
    let have: BTreeSet<(String, String)> = read_goldens()
        .into_iter()
        .map(|g| (g.arch, g.format))
        .collect();
    for (arch, formats) in [("llama", LLAMA_FORMATS), ("gemma3", GEMMA3_FORMATS)] {
        for f in formats {
            assert!(
                have.contains(&(arch.to_string(), f.to_string())),
                "no synthetic {arch} model in {f} under {}",
                data_dir().display()
            );
        }
    }
}

/// Top index and the margin between the two largest values.
fn top2(row: &[f64]) -> (usize, f64) {
    let mut best = (0, f64::NEG_INFINITY);
    let mut second = f64::NEG_INFINITY;
    for (i, &x) in row.iter().enumerate() {
        if x > best.1 {
            second = best.1;
            best = (i, x);
        } else if x > second {
            second = x;
        }
    }
    (best.0, best.1 - second)
}

struct Outcome {
    max: f64,
    mean: f64,
    tol_max: f64,
    tol_mean: f64,
    argmax_checked: usize,
    argmax_agree: usize,
    problems: Vec<String>,
}

/// How the sequence is fed: in one call with the default batch, or in two calls (the second
/// continuing from the first's KV cache) split into small batches, so that attention reads
/// keys written by earlier passes and the sliding window spans pass boundaries.
#[derive(Clone, Copy)]
enum Plan {
    OnePass,
    Split { first: usize, batch: usize },
}

fn run(
    model: &Model,
    pool: &SharedBackend,
    tokens: &[u32],
    plan: Plan,
) -> Result<Vec<f64>, String> {
    let mut s = model.session(64, Arc::clone(pool));
    let mut out = Vec::new();
    let parts: Vec<&[u32]> = match plan {
        Plan::OnePass => vec![tokens],
        Plan::Split { first, batch } => {
            s.set_batch(batch);
            let (a, b) = tokens.split_at(first.min(tokens.len()));
            vec![a, b]
        }
    };
    for part in parts {
        let logits = s
            .eval(part, LogitRows::All)
            .map_err(|e| format!("eval failed: {e}"))?;
        out.extend(logits.iter().map(|&x| f64::from(x)));
    }
    Ok(out)
}

fn compare(g: &Golden, ours: &[f64]) -> Outcome {
    let tol_max = (MAX_FACTOR * g.self_max).max(MAX_FLOOR);
    let tol_mean = (MEAN_FACTOR * g.self_mean).max(MEAN_FLOOR);
    let margin_min = (2.0 * g.self_max).max(MARGIN_FLOOR);
    let mut out = Outcome {
        max: 0.0,
        mean: 0.0,
        tol_max,
        tol_mean,
        argmax_checked: 0,
        argmax_agree: 0,
        problems: Vec::new(),
    };
    if ours.len() != g.logits.len() {
        out.problems.push(format!(
            "got {} logits, want {} ({} tokens × {})",
            ours.len(),
            g.logits.len(),
            g.tokens.len(),
            g.n_vocab
        ));
        out.max = f64::NAN;
        out.mean = f64::NAN;
        return out;
    }
    let mut sum = 0.0;
    let mut worst = (0, 0);
    let rows = || ours.chunks(g.n_vocab).zip(g.logits.chunks(g.n_vocab));
    for (pos, (a, b)) in rows().enumerate() {
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            let d = (x - y).abs();
            // NaN must fail too.
            if d > out.max || d.is_nan() {
                out.max = d;
                worst = (pos, i);
            }
            sum += d;
        }
        let (want, margin) = top2(b);
        if margin >= margin_min {
            out.argmax_checked += 1;
            let (got, _) = top2(a);
            if got == want {
                out.argmax_agree += 1;
            } else {
                out.problems.push(format!(
                    "position {pos}: argmax {got}, llama.cpp {want} (margin {margin:.3})"
                ));
            }
        }
    }
    out.mean = sum / ours.len() as f64;
    if out.max.is_nan() || out.max > tol_max {
        out.problems.push(format!(
            "max |Δlogit| {:.4} > {tol_max:.4} (position {}, token {})",
            out.max, worst.0, worst.1
        ));
    }
    if out.mean.is_nan() || out.mean > tol_mean {
        out.problems
            .push(format!("mean |Δlogit| {:.4} > {tol_mean:.4}", out.mean));
    }
    // Per position: where the error starts tells attention bugs (from position 1 on, or from
    // the sliding window on) from per-token ones (position 0 too).
    if !out.problems.is_empty() {
        let per_pos: Vec<String> = rows()
            .map(|(a, b)| {
                let m = a
                    .iter()
                    .zip(b)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0, f64::max);
                format!("{m:.3}")
            })
            .collect();
        out.problems
            .push(format!("max |Δ| per position: [{}]", per_pos.join(", ")));
    }
    out
}

#[test]
fn synthetic_models_match_llama_cpp() {
    let goldens = read_goldens();
    assert!(
        goldens.len() >= LLAMA_FORMATS.len() + GEMMA3_FORMATS.len(),
        "expected at least {} synthetic models in {}, found {}",
        LLAMA_FORMATS.len() + GEMMA3_FORMATS.len(),
        data_dir().display(),
        goldens.len()
    );
    let pool = CpuBackend::shared(2);
    let mut failures = Vec::new();
    println!(
        "{:<14} {:>6} {:>5} {:>5}  {:>8} {:>8}  {:>8} {:>8}  {:>9}  {:>7}",
        "model", "arch", "fmt", "plan", "max|Δ|", "tol", "mean|Δ|", "tol", "llama.cpp", "argmax"
    );
    let plans = [
        ("one", Plan::OnePass),
        ("split", Plan::Split { first: 9, batch: 5 }),
    ];
    for g in &goldens {
        let model = match Model::load(&g.model) {
            Ok(m) => m,
            Err(e) => {
                println!(
                    "{:<14} {:>6} {:>5}  load failed: {e}",
                    g.name, g.arch, g.format
                );
                failures.push(format!(
                    "{} ({} {}): load failed: {e}",
                    g.name, g.arch, g.format
                ));
                continue;
            }
        };
        assert_eq!(model.n_vocab(), g.n_vocab, "{}: vocabulary size", g.name);
        for (plan_name, plan) in plans {
            let o = match run(&model, &pool, &g.tokens, plan) {
                Ok(ours) => compare(g, &ours),
                Err(e) => Outcome {
                    max: f64::NAN,
                    mean: f64::NAN,
                    tol_max: 0.0,
                    tol_mean: 0.0,
                    argmax_checked: 0,
                    argmax_agree: 0,
                    problems: vec![e],
                },
            };
            println!(
                "{:<14} {:>6} {:>5} {:>5}  {:>8.4} {:>8.4}  {:>8.5} {:>8.5}  {:>9.4}  {:>3}/{:<3} {}",
                g.name,
                g.arch,
                g.format,
                plan_name,
                o.max,
                o.tol_max,
                o.mean,
                o.tol_mean,
                g.self_max,
                o.argmax_agree,
                o.argmax_checked,
                if o.problems.is_empty() { "ok" } else { "FAIL" }
            );
            if !o.problems.is_empty() {
                failures.push(format!(
                    "{} ({} {}, {plan_name} pass):\n    {}",
                    g.name,
                    g.arch,
                    g.format,
                    o.problems.join("\n    ")
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "models disagreeing with llama.cpp:\n{}",
        failures.join("\n")
    );
}
