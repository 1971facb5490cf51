//! Names made locally: `create` from a file or as a preset of another model, `cp`, `resolve`,
//! and how `remove` treats blobs that presets still use.

use gguf::{GgmlType, GgufWriter};
use std::path::{Path, PathBuf};
use store::{CreateOptions, ModelName, Params, Store, StoreError};

fn tiny_gguf(dir: &Path, file: &str, n: usize) -> PathBuf {
    let mut w = GgufWriter::new();
    w.add("general.architecture", "llama");
    w.add_tensor("t", &[n as u64], GgmlType::F32, vec![1; n * 4])
        .unwrap();
    let p = dir.join(file);
    w.write(&p).unwrap();
    p
}

fn name(s: &str) -> ModelName {
    ModelName::parse(s).unwrap()
}

fn blobs(store: &Store) -> usize {
    std::fs::read_dir(store.root().join("blobs"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn params(pairs: &[(&str, &str)]) -> Params {
    let mut p = Params::default();
    for (k, v) in pairs {
        p.set(k, v).unwrap();
    }
    p
}

fn preset(system: Option<&str>, pairs: &[(&str, &str)]) -> CreateOptions {
    CreateOptions {
        system: system.map(str::to_owned),
        params: params(pairs),
        replace: false,
    }
}

#[test]
fn presets_share_the_base_blob_and_resolve_with_their_settings() {
    let home = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let store = Store::open(home.path());
    let file = tiny_gguf(files.path(), "a.gguf", 64);
    let base = store
        .create_from_file(&name("base"), &file, &CreateOptions::default())
        .unwrap();
    assert!(!base.is_preset());

    let p = store
        .create_preset(
            &name("terse"),
            &name("base"),
            &preset(
                Some("Answer in one word."),
                &[("temperature", "0.1"), ("stop", "\n")],
            ),
        )
        .unwrap();
    assert_eq!(p.digest, base.digest);
    assert_eq!(p.base, Some(name("base")));
    assert_eq!(blobs(&store), 1, "no bytes copied");

    let r = store.resolve(&name("terse")).unwrap().unwrap();
    assert_eq!(r.path, store.blob_path(&base.digest));
    assert_eq!(r.system.as_deref(), Some("Answer in one word."));
    assert_eq!(r.params.temperature, Some(0.1));
    assert_eq!(r.params.stop, ["\n"]);
    assert_eq!(r.base, Some(name("base")));
    let plain = store.resolve(&name("base")).unwrap().unwrap();
    assert_eq!(plain.system, None);
    assert!(plain.params.is_empty());
    assert!(store.resolve(&name("nosuch")).unwrap().is_none());

    // A preset of a preset: inherits, overrides one option, keeps the rest.
    let pp = store
        .create_preset(
            &name("terse:hot"),
            &name("terse"),
            &preset(None, &[("temperature", "1.5")]),
        )
        .unwrap();
    assert_eq!(pp.base, Some(name("terse")));
    assert_eq!(pp.system.as_deref(), Some("Answer in one word."));
    assert_eq!(pp.params.temperature, Some(1.5));
    assert_eq!(pp.params.stop, ["\n"]);

    // `rm` of the base keeps the blob the presets use; the last user frees it.
    let r = store.remove(&name("base")).unwrap();
    assert_eq!(r.blobs_removed, 0);
    assert!(store
        .resolve(&name("terse"))
        .unwrap()
        .unwrap()
        .path
        .is_file());
    store.remove(&name("terse")).unwrap();
    let r = store.remove(&name("terse:hot")).unwrap();
    assert_eq!((r.blobs_removed, r.bytes_freed), (1, base.size));
    assert_eq!(blobs(&store), 0);
}

#[test]
fn create_refuses_bad_settings_existing_names_and_missing_bases() {
    let home = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let store = Store::open(home.path());
    let file = tiny_gguf(files.path(), "a.gguf", 64);
    store
        .create_from_file(&name("base"), &file, &CreateOptions::default())
        .unwrap();
    let manifests = || store.list().unwrap().len();

    let e = store
        .create_preset(&name("x"), &name("nosuch"), &CreateOptions::default())
        .unwrap_err();
    assert!(matches!(e, StoreError::NotFound { .. }), "{e}");
    let e = store
        .create_preset(&name("base"), &name("base"), &CreateOptions::default())
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("cannot make base:latest from itself"),
        "{e}"
    );
    let e = store
        .create_preset(&name("x"), &name("base"), &preset(Some("a\u{1b}[2J"), &[]))
        .unwrap_err();
    assert!(e.to_string().contains("invalid system prompt"), "{e}");
    let bad = CreateOptions {
        params: Params {
            top_p: Some(3.0),
            ..Params::default()
        },
        ..CreateOptions::default()
    };
    let e = store
        .create_preset(&name("x"), &name("base"), &bad)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid option top_p: must be between 0 and 1 (got 3)"
    );
    let e = store.create_from_file(&name("y"), &file, &bad).unwrap_err();
    assert!(e.to_string().contains("top_p"), "{e}");
    assert_eq!(manifests(), 1, "nothing was written");

    // Existing names: refused unless replacing.
    store
        .create_preset(&name("x"), &name("base"), &CreateOptions::default())
        .unwrap();
    let e = store
        .create_preset(&name("x"), &name("base"), &preset(Some("new"), &[]))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "x:latest already exists in the store; pick another name, or replace it with --force"
    );
    let e = store
        .create_from_file(&name("x"), &file, &CreateOptions::default())
        .unwrap_err();
    assert!(matches!(e, StoreError::AlreadyExists { .. }), "{e}");
    let replace = CreateOptions {
        system: Some("new".into()),
        replace: true,
        ..CreateOptions::default()
    };
    store
        .create_preset(&name("x"), &name("base"), &replace)
        .unwrap();
    assert_eq!(
        store
            .resolve(&name("x"))
            .unwrap()
            .unwrap()
            .system
            .as_deref(),
        Some("new")
    );
    // From a file, with settings.
    let m = store
        .create_from_file(
            &name("z"),
            &file,
            &preset(Some("sys"), &[("num_ctx", "128")]),
        )
        .unwrap();
    assert_eq!(m.base, None);
    let r = store.resolve(&name("z")).unwrap().unwrap();
    assert_eq!(
        (r.system.as_deref(), r.params.num_ctx),
        (Some("sys"), Some(128))
    );
    assert_eq!(blobs(&store), 1);
}

