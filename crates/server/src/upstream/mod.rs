//! Models served by another machine: `--upstream NAME=URL` routes the model name NAME to an
//! OpenAI-compatible server the user already runs (vLLM with Ray, llama.cpp's RPC server,
//! …) for a model larger than this machine. hearth does not split a model itself; it passes
//! requests for NAME through as they are and streams the answers back as they arrive.
//!
//! - [`Upstream::parse`] / [`Upstreams::new`]: the settings, checked at startup.
//! - [`proxy`]: the middleware that picks the requests naming an upstream model and forwards
//!   them (`/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`); other endpoints
//!   answer such a model with a 400 that says where it is served.
//! - [`tap`]: reads token usage out of the answers as they pass, for the ledger.

pub mod proxy;
pub mod tap;

use std::time::Duration;

/// How long connecting to an upstream may take unless told otherwise.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an upstream may take to start answering, and longest pause in a streamed answer,
/// unless told otherwise (a large model's prompt over a cluster can take minutes).
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(300);
/// The endpoints passed through to an upstream (the path after the base URL is the part
/// after `/v1`).
pub const PROXIED_PATHS: &[&str] = &["/v1/chat/completions", "/v1/completions", "/v1/embeddings"];

/// One remote model: requests naming `name` go to `base` (an OpenAI base URL ending in
/// `/v1`, or whatever prefix the server uses).
#[derive(Clone)]
pub struct Upstream {
    pub name: String,
    /// The base URL without a trailing slash.
    pub base: String,
    /// `host:port` of the base URL, for messages and listings (never the key).
    pub host: String,
    /// Sent as `Authorization: Bearer …` (the client's own key for hearth is never passed on).
    key: Option<String>,
    /// The certificate authorities trusted for an https upstream instead of the built-in
    /// (Mozilla) roots: a private CA, as servers on a company network or a cluster use.
    roots: Option<TrustedRoots>,
}

/// The CA certificates of one PEM file, as `--upstream-ca` names it.
#[derive(Clone)]
pub struct TrustedRoots {
    /// Where they came from, for messages.
    pub path: std::path::PathBuf,
    certs: ureq::tls::RootCerts,
}

impl TrustedRoots {
    /// Reads the `CERTIFICATE` blocks of a PEM file (other blocks, such as a key left in the
    /// same file, are passed over). A file that cannot be read, is not PEM or holds no
    /// certificate is refused, naming the file.
    pub fn load(path: &std::path::Path) -> Result<TrustedRoots, UpstreamError> {
        let bad = |why: String| UpstreamError::BadCaFile {
            path: path.display().to_string(),
            why,
        };
        // A CA bundle is kilobytes; a few MB is the most a system bundle takes.
        const MAX_CA_FILE: u64 = 16 << 20;
        let len = std::fs::metadata(path)
            .map_err(|e| bad(format!("cannot read it: {e}")))?
            .len();
        if len > MAX_CA_FILE {
            return Err(bad(format!(
                "{len} bytes is too large for a file of CA certificates (at most 16 MiB)"
            )));
        }
        let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
        let mut certs = Vec::new();
        for item in ureq::tls::parse_pem(&pem) {
            match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
                Ok(_) => {}
                Err(e) => return Err(bad(format!("not a PEM file of certificates: {e}"))),
            }
        }
        if certs.is_empty() {
            return Err(bad(
                "it holds no certificate (expected PEM blocks starting with -----BEGIN CERTIFICATE-----)"
                    .to_owned(),
            ));
        }
        Ok(TrustedRoots {
            path: path.to_owned(),
            certs: ureq::tls::RootCerts::new_with_certs(&certs),
        })
    }
}

// By hand, so that no log or panic message can ever print the key.
impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("base", &self.base)
            .field("key", &self.key.as_ref().map(|_| "(set)"))
            .field("roots", &self.roots.as_ref().map(|r| &r.path))
            .finish()
    }
}

