//! What can go wrong talking to XNAT, in words a user can act on, and which of it is worth
//! trying again.

/// What can go wrong talking to XNAT. Each says what failed in words a user can act on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum XnatError {
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("access denied: {0}")]
    Forbidden(String),
    #[error("server answered HTTP {status} for {path}{}", answered_by(by))]
    Status {
        status: u16,
        path: String,
        /// Seconds the server asked to wait (`Retry-After` on a 429 or 503).
        retry_after: Option<u64>,
        /// The front (a reverse proxy, a gateway) that answered instead of XNAT, as its
        /// `Server` header names it: XNAT's own answers come from Restlet or Tomcat.
        by: Option<String>,
    },
    #[error("cannot reach the server for {path}: {msg}")]
    Network { path: String, msg: String },
    #[error("unexpected answer for {path}: {msg}")]
    BadResponse { path: String, msg: String },
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("{0}")]
    InvalidUrl(String),
}

fn answered_by(by: &Option<String>) -> String {
    match by {
        Some(front) => format!(" (answered by {front}, in front of XNAT, not by XNAT itself)"),
        None => String::new(),
    }
}

impl XnatError {
    /// Transient errors are worth retrying; the others will not change on a retry.
    pub fn is_transient(&self) -> bool {
        match self {
            XnatError::Status { status, .. } => *status >= 500 || *status == 429,
            XnatError::Network { .. } | XnatError::Timeout(_) => true,
            _ => false,
        }
    }
}

pub type Result<T, E = XnatError> = std::result::Result<T, E>;

/// The error of a request that got no answer: timed out, or the network's own (refused,
/// reset, TLS, ...), with the chain of its causes.
pub(crate) fn network_error(path: &str, e: reqwest::Error) -> XnatError {
    if e.is_timeout() {
        XnatError::Timeout(format!("request for {path}"))
    } else {
        // The chain of sources says what really happened (refused, reset, TLS, ...).
        let mut msg = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            msg = format!("{msg}: {s}");
            source = s.source();
        }
        XnatError::Network {
            path: path.to_string(),
            msg,
        }
    }
}

/// What a listing that was never kept is said to be, offline.
pub(crate) const NEVER_LISTED_OFFLINE: &str = "(offline, and never listed before)";

/// Whether a `NotFound` is of a listing never kept, offline (no server said so).
pub fn never_listed_offline(what: &str) -> bool {
    what.ends_with(NEVER_LISTED_OFFLINE)
}
