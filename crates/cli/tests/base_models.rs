//! Base models (pretrained, no chat template): `run` refuses to chat with them, saying why and
//! what works instead (`--raw`, an instruct model, `--chat-template`); `list` and `show` tell
//! them from instruct models. No network: the synthetic GGUFs of tests/data/synthetic.

#[path = "common/store_cmd.rs"]
mod store_cmd;

use std::path::{Path, PathBuf};
use store_cmd::{fails, hearth, ok, run};

fn synthetic(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data/synthetic")
        .join(file)
}

/// A copy of a synthetic model in `dir` with `template` as its chat template.
fn with_template(dir: &Path, file: &str, template: &str) -> PathBuf {
    let f = gguf::GgufFile::open(synthetic(file)).expect("synthetic model");
    let mut w = gguf::GgufWriter::from_file(&f).expect("copy the model");
    w.add("tokenizer.chat_template", template);
    let out = dir.join(format!("chat-{file}"));
    w.write(&out).expect("write gguf");
    out
}

const CHATML: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}<|im_start|>assistant\n";

#[test]
fn run_refuses_to_chat_with_a_base_model_and_says_what_works() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    for file in ["llama_q8_0.gguf", "gemma3_q8_0.gguf"] {
        let model = synthetic(file);
        let model = model.to_str().unwrap();
        let err = fails(
            hearth(h).args(["run", model, "Hi", "-n", "2", "--no-ledger"]),
            "is a base model",
        );
        for needle in [
            "no chat template",
            "--raw",
            "hearth run smollm2",
            "--chat-template NAME (chatml, gemma3)",
        ] {
            assert!(err.contains(needle), "{needle:?} not in {err}");
        }
        // Raw completion works, and so does a chat through a built-in template chosen on purpose.
        ok(hearth(h).args(["run", model, "Once", "--raw", "-n", "2", "--no-ledger"]));
        ok(hearth(h).args([
            "run",
            model,
            "Hi",
            "-n",
            "2",
            "--no-ledger",
            "--chat-template",
            "chatml",
        ]));
    }
    // Through a store name too: the message names the model as the user gave it.
    ok(hearth(h)
        .args(["create", "pretrained", "--from"])
        .arg(synthetic("llama_q8_0.gguf")));
    let err = fails(
        hearth(h).args(["run", "pretrained", "Hi", "--no-ledger"]),
        "pretrained is a base model",
    );
    assert!(err.contains("hearth run pretrained --raw"), "{err}");
    // A file with a template chats as before.
    let files = tempfile::tempdir().unwrap();
    let chat = with_template(files.path(), "llama_q8_0.gguf", CHATML);
    ok(hearth(h)
        .arg("run")
        .arg(&chat)
        .args(["Hi", "-n", "2", "--no-ledger"]));
}

#[test]
fn chat_template_flag_is_checked_before_anything_is_loaded() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let err = fails(
        hearth(h).args([
            "run",
            "/nonexistent/model.gguf",
            "Hi",
            "--chat-template",
            "vicuna",
        ]),
        "--chat-template: no built-in template \"vicuna\"",
    );
    assert!(err.contains("chatml, gemma3"), "{err}");
    fails(
        hearth(h).args([
            "run",
            "/nonexistent/model.gguf",
            "Hi",
            "--chat-template",
            "",
        ]),
        "no built-in template",
    );
    // Raw completion has no template to choose: clap refuses the pair.
    let (code, _, err) = run(hearth(h).args([
        "run",
        "/nonexistent/model.gguf",
        "Hi",
        "--raw",
        "--chat-template",
        "chatml",
    ]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--chat-template"), "{err}");
}

#[test]
fn list_and_show_tell_base_models_from_instruct_ones() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let files = tempfile::tempdir().unwrap();
    let chat = with_template(files.path(), "llama_q8_0.gguf", CHATML);
    ok(hearth(h)
        .args(["create", "pre", "--from"])
        .arg(synthetic("llama_q8_0.gguf")));
    ok(hearth(h).args(["create", "tuned", "--from"]).arg(&chat));

    let out = ok(hearth(h).arg("list"));
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].contains("  QUANT  KIND  "), "{out}");
    assert!(
        lines[1].starts_with("pre:latest") && lines[1].contains(" base "),
        "{out}"
    );
    assert!(
        lines[2].starts_with("tuned:latest") && lines[2].contains(" instruct "),
        "{out}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(hearth(h).args(["list", "--json"]))).unwrap();
    assert_eq!(json["models"][0]["kind"], "base");
    assert_eq!(json["models"][1]["kind"], "instruct");

    let out = ok(hearth(h).args(["show", "pre"]));
    assert!(
        out.contains("kind              base (pretrained: continues text and does not chat; `hearth run pre --raw TEXT`)"),
        "{out}"
    );
    let out = ok(hearth(h).args(["show", "tuned"]));
    assert!(out.contains("kind              instruct (chats)"), "{out}");
    // A file by path: its template decides.
    let out = ok(hearth(h).arg("show").arg(synthetic("gemma3_q8_0.gguf")));
    assert!(out.contains("kind              base"), "{out}");
    assert!(out.contains("architecture      gemma3\n"), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(hearth(h).args(["show", "pre", "--json"]))).unwrap();
    assert_eq!(json["kind"], "base");
    assert_eq!(json["architecture_supported"], true);
}
