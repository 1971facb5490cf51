//! `hf.co/ORG/REPO[:QUANT]` and `hf.co/ORG/REPO/FILE.gguf` pulls against a local server that
//! imitates the hub: its API's file list (`/api/models/ORG/REPO?blobs=true`) and `resolve`.

mod support;

use gguf::{GgmlType, GgufWriter};
use std::cell::RefCell;
use std::path::Path;
use store::{
    ModelName, Progress, PullOptions, PullOutcome, Silent, SourcePolicy, Store, StoreError,
};
use support::{sha256_hex, Fault, Server};

const LISTING: &str = "/api/models/org/repo?blobs=true";

fn gguf_bytes(label: &str, n: usize) -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.add("general.architecture", "llama");
    w.add("general.name", label);
    w.add_tensor("t", &[n as u64], GgmlType::F32, vec![3; n * 4])
        .unwrap();
    w.to_bytes()
}

/// How much the imitated hub says about each file.
#[derive(Clone, Copy, PartialEq)]
enum Detail {
    /// `size` and `lfs: {sha256, size}`, as `?blobs=true` gives for LFS files.
    Blobs,
    /// `size` only.
    Size,
    /// `rfilename` only.
    Bare,
}

fn listing_json(files: &[(&str, &[u8])], detail: Detail) -> Vec<u8> {
    let mut siblings = vec![serde_json::json!({"rfilename": ".gitattributes", "size": 1519})];
    for (name, bytes) in files {
        siblings.push(match detail {
            Detail::Blobs => serde_json::json!({
                "rfilename": name,
                "blobId": "0123",
                "size": bytes.len(),
                "lfs": {"sha256": sha256_hex(bytes), "size": bytes.len(), "pointerSize": 135},
            }),
            Detail::Size => serde_json::json!({"rfilename": name, "size": bytes.len()}),
            Detail::Bare => serde_json::json!({"rfilename": name}),
        });
    }
    serde_json::to_vec(&serde_json::json!({"id": "org/repo", "siblings": siblings})).unwrap()
}

/// A hub serving `files` of `org/repo`, and the listing describing them.
fn hub(files: &[(&str, &[u8])], detail: Detail) -> Server {
    let server = Server::start();
    server.add_file(LISTING, listing_json(files, detail));
    for (name, bytes) in files {
        let path = format!("/org/repo/resolve/main/{}", store::hub::url_path(name));
        server.add_file(&path, bytes.to_vec());
    }
    server
}

fn opts(server: &Server) -> PullOptions {
    PullOptions {
        hf_endpoint: server.base.clone(),
        python: "/nonexistent/python-for-tests".into(),
        retries: 0,
        ..PullOptions::default()
    }
}

fn name(s: &str) -> ModelName {
    ModelName::parse(s).unwrap()
}

