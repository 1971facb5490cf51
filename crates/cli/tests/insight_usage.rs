//! The usage ledger from the CLI: `hearth run` records one row per answer (counts, never text);
//! `--no-ledger` and `ledger = false` write nothing; a corrupt or locked ledger warns once and
//! the answer comes all the same; `hearth usage` totals, filters by date and prints JSON.

#[path = "common/store_cmd.rs"]
#[allow(dead_code)]
mod store_cmd;

use serde_json::Value;
use std::path::Path;
use store_cmd::{hearth, ok, run};

fn ask(home: &Path, extra: &[&str]) -> (i32, String, String) {
    let model = testutil::smollm2();
    let mut c = hearth(home);
    c.arg("run")
        .arg(&model)
        .args(["The capital of France is", "-n", "6", "--temperature", "0"])
        .args(["--threads", "2"])
        .args(extra);
    run(&mut c)
}

fn answered(home: &Path, extra: &[&str]) -> String {
    let (code, stdout, stderr) = ask(home, extra);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(!stdout.trim().is_empty(), "no answer; stderr: {stderr}");
    stderr
}

fn usage_json(home: &Path, args: &[&str]) -> Value {
    let out = ok(hearth(home).arg("usage").arg("--json").args(args));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn rows(home: &Path) -> Vec<(String, String, i64, i64)> {
    let c = rusqlite::Connection::open(home.join("ledger.db")).unwrap();
    let mut s = c
        .prepare("SELECT model, client, prompt_tokens, completion_tokens FROM requests ORDER BY id")
        .unwrap();
    s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn run_records_counts_and_usage_reports_them() {
    let home = tempfile::tempdir().unwrap();
    let stderr = answered(home.path(), &[]);
    assert!(!stderr.contains("warning"), "{stderr}");
    answered(home.path(), &["--raw"]);
    let r = rows(home.path());
    assert_eq!(r.len(), 2, "{r:?}");
    let name = testutil::smollm2()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    for (model, client, prompt, completion) in &r {
        assert_eq!(model, &name, "a file is recorded by its name only");
        assert_eq!(client, "cli");
        assert!(*prompt > 3 && *completion >= 1 && *completion <= 6, "{r:?}");
    }
    // Nothing of the text is stored anywhere in the ledger's files.
    for f in ["ledger.db", "ledger.db-wal"] {
        if let Ok(bytes) = std::fs::read(home.path().join(f)) {
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains("capital of France"), "{f} holds the prompt");
        }
    }
    let j = usage_json(home.path(), &[]);
    assert_eq!(j["total"]["requests"], 2);
    let prompt: i64 = r.iter().map(|x| x.2).sum();
    let completion: i64 = r.iter().map(|x| x.3).sum();
    assert_eq!(j["total"]["prompt_tokens"], prompt);
    assert_eq!(j["total"]["completion_tokens"], completion);
    assert_eq!(j["by_model"].as_array().unwrap().len(), 1);
    assert_eq!(j["by_model"][0]["key"], name.as_str());
    assert_eq!(j["by_day"].as_array().unwrap().len(), 1);
    let label = j["total"]["energy_label"].as_str().unwrap();
    assert!(
        ["measured", "estimate", "measured+estimate"].contains(&label),
        "{label}"
    );
    assert!(j["total"]["energy_kwh"].as_f64().unwrap() >= 0.0);
    let cloud = j["cloud"].as_array().unwrap();
    assert!(!cloud.is_empty());
    for c in cloud {
        let expected = (prompt as f64 * c["input_per_million"].as_f64().unwrap()
            + completion as f64 * c["output_per_million"].as_f64().unwrap())
            / 1e6;
        assert!((c["cost"].as_f64().unwrap() - expected).abs() < 1e-12);
        assert!(c["as_of"].as_str().unwrap().len() == 10);
    }
    assert!(j["cloud_note"].as_str().unwrap().contains("Reference"));
    // The human table says the same.
    let out = ok(hearth(home.path()).arg("usage"));
    assert!(out.contains("by model") && out.contains(&name), "{out}");
    assert!(out.contains("cloud API prices"), "{out}");
    assert!(out.contains("as of"), "{out}");
}

#[test]
fn since_filters_by_day() {
    let home = tempfile::tempdir().unwrap();
    answered(home.path(), &[]);
    // Two old rows, written as another hearth would have.
    let c = rusqlite::Connection::open(home.path().join("ledger.db")).unwrap();
    for day_ms in [1_600_000_000_000i64, 1_600_000_000_000 + 86_400_000 * 3] {
        c.execute(
            "INSERT INTO requests (at_ms, model, client, prompt_tokens, completion_tokens, \
             load_ms, prompt_ms, generation_ms, energy_joules, energy_source) \
             VALUES (?1, 'old', 'openai', 100, 50, 0, 10, 20, 36.0, 'estimated-cpu-time')",
            [day_ms],
        )
        .unwrap();
    }
    drop(c);
    let all = usage_json(home.path(), &[]);
    assert_eq!(all["total"]["requests"], 3);
    assert_eq!(all["by_day"].as_array().unwrap().len(), 3);
    assert_eq!(all["by_model"].as_array().unwrap().len(), 2);
    let old = all["by_model"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["key"] == "old")
        .unwrap();
    // 2 × 36 J = 2e-5 kWh, an estimate.
    assert!((old["energy_kwh"].as_f64().unwrap() - 2e-5).abs() < 1e-12);
    assert_eq!(old["energy_label"], "estimate");
    let recent = usage_json(home.path(), &["--since", "2021-01-01"]);
    assert_eq!(recent["total"]["requests"], 1);
    assert_eq!(recent["since"], "2021-01-01");
    let none = usage_json(home.path(), &["--since", "2999-01-01"]);
    assert_eq!(none["total"]["requests"], 0);
    let out = ok(hearth(home.path()).args(["usage", "--since", "2999-01-01"]));
    assert!(out.contains("no requests recorded in this period"), "{out}");
    let (code, _, stderr) = run(hearth(home.path()).args(["usage", "--since", "yesterday"]));
    assert_eq!(code, 1);
    assert!(stderr.contains("YYYY-MM-DD"), "{stderr}");
}

#[test]
fn no_ledger_flag_and_config_write_nothing() {
    let home = tempfile::tempdir().unwrap();
    answered(home.path(), &["--no-ledger"]);
    assert!(!home.path().join("ledger.db").exists());
    std::fs::write(home.path().join("config.toml"), "ledger = false\n").unwrap();
    answered(home.path(), &[]);
    assert!(!home.path().join("ledger.db").exists());
    let out = ok(hearth(home.path()).arg("usage"));
    assert!(out.contains("no requests recorded yet"), "{out}");
    assert!(out.contains("recording is off"), "{out}");
    assert!(!home.path().join("ledger.db").exists(), "usage only looks");
}

#[test]
fn a_corrupt_ledger_warns_and_the_chat_answers() {
    let home = tempfile::tempdir().unwrap();
    let junk = "not a database, just junk ".repeat(400);
    std::fs::write(home.path().join("ledger.db"), &junk).unwrap();
    let stderr = answered(home.path(), &[]);
    assert_eq!(
        stderr.matches("warning: usage ledger").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("damaged"), "{stderr}");
    // Left as it was for the user to inspect.
    assert_eq!(
        std::fs::read_to_string(home.path().join("ledger.db")).unwrap(),
        junk
    );
    let (code, _, stderr) = run(hearth(home.path()).arg("usage"));
    assert_eq!(code, 1);
    assert!(stderr.contains("move it aside"), "{stderr}");
}

#[test]
fn a_locked_ledger_warns_and_the_chat_answers() {
    let home = tempfile::tempdir().unwrap();
    answered(home.path(), &[]);
    assert_eq!(rows(home.path()).len(), 1);
    let lock = rusqlite::Connection::open(home.path().join("ledger.db")).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let stderr = answered(home.path(), &[]);
    assert_eq!(
        stderr.matches("warning: usage ledger").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("locked"), "{stderr}");
    lock.execute_batch("COMMIT").unwrap();
    drop(lock);
    assert_eq!(
        rows(home.path()).len(),
        1,
        "the locked-out answer is not recorded"
    );
    answered(home.path(), &[]);
    assert_eq!(rows(home.path()).len(), 2, "recording resumes");
}

#[test]
fn a_broken_config_warns_records_nothing_and_the_chat_answers() {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("config.toml"), "ledger = perhaps\n").unwrap();
    let stderr = answered(home.path(), &[]);
    assert_eq!(
        stderr.matches("warning: usage ledger").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("config.toml"), "{stderr}");
    assert!(!home.path().join("ledger.db").exists());
}

