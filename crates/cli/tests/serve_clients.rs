//! `hearth serve` as a real process on 127.0.0.1, driven by the official OpenAI and Ollama
//! Python clients (pip-installed into a virtualenv cached under the target directory).
//! A failed pip install fails the test; it never skips.

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

#[test]
fn official_python_clients_work_against_hearth_serve() {
    let model = testutil::smollm2();
    let python = client_venv();
    let home = tempfile::tempdir().unwrap();
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
        .env("HEARTH_OFFLINE", "1")
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
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients/official_clients.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(&base)
        .arg(&model)
        .output()
        .expect("run the client script");
    drop(server);
    assert!(
        out.status.success(),
        "client script failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("all client checks passed"));
}
