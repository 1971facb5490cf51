//! `hearth fit` against what `hearth run` really uses (peak RSS on Linux), its verdicts, its
//! errors; `hearth hw` against /proc.

use assert_cmd::Command;
use serde_json::Value;
use std::path::Path;

fn hearth() -> Command {
    let mut c = Command::cargo_bin("hearth").unwrap();
    // No store of the user's, no network.
    c.env("HEARTH_OFFLINE", "1");
    c
}

/// Runs `cmd`, which must succeed, and parses what it printed as JSON.
fn json_of(cmd: &mut Command) -> Value {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn fit_json(model: &Path, args: &[&str]) -> Value {
    json_of(hearth().arg("fit").arg(model).args(args).arg("--json"))
}

fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

/// Runs `hearth run MODEL PROMPT … --ctx N --verbose`; returns (peak RSS bytes, KV cache MiB as
/// printed).
#[cfg(target_os = "linux")]
fn run_peak(model: &Path, prompt: &str, ctx: u64) -> (u64, f64) {
    let out = hearth()
        .arg("run")
        .arg(model)
        .arg(prompt)
        .args(["--raw", "--temperature", "0", "-n", "8", "--verbose"])
        .args(["--ctx", &ctx.to_string()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "run failed: {err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("memory: peak RSS "))
        .unwrap_or_else(|| panic!("no memory line in {err}"));
    let rss: u64 = line["memory: peak RSS ".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let kv: f64 = line
        .split("KV cache ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no KV cache size in {line}"));
    (rss, kv)
}

fn within(estimate: u64, measured: u64, tol: f64) -> bool {
    (estimate as f64 - measured as f64).abs() <= tol * measured as f64
}

/// A short run touches the weights, buffers and process but only a few KV positions (a large
/// cache is reserved zeroed and becomes resident as it fills): its peak is near `fixed_bytes`.
/// The KV cache itself must be exactly what the engine reserves at that context.
#[cfg(target_os = "linux")]
#[test]
fn fit_matches_short_run_peak_rss() {
    for model in [testutil::smollm2(), testutil::gemma3()] {
        for ctx in [512u64, 8192] {
            let est = fit_json(&model, &["--ctx", &ctx.to_string()]);
            let e = &est["estimate"];
            let (rss, kv_mib) = run_peak(&model, "Hello", ctx);
            let name = model.file_name().unwrap().to_string_lossy();
            let fixed = u(e, "fixed_bytes");
            eprintln!(
                "{name} ctx {ctx}: fixed {fixed} total {} rss {rss} ({:+.1} %)",
                u(e, "total_bytes"),
                (fixed as f64 / rss as f64 - 1.0) * 100.0
            );
            let kv = u(e, "kv_bytes") as f64 / (1u64 << 20) as f64;
            assert!(
                (kv - kv_mib).abs() < 0.06,
                "{name} ctx {ctx}: KV estimate {kv:.2} MiB, engine {kv_mib} MiB"
            );
            assert!(
                within(fixed, rss, 0.10),
                "{name} ctx {ctx}: estimate {fixed} bytes, peak RSS {rss}"
            );
            // Small caches may come from reused heap memory that is zeroed (resident) at once:
            // the peak lies between the fixed part and the total.
            let total = u(e, "total_bytes");
            assert_eq!(total, fixed + u(e, "kv_bytes"));
            assert!(
                rss as f64 <= total as f64 * 1.10,
                "{name} ctx {ctx}: total {total} bytes, peak RSS {rss}"
            );
        }
    }
}

/// With the context filled, the whole estimate (KV cache included) is the peak.
#[cfg(target_os = "linux")]
#[test]
fn fit_matches_full_context_peak_rss() {
    let model = testutil::smollm2();
    let ctx = 1024;
    // 10 tokens a sentence, plus BOS: 1001 tokens, leaving room for 8 more.
    let prompt = "The quick brown fox jumps over the lazy dog. ".repeat(100);
    let est = fit_json(&model, &["--ctx", &ctx.to_string()]);
    let total = u(&est["estimate"], "total_bytes");
    let (rss, _) = run_peak(&model, prompt.trim_end(), ctx);
    eprintln!(
        "smollm2 ctx {ctx} filled: total {total} rss {rss} ({:+.1} %)",
        (total as f64 / rss as f64 - 1.0) * 100.0
    );
    assert!(
        within(total, rss, 0.10),
        "estimate {total} bytes, peak RSS {rss}"
    );
}

#[test]
fn fit_verdicts_follow_the_memory_given() {
    let gemma = testutil::gemma3();
    let e = fit_json(&gemma, &["--ctx", "8192", "--mem", "100G"]);
    assert_eq!(e["verdict"], "fits");
    assert_eq!(e["estimate"]["n_ctx"], 8192);

    let full = u(&e["estimate"], "total_bytes");
    let fixed = u(&e["estimate"], "fixed_bytes");
    let per_token = u(&e["estimate"], "kv_bytes_per_token");
    // Room for the fixed part and 3000 positions.
    let mem = (fixed + 3000 * per_token).to_string();
    let e = fit_json(&gemma, &["--ctx", "8192", "--mem", &mem]);
    assert_eq!(e["verdict"], "fits_reduced_ctx", "{e}");
    assert_eq!(e["max_ctx"], 2816, "{e}");
    assert!(full > u(&e, "available_bytes"));

    // Not even the weights: a smaller catalog model is suggested.
    let e = fit_json(&gemma, &["--mem", "200M"]);
    assert_eq!(e["verdict"], "does_not_fit", "{e}");
    assert_eq!(e["suggestion"]["model"], "smollm2:135m", "{e}");

    // Beyond the training context the engine caps it, and so does the estimate.
    let s = fit_json(&testutil::smollm2(), &["--ctx", "100000"]);
    assert_eq!(s["estimate"]["n_ctx"], 8192);
    assert!(s["notes"][0].as_str().unwrap().contains("trained for 8192"));

    let out = hearth()
        .args(["fit"])
        .arg(&gemma)
        .args(["--ctx", "8192", "--mem", &mem])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("fits up to context 2816"), "{text}");
}

#[test]
fn fit_falls_back_to_the_catalog_for_models_not_in_the_store() {
    let home = tempfile::tempdir().unwrap();
    let e = json_of(
        hearth()
            .env("HEARTH_HOME", home.path())
            .args(["fit", "smollm2", "--json"]),
    );
    assert_eq!(e["source"], "catalog");
    assert!(u(&e, "min_bytes") > 98_362_432);
    assert!(e["notes"][0].as_str().unwrap().contains("catalog"), "{e}");
    // Nothing was written to the store.
    assert_eq!(std::fs::read_dir(home.path()).unwrap().count(), 0);
}

fn fails_with(args: &[&str], needle: &str) {
    let out = hearth().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    assert!(err.contains(needle), "{args:?}: {err}");
}

#[test]
fn fit_rejects_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.gguf");
    fails_with(&["fit", missing.to_str().unwrap()], "no such file");
    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"this is not a model file at all").unwrap();
    fails_with(&["fit", junk.to_str().unwrap()], "not a readable GGUF file");
    let model = testutil::smollm2();
    let model = model.to_str().unwrap();
    fails_with(&["fit", model, "--ctx", "0"], "--ctx must be at least 1");
    fails_with(&["fit", model, "--mem", "lots"], "--mem lots");
    fails_with(
        &["fit", "no-such-model"],
        "not a file, a model in the store",
    );
}

