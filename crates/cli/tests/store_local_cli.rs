//! `hearth create / cp / list / show / rm` with presets, `hearth pull hf.co/…` against a local
//! imitation of the hub, and `rm` of a model while `hearth run` uses it. No network, no real
//! model: the synthetic GGUFs of tests/data/synthetic are imported with `create`.

#[path = "common/store_cmd.rs"]
mod store_cmd;
#[path = "../../store/tests/support/mod.rs"]
mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use store_cmd::{fails, hearth, ok};
use support::{sha256_hex, Server};

fn synthetic(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data/synthetic")
        .join(file)
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn is_empty_dir(p: &Path) -> bool {
    names_in(p).is_empty()
}

#[test]
fn create_presets_copy_list_show_and_rm() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let file = synthetic("llama_q8_0.gguf");
    let sha = testutil::sha256_file(&file).unwrap();

    let out = ok(hearth(h).args(["create", "syn", "--from", file.to_str().unwrap()]));
    assert!(out.starts_with("created syn:latest from "), "{out}");
    assert!(out.contains(&format!("sha256:{sha}")), "{out}");
    let out = ok(hearth(h).args([
        "create",
        "syn:terse",
        "--from",
        "syn",
        "--system",
        "Answer in one word.\nNo punctuation.",
        "--param",
        "temperature=0.1",
        "--param",
        "top_k = 5",
        "--param",
        "stop=</s>",
    ]));
    assert_eq!(
        out,
        format!(
            "created syn:terse, a preset of syn:latest (sha256:{sha}) with system prompt, \
             temperature=0.1, top_k=5, stop=\"</s>\"\n"
        )
    );
    // A preset of a preset inherits, and overrides what it sets.
    ok(hearth(h).args([
        "create",
        "syn:hot",
        "--from",
        "syn:terse",
        "--param",
        "temperature=1.5",
    ]));
    assert_eq!(
        names_in(&h.join("blobs")),
        [format!("sha256-{sha}")],
        "one blob"
    );

    let out = ok(hearth(h).arg("list"));
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].ends_with("BASE"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("syn:hot") && lines[1].ends_with("syn:terse"),
        "{out}"
    );
    assert!(
        lines[2].starts_with("syn:latest") && lines[2].ends_with('-'),
        "{out}"
    );
    assert!(
        lines[3].starts_with("syn:terse") && lines[3].ends_with("syn:latest"),
        "{out}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(hearth(h).args(["list", "--json"]))).unwrap();
    let hot = &json["models"][0];
    assert_eq!(hot["name"], "syn:hot");
    assert_eq!(hot["base"], "syn:terse");
    assert_eq!(hot["system"], "Answer in one word.\nNo punctuation.");
    assert_eq!(hot["params"]["temperature"], 1.5);
    assert_eq!(hot["params"]["top_k"], 5);
    assert_eq!(json["models"][1]["params"], serde_json::Value::Null);

    let out = ok(hearth(h).args(["show", "syn:hot"]));
    for needle in [
        "base model        syn:terse",
        "system prompt     Answer in one word. ⏎ No punctuation.",
        "options           temperature=1.5 top_k=5 stop=\"</s>\"",
    ] {
        assert!(out.contains(needle), "{needle:?} not in {out}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&ok(hearth(h).args(["show", "syn:terse", "--json"]))).unwrap();
    assert_eq!(json["base"], "syn:latest");
    assert_eq!(json["params"]["stop"][0], "</s>");
    assert_eq!(json["architecture"], "llama");

    // cp: refuses to overwrite without --force; the copy keeps the preset's settings.
    let out = ok(hearth(h).args(["cp", "syn:terse", "mine"]));
    assert_eq!(
        out,
        format!("copied syn:terse to mine:latest (sha256:{sha})\n")
    );
    fails(
        hearth(h).args(["cp", "syn", "mine"]),
        "mine:latest already exists in the store; pick another name, or replace it with --force",
    );
    ok(hearth(h).args(["cp", "syn", "mine", "--force"]));
    let json: serde_json::Value =
        serde_json::from_str(&ok(hearth(h).args(["show", "mine", "--json"]))).unwrap();
    assert_eq!(json["base"], serde_json::Value::Null);
    fails(
        hearth(h).args(["cp", "nosuch", "x"]),
        "nosuch:latest is not in the store",
    );
    fails(
        hearth(h).args(["create", "syn:terse", "--from", "syn"]),
        "already exists",
    );
    fails(
        hearth(h).args(["create", "x", "--from", "syn", "--param", "top_p=3"]),
        "invalid option top_p: must be between 0 and 1 (got 3)",
    );
    fails(
        hearth(h).args(["create", "x", "--from", "syn", "--param", "mirostat=2"]),
        "invalid option mirostat: unknown option; known options: temperature, top_k",
    );
    fails(
        hearth(h).args(["create", "x", "--from", "syn", "--param", "temperature"]),
        "--param takes KEY=VALUE",
    );
    fails(
        hearth(h).args(["create", "x", "--from", "/no/such/file.gguf"]),
        "cannot import /no/such/file.gguf: no such file",
    );
    fails(
        hearth(h).args(["create", "x", "--from", "nosuch", "--offline"]),
        "nosuch:latest is not in the store, and offline mode",
    );
    let not_gguf = h.join("notes.txt");
    std::fs::write(&not_gguf, "hello").unwrap();
    fails(
        hearth(h).args(["create", "x", "--from", not_gguf.to_str().unwrap()]),
        "is not a usable GGUF file",
    );
    std::fs::remove_file(&not_gguf).unwrap();

    // rm of the base keeps the blob its presets use; the last name frees it.
    assert_eq!(ok(hearth(h).args(["rm", "syn"])), "removed syn:latest\n");
    assert_eq!(names_in(&h.join("blobs")), [format!("sha256-{sha}")]);
    let out = ok(hearth(h).args(["show", "syn:terse"]));
    assert!(out.contains("base model        syn:latest"), "{out}");
    assert_eq!(
        ok(hearth(h).args(["rm", "syn:terse", "syn:hot"])),
        "removed syn:terse\nremoved syn:hot\n"
    );
    let out = ok(hearth(h).args(["rm", "mine"]));
    assert!(out.starts_with("removed mine:latest (freed "), "{out}");
    assert!(is_empty_dir(&h.join("blobs")));
    assert!(is_empty_dir(&h.join("manifests")));
}

#[test]
fn bad_names_for_cp_and_create_touch_nothing() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let file = synthetic("llama_q8_0.gguf");
    let file = file.to_str().unwrap();
    let long = "a".repeat(300);
    for (bad, why) in [
        ("../x", "`..`"),
        ("/abs/model", "absolute path"),
        ("org/repo", "`/` is only allowed"),
        ("smol\u{7}lm", "control character"),
        (long.as_str(), "longer than 256 bytes"),
        ("a:b:c", "more than one `:`"),
        ("smollm2:135m/x", "`/` may not appear after"),
    ] {
        fails(hearth(h).args(["create", bad, "--from", file]), why);
        fails(hearth(h).args(["create", "ok", "--from", bad]), why);
        fails(hearth(h).args(["cp", bad, "ok"]), why);
        fails(hearth(h).args(["cp", "ok", bad]), why);
    }
    assert!(is_empty_dir(h), "nothing was written");
}

#[test]
fn pull_from_an_imitation_hub_by_quantization() {
    let q4 = std::fs::read(synthetic("llama_q4_k.gguf")).unwrap();
    let q8 = std::fs::read(synthetic("llama_q8_0.gguf")).unwrap();
    let server = Server::start();
    let sib = |name: &str, b: &[u8]| {
        serde_json::json!({"rfilename": name, "size": b.len(),
            "lfs": {"sha256": sha256_hex(b), "size": b.len()}})
    };
    let listing = serde_json::json!({"siblings": [
        {"rfilename": "README.md", "size": 10},
        sib("tiny-Q4_K_M.gguf", &q4),
        sib("tiny-Q8_0.gguf", &q8),
    ]});
    server.add_file(
        "/api/models/org/tiny?blobs=true",
        serde_json::to_vec(&listing).unwrap(),
    );
    server.add_file("/org/tiny/resolve/main/tiny-Q4_K_M.gguf", q4.clone());
    server.add_file("/org/tiny/resolve/main/tiny-Q8_0.gguf", q8);
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let pull = |name: &str| {
        let mut c = hearth(h);
        c.args(["pull", name])
            .env("HF_ENDPOINT", &server.base)
            .env("HF_TOKEN", "tok");
        c
    };
    let out = ok(&mut pull("hf.co/org/tiny"));
    assert!(out.starts_with("pulled hf.co/org/tiny:Q4_K_M ("), "{out}");
    assert!(
        out.ends_with(&format!(
            ", sha256:{}) from {}/org/tiny/resolve/main/tiny-Q4_K_M.gguf\n",
            sha256_hex(&q4),
            server.base
        )),
        "{out}"
    );
    assert!(server
        .requests()
        .iter()
        .all(|r| r.authorization.as_deref() == Some("Bearer tok")));
    fails(
        &mut pull("hf.co/org/tiny:Q2_K"),
        "org/tiny has no GGUF file for the quantization Q2_K; available quantizations: Q4_K_M, Q8_0",
    );
    let out = ok(hearth(h).args(["show", "hf.co/org/tiny"]));
    assert!(out.contains("architecture      llama"), "{out}");
    let out = ok(hearth(h).args(["pull", "hf.co/org/tiny", "--offline"]));
    assert!(
        out.starts_with("hf.co/org/tiny:Q4_K_M is up to date"),
        "{out}"
    );
}

/// The blob is mapped by `pid` (Linux: listed in /proc/PID/maps).
#[cfg(target_os = "linux")]
fn maps(pid: u32, file_name: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/maps")).is_ok_and(|m| m.contains(file_name))
}

/// `rm` while `hearth run` of the same model is generating: the run has the blob mapped, so
/// unlinking it neither disturbs the run nor leaves an orphan once the run ends. The run is
/// held between loading the model and reading its prompt (stdin stays open) until `rm` is
/// done, so nothing depends on timing.
#[cfg(target_os = "linux")]
#[test]
fn rm_while_run_uses_the_model() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let file = synthetic("llama_q8_0.gguf");
    ok(hearth(h).args(["create", "busy", "--from", file.to_str().unwrap()]));
    ok(hearth(h).args([
        "create",
        "busy:preset",
        "--from",
        "busy",
        "--param",
        "num_predict=50",
    ]));
    let blob = format!("sha256-{}", testutil::sha256_file(&file).unwrap());
    assert_eq!(names_in(&h.join("blobs")), std::slice::from_ref(&blob));

    let mut child = hearth(h)
        .args([
            "run",
            "busy",
            "--raw",
            "-n",
            "200",
            "--temperature",
            "0",
            "--threads",
            "1",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !maps(child.id(), &blob) {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "run ended ({status}) before mapping the model: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "run never mapped {blob}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Both names go; the blob is unlinked while the run still maps it.
    let out = ok(hearth(h).args(["rm", "busy", "busy:preset"]));
    assert!(
        out.contains("removed busy:preset (freed 256.6 kB)"),
        "{out}"
    );
    assert!(
        is_empty_dir(&h.join("blobs")),
        "{:?}",
        names_in(&h.join("blobs"))
    );

    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"Once upon a time").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "run failed: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!out.stdout.is_empty(), "the run generated text");

    // No orphans: no blob, no partial, no scratch file, no manifest.
    assert!(is_empty_dir(&h.join("blobs")));
    assert!(is_empty_dir(&h.join("manifests")));
    assert!(is_empty_dir(&h.join("tmp")));
    assert_eq!(ok(hearth(h).arg("list")).lines().count(), 1);
}
