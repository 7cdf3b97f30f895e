//! [`HttpXnat`]: the [`XnatApi`] over XNAT's REST API, with a JSESSION cookie that is renewed
//! by itself when the server answers 401 (or its HTML login page). Listings are retried with
//! backoff; file bodies get one attempt per call (see [`super::retry`]).

use super::json::{self, Row};
use super::login::{self, Identity, LoginGate};
use super::ranged;
use super::retry::{Attempts, LISTING_ATTEMPTS};
use super::{
    Assessor, Download, Project, RemoteFile, Resource, ResourceRef, Scan, Session, XnatApi,
};
use super::{Result, XnatError};
use super::{SessionTree, session_tree, session_tree_by_listings};
use async_trait::async_trait;
use futures::TryStreamExt;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, COOKIE};
use std::borrow::Cow;
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
    /// Attempts at a listing in all (see [`super::retry`]; file bodies get one per call).
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

/// What a request expects back, to tell data from XNAT's login page.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    Json,
    /// A file body; `html_ok` when the file itself is an HTML document.
    File {
        html_ok: bool,
    },
}

/// The parent type of imaging sessions of every modality, for listing a project's sessions.
pub const IMAGE_SESSIONS: &str = "xnat:imageSessionData";

/// The columns asked of a sessions listing: XNAT's defaults (`ID, project, date, xsiType,
/// label`, less `insert_date`) and the subject's label, so that no request per session is
/// needed for it. `columns=` replaces the defaults rather than adding to them; `subject_label`
/// is XNAT's alias of `xnat:subjectData/label`, joined in by the query. XNAT: xnat-web
/// `org/nrg/xnat/restlet/resources/QueryOrganizerResource.java` (`populateQuery`),
/// `SubjAssessmentAbst.java` (`getDefaultFields`), `org/nrg/xnat/helpers/xmlpath/XMLPathShortcuts.java`
/// (`subject_label`).
pub const SESSION_COLUMNS: &str = "ID,label,project,date,xsiType,subject_label";

pub struct HttpXnat {
    /// The URL as given (it names the cache area).
    given: String,
    /// Where XNAT really is: the given URL until [`login::discover_base`] says otherwise.
    base: RwLock<String>,
    discovered: OnceCell<()>,
    /// For file bodies and logins: each wait for more bytes bounded by
    /// [`ClientOptions::timeout`].
    http: reqwest::Client,
    /// For listings: XNAT builds a listing whole before its first byte, which can take
    /// minutes on a big project, so only [`ClientOptions::listing_deadline`] bounds them.
    listing_http: reqwest::Client,
    creds: Credentials,
    token: Mutex<Option<String>>,
    gate: LoginGate,
    /// Whether the server says who a session is (`/xapi/users/username`), and when (and for
    /// which session) it was last asked.
    whoami: std::sync::Mutex<WhoamiState>,
    /// Session documents just read to find a session by name, kept a little while for its
    /// tree, which starts from the same document (one round trip less per named session).
    documents: std::sync::Mutex<std::collections::HashMap<String, (Instant, bytes::Bytes)>>,
    options: ClientOptions,
}

/// How long a session document read to find a session stands in for its tree's document.
const DOCUMENT_KEPT: Duration = Duration::from_secs(30);
/// At most this many such documents are kept.
const DOCUMENTS_KEPT: usize = 64;

#[derive(Debug, Default)]
struct WhoamiState {
    supported: bool,
    last: Option<(String, Instant)>,
}

/// How soon the identity of the same session is asked again after a 404 or an empty listing.
const WHOAMI_EVERY: Duration = Duration::from_secs(2);

impl fmt::Debug for HttpXnat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpXnat")
            .field("base", &self.base())
            .finish()
    }
}