#[test]
fn usage_prices_prints_a_table_that_reads_back() {
    let home = tempfile::tempdir().unwrap();
    let table = ok(hearth(home.path()).args(["usage", "--prices"]));
    let v: Value = serde_json::from_str(&table).unwrap();
    assert!(!v["models"].as_array().unwrap().is_empty());
    // Edited copy: one model at a round price.
    let mine = r#"{"note": "my prices", "currency": "USD", "models": [{"model": "big-api",
        "provider": "Acme", "input_per_million": 1000000, "output_per_million": 0,
        "as_of": "2026-01-01", "source": "my invoice"}]}"#;
    std::fs::write(home.path().join("prices.json"), mine).unwrap();
    answered(home.path(), &[]);
    let j = usage_json(home.path(), &[]);
    let prompt = j["total"]["prompt_tokens"].as_f64().unwrap();
    assert_eq!(j["cloud"].as_array().unwrap().len(), 1);
    assert_eq!(j["cloud"][0]["cost"].as_f64().unwrap(), prompt);
    assert!(j["cloud_table"].as_str().unwrap().ends_with("prices.json"));
    std::fs::write(home.path().join("prices.json"), "{").unwrap();
    let (code, _, stderr) = run(hearth(home.path()).arg("usage"));
    assert_eq!(code, 1);
    assert!(stderr.contains("prices.json"), "{stderr}");
}

#[test]
fn each_turn_of_an_interactive_chat_is_one_row() {
    use expectrl::{Eof, Session};
    let home = tempfile::tempdir().unwrap();
    let model = testutil::smollm2();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_hearth"));
    cmd.arg("run")
        .arg(&model)
        .args(["--temperature", "0", "-n", "6", "--threads", "2"])
        .env("HEARTH_HOME", home.path())
        .env("HEARTH_OFFLINE", "1")
        .env("TERM", "xterm");
    let mut s = Session::spawn(cmd).expect("spawn hearth on a pty");
    s.set_expect_timeout(Some(std::time::Duration::from_secs(240)));
    s.expect("Type /help").unwrap();
    s.expect(">>> ").unwrap();
    for line in ["Hi", "Tell me more", "/set temperature 0.5"] {
        s.send_line(line).unwrap();
        s.expect(">>> ").unwrap();
    }
    s.send_line("/bye").unwrap();
    s.expect(Eof).unwrap();
    let r = rows(home.path());
    assert_eq!(r.len(), 2, "one row per answer, none for commands: {r:?}");
    assert!(
        r[1].2 > r[0].2,
        "the second turn's prompt holds the first exchange: {r:?}"
    );
}
