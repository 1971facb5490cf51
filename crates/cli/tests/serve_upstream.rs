//! `hearth serve --upstream NAME=URL` with the real binary: bad values stop it before it
//! listens; a request for NAME reaches a stub OpenAI server (started here on 127.0.0.1) with
//! the key from HEARTH_UPSTREAM_KEY; the ledger records the answer as remote and `hearth
//! usage` shows it apart; an answer without token counts is recorded as unknown and `hearth
//! usage` marks its sums as lower bounds; `hearth privacy` says where such prompts go.

#[path = "common/http_stub.rs"]
mod http_stub;
#[path = "common/serve.rs"]
mod serve;

use assert_cmd::Command;
use serde_json::{json, Value};
use std::io::Write;
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn hearth(home: &std::path::Path) -> Command {
    let mut c = Command::cargo_bin("hearth").expect("the hearth binary is built");
    c.env("HEARTH_HOME", home)
        .env_remove("HEARTH_API_KEY")
        .env_remove("HEARTH_UPSTREAM_KEY")
        .env_remove("HEARTH_OFFLINE");
    c
}

/// Exit code 1 and the `error:` text, with no panic.
fn failure(c: &mut Command) -> String {
    let out = c.output().expect("hearth runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("error:"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn bad_upstreams_stop_the_server_before_it_listens() {
    let home = tempfile::tempdir().unwrap();
    let serve = |extra: &[&str]| {
        let mut c = hearth(home.path());
        c.args(["serve", "--no-ledger", "--port", "0"]).args(extra);
        failure(&mut c)
    };
    let e = serve(&["--upstream", "big"]);
    assert!(e.contains("NAME=URL") && e.contains("\"big\""), "{e}");
    let e = serve(&["--upstream", "big=ftp://h/v1"]);
    assert!(e.contains("only http:// and https://"), "{e}");
    let e = serve(&[
        "--upstream",
        "big=http://h:8000/v1",
        "--upstream",
        "big=http://g/v1",
    ]);
    assert!(e.contains("\"big\" is given to two upstreams"), "{e}");
    let e = serve(&["--upstream", "big=http://h/v1", "--upstream-timeout", "0"]);
    assert!(e.contains("--upstream-timeout"), "{e}");
    // config.toml's tables are checked the same way, and say where they are.
    std::fs::write(
        home.path().join("config.toml"),
        "[[upstream]]\nname = \"cfg\"\nurl = \"gpu-box:8000\"\n",
    )
    .unwrap();
    let e = serve(&[]);
    assert!(e.contains("config.toml") && e.contains("cfg"), "{e}");
    std::fs::write(
        home.path().join("config.toml"),
        "[[upstream]]\nname = \"cfg\"\nurl = \"http://h/v1\"\nkey_env = \"NO_SUCH_VAR_FOR_HEARTH\"\n",
    )
    .unwrap();
    let e = serve(&[]);
    assert!(e.contains("NO_SUCH_VAR_FOR_HEARTH"), "{e}");
    // A CA file that is not there, or holds no certificate, is named.
    std::fs::write(
        home.path().join("config.toml"),
        "[[upstream]]\nname = \"cfg\"\nurl = \"https://h/v1\"\nca_file = \"no-such-ca.pem\"\n",
    )
    .unwrap();
    let e = serve(&[]);
    assert!(
        e.contains("config.toml") && e.contains("no-such-ca.pem") && e.contains("cannot read"),
        "{e}"
    );
    std::fs::remove_file(home.path().join("config.toml")).unwrap();
    let not_pem = home.path().join("not-a-ca.pem");
    std::fs::write(&not_pem, "just some text\n").unwrap();
    let e = serve(&[
        "--upstream",
        "big=https://h/v1",
        "--upstream-ca",
        not_pem.to_str().unwrap(),
    ]);
    assert!(
        e.contains("--upstream-ca") && e.contains("not-a-ca.pem") && e.contains("no certificate"),
        "{e}"
    );
    // Offline means no prompt leaves the machine either.
    let mut c = hearth(home.path());
    c.env("HEARTH_OFFLINE", "1").args([
        "serve",
        "--no-ledger",
        "--port",
        "0",
        "--upstream",
        "big=http://h/v1",
    ]);
    let e = failure(&mut c);
    assert!(e.contains("HEARTH_OFFLINE"), "{e}");
}

/// A stub OpenAI server answering every chat request with a short event stream, ending with
/// a usage event when `usage` (otherwise it ignores `stream_options.include_usage`, as many
/// servers do); sends the head of each request it gets.
fn stub(usage: bool) -> (String, mpsc::Receiver<String>) {
    let (tx, rx) = mpsc::channel();
    let addr = http_stub::serve(move |mut conn, request| {
        let _ = tx.send(request.head);
        let _ = conn.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n",
        );
        let mut events = vec![
            json!({"choices": [{"index": 0, "delta": {"content": "far "}}]}),
            json!({"choices": [{"index": 0, "delta": {"content": "away"}, "finish_reason": "stop"}]}),
        ];
        if usage {
            events.push(
                json!({"choices": [], "usage": {"prompt_tokens": 21, "completion_tokens": 2}}),
            );
        }
        for e in events {
            let _ = write!(conn, "data: {e}\n\n");
            let _ = conn.flush();
        }
        let _ = conn.write_all(b"data: [DONE]\n\n");
    });
    (addr, rx)
}

