//! The rest of the OpenAI / llama.cpp surface: `/v1/completions` with lists of prompts,
//! token ids, `n`, `echo` and `suffix` (fill-in-the-middle); embeddings from token ids;
//! `/tokenize` and `/detokenize`; CORS preflights from the OpenAI JS SDK.

mod support;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use serde_json::{json, Value};
use server::Config;
use support::*;

async fn tokenize(app: &axum::Router, model: &str, content: &str, add_special: bool) -> Vec<u64> {
    let r = send(
        app,
        post(
            "/tokenize",
            &json!({"model": model, "content": content, "add_special": add_special}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.json()["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap())
        .collect()
}

fn completion(extra: Value) -> Value {
    let mut b = json!({"model": model(), "prompt": "abc", "max_tokens": 4, "temperature": 0});
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

fn texts(v: &Value) -> Vec<String> {
    v["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap().to_string())
        .collect()
}

fn chunks(text: &str) -> Vec<Value> {
    let data = sse_data(text);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{text}");
    data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

async fn refused(app: &axum::Router, path: &str, body: Value, param: &str) -> String {
    let r = send(app, post(path, &body)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text());
    let e = r.json();
    assert_eq!(e["error"]["param"], param, "{body}: {e}");
    let message = e["error"]["message"].as_str().unwrap().to_string();
    assert!(message.contains(param), "{message}");
    message
}

#[tokio::test]
async fn tokenize_and_detokenize_round_trip() {
    let app = default_server();
    let m = model();
    let plain = tokenize(&app, &m, "Hello world", false).await;
    let special = tokenize(&app, &m, "Hello world", true).await;
    assert!(!plain.is_empty());
    // add_special puts BOS first (the synthetic llama vocabulary has one).
    assert_eq!(special.len(), plain.len() + 1, "{special:?} {plain:?}");
    assert_eq!(&special[1..], &plain[..]);
    let r = send(
        &app,
        post("/detokenize", &json!({"model": m, "tokens": plain})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["content"], "Hello world");
    // Pieces: each id with its text; together they spell the input.
    let r = send(
        &app,
        post(
            "/tokenize",
            &json!({"model": m, "content": "Hello world", "with_pieces": true}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let pieces = r.json()["tokens"].as_array().unwrap().clone();
    assert_eq!(pieces.len(), plain.len());
    let ids: Vec<u64> = pieces.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, plain);
    let spelled: String = pieces
        .iter()
        .map(|p| p["piece"].as_str().unwrap())
        .collect();
    assert_eq!(spelled.trim_start(), "Hello world");
    // Ids are checked: not an integer, negative, past the vocabulary.
    refused(
        &app,
        "/detokenize",
        json!({"model": m, "tokens": [1, "x"]}),
        "tokens[1]",
    )
    .await;
    refused(
        &app,
        "/detokenize",
        json!({"model": m, "tokens": [1, 2, -1]}),
        "tokens[2]",
    )
    .await;
    let msg = refused(
        &app,
        "/detokenize",
        json!({"model": m, "tokens": [1, 4000000000u64]}),
        "tokens[1]",
    )
    .await;
    assert!(msg.contains("vocabulary"), "{msg}");
    // An unknown model is a 404, as for a generation.
    let r = send(
        &app,
        post(
            "/tokenize",
            &json!({"model": "no-such-model:1b", "content": "x"}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
    let r = send(&app, post("/tokenize", &json!({"model": m}))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
}

#[tokio::test]
async fn completions_take_lists_token_ids_and_n() {
    let app = default_server();
    // A token-id prompt is the same prompt as its text.
    let one = send(&app, post("/v1/completions", &completion(json!({})))).await;
    assert_eq!(one.status, StatusCode::OK, "{}", one.text());
    let one = one.json();
    let ids = tokenize(&app, &model(), "abc", true).await;
    let r = send(
        &app,
        post("/v1/completions", &completion(json!({"prompt": ids}))),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(texts(&r.json()), texts(&one));
    assert_eq!(
        r.json()["usage"]["prompt_tokens"],
        one["usage"]["prompt_tokens"]
    );
    // Two prompts, n = 3: six choices, index = prompt * n + i, seeds seed + i.
    let body = completion(json!({
        "prompt": ["abc", "xyz"], "n": 3, "temperature": 1.0, "seed": 11, "max_tokens": 6,
    }));
    let r = send(&app, post("/v1/completions", &body)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let many = r.json();
    let choices = many["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 6);
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i, "{many}");
    }
    let alone = |prompt: &str, seed: u64| {
        completion(json!({"prompt": prompt, "temperature": 1.0, "seed": seed, "max_tokens": 6}))
    };
    let mut expected = Vec::new();
    let mut prompt_tokens = 0;
    let mut completion_tokens = 0;
    for prompt in ["abc", "xyz"] {
        for i in 0..3 {
            let r = send(&app, post("/v1/completions", &alone(prompt, 11 + i))).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text());
            let v = r.json();
            expected.push(texts(&v).remove(0));
            prompt_tokens += v["usage"]["prompt_tokens"].as_u64().unwrap();
            completion_tokens += v["usage"]["completion_tokens"].as_u64().unwrap();
        }
    }
    assert_eq!(texts(&many), expected);
    assert_ne!(expected[0], expected[1], "each sequence has its own seed");
    assert_eq!(many["usage"]["prompt_tokens"], prompt_tokens);
    assert_eq!(many["usage"]["completion_tokens"], completion_tokens);
    // The same streamed: every chunk names its choice; each choice's text is the same.
    let mut s = body.clone();
    s["stream"] = json!(true);
    s["stream_options"] = json!({"include_usage": true});
    let r = send(&app, post("/v1/completions", &s)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let list = chunks(&r.text());
    let mut streamed = vec![String::new(); 6];
    let mut finishes = 0;
    for c in &list[..list.len() - 1] {
        let choice = &c["choices"][0];
        let i = choice["index"].as_u64().unwrap() as usize;
        streamed[i].push_str(choice["text"].as_str().unwrap());
        finishes += usize::from(choice["finish_reason"].is_string());
    }
    assert_eq!(streamed, expected);
    assert_eq!(finishes, 6);
    let u = list.last().unwrap();
    assert_eq!(u["choices"], json!([]));
    assert_eq!(u["usage"]["completion_tokens"], completion_tokens);
    // Lists of lists of ids; the bad id is named where it is.
    let r = send(
        &app,
        post(
            "/v1/completions",
            &completion(json!({"prompt": [ids.clone(), ids.clone()]})),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        texts(&r.json()),
        [texts(&one)[0].clone(), texts(&one)[0].clone()]
    );
    let msg = refused(
        &app,
        "/v1/completions",
        completion(json!({"prompt": [[1, 2], [1, 2, 3, 1000000]]})),
        "prompt[1][3]",
    )
    .await;
    assert!(msg.contains("vocabulary"), "{msg}");
    refused(
        &app,
        "/v1/completions",
        completion(json!({"prompt": [1, 2, 999999]})),
        "prompt[2]",
    )
    .await;
    refused(
        &app,
        "/v1/completions",
        completion(json!({"prompt": [[1], [2, -5]]})),
        "prompt[1][1]",
    )
    .await;
    refused(
        &app,
        "/v1/completions",
        completion(json!({"prompt": [[1], [2, 1.5]]})),
        "prompt[1][1]",
    )
    .await;
    refused(
        &app,
        "/v1/completions",
        completion(json!({"prompt": ["a", 1]})),
        "prompt",
    )
    .await;
    refused(
        &app,
        "/v1/completions",
        completion(json!({"prompt": []})),
        "prompt",
    )
    .await;
    refused(
        &app,
        "/v1/completions",
        completion(json!({"prompt": [[1], []]})),
        "prompt[1]",
    )
    .await;
    for n in [json!(0), json!(9), json!(-1), json!(1e308), json!("2")] {
        refused(&app, "/v1/completions", completion(json!({"n": n})), "n").await;
    }
    let prompts: Vec<String> = (0..9).map(|i| format!("p{i}")).collect();
    refused(
        &app,
        "/v1/completions",
        completion(json!({"prompt": prompts, "n": 8})),
        "n",
    )
    .await;
}

#[tokio::test]
async fn echo_puts_the_prompt_first() {
    let app = default_server();
    let plain = send(&app, post("/v1/completions", &completion(json!({})))).await;
    let plain = texts(&plain.json()).remove(0);
    let r = send(
        &app,
        post(
            "/v1/completions",
            &completion(json!({"echo": true, "logprobs": 2})),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(texts(&v), [format!("abc{plain}")]);
    // Log-probabilities cover the generated tokens, placed after the echoed prompt.
    let lp = &v["choices"][0]["logprobs"];
    let offsets = lp["text_offset"].as_array().unwrap();
    assert!(!offsets.is_empty(), "{v}");
    assert_eq!(offsets[0], 3);
    // Token-id prompts echo their text.
    let ids = tokenize(&app, &model(), "abc", false).await;
    let r = send(
        &app,
        post(
            "/v1/completions",
            &completion(json!({"echo": true, "prompt": [ids]})),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(texts(&r.json())[0].starts_with("abc"), "{}", r.text());
    // Streamed: the prompt comes first.
    let r = send(
        &app,
        post(
            "/v1/completions",
            &completion(json!({"echo": true, "stream": true})),
        ),
    )
    .await;
    let list = chunks(&r.text());
    assert_eq!(list[0]["choices"][0]["text"], "abc");
    let all: String = list
        .iter()
        .map(|c| c["choices"][0]["text"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(all, format!("abc{plain}"));
}

#[tokio::test]
async fn suffix_needs_fim_tokens() {
    let app = default_server();
    let msg = refused(
        &app,
        "/v1/completions",
        completion(json!({"suffix": "\nreturn x"})),
        "suffix",
    )
    .await;
    assert!(msg.contains("FIM"), "{msg}");
    refused(
        &app,
        "/v1/completions",
        completion(json!({"suffix": "x", "echo": true})),
        "echo",
    )
    .await;
}

/// Fill-in-the-middle with a real code model: the prompt is its FIM markers around the
/// prefix and suffix, and the first token's three likeliest candidates are llama.cpp's on the
/// same prompt (`scripts/golden/fim_top3.py`: "#" 17.11, "1" 16.70, "a" 16.50 as logits).
/// Greedy text is not compared: "#" leads "a" by less than a logit.
#[tokio::test]
async fn fim_with_qwen2_5_coder() {
    let path = testutil::qwen2_5_coder().to_string_lossy().into_owned();
    let app = server(Config {
        n_ctx: 256,
        ..Config::default()
    });
    let prefix = "def add(a, b):\n    return ";
    let suffix = "\n\nprint(add(1, 2))";
    let r = send(
        &app,
        post(
            "/v1/completions",
            &json!({"model": path, "prompt": prefix, "suffix": suffix,
                    "max_tokens": 8, "temperature": 0, "logprobs": 3}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    let top = v["choices"][0]["logprobs"]["top_logprobs"][0]
        .as_object()
        .unwrap_or_else(|| panic!("no top_logprobs: {v}"));
    let mut candidates: Vec<&str> = top.keys().map(String::as_str).collect();
    candidates.sort_unstable();
    assert_eq!(candidates, ["#", "1", "a"], "{v}");
    // The prompt was <|fim_prefix|> prefix <|fim_suffix|> suffix <|fim_middle|>.
    let rendered = format!("<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>");
    let r = send(
        &app,
        post(
            "/tokenize",
            &json!({"model": path, "content": rendered, "with_pieces": true}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let pieces = r.json()["tokens"].as_array().unwrap().clone();
    assert_eq!(pieces[0]["piece"], "<|fim_prefix|>");
    assert_eq!(pieces.last().unwrap()["piece"], "<|fim_middle|>");
    assert_eq!(v["usage"]["prompt_tokens"], pieces.len());
}

#[tokio::test]
async fn embeddings_from_token_ids() {
    let app = default_server();
    let text = "the cat sat";
    let ids = tokenize(&app, &model(), text, true).await;
    let vectors = |v: &Value| -> Vec<Vec<f64>> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| serde_json::from_value(d["embedding"].clone()).unwrap())
            .collect()
    };
    let r = send(
        &app,
        post("/v1/embeddings", &json!({"model": model(), "input": text})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let by_text = vectors(&r.json()).remove(0);
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let r = send(
        &app,
        post("/v1/embeddings", &json!({"model": model(), "input": ids})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["usage"]["prompt_tokens"], ids.len());
    let by_ids = vectors(&v);
    assert_eq!(by_ids.len(), 1);
    assert!((dot(&by_ids[0], &by_text) - 1.0).abs() < 1e-5);
    let other = tokenize(&app, &model(), "stock prices fell", true).await;
    let r = send(
        &app,
        post(
            "/v1/embeddings",
            &json!({"model": model(), "input": [ids, other]}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let two = vectors(&r.json());
    assert_eq!(two.len(), 2);
    assert!((dot(&two[0], &by_text) - 1.0).abs() < 1e-5);
    assert!(dot(&two[1], &by_text) < 0.9999);
    refused(
        &app,
        "/v1/embeddings",
        json!({"model": model(), "input": [[1, 2], [3, 5000000]]}),
        "input[1][1]",
    )
    .await;
    refused(
        &app,
        "/v1/embeddings",
        json!({"model": model(), "input": [[1, 2], [3, -1]]}),
        "input[1][1]",
    )
    .await;
    refused(
        &app,
        "/v1/embeddings",
        json!({"model": model(), "input": [[1, 2], []]}),
        "input[1]",
    )
    .await;
}

fn preflight(headers: &str) -> Request<Body> {
    Request::options("/v1/chat/completions")
        .header(header::HOST, "localhost:11434")
        .header(header::ORIGIN, "http://localhost:3000")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(header::ACCESS_CONTROL_REQUEST_HEADERS, headers)
        .body(Body::empty())
        .unwrap()
}

/// What the OpenAI SDK for JavaScript sends from a browser.
const SDK_HEADERS: &[&str] = &[
    "authorization",
    "content-type",
    "openai-organization",
    "openai-project",
    "x-stainless-os",
    "x-stainless-lang",
    "x-stainless-package-version",
    "x-stainless-runtime",
    "x-stainless-runtime-version",
    "x-stainless-arch",
    "x-stainless-retry-count",
    "x-stainless-timeout",
    "x-stainless-helper-method",
];

#[tokio::test]
async fn cors_preflight_allows_the_openai_sdk_headers() {
    let app = server(Config {
        cors_origins: vec!["http://localhost:3000".into()],
        ..Config::default()
    });
    let r = send(&app, preflight(&SDK_HEADERS.join(","))).await;
    assert!(r.status.is_success(), "{}", r.status);
    let get = |h: header::HeaderName| {
        r.headers
            .get(h)
            .map(|v| v.to_str().unwrap().to_ascii_lowercase())
            .unwrap_or_default()
    };
    assert_eq!(
        get(header::ACCESS_CONTROL_ALLOW_ORIGIN),
        "http://localhost:3000"
    );
    let allowed = get(header::ACCESS_CONTROL_ALLOW_HEADERS);
    let allowed: Vec<&str> = allowed.split(',').map(str::trim).collect();
    for h in SDK_HEADERS {
        assert!(allowed.contains(h), "{h} not in {allowed:?}");
    }
    // Without named origins there is no CORS at all.
    let app = default_server();
    let r = send(&app, preflight("x-stainless-os")).await;
    assert!(r.headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
    assert!(r
        .headers
        .get(header::ACCESS_CONTROL_ALLOW_HEADERS)
        .is_none());
}
