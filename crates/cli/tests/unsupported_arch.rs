//! Models whose architecture hearth cannot run: `fit` says so whatever the memory (and
//! suggests one that runs) and `show` says so. (`run` refuses to download a catalog model it
//! cannot run and `pull` warns first; every catalog model runs now, so those paths have no
//! model to show them.) No network: the synthetic GGUFs of tests/data/synthetic relabelled,
//! and pulls that stop before any download.

#[path = "common/store_cmd.rs"]
#[allow(dead_code)]
mod store_cmd;

use std::path::{Path, PathBuf};
use store_cmd::{hearth, ok, run};

fn synthetic(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data/synthetic")
        .join(file)
}

/// The synthetic llama model relabelled as `arch` (its hyperparameters copied under the new
/// name): a well-formed file of an architecture hearth may not run.
fn relabelled(dir: &Path, arch: &str) -> PathBuf {
    let f = gguf::GgufFile::open(synthetic("llama_q8_0.gguf")).expect("synthetic model");
    let mut w = gguf::GgufWriter::from_file(&f).expect("copy the model");
    w.add("general.architecture", arch);
    for (k, v) in f.metadata() {
        if let Some(rest) = k.strip_prefix("llama.") {
            w.add(&format!("{arch}.{rest}"), v.clone());
        }
    }
    w.add("tokenizer.chat_template", "{{ messages[0].content }}");
    let out = dir.join(format!("{arch}.gguf"));
    w.write(&out).expect("write gguf");
    out
}

#[test]
fn show_says_when_the_architecture_cannot_run() {
    let home = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let model = relabelled(files.path(), "mamba9");
    let out = ok(hearth(home.path()).arg("show").arg(&model));
    assert!(
        out.contains("architecture      mamba9 (hearth cannot run it yet; it runs llama, gemma3"),
        "{out}"
    );
    let json: serde_json::Value = serde_json::from_str(&ok(hearth(home.path())
        .arg("show")
        .arg(&model)
        .arg("--json")))
    .unwrap();
    assert_eq!(json["architecture_supported"], false);
}

#[test]
fn fit_says_an_unsupported_architecture_cannot_run_whatever_the_memory() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let files = tempfile::tempdir().unwrap();
    let model = relabelled(files.path(), "mamba9");
    for mem in ["100G", "1K"] {
        let out = ok(hearth(h)
            .arg("fit")
            .arg(&model)
            .args(["--mem", mem, "--json"]));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["verdict"], "unsupported_architecture", "{v}");
        assert_eq!(v["architecture"], "mamba9", "{v}");
        let why = v["unsupported"].as_str().unwrap();
        assert!(
            why.contains("mamba9") && why.contains("llama") && why.contains("gemma3"),
            "{why}"
        );
        assert!(v["max_ctx"].is_null(), "{v}");
        // The memory figures are still there.
        assert!(v["estimate"]["total_bytes"].as_u64().unwrap() > 0, "{v}");
    }
    // With room, a model hearth can run (and chat with) is suggested instead: the largest such
    // catalog model (not the larger-than-smollm2 base gemma3:270m).
    let v: serde_json::Value = serde_json::from_str(&ok(hearth(h)
        .arg("fit")
        .arg(&model)
        .args(["--mem", "100G", "--json"])))
    .unwrap();
    assert_eq!(v["suggestion"]["model"], "qwen2.5-coder:0.5b", "{v}");
    let out = ok(hearth(h).arg("fit").arg(&model).args(["--mem", "100G"]));
    assert!(
        out.contains("verdict    cannot run here: architecture `mamba9` is not supported (supported: llama, gemma3"),
        "{out}"
    );
    assert!(!out.contains("verdict    fits"), "{out}");

    // A catalog model not in the store is sized from the catalog alone, and its architecture
    // (qwen2) is checked against the engine's list, which runs it.
    let out = ok(hearth(h).args([
        "fit",
        "qwen2.5-coder",
        "--offline",
        "--mem",
        "100G",
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["source"], "catalog", "{v}");
    assert_eq!(v["architecture"], "qwen2", "{v}");
    assert_eq!(v["verdict"], "fits", "{v}");
    // A model hearth runs is judged by memory as before.
    let v: serde_json::Value = serde_json::from_str(&ok(hearth(h).args([
        "fit",
        "smollm2",
        "--offline",
        "--mem",
        "100G",
        "--json",
    ])))
    .unwrap();
    assert_eq!(v["verdict"], "fits", "{v}");
    assert_eq!(v["architecture"], "llama", "{v}");
    assert_eq!(
        std::fs::read_dir(h).unwrap().count(),
        0,
        "fit wrote nothing"
    );
}

/// The check before a download asks the engine: a catalog model whose architecture hearth
/// runs (qwen2) goes on to the pull (which fails here: no python), with no "cannot run" note.
#[test]
fn catalog_models_hearth_runs_are_pulled() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    for args in [
        ["run", "qwen2.5-coder", "Hi"].as_slice(),
        ["pull", "qwen2.5-coder"].as_slice(),
    ] {
        let (code, _, err) = run(hearth(h)
            .args(args)
            .env("HEARTH_SOURCE", "mirror")
            .env("HEARTH_PYTHON", "/nonexistent/python-for-tests"));
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(!err.contains("cannot run"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}
