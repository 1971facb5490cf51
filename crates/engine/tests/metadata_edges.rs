//! A model file whose metadata holds strange values must load with a clear error or work:
//! never panic. Every metadata entry of every test model (all architectures, all weight
//! formats) is set in turn to edge values (0, 1, odd counts, the type's extremes, NaN and
//! infinities, empty and halved arrays, empty strings); each variant is loaded, tokenizes a
//! line and evaluates it in a small context (embedding models embed it).

use engine::{CpuBackend, LogitRows, Model, SharedBackend};
use gguf::{GgufFile, GgufWriter, Value};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn models() -> Vec<PathBuf> {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data");
    let mut paths = Vec::new();
    for dir in ["arch", "synthetic"] {
        let entries = std::fs::read_dir(data.join(dir)).expect("test data directory");
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.extension().is_some_and(|e| e == "gguf") {
                paths.push(path);
            }
        }
    }
    paths.sort();
    paths
}

/// Values of the same type as `v` at its edges.
fn edge_values(v: &Value) -> Vec<Value> {
    match v {
        Value::U8(_) => [0u8, 255].map(Value::U8).to_vec(),
        Value::U32(_) => [0u32, 1, 2, 3, 7, 65536, 1 << 30, u32::MAX]
            .map(Value::U32)
            .to_vec(),
        Value::I32(_) => [0i32, -1, 3, i32::MAX, i32::MIN].map(Value::I32).to_vec(),
        Value::U64(_) => [0u64, 3, 1 << 40, u64::MAX].map(Value::U64).to_vec(),
        Value::I64(_) => [0i64, -1, i64::MAX].map(Value::I64).to_vec(),
        Value::F32(_) => [
            0.0f32,
            -1.0,
            1e30,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ]
        .map(Value::F32)
        .to_vec(),
        Value::F64(_) => [0.0f64, f64::NAN, 1e300].map(Value::F64).to_vec(),
        Value::Bool(b) => vec![Value::Bool(!b)],
        Value::String(_) => vec![Value::String(String::new())],
        Value::Array(a) => {
            let mut out = vec![Value::Array(Vec::new())];
            if let Some(first) = a.first() {
                out.push(Value::Array(a[..a.len() / 2].to_vec()));
                for e in edge_values(first).into_iter().take(3) {
                    out.push(Value::Array(vec![e; a.len()]));
                }
            }
            out
        }
        _ => Vec::new(),
    }
}

/// What became of one variant; a panic is the only failure.
enum Outcome {
    Refused(String),
    Ran,
}

fn try_variant(bytes: Vec<u8>, backend: &SharedBackend) -> Outcome {
    let file = match GgufFile::from_bytes(bytes) {
        Ok(f) => f,
        Err(e) => return Outcome::Refused(e.to_string()),
    };
    let model = match Model::from_file(file) {
        Ok(m) => m,
        Err(e) => return Outcome::Refused(e.to_string()),
    };
    let tokens = model.tokenizer().encode("Hello world, 123!", true, false);
    let _ = model.tokenizer().decode(&tokens, true);
    let mut tokens: Vec<u32> = tokens.into_iter().take(8).collect();
    if tokens.is_empty() {
        tokens.push(0);
    }
    let mut session = model.session(64, backend.clone());
    let result = if model.is_embedding_only() {
        session.embed(&tokens).map(drop)
    } else {
        session.eval(&tokens, LogitRows::Last).map(drop)
    };
    match result {
        Ok(()) => Outcome::Ran,
        Err(e) => Outcome::Refused(e.to_string()),
    }
}

#[test]
fn edge_values_in_metadata_never_panic() {
    let backend = CpuBackend::shared(2);
    let (mut ran, mut refused, mut panics) = (0usize, 0usize, Vec::new());
    let paths = models();
    assert!(paths.len() >= 20, "test models: {paths:?}");
    for path in &paths {
        let bytes = std::fs::read(path).expect("test model");
        let file = GgufFile::from_bytes(bytes).expect("test model parses");
        // The untouched file runs: the variants start from a working model.
        let original = GgufWriter::from_file(&file).expect("copy").to_bytes();
        assert!(
            matches!(try_variant(original, &backend), Outcome::Ran),
            "{} does not run as it is",
            path.display()
        );
        for (key, value) in file.metadata() {
            for edge in edge_values(value) {
                let mut w = GgufWriter::from_file(&file).expect("copy");
                w.add(key, edge.clone());
                let bytes = w.to_bytes();
                match catch_unwind(AssertUnwindSafe(|| try_variant(bytes, &backend))) {
                    Ok(Outcome::Ran) => ran += 1,
                    Ok(Outcome::Refused(why)) => {
                        assert!(!why.trim().is_empty(), "{key}: an empty error");
                        refused += 1;
                    }
                    Err(p) => {
                        let msg = p
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        let mut shown = format!("{edge:?}");
                        shown.truncate(80);
                        panics.push(format!("{}: {key} = {shown}: {msg}", path.display()));
                    }
                }
            }
        }
    }
    assert!(panics.is_empty(), "panics:\n{}", panics.join("\n"));
    // Both kinds of outcome occur: the edits reach the loader's checks and the forward pass.
    assert!(ran > 1000 && refused > 1000, "{ran} ran, {refused} refused");
}
