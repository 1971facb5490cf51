//! Downloads over HTTP(S) into a `.partial` file: hashed while written, resumed with a Range
//! request after the partial file is re-hashed, restarted when the server ignores the range,
//! and verified (size and sha256) before the caller may promote it. Also small JSON requests
//! (the hub's file listing).

use crate::fsutil::{finish, hash_file};
use crate::name::Digest;
use crate::{Progress, StoreError};
use sha2::{Digest as _, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, ErrorKind, Read, Write};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// The HTTP client: rustls, redirects followed (the token kept only on the same https host),
/// proxies from the usual environment variables, no transparent decompression.
pub fn agent(connect_timeout: Duration, read_timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(connect_timeout))
        .timeout_recv_response(Some(read_timeout))
        .timeout_per_read(Some(read_timeout))
        .redirect_auth_headers(ureq::config::RedirectAuthHeaders::SameHost)
        .max_redirects(10)
        .user_agent(concat!("hearth/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// One file to fetch.
pub struct Download<'a> {
    pub url: &'a str,
    /// Sent as `Authorization: Bearer …`.
    pub token: Option<&'a str>,
    /// The expected size; `None`: the server's Content-Length (or Content-Range) is taken, and
    /// a response that gives neither is refused (a cut connection would look complete).
    pub size: Option<u64>,
    /// The expected sha256; `None`: the hash is computed and returned, checked against nothing.
    pub digest: Option<&'a Digest>,
    /// Where the bytes go; kept between attempts (and between processes) for resuming.
    pub partial: &'a Path,
    /// Further attempts after a failure that may be transient, counted since the last progress.
    pub retries: u32,
    pub progress: &'a dyn Progress,
    /// What the progress display calls this download.
    pub label: &'a str,
    /// Stops the download between reads ([`StoreError::Cancelled`]; the partial file stays).
    pub cancel: Option<&'a AtomicBool>,
}

/// What a download produced: the partial file's size and sha256.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    pub digest: Digest,
    pub size: u64,
}

/// Fetches `d.url` into `d.partial` until it holds exactly the expected bytes (`d.size` and
/// `d.digest` when given). On a hash or size mismatch the partial file is deleted; on an
/// interruption it is kept.
pub fn download(agent: &ureq::Agent, d: &Download) -> Result<Fetched, StoreError> {
    let mut state = resume_state(d)?;
    d.progress.begin(d.label, d.size);
    d.progress.advance_to(state.have);
    if state.have > 0 {
        let of = d.size.map(|s| format!(" of {s}")).unwrap_or_default();
        d.progress.note(&format!(
            "resuming at byte {}{of} (the partial file re-hashed)",
            state.have
        ));
    }
    let mut failures = 0u32;
    let mut answered = false;
    while state.total != Some(state.have) {
        let before = state.have;
        match attempt(agent, d, &mut state, &mut answered) {
            Ok(()) => {}
            Err(e) => {
                let retryable = matches!(
                    e,
                    StoreError::Http {
                        retryable: true,
                        ..
                    }
                );
                if state.have > before {
                    failures = 0;
                }
                // A source that never answered (no DNS, refused, no route) is not retried:
                // the next source is tried at once.
                if !(retryable && answered && failures < d.retries) {
                    d.progress.finish();
                    return Err(e);
                }
                failures += 1;
                d.progress
                    .note(&format!("{e}; retrying ({failures}/{})", d.retries));
                std::thread::sleep(Duration::from_millis(200 << failures.min(5)));
            }
        }
    }
    d.progress.finish();
    let size = state.have;
    let got = finish(state.hasher);
    if let Some(expected) = d.digest.filter(|e| **e != got) {
        let _ = std::fs::remove_file(d.partial);
        return Err(StoreError::HashMismatch {
            what: d.url.to_owned(),
            expected: expected.to_string(),
            got: got.to_string(),
        });
    }
    File::open(d.partial)
        .and_then(|f| f.sync_all())
        .map_err(StoreError::io(format!(
            "cannot sync {}",
            d.partial.display()
        )))?;
    Ok(Fetched { digest: got, size })
}

struct State {
    hasher: Sha256,
    have: u64,
    /// The full size, once known (given, or learned from the first response).
    total: Option<u64>,
}