/// Seconds a 429 or 503 asks to wait (`Retry-After` in seconds; an HTTP date is not read).
fn retry_after(resp: &reqwest::Response) -> Option<u64> {
    resp.headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
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

/// Bytes sent as they are in a path: RFC 3986's unreserved set, and `/`.
const PATH_KEEPS: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// Encodes a server path so that Tomcat takes it and XNAT finds the file it names. Tomcat
/// refuses raw `[ ] { } | \ ^ " < >` (and anything else outside RFC 3986's path characters)
/// with 400; XNAT looks a file up by the path as sent, then by it URL-decoded (where `+` is a
/// space). So every byte outside the unreserved set (and `/`) is percent-encoded, and `+` and
/// `%` too whenever anything is: a path of only unreserved characters, `+` and `%` goes as it
/// is, and is found raw. Tomcat: `java/org/apache/tomcat/util/http/parser/HttpParser.java`
/// (`IS_ABSOLUTEPATH_RELAXED`); XNAT: xnat-web `org/nrg/xnat/utils/CatalogUtils.java`
/// (`getEntryByURI`).
pub fn encode_path(path: &str) -> String {
    const ALSO_KEEPS_PLUS_PERCENT: &AsciiSet = &PATH_KEEPS.remove(b'+').remove(b'%');
    let light: Cow<str> = utf8_percent_encode(path, ALSO_KEEPS_PLUS_PERCENT).into();
    match light {
        Cow::Borrowed(_) => path.to_string(),
        Cow::Owned(_) => utf8_percent_encode(path, PATH_KEEPS).to_string(),
    }
}

fn is_html(resp: &reqwest::Response) -> bool {
    resp.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("text/html"))
}

pub(super) fn network_error(path: &str, e: reqwest::Error) -> XnatError {
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

/// How many times a request whose connection the server closed before answering is sent
/// again at once (each on another connection), before it counts as a failed attempt.
const RESENDS_ON_CLOSED: usize = 3;

/// Sends a request; one whose connection the server closed before any byte of an answer is
/// sent again at once, and not counted as an attempt (see [`closed_before_answer`]).
async fn send(req: reqwest::RequestBuilder, path: &str) -> Result<reqwest::Response> {
    let mut req = req;
    for _ in 0..RESENDS_ON_CLOSED {
        let again = req.try_clone();
        match (req.send().await, again) {
            (Err(e), Some(again)) if closed_before_answer(&e) => {
                tracing::debug!(
                    "{path}: the server closed the connection before answering (an idle \
                     keep-alive connection it let go); sending it again"
                );
                req = again;
            }
            (sent, _) => return sent.map_err(|e| network_error(path, e)),
        }
    }
    req.send().await.map_err(|e| network_error(path, e))
}

/// Whether a request failed because its connection ended before any byte of an answer came:
/// Tomcat closes a keep-alive connection idle past its `connectionTimeout` (20 s in XNAT's
/// docker-compose `server.xml`); a pooled connection reused just then takes the request and
/// closes. (After `maxKeepAliveRequests`, 100, Tomcat says `Connection: close` on the last
/// answer, which the pool honours.) A GET is safe to send again. (Idle
/// connections are let go after [`POOL_IDLE`], before any server's close, so this is the race
/// alone.)
fn closed_before_answer(e: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            return h.is_incomplete_message();
        }
        source = s.source();
    }
    false
}

/// How long an idle connection stays in the pool: less than Tomcat's `connectionTimeout` (20 s
/// in XNAT's docker-compose `server.xml`) and nginx's `keepalive_timeout` (65 s), so a
/// connection the server has closed is seldom reused.
const POOL_IDLE: Duration = Duration::from_secs(15);

/// The error of an answer that is not a success.
fn status_error(resp: &reqwest::Response, path: &str) -> XnatError {
    let status = resp.status();
    match status {
        StatusCode::UNAUTHORIZED => {
            XnatError::Auth(format!("the server refused the session for {path}"))
        }
        StatusCode::FORBIDDEN => XnatError::Forbidden(path.to_string()),
        StatusCode::NOT_FOUND => XnatError::NotFound(path.to_string()),
        s => XnatError::Status {
            status: s.as_u16(),
            path: path.to_string(),
            retry_after: retry_after(resp),
            by: front_of(resp),
        },
    }
}

