//! `hearth serve` under load with the real SmolLM2 model: four concurrent streams all complete
//! and need far fewer forward passes than four runs one after another (the throughput they
//! gain is printed; timings are not asserted on a shared machine), a client that disconnects
//! mid-stream frees its sequence within a second, and a full queue answers 503 with
//! Retry-After while the server stays healthy.

#[path = "common/serve.rs"]
mod serve;

use serde_json::{json, Value};
use serve::Server;
use std::io::Read;
use std::process::Command;
use std::time::{Duration, Instant};

fn start(extra: &[&str]) -> Server {
    let home = tempfile::tempdir().unwrap().keep();
    let mut args = vec!["--ctx", "2048"];
    args.extend_from_slice(extra);
    start_in(&home, &args)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(300)))
        .build()
        .into()
}

/// POSTs JSON; returns status, Retry-After and the body.
fn post(base: &str, path: &str, body: &Value) -> (u16, Option<String>, String) {
    let mut resp = agent()
        .post(&format!("{base}{path}"))
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (status, retry, text)
}

fn get(base: &str, path: &str) -> (u16, String) {
    let mut resp = agent()
        .get(&format!("{base}{path}"))
        .call()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap_or_default())
}

fn metric(base: &str, name: &str) -> f64 {
    let (_, text) = get(base, "/metrics");
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

/// A completion that does not stop early: a raw prompt without the chat template's end
/// marker, many tokens, a fixed seed.
fn long_completion(model: &str, i: usize, max_tokens: usize, stream: bool) -> Value {
    json!({
        "model": model,
        "prompt": format!("Chapter {i}. The old lighthouse keeper looked out at the sea and"),
        "max_tokens": max_tokens,
        "temperature": 0.8,
        "seed": i,
        "stream": stream,
    })
}

fn completion_tokens(body: &str) -> u64 {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["usage"]["completion_tokens"].as_u64().unwrap()
}

#[test]
fn four_concurrent_streams_share_forward_passes() {
    let model = testutil::smollm2().to_string_lossy().into_owned();
    let s = start(&["--parallel", "4"]);
    // Load the model first so neither phase pays for it.
    let (st, _, body) = post(
        &s.base,
        "/v1/completions",
        &long_completion(&model, 0, 2, false),
    );
    assert_eq!(st, 200, "{body}");
    const N: usize = 48;
    let passes0 = metric(&s.base, "hearth_forward_passes_total");
    let t = Instant::now();
    let mut seq_tokens = 0;
    let mut seq_texts = Vec::new();
    for i in 1..=4 {
        let (st, _, body) = post(
            &s.base,
            "/v1/completions",
            &long_completion(&model, i, N, false),
        );
        assert_eq!(st, 200, "{body}");
        seq_tokens += completion_tokens(&body);
        seq_texts.push(body);
    }
    let seq_time = t.elapsed();
    let passes1 = metric(&s.base, "hearth_forward_passes_total");
    let t = Instant::now();
    let handles: Vec<_> = (1..=4)
        .map(|i| {
            let base = s.base.clone();
            let body = long_completion(&model, i, N, true);
            std::thread::spawn(move || post(&base, "/v1/completions", &body))
        })
        .collect();
    let mut par_tokens = 0;
    for (i, h) in handles.into_iter().enumerate() {
        let (st, _, body) = h.join().unwrap();
        assert_eq!(st, 200, "{body}");
        assert!(
            body.contains("[DONE]"),
            "stream {i} did not complete: {body}"
        );
        let chunks: Vec<Value> = body
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["text"].as_str())
            .collect();
        // The same seed gives the same text batched or alone.
        let alone: Value = serde_json::from_str(&seq_texts[i]).unwrap();
        assert_eq!(
            text,
            alone["choices"][0]["text"].as_str().unwrap(),
            "stream {i}"
        );
        let last = chunks
            .iter()
            .rev()
            .find(|c| c["timings"].is_object())
            .expect("a final chunk with timings");
        par_tokens += last["timings"]["predicted_n"].as_u64().unwrap();
    }
    let par_time = t.elapsed();
    let passes2 = metric(&s.base, "hearth_forward_passes_total");
    let (seq_passes, par_passes) = (passes1 - passes0, passes2 - passes1);
    assert_eq!(seq_tokens, par_tokens);
    let seq_rate = seq_tokens as f64 / seq_time.as_secs_f64();
    let par_rate = par_tokens as f64 / par_time.as_secs_f64();
    eprintln!(
        "sequential: {seq_tokens} tokens in {:.2} s ({seq_rate:.1} tok/s, {seq_passes} passes); \
         concurrent: {par_tokens} tokens in {:.2} s ({par_rate:.1} tok/s, {par_passes} passes); \
         throughput x{:.2}",
        seq_time.as_secs_f64(),
        par_time.as_secs_f64(),
        par_rate / seq_rate
    );
    // Each pass reads every weight once: four streams together need about a quarter of the
    // passes (plus the prompts' own), which is where their throughput comes from.
    assert!(
        par_passes * 2.0 <= seq_passes,
        "concurrent streams took {par_passes} forward passes, sequential runs {seq_passes}"
    );
    assert!(metric(&s.base, "hearth_batched_steps_total") > 0.0);
}

