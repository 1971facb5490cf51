//! The web chat page end to end: the real `hearth serve` on 127.0.0.1 with the real SmolLM2
//! model, driven in Debian's headless Chromium by `tests/web/e2e.mjs` (playwright-core from
//! npm, installed once under the target directory).
//!
//! What it needs it sets up itself: `npm install` of the pinned playwright-core and, when
//! `/usr/bin/chromium` is missing and the test runs as root, `apt-get install chromium`.
//! When either cannot be had the test fails with the reason; it never skips.

#[path = "common/http_stub.rs"]
mod http_stub;
#[path = "common/serve.rs"]
mod serve;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::Duration;

const CHROMIUM: &str = "/usr/bin/chromium";
const MODEL: &str = "smollm2";
/// A base model (pretrained, no chat template) whose name sorts before [`MODEL`].
const BASE_MODEL: &str = "gemma3";

/// The scenarios share the npm directory and the machine's few cores: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// The server and the store it serves from, which lives as long as it.
struct Server {
    process: serve::Server,
    _home: tempfile::TempDir,
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Debian's chromium, installed with apt when missing and we may.
fn chromium() -> &'static str {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        if Path::new(CHROMIUM).is_file() {
            return;
        }
        let mut why = String::new();
        if is_root() {
            let apt = |args: &[&str]| {
                run(
                    Command::new("apt-get")
                        .args(args)
                        .env("DEBIAN_FRONTEND", "noninteractive"),
                    &format!("apt-get {}", args.join(" ")),
                )
            };
            let install = ["install", "-y", "-qq", "chromium"];
            if let Err(first) = apt(&install) {
                why = first;
                if let Err(e) = apt(&["update", "-qq"]).and_then(|_| apt(&install)) {
                    why = e;
                }
            }
        } else {
            why = "not running as root, so the test cannot apt-get install it".into();
        }
        assert!(
            Path::new(CHROMIUM).is_file(),
            "the web page test needs Debian's Chromium at {CHROMIUM} and could not get it: {why}\n\
             Install it with `apt-get install chromium` (as root) and run the test again."
        );
    });
    CHROMIUM
}

/// A directory with the pinned playwright-core, installed once and reused.
fn playwright_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web/package.json");
        let manifest = std::fs::read_to_string(&src).expect("read tests/web/package.json");
        let wanted: serde_json::Value = serde_json::from_str(&manifest).unwrap();
        let version = wanted["dependencies"]["playwright-core"]
            .as_str()
            .expect("package.json pins playwright-core")
            .to_string();
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-e2e-node");
        let installed = dir.join("node_modules/playwright-core/package.json");
        let ready = std::fs::read_to_string(&installed)
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .is_some_and(|v| v["version"] == version.as_str());
        if !ready {
            std::fs::create_dir_all(&dir).expect("create the npm directory");
            std::fs::write(dir.join("package.json"), &manifest).expect("write package.json");
            if let Err(e) = run(
                Command::new("npm")
                    .args([
                        "install",
                        "--no-audit",
                        "--no-fund",
                        "--loglevel=error",
                        "--ignore-scripts",
                    ])
                    .current_dir(&dir),
                "npm install playwright-core",
            ) {
                panic!("the web page test needs playwright-core {version} from npm (and Node.js 18 or later): {e}");
            }
        }
        dir
    })
}

/// `hearth` with a fresh store holding the SmolLM2 model as `smollm2` and, listed before it,
/// the Gemma 3 base model as `gemma3` (the page must not pick a base model by default),
/// serving on a free port.
fn start_server(api_key: Option<&str>) -> Server {
    start_server_with(api_key, &[], true)
}

/// [`start_server`] with more `hearth serve` arguments; `offline` sets HEARTH_OFFLINE on the
/// server (which refuses upstreams: no prompt may leave an offline machine).
fn start_server_with(api_key: Option<&str>, extra: &[&str], offline: bool) -> Server {
    let home = tempfile::tempdir().unwrap();
    let hearth = env!("CARGO_BIN_EXE_hearth");
    for (name, model) in [
        (MODEL, testutil::smollm2()),
        (BASE_MODEL, testutil::gemma3()),
    ] {
        run(
            Command::new(hearth)
                .args(["create", name, "--from"])
                .arg(&model)
                .env("HEARTH_HOME", home.path())
                .env("HEARTH_OFFLINE", "1"),
            "hearth create",
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
    let mut args = vec!["--ctx", "2048"];
    if let Some(key) = api_key {
        args.extend(["--api-key", key]);
    }
    args.extend(extra);
    let mut env = vec![("HEARTH_HOME", home.path().as_os_str())];
    if offline {
        env.push(("HEARTH_OFFLINE", std::ffi::OsStr::new("1")));
    }
    let process = serve::start(&args, &env);
    Server {
        process,
        _home: home,
    }
}

/// Runs one scenario of `e2e.mjs`; returns its standard output.
fn drive(scenario: &str, server: &Server, api_key: Option<&str>) -> String {
    drive_with(scenario, server, api_key, &[])
}

/// [`drive`] with more environment for the script.
fn drive_with(
    scenario: &str,
    server: &Server,
    api_key: Option<&str>,
    env: &[(&str, &str)],
) -> String {
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-e2e-out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web/e2e.mjs");
    let out = Command::new("node")
        .arg(&script)
        .env("E2E_SCENARIO", scenario)
        .env("E2E_BASE", &server.process.base)
        .env("E2E_MODEL", MODEL)
        .env("E2E_BASE_MODEL", BASE_MODEL)
        .env("E2E_API_KEY", api_key.unwrap_or(""))
        .env("E2E_OUT", &out_dir)
        .env("E2E_CHROMIUM", chromium())
        .env("E2E_PLAYWRIGHT_DIR", playwright_dir())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run node (the web page test needs Node.js 18 or later)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the browser scenario {scenario:?} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains(&format!("scenario {scenario} passed")),
        "{stdout}"
    );
    for line in stdout.lines().filter(|l| l.starts_with("screenshot: ")) {
        let path = line.trim_start_matches("screenshot: ");
        assert!(Path::new(path).is_file(), "missing {path}");
    }
    stdout
}

#[test]
fn web_page_chats_streams_stops_and_keeps_conversations() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    chromium();
    playwright_dir();
    let server = start_server(None);
    let stdout = drive("main", &server, None);
    println!("{stdout}");
}