/// The front that answered instead of XNAT (a reverse proxy's 502/504 page, a gateway's
/// 429), as its `Server` header names it; `None` for XNAT's own answers, which Restlet
/// (`Noelios-Restlet-Engine`) or Tomcat (`Apache-Coyote`) send, or when it does not say.
fn front_of(resp: &reqwest::Response) -> Option<String> {
    let server = resp.headers().get(reqwest::header::SERVER)?.to_str().ok()?;
    let server = server.trim();
    let xnat = ["restlet", "coyote", "tomcat"];
    let lower = server.to_ascii_lowercase();
    (!server.is_empty() && !xnat.iter().any(|x| lower.contains(x)))
        .then(|| server.chars().take(80).collect())
}

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

    fn base(&self) -> String {
        self.base.read().unwrap().clone()
    }

    /// Finds the real base URL behind redirects, once, before any credential is sent.
    async fn ensure_base(&self) -> Result<String> {
        self.discovered
            .get_or_try_init(|| async {
                let timeout = self.options.timeout.min(self.options.listing_deadline);
                let base = login::discover_base(&self.http, &self.given, timeout).await?;
                *self.base.write().unwrap() = base;
                Ok::<(), XnatError>(())
            })
            .await?;
        Ok(self.base())
    }

    /// Logs in with the password, returning the new JSESSION token: one attempt (a request
    /// that needs a login retries as a whole: see [`super::retry`]).
    async fn login(&self) -> Result<String> {
        self.login_once().await
    }

    async fn login_once(&self) -> Result<String> {
        let (user, password) = match (&self.creds.user, &self.creds.password) {
            (Some(user), Some(password)) => (user, password),
            (None, _) if self.creds.token.is_some() => {
                return Err(XnatError::Auth(
                    "the session of XNAT_TOKEN is not (or no longer) live, and no user name and password are set to log in again: \
                     get a fresh token, or set XNAT_USER and XNAT_PASS"
                        .into(),
                ));
            }
            (None, _) => {
                return Err(XnatError::Auth(
                    "no user name: set XNAT_USER or pass --user (with XNAT_PASS, or an alias token as user and password)"
                        .into(),
                ));
            }
            (Some(user), None) => {
                return Err(XnatError::Auth(format!(
                    "no password for {user}: set XNAT_PASS, or add it to the profile or ~/.netrc"
                )));
            }
        };
        self.gate.check()?;
        let base = self.ensure_base().await?;
        let path = "/data/JSESSION";
        let url = format!("{base}{path}");
        // A login is quick on any XNAT: each wait bounded like a body's.
        let login = self.http.post(&url).basic_auth(user, Some(password));
        let resp = send(login.timeout(self.options.listing_deadline), &url).await?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let body = resp.text().await.unwrap_or_default();
            let msg = login::refusal(user, &base, &body);
            self.gate.refused(&msg);
            return Err(XnatError::Auth(msg));
        }
        if status == StatusCode::NOT_FOUND || status == StatusCode::METHOD_NOT_ALLOWED {
            return Err(XnatError::InvalidUrl(format!(
                "no XNAT login at {url} (HTTP {}): {}",
                status.as_u16(),
                login::wrong_base_hint(&base)
            )));
        }
        if !status.is_success() {
            return Err(status_error(&resp, &url));
        }
        let body = resp.text().await.map_err(|e| network_error(&url, e))?;
        let token = body.trim();
        if token.is_empty() || json::looks_like_html(token.as_bytes()) || token.len() > 256 {
            return Err(XnatError::InvalidUrl(format!(
                "{url} answered a web page, not an XNAT session: is {base} an XNAT server? {}",
                login::wrong_base_hint(&base)
            )));
        }
        self.gate.succeeded();
        tracing::debug!("logged in to {base} as {user}");
        Ok(token.to_string())
    }

    /// The session token, logging in first if there is none yet.
    async fn current_token(&self) -> Result<String> {
        self.ensure_base().await?;
        let mut token = self.token.lock().await;
        if let Some(t) = token.as_ref() {
            return Ok(t.clone());
        }
        let fresh = self.login().await?;
        *token = Some(fresh.clone());
        Ok(fresh)
    }

    /// Replaces a token the server refused. Many requests may find the same token stale at
    /// once: the first logs in again, the others get the token it got.
    async fn renew(&self, stale: &str) -> Result<String> {
        let mut token = self.token.lock().await;
        if let Some(t) = token.as_ref()
            && t != stale
        {
            return Ok(t.clone());
        }
        tracing::info!("XNAT session expired; logging in again");
        *token = None;
        let fresh = self.login().await?;
        *token = Some(fresh.clone());
        Ok(fresh)
    }

    /// Logs in (if not yet) and asks who the session is, so that a session the server later
    /// serves as the guest's is noticed and replaced (see [`Self::became_guest`]): for runs
    /// that skip [`Self::check_login`] (a prefetch asks it beside its first listings).
    pub async fn learn_identity(&self) {
        if let Ok(token) = self.current_token().await {
            self.identity(&token).await;
            // The first 404 or empty listing from now on asks again at once.
            self.whoami.lock().unwrap().last = None;
        }
    }

    /// Checks that the server answers and the credentials work. A login the server could not
    /// answer (5xx, no connection) is tried again like a listing; a refused one never is.
    /// Then asks who the session is: a token the user handed over (`XNAT_TOKEN`) that the
    /// server does not take (refused, or served as the guest) is replaced by a login with
    /// the password when there is one, and is an error otherwise: no mount on a dead token.
    pub async fn check_login(&self) -> Result<()> {
        let mut attempts = Attempts::new(self.options.listing_attempts);
        let token = loop {
            match self.current_token().await {
                Err(e) if e.is_transient() => {
                    tracing::debug!("logging in: {e} (attempt {})", attempts.made());
                    if !attempts.again(true).await {
                        return Err(e);
                    }
                }
                other => break other?,
            }
        };
        let token = match self.identity(&token).await {
            Identity::Guest if self.creds.password.is_some() => {
                let fresh = self.renew(&token).await?;
                if self.identity(&fresh).await == Identity::Guest {
                    return Err(XnatError::Auth(format!(
                        "logged in, but {} serves the session as the guest user",
                        self.base()
                    )));
                }
                fresh
            }
            Identity::Guest => {
                return Err(XnatError::Auth(format!(
                    "XNAT_TOKEN is not a live session at {}: get a fresh one (log in and copy \
                     the JSESSIONID cookie), or set XNAT_USER and XNAT_PASS (or an alias token)",
                    self.base()
                )));
            }
            _ => token,
        };
        drop(token);
        // The first 404 or empty listing from now on asks again at once.
        self.whoami.lock().unwrap().last = None;
        Ok(())
    }

    /// Who the server takes session `token` for; remembers whether it can say at all.
    async fn identity(&self, token: &str) -> Identity {
        let timeout = self.options.timeout;
        let who = login::whoami(&self.http, &self.base(), token, timeout).await;
        let mut state = self.whoami.lock().unwrap();
        if let Identity::User(name) = &who {
            state.supported = true;
            tracing::info!("signed in to {} as {name}", self.base());
        }
        state.last = Some((token.to_string(), Instant::now()));
        who
    }

    /// After a 404 or an empty listing: whether the session has quietly become the guest's
    /// (a site with guest access serves a dead session as the guest, who sees no private
    /// data). Asked only of servers that said who we were, at most every [`WHOAMI_EVERY`]
    /// for the same session.
    async fn became_guest(&self, token: &str) -> bool {
        {
            let state = self.whoami.lock().unwrap();
            let recent =
                matches!(&state.last, Some((t, at)) if t == token && at.elapsed() < WHOAMI_EVERY);
            if !state.supported || recent {
                return false;
            }
        }
        let guest = self.identity(token).await == Identity::Guest;
        if guest {
            tracing::info!("the XNAT session is now the guest's; logging in again");
        }
        guest
    }

    /// Keeps a session the user handed over (`XNAT_TOKEN`) alive while `self` lives, by
    /// touching `GET /data/JSESSION` every [`ClientOptions::keepalive`]; a session of our own
    /// needs none (a dead one is replaced by logging in again). Returns the task.
    pub fn keep_alive(self: &std::sync::Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        self.creds.token.as_ref()?;
        let client = std::sync::Arc::downgrade(self);
        let every = self.options.keepalive.max(Duration::from_millis(100));
        Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(client) = client.upgrade() else {
                    return;
                };
                let Some(token) = client.token.lock().await.clone() else {
                    continue;
                };
                let touched = client
                    .http
                    .get(format!("{}/data/JSESSION", client.base()))
                    .header(COOKIE, format!("JSESSIONID={token}"))
                    .timeout(client.options.timeout)
                    .send()
                    .await;
                match touched {
                    Ok(r) if r.status().is_success() => tracing::debug!("XNAT session kept alive"),
                    Ok(r) => tracing::info!("keeping the XNAT session alive: HTTP {}", r.status()),
                    Err(e) => tracing::debug!("keeping the XNAT session alive: {e}"),
                }
            }
        }))
    }

    /// Ends the server session (best effort).
    pub async fn logout(&self) {
        if self.creds.password.is_none() {
            return; // a token the user gave us is theirs to end
        }
        if let Some(token) = self.token.lock().await.take() {
            let _ = self
                .http
                .delete(format!("{}/data/JSESSION", self.base()))
                .header(COOKIE, format!("JSESSIONID={token}"))
                .send()
                .await;
        }
    }

    /// One GET with the session cookie; a refused session is renewed and the request sent
    /// once more.
    async fn get_once(
        &self,
        path: &str,
        query: &str,
        expect: Expect,
        range: Option<&str>,
    ) -> Result<reqwest::Response> {
        let mut token = self.current_token().await?;
        let url = format!("{}{}{query}", self.base(), encode_path(path));
        for renewed in [false, true] {
            let http = match expect {
                Expect::Json => &self.listing_http,
                Expect::File { .. } => &self.http,
            };
            let mut req = http.get(&url).header(COOKIE, format!("JSESSIONID={token}"));
            if let Some(r) = range {
                req = req.header(reqwest::header::RANGE, r);
            }
            if expect == Expect::Json {
                req = req.timeout(self.options.listing_deadline);
            }
            let resp = send(req, path).await?;
            let status = resp.status();
            let login_page = status.is_success()
                && is_html(&resp)
                && !matches!(expect, Expect::File { html_ok: true });
            if status == StatusCode::UNAUTHORIZED || login_page {
                if !renewed {
                    token = self.renew(&token).await?;
                    continue;
                }
                return Err(if login_page {
                    XnatError::BadResponse {
                        path: path.into(),
                        msg: "an HTML page where data was expected, even after logging in again"
                            .into(),
                    }
                } else {
                    XnatError::Auth(format!("access to {path} refused after logging in again"))
                });
            }
            // An `.html` file answered with HTML may be the file, or the login page a site
            // serves a dead session (`../shared/xnat-api.md`, "Authentication"): the answer's
            // type cannot tell, so who-am-I does (the page is never taken for the file).
            if status.is_success()
                && !renewed
                && is_html(&resp)
                && matches!(expect, Expect::File { html_ok: true })
                && self.identity(&token).await == Identity::Guest
            {
                tracing::info!("{path}: the XNAT session has ended; logging in again");
                token = self.renew(&token).await?;
                continue;
            }
            if status == StatusCode::NOT_FOUND && !renewed && self.became_guest(&token).await {
                token = self.renew(&token).await?;
                continue;
            }
            if !status.is_success() {
                return Err(status_error(&resp, path));
            }
            return Ok(resp);
        }
        unreachable!("the loop returns on its second pass")
    }

    /// A JSON answer's body, held whole (`format=json` is added to `query`).
    async fn get_json(&self, path: &str, query: &str) -> Result<bytes::Bytes> {
        self.get_json_read(path, query, |resp| async move {
            whole_body(resp).await.map_err(|e| network_error(path, e))
        })
        .await
    }

    /// The rows of a files listing (`format=json` is added to `query`), each handed to a
    /// sink as it arrives (see [`super::streamed`]); each attempt starts a sink anew.
    async fn file_rows<S: json::FileRowSink + Send + 'static>(
        &self,
        path: &str,
        query: &str,
        sink: impl Fn() -> S,
    ) -> Result<S> {
        self.get_json_read(path, query, |resp| {
            let mut rows = sink();
            let at = path.to_string();
            super::streamed::parse_as_it_arrives(resp, path, move |body| {
                json::read_file_rows(body, &at, &mut rows).map(|()| rows)
            })
        })
        .await
    }

    /// A JSON answer, read by `read`: the request and the reading of its body are one
    /// attempt, tried again after transient failures (the one place listings are retried:
    /// see [`super::retry`]).
    async fn get_json_read<T, F: Future<Output = Result<T>>>(
        &self,
        path: &str,
        query: &str,
        read: impl Fn(reqwest::Response) -> F,
    ) -> Result<T> {
        let query = format!("?format=json{query}");
        let mut attempts = Attempts::new(self.options.listing_attempts);
        let started = Instant::now();
        let mut throttled = 0;
        loop {
            let result = match self.get_once(path, &query, Expect::Json, None).await {
                Ok(resp) => read(resp).await,
                Err(e) => Err(e),
            };
            match result {
                Err(e) if let Some(wait) = super::retry::throttle_wait(&e, throttled) => {
                    // A rate limiter (429, or a 503 that says when): waited out as it asks,
                    // for as long as the listing's deadline allows, not counted as attempts.
                    throttled += 1;
                    if started.elapsed() + wait >= self.options.listing_deadline {
                        return Err(e);
                    }
                    tracing::debug!("{e}: waiting {} s as asked", wait.as_secs_f32());
                    tokio::time::sleep(wait).await;
                }
                Err(e) if e.is_transient() => {
                    // A retry that works is no news; the last failure reaches the caller.
                    tracing::debug!(
                        "{e} (attempt {} of {})",
                        attempts.made(),
                        attempts.allowed()
                    );
                    if !attempts.again(true).await {
                        return Err(e);
                    }
                }
                other => return other,
            }
        }
    }

    /// A session's whole tree from two requests at once: the session document and the
    /// session's files listing with `all=true` (see [`session_tree`]).
    async fn whole_tree(&self, session: &Session) -> Result<SessionTree> {
        let doc_path = format!("/data/experiments/{}", session.id);
        let files_path = format!("{doc_path}/files");
        let kept = self
            .documents
            .lock()
            .unwrap()
            .remove(&session.id)
            .filter(|(at, _)| at.elapsed() < DOCUMENT_KEPT);
        let (doc, files) = tokio::join!(
            async {
                match kept {
                    Some((_, doc)) => Ok(doc),
                    None => self.get_json(&doc_path, "").await,
                }
            },
            self.file_rows(&files_path, "&all=true", || {
                session_tree::SessionFiles::new(&session.id, &files_path)
            })
        );
        let shape = session_tree::shape(&doc?, &doc_path)?;
        let (mut tree, derived) = session_tree::with_files(shape, files?)?;
        // Assessors and reconstructions are asked listing by listing, and only of sessions the
        // document or the files listing shows to have some (requests more for those only).
        if !derived.is_empty() {
            tree.assessors = crate::xnat::assessor_trees(self, &session.id, &derived).await?;
        }
        Ok(tree)
    }

    async fn rows(&self, path: &str, query: &str) -> Result<Vec<Row>> {
        let body = self.get_json(path, query).await?;
        let rows = json::result_rows(&body, path)?;
        if rows.is_empty() {
            // An empty listing may be the guest's view of a session that died: ask, and list
            // again as ourselves if so.
            let token = self.token.lock().await.clone();
            if let Some(token) = token
                && self.became_guest(&token).await
            {
                self.renew(&token).await?;
                let body = self.get_json(path, query).await?;
                return json::result_rows(&body, path);
            }
        }
        Ok(rows)
    }
}