#[test]
fn a_remote_answer_streams_through_and_is_recorded_as_remote() {
    let home = tempfile::tempdir().unwrap();
    let (addr, heads) = stub(true);
    let s = serve_upstream(home.path(), &addr);
    let text = ask_big(&s);
    assert!(text.contains("far ") && text.contains("away"), "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert!(!text.contains("prompt_tokens"), "{text}");
    let head = heads.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(
        head.lines()
            .any(|l| l.eq_ignore_ascii_case("authorization: Bearer up-key")),
        "{head}"
    );

    let usage = remote_usage(home.path());
    assert_eq!(usage["remote"][0]["key"], format!("big @ {addr}"));
    assert_eq!(usage["remote"][0]["prompt_tokens"], 21);
    assert_eq!(usage["remote"][0]["unknown_token_requests"], 0);
    assert_eq!(usage["remote_total"]["completion_tokens"], 2);
    // Not this machine's work: nothing in the local totals or the cloud comparison.
    assert_eq!(usage["total"]["requests"], 0);
    assert!(usage["cloud"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["cost"] == 0.0));
    let human = hearth(home.path()).arg("usage").output().unwrap();
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(human.contains("Answered by other machines"), "{human}");
    assert!(!human.contains("reported no token counts"), "{human}");
    drop(s);
}

/// `hearth serve --upstream big=http://ADDR/v1` with its ledger in `home`.
fn serve_upstream(home: &std::path::Path, addr: &str) -> serve::Server {
    let upstream = format!("big=http://{addr}/v1");
    serve::start(
        &["--upstream", &upstream],
        &[
            ("HEARTH_HOME", home.as_os_str()),
            ("HEARTH_UPSTREAM_KEY", std::ffi::OsStr::new("up-key")),
        ],
    )
}

/// One streamed chat request for `big`: the answer's text.
fn ask_big(s: &serve::Server) -> String {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent
        .post(format!("{}/v1/chat/completions", s.base))
        .header("Content-Type", "application/json")
        .send(
            json!({"model": "big", "stream": true, "messages": [{"role": "user", "content": "Hi"}]})
                .to_string(),
        )
        .expect("the server answers");
    assert_eq!(resp.status().as_u16(), 200);
    resp.body_mut().read_to_string().unwrap()
}

/// `hearth usage --json` once the remote row is there: the ledger is written on a thread of
/// its own, so the row may come a little after the answer.
fn remote_usage(home: &std::path::Path) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = hearth(home).args(["usage", "--json"]).output().unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if v["remote"].as_array().is_some_and(|r| !r.is_empty()) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "no remote row in the ledger: {v}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_remote_answer_without_token_counts_is_marked_unknown_in_usage() {
    let home = tempfile::tempdir().unwrap();
    let (addr, _heads) = stub(false);
    let s = serve_upstream(home.path(), &addr);
    let text = ask_big(&s);
    assert!(text.contains("far ") && text.contains("away"), "{text}");
    let usage = remote_usage(home.path());
    drop(s);
    let big = &usage["remote"][0];
    assert_eq!(big["key"], format!("big @ {addr}"), "{usage}");
    assert_eq!(big["requests"], 1);
    assert_eq!(big["unknown_token_requests"], 1);
    assert_eq!(usage["remote_total"]["unknown_token_requests"], 1);
    // The local totals know all their counts.
    assert_eq!(usage["total"]["unknown_token_requests"], 0);

    // The row itself says unknown, not 0 tokens.
    let c = rusqlite::Connection::open(home.path().join("ledger.db")).unwrap();
    let row: (i64, i64, i64) = c
        .query_row(
            "SELECT prompt_tokens, completion_tokens, tokens_unknown FROM requests",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(row, (0, 0, 3), "both counts unknown");
    drop(c);

    let human = hearth(home.path()).arg("usage").output().unwrap();
    assert!(human.status.success());
    let human = String::from_utf8_lossy(&human.stdout);
    let line = human
        .lines()
        .find(|l| l.starts_with(&format!("big @ {addr}")))
        .unwrap_or_else(|| panic!("no row for the remote model: {human}"));
    // Nothing known: `?`, not 0.
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cells[3..6], ["1", "?", "?"], "{line}");
    assert!(
        human.contains(
            "1 remote answer(s) reported no token counts; sums marked * are lower bounds"
        ),
        "{human}"
    );
}

#[test]
fn privacy_names_the_host_that_remote_prompts_go_to() {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join("config.toml"),
        "[[upstream]]\nname = \"llama-405b\"\nurl = \"http://gpu-box:8000/v1\"\n",
    )
    .unwrap();
    let out = hearth(home.path()).arg("privacy").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("model llama-405b to gpu-box:8000") && text.contains("leave this machine"),
        "{text}"
    );
    assert!(text.contains("unencrypted (http://)"), "{text}");
    let out = hearth(home.path())
        .args(["privacy", "--json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["network"]["remote_models"][0]["host"], "gpu-box:8000");
}
