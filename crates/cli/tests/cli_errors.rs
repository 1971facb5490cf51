//! Bad input reaches the user as a clear message on stderr and exit code 1, never a panic.

use assert_cmd::Command;
use std::path::Path;

fn hearth() -> Command {
    let mut c = Command::cargo_bin("hearth").expect("the hearth binary is built");
    c.env("HEARTH_HOME", scratch_home());
    c
}

/// Runs `args` and checks exit code 1, an `error:` line mentioning `needle`, and no panic.
fn fails_with(args: &[&str], needle: &str) {
    let out = hearth().args(args).output().expect("hearth runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "args {args:?}: stderr was {stderr}"
    );
    assert!(
        stderr.starts_with("error:"),
        "args {args:?}: stderr was {stderr}"
    );
    assert!(
        stderr.to_lowercase().contains(&needle.to_lowercase()),
        "args {args:?}: expected {needle:?} in {stderr}"
    );
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert!(out.stdout.is_empty(), "stdout must stay empty on error");
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write temp file");
    p.to_string_lossy().into_owned()
}

#[test]
fn missing_file() {
    fails_with(
        &["run", "/nonexistent/model.gguf", "hi", "--raw"],
        "/nonexistent/model.gguf",
    );
    fails_with(
        &["tokenize", "/nonexistent/model.gguf", "hi"],
        "/nonexistent/model.gguf",
    );
}

#[test]
fn bad_magic_and_truncation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = write(dir.path(), "bad.gguf", b"NOPE\x03\x00\x00\x00");
    fails_with(&["run", &bad, "hi", "--raw"], "magic");
    fails_with(&["logits", &bad, "--tokens", "1,2"], "magic");
    let not_text = write(dir.path(), "not-text.txt", &[0xff, 0xfe, 0x00]);
    fails_with(&["perplexity", &bad, &not_text], "utf-8");
    let empty = write(dir.path(), "empty.gguf", b"");
    fails_with(&["tokenize", &empty, "hi"], "empty.gguf");
}

#[test]
fn not_a_model() {
    // A valid GGUF with no architecture and no tensors.
    let mut w = gguf::GgufWriter::new();
    w.add("general.name", gguf::Value::String("nothing".into()));
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write(dir.path(), "empty-model.gguf", &w.to_bytes());
    fails_with(&["run", &p, "hi", "--raw"], "general.architecture");
    let mut w = gguf::GgufWriter::new();
    w.add("general.architecture", gguf::Value::String("mamba9".into()));
    let p = write(dir.path(), "unknown-arch.gguf", &w.to_bytes());
    fails_with(&["logits", &p, "--tokens", "1"], "mamba9");
    let mut w = gguf::GgufWriter::new();
    w.add("general.architecture", gguf::Value::String("llama".into()));
    w.add("llama.embedding_length", gguf::Value::U32(64));
    let p = write(dir.path(), "no-hparams.gguf", &w.to_bytes());
    fails_with(&["logits", &p, "--tokens", "1"], "llama.");
}

#[test]
fn bad_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write(dir.path(), "x.gguf", b"GGUF");
    fails_with(
        &["run", &p, "hi", "--raw", "--temperature=-1"],
        "temperature",
    );
    fails_with(&["run", &p, "hi", "--raw", "--ctx", "0"], "ctx");
    fails_with(&["run", &p, "hi", "--raw", "--top-p", "2"], "top-p");
    fails_with(
        &["run", &p, "hi", "--raw", "--temperature", "NaN"],
        "temperature",
    );
    fails_with(
        &["run", &p, "hi", "--raw", "--repeat-penalty", "0"],
        "repeat-penalty",
    );
}

#[test]
fn missing_tensor_and_bad_hyperparameter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = |w: &mut gguf::GgufWriter| {
        w.add("general.architecture", gguf::Value::String("llama".into()));
        for (k, v) in [
            ("llama.embedding_length", 64u32),
            ("llama.block_count", 1),
            ("llama.attention.head_count", 4),
            ("llama.feed_forward_length", 128),
        ] {
            w.add(k, gguf::Value::U32(v));
        }
    };
    let mut w = gguf::GgufWriter::new();
    base(&mut w);
    let p = write(dir.path(), "no-tensors.gguf", &w.to_bytes());
    fails_with(&["logits", &p, "--tokens", "1"], "token_embd.weight");
    let mut w = gguf::GgufWriter::new();
    base(&mut w);
    w.add("llama.attention.head_count_kv", gguf::Value::U32(3));
    let p = write(dir.path(), "bad-kv-heads.gguf", &w.to_bytes());
    fails_with(&["logits", &p, "--tokens", "1"], "head_count_kv");
    let mut w = gguf::GgufWriter::new();
    base(&mut w);
    w.add("llama.block_count", gguf::Value::U64(u64::MAX));
    let p = write(dir.path(), "huge-layers.gguf", &w.to_bytes());
    fails_with(&["logits", &p, "--tokens", "1"], "block_count");
}

/// A HEARTH_HOME of the test's own, so that nothing (the usage ledger) is written to the
/// user's real one.
fn scratch_home() -> &'static std::path::Path {
    static HOME: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    HOME.get_or_init(|| tempfile::tempdir().expect("temp dir").keep())
}

/// Each reason is printed once, and a name nothing can be pulled for is refused before any
/// download starts, with the closest catalog name.
#[test]
fn reasons_once_and_did_you_mean() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cut = write(dir.path(), "cut.gguf", b"GGUF\x03\x00\x00\x00garbage");
    let out = hearth().args(["show", &cut]).output().expect("hearth runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.matches("runs past the end of the file").count(),
        1,
        "the reason once: {stderr}"
    );
    let out = hearth()
        .args(["run", "smollm", "hi"])
        .output()
        .expect("hearth runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("did you mean smollm2:135m?"),
        "did-you-mean: {stderr}"
    );
    assert!(
        !stderr.contains("pulling"),
        "refused before pulling: {stderr}"
    );
}

/// A bench test that cannot fit the model's context is refused before the table starts.
#[test]
fn bench_beyond_the_context() {
    let model =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/synthetic/llama_q4_0.gguf");
    let m = model.to_str().expect("path");
    fails_with(&["bench", m, "-d", "100000000", "-r", "1"], "lower -d");
    fails_with(
        &[
            "bench",
            m,
            "-d",
            "18446744073709551615",
            "-n",
            "1",
            "-r",
            "1",
        ],
        "model's context",
    );
    fails_with(
        &["bench", m, "-p", "100000000", "-r", "1"],
        "model's context",
    );
}