/// A setting that cannot name an upstream.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UpstreamError {
    #[error("{0:?}: expected NAME=URL, e.g. big-llama=http://gpu-box:8000/v1")]
    NoEquals(String),
    #[error("{0:?}: the model name is empty")]
    EmptyName(String),
    #[error("model name {0:?}: at most 256 characters, without spaces or control characters")]
    BadName(String),
    #[error("upstream {name}: {url:?} is not a URL ({why}); give the server's OpenAI base URL, e.g. http://gpu-box:8000/v1")]
    BadUrl {
        name: String,
        url: String,
        why: String,
    },
    #[error("upstream {name}: {url:?} uses {scheme}: only http:// and https:// can be used")]
    BadScheme {
        name: String,
        url: String,
        scheme: String,
    },
    #[error("upstream {0}: the URL holds a user or password; give the key with --upstream-key or HEARTH_UPSTREAM_KEY instead")]
    UserInUrl(String),
    #[error("upstream {0}: the key must be 1 to 4096 printable ASCII characters without spaces")]
    BadKey(String),
    #[error("model name {0:?} is given to two upstreams; each name can go to one server only")]
    Duplicate(String),
    #[error("{0} must be at least 1 second")]
    ZeroTimeout(&'static str),
    #[error("CA certificate file {path}: {why}")]
    BadCaFile { path: String, why: String },
    #[error("upstream {0}: a CA certificate file only applies to https:// URLs")]
    CaWithoutTls(String),
}

impl Upstream {
    /// `NAME=URL`, as `--upstream` takes it.
    pub fn parse(spec: &str, key: Option<String>) -> Result<Upstream, UpstreamError> {
        let (name, url) = spec
            .split_once('=')
            .ok_or_else(|| UpstreamError::NoEquals(spec.to_owned()))?;
        if name.trim().is_empty() {
            return Err(UpstreamError::EmptyName(spec.to_owned()));
        }
        Upstream::new(name, url, key)
    }

    /// Checks the name, the URL (http or https, a host, no user, query or fragment) and the
    /// key.
    pub fn new(name: &str, url: &str, key: Option<String>) -> Result<Upstream, UpstreamError> {
        if name.is_empty() {
            return Err(UpstreamError::EmptyName(format!("{name}={url}")));
        }
        if name.chars().count() > 256 || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(UpstreamError::BadName(name.to_owned()));
        }
        let bad_url = |why: &str| UpstreamError::BadUrl {
            name: name.to_owned(),
            url: url.to_owned(),
            why: why.to_owned(),
        };
        let uri: axum::http::Uri = url.trim().parse().map_err(|e| bad_url(&format!("{e}")))?;
        let scheme = uri
            .scheme_str()
            .ok_or_else(|| bad_url("no scheme such as http://"))?;
        if scheme != "http" && scheme != "https" {
            return Err(UpstreamError::BadScheme {
                name: name.to_owned(),
                url: url.to_owned(),
                scheme: format!("{scheme}://"),
            });
        }
        let authority = uri.authority().ok_or_else(|| bad_url("no host"))?;
        if authority.as_str().contains('@') {
            return Err(UpstreamError::UserInUrl(name.to_owned()));
        }
        if authority.host().is_empty() {
            return Err(bad_url("no host"));
        }
        if uri.query().is_some() || url.contains('#') {
            return Err(bad_url("a base URL has no query or fragment"));
        }
        if let Some(k) = &key {
            if k.is_empty() || k.len() > 4096 || !k.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(UpstreamError::BadKey(name.to_owned()));
            }
        }
        let path = uri.path().trim_end_matches('/');
        Ok(Upstream {
            name: name.to_owned(),
            base: format!("{scheme}://{authority}{path}"),
            host: authority.as_str().to_owned(),
            key,
            roots: None,
        })
    }

    /// Trusts `roots` (and only them) for this upstream's certificate.
    pub fn with_roots(mut self, roots: TrustedRoots) -> Result<Upstream, UpstreamError> {
        if !self.is_https() {
            return Err(UpstreamError::CaWithoutTls(self.name));
        }
        self.roots = Some(roots);
        Ok(self)
    }

    /// Whether requests to it go over TLS.
    pub fn is_https(&self) -> bool {
        self.base.starts_with("https://")
    }

    /// The CA file trusted for this upstream, if one is.
    pub fn ca_file(&self) -> Option<&std::path::Path> {
        self.roots.as_ref().map(|r| r.path.as_path())
    }

    /// The TLS settings for requests to this upstream.
    pub(crate) fn tls_config(&self) -> ureq::tls::TlsConfig {
        let builder = ureq::tls::TlsConfig::builder();
        match &self.roots {
            Some(r) => builder.root_certs(r.certs.clone()).build(),
            None => builder.build(),
        }
    }

    /// The URL an incoming path (one of [`PROXIED_PATHS`]) goes to.
    pub fn url_for(&self, path: &str) -> String {
        format!("{}{}", self.base, path.strip_prefix("/v1").unwrap_or(path))
    }

    pub fn has_key(&self) -> bool {
        self.key.is_some()
    }

    pub(crate) fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }
}