#[async_trait]
impl XnatApi for HttpXnat {
    async fn projects(&self) -> Result<Vec<Project>> {
        Ok(json::projects(&self.rows("/data/projects", "").await?))
    }

    async fn sessions(&self, project: &str) -> Result<Vec<Session>> {
        // A project's experiments are every subject assessor (its default type is
        // `xnat:subjectAssessorData`), clinical forms and other non-imaging experiments
        // included, which have no scans: ask for the imaging sessions of every modality.
        // XNAT: xnat-web `org/nrg/xnat/restlet/resources/ProjSubExptList.java` and
        // `SubjAssessmentAbst.java` (`getDefaultElementName`).
        let path = format!("/data/projects/{project}/experiments");
        match self
            .rows(
                &path,
                &format!("&xsiType={IMAGE_SESSIONS}&columns={SESSION_COLUMNS}"),
            )
            .await
        {
            Err(XnatError::NotFound(_)) => Err(XnatError::NotFound(format!(
                "project {project} (or you may not read it)"
            ))),
            other => Ok(json::sessions(&other?)),
        }
    }

    async fn session(&self, project: Option<&str>, id_or_label: &str) -> Result<Session> {
        let path = match project {
            Some(p) => format!("/data/projects/{p}/experiments/{id_or_label}"),
            None => format!("/data/experiments/{id_or_label}"),
        };
        let body = match self.get_json(&path, "").await {
            Err(XnatError::NotFound(_)) => {
                return Err(XnatError::NotFound(match project {
                    Some(p) => format!("session {id_or_label} in project {p}"),
                    None => format!(
                        "session {id_or_label} (an accession ID like XNAT_E00001, or a label with -P PROJECT)"
                    ),
                }));
            }
            other => other?,
        };
        let session = json::session_document(&body, &path)?;
        let mut kept = self.documents.lock().unwrap();
        kept.retain(|_, (at, _)| at.elapsed() < DOCUMENT_KEPT);
        if kept.len() < DOCUMENTS_KEPT {
            kept.insert(session.id.clone(), (Instant::now(), body));
        }
        Ok(session)
    }

