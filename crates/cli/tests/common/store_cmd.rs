//! `hearth` as the store tests run it: its own HEARTH_HOME, the store's other settings cleared,
//! and helpers that check the exit code and streams. Included by each store CLI test file.

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// `hearth` with HEARTH_HOME set and the store's other settings cleared from the environment.
pub fn hearth(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hearth"));
    c.env("HEARTH_HOME", home);
    for k in [
        "HEARTH_MODELS",
        "HEARTH_OFFLINE",
        "HEARTH_SOURCE",
        "HEARTH_PYTHON",
        "HF_ENDPOINT",
        "HF_TOKEN",
    ] {
        c.env_remove(k);
    }
    c.stdin(Stdio::null());
    c
}

pub fn run(c: &mut Command) -> (i32, String, String) {
    let out: Output = c.output().expect("hearth runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn ok(c: &mut Command) -> String {
    let (code, stdout, stderr) = run(c);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    stdout
}

pub fn fails(c: &mut Command, needle: &str) -> String {
    let (code, stdout, stderr) = run(c);
    assert_eq!(code, 1, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stderr.starts_with("error:"), "{stderr}");
    assert!(
        stderr.contains(needle),
        "expected {needle:?} in stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    stderr
}
