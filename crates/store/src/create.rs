//! Names made locally: `create` (a GGUF file imported, or a preset of a model in the store),
//! `cp` (a second name for the same blob), and `resolve`, which hands a model to whoever runs
//! it with what its manifest adds.

use crate::fsutil::rename_durable;
use crate::preset::{check_system, Params};
use crate::{check_blob_size, fsutil, Digest, Manifest, ModelName, Silent, Store, StoreError};
use sha2::Digest as _;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// What `create` adds to the model, and whether it may replace an existing name.
#[derive(Clone, Debug, Default)]
pub struct CreateOptions {
    /// The system prompt (for a preset of a preset: replaces the base's).
    pub system: Option<String>,
    /// Options; for a preset of a preset they override the base's one by one.
    pub params: Params,
    /// Replace a model of the same name (`--force`).
    pub replace: bool,
}

impl CreateOptions {
    fn check(&self) -> Result<(), StoreError> {
        if let Some(s) = &self.system {
            check_system(s).map_err(|reason| StoreError::Refused {
                what: "invalid system prompt".into(),
                reason,
            })?;
        }
        self.params.validate()
    }
}

/// A model ready to run: its GGUF file, and the system prompt and options its manifest sets
/// (a preset's), which apply unless the user gives others.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub name: ModelName,
    /// The GGUF file (a blob of the store).
    pub path: PathBuf,
    pub system: Option<String>,
    pub params: Params,
    /// For a preset: the model it was made from.
    pub base: Option<ModelName>,
    pub manifest: Manifest,
}

impl Resolved {
    /// A manifest and its GGUF file (as [`Store::find`] or a pull returns them).
    pub fn new(manifest: Manifest, path: PathBuf) -> Resolved {
        Resolved {
            name: manifest.name.clone(),
            path,
            system: manifest.system.clone(),
            params: manifest.params.clone(),
            base: manifest.base.clone(),
            manifest,
        }
    }
}

impl Store {
    /// The GGUF file and the preset settings of a model in the store; `Ok(None)` when the
    /// name has no manifest, an error when it is broken or its blob is missing.
    pub fn resolve(&self, name: &ModelName) -> Result<Option<Resolved>, StoreError> {
        Ok(self
            .find(name)?
            .map(|(manifest, path)| Resolved::new(manifest, path)))
    }

    /// Copies a local GGUF file into the store under `name`, replacing any model of that
    /// name. The file must parse as GGUF. Returns the manifest written.
    pub fn import(
        &self,
        name: &ModelName,
        file: &Path,
        license: Option<String>,
    ) -> Result<Manifest, StoreError> {
        let opts = CreateOptions {
            replace: true,
            ..CreateOptions::default()
        };
        self.import_with(name, file, license, &opts)
    }

    /// `hearth create NAME --from FILE.gguf`: imports the file (checked to parse as GGUF
    /// first) as a content-addressed blob, with the options' system prompt and parameters.
    pub fn create_from_file(
        &self,
        name: &ModelName,
        file: &Path,
        opts: &CreateOptions,
    ) -> Result<Manifest, StoreError> {
        self.import_with(name, file, None, opts)
    }

    /// [`create_from_file`](Store::create_from_file) for a path a client names (Ollama's
    /// `/api/create` with `from: /path/file.gguf`): the path must be absolute and name a
    /// regular file owned by the user this process runs as.
    pub fn create_from_own_file(
        &self,
        name: &ModelName,
        file: &Path,
        opts: &CreateOptions,
    ) -> Result<Manifest, StoreError> {
        let refuse = |reason: &str| StoreError::Refused {
            what: format!("cannot create {name} from {}", file.display()),
            reason: reason.into(),
        };
        if !file.is_absolute() {
            return Err(refuse("the path must be absolute"));
        }
        let meta = fs::metadata(file).map_err(|e| refuse(&e.to_string()))?;
        if !meta.is_file() {
            return Err(refuse("it is not a regular file"));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            if meta.uid() != rustix::process::getuid().as_raw() {
                return Err(refuse("it belongs to another user"));
            }
        }
        self.import_with(name, file, None, opts)
    }

