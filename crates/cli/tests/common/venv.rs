//! Python virtualenvs for the client tests: made under the target directory once, kept
//! between runs, and filled from the package index with pip. A failed step fails the test;
//! it never skips.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `cmd`; panics with its output when it cannot start or fails.
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

/// The python of the virtualenv `CARGO_TARGET_TMPDIR/name`, with `packages` installed.
/// `imports` (`import a, b`) tells whether an existing one is ready; when it is not, the
/// virtualenv is made (again) and the packages installed.
pub fn python(name: &str, packages: &[&str], imports: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let python = dir.join("bin").join("python");
    let ready = python.is_file()
        && Command::new(&python)
            .args(["-c", imports])
            .status()
            .is_ok_and(|s| s.success());
    if !ready {
        run(
            Command::new("python3").args(["-m", "venv"]).arg(&dir),
            "python3 -m venv",
        );
        run(
            Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .args(packages),
            &format!("pip install {}", packages.join(" ")),
        );
    }
    python
}

/// The official `openai` and `ollama` clients (shared by the tests that drive them).
pub fn openai_and_ollama() -> PathBuf {
    python(
        "serve-clients-venv",
        &["openai", "ollama"],
        "import openai, ollama",
    )
}
