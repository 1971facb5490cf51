//! Pulls over HTTP against a local server that imitates the hub: resume after an interruption,
//! a server that ignores Range, wrong bytes and wrong sizes never promoted, concurrent pulls.

mod support;

use std::path::Path;
use store::{
    CatalogEntry, Digest, ModelName, PullOptions, PullOutcome, Silent, Source, SourcePolicy, Store,
    StoreError,
};
use support::{sha256_hex, synthetic, Fault, Server};

const FILE_PATH: &str = "/org/repo/resolve/main/model.gguf";
const LEN: usize = 3 * 1024 * 1024 + 17;

fn entry(name: &str, bytes: &[u8]) -> CatalogEntry {
    CatalogEntry {
        name: ModelName::parse(name).unwrap(),
        size: bytes.len() as u64,
        digest: Digest::parse(&format!("sha256:{}", sha256_hex(bytes))).unwrap(),
        license: "mit".into(),
        description: "synthetic".into(),
        architecture: None,
        kind: None,
        sources: vec![Source::HuggingFace {
            repo: "org/repo".into(),
            revision: "main".into(),
            file: "model.gguf".into(),
        }],
    }
}

fn opts(server: &Server, retries: u32) -> PullOptions {
    PullOptions {
        policy: SourcePolicy::HuggingFace,
        hf_endpoint: server.base.clone(),
        python: "/nonexistent/python-for-tests".into(),
        retries,
        ..PullOptions::default()
    }
}

/// A server with one synthetic file, and a store in a fresh temporary directory.
fn setup(seed: u64) -> (Server, tempfile::TempDir, Store, Vec<u8>, CatalogEntry) {
    let server = Server::start();
    let bytes = synthetic(LEN, seed);
    server.add_file(FILE_PATH, bytes.clone());
    let home = tempfile::tempdir().unwrap();
    let store = Store::open(home.path());
    let e = entry("synthetic:1", &bytes);
    (server, home, store, bytes, e)
}

fn file_len(p: &Path) -> Option<u64> {
    std::fs::metadata(p).ok().map(|m| m.len())
}

/// Nothing of the model is in the store: no blob, no partial, no manifest.
fn assert_absent(store: &Store, e: &CatalogEntry) {
    assert!(!store.blob_path(&e.digest).exists(), "blob must not exist");
    assert!(
        !store.manifest_path(&e.name).exists(),
        "manifest must not exist"
    );
    assert!(store.find(&e.name).unwrap().is_none());
}

fn assert_stored(store: &Store, e: &CatalogEntry, bytes: &[u8]) {
    let (m, path) = store.find(&e.name).unwrap().expect("model is in the store");
    assert_eq!(m.digest, e.digest);
    assert_eq!(m.size, bytes.len() as u64);
    assert_eq!(sha256_hex(&std::fs::read(&path).unwrap()), e.digest.hex());
    assert!(!store.partial_path(&e.digest).exists(), "no partial left");
}

#[test]
fn downloads_verifies_and_promotes() {
    let (server, _home, store, bytes, e) = setup(1);
    let r = store.pull_entry(&e, &opts(&server, 0), &Silent).unwrap();
    assert_eq!(
        r.outcome,
        PullOutcome::Downloaded {
            source: format!("{}{FILE_PATH}", server.base)
        }
    );
    assert_eq!(r.path, store.blob_path(&e.digest));
    assert_stored(&store, &e, &bytes);
    assert_eq!(r.manifest.license.as_deref(), Some("mit"));

    // A second pull re-verifies the blob and downloads nothing.
    let again = store.pull_entry(&e, &opts(&server, 0), &Silent).unwrap();
    assert_eq!(again.outcome, PullOutcome::AlreadyPresent);
    assert_eq!(again.manifest.source, r.manifest.source);
    assert_eq!(server.requests().len(), 1);

    // The store's layout.
    let blobs: Vec<String> = std::fs::read_dir(store.root().join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(blobs, vec![format!("sha256-{}", e.digest.hex())]);
    assert!(store.root().join("manifests/synthetic/1.json").is_file());
}

#[test]
fn resumes_after_an_interrupted_transfer() {
    let (server, _home, store, bytes, e) = setup(2);
    server.push_fault(Fault::DropAfter(1_000_000));
    let err = store
        .pull_entry(&e, &opts(&server, 0), &Silent)
        .unwrap_err();
    assert!(matches!(err, StoreError::AllSourcesFailed { .. }), "{err}");
    assert!(err.to_string().contains("interrupted"), "{err}");
    assert_absent(&store, &e);
    assert_eq!(file_len(&store.partial_path(&e.digest)), Some(1_000_000));

    // The next pull re-hashes the partial file and asks only for the rest.
    store.pull_entry(&e, &opts(&server, 0), &Silent).unwrap();
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].range, None);
    assert_eq!(reqs[1].range.as_deref(), Some("bytes=1000000-"));
    assert_eq!(reqs[1].status, 206);
    assert_stored(&store, &e, &bytes);
}

