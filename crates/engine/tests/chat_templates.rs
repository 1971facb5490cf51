//! Chat templates render exactly as Hugging Face transformers renders them: the prompts in
//! `tests/data/templates/` were made with Jinja2 by `scripts/golden/make_templates.py`.

use engine::chat::{ChatTemplate, Message, CHATML_TEMPLATE, GEMMA3_TEMPLATE};
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
                .map(|m| Message::new(text(m, "role"), text(m, "content")))
                .collect();
            let gen = case["add_generation_prompt"].as_bool().expect("flag");
            let ours = template.render(&messages, gen);
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
    assert!(CHATML_TEMPLATE.contains("<|im_start|>"));
}