#[cfg(target_os = "linux")]
#[test]
fn hw_json_matches_proc() {
    let hw = json_of(hearth().args(["hw", "--json"]));

    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let threads = cpuinfo
        .lines()
        .filter(|l| l.split(':').next().is_some_and(|k| k.trim() == "processor"))
        .count();
    let mut cores = std::collections::HashSet::new();
    for block in cpuinfo.split("\n\n") {
        let get = |key: &str| {
            block
                .lines()
                .find(|l| l.split(':').next().is_some_and(|k| k.trim() == key))
                .map(|l| l.split(':').nth(1).unwrap().trim().to_owned())
        };
        if let (Some(p), Some(c)) = (get("physical id"), get("core id")) {
            cores.insert((p, c));
        }
    }
    let cores = if cores.is_empty() {
        threads
    } else {
        cores.len()
    };
    assert_eq!(hw["cpu"]["threads"], threads as u64, "{hw}");
    assert_eq!(hw["cpu"]["cores"], cores as u64, "{hw}");

    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let total_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(hw["memory"]["total_bytes"], total_kib * 1024);
    assert!(hw["memory"]["available_bytes"].as_u64().unwrap() <= total_kib * 1024);
    assert!(hw["gpus"].is_array());
    assert!(hw["kernels"]["name"].is_string());

    // The environment restricts the kernel path as the kernels do.
    let out = hearth()
        .env("HEARTH_FORCE_SCALAR", "1")
        .args(["hw", "--json"])
        .output()
        .unwrap();
    let hw: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(hw["kernels"]["name"], "scalar");

    let out = hearth().arg("hw").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for label in ["cpu", "cores", "simd", "kernels", "memory", "disk"] {
        assert!(text.lines().any(|l| l.starts_with(label)), "{text}");
    }
}

/// `hw --bandwidth` measures memory reads on one thread and on all usable ones; without the
/// flag nothing is measured.
#[test]
fn hw_bandwidth_measures_reads_on_one_and_all_threads() {
    let hw = json_of(hearth().args(["hw", "--json"]));
    assert!(hw.get("memory_read").is_none(), "{hw}");
    let hw = json_of(hearth().args(["hw", "--json", "--bandwidth"]));
    let reads = hw["memory_read"].as_array().expect("memory_read");
    let usable = hw["cpu"]["usable_threads"].as_u64().unwrap();
    let threads: Vec<u64> = reads
        .iter()
        .map(|r| r["threads"].as_u64().unwrap())
        .collect();
    if usable > 1 {
        assert_eq!(threads, [1, usable], "{hw}");
    } else {
        assert_eq!(threads, [1], "{hw}");
    }
    for r in reads {
        // More than 100 MB/s from any memory; less than a terabyte per second.
        let rate = r["bytes_per_second"].as_f64().unwrap();
        assert!(rate > 1e8 && rate < 1e12, "{r}");
        assert!(r["buffer_bytes"].as_u64().unwrap() >= 64 << 20, "{r}");
    }
    let out = hearth().args(["hw", "--bandwidth"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("bandwidth"))
        .unwrap_or_else(|| panic!("no bandwidth line: {text}"));
    assert!(line.contains("GB/s on 1 thread"), "{line}");
}
