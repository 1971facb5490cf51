//! `hearth run --format json|SCHEMA.json` and `--grammar FILE.gbnf`: bad files are refused
//! before a model loads, grammars that do not compile name the flag, and answers follow the
//! grammar (a tiny synthetic model).

use assert_cmd::Command;
use std::path::{Path, PathBuf};

fn synthetic() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/synthetic/llama_f32.gguf")
}

fn scratch() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir"))
        .path()
}

fn file(name: &str, text: &str) -> String {
    let p = scratch().join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

fn hearth(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::cargo_bin("hearth")
        .expect("the hearth binary is built")
        .env("HEARTH_HOME", scratch().join("home"))
        .env("HEARTH_OFFLINE", "1")
        .args(args)
        .output()
        .expect("hearth runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_format_and_grammar_files_are_refused_before_loading() {
    let not_json = file("not.json", "{ this is not json");
    let not_schema = file("list.json", "[1, 2, 3]");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--format", "yaml"],
            "expected `json` or a JSON schema file",
        ),
        (
            vec!["--format", "/nonexistent/schema.json"],
            "is not a file",
        ),
        (vec!["--format", &not_json], "is not JSON"),
        (vec!["--format", &not_schema], "is not a JSON schema"),
        (
            vec!["--grammar", "/nonexistent/g.gbnf"],
            "--grammar: cannot read",
        ),
        (
            vec!["--format", "json", "--grammar", "/x.gbnf"],
            "cannot be used with",
        ),
    ];
    for (flags, want) in cases {
        let mut args = vec!["run", "/nonexistent/model.gguf", "hi"];
        args.extend(&flags);
        let (code, stdout, stderr) = hearth(&args);
        assert!(matches!(code, Some(1 | 2)), "{flags:?}: {code:?} {stderr}");
        assert!(stderr.contains(want), "{flags:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{flags:?}: {stderr}");
        assert!(stdout.is_empty(), "{flags:?}");
        // Refused before the model: the missing model file is not what is reported.
        assert!(!stderr.contains("model.gguf"), "{flags:?}: {stderr}");
    }
}

#[test]
fn grammars_that_do_not_compile_name_the_flag() {
    let model = synthetic();
    let model = model.to_str().unwrap();
    let bad_gbnf = file("bad.gbnf", "root ::= item\nitem ::= \"a\" | other\n");
    let bad_schema = file("bad.json", r#"{"type": "frobnicate"}"#);
    for (flag, path, want) in [
        (
            "--grammar",
            bad_gbnf.as_str(),
            "--grammar: invalid GBNF grammar at line 2, column 16: the rule `other` is not defined",
        ),
        (
            "--format",
            bad_schema.as_str(),
            "--format: invalid JSON schema",
        ),
    ] {
        let (code, stdout, stderr) = hearth(&["run", model, "--raw", "hi", flag, path]);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(stderr.contains(want), "{stderr}");
        assert!(stdout.is_empty());
    }
}

#[test]
fn answers_follow_the_schema_and_the_grammar() {
    let model = synthetic();
    let model = model.to_str().unwrap();
    let schema = file(
        "digit.json",
        r#"{"type": "object", "properties": {"a": {"type": "integer", "minimum": 0,
            "maximum": 9}, "ok": {"type": "boolean"}}, "required": ["a", "ok"],
            "additionalProperties": false}"#,
    );
    for seed in ["1", "2", "3"] {
        let (code, stdout, stderr) = hearth(&[
            "run", model, "--raw", "hi", "--format", &schema, "-n", "64", "--seed", seed,
        ]);
        assert_eq!(code, Some(0), "{stderr}");
        let v: serde_json::Value =
            serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout:?}"));
        assert!(v["a"].as_i64().is_some_and(|a| (0..=9).contains(&a)), "{v}");
        assert!(v["ok"].is_boolean(), "{v}");
        assert_eq!(v.as_object().unwrap().len(), 2, "{v}");
    }
    let choices = file(
        "c.gbnf",
        "root ::= \"colour: \" (\"red\" | \"green\" | \"blue\")\n",
    );
    let (code, stdout, stderr) = hearth(&[
        "run",
        model,
        "--raw",
        "hi",
        "--grammar",
        &choices,
        "-n",
        "64",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let out = stdout.trim_end();
    assert!(
        ["colour: red", "colour: green", "colour: blue"].contains(&out),
        "{out:?}"
    );
}