impl State {
    /// Forgets the bytes received (the partial file was truncated); the size stays known.
    fn restart(&mut self) {
        self.hasher = Sha256::new();
        self.have = 0;
    }
}

/// Re-hashes what a previous attempt left; a partial file longer than the model is discarded.
fn resume_state(d: &Download) -> Result<State, StoreError> {
    let fresh = || State {
        hasher: Sha256::new(),
        have: 0,
        total: d.size,
    };
    match hash_file(d.partial) {
        Ok((hasher, have)) if d.size.is_none_or(|s| have <= s) => Ok(State {
            hasher,
            have,
            total: d.size,
        }),
        Ok(_) => {
            truncate(d.partial)?;
            Ok(fresh())
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(fresh()),
        Err(e) => Err(StoreError::io(format!(
            "cannot read {}",
            d.partial.display()
        ))(e)),
    }
}

fn truncate(path: &Path) -> Result<(), StoreError> {
    OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
        .map(drop)
        .map_err(StoreError::io(format!(
            "cannot truncate {}",
            path.display()
        )))
}

fn http_err(d: &Download, reason: impl Into<String>, retryable: bool) -> StoreError {
    StoreError::Http {
        url: d.url.to_owned(),
        reason: reason.into(),
        retryable,
    }
}

/// One request: appends what the server sends to the partial file.
fn attempt(
    agent: &ureq::Agent,
    d: &Download,
    state: &mut State,
    answered: &mut bool,
) -> Result<(), StoreError> {
    let mut req = agent.get(d.url);
    if let Some(t) = d.token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    if state.have > 0 {
        req = req.header("Range", format!("bytes={}-", state.have));
    }
    let resp = req.call().map_err(|e| match *answered {
        true => http_err(d, e.to_string(), true),
        false => StoreError::Unreachable {
            url: d.url.to_owned(),
            reason: e.to_string(),
        },
    })?;
    *answered = true;
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    match status {
        206 => {
            let range = header("content-range").unwrap_or_default();
            let (start, end, total) = parse_content_range(&range).ok_or_else(|| {
                http_err(d, format!("206 with a bad Content-Range {range:?}"), false)
            })?;
            let Some(expected) = state.total.or(total) else {
                return Err(http_err(
                    d,
                    format!("206 without the file's size (Content-Range {range:?})"),
                    false,
                ));
            };
            if start != state.have || end.checked_add(1) != Some(expected) {
                // Not the range asked for: start again from the first byte.
                let asked = state.have;
                truncate(d.partial)?;
                state.restart();
                d.progress.advance_to(0);
                return Err(http_err(
                    d,
                    format!("asked for bytes {asked}-, got Content-Range {range:?}"),
                    true,
                ));
            }
            if let Some(t) = total.filter(|&t| t != expected) {
                return Err(StoreError::SizeMismatch {
                    what: format!("{} (Content-Range)", d.url),
                    expected,
                    got: t,
                });
            }
            learn_total(d, state, expected);
        }
        200 => {
            if state.have > 0 {
                d.progress
                    .note("the server ignored the range request; starting over");
                truncate(d.partial)?;
                state.restart();
                d.progress.advance_to(0);
            }
            let len = header("content-length").and_then(|v| v.parse::<u64>().ok());
            match (state.total, len) {
                (Some(expected), Some(len)) if len != expected => {
                    return Err(StoreError::SizeMismatch {
                        what: format!("{} (Content-Length)", d.url),
                        expected,
                        got: len,
                    });
                }
                (Some(_), _) => {}
                (None, Some(len)) => learn_total(d, state, len),
                (None, None) => {
                    return Err(http_err(
                        d,
                        "the server did not say how large the file is (no Content-Length), \
                         so a complete download cannot be told from a cut one",
                        false,
                    ))
                }
            }
        }
        416 => {
            // The server cannot serve the range: start again from the first byte.
            truncate(d.partial)?;
            state.restart();
            return Err(http_err(d, "HTTP 416 for the resume range", true));
        }
        401 | 403 => {
            return Err(http_err(
                d,
                format!("access denied (HTTP {status}); set HF_TOKEN if the repository is gated"),
                false,
            ))
        }
        404 => return Err(http_err(d, "not found (HTTP 404)", false)),
        408 | 429 | 500..=599 => return Err(http_err(d, format!("HTTP {status}"), true)),
        _ => return Err(http_err(d, format!("unexpected HTTP {status}"), false)),
    }

    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(d.partial)
        .map_err(StoreError::io(format!(
            "cannot open {}",
            d.partial.display()
        )))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut body = resp.into_body().into_reader();
    let mut buf = vec![0u8; 256 * 1024];
    let write_err = |e| StoreError::io(format!("cannot write {}", d.partial.display()))(e);
    let result = loop {
        if crate::is_set(d.cancel) {
            break Err(StoreError::Cancelled);
        }
        let n = match body.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => break Err(http_err(d, format!("transfer interrupted: {e}"), true)),
        };
        // The total is known here: both branches above set it or returned.
        let expected = state.total.unwrap_or(0);
        if state.have + n as u64 > expected {
            drop(out);
            let _ = std::fs::remove_file(d.partial);
            return Err(StoreError::SizeMismatch {
                what: format!("{} (the server sent more bytes)", d.url),
                expected,
                got: state.have + n as u64,
            });
        }
        out.write_all(&buf[..n]).map_err(write_err)?;
        state.hasher.update(&buf[..n]);
        state.have += n as u64;
        d.progress.advance_to(state.have);
    };
    // What was received stays on disk for the next attempt, matching `state`.
    out.flush().map_err(write_err)?;
    result?;
    let expected = state.total.unwrap_or(0);
    if state.have < expected {
        return Err(http_err(
            d,
            format!(
                "the connection closed after {} of {expected} bytes",
                state.have
            ),
            true,
        ));
    }
    Ok(())
}