#[test]
fn web_page_asks_for_the_api_key_once() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    chromium();
    playwright_dir();
    let key = "hearth-web-test-key";
    let server = start_server(Some(key));
    let stdout = drive("key", &server, Some(key));
    println!("{stdout}");
}

#[test]
fn web_page_renders_tables_and_highlights_code_safely() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    chromium();
    playwright_dir();
    let server = start_server(None);
    let stdout = drive("markdown", &server, None);
    println!("{stdout}");
}

/// What the stub upstream saw of one request.
#[derive(Debug)]
enum StubEvent {
    /// A chat request's JSON body.
    Request(serde_json::Value),
    /// The client went away before the answer was written out (a write failed).
    ClientGone,
}

/// A stub OpenAI server on 127.0.0.1 for the remote scenario. What it answers depends on the
/// last user message: "slow" streams 60 pieces 100 ms apart (for Stop), "break" sends half a
/// piece of text and closes the connection without finishing the stream, and anything else
/// streams "Hello from the remote box." with its usage. Each request and each early
/// disconnect is reported on the channel.
fn remote_stub() -> (String, mpsc::Receiver<StubEvent>) {
    let (tx, rx) = mpsc::channel();
    let addr = http_stub::serve(move |mut conn, request| {
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap_or_default();
        let last = body["messages"]
            .as_array()
            .and_then(|m| m.last())
            .and_then(|m| m["content"].as_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let _ = tx.send(StubEvent::Request(body));
        let event = |content: &str, finish: Option<&str>| {
            let delta = serde_json::json!({"content": content});
            let choice = serde_json::json!({"index": 0, "delta": delta, "finish_reason": finish});
            format!("data: {}\n\n", serde_json::json!({"choices": [choice]}))
        };
        let mut send = |text: &str| -> bool {
            conn.write_all(text.as_bytes()).is_ok() && conn.flush().is_ok()
        };
        if !send("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
        {
            return;
        }
        if last.contains("break") {
            send(&event("Half an ans", None));
            return; // closed mid-answer: no finish reason, no [DONE]
        }
        let (pieces, pause): (Vec<String>, u64) = if last.contains("slow") {
            ((1..=60).map(|i| format!("{i} ")).collect(), 100)
        } else {
            (
                ["Hello ", "from ", "the ", "remote ", "box."]
                    .map(String::from)
                    .to_vec(),
                30,
            )
        };
        let n = pieces.len();
        for (i, piece) in pieces.iter().enumerate() {
            let finish = (i + 1 == n).then_some("stop");
            if !send(&event(piece, finish)) {
                let _ = tx.send(StubEvent::ClientGone);
                return;
            }
            std::thread::sleep(Duration::from_millis(pause));
        }
        let usage = serde_json::json!({"choices": [], "usage": {"prompt_tokens": 17, "completion_tokens": n}});
        send(&format!("data: {usage}\n\ndata: [DONE]\n\n"));
    });
    (addr, rx)
}

#[test]
fn web_page_chats_with_a_remote_model_and_shows_it_is_remote() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    chromium();
    playwright_dir();
    let (addr, events) = remote_stub();
    let upstream = format!("big=http://{addr}/v1");
    let server = start_server_with(None, &["--upstream", &upstream], false);
    let stdout = drive_with(
        "remote",
        &server,
        None,
        &[("E2E_REMOTE_MODEL", "big"), ("E2E_REMOTE_HOST", &addr)],
    );
    println!("{stdout}");

    // The page asked the stub three times, through hearth, with the page's settings; the
    // answer it stopped was cut off at the stub too (hearth closed the upstream connection).
    let mut requests = Vec::new();
    let mut gone = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < deadline && (requests.len() < 3 || gone == 0) {
        match events.recv_timeout(Duration::from_millis(200)) {
            Ok(StubEvent::Request(body)) => requests.push(body),
            Ok(StubEvent::ClientGone) => gone += 1,
            Err(_) => {}
        }
    }
    assert_eq!(requests.len(), 3, "{requests:#?}");
    for body in &requests {
        assert_eq!(body["stream"], true, "{body}");
        assert_eq!(body["max_tokens"], 40, "the page's Max tokens: {body}");
        let last = &body["messages"].as_array().expect("messages")[..];
        assert_eq!(last.last().unwrap()["role"], "user", "{body}");
    }
    assert_eq!(requests[0]["messages"][0]["content"], "Say hello.");
    // The later requests carry the conversation so far.
    assert!(
        requests[2]["messages"].as_array().unwrap().len() >= 5,
        "{:#}",
        requests[2]
    );
    assert_eq!(gone, 1, "Stop in the page closed the stub's stream");
}