fn is_empty_dir(p: &Path) -> bool {
    std::fs::read_dir(p).map_or(true, |mut d| d.next().is_none())
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[derive(Default)]
struct Notes(RefCell<Vec<String>>);
impl Progress for Notes {
    fn note(&self, m: &str) {
        self.0.borrow_mut().push(m.to_owned());
    }
}

#[test]
fn picks_the_quantization_and_checks_the_hubs_sha256() {
    let q4 = gguf_bytes("q4", 2000);
    let q8 = gguf_bytes("q8", 3000);
    let proj = gguf_bytes("proj", 10);
    let server = hub(
        &[
            ("Model-Q4_K_M.gguf", &q4),
            ("Model-Q8_0.gguf", &q8),
            ("mmproj-Model-Q4_K_M.gguf", &proj),
        ],
        Detail::Blobs,
    );
    let home = tempfile::tempdir().unwrap();
    let store = Store::open(home.path());
    let o = PullOptions {
        hf_token: Some("secret".into()),
        ..opts(&server)
    };

    // No quantization: Q4_K_M (the projector also says Q4_K_M, but is never chosen).
    let r = store.pull(&name("hf.co/org/repo"), &o, &Silent).unwrap();
    assert_eq!(r.manifest.name.to_string(), "hf.co/org/repo:Q4_K_M");
    assert_eq!(r.manifest.digest.hex(), sha256_hex(&q4));
    assert_eq!(std::fs::read(&r.path).unwrap(), q4);
    let url = format!("{}/org/repo/resolve/main/Model-Q4_K_M.gguf", server.base);
    assert_eq!(
        r.outcome,
        PullOutcome::Downloaded {
            source: url.clone()
        }
    );
    assert_eq!(r.manifest.source.as_deref(), Some(url.as_str()));
    let reqs = server.requests();
    let paths: Vec<&str> = reqs.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, [LISTING, "/org/repo/resolve/main/Model-Q4_K_M.gguf"]);
    for r in &reqs {
        assert_eq!(r.authorization.as_deref(), Some("Bearer secret"), "{r:?}");
    }

    // Present: nothing is asked of the hub.
    server.clear_log();
    let again = store
        .pull(&name("hf.co/org/repo:Q4_K_M"), &o, &Silent)
        .unwrap();
    assert_eq!(again.outcome, PullOutcome::AlreadyPresent);
    assert!(server.requests().is_empty());

    // One file by name, then the same file by quantization (any case): one blob, one download.
    let r = store
        .pull(&name("hf.co/org/repo/Model-Q8_0.gguf"), &o, &Silent)
        .unwrap();
    assert_eq!(r.manifest.digest.hex(), sha256_hex(&q8));
    server.clear_log();
    let r = store
        .pull(&name("hf.co/org/repo:q8_0"), &o, &Silent)
        .unwrap();
    assert_eq!(r.outcome, PullOutcome::AlreadyPresent);
    assert_eq!(r.manifest.digest.hex(), sha256_hex(&q8));
    let paths: Vec<String> = server.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, [LISTING], "the blob was already there");
    assert_eq!(entries(&home.path().join("blobs")).len(), 2);
    let listed: Vec<String> = store.list().unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(
        listed,
        [
            "hf.co/org/repo/Model-Q8_0.gguf",
            "hf.co/org/repo:Q4_K_M",
            "hf.co/org/repo:q8_0"
        ]
    );
}

#[test]
fn files_in_folders_and_odd_characters_are_url_encoded() {
    let q4 = gguf_bytes("q4", 100);
    let server = hub(&[("Q4 K M/Model+x-Q4_K_M.gguf", &q4)], Detail::Blobs);
    let home = tempfile::tempdir().unwrap();
    let store = Store::open(home.path());
    let r = store
        .pull(&name("hf.co/org/repo"), &opts(&server), &Silent)
        .unwrap();
    assert_eq!(std::fs::read(&r.path).unwrap(), q4);
    let last = server.requests().pop().unwrap();
    assert_eq!(
        last.path,
        "/org/repo/resolve/main/Q4%20K%20M/Model%2Bx-Q4_K_M.gguf"
    );
    assert_eq!(last.status, 200);
}

#[test]
fn bytes_that_differ_from_the_hubs_sha256_are_never_stored() {
    let q4 = gguf_bytes("q4", 2000);
    let server = hub(&[("m-Q4_K_M.gguf", &q4)], Detail::Blobs);
    server.set_fault_prefix("/org/repo/resolve/");
    server.set_always(Some(Fault::Corrupt));
    let home = tempfile::tempdir().unwrap();
    let store = Store::open(home.path());
    let err = store
        .pull(&name("hf.co/org/repo"), &opts(&server), &Silent)
        .unwrap_err();
    assert!(err.to_string().contains("sha256 mismatch"), "{err}");
    assert!(is_empty_dir(&home.path().join("blobs")));
    assert!(is_empty_dir(&home.path().join("manifests")));
}

#[test]
fn an_interrupted_download_resumes_with_a_range() {
    let q4 = gguf_bytes("q4", 5000);
    let server = hub(&[("m-Q4_K_M.gguf", &q4)], Detail::Blobs);
    server.set_fault_prefix("/org/repo/resolve/");
    server.push_fault(Fault::DropAfter(1000));
    let home = tempfile::tempdir().unwrap();
    let store = Store::open(home.path());
    let o = PullOptions {
        retries: 2,
        ..opts(&server)
    };
    let r = store.pull(&name("hf.co/org/repo"), &o, &Silent).unwrap();
    assert_eq!(std::fs::read(&r.path).unwrap(), q4);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    assert_eq!(reqs[2].range.as_deref(), Some("bytes=1000-"));
    assert_eq!(reqs[2].status, 206);
    assert_eq!(
        entries(&home.path().join("blobs")).len(),
        1,
        "no partial left"
    );
}

