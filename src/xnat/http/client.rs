//! The HTTP client of XNAT: who we are (credentials), the client options, TLS (`--ca-bundle`,
//! `--insecure`) and the connection pool, and the [`HttpXnat`] that holds them.

use crate::xnat::error::network_error;
use crate::xnat::login::{self, LoginGate};
use crate::xnat::retry::LISTING_ATTEMPTS;
use crate::xnat::{Result, XnatError};
use std::fmt;
use std::path::PathBuf;
use std::sync::RwLock;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, OnceCell};

/// Who we are to the server. `Debug` never shows the password or the token.
#[derive(Clone, Default)]
pub struct Credentials {
    pub user: Option<String>,
    pub password: Option<String>,
    /// A JSESSIONID to start with (`XNAT_TOKEN`).
    pub token: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Bound on connecting, and on each wait for more body bytes.
    pub timeout: Duration,
    /// Attempts at a listing in all (see [`crate::xnat::retry`]; file bodies get one per call).
    pub listing_attempts: u32,
    /// Bound on one attempt at a listing or a login, answer and body together: a server
    /// that sends a byte now and then must not hold it for ever. (File bodies are bounded by
    /// their readers' progress rule instead: see `crate::fetch::PROGRESS_BYTES`.)
    pub listing_deadline: Duration,
    /// Accept any TLS certificate.
    pub insecure: bool,
    /// PEM certificates of private certificate authorities, trusted besides the system's.
    pub ca_bundle: Option<PathBuf>,
    /// How long a refused login is remembered (requests fail at once meanwhile).
    pub login_retry_after: Duration,
    /// How often a session the user handed over (`XNAT_TOKEN`) is touched while mounted.
    pub keepalive: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: Duration::from_secs(30),
            listing_attempts: LISTING_ATTEMPTS,
            listing_deadline: Duration::from_secs(300),
            insecure: false,
            ca_bundle: None,
            login_retry_after: login::LOGIN_RETRY_AFTER,
            keepalive: login::KEEPALIVE_EVERY,
        }
    }
}

pub struct HttpXnat {
    /// The URL as given (it names the cache area).
    pub(super) given: String,
    /// Where XNAT really is: the given URL until [`login::discover_base`] says otherwise.
    pub(super) base: RwLock<String>,
    pub(super) discovered: OnceCell<()>,
    /// For file bodies and logins: each wait for more bytes bounded by
    /// [`ClientOptions::timeout`].
    pub(super) http: reqwest::Client,
    /// For listings: XNAT builds a listing whole before its first byte, which can take
    /// minutes on a big project, so only [`ClientOptions::listing_deadline`] bounds them.
    pub(super) listing_http: reqwest::Client,
    pub(super) creds: Credentials,
    pub(super) token: Mutex<Option<String>>,
    pub(super) gate: LoginGate,
    /// Whether the server says who a session is (`/xapi/users/username`), and when (and for
    /// which session) it was last asked.
    pub(super) whoami: std::sync::Mutex<WhoamiState>,
    /// Session documents just read to find a session by name, kept a little while for its
    /// tree, which starts from the same document (one round trip less per named session).
    pub(super) documents:
        std::sync::Mutex<std::collections::HashMap<String, (Instant, bytes::Bytes)>>,
    pub(super) options: ClientOptions,
}

#[derive(Debug, Default)]
pub(super) struct WhoamiState {
    pub(super) supported: bool,
    pub(super) last: Option<(String, Instant)>,
}

impl fmt::Debug for HttpXnat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpXnat")
            .field("base", &self.base())
            .finish()
    }
}

/// Reads the PEM certificates of a `--ca-bundle` (or `SSL_CERT_FILE`).
fn ca_certificates(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>> {
    let bad = |why: String| {
        XnatError::InvalidUrl(format!(
            "cannot use the CA bundle {}: {why}; give a PEM file of certificates (--ca-bundle or SSL_CERT_FILE)",
            path.display()
        ))
    };
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("it holds no certificate".into()));
    }
    Ok(certs)
}

/// How long an idle connection stays in the pool: less than Tomcat's `connectionTimeout` (20 s
/// in XNAT's docker-compose `server.xml`) and nginx's `keepalive_timeout` (65 s), so a
/// connection the server has closed is seldom reused.
const POOL_IDLE: Duration = Duration::from_secs(15);

impl HttpXnat {
    pub fn new(url: &str, creds: Credentials, options: ClientOptions) -> Result<Self> {
        let base = url.trim_end_matches('/').to_string();
        let parsed = reqwest::Url::parse(&base).map_err(|e| {
            XnatError::InvalidUrl(format!(
                "{base:?} is not a valid server URL ({e}); give one like https://xnat.example.org"
            ))
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(XnatError::InvalidUrl(format!(
                "{base:?}: the server URL must start with http:// or https://"
            )));
        }
        if let Some(msg) = login::inside_xnat(&base) {
            return Err(XnatError::InvalidUrl(msg));
        }
        // HTTP/2 (https servers that offer it) multiplexes every request on one connection:
        // its flow-control windows grow with the link (adaptive windows), so a far server's
        // round trips do not cap throughput at the default 64 KiB window. Plain http is
        // HTTP/1.1 with a connection per request in flight from the pool.
        let roots = match &options.ca_bundle {
            Some(path) => ca_certificates(path)?,
            None => Vec::new(),
        };
        let client = |read_timeout: Duration| {
            let mut builder = reqwest::Client::builder()
                .connect_timeout(options.timeout)
                .read_timeout(read_timeout)
                .pool_idle_timeout(POOL_IDLE)
                .http2_adaptive_window(true)
                .danger_accept_invalid_certs(options.insecure)
                .user_agent(concat!("xnatfs/", env!("CARGO_PKG_VERSION")));
            if !roots.is_empty() {
                builder = builder.tls_certs_merge(roots.clone());
            }
            builder.build().map_err(|e| network_error(&base, e))
        };
        let http = client(options.timeout)?;
        let listing_http = client(options.listing_deadline.max(options.timeout))?;
        Ok(HttpXnat {
            token: Mutex::new(creds.token.clone()),
            base: RwLock::new(base.clone()),
            given: base,
            discovered: OnceCell::new(),
            http,
            listing_http,
            creds,
            gate: LoginGate::new(options.login_retry_after),
            whoami: Default::default(),
            documents: Default::default(),
            options,
        })
    }

    /// The server URL as given: what names the cache area and what the mount shows.
    pub fn base_url(&self) -> &str {
        &self.given
    }

    /// Where XNAT really is (after redirects, once the first request found out).
    pub fn server_url(&self) -> String {
        self.base()
    }

    pub(super) fn base(&self) -> String {
        self.base.read().unwrap().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_print() {
        let c = Credentials {
            user: Some("alice".into()),
            password: Some("hunter2".into()),
            token: Some("ABCDEF".into()),
        };
        let shown = format!("{c:?}");
        assert!(shown.contains("alice"));
        assert!(!shown.contains("hunter2") && !shown.contains("ABCDEF"));
    }
}
