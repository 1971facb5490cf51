//! `hearth serve`'s flags and environment: the API key from HEARTH_API_KEY, the reason a
//! port cannot be had said once, a models directory that must exist.

#[path = "common/serve.rs"]
mod serve;

use assert_cmd::Command;

fn hearth(home: &std::path::Path) -> Command {
    let mut c = Command::cargo_bin("hearth").expect("the hearth binary is built");
    c.env("HEARTH_HOME", home).env_remove("HEARTH_API_KEY");
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
fn a_busy_port_says_why_once() {
    let home = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let stderr = failure(hearth(home.path()).args(["serve", "--no-ledger", "--port", &port]));
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
    assert_eq!(
        stderr.to_lowercase().matches("in use").count(),
        1,
        "the reason must be said once: {stderr}"
    );
}

#[test]
fn a_models_dir_must_exist() {
    let home = tempfile::tempdir().unwrap();
    let missing = home.path().join("no-such-dir");
    let stderr = failure(
        hearth(home.path())
            .args(["serve", "--no-ledger", "--port", "0", "--models-dir"])
            .arg(&missing),
    );
    assert!(stderr.contains("--models-dir"), "{stderr}");
    assert!(stderr.contains("no-such-dir"), "{stderr}");
}

#[test]
fn serve_help_names_the_key_variable_and_the_limits() {
    let home = tempfile::tempdir().unwrap();
    let out = hearth(home.path())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "HEARTH_API_KEY",
        "--models-dir",
        "--header-timeout",
        "--body-timeout",
        "--max-connections",
    ] {
        assert!(help.contains(needle), "{needle} not in:\n{help}");
    }
}

/// The status of `GET /api/tags` with `key` as the bearer token (None: no header).
fn tags_status(base: &str, key: Option<&str>) -> u16 {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent.get(format!("{base}/api/tags"));
    if let Some(k) = key {
        req = req.header("Authorization", format!("Bearer {k}"));
    }
    req.call().expect("the server answers").status().as_u16()
}

#[test]
fn the_api_key_can_come_from_hearth_api_key_and_the_flag_wins() {
    let home = tempfile::tempdir().unwrap();
    let env = |key: &'static str| {
        [
            ("HEARTH_HOME", home.path().as_os_str()),
            ("HEARTH_OFFLINE", std::ffi::OsStr::new("1")),
            ("HEARTH_API_KEY", std::ffi::OsStr::new(key)),
        ]
    };
    let s = serve::start(&["--no-ledger"], &env("from-env"));
    assert_eq!(tags_status(&s.base, None), 401);
    assert_eq!(tags_status(&s.base, Some("wrong")), 401);
    assert_eq!(tags_status(&s.base, Some("from-env")), 200);
    drop(s);
    let s = serve::start(&["--no-ledger", "--api-key", "from-flag"], &env("from-env"));
    assert_eq!(tags_status(&s.base, Some("from-env")), 401);
    assert_eq!(tags_status(&s.base, Some("from-flag")), 200);
}
