//! Blobs received from a client (Ollama's `POST /api/blobs/sha256:…`): written to a temporary
//! file in the store's `tmp/` while hashed, promoted into `blobs/` only when the sha256 is the
//! one announced, and removed otherwise, so that no partial or wrong blob is ever left.

use crate::fsutil::{self, rename_durable};
use crate::{Digest, Silent, Store, StoreError};
use sha2::Digest as _;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// A blob being received. Dropped before [`finish`](BlobUpload::finish) succeeds, it removes
/// what it wrote.
pub struct BlobUpload {
    store: Store,
    digest: Digest,
    tmp: PathBuf,
    file: Option<BufWriter<File>>,
    hasher: sha2::Sha256,
    size: u64,
}

impl Store {
    /// Whether the store holds the blob (blobs are verified when they enter).
    pub fn has_blob(&self, digest: &Digest) -> bool {
        fs::metadata(self.blob_path(digest)).is_ok_and(|m| m.is_file())
    }

    /// Bytes the store's file system can still take, where that can be told.
    pub fn free_space(&self) -> Option<u64> {
        let mut dir = self.root().to_path_buf();
        while !dir.exists() {
            dir = dir.parent()?.to_path_buf();
        }
        free_bytes(&dir)
    }

    /// Starts receiving the blob whose sha256 must be `digest`.
    pub fn receive_blob(&self, digest: &Digest) -> Result<BlobUpload, StoreError> {
        self.ensure_layout()?;
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let tmp = self.tmp_dir().join(format!(
            "upload-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let file = File::create(&tmp)
            .map_err(StoreError::io(format!("cannot create {}", tmp.display())))?;
        Ok(BlobUpload {
            store: self.clone(),
            digest: digest.clone(),
            tmp,
            file: Some(BufWriter::with_capacity(1 << 20, file)),
            hasher: sha2::Sha256::new(),
            size: 0,
        })
    }
}

#[cfg(unix)]
fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    let s = rustix::fs::statvfs(dir).ok()?;
    Some(s.f_bavail.saturating_mul(s.f_frsize))
}

#[cfg(not(unix))]
fn free_bytes(_dir: &std::path::Path) -> Option<u64> {
    None
}

impl BlobUpload {
    /// Appends the next bytes.
    pub fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        let Some(f) = self.file.as_mut() else {
            return Err(self.closed());
        };
        f.write_all(data).map_err(StoreError::io(format!(
            "cannot write {}",
            self.tmp.display()
        )))?;
        self.hasher.update(data);
        self.size += data.len() as u64;
        Ok(())
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.size
    }

    /// Checks the sha256 and moves the blob into the store (a blob already there is kept).
    /// A mismatch is `Refused`, and the bytes are gone.
    pub fn finish(mut self) -> Result<(), StoreError> {
        let Some(f) = self.file.take() else {
            return Err(self.closed());
        };
        let wr = StoreError::io(format!("cannot write {}", self.tmp.display()));
        let f = f.into_inner().map_err(|e| wr(e.into_error()))?;
        let got = fsutil::finish(std::mem::take(&mut self.hasher));
        if got != self.digest {
            return Err(StoreError::Refused {
                what: format!("the uploaded bytes are not blob {}", self.digest),
                reason: format!("their sha256 is {got}; nothing was stored"),
            });
        }
        f.sync_all().map_err(StoreError::io(format!(
            "cannot write {}",
            self.tmp.display()
        )))?;
        drop(f);
        let _lock = self.store.store_lock(&Silent)?;
        let blob = self.store.blob_path(&self.digest);
        if self.store.has_blob(&self.digest) {
            return Ok(()); // the drop removes the copy
        }
        rename_durable(&self.tmp, &blob)
    }

    fn closed(&self) -> StoreError {
        StoreError::Io {
            what: format!("the upload of {} has ended", self.digest),
            source: io::Error::from(io::ErrorKind::BrokenPipe),
        }
    }
}

impl Drop for BlobUpload {
    fn drop(&mut self) {
        self.file = None;
        // After a successful rename there is nothing here to remove.
        let _ = fs::remove_file(&self.tmp);
    }
}
