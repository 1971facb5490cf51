//! Every architecture against llama.cpp, on small random-weight models.
//!
//! `tests/data/arch/` holds one or more tiny GGUF files per architecture, each made so that the
//! architecture's own features (biases, soft-caps, sliding windows, YaRN, experts, sinks, …)
//! change the result within the evaluated sequence, and llama.cpp's output for a fixed token
//! sequence (`<name>.logits.json`, made by `scripts/golden/make_arch_models.py`): logits for
//! every position, or the pooled embedding for embedding models.
//!
//! Criteria (teacher-forced, so near ties cannot derail the comparison):
//! - the argmax equals llama.cpp's wherever llama.cpp's top-1 margin is at least 0.25;
//! - the mean |Δlogit| over llama.cpp's top 5 of each position is at most 0.25;
//! - embeddings: cosine similarity at least 0.999.

use engine::CpuBackend;
use engine::{LogitRows, Model};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MARGIN: f64 = 0.25;
const TOP5_MEAN: f64 = 0.25;
const COSINE: f64 = 0.999;

/// Architectures that must each have at least one model here.
const ARCHITECTURES: &[&str] = &[
    "llama",
    "qwen2",
    "qwen3",
    "qwen3moe",
    "phi3",
    "gemma2",
    "mistral3",
    "olmo2",
    "granite",
    "smollm3",
    "gpt-oss",
    "starcoder2",
    "gpt2",
    "bert",
    "nomic-bert",
];

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/arch")
}