#[test]
fn without_a_published_sha256_the_download_is_hashed_and_says_so() {
    for detail in [Detail::Size, Detail::Bare] {
        let q4 = gguf_bytes("q4", 2000);
        let server = hub(&[("m-Q4_K_M.gguf", &q4)], detail);
        let home = tempfile::tempdir().unwrap();
        let store = Store::open(home.path());
        let notes = Notes::default();
        let r = store
            .pull(&name("hf.co/org/repo"), &opts(&server), &notes)
            .unwrap();
        assert_eq!(r.manifest.digest.hex(), sha256_hex(&q4));
        assert_eq!(r.manifest.size, q4.len() as u64);
        assert_eq!(std::fs::read(&r.path).unwrap(), q4);
        assert!(
            r.manifest
                .source
                .as_deref()
                .unwrap()
                .ends_with("(sha256 computed on download; the hub published none)"),
            "{:?}",
            r.manifest.source
        );
        let notes = notes.0.into_inner().join("\n");
        assert!(
            notes.contains("the hub publishes no sha256 for m-Q4_K_M.gguf"),
            "{notes}"
        );
        assert_eq!(
            entries(&home.path().join("blobs")),
            [format!("sha256-{}", sha256_hex(&q4))]
        );
    }
}

#[test]
fn an_unverified_download_must_be_gguf_and_the_announced_size() {
    let junk = support::synthetic(5000, 3);
    let server = hub(&[("m-Q4_K_M.gguf", &junk)], Detail::Bare);
    let home = tempfile::tempdir().unwrap();
    let store = Store::open(home.path());
    let err = store
        .pull(&name("hf.co/org/repo"), &opts(&server), &Silent)
        .unwrap_err();
    assert!(
        err.to_string().contains("is not a usable GGUF file"),
        "{err}"
    );
    assert!(is_empty_dir(&home.path().join("blobs")), "nothing kept");
    assert!(is_empty_dir(&home.path().join("manifests")));

    // The listing says 10 bytes more than the server sends.
    let q4 = gguf_bytes("q4", 100);
    let server = Server::start();
    let mut listing: serde_json::Value =
        serde_json::from_slice(&listing_json(&[("m-Q4_K_M.gguf", &q4)], Detail::Size)).unwrap();
    listing["siblings"][1]["size"] = serde_json::json!(q4.len() + 10);
    server.add_file(LISTING, serde_json::to_vec(&listing).unwrap());
    server.add_file("/org/repo/resolve/main/m-Q4_K_M.gguf", q4);
    let err = store
        .pull(&name("hf.co/org/repo"), &opts(&server), &Silent)
        .unwrap_err();
    assert!(matches!(err, StoreError::SizeMismatch { .. }), "{err}");
    assert!(is_empty_dir(&home.path().join("manifests")));
}

#[test]
fn a_file_list_with_dangerous_paths_is_refused_before_anything_is_written() {
    let q4 = gguf_bytes("q4", 100);
    for (bad, why) in [
        ("../x.gguf", "`..` component"),
        ("models/../../x-Q4_K_M.gguf", "`..` component"),
        ("/etc/x-Q4_K_M.gguf", "absolute path"),
        ("C:/x-Q4_K_M.gguf", "absolute path"),
        ("dir\\x-Q4_K_M.gguf", "backslash"),
        ("x\u{0}-Q4_K_M.gguf", "control character"),
        ("x\u{1b}[2J-Q4_K_M.gguf", "control character"),
    ] {
        let server = Server::start();
        let listing = serde_json::json!({"siblings": [
            {"rfilename": "m-Q4_K_M.gguf"},
            {"rfilename": bad},
        ]});
        server.add_file(LISTING, serde_json::to_vec(&listing).unwrap());
        server.add_file("/org/repo/resolve/main/m-Q4_K_M.gguf", q4.clone());
        let home = tempfile::tempdir().unwrap();
        let store = Store::open(home.path());
        // Even naming the good file directly: the whole list is untrustworthy.
        for n in ["hf.co/org/repo", "hf.co/org/repo/m-Q4_K_M.gguf"] {
            let err = store.pull(&name(n), &opts(&server), &Silent).unwrap_err();
            assert!(
                matches!(err, StoreError::BadListing { .. }),
                "{bad:?}: {err}"
            );
            let msg = err.to_string();
            assert!(msg.contains(why), "{bad:?}: {msg}");
            assert!(msg.contains("refused, and nothing was downloaded"), "{msg}");
        }
        assert!(is_empty_dir(home.path()), "{bad:?}: nothing was written");
        let paths: Vec<String> = server.requests().into_iter().map(|r| r.path).collect();
        assert_eq!(paths, [LISTING, LISTING], "{bad:?}: no download");
    }
}