    async fn scans(&self, session: &Session) -> Result<Vec<Scan>> {
        // No `xsiType`: the listing's default type is `xnat:imageScanData`, the parent of every
        // scan type, so it lists the scans of any session (a PET/MR session's MR and PET scans
        // alike). A type given is taken as the query's root element: one that XNAT does not
        // know (`xnat:petmrScanData`) fails the listing with 500, and a real one lists only
        // scans of that type (`xnat:petScanData` would hide a PET/CT session's CT scans).
        // XNAT: xnat-web `org/nrg/xnat/restlet/resources/ScanList.java`
        // (`getDefaultElementName`) and `QueryOrganizerResource.java` (`getRootElementName`).
        let path = format!("/data/experiments/{}/scans", session.id);
        Ok(json::scans(&self.rows(&path, "").await?))
    }

    async fn resources(&self, session_id: &str, scan: Option<&str>) -> Result<Vec<Resource>> {
        let path = match scan {
            Some(s) => format!("/data/experiments/{session_id}/scans/{s}/resources"),
            None => format!("/data/experiments/{session_id}/resources"),
        };
        Ok(json::resources(&self.rows(&path, "").await?))
    }

    /// Asked without the guest check of other listings: most sessions have no assessors.
    async fn assessors(&self, session_id: &str) -> Result<Vec<Assessor>> {
        let path = format!("/data/experiments/{session_id}/assessors");
        let body = self.get_json(&path, "").await?;
        Ok(json::assessors(&json::result_rows(&body, &path)?))
    }