struct Golden {
    name: String,
    doc: Value,
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
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("golden file");
            let doc: Value = serde_json::from_str(&text).expect("golden JSON");
            let name = p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".logits.json"))
                .expect("file name")
                .to_string();
            Golden { name, doc }
        })
        .collect()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn tokens(doc: &Value) -> Vec<u32> {
    doc["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .map(|t| t.as_u64().expect("token id") as u32)
        .collect()
}

fn top2(row: &[f64]) -> (usize, f64) {
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
    (order[0], row[order[0]] - row[order[1]])
}

/// Problems found comparing our logits with llama.cpp's, and a one-line summary.
fn compare_logits(doc: &Value, ours: &[f32], n_vocab: usize) -> (Vec<String>, String) {
    let want: Vec<Vec<f64>> = doc["logits"]
        .as_array()
        .expect("logits")
        .iter()
        .map(floats)
        .collect();
    let mut problems = Vec::new();
    if ours.len() != want.len() * n_vocab {
        problems.push(format!(
            "got {} logits, want {} × {n_vocab}",
            ours.len(),
            want.len()
        ));
        return (problems, String::new());
    }
    let (mut checked, mut agree, mut worst_top5) = (0, 0, 0f64);
    for (pos, (a, b)) in ours.chunks(n_vocab).zip(&want).enumerate() {
        let mut order: Vec<usize> = (0..n_vocab).collect();
        order.sort_by(|&x, &y| b[y].total_cmp(&b[x]));
        let top5: f64 = order[..5]
            .iter()
            .map(|&i| (f64::from(a[i]) - b[i]).abs())
            .sum::<f64>()
            / 5.0;
        if top5.is_nan() || top5 > TOP5_MEAN {
            problems.push(format!("position {pos}: mean |Δ| over top 5 = {top5:.3}"));
        }
        worst_top5 = worst_top5.max(top5);
        let (want_top, margin) = top2(b);
        if margin >= MARGIN {
            checked += 1;
            let ours64: Vec<f64> = a.iter().map(|&x| f64::from(x)).collect();
            let (got, _) = top2(&ours64);
            if got == want_top {
                agree += 1;
            } else {
                problems.push(format!(
                    "position {pos}: argmax {got}, llama.cpp {want_top} (margin {margin:.3})"
                ));
            }
        }
    }
    if checked < want.len() / 2 {
        problems.push(format!(
            "only {checked} of {} positions have a margin ≥ {MARGIN}: the golden data is too tied to test",
            want.len()
        ));
    }
    (
        problems,
        format!("argmax {agree}/{checked}, worst top-5 mean |Δ| {worst_top5:.4}"),
    )
}

fn compare_embedding(doc: &Value, ours: &[f32]) -> (Vec<String>, String) {
    let want = floats(&doc["embedding"]);
    if ours.len() != want.len() {
        return (
            vec![format!(
                "embedding of {} values, want {}",
                ours.len(),
                want.len()
            )],
            String::new(),
        );
    }
    let dot: f64 = ours.iter().zip(&want).map(|(&a, b)| f64::from(a) * b).sum();
    let na: f64 = ours
        .iter()
        .map(|&a| f64::from(a).powi(2))
        .sum::<f64>()
        .sqrt();
    let nb: f64 = want.iter().map(|b| b * b).sum::<f64>().sqrt();
    let cos = dot / (na * nb);
    let problems = if cos.is_nan() || cos < COSINE {
        vec![format!("cosine {cos:.6} < {COSINE}")]
    } else {
        Vec::new()
    };
    (problems, format!("cosine {cos:.6}"))
}

#[test]
fn every_architecture_has_a_model() {
    let have: BTreeSet<String> = read_goldens()
        .iter()
        .map(|g| g.doc["arch"].as_str().expect("arch").to_string())
        .collect();
    for arch in ARCHITECTURES {
        assert!(
            have.contains(*arch),
            "no model of architecture {arch} in {}",
            data_dir().display()
        );
    }
}

#[test]
fn architectures_match_llama_cpp() {
    let pool = CpuBackend::shared(2);
    let mut failures = Vec::new();
    for g in read_goldens() {
        let doc = &g.doc;
        let path = data_dir().join(doc["model"].as_str().expect("model"));
        let model = match Model::load(&path) {
            Ok(m) => m,
            Err(e) => {
                println!("{:<20} load failed: {e}", g.name);
                failures.push(format!("{}: load failed: {e}", g.name));
                continue;
            }
        };
        // The context llama.cpp ran with: LongRoPE picks its factors by it.
        let n_ctx = doc["n_ctx_llama_cpp"].as_u64().unwrap_or(256) as usize;
        let tokens = tokens(doc);
        let mut session = model.session(n_ctx, Arc::clone(&pool));
        let (problems, summary) = if doc["output"] == "pooled_embedding" {
            match session.embed(&tokens) {
                Ok(e) => compare_embedding(doc, &e),
                Err(e) => (vec![format!("embed failed: {e}")], String::new()),
            }
        } else {
            match session.eval(&tokens, LogitRows::All) {
                Ok(l) => compare_logits(doc, l, model.n_vocab()),
                Err(e) => (vec![format!("eval failed: {e}")], String::new()),
            }
        };
        let status = if problems.is_empty() { "ok" } else { "FAIL" };
        println!(
            "{:<20} {:<11} {summary} {status}",
            g.name,
            doc["arch"].as_str().unwrap_or("?")
        );
        if !problems.is_empty() {
            let shown: Vec<&String> = problems.iter().take(6).collect();
            failures.push(format!(
                "{} ({}):\n    {}",
                g.name,
                doc["arch"],
                shown
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join("\n    ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "architectures disagreeing with llama.cpp:\n{}",
        failures.join("\n")
    );
}

/// A file with a tensor its architecture does not use fails to load, naming the tensor: a
/// tensor silently dropped means wrong answers (as Llama 3.1's `rope_freqs` once was).
#[test]
fn unused_tensors_are_refused() {
    let src =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/synthetic/llama_f32.gguf");
    let file = gguf::GgufFile::open(&src).expect("synthetic llama model");
    let mut w = gguf::GgufWriter::new();
    for (k, v) in file.metadata() {
        w.add(k, v.clone());
    }
    for t in file.tensors() {
        w.add_tensor(&t.name, &t.dims, t.ty, file.tensor_data(t).to_vec())
            .expect("copy tensor");
    }
    let extra: Vec<u8> = [1.0f32; 64].iter().flat_map(|v| v.to_le_bytes()).collect();
    w.add_tensor(
        "blk.0.attn_sub_norm.weight",
        &[64],
        gguf::GgmlType::F32,
        extra,
    )
    .expect("extra tensor");
    let dir = std::env::temp_dir().join(format!("hearth-unclaimed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("extra.gguf");
    w.write(&path).expect("write model");
    let err = match Model::load(&path) {
        Ok(_) => panic!("a model with an unused tensor loaded"),
        Err(e) => e.to_string(),
    };
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        err.contains("blk.0.attn_sub_norm.weight") && err.contains("does not use"),
        "{err}"
    );
    // The untouched file still loads.
    Model::load(&src).expect("original model");
}