#[test]
fn a_client_that_disconnects_frees_its_sequence_within_a_second() {
    let model = testutil::smollm2().to_string_lossy().into_owned();
    let s = start(&[]);
    let mut resp = agent()
        .post(&format!("{}/v1/completions", s.base))
        .header("Content-Type", "application/json")
        .send(long_completion(&model, 1, 1500, true).to_string())
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut reader = resp.body_mut().as_reader();
    let mut buf = [0u8; 256];
    let mut got = 0;
    while got < 1024 {
        let n = reader.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended early");
        got += n;
    }
    assert_eq!(metric(&s.base, "hearth_active_sequences"), 1.0);
    drop(resp);
    let t = Instant::now();
    while metric(&s.base, "hearth_active_sequences") != 0.0 {
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "the sequence still runs {:?} after the client left",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("freed after {:?}", t.elapsed());
}

#[test]
fn a_full_queue_is_503_and_the_server_stays_healthy() {
    let model = testutil::smollm2().to_string_lossy().into_owned();
    let s = start(&["--parallel", "1", "--queue", "1"]);
    // One long request runs and one waits; the rest must be refused at once.
    let base = s.base.clone();
    let m = model.clone();
    let running = std::thread::spawn(move || {
        post(
            &base,
            "/v1/completions",
            &long_completion(&m, 1, 300, false),
        )
    });
    while metric(&s.base, "hearth_active_sequences") < 1.0 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let base = s.base.clone();
    let m = model.clone();
    let waiting = std::thread::spawn(move || {
        post(&base, "/v1/completions", &long_completion(&m, 2, 4, false))
    });
    while metric(&s.base, "hearth_queue_depth") < 1.0 {
        std::thread::sleep(Duration::from_millis(20));
    }
    for i in 3..6 {
        let t = Instant::now();
        let (st, retry, body) = post(
            &s.base,
            "/v1/completions",
            &long_completion(&model, i, 4, false),
        );
        assert_eq!(st, 503, "{body}");
        assert_eq!(retry.as_deref(), Some("1"));
        assert!(body.contains("busy"), "{body}");
        assert!(t.elapsed() < Duration::from_secs(5), "refused, not queued");
        let (st, _) = get(&s.base, "/api/version");
        assert_eq!(st, 200);
    }
    let (st, _, body) = running.join().unwrap();
    assert_eq!(st, 200, "{body}");
    let (st, _, body) = waiting.join().unwrap();
    assert_eq!(st, 200, "{body}");
    let (st, _, body) = post(
        &s.base,
        "/v1/completions",
        &long_completion(&model, 7, 4, false),
    );
    assert_eq!(st, 200, "afterwards the server answers again: {body}");
}

#[test]
fn ps_shows_what_the_server_holds() {
    let model = testutil::smollm2().to_string_lossy().into_owned();
    let s = start(&[]);
    let ps = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
            .args(["ps", "--host", &s.base])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(ps(&[]).contains("no model is loaded"));
    let (st, _, body) = post(
        &s.base,
        "/api/generate",
        &json!({"model": model, "prompt": "Hi", "stream": false, "keep_alive": "10m",
                "options": {"num_predict": 3}}),
    );
    assert_eq!(st, 200, "{body}");
    let table = ps(&[]);
    assert!(
        table.contains("SmolLM2") && table.contains("2048"),
        "{table}"
    );
    assert!(
        table.contains("9 minutes from now") || table.contains("10 minutes from now"),
        "{table}"
    );
    let json: Value = serde_json::from_str(&ps(&["--json"])).unwrap();
    assert_eq!(json["models"][0]["context_length"], 2048);
    // No server there: a clear error, not a hang.
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["ps", "--host", "127.0.0.1:9"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no hearth server answers"));
}

/// Starts a server on a free port with `home` as its HEARTH_HOME.
fn start_in(home: &std::path::Path, extra: &[&str]) -> Server {
    serve::start(
        extra,
        &[
            ("HEARTH_HOME", home.as_os_str()),
            ("HEARTH_OFFLINE", std::ffi::OsStr::new("1")),
        ],
    )
}

#[test]
fn the_server_records_usage_without_text_unless_told_not_to() {
    let model = testutil::smollm2().to_string_lossy().into_owned();
    let home = tempfile::tempdir().unwrap();
    let s = start_in(home.path(), &[]);
    let secret = "the-password-is-swordfish";
    let (st, _, body) = post(
        &s.base,
        "/v1/completions",
        &json!({"model": model, "prompt": secret, "max_tokens": 5}),
    );
    assert_eq!(st, 200, "{body}");
    let (st, _, body) = post(
        &s.base,
        "/api/chat",
        &json!({"model": model, "stream": false, "options": {"num_predict": 4},
                "messages": [{"role": "user", "content": secret}]}),
    );
    assert_eq!(st, 200, "{body}");
    // Rows are written on the ledger's own thread: wait for both.
    let db = home.path().join("ledger.db");
    let t = Instant::now();
    let rows: Vec<(String, String, i64, i64)> = loop {
        let rows = rusqlite::Connection::open(&db).ok().and_then(|c| {
            let mut q = c
                .prepare("SELECT model, client, prompt_tokens, completion_tokens FROM requests ORDER BY id")
                .ok()?;
            let r = q
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .ok()?
                .collect::<Result<Vec<_>, _>>()
                .ok();
            r
        });
        if let Some(r) = rows.filter(|r| r.len() == 2) {
            break r;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the ledger has no two rows"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(rows[0].1, "openai");
    assert_eq!(rows[1].1, "ollama");
    assert_eq!(
        rows[0].0, "SmolLM2-135M-Instruct.Q4_1.gguf",
        "a file's name, not its path"
    );
    assert_eq!(rows[0].3, 5);
    assert_eq!(rows[1].3, 4);
    assert!(rows[0].2 >= 5 && rows[1].2 > rows[0].2, "{rows:?}");
    drop(s);
    for entry in std::fs::read_dir(home.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{} holds the prompt",
                path.display()
            );
        }
    }
    // --no-ledger: nothing is created.
    let quiet = tempfile::tempdir().unwrap();
    let s = start_in(quiet.path(), &["--no-ledger"]);
    let (st, _, body) = post(
        &s.base,
        "/v1/completions",
        &json!({"model": model, "prompt": "Hi", "max_tokens": 2}),
    );
    assert_eq!(st, 200, "{body}");
    drop(s);
    assert!(!quiet.path().join("ledger.db").exists());
}
