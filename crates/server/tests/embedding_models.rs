//! Embedding models (BERT, nomic-bert) through the HTTP API: the pooled embedding llama.cpp
//! computes, and a clear refusal to generate text.
//!
//! The random-weight models of `tests/data/arch` come with llama.cpp's embedding of a fixed
//! token sequence. The APIs take text, and those random sequences do not survive a decode and
//! re-encode (a `.` continuation piece comes back as a word of its own), so each model is
//! copied with its vocabulary renamed: every ordinary token `i` becomes the word `t{i}`. The
//! weights, and so the embedding of each id, are unchanged, and the text "t158 t59 …"
//! tokenizes to exactly the golden ids between [CLS] and [SEP].

mod support;

use axum::http::StatusCode;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use support::*;

fn arch_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/arch")
}

fn golden(name: &str) -> Value {
    let path = arch_dir().join(format!("{name}.logits.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).expect("golden JSON")
}

/// A copy of the model whose ordinary tokens are named `▁t{id}`, in `dir`.
fn renamed_copy(name: &str, dir: &Path) -> PathBuf {
    let src = arch_dir().join(format!("{name}.gguf"));
    let file = gguf::GgufFile::open(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    let types = file
        .get_i32_array("tokenizer.ggml.token_type")
        .expect("token types")
        .expect("token types");
    let tokens: Vec<String> = file
        .get_str_array("tokenizer.ggml.tokens")
        .expect("tokens")
        .expect("tokens")
        .into_iter()
        .zip(&types)
        .enumerate()
        .map(|(i, (t, &ty))| match ty {
            1 => format!("\u{2581}t{i}"),
            _ => t.to_string(),
        })
        .collect();
    let mut w = gguf::GgufWriter::new();
    for (k, v) in file.metadata() {
        w.add(k, v.clone());
    }
    w.add("tokenizer.ggml.tokens", tokens);
    for t in file.tensors() {
        w.add_tensor(&t.name, &t.dims, t.ty, file.tensor_data(t).to_vec())
            .expect("copy tensor");
    }
    let path = dir.join(format!("{name}.gguf"));
    w.write(&path).expect("write model");
    path
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let n = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

#[tokio::test]
async fn embeddings_match_llama_cpp_pooling() {
    let dir = tempfile::tempdir().expect("temp dir");
    let app = default_server();
    for name in ["bert_mean", "bert_cls", "nomic_bert"] {
        let doc = golden(name);
        let model = renamed_copy(name, dir.path())
            .to_string_lossy()
            .into_owned();
        let ids: Vec<u64> = doc["tokens"]
            .as_array()
            .expect("tokens")
            .iter()
            .map(|t| t.as_u64().expect("id"))
            .collect();
        // [CLS] and [SEP] come from the tokenizer.
        let text: Vec<String> = ids[1..ids.len() - 1]
            .iter()
            .map(|i| format!("t{i}"))
            .collect();
        let text = text.join(" ");
        let want = floats(&doc["embedding"]);

        let r = send(
            &app,
            post("/v1/embeddings", &json!({"model": model, "input": [text]})),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{name}: {}", r.text());
        let j = r.json();
        assert_eq!(
            j["usage"]["prompt_tokens"].as_u64(),
            Some(ids.len() as u64),
            "{name}: the text must tokenize to the golden ids"
        );
        let got = floats(&j["data"][0]["embedding"]);
        assert_eq!(got.len(), want.len(), "{name}");
        let cos = cosine(&got, &want);
        assert!(cos >= 0.999, "{name} ({}): cosine {cos}", doc["pooling"]);
        let norm = got.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!(
            (norm - 1.0).abs() < 1e-4,
            "{name}: not unit length ({norm})"
        );

        let r = send(
            &app,
            post("/api/embed", &json!({"model": model, "input": text})),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{name}: {}", r.text());
        let ollama = floats(&r.json()["embeddings"][0]);
        assert!(cosine(&ollama, &got) > 0.99999, "{name}: the APIs disagree");
        println!(
            "{name:<12} {:<5} cosine {cos:.6}",
            doc["pooling"].as_str().unwrap_or("?")
        );
    }
}

#[tokio::test]
async fn an_embedding_model_refuses_to_generate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let model = renamed_copy("bert_mean", dir.path())
        .to_string_lossy()
        .into_owned();
    let app = default_server();
    for (uri, body) in [
        (
            "/v1/chat/completions",
            json!({"model": model, "messages": [{"role": "user", "content": "t10"}]}),
        ),
        ("/v1/completions", json!({"model": model, "prompt": "t10"})),
        (
            "/api/generate",
            json!({"model": model, "prompt": "t10", "stream": false}),
        ),
    ] {
        let r = send(&app, post(uri, &body)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{uri}: {}", r.text());
        assert!(r.text().contains("embedding model"), "{uri}: {}", r.text());
    }
    // Too long for the model's context (64): refused unless truncated, which keeps [SEP].
    let long = "t10 ".repeat(100);
    let r = send(
        &app,
        post(
            "/api/embed",
            &json!({"model": model, "input": long, "truncate": false}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    let r = send(
        &app,
        post("/api/embed", &json!({"model": model, "input": long})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["prompt_eval_count"], 64);
    let cut = floats(&r.json()["embeddings"][0]);
    let fits = "t10 ".repeat(62); // with [CLS] and [SEP], 64 tokens
    let r = send(
        &app,
        post("/api/embed", &json!({"model": model, "input": fits})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(cosine(&floats(&r.json()["embeddings"][0]), &cut) > 0.99999);
}
