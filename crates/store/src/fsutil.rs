//! Durable writes and cross-process locks.

use crate::StoreError;
use sha2::{Digest as _, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes `bytes` to `path` durably: a temporary file in the same directory, fsync, rename over
/// `path`, fsync the directory. Readers see the old file or the new one, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = parent(path)?;
    let tmp = temp_path(dir, path);
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        StoreError::io(format!("cannot write {}", path.display()))(e)
    })
}

/// Renames `from` to `to` (same directory) and makes the rename durable.
pub fn rename_durable(from: &Path, to: &Path) -> Result<(), StoreError> {
    let what = || format!("cannot move {} to {}", from.display(), to.display());
    fs::rename(from, to).map_err(|e| StoreError::io(what())(e))?;
    sync_dir(parent(to)?).map_err(StoreError::io(what()))
}

/// fsync of a directory, so that renames and unlinks in it survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        // Directories cannot be opened for syncing here; NTFS journals renames.
        let _ = dir;
        Ok(())
    }
}

fn parent(path: &Path) -> Result<&Path, StoreError> {
    path.parent().ok_or_else(|| StoreError::Io {
        what: format!("{} has no parent directory", path.display()),
        source: io::Error::from(io::ErrorKind::InvalidInput),
    })
}

/// `.<file>.tmp-<pid>-<n>` beside `path`: unique within the process and across processes.
fn temp_path(dir: &Path, path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.join(format!(".{file}.tmp-{}-{n}", std::process::id()))
}

/// Creates a directory and its parents.
pub fn create_dir(dir: &Path) -> Result<(), StoreError> {
    fs::create_dir_all(dir).map_err(StoreError::io(format!("cannot create {}", dir.display())))
}

/// An exclusive advisory lock on a file, released when dropped (or when the process dies).
/// Locks are per open file, so two threads of one process exclude each other too.
#[derive(Debug)]
pub struct FileLock {
    file: File,
}

impl FileLock {
    /// Takes the lock, waiting for it. `on_wait` runs once if another holder makes us wait.
    pub fn acquire(path: &Path, on_wait: impl FnOnce()) -> Result<FileLock, StoreError> {
        let what = || format!("cannot lock {}", path.display());
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| StoreError::io(what())(e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                on_wait();
                file.lock().map_err(|e| StoreError::io(what())(e))?;
            }
            Err(fs::TryLockError::Error(e)) => return Err(StoreError::io(what())(e)),
        }
        Ok(FileLock { file })
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // Closing releases the lock as well; unlocking first makes it prompt.
        let _ = self.file.unlock();
    }
}

/// Size in bytes and sha256 of a file's first bytes, read in full; returns the hasher so that
/// more bytes can be appended (resuming a download).
pub fn hash_file(path: &Path) -> io::Result<(Sha256, u64)> {
    let mut f = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n_total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        n_total += n as u64;
    }
    Ok((hasher, n_total))
}

/// The digest a finished hasher gives.
pub fn finish(hasher: Sha256) -> crate::Digest {
    let bytes: [u8; 32] = hasher.finalize().into();
    crate::Digest::from_bytes(&bytes)
}