    fn import_with(
        &self,
        name: &ModelName,
        file: &Path,
        license: Option<String>,
        opts: &CreateOptions,
    ) -> Result<Manifest, StoreError> {
        opts.check()?;
        // Early, to spare a useless copy; checked again under the lock.
        self.refuse_existing(name, opts.replace)?;
        // Checked on the source file: nothing is copied unless it is a GGUF file.
        gguf::GgufFile::open(file).map_err(|e| StoreError::Io {
            what: format!("{} is not a usable GGUF file", file.display()),
            source: io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
        })?;
        self.ensure_layout()?;
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let tmp = self.tmp_dir().join(format!(
            "import-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| {
            let (digest, size) = copy_hashing(file, &tmp)?;
            // The copy is what enters the store: check it too (the file may have changed).
            gguf::GgufFile::open(&tmp).map_err(|e| StoreError::Io {
                what: format!("{} is not a usable GGUF file", file.display()),
                source: io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
            })?;
            let _lock = self.store_lock(&Silent)?;
            self.refuse_existing(name, opts.replace)?;
            let blob = self.blob_path(&digest);
            if check_blob_size(&blob, size).is_ok() {
                let _ = fs::remove_file(&tmp);
            } else {
                rename_durable(&tmp, &blob)?;
            }
            let mut m = Manifest::new(
                name.clone(),
                digest,
                size,
                license,
                Some(format!("file: {}", file.display())),
            );
            m.system = opts.system.clone();
            m.params = opts.params.clone();
            self.write_manifest(&m)?;
            Ok(m)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// A model made from a blob already in the store (Ollama's `/api/create` with `files`,
    /// after the client uploaded it): the blob must be a GGUF file; nothing is copied.
    pub fn create_from_blob(
        &self,
        name: &ModelName,
        digest: &Digest,
        license: Option<String>,
        opts: &CreateOptions,
    ) -> Result<Manifest, StoreError> {
        opts.check()?;
        let blob = self.blob_path(digest);
        let missing = || StoreError::Refused {
            what: format!("blob {digest} is not in the store"),
            reason: "upload it first (POST /api/blobs/DIGEST)".into(),
        };
        if !self.has_blob(digest) {
            return Err(missing());
        }
        gguf::GgufFile::open(&blob).map_err(|e| StoreError::Refused {
            what: format!("blob {digest} is not a usable GGUF file"),
            reason: e.to_string(),
        })?;
        self.ensure_layout()?;
        let _lock = self.store_lock(&Silent)?;
        self.refuse_existing(name, opts.replace)?;
        // Under the lock: a removal elsewhere may have collected it meanwhile.
        let size = fs::metadata(&blob).map_err(|_| missing())?.len();
        let mut m = Manifest::new(
            name.clone(),
            digest.clone(),
            size,
            license,
            Some(format!("blob: {digest}")),
        );
        m.system = opts.system.clone();
        m.params = opts.params.clone();
        self.write_manifest(&m)?;
        Ok(m)
    }

    /// `hearth create NAME --from MODEL`: a preset, a manifest that uses `base`'s blob (no
    /// bytes are copied) with its own system prompt and options. A preset of a preset
    /// inherits what the options do not change.
    pub fn create_preset(
        &self,
        name: &ModelName,
        base: &ModelName,
        opts: &CreateOptions,
    ) -> Result<Manifest, StoreError> {
        opts.check()?;
        if name == base {
            return Err(StoreError::Refused {
                what: format!("cannot make {name} from itself"),
                reason: "a preset needs another model as its base".into(),
            });
        }
        self.ensure_layout()?;
        let _lock = self.store_lock(&Silent)?;
        self.refuse_existing(name, opts.replace)?;
        let Some((b, _)) = self.find(base)? else {
            return Err(StoreError::NotFound {
                name: base.to_string(),
            });
        };
        let mut m = Manifest::new(
            name.clone(),
            b.digest.clone(),
            b.size,
            b.license.clone(),
            b.source.clone(),
        );
        m.base = Some(base.clone());
        m.system = opts.system.clone().or(b.system);
        m.params = b.params.merged(&opts.params);
        m.params.validate()?;
        self.write_manifest(&m)?;
        Ok(m)
    }

    /// `hearth cp SRC DST`: a second manifest for the same blob (nothing is copied), with
    /// the same preset settings. `replace` allows overwriting an existing `dst`.
    pub fn copy(
        &self,
        src: &ModelName,
        dst: &ModelName,
        replace: bool,
    ) -> Result<Manifest, StoreError> {
        if src == dst {
            return Err(StoreError::Refused {
                what: format!("cannot copy {src} onto itself"),
                reason: "give another name as the destination".into(),
            });
        }
        self.ensure_layout()?;
        let _lock = self.store_lock(&Silent)?;
        let Some((s, _)) = self.find(src)? else {
            return Err(StoreError::NotFound {
                name: src.to_string(),
            });
        };
        self.refuse_existing(dst, replace)?;
        let mut m = Manifest::new(
            dst.clone(),
            s.digest.clone(),
            s.size,
            s.license.clone(),
            s.source.clone(),
        );
        m.base = s.base;
        m.system = s.system;
        m.params = s.params;
        self.write_manifest(&m)?;
        Ok(m)
    }

    /// `AlreadyExists` when `name` has a manifest (even a broken one) and `replace` is off.
    fn refuse_existing(&self, name: &ModelName, replace: bool) -> Result<(), StoreError> {
        let path = self.manifest_path(name);
        if !replace && fs::symlink_metadata(&path).is_ok() {
            return Err(StoreError::AlreadyExists {
                name: name.to_string(),
            });
        }
        Ok(())
    }
}

/// Copies `from` to `to` while hashing; fsyncs `to`.
fn copy_hashing(from: &Path, to: &Path) -> Result<(Digest, u64), StoreError> {
    let mut src =
        File::open(from).map_err(StoreError::io(format!("cannot open {}", from.display())))?;
    let wr = |e| StoreError::io(format!("cannot write {}", to.display()))(e);
    let mut dst = io::BufWriter::with_capacity(1 << 20, File::create(to).map_err(wr)?);
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(StoreError::io(format!("cannot read {}", from.display()))(e)),
        };
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n]).map_err(wr)?;
        size += n as u64;
    }
    let f = dst.into_inner().map_err(|e| wr(e.into_error()))?;
    f.sync_all().map_err(wr)?;
    Ok((fsutil::finish(hasher), size))
}