/// Records a size the server announced; the progress bar gets its total.
fn learn_total(d: &Download, state: &mut State, total: u64) {
    if state.total.is_none() {
        state.total = Some(total);
        d.progress.begin(d.label, Some(total));
        d.progress.advance_to(state.have);
    }
}

/// The largest JSON answer accepted (a hub listing of a repository with thousands of files
/// is a few hundred kB).
pub const MAX_JSON_BYTES: u64 = 16 << 20;

/// GET `url` and return its body (at most [`MAX_JSON_BYTES`]); statuses other than 200 are
/// errors, retryable for 408, 429 and 5xx. `what` names the request in messages.
pub fn get_small(
    agent: &ureq::Agent,
    url: &str,
    token: Option<&str>,
    what: &str,
) -> Result<Vec<u8>, StoreError> {
    let err = |reason: String, retryable: bool| StoreError::Http {
        url: url.to_owned(),
        reason,
        retryable,
    };
    let mut req = agent.get(url).header("Accept", "application/json");
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    let resp = req.call().map_err(|e| err(e.to_string(), false))?;
    let status = resp.status().as_u16();
    match status {
        200 => {}
        401 | 403 => {
            return Err(err(
                format!(
                    "{what}: access denied (HTTP {status}); check the name, and set HF_TOKEN \
                     if the repository is private or gated"
                ),
                false,
            ))
        }
        404 => {
            return Err(err(
                format!("{what}: not found (HTTP 404); check the name"),
                false,
            ))
        }
        408 | 429 | 500..=599 => return Err(err(format!("{what}: HTTP {status}"), true)),
        _ => return Err(err(format!("{what}: unexpected HTTP {status}"), false)),
    }
    resp.into_body()
        .with_config()
        .limit(MAX_JSON_BYTES)
        .read_to_vec()
        .map_err(|e| err(format!("{what}: cannot read the answer: {e}"), true))
}

/// `bytes START-END/TOTAL` (TOTAL may be `*`).
pub(crate) fn parse_content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = end.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    (start <= end).then_some((start, end, total))
}

#[cfg(test)]
mod tests {
    use super::parse_content_range;

    #[test]
    fn content_range() {
        assert_eq!(parse_content_range("bytes 5-9/10"), Some((5, 9, Some(10))));
        assert_eq!(parse_content_range("bytes 0-0/*"), Some((0, 0, None)));
        assert_eq!(parse_content_range("bytes 9-5/10"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
        assert_eq!(parse_content_range("bytes 0-x/2"), None);
        assert_eq!(
            parse_content_range("bytes 0-9/100"),
            Some((0, 9, Some(100)))
        );
        assert_eq!(parse_content_range("bytes 0-9/*"), Some((0, 9, None)));
        assert_eq!(parse_content_range("bytes 9-0/100"), None);
    }
}
