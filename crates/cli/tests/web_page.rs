//! The web chat page end to end: the real `hearth serve` on 127.0.0.1 with the real SmolLM2
//! model, driven in Debian's headless Chromium by `tests/web/e2e.mjs` (playwright-core from
//! npm, installed once under the target directory).
//!
//! What it needs it sets up itself: `npm install` of the pinned playwright-core and, when
//! `/usr/bin/chromium` is missing and the test runs as root, `apt-get install chromium`.
//! When either cannot be had the test fails with the reason; it never skips.

#[path = "common/serve.rs"]
mod serve;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

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
    let process = serve::start(
        &args,
        &[
            ("HEARTH_HOME", home.path().as_os_str()),
            ("HEARTH_OFFLINE", std::ffi::OsStr::new("1")),
        ],
    );
    Server {
        process,
        _home: home,
    }
}

/// Runs one scenario of `e2e.mjs`; returns its standard output.
fn drive(scenario: &str, server: &Server, api_key: Option<&str>) -> String {
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
