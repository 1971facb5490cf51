//! `hearth serve` as the server tests run it: on a free 127.0.0.1 port, its stderr echoed,
//! killed when the test ends however it ends.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub struct Server {
    /// The process (a test may kill it early, as a crash would).
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `hearth serve --host 127.0.0.1 --port 0 --threads 2` plus `args`, with `env` set on the
/// command (HEARTH_HOME at least; HEARTH_OFFLINE only when `env` sets it); waits until it
/// says where it listens. The tests name models by path in the test-model cache, the
/// synthetic models and temporary directories: those are the server's `--models-dir`s.
pub fn start(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Server {
    start_with_threads(2, args, env)
}

/// [`start`] with `--threads threads`.
pub fn start_with_threads(
    threads: usize,
    args: &[&str],
    env: &[(&str, &std::ffi::OsStr)],
) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hearth"));
    cmd.args(["serve", "--host", "127.0.0.1", "--port", "0", "--threads"])
        .arg(threads.to_string());
    let synthetic =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/synthetic");
    for dir in [testutil::cache_dir(), std::env::temp_dir(), synthetic] {
        cmd.arg("--models-dir").arg(dir);
    }
    cmd.args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env_remove("HEARTH_OFFLINE")
        .env_remove("HEARTH_MODELS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start hearth serve");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[hearth] {line}");
            if let Some(addr) = line.split("listening on ").nth(1) {
                let _ = tx.send(addr.trim().to_string());
            }
        }
    });
    // Held before waiting, so that a server that never answers is still killed.
    let mut server = Server {
        child,
        base: String::new(),
    };
    server.base = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("hearth serve did not say where it listens");
    assert!(
        server.base.starts_with("http://127.0.0.1:"),
        "{}",
        server.base
    );
    server
}
