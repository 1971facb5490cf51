//! Slow work beside a running stream (a long embedding job, another model's load) does not stop
//! it: the decode thread runs the embedding a chunk per step and loads on another thread.
//! Timings are printed, not asserted (the machines are shared); what is asserted is that the
//! stream went on while the other work was under way.

mod support;

use axum::http::StatusCode;
use http_body_util::BodyExt;
use serde_json::json;
use server::Config;
use std::time::{Duration, Instant};
use support::*;
use tower::ServiceExt;

#[tokio::test]
async fn a_stream_goes_on_during_a_long_embedding_and_a_model_load() {
    let app = server(Config {
        n_ctx: 2048,
        ..Config::default()
    });
    let smol = testutil::smollm2().to_string_lossy().into_owned();
    let other = testutil::gemma3().to_string_lossy().into_owned();
    // SmolLM2 loaded and its stream running.
    let warm = json!({"model": smol, "prompt": "Hello", "max_tokens": 1});
    assert_eq!(
        send(&app, post("/v1/completions", &warm)).await.status,
        StatusCode::OK
    );
    let body = json!({"model": smol, "prompt": "Once upon a time", "max_tokens": 1500,
                      "temperature": 0, "stream": true});
    let resp = app
        .clone()
        .oneshot(post("/v1/completions", &body))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut stream = resp.into_body();
    stream.frame().await.unwrap().unwrap();
    // About 5k tokens to embed: 10 inputs of about 500 tokens (17k took minutes on a shared
    // 2-core machine with one thread, too long for CI).
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(50);
    let inputs: Vec<String> = (0..10).map(|i| format!("{i} {text}")).collect();
    let embed = {
        let app = app.clone();
        let body = json!({"model": smol, "input": inputs});
        tokio::spawn(async move {
            let t = Instant::now();
            let r = send(&app, post("/v1/embeddings", &body)).await;
            (r, t.elapsed())
        })
    };
    let load = {
        let app = app.clone();
        let body = json!({"model": other, "keep_alive": "5m"});
        tokio::spawn(async move {
            let t = Instant::now();
            let r = send(&app, post("/api/generate", &body)).await;
            (r, t.elapsed())
        })
    };
    let start = Instant::now();
    let mut arrivals = Vec::new();
    while !(embed.is_finished() && load.is_finished()) {
        match tokio::time::timeout(Duration::from_secs(30), stream.frame()).await {
            Ok(Some(Ok(_))) => arrivals.push(start.elapsed()),
            Ok(_) => break,
            Err(_) => panic!("no token for 30 s while the embedding and load ran"),
        }
    }
    let (embedded, embed_time) = embed.await.unwrap();
    let (loaded, load_time) = load.await.unwrap();
    assert_eq!(embedded.status, StatusCode::OK, "{}", embedded.text());
    assert_eq!(embedded.json()["data"].as_array().map(Vec::len), Some(10));
    assert_eq!(loaded.status, StatusCode::OK, "{}", loaded.text());
    let gaps = arrivals.windows(2).map(|w| w[1] - w[0]);
    let max_gap = gaps.max().unwrap_or_default();
    println!(
        "embedding {embed_time:?}, load {load_time:?}; {} stream events meanwhile, largest gap {max_gap:?}",
        arrivals.len()
    );
    // The embedding alone takes seconds: a stream that went on gets many tokens meanwhile,
    // where one stopped behind it would get at most the few before and after.
    let during = arrivals.iter().filter(|&&t| t < embed_time).count();
    assert!(
        during >= 20,
        "only {during} stream events during the embedding ({embed_time:?})"
    );
}
