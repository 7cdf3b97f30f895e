//! The JSESSION lifecycle: the base URL behind redirects, logging in, renewing a refused
//! session, who-am-I and the guest check, keeping a handed-over session alive, logging out.

use super::client::HttpXnat;
use super::request::{send, status_error};
use crate::xnat::error::network_error;
use crate::xnat::json;
use crate::xnat::login::{self, Identity};
use crate::xnat::retry::Attempts;
use crate::xnat::{Result, XnatError};
use reqwest::StatusCode;
use reqwest::header::COOKIE;
use std::time::{Duration, Instant};

/// How soon the identity of the same session is asked again after a 404 or an empty listing.
const WHOAMI_EVERY: Duration = Duration::from_secs(2);

impl HttpXnat {
    /// Finds the real base URL behind redirects, once, before any credential is sent.
    pub(super) async fn ensure_base(&self) -> Result<String> {
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
    /// that needs a login retries as a whole: see [`crate::xnat::retry`]).
    pub(super) async fn login(&self) -> Result<String> {
        self.login_once().await
    }

    pub(super) async fn login_once(&self) -> Result<String> {
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
            self.gate.refused(&msg, login::says_expired(&body));
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
        let from = super::request::page_from(&resp);
        let body = resp.text().await.map_err(|e| network_error(&url, e))?;
        let token = body.trim();
        if token.is_empty() || json::looks_like_html(token.as_bytes()) || token.len() > 256 {
            return Err(XnatError::InvalidUrl(format!(
                "{url} answered a web page{from}, not an XNAT session: is {base} an XNAT server? {}",
                login::wrong_base_hint(&base)
            )));
        }
        self.gate.succeeded();
        tracing::debug!("logged in to {base} as {user}");
        Ok(token.to_string())
    }

    /// The session token, logging in first if there is none yet.
    pub(super) async fn current_token(&self) -> Result<String> {
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
    pub(super) async fn renew(&self, stale: &str) -> Result<String> {
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
    pub(super) async fn identity(&self, token: &str) -> Identity {
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
    pub(super) async fn became_guest(&self, token: &str) -> bool {
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
}
