//! Store operations without the network: import, list (broken manifests are listed, not
//! fatal), remove with garbage collection, names outside the catalog, offline mode.

use gguf::{GgmlType, GgufWriter};
use std::io::Read;
use std::path::{Path, PathBuf};
use store::{ModelInfo, ModelName, PullOptions, Silent, Store, StoreError};

fn tiny_gguf(dir: &Path, file: &str, arch: &str, n: usize) -> PathBuf {
    let mut w = GgufWriter::new();
    w.add("general.architecture", arch);
    w.add("general.license", "mit");
    w.add(&format!("{arch}.context_length"), 256u32);
    w.add_tensor("t", &[n as u64], GgmlType::F32, vec![7; n * 4])
        .unwrap();
    let p = dir.join(file);
    w.write(&p).unwrap();
    p
}

fn name(s: &str) -> ModelName {
    ModelName::parse(s).unwrap()
}

fn blob_count(store: &Store) -> usize {
    std::fs::read_dir(store.root().join("blobs"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn import_list_and_remove_share_and_free_blobs() {
    let home = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let store = Store::open(home.path());
    let a = tiny_gguf(files.path(), "a.gguf", "llama", 8);
    let b = tiny_gguf(files.path(), "b.gguf", "gemma3", 16);

    let ma = store.import(&name("alpha"), &a, None).unwrap();
    let ma2 = store.import(&name("alpha:copy"), &a, None).unwrap();
    let mb = store
        .import(&name("hf.co/org/repo:Q8_0"), &b, Some("mit".into()))
        .unwrap();
    assert_eq!(ma.digest, ma2.digest);
    assert_ne!(ma.digest, mb.digest);
    assert_eq!(blob_count(&store), 2, "one blob per distinct file");

    let listed = store.list().unwrap();
    let names: Vec<&str> = listed.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["alpha:copy", "alpha:latest", "hf.co/org/repo:Q8_0"]);
    for e in &listed {
        let (m, path) = e.model.as_ref().unwrap();
        assert_eq!(std::fs::metadata(path).unwrap().len(), m.size);
    }
    let (_, path) = store.find(&name("hf.co/org/repo:Q8_0")).unwrap().unwrap();
    let info = ModelInfo::read(&path).unwrap();
    assert_eq!(info.architecture.as_deref(), Some("gemma3"));
    assert_eq!(info.context_length, Some(256));
    assert_eq!(info.parameters, 16);

    // The blob is still used by alpha:copy.
    let r = store.remove(&name("alpha")).unwrap();
    assert_eq!((r.blobs_removed, r.bytes_freed), (0, 0));
    assert!(store.blob_path(&ma.digest).is_file());
    assert!(store.find(&name("alpha")).unwrap().is_none());

    // Now it is not.
    let r = store.remove(&name("alpha:copy")).unwrap();
    assert_eq!(r.blobs_removed, 1);
    assert_eq!(r.bytes_freed, ma.size);
    assert!(!store.blob_path(&ma.digest).exists());
    assert!(
        !home.path().join("manifests/alpha").exists(),
        "empty name dirs go"
    );

    let r = store.remove(&name("hf.co/org/repo:Q8_0")).unwrap();
    assert_eq!(r.blobs_removed, 1);
    assert!(!home.path().join("manifests/hf.co").exists());
    assert!(home.path().join("manifests").is_dir());
    assert_eq!(blob_count(&store), 0);

    let err = store.remove(&name("alpha")).unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    assert_eq!(err.to_string(), "alpha:latest is not in the store");
}

#[test]
fn broken_manifests_are_listed_not_fatal() {
    let home = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let store = Store::open(home.path());
    let a = tiny_gguf(files.path(), "a.gguf", "llama", 8);
    let good = store.import(&name("good"), &a, None).unwrap();
    let m = home.path().join("manifests");

    std::fs::create_dir_all(m.join("garbage")).unwrap();
    std::fs::write(m.join("garbage/latest.json"), b"{ not json").unwrap();
    std::fs::create_dir_all(m.join("other")).unwrap();
    std::fs::copy(m.join("good/latest.json"), m.join("other/latest.json")).unwrap();
    let text = std::fs::read_to_string(m.join("good/latest.json")).unwrap();
    std::fs::create_dir_all(m.join("lost")).unwrap();
    std::fs::write(
        m.join("lost/latest.json"),
        text.replace("good:latest", "lost:latest")
            .replace(good.digest.hex(), &"0".repeat(64)),
    )
    .unwrap();
    std::fs::create_dir_all(m.join("evil")).unwrap();
    std::fs::write(
        m.join("evil/latest.json"),
        text.replace("good:latest", "../../etc:passwd"),
    )
    .unwrap();
    std::fs::write(m.join("stray.json"), b"{}").unwrap();
    std::fs::create_dir_all(m.join("Upper")).unwrap();
    std::fs::write(m.join("Upper/latest.json"), &text).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink("/etc/passwd", m.join("good/link.json")).unwrap();
    // Temporary files of an interrupted write are not manifests.
    std::fs::write(m.join("good/.latest.json.tmp-1-0"), b"half").unwrap();

    let listed = store.list().unwrap();
    let show: Vec<(String, Result<(), String>)> = listed
        .iter()
        .map(|e| {
            (
                e.name.clone(),
                e.model.as_ref().map(|_| ()).map_err(Clone::clone),
            )
        })
        .collect();
    let find = |n: &str| {
        show.iter()
            .find(|(name, _)| name == n)
            .unwrap_or_else(|| panic!("{n} not listed: {show:?}"))
            .1
            .clone()
    };
    assert_eq!(find("good:latest"), Ok(()));
    let garbage = find("garbage:latest").unwrap_err();
    assert!(garbage.contains("key must be a string"), "{garbage}");
    assert!(find("other:latest")
        .unwrap_err()
        .contains("names good:latest"));
    assert!(find("lost:latest").unwrap_err().contains("missing"));
    assert!(find("evil:latest").unwrap_err().contains("`..`"));
    assert!(find("stray.json").unwrap_err().contains("not a model name"));
    assert!(find("Upper/latest.json")
        .unwrap_err()
        .contains("not a model name"));
    #[cfg(unix)]
    assert!(find("good/link.json")
        .unwrap_err()
        .contains("symbolic link"));
    assert!(!show.iter().any(|(n, _)| n.contains("tmp")));

    // A broken manifest can be removed by name; the blobs of readable ones stay.
    store.remove(&name("garbage")).unwrap();
    assert!(store.blob_path(&good.digest).is_file());
    assert!(store.find(&name("good")).unwrap().is_some());
}

#[test]
fn garbage_collection_keeps_blobs_of_unreadable_manifests() {
    let home = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let store = Store::open(home.path());
    let a = tiny_gguf(files.path(), "a.gguf", "llama", 8);
    let b = tiny_gguf(files.path(), "b.gguf", "llama", 9);
    let ma = store.import(&name("a"), &a, None).unwrap();
    store.import(&name("b"), &b, None).unwrap();
    // `a`'s manifest becomes unreadable (a future schema, a bad edit) but still names its blob.
    let pa = store.manifest_path(&name("a"));
    let text = std::fs::read_to_string(&pa).unwrap();
    std::fs::write(
        &pa,
        text.replace("\"schema_version\": 1", "\"schema_version\": 99"),
    )
    .unwrap();
    assert!(store.find(&name("a")).is_err());
    let r = store.remove(&name("b")).unwrap();
    assert_eq!(r.blobs_removed, 1);
    assert!(store.blob_path(&ma.digest).is_file(), "a's blob is kept");
    // Partial downloads are not garbage-collected (they may be resumed).
    std::fs::write(store.partial_path(&ma.digest), b"part").unwrap();
    store.import(&name("c"), &b, None).unwrap();
    store.remove(&name("c")).unwrap();
    assert!(store.partial_path(&ma.digest).is_file());
}

#[test]
fn removing_a_model_in_use_keeps_the_open_file_readable() {
    // `hearth run` maps the blob; `rm` unlinks it. The open file stays whole; no orphan remains.
    let home = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let store = Store::open(home.path());
    let a = tiny_gguf(files.path(), "a.gguf", "llama", 1000);
    let m = store.import(&name("busy"), &a, None).unwrap();
    let (_, path) = store.find(&name("busy")).unwrap().unwrap();
    let mut open = std::fs::File::open(&path).unwrap();
    let loaded = gguf::GgufFile::open(&path).unwrap();
    store.remove(&name("busy")).unwrap();
    assert!(!path.exists());
    let mut bytes = Vec::new();
    open.read_to_end(&mut bytes).unwrap();
    assert_eq!(bytes.len() as u64, m.size);
    assert_eq!(std::fs::read(&a).unwrap(), bytes);
    let t = loaded.tensor("t").unwrap();
    assert_eq!(loaded.tensor_data(t).len(), 4000);
    assert_eq!(blob_count(&store), 0);
}

#[test]
fn import_refuses_files_that_are_not_gguf() {
    let home = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let store = Store::open(home.path());
    let bad = files.path().join("bad.gguf");
    std::fs::write(&bad, b"NOPE this is not a model").unwrap();
    let err = store.import(&name("bad"), &bad, None).unwrap_err();
    assert!(err.to_string().contains("not a usable GGUF"), "{err}");
    assert_eq!(blob_count(&store), 0);
    assert!(store.list().unwrap().is_empty());
    // Checked before anything is copied: the store was not even created.
    assert!(!home.path().join("tmp").exists());
}

#[test]
fn names_outside_the_catalog() {
    let home = tempfile::tempdir().unwrap();
    let store = Store::open(home.path());
    let o = PullOptions {
        python: "/nonexistent".into(),
        hf_endpoint: "http://127.0.0.1:1".into(),
        ..PullOptions::default()
    };
    let err = store.pull(&name("nosuch"), &o, &Silent).unwrap_err();
    assert!(matches!(err, StoreError::UnknownModel { .. }), "{err}");
    assert!(err.to_string().contains("smollm2:135m"), "{err}");
    // hf.co names ask the hub (unreachable here) for the repository's file list.
    let err = store
        .pull(&name("hf.co/org/repo"), &o, &Silent)
        .unwrap_err();
    assert!(matches!(err, StoreError::Http { .. }), "{err}");
    assert!(err.to_string().contains("/api/models/org/repo"), "{err}");
    let offline = PullOptions {
        offline: true,
        ..o.clone()
    };
    for n in ["nosuch", "smollm2", "gemma3:270m"] {
        let err = store.pull(&name(n), &offline, &Silent).unwrap_err();
        assert!(matches!(err, StoreError::Offline { .. }), "{n}: {err}");
    }
    // A created model needs no network: pulling it again is a no-op, even offline.
    let files = tempfile::tempdir().unwrap();
    let a = tiny_gguf(files.path(), "a.gguf", "llama", 8);
    store.import(&name("mine"), &a, None).unwrap();
    store.pull(&name("mine"), &offline, &Silent).unwrap();
    store.pull(&name("mine"), &o, &Silent).unwrap();
    assert!(!home.path().join("tmp").read_dir().unwrap().any(|_| true));
}
