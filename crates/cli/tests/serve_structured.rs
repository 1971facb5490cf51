//! Structured output and tool calling as applications use them: `hearth serve` with
//! Qwen2.5-Coder-0.5B-Instruct (fetched through the project's own code), driven by the
//! official openai and ollama Python clients, langchain-openai and langchain-ollama
//! (pip-installed into a virtualenv kept under the target directory). A failed install fails
//! the test; it never skips.

#[path = "common/serve.rs"]
mod serve;
#[path = "common/venv.rs"]
#[allow(dead_code)]
mod venv;

use std::path::Path;
use std::process::Command;

const PACKAGES: &[&str] = &[
    "openai",
    "ollama",
    "langchain-openai",
    "langchain-ollama",
    "pydantic",
    "jsonschema",
];

#[test]
fn clients_get_structured_output_and_tool_calls() {
    let model = testutil::qwen2_5_coder();
    let python = venv::python(
        "structured-clients-venv",
        PACKAGES,
        "import openai, ollama, langchain_openai, langchain_ollama, pydantic, jsonschema",
    );
    let home = tempfile::tempdir().unwrap();
    let server = serve::start(
        &["--ctx", "4096", "--parallel", "2"],
        &[
            ("HEARTH_HOME", home.path().as_os_str()),
            ("HEARTH_OFFLINE", std::ffi::OsStr::new("1")),
        ],
    );
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients/structured_clients.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(&server.base)
        .arg(&model)
        .output()
        .expect("run the client script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprint!("{stdout}");
    assert!(
        out.status.success(),
        "{} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("all structured checks passed"), "{stdout}");
}
