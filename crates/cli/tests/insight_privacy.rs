//! `hearth privacy`: every file hearth writes, what it holds, whether the network can be used
//! now, and the server's bind and auth; it only looks (creates nothing).

#[path = "common/store_cmd.rs"]
#[allow(dead_code)]
mod store_cmd;

use serde_json::Value;
use std::path::Path;
use store_cmd::{hearth, ok};

fn privacy(home: &Path, offline: bool) -> Value {
    let mut c = hearth(home);
    c.args(["privacy", "--json"]);
    if offline {
        c.env("HEARTH_OFFLINE", "1");
    }
    let out = ok(&mut c);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn place<'a>(j: &'a Value, suffix: &str) -> &'a Value {
    j["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"].as_str().unwrap().ends_with(suffix))
        .unwrap_or_else(|| panic!("no {suffix} in {j}"))
}

#[test]
fn lists_every_file_and_only_looks() {
    let home = tempfile::tempdir().unwrap();
    let j = privacy(home.path(), false);
    assert_eq!(
        Path::new(j["home"].as_str().unwrap()),
        std::path::absolute(home.path()).unwrap()
    );
    assert_eq!(j["home_from"], "HEARTH_HOME");
    for suffix in [
        "manifests",
        "blobs",
        "locks",
        "tmp",
        "ledger.db",
        "ledger.db-wal",
        "config.toml",
        "prices.json",
    ] {
        let p = place(&j, suffix);
        assert_eq!(p["exists"], false, "{p}");
        assert!(!p["holds"].as_str().unwrap().is_empty());
    }
    let ledger = place(&j, "ledger.db")["holds"].as_str().unwrap();
    assert!(ledger.contains("never a prompt or an answer"), "{ledger}");
    assert!(ledger.contains("recording is on"), "{ledger}");
    let history = place(&j, "(none)")["holds"].as_str().unwrap();
    assert!(history.contains("chat history: not written"), "{history}");
    assert!(
        std::fs::read_dir(home.path()).unwrap().next().is_none(),
        "privacy created files"
    );
    // Network: only downloads, and the sources are named.
    assert_eq!(j["network"]["offline"], false);
    assert_eq!(j["network"]["possible"], true);
    let uses = j["network"]["uses"].to_string();
    assert!(
        uses.contains("hearth pull") && uses.contains("huggingface.co"),
        "{uses}"
    );
    assert!(j["network"]["telemetry"]
        .as_str()
        .unwrap()
        .starts_with("none"));
    assert!(j["server"]["default_bind"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:11434"));
    assert!(j["server"]["auth"].as_str().unwrap().contains("--api-key"));
    assert_eq!(j["server"]["ledger"], true);
    // Words for people.
    let text = ok(hearth(home.path()).arg("privacy"));
    for needle in [
        "ledger.db",
        "config.toml",
        "network",
        "127.0.0.1:11434",
        "telemetry",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
}

#[test]
fn offline_and_ledger_off_are_reported() {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("config.toml"), "ledger = false\n").unwrap();
    let j = privacy(home.path(), true);
    assert_eq!(j["network"]["offline"], true);
    assert_eq!(j["network"]["possible"], false);
    let uses = j["network"]["uses"].to_string();
    assert!(!uses.contains("hearth pull"), "{uses}");
    let ledger = place(&j, "ledger.db")["holds"].as_str().unwrap();
    assert!(ledger.contains("recording is off"), "{ledger}");
    assert_eq!(j["server"]["ledger"], false);
    let config = place(&j, "config.toml");
    assert_eq!(config["exists"], true);
    assert!(config["bytes"].as_u64().unwrap() > 0);
    let text = ok(hearth(home.path())
        .arg("privacy")
        .env("HEARTH_OFFLINE", "1"));
    assert!(text.contains("none possible"), "{text}");
}

#[test]
fn a_broken_config_is_reported_not_fatal() {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("config.toml"), "ledger = [\n").unwrap();
    let j = privacy(home.path(), false);
    let ledger = place(&j, "ledger.db")["holds"].as_str().unwrap();
    assert!(ledger.contains("cannot be read"), "{ledger}");
    assert_eq!(j["server"]["ledger"], false);
}

#[test]
fn a_separate_model_store_is_listed_where_it_is() {
    let home = tempfile::tempdir().unwrap();
    let models = tempfile::tempdir().unwrap();
    let out = ok(hearth(home.path())
        .args(["privacy", "--json"])
        .env("HEARTH_MODELS", models.path()));
    let j: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let models = std::path::absolute(models.path()).unwrap();
    assert_eq!(Path::new(j["models"].as_str().unwrap()), models);
    for suffix in ["manifests", "blobs", "locks", "tmp"] {
        let p = Path::new(place(&j, suffix)["path"].as_str().unwrap()).to_owned();
        assert_eq!(p.parent(), Some(models.as_path()), "{suffix}");
    }
    let home = std::path::absolute(home.path()).unwrap();
    for suffix in ["ledger.db", "config.toml", "prices.json"] {
        let p = Path::new(place(&j, suffix)["path"].as_str().unwrap()).to_owned();
        assert_eq!(p.parent(), Some(home.as_path()), "{suffix}");
    }
    let text = ok(hearth(&home).arg("privacy").env("HEARTH_MODELS", &models));
    assert!(text.contains("(HEARTH_MODELS)"), "{text}");
}