#[test]
fn copy_makes_a_second_name_for_the_same_blob() {
    let home = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let store = Store::open(home.path());
    let a = tiny_gguf(files.path(), "a.gguf", 64);
    let b = tiny_gguf(files.path(), "b.gguf", 65);
    let ma = store.import(&name("a"), &a, Some("mit".into())).unwrap();
    store.import(&name("b"), &b, None).unwrap();
    store
        .create_preset(
            &name("p"),
            &name("a"),
            &preset(Some("hi"), &[("top_k", "5")]),
        )
        .unwrap();

    let c = store
        .copy(&name("a"), &name("hf.co/me/copy:v1"), false)
        .unwrap();
    assert_eq!((c.digest.clone(), c.size), (ma.digest.clone(), ma.size));
    assert_eq!(c.license.as_deref(), Some("mit"));
    assert_eq!(blobs(&store), 2);
    // A preset's copy keeps its settings.
    store.copy(&name("p"), &name("p2"), false).unwrap();
    let r = store.resolve(&name("p2")).unwrap().unwrap();
    assert_eq!((r.system.as_deref(), r.params.top_k), (Some("hi"), Some(5)));
    assert_eq!(r.base, Some(name("a")));

    let e = store.copy(&name("b"), &name("a"), false).unwrap_err();
    assert!(matches!(e, StoreError::AlreadyExists { .. }), "{e}");
    assert_eq!(store.find(&name("a")).unwrap().unwrap().0.digest, ma.digest);
    let e = store.copy(&name("a"), &name("a:latest"), true).unwrap_err();
    assert!(e.to_string().contains("onto itself"), "{e}");
    let e = store.copy(&name("nosuch"), &name("x"), false).unwrap_err();
    assert_eq!(e.to_string(), "nosuch:latest is not in the store");

    // --force replaces; the replaced blob is not freed by cp (rm collects garbage).
    store.copy(&name("b"), &name("a"), true).unwrap();
    assert_ne!(store.find(&name("a")).unwrap().unwrap().0.digest, ma.digest);
    for n in ["a", "b", "p", "p2"] {
        store.remove(&name(n)).unwrap();
    }
    assert_eq!(blobs(&store), 1, "hf.co/me/copy:v1 still uses a's blob");
    store.remove(&name("hf.co/me/copy:v1")).unwrap();
    assert_eq!(blobs(&store), 0);
}

#[test]
fn a_preset_with_hand_edited_bad_options_is_listed_broken_and_keeps_its_blob() {
    let home = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let store = Store::open(home.path());
    let a = tiny_gguf(files.path(), "a.gguf", 64);
    let m = store.import(&name("a"), &a, None).unwrap();
    store
        .create_preset(
            &name("p"),
            &name("a"),
            &preset(None, &[("temperature", "0.5")]),
        )
        .unwrap();
    let path = store.manifest_path(&name("p"));
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("0.5", "-7")).unwrap();
    let listed = store.list().unwrap();
    let p = listed.iter().find(|e| e.name == "p:latest").unwrap();
    let why = p.model.as_ref().unwrap_err();
    assert!(why.contains("invalid option temperature"), "{why}");
    assert!(store.resolve(&name("p")).is_err());
    store.remove(&name("a")).unwrap();
    assert!(
        store.blob_path(&m.digest).is_file(),
        "the broken preset's blob is kept"
    );
}