#[test]
fn retries_resume_within_one_pull() {
    let (server, _home, store, bytes, e) = setup(3);
    server.push_fault(Fault::DropAfter(700_000));
    server.push_fault(Fault::DropAfter(700_000));
    server.push_fault(Fault::Status(503));
    store.pull_entry(&e, &opts(&server, 2), &Silent).unwrap();
    let ranges: Vec<Option<String>> = server.requests().into_iter().map(|r| r.range).collect();
    assert_eq!(
        ranges,
        vec![
            None,
            Some("bytes=700000-".into()),
            Some("bytes=1400000-".into()),
            Some("bytes=1400000-".into()),
        ]
    );
    assert_stored(&store, &e, &bytes);
}

#[test]
fn a_connection_that_keeps_dropping_never_yields_a_blob() {
    let (server, _home, store, _bytes, e) = setup(4);
    server.set_always(Some(Fault::DropAfter(0)));
    let err = store
        .pull_entry(&e, &opts(&server, 2), &Silent)
        .unwrap_err();
    assert!(err.to_string().contains("interrupted"), "{err}");
    assert_eq!(server.requests().len(), 3, "one try and two retries");
    assert_absent(&store, &e);
}

#[test]
fn restarts_when_the_server_ignores_range() {
    let (server, _home, store, bytes, e) = setup(5);
    server.push_fault(Fault::DropAfter(1_500_000));
    store
        .pull_entry(&e, &opts(&server, 0), &Silent)
        .unwrap_err();
    assert_eq!(file_len(&store.partial_path(&e.digest)), Some(1_500_000));
    server.push_fault(Fault::IgnoreRange);
    store.pull_entry(&e, &opts(&server, 0), &Silent).unwrap();
    let reqs = server.requests();
    assert_eq!(reqs[1].range.as_deref(), Some("bytes=1500000-"));
    assert_eq!(
        reqs[1].status, 200,
        "the server answered with the whole file"
    );
    assert_stored(&store, &e, &bytes);
}

#[test]
fn a_wrong_content_range_restarts_from_the_first_byte() {
    let (server, _home, store, bytes, e) = setup(16);
    server.push_fault(Fault::DropAfter(800_000));
    store
        .pull_entry(&e, &opts(&server, 0), &Silent)
        .unwrap_err();
    server.push_fault(Fault::RangeFromZero);
    store.pull_entry(&e, &opts(&server, 1), &Silent).unwrap();
    let reqs = server.requests();
    let ranges: Vec<Option<&str>> = reqs.iter().map(|r| r.range.as_deref()).collect();
    assert_eq!(ranges, [None, Some("bytes=800000-"), None]);
    assert_stored(&store, &e, &bytes);
}

#[test]
fn wrong_bytes_are_never_promoted() {
    let (server, _home, store, bytes, e) = setup(6);
    server.set_always(Some(Fault::Corrupt));
    let err = store
        .pull_entry(&e, &opts(&server, 3), &Silent)
        .unwrap_err();
    assert!(err.to_string().contains("sha256 mismatch"), "{err}");
    assert_absent(&store, &e);
    assert!(
        !store.partial_path(&e.digest).exists(),
        "bad bytes are discarded"
    );
    assert!(store.list().unwrap().is_empty());
    assert_eq!(server.requests().len(), 1, "a hash mismatch is not retried");

    // Once the server is right again, the pull works.
    server.set_always(None);
    store.pull_entry(&e, &opts(&server, 0), &Silent).unwrap();
    assert_stored(&store, &e, &bytes);
}

