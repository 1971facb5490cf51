//! The CLI on the real models, against llama.cpp's golden outputs.

use assert_cmd::Command;
use serde_json::Value;
use std::path::Path;

fn hearth(args: &[&str]) -> String {
    let out = Command::cargo_bin("hearth")
        .expect("binary")
        .env("HEARTH_HOME", scratch_home())
        .args(args)
        .output()
        .expect("hearth runs");
    assert!(
        out.status.success(),
        "hearth {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Free-running greedy text equals llama.cpp's up to its first near tie (top-two margin < 0.25).
fn greedy_matches(model: &Path, golden_name: &str) {
    let g = testutil::golden(golden_name);
    let file = gguf::GgufFile::open(model).expect("model opens");
    let tok = engine::tokenizer::Tokenizer::from_gguf(&file).expect("tokenizer");
    let model_arg = model.to_str().expect("UTF-8 path");
    for p in g["prompts"].as_array().expect("prompts") {
        let prompt = p["prompt"].as_str().expect("prompt");
        let gold = testutil::golden_ids(&p["ids"]);
        let tie = p["first_near_tie"]
            .as_u64()
            .map_or(gold.len(), |t| t as usize);
        let expected = tok.decode(&gold[..tie], false);
        let n = gold.len().to_string();
        let text = hearth(&[
            "run",
            model_arg,
            prompt,
            "--raw",
            "--temperature",
            "0",
            // llama.cpp's golden text has no repeat penalty (hearth's default is 1.1).
            "--repeat-penalty",
            "1",
            "-n",
            &n,
            "--threads",
            "2",
        ]);
        assert!(
            text.starts_with(&expected),
            "{golden_name} {:?}: expected the text to start with {expected:?} (llama.cpp's first {tie} tokens), got {text:?}",
            p["name"]
        );
        eprintln!(
            "{golden_name} {}: first {tie} tokens match: {expected:?}",
            p["name"]
        );
    }
}

#[test]
fn smollm2_greedy_text() {
    greedy_matches(&testutil::smollm2(), "greedy_smollm2.json");
}

#[test]
fn gemma3_greedy_text() {
    greedy_matches(&testutil::gemma3(), "greedy_gemma3.json");
}

#[test]
fn logits_command_prints_top_k_json() {
    let model = testutil::smollm2();
    let out = hearth(&[
        "logits",
        model.to_str().expect("path"),
        "--tokens",
        "504,3575,282",
        "--top",
        "3",
        "--json",
    ]);
    let v: Value = serde_json::from_str(&out).expect("JSON");
    let rows = v.as_array().expect("array");
    assert_eq!(rows.len(), 3);
    for row in rows {
        let entries = row.as_array().expect("row");
        assert_eq!(entries.len(), 3);
        let logits: Vec<f64> = entries
            .iter()
            .map(|e| e["logit"].as_f64().expect("logit"))
            .collect();
        assert!(
            logits.windows(2).all(|w| w[0] >= w[1]),
            "best first: {logits:?}"
        );
    }
    // "The capital of" -> the reference's argmax after "of" is " France"'s neighbourhood; just
    // check the ids are in range.
    assert!(rows[2][0]["id"].as_u64().expect("id") < 49152);
}

/// `bench` says what it measured, as llama-bench does: model, quantization, size, kernels.
#[test]
fn bench_prints_the_model_quantization_size_and_kernels() {
    let model =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/synthetic/llama_q4_0.gguf");
    let bench = |more: &[&str]| {
        let path = model.to_str().expect("path");
        let mut args = vec!["bench", path, "-p", "8", "-r", "1", "-t", "1"];
        args.extend_from_slice(more);
        hearth(&args)
    };
    let out = bench(&["-n", "2"]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("| model "), "{out}");
    for col in [
        "quant", "size", "params", "kernels", "threads", "test", "t/s",
    ] {
        assert!(lines[0].contains(col), "{col} in {out}");
    }
    let pp = lines
        .iter()
        .find(|l| l.contains(" pp8 "))
        .unwrap_or_else(|| panic!("no pp8 row: {out}"));
    assert!(pp.contains(" Q4_0 "), "{pp}");
    assert!(pp.contains(" KiB |") || pp.contains(" MiB |"), "{pp}");
    let kernels = ["scalar", "avx2", "avx512", "avx-vnni", "neon"];
    assert!(kernels.iter().any(|k| pp.contains(k)), "{pp}");
    let json = bench(&["-n", "0", "--json"]);
    let v: Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(v[0]["quantization"], "Q4_0", "{v}");
    // At a depth: the same tests after tokens already in the cache, named as llama-bench does.
    let tests = |v: &Value| -> Vec<String> {
        let rows = v.as_array().expect("rows");
        rows.iter()
            .map(|r| r["test"].as_str().expect("test").to_owned())
            .collect()
    };
    let json = bench(&["-n", "2", "-d", "0,16", "--json"]);
    let v: Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(tests(&v), ["pp8", "tg2", "pp8 @ d16", "tg2 @ d16"], "{v}");
    // Several sequences decoding together, at each depth too.
    let json = bench(&["-n", "2", "-d", "0,16", "--parallel", "3", "--json"]);
    let parallel: Value = serde_json::from_str(&json).expect("JSON");
    let want = [
        "tg2x3",
        "tg2x3 @ d16",
        "pp8",
        "tg2",
        "pp8 @ d16",
        "tg2 @ d16",
    ];
    assert_eq!(tests(&parallel), want, "{parallel}");
    assert!(v[0]["size_bytes"].as_u64().is_some_and(|n| n > 0), "{v}");
    assert!(v[0]["kernels"].is_string(), "{v}");
    // A generation test says what a token reads (more at a depth: the KV cache); with
    // --bandwidth, also how fast memory reads and what share of it the test used.
    assert!(v[0].get("read_bytes_per_token").is_none(), "pp: {v}");
    let read = |r: &Value| r["read_bytes_per_token"].as_u64().expect("read bytes");
    assert!(read(&v[1]) > 0 && read(&v[3]) > read(&v[1]), "{v}");
    assert!(v[1].get("memory_read_bytes_per_second").is_none(), "{v}");
    let out = bench(&["-n", "2", "--bandwidth"]);
    let line = out
        .lines()
        .find(|l| l.starts_with("tg2 on 1 thread: "))
        .unwrap_or_else(|| panic!("no bandwidth line: {out}"));
    // A test can outrun a probe that ran while the machine's memory was busier.
    assert!(
        (line.contains("% of the ") && line.contains("at most"))
            || line.contains("the probe measured before and after it"),
        "{line}"
    );
    let json = bench(&["-n", "2", "--bandwidth", "--json"]);
    let v: Value = serde_json::from_str(&json).expect("JSON");
    assert!(
        v[1]["memory_read_bytes_per_second"]
            .as_f64()
            .is_some_and(|r| r > 1e8),
        "{v}"
    );
}

/// Token text beside every id: the position's own token, and each candidate's.
#[test]
fn logits_command_shows_token_text() {
    let model = testutil::smollm2();
    let m = model.to_str().expect("path");
    let out = hearth(&["logits", m, "--tokens", "504,3575,282", "--top", "2"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with("0\t504 \"The\"\t-> "), "{out}");
    assert!(lines[1].starts_with("1\t3575 \" capital\"\t-> "), "{out}");
    // "The capital of" is followed by " the" or a country, each shown as text.
    assert!(lines[2].contains(" \" "), "{out}");
    let json = hearth(&["logits", m, "--tokens", "504", "--top", "1", "--json"]);
    let v: Value = serde_json::from_str(&json).expect("JSON");
    assert!(v[0][0]["text"].is_string(), "{v}");
}

#[test]
fn tokenize_command_json() {
    let model = testutil::smollm2();
    let out = hearth(&[
        "tokenize",
        model.to_str().expect("path"),
        "The capital of France",
        "--json",
    ]);
    let v: Vec<u32> = serde_json::from_str(&out).expect("JSON ids");
    assert_eq!(v, vec![504, 3575, 282, 4649]);
}

/// `hearth perplexity` within 0.5 % of llama-perplexity's value (-c 512) on the same text.
fn perplexity_matches(model: &Path, golden_name: &str) {
    let g = testutil::golden(golden_name);
    let text = testutil::workspace_root().join("tests/data/perplexity.txt");
    let out = hearth(&[
        "perplexity",
        model.to_str().expect("path"),
        text.to_str().expect("path"),
        "--ctx",
        "512",
        "--json",
        "--threads",
        "2",
    ]);
    let v: Value = serde_json::from_str(&out).expect("JSON");
    let ours = v["perplexity"].as_f64().expect("perplexity");
    let reference = g["ppl"].as_f64().expect("ppl");
    assert_eq!(v["chunks"].as_u64(), g["n_chunks"].as_u64(), "chunk count");
    assert_eq!(v["ctx"].as_u64(), Some(512));
    let rel = (ours - reference).abs() / reference;
    eprintln!(
        "{golden_name}: hearth {ours:.4}, llama.cpp {reference:.4}, {:.3} % apart",
        100.0 * rel
    );
    assert!(
        rel <= 0.005,
        "perplexity {ours} vs llama.cpp {reference}: {:.3} % apart",
        100.0 * rel
    );
}

#[test]
fn smollm2_perplexity() {
    perplexity_matches(&testutil::smollm2(), "perplexity_smollm2.json");
}

#[test]
fn gemma3_perplexity() {
    perplexity_matches(&testutil::gemma3(), "perplexity_gemma3.json");
}

#[test]
fn qwen2_5_coder_perplexity() {
    perplexity_matches(&testutil::qwen2_5_coder(), "perplexity_qwen2_5_coder.json");
}

/// Weights are mapped, not copied: peak RSS of `run` stays below file size + KV cache + 64 MiB.
#[cfg(target_os = "linux")]
fn peak_rss_within_bound(model: &Path) {
    let out = Command::cargo_bin("hearth")
        .expect("binary")
        .env("HEARTH_HOME", scratch_home())
        .args([
            "run",
            model.to_str().expect("path"),
            "Write a short poem about the sea.",
            "--raw",
            "--temperature",
            "0",
            "-n",
            "64",
            "--ctx",
            "2048",
            "--threads",
            "2",
            "--verbose",
        ])
        .output()
        .expect("hearth runs");
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("memory: peak RSS "))
        .unwrap_or_else(|| panic!("no memory line in {stderr}"));
    let peak: u64 = line["memory: peak RSS ".len()..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("peak bytes");
    let file = std::fs::metadata(model).expect("model file").len();
    let kv = {
        let f = gguf::GgufFile::open(model).expect("gguf");
        let arch = f
            .get_str("general.architecture")
            .expect("arch")
            .expect("arch")
            .to_string();
        let get = |k: &str| f.get_u64(&format!("{arch}.{k}")).expect("key");
        let n_layer = get("block_count").expect("layers");
        let n_head = get("attention.head_count").expect("heads");
        let n_kv = get("attention.head_count_kv").unwrap_or(n_head);
        let head_dim =
            get("attention.key_length").unwrap_or(get("embedding_length").expect("embd") / n_head);
        n_layer * 2048 * 2 * n_kv * head_dim * 2
    };
    let bound = file + kv + (64 << 20);
    eprintln!(
        "{}: peak RSS {peak} bytes, bound {bound} (file {file} + KV {kv} + 64 MiB)",
        model.display()
    );
    assert!(peak < bound, "peak RSS {peak} ≥ {bound}");
}

#[cfg(target_os = "linux")]
#[test]
fn smollm2_peak_rss() {
    peak_rss_within_bound(&testutil::smollm2());
}

#[cfg(target_os = "linux")]
#[test]
fn gemma3_peak_rss() {
    peak_rss_within_bound(&testutil::gemma3());
}

/// Without --raw, the prompt goes through the model's chat template; on stdin when not given.
#[test]
fn chat_one_shot_uses_the_template() {
    let model = testutil::smollm2();
    let m = model.to_str().expect("path");
    let direct = hearth(&[
        "run",
        m,
        "What is the capital of France?",
        "--temperature",
        "0",
        "--repeat-penalty",
        "1",
        "-n",
        "12",
    ]);
    // llama.cpp's greedy answer to the same chat (SmolLM2's template with its default system
    // prompt) begins "L'Étoile, la Mars": a 135M Q4_1 model, but the same one.
    assert!(direct.starts_with("L'Étoile, la Mars"), "got {direct:?}");
    let out = Command::cargo_bin("hearth")
        .expect("binary")
        .env("HEARTH_HOME", scratch_home())
        .args([
            "run",
            m,
            "--temperature",
            "0",
            "--repeat-penalty",
            "1",
            "-n",
            "12",
        ])
        .write_stdin("What is the capital of France?")
        .output()
        .expect("runs");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), direct);
}

/// A stop string ends the answer and is never printed, even across token boundaries; a banned
/// token never appears.
#[test]
fn stop_strings_and_logit_bias() {
    let model = testutil::smollm2();
    let m = model.to_str().expect("path");
    let full = hearth(&[
        "run",
        m,
        "The capital of France is",
        "--raw",
        "--temperature",
        "0",
        "-n",
        "24",
    ]);
    assert!(full.starts_with(" Paris."), "got {full:?}");
    // " Paris." then more text: stopping at "is." (which spans tokens " Paris" and ".") cuts there.
    let stopped = hearth(&[
        "run",
        m,
        "The capital of France is",
        "--raw",
        "--temperature",
        "0",
        "-n",
        "24",
        "--stop",
        "is.",
    ]);
    assert_eq!(stopped, " Par\n");
    // Banning " Paris" (id 7042) changes the answer.
    let banned = hearth(&[
        "run",
        m,
        "The capital of France is",
        "--raw",
        "--temperature",
        "0",
        "-n",
        "4",
        "--logit-bias",
        "7042=-inf",
    ]);
    assert!(!banned.starts_with(" Paris"), "got {banned:?}");
}

/// A reader that goes away early (`hearth tokenize … | head -1`) ends the command quietly.
#[test]
fn closed_stdout_is_not_an_error() {
    use std::io::Read;
    let model = testutil::smollm2();
    let text = "hello world ".repeat(9_000); // ~18k output lines: more than a pipe buffers
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("hearth"))
        .args(["tokenize", model.to_str().expect("path"), &text])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut first = [0u8; 16];
    let mut stdout = child.stdout.take().expect("stdout");
    stdout.read_exact(&mut first).expect("some output");
    drop(stdout);
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A HEARTH_HOME of the test's own, so that nothing (the usage ledger) is written to the
/// user's real one.
fn scratch_home() -> &'static std::path::Path {
    static HOME: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    HOME.get_or_init(|| tempfile::tempdir().expect("temp dir").keep())
}