    /// As assessors, without the guest check.
    async fn reconstructions(&self, session_id: &str) -> Result<Vec<Assessor>> {
        let path = format!("/data/experiments/{session_id}/reconstructions");
        let body = self.get_json(&path, "").await?;
        Ok(json::reconstructions(&json::result_rows(&body, &path)?))
    }

    async fn assessor_resources(
        &self,
        session_id: &str,
        assessor: &Assessor,
    ) -> Result<Vec<Resource>> {
        let path = format!(
            "/data/experiments/{session_id}/{}/{}/out/resources",
            assessor.kind.folder(),
            assessor.id
        );
        Ok(json::resources(&self.rows(&path, "").await?))
    }

    async fn files(&self, resource: &ResourceRef) -> Result<Vec<RemoteFile>> {
        let path = format!("{}/files", resource.rest_path());
        let files = self
            .file_rows(&path, "", json::FilesBuilder::default)
            .await?;
        let (files, skipped) = files.finish();
        for s in skipped {
            tracing::warn!("skipping {:?} in {path}: {}", s.name, s.reason);
        }
        Ok(files)
    }

    async fn session_tree(&self, session: &Session) -> Result<SessionTree> {
        match self.whole_tree(session).await {
            Ok(tree) => Ok(tree),
            // A server that cannot be reached answers no listing either.
            Err(e @ (XnatError::Auth(_) | XnatError::Network { .. } | XnatError::Timeout(_))) => {
                Err(e)
            }
            Err(e) => {
                // Never a wrong tree: an answer that does not add up, or a request this
                // server fails (an older XNAT, a proxy), and the session is asked folder by
                // folder.
                tracing::debug!("{e}; listing session {} folder by folder", session.id);
                session_tree_by_listings(self, session).await
            }
        }
    }