#[test]
fn wrong_sizes_are_refused() {
    let (server, _home, store, _bytes, e) = setup(7);
    server.set_always(Some(Fault::ExtraBytes(10)));
    let err = store
        .pull_entry(&e, &opts(&server, 0), &Silent)
        .unwrap_err();
    assert!(err.to_string().contains("Content-Length"), "{err}");
    assert_absent(&store, &e);

    // Extra bytes after a resume (206) are caught while streaming.
    server.set_always(None);
    server.push_fault(Fault::DropAfter(1000));
    store
        .pull_entry(&e, &opts(&server, 0), &Silent)
        .unwrap_err();
    server.push_fault(Fault::ExtraBytes(10));
    let err = store
        .pull_entry(&e, &opts(&server, 0), &Silent)
        .unwrap_err();
    assert!(err.to_string().contains("sent more bytes"), "{err}");
    assert_absent(&store, &e);
    assert!(!store.partial_path(&e.digest).exists());

    // A catalog size that the server's file does not have.
    let mut short = e.clone();
    short.size -= 1;
    let err = store
        .pull_entry(&short, &opts(&server, 0), &Silent)
        .unwrap_err();
    assert!(err.to_string().contains("expected"), "{err}");
    assert_absent(&store, &short);
}

#[test]
fn a_corrupt_partial_file_is_caught_and_discarded() {
    let (server, _home, store, bytes, e) = setup(8);
    std::fs::create_dir_all(store.root().join("blobs")).unwrap();
    let partial = store.partial_path(&e.digest);
    std::fs::write(&partial, vec![0u8; 100_000]).unwrap();
    let err = store
        .pull_entry(&e, &opts(&server, 0), &Silent)
        .unwrap_err();
    assert!(err.to_string().contains("sha256 mismatch"), "{err}");
    assert_eq!(server.requests()[0].range.as_deref(), Some("bytes=100000-"));
    assert!(!partial.exists());
    assert_absent(&store, &e);
    store.pull_entry(&e, &opts(&server, 0), &Silent).unwrap();
    assert_stored(&store, &e, &bytes);

    // A partial file longer than the model is thrown away before any request.
    let (server, _home2, store, bytes, e) = setup(9);
    std::fs::create_dir_all(store.root().join("blobs")).unwrap();
    std::fs::write(store.partial_path(&e.digest), vec![1u8; LEN + 5]).unwrap();
    store.pull_entry(&e, &opts(&server, 0), &Silent).unwrap();
    assert_eq!(server.requests()[0].range, None);
    assert_stored(&store, &e, &bytes);

    // A complete, correct partial file is promoted without any request.
    let (server, _home3, store, bytes, e) = setup(10);
    std::fs::create_dir_all(store.root().join("blobs")).unwrap();
    std::fs::write(store.partial_path(&e.digest), &bytes).unwrap();
    store.pull_entry(&e, &opts(&server, 0), &Silent).unwrap();
    assert!(server.requests().is_empty());
    assert_stored(&store, &e, &bytes);
}

#[test]
fn redirects_token_and_errors() {
    let (server, _home, store, bytes, e) = setup(11);
    // The hub redirects `resolve` to its CDN (another host); the range goes along, the token
    // does not.
    let real = "/cdn/blob-1";
    server.add_file(real, bytes.clone());
    let cdn = server.base.replace("127.0.0.1", "localhost");
    server.redirect(FILE_PATH, &format!("{cdn}{real}"));
    server.push_fault(Fault::DropAfter(4096));
    let mut o = opts(&server, 0);
    o.hf_token = Some("secret-token".into());
    store.pull_entry(&e, &o, &Silent).unwrap_err();
    store.pull_entry(&e, &o, &Silent).unwrap();
    let reqs = server.requests();
    assert_eq!(reqs.len(), 4);
    assert_eq!(reqs[0].path, FILE_PATH);
    assert_eq!(
        reqs[0].authorization.as_deref(),
        Some("Bearer secret-token")
    );
    assert_eq!(reqs[1].path, real);
    assert_eq!(reqs[1].authorization, None, "no token for another host");
    assert_eq!(reqs[3].path, real);
    assert_eq!(reqs[3].range.as_deref(), Some("bytes=4096-"));
    assert_stored(&store, &e, &bytes);

    // Not found and access denied are reported, not retried.
    let (server, _home, store, _bytes, mut e) = setup(12);
    if let Source::HuggingFace { file, .. } = &mut e.sources[0] {
        *file = "missing.gguf".into();
    }
    let err = store
        .pull_entry(&e, &opts(&server, 3), &Silent)
        .unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
    e.sources = entry("synthetic:1", &[0]).sources;
    server.set_always(Some(Fault::Status(401)));
    let err = store
        .pull_entry(&e, &opts(&server, 3), &Silent)
        .unwrap_err();
    assert!(err.to_string().contains("HF_TOKEN"), "{err}");
    assert_eq!(server.requests().len(), 2);
    assert_absent(&store, &e);
}

