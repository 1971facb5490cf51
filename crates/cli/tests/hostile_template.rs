//! A model file whose chat template doubles a string until memory runs out: `hearth run`
//! refuses it with a clear error instead of aborting, and `hearth serve` answers 400 and keeps
//! serving. (minijinja bounds loops, recursion and `'x' * n`, but not `s ~ s`; the file's
//! templates render in a child process with capped memory.)

#[path = "common/serve.rs"]
mod serve;

use std::path::{Path, PathBuf};
use std::process::Command;

/// Doubles a string 40 times: 2^40 bytes if nothing stops it.
const DOUBLING: &str = "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}";

/// The tiny synthetic llama model with `template` as its chat template, as `dir/NAME.gguf`.
fn model_with_template(dir: &Path, name: &str, template: &str) -> PathBuf {
    let src =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/synthetic/llama_q8_0.gguf");
    let f = gguf::GgufFile::open(&src).expect("synthetic model");
    let mut w = gguf::GgufWriter::from_file(&f).expect("copy the model");
    w.add("tokenizer.chat_template", template);
    let out = dir.join(format!("{name}.gguf"));
    w.write(&out).expect("write gguf");
    out
}

/// `hearth run MODEL Hi -n N --no-ledger EXTRA` with its store in `dir`: the exit code and
/// stderr.
fn run(dir: &Path, model: &Path, n: &str, extra: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .arg("run")
        .arg(model)
        .args(["Hi", "-n", n, "--no-ledger"])
        .args(extra)
        .env("HEARTH_HOME", dir)
        .output()
        .expect("run hearth");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_string_doubling_template_is_refused_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_with_template(dir.path(), "doubling", DOUBLING);
    let (code, stderr) = run(dir.path(), &model, "4", &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("chat template"), "{stderr}");
    assert!(stderr.contains("MiB of memory"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // The server refuses the request and goes on serving.
    let s = serve::start(
        &["--no-ledger"],
        &[
            ("HEARTH_HOME", dir.path().as_os_str()),
            ("HEARTH_OFFLINE", std::ffi::OsStr::new("1")),
        ],
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let body = serde_json::json!({
        "model": model.to_str().unwrap(),
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 4,
    });
    let mut r = agent
        .post(&format!("{}/v1/chat/completions", s.base))
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .unwrap();
    let text = r.body_mut().read_to_string().unwrap();
    assert_eq!(r.status().as_u16(), 400, "{text}");
    assert!(text.contains("MiB of memory"), "{text}");
    // Raw completions (no template) still work on the same model.
    let mut r = agent
        .post(&format!("{}/v1/completions", s.base))
        .header("Content-Type", "application/json")
        .send(
            serde_json::json!({"model": model.to_str().unwrap(), "prompt": "Hi", "max_tokens": 2})
                .to_string(),
        )
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        200,
        "{}",
        r.body_mut().read_to_string().unwrap()
    );
}

#[test]
fn ordinary_file_templates_render_through_the_helper() {
    let dir = tempfile::tempdir().unwrap();
    let template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}</{{ m.role }}>{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}";
    let model = model_with_template(dir.path(), "tags", template);
    let (code, stderr) = run(dir.path(), &model, "3", &["--verbose"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("generated: 3 tokens"), "{stderr}");
    // A template error from the helper reads like one from this process.
    let broken = model_with_template(
        dir.path(),
        "broken",
        "{% for m in messages %}{{ m.content }",
    );
    let (code, stderr) = run(dir.path(), &broken, "3", &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("chat template is invalid"), "{stderr}");
}