/// Every upstream and the timeouts they share.
#[derive(Clone, Debug)]
pub struct Upstreams {
    list: Vec<Upstream>,
    pub connect_timeout: Duration,
    /// How long until the upstream starts answering, and the longest pause inside an answer.
    pub response_timeout: Duration,
}

impl Default for Upstreams {
    fn default() -> Self {
        Upstreams {
            list: Vec::new(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
        }
    }
}

impl Upstreams {
    /// Refuses a name given twice and zero timeouts.
    pub fn new(
        list: Vec<Upstream>,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Result<Upstreams, UpstreamError> {
        for (i, u) in list.iter().enumerate() {
            if list[..i].iter().any(|o| o.name == u.name) {
                return Err(UpstreamError::Duplicate(u.name.clone()));
            }
        }
        if connect_timeout.is_zero() {
            return Err(UpstreamError::ZeroTimeout("--upstream-connect-timeout"));
        }
        if response_timeout.is_zero() {
            return Err(UpstreamError::ZeroTimeout("--upstream-timeout"));
        }
        Ok(Upstreams {
            list,
            connect_timeout,
            response_timeout,
        })
    }

    /// The upstream serving `model`, if one does. An upstream wins over a local model of the
    /// same name: the user routed that name on purpose.
    pub fn find(&self, model: &str) -> Option<&Upstream> {
        self.list.iter().find(|u| u.name == model)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Upstream> {
        self.list.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_is_a_name_and_a_base_url() {
        let u = Upstream::parse("big=http://gpu-box:8000/v1/", None).unwrap();
        assert_eq!(u.name, "big");
        assert_eq!(u.base, "http://gpu-box:8000/v1");
        assert_eq!(u.host, "gpu-box:8000");
        assert_eq!(
            u.url_for("/v1/chat/completions"),
            "http://gpu-box:8000/v1/chat/completions"
        );
        // The name may hold what vLLM names carry; the URL may hold `=`.
        let u = Upstream::parse("org/Model-405B:fp8=https://h/api/v1", None).unwrap();
        assert_eq!(u.name, "org/Model-405B:fp8");
        assert_eq!(u.url_for("/v1/embeddings"), "https://h/api/v1/embeddings");
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        let e = |s: &str| Upstream::parse(s, None).unwrap_err();
        assert!(matches!(e("big"), UpstreamError::NoEquals(_)));
        assert!(matches!(e("=http://h/v1"), UpstreamError::EmptyName(_)));
        assert!(matches!(e("a b=http://h/v1"), UpstreamError::BadName(_)));
        assert!(matches!(e("big=not a url"), UpstreamError::BadUrl { .. }));
        assert!(e("big=gpu-box:8000").to_string().contains("no scheme"));
        assert!(matches!(
            e("big=ftp://h/v1"),
            UpstreamError::BadScheme { .. }
        ));
        assert!(matches!(e("big=/v1"), UpstreamError::BadUrl { .. }));
        assert!(matches!(
            e("big=http://u:p@h/v1"),
            UpstreamError::UserInUrl(_)
        ));
        assert!(matches!(
            e("big=http://h/v1?x=1"),
            UpstreamError::BadUrl { .. }
        ));
        assert!(e("big=ftp://h/v1").to_string().contains("only http://"));
        assert!(matches!(
            Upstream::parse("big=http://h/v1", Some("has space".into())),
            Err(UpstreamError::BadKey(_))
        ));
    }

    #[test]
    fn a_name_goes_to_one_upstream_and_the_key_never_prints() {
        let a = Upstream::parse("big=http://a/v1", Some("sekrit".into())).unwrap();
        let b = Upstream::parse("big=http://b/v1", None).unwrap();
        let t = DEFAULT_RESPONSE_TIMEOUT;
        assert_eq!(
            Upstreams::new(vec![a.clone(), b], t, t).unwrap_err(),
            UpstreamError::Duplicate("big".into())
        );
        assert!(!format!("{a:?}").contains("sekrit"));
        assert!(Upstreams::new(vec![a], Duration::ZERO, t).is_err());
    }
}
