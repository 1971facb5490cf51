//! Chat templates render exactly as Hugging Face transformers renders them: the prompts in
//! `tests/data/templates/` were made with Jinja2 by `scripts/golden/make_templates.py`.

use engine::chat::{ChatError, ChatTemplate, Message, ToolCall, CHATML_TEMPLATE, GEMMA3_TEMPLATE};
use engine::Model;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/templates")
}

fn goldens() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let dir = data_dir();
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("read_dir entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).expect("read golden");
            let doc: Value = serde_json::from_str(&text).expect("golden is JSON");
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            out.push((name, doc));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

#[test]
fn templates_match_transformers() {
    let all = goldens();
    assert!(
        all.len() >= 4,
        "expected the golden templates in {}",
        data_dir().display()
    );
    let mut checked = 0;
    for (name, doc) in &all {
        let template = ChatTemplate::new(
            Some(text(doc, "template")),
            "llama",
            text(doc, "bos_token"),
            text(doc, "eos_token"),
        );
        for case in doc["cases"].as_array().expect("cases") {
            let messages: Vec<Message> = case["messages"]
                .as_array()
                .expect("messages")
                .iter()
                .map(message)
                .collect();
            let gen = case["add_generation_prompt"].as_bool().expect("flag");
            let tools = case.get("tools").and_then(Value::as_array);
            let ours = template.render_with_tools(&messages, tools.map(Vec::as_slice), gen);
            let label = format!("{name}/{}", text(case, "name"));
            match case.get("expected").and_then(Value::as_str) {
                Some(want) => {
                    let got = ours.unwrap_or_else(|e| panic!("{label}: {e}"));
                    assert_eq!(got, want, "{label}");
                }
                None => {
                    let e = ours.expect_err(&label).to_string();
                    let want = text(case, "error");
                    assert!(e.contains(want), "{label}: {e} lacks {want:?}");
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} cases");
}

/// A golden message: role and content (None when an assistant turn only calls tools), and
/// `tool_calls` / `tool_call_id` / `name` when it has them.
fn message(m: &Value) -> Message {
    let mut msg = Message::new(text(m, "role"), m["content"].as_str().unwrap_or(""));
    if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
        msg.tool_calls = calls
            .iter()
            .map(|c| ToolCall {
                id: text(c, "id").to_string(),
                name: text(&c["function"], "name").to_string(),
                arguments: c["function"]["arguments"].clone(),
            })
            .collect();
    }
    msg.tool_call_id = m
        .get("tool_call_id")
        .and_then(Value::as_str)
        .map(String::from);
    msg.name = m.get("name").and_then(Value::as_str).map(String::from);
    msg
}

/// The golden templates are the ones hearth really uses for the test models.
#[test]
fn goldens_hold_the_real_models_templates() {
    let smollm = gguf::GgufFile::open(testutil::smollm2()).expect("open SmolLM2");
    let template = smollm
        .get_str("tokenizer.chat_template")
        .expect("metadata")
        .expect("SmolLM2 has a template");
    let all = goldens();
    let golden = |name: &str| {
        let doc = &all.iter().find(|(n, _)| n == name).expect(name).1;
        text(doc, "template").to_string()
    };
    assert_eq!(golden("smollm2"), template);
    let gemma = gguf::GgufFile::open(testutil::gemma3()).expect("open Gemma 3");
    assert!(
        gemma
            .get_str("tokenizer.chat_template")
            .expect("metadata")
            .is_none(),
        "the Gemma 3 test model now has a template: regenerate the goldens"
    );
    assert_eq!(golden("gemma3"), GEMMA3_TEMPLATE);
    let qwen = gguf::GgufFile::open(testutil::qwen2_5_coder()).expect("open Qwen2.5-Coder");
    let template = qwen
        .get_str("tokenizer.chat_template")
        .expect("metadata")
        .expect("Qwen2.5-Coder has a template");
    assert_eq!(golden("qwen2_5_coder-tools"), template);
    assert!(CHATML_TEMPLATE.contains("<|im_start|>"));
}

fn synthetic(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data/synthetic")
        .join(name)
}

/// The synthetic model's bytes with `template` as its chat template (none: as it is).
fn synthetic_with_template(name: &str, template: Option<&str>) -> Model {
    let f = gguf::GgufFile::open(synthetic(name)).expect("synthetic model");
    let mut w = gguf::GgufWriter::from_file(&f).expect("copy the model");
    if let Some(t) = template {
        w.add("tokenizer.chat_template", t);
    }
    let file = gguf::GgufFile::from_bytes(w.to_bytes()).expect("reparse");
    Model::from_file(file).expect("load")
}

/// A file without a chat template is a base model: chat is refused with a clear error rather
/// than run through a format the model never learned.
#[test]
fn a_model_without_a_template_is_a_base_model() {
    for name in ["llama_q8_0.gguf", "gemma3_q8_0.gguf"] {
        for template in [None, Some(""), Some("  \n ")] {
            let model = synthetic_with_template(name, template);
            assert!(engine::chat::model_template(model.file()).is_none());
            let e = ChatTemplate::for_model(&model).err().expect(name);
            assert!(matches!(e, ChatError::BaseModel), "{e}");
            let msg = e.to_string();
            assert!(msg.contains("base (pretrained) model"), "{msg}");
            assert!(msg.contains("no chat template"), "{msg}");
        }
    }
    // The file's template when it has one.
    let model = synthetic_with_template("llama_q8_0.gguf", Some("{{ messages[0].content }}!"));
    let t = ChatTemplate::for_model(&model).expect("template");
    assert_eq!(
        t.render(&[Message::new("user", "hi")], true).unwrap(),
        "hi!"
    );
}

/// A built-in template can be chosen by name for a file that lacks its own.
#[test]
fn builtin_templates_by_name() {
    let model = synthetic_with_template("llama_q8_0.gguf", None);
    let t = ChatTemplate::builtin("chatml", &model).expect("chatml");
    assert_eq!(t.source(), CHATML_TEMPLATE);
    let out = t.render(&[Message::new("user", "hi")], true).unwrap();
    assert_eq!(
        out,
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    );
    let gemma = ChatTemplate::builtin("gemma3", &model).expect("gemma3");
    assert_eq!(gemma.source(), GEMMA3_TEMPLATE);
    assert!(ChatTemplate::builtin("vicuna", &model).is_none());
    assert!(ChatTemplate::builtin("", &model).is_none());
}