    async fn download_range(&self, uri: &str, start: u64, end: Option<u64>) -> Result<Download> {
        let lower = uri.to_ascii_lowercase();
        let html_ok = lower.ends_with(".html") || lower.ends_with(".htm");
        let range = match (start, end) {
            (0, None) => None,
            (s, None) => Some(format!("bytes={s}-")),
            (s, Some(e)) => Some(format!("bytes={s}-{}", e.saturating_sub(1))),
        };
        // One attempt: the reader of the body retries (see `super::retry`).
        let expect = Expect::File { html_ok };
        let resp = self.get_once(uri, "", expect, range.as_deref()).await?;
        match body_of(resp, uri, start, end) {
            Ok(download) => Ok(download),
            // An answer to Range that cannot be read safely (`super::ranged`): the whole body.
            Err(why) => {
                tracing::info!("{uri}: {why}; asking for the whole body");
                let resp = self.get_once(uri, "", expect, None).await?;
                body_of(resp, uri, 0, None).map_err(|msg| XnatError::BadResponse {
                    path: uri.to_string(),
                    msg,
                })
            }
        }
    }

    /// Asks for STORED entries (`compression=0`), XNAT's default anyway
    /// (`SecureResource.identifyCompression`, `ZipUtils.DEFAULT_COMPRESSION`): nothing to
    /// inflate, and no CPU spent on the server compressing what is mostly compressed already.
    /// A server that sends DEFLATED entries all the same is read too (`prefetch::zip_stream`).
    async fn download_zip(&self, resource: &ResourceRef) -> Result<Download> {
        let path = format!("{}/files", resource.rest_path());
        let resp = self
            .get_once(
                &path,
                "?format=zip&compression=0",
                Expect::File { html_ok: false },
                None,
            )
            .await?;
        body_of(resp, &path, 0, None).map_err(|msg| XnatError::BadResponse { path, msg })
    }
}

