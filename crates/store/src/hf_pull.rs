//! Pulling `hf.co/…` names outside the catalog: the hub's file list picks the file; its size
//! and sha256, when the hub publishes them, are checked like a catalog entry's. Without them
//! the download is hashed as it arrives and must at least parse as GGUF before it is stored.

use crate::fsutil::{self, rename_durable, FileLock};
use crate::hub::{self, HubFile};
use crate::{
    check_blob_size, http, CatalogEntry, Manifest, ModelName, Progress, PullOptions, PullOutcome,
    PullReport, Source, SourcePolicy, Store, StoreError,
};
use sha2::Digest as _;
use std::fs;
use std::io;

impl Store {
    /// Pulls `hf.co/ORG/REPO[:QUANT]` or `hf.co/ORG/REPO/FILE.gguf` (the caller checked that
    /// the name is not in the store and that network use is allowed).
    pub(crate) fn pull_hf(
        &self,
        name: &ModelName,
        opts: &PullOptions,
        progress: &dyn Progress,
    ) -> Result<PullReport, StoreError> {
        let Some((org, repo)) = name.hf_repo() else {
            return Err(StoreError::Unsupported {
                what: format!("pulling {name} from the hub"),
            });
        };
        if opts.policy == SourcePolicy::Mirror {
            return Err(StoreError::Unsupported {
                what: format!(
                    "pulling {name} with HEARTH_SOURCE=mirror (the package mirror only holds \
                     the catalog's models)"
                ),
            });
        }
        let agent = http::agent(opts.connect_timeout, opts.read_timeout);
        let files = hub::fetch_listing(&agent, opts, org, repo, progress)?;
        let file = hub::choose(name, &files)?;
        let encoded = hub::url_path(&file.path);
        match (&file.sha256, file.size) {
            (Some(digest), Some(size)) => {
                // Published size and sha256: the same path as a catalog entry.
                let entry = CatalogEntry {
                    name: name.clone(),
                    size,
                    digest: digest.clone(),
                    license: String::new(),
                    description: String::new(),
                    architecture: None,
                    kind: None,
                    sources: vec![Source::HuggingFace {
                        repo: format!("{org}/{repo}"),
                        revision: "main".to_owned(),
                        file: encoded,
                    }],
                };
                let hf_only = PullOptions {
                    policy: SourcePolicy::HuggingFace,
                    ..opts.clone()
                };
                self.pull_entry(&entry, &hf_only, progress)
            }
            _ => {
                let url = format!(
                    "{}/{org}/{repo}/resolve/main/{encoded}",
                    opts.hf_endpoint.trim_end_matches('/')
                );
                self.pull_unverified(name, &file, &url, &agent, opts, progress)
            }
        }
    }

    /// Downloads a hub file whose sha256 the hub does not publish.
    fn pull_unverified(
        &self,
        name: &ModelName,
        file: &HubFile,
        url: &str,
        agent: &ureq::Agent,
        opts: &PullOptions,
        progress: &dyn Progress,
    ) -> Result<PullReport, StoreError> {
        self.ensure_layout()?;
        self.clean_stale_tmp();
        // Named after the URL: the digest is not known until the bytes are in.
        let key = fsutil::finish(sha2::Sha256::new_with_prefix(url.as_bytes()));
        let partial = self.blobs_dir().join(format!("url-{}.partial", key.hex()));
        let lock_path = self.locks_dir().join(format!("url-{}.lock", key.hex()));
        let _download_lock = FileLock::acquire(&lock_path, || {
            progress.note(&format!("waiting for another pull of {name} to finish"))
        })?;
        if let Ok(Some((manifest, path))) = self.find(name) {
            // Pulled by another process while this one waited.
            return Ok(PullReport {
                manifest,
                path,
                outcome: PullOutcome::AlreadyPresent,
            });
        }
        // Without a published hash a partial file left by an earlier process cannot be told
        // from a different version of the file: start afresh (retries in this process resume).
        match fs::remove_file(&partial) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(StoreError::io(format!(
                    "cannot remove {}",
                    partial.display()
                ))(e))
            }
            _ => {}
        }
        progress.note(&format!(
            "the hub publishes no sha256 for {}; it is computed from the download, with \
             nothing to check it against",
            file.path
        ));
        let label = name.to_string();
        let fetched = http::download(
            agent,
            &http::Download {
                url,
                token: opts.hf_token.as_deref(),
                size: file.size,
                digest: None,
                partial: &partial,
                retries: opts.retries,
                progress,
                label: &label,
                cancel: opts.cancel.as_deref(),
            },
        )?;
        if let Err(e) = gguf::GgufFile::open(&partial) {
            let _ = fs::remove_file(&partial);
            return Err(StoreError::Io {
                what: format!("{url} is not a usable GGUF file; it was discarded"),
                source: io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
            });
        }
        let _store_lock = self.store_lock(progress)?;
        let blob = self.blob_path(&fetched.digest);
        if check_blob_size(&blob, fetched.size).is_ok() {
            let _ = fs::remove_file(&partial);
        } else {
            rename_durable(&partial, &blob)?;
        }
        let manifest = Manifest::new(
            name.clone(),
            fetched.digest.clone(),
            fetched.size,
            None,
            Some(format!(
                "{url} (sha256 computed on download; the hub published none)"
            )),
        );
        self.write_manifest(&manifest)?;
        progress.note(&format!("computed {}", fetched.digest));
        Ok(PullReport {
            manifest,
            path: blob,
            outcome: PullOutcome::Downloaded {
                source: url.to_owned(),
            },
        })
    }
}