#[test]
fn unreachable_source_fails_fast_without_retries() {
    let home = tempfile::tempdir().unwrap();
    let store = Store::open(home.path());
    let bytes = synthetic(1000, 13);
    let e = entry("synthetic:1", &bytes);
    // Nothing listens on port 1.
    let o = PullOptions {
        policy: SourcePolicy::HuggingFace,
        hf_endpoint: "http://127.0.0.1:1".into(),
        retries: 5,
        ..PullOptions::default()
    };
    let t = std::time::Instant::now();
    let err = store.pull_entry(&e, &o, &Silent).unwrap_err();
    assert!(t.elapsed().as_secs() < 5, "took {:?}", t.elapsed());
    assert!(
        err.to_string()
            .contains("Hugging Face (org/repo/model.gguf)"),
        "{err}"
    );
    assert_absent(&store, &e);
}

#[test]
fn concurrent_pulls_share_one_download_and_one_blob() {
    let (server, _home, store, bytes, e) = setup(14);
    server.set_rate(4 * 1024 * 1024); // ~0.75 s for the file: the pulls overlap
    let o = opts(&server, 0);
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| s.spawn(|| store.pull_entry(&e, &o, &Silent)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut downloaded = 0;
    for r in results {
        let r = r.unwrap();
        if matches!(r.outcome, PullOutcome::Downloaded { .. }) {
            downloaded += 1;
        }
    }
    assert_eq!(downloaded, 1);
    assert_eq!(server.requests().len(), 1);
    assert_stored(&store, &e, &bytes);
    let n_blobs = std::fs::read_dir(store.root().join("blobs"))
        .unwrap()
        .count();
    assert_eq!(n_blobs, 1);
}

#[test]
fn offline_never_touches_the_network() {
    let (server, _home, store, bytes, e) = setup(15);
    let mut o = opts(&server, 0);
    o.offline = true;
    let err = store.pull_entry(&e, &o, &Silent).unwrap_err();
    assert!(matches!(err, StoreError::Offline { .. }), "{err}");
    assert!(err.to_string().contains("offline"));
    assert!(server.requests().is_empty());
    assert!(
        !store.root().join("blobs").exists(),
        "nothing written either"
    );

    o.offline = false;
    store.pull_entry(&e, &o, &Silent).unwrap();
    o.offline = true;
    let r = store.pull_entry(&e, &o, &Silent).unwrap();
    assert_eq!(r.outcome, PullOutcome::AlreadyPresent);
    assert_eq!(server.requests().len(), 1);
    assert_stored(&store, &e, &bytes);
}

/// Sets the cancel flag once `at` bytes have arrived.
struct CancelAt {
    flag: std::sync::Arc<std::sync::atomic::AtomicBool>,
    at: u64,
}

impl store::Progress for CancelAt {
    fn advance_to(&self, done: u64) {
        if done >= self.at {
            self.flag.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// A cancelled pull stops between reads with `Cancelled` (no other source is tried), keeps
/// what arrived, and the next pull resumes from there.
#[test]
fn a_cancelled_download_stops_and_resumes_later() {
    let (server, _home, store, bytes, e) = setup(14);
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let o = PullOptions {
        cancel: Some(std::sync::Arc::clone(&flag)),
        ..opts(&server, 0)
    };
    let progress = CancelAt {
        flag: std::sync::Arc::clone(&flag),
        at: 1,
    };
    let err = store.pull_entry(&e, &o, &progress).unwrap_err();
    assert!(matches!(err, StoreError::Cancelled), "{err}");
    assert_absent(&store, &e);
    let kept = file_len(&store.partial_path(&e.digest)).unwrap_or(0);
    assert!(kept > 0 && kept < bytes.len() as u64, "{kept}");
    store.pull_entry(&e, &opts(&server, 0), &Silent).unwrap();
    let reqs = server.requests();
    assert_eq!(reqs[1].range, Some(format!("bytes={kept}-")));
    assert_stored(&store, &e, &bytes);
}