/// A whole answer's body as one buffer: read chunk by chunk, then copied into one allocation
/// of the exact size, each chunk freed once copied. (reqwest's `bytes()` holds every chunk
/// until its copy is whole: for the files listing of a 200,000-file session, 54 MB of chunks
/// and 54 MB of copy at once, the daemon's peak memory.)
async fn whole_body(mut resp: reqwest::Response) -> reqwest::Result<bytes::Bytes> {
    let mut chunks = Vec::new();
    let mut len = 0;
    while let Some(chunk) = resp.chunk().await? {
        len += chunk.len();
        chunks.push(chunk);
    }
    if chunks.len() == 1 {
        return Ok(chunks.swap_remove(0));
    }
    let mut body = Vec::with_capacity(len);
    for chunk in chunks.drain(..) {
        body.extend_from_slice(&chunk);
    }
    Ok(body.into())
}

/// A streaming [`Download`] of a response body to a request for bytes `start..end` (`0`,
/// `None`: no `Range` sent), as [`ranged::judge`] reads it; `Err` says why it cannot be read.
fn body_of(
    resp: reqwest::Response,
    path: &str,
    start: u64,
    end: Option<u64>,
) -> Result<Download, String> {
    let content_length = resp.content_length();
    let answer = ranged::Answer {
        status: resp.status().as_u16(),
        content_range: resp
            .headers()
            .get(reqwest::header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok()),
        content_length,
    };
    let (start, total, partial) = match ranged::judge(start, end, answer) {
        ranged::Judged::Range { start, total, .. } => (start, Some(total), true),
        ranged::Judged::Whole { total } => (0, total, false),
        ranged::Judged::Unusable(why) => return Err(why),
    };
    let path = path.to_string();
    let body = resp
        .bytes_stream()
        .map_err(move |e| network_error(&path, e));
    Ok(Download {
        content_length,
        total,
        start,
        partial,
        body: Box::pin(body),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_encoded_as_tomcat_takes_them_and_xnat_decodes_them() {
        assert_eq!(encode_path("/data/a/b_c-1.2~.dcm"), "/data/a/b_c-1.2~.dcm");
        assert_eq!(encode_path("/data/a/b+c%d.dcm"), "/data/a/b+c%d.dcm");
        assert_eq!(encode_path("/data/a b+c%d"), "/data/a%20b%2Bc%25d");
        assert_eq!(encode_path("/x?y#z"), "/x%3Fy%23z");
        assert_eq!(encode_path("/f/run[1].nii"), "/f/run%5B1%5D.nii");
        assert_eq!(
            encode_path(r#"/f/{a}|\^"<>"#),
            "/f/%7Ba%7D%7C%5C%5E%22%3C%3E"
        );
        assert_eq!(encode_path("/f/résumé+1"), "/f/r%C3%A9sum%C3%A9%2B1");
        assert_eq!(encode_path("/f/a:b@c,d"), "/f/a%3Ab%40c%2Cd");
    }

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