#[test]
fn unknown_or_ambiguous_quantizations_list_what_there_is() {
    let a = gguf_bytes("a", 10);
    let server = hub(
        &[
            ("m-Q4_K_M.gguf", &a),
            ("m-Q4_K_S.gguf", &a),
            ("m-Q8_0.gguf", &a),
            ("m-Q6_K-00001-of-00002.gguf", &a),
            ("m-Q6_K-00002-of-00002.gguf", &a),
        ],
        Detail::Blobs,
    );
    let home = tempfile::tempdir().unwrap();
    let store = Store::open(home.path());
    let o = opts(&server);
    for (n, needle) in [
        (
            "hf.co/org/repo:Q2_K",
            "hf.co/org/repo:Q2_K: org/repo has no GGUF file for the quantization Q2_K; \
             available quantizations: Q4_K_M, Q4_K_S, Q6_K (split, not loadable), Q8_0",
        ),
        (
            "hf.co/org/repo:Q4_K",
            "matches several files of org/repo: m-Q4_K_M.gguf, m-Q4_K_S.gguf",
        ),
        (
            "hf.co/org/repo:Q6_K",
            "org/repo has Q6_K only as a split GGUF (2 parts, m-Q6_K-00001-of-00002.gguf)",
        ),
        (
            "hf.co/org/repo/m-Q5_0.gguf",
            "org/repo has no file m-Q5_0.gguf",
        ),
    ] {
        let err = store.pull(&name(n), &o, &Silent).unwrap_err();
        assert!(matches!(err, StoreError::NoHubFile { .. }), "{n}: {err}");
        assert!(err.to_string().contains(needle), "{n}: {err}");
    }
    assert!(is_empty_dir(home.path()));
}

#[test]
fn hub_errors_say_what_to_do() {
    let a = gguf_bytes("a", 10);
    let server = hub(&[("m-Q4_K_M.gguf", &a)], Detail::Blobs);
    let home = tempfile::tempdir().unwrap();
    let store = Store::open(home.path());
    let o = opts(&server);

    let err = store
        .pull(&name("hf.co/org/nosuch"), &o, &Silent)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("the file list of org/nosuch: not found (HTTP 404); check the name"),
        "{err}"
    );
    server.push_fault(Fault::Status(401));
    let err = store
        .pull(&name("hf.co/org/repo"), &o, &Silent)
        .unwrap_err();
    assert!(err.to_string().contains("set HF_TOKEN"), "{err}");
    // A server error is retried.
    server.push_fault(Fault::Status(503));
    let retrying = PullOptions {
        retries: 1,
        ..o.clone()
    };
    store
        .pull(&name("hf.co/org/repo"), &retrying, &Silent)
        .unwrap();

    let other = tempfile::tempdir().unwrap();
    let store = Store::open(other.path());
    server.clear_log();
    let offline = PullOptions {
        offline: true,
        ..o.clone()
    };
    let err = store
        .pull(&name("hf.co/org/repo"), &offline, &Silent)
        .unwrap_err();
    assert!(matches!(err, StoreError::Offline { .. }), "{err}");
    let mirror = PullOptions {
        policy: SourcePolicy::Mirror,
        ..o
    };
    let err = store
        .pull(&name("hf.co/org/repo"), &mirror, &Silent)
        .unwrap_err();
    assert!(err.to_string().contains("HEARTH_SOURCE=mirror"), "{err}");
    assert!(server.requests().is_empty());
    assert!(is_empty_dir(other.path()));
}
