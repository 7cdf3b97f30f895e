//! Logging in on real sites, apart from the requests themselves: finding the server's real
//! base URL behind redirects before any credential is sent ([`discover_base`]), remembering a
//! refused login so that a password that stopped working cannot lock the account
//! ([`LoginGate`]), and asking the server who we are ([`Identity`]), to notice a session the
//! server quietly replaced by the guest user.

use super::{Result, XnatError};
use reqwest::Url;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Why a login was refused (401 or 403 with `body`), in words that say what to do. XNAT
/// checks a Basic-auth login for an expired password or alias token before the password
/// itself (xnat-web `org/nrg/xnat/security/XnatExpiredPasswordFilter.java`): a local password
/// past `passwordExpirationInterval` (a year by default, `SiteConfigPreferences`) gets 403
/// "Your password has expired", an alias token past `aliasTokenTimeout` (2 days) or revoked
/// gets 403 "Your security token has expired or is invalid". Neither is a wrong password, and
/// neither gets better by trying again.
pub fn refusal(user: &str, base: &str, body: &str) -> String {
    let said = body.to_ascii_lowercase();
    if said.contains(PASSWORD_EXPIRED) {
        return format!(
            "password expired: the password of {user} at {base} has expired; change it in the \
             web UI ({base}), then use the new one"
        );
    }
    if said.contains(TOKEN_EXPIRED) || is_alias_token(user) {
        return format!(
            "token expired: the alias token {user} at {base} has expired or was revoked (alias \
             tokens last 2 days by default); issue a new one (in the web UI, or \
             {base}/data/services/tokens/issue) and use its alias and secret"
        );
    }
    format!(
        "wrong user name or password for {user} at {base} (or the account is locked; on a \
         site that signs in through single sign-on, use an alias token: its alias as the user \
         name, its secret as the password)"
    )
}

/// Whether a user name is an alias token's alias: a UUID (xdat's `AliasToken`).
pub fn is_alias_token(user: &str) -> bool {
    let parts: Vec<&str> = user.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// How long a refused login is remembered: requests that need a login fail at once
/// (EACCES) until then, and the next one tries again. XNAT locks an account after
/// `maxFailedLogins` (20) failed logins, for `maxFailedLoginsLockoutDuration` (1 hour):
/// xnat-web `org/nrg/xdat/preferences/SiteConfigPreferences.java`, counted in
/// `org/nrg/xnat/security/XnatProviderManager.java`. At one attempt a minute a mount never
/// gets near that.
pub const LOGIN_RETRY_AFTER: Duration = Duration::from_secs(60);

/// How often a JSESSION the user handed over (`XNAT_TOKEN`) is touched while mounted: XNAT
/// ends a session after 15 idle minutes.
pub const KEEPALIVE_EVERY: Duration = Duration::from_secs(5 * 60);

/// Whether the body of a refused login says the credentials expired (see [`refusal`]): an
/// expired password or alias token never works again, whatever is tried, so it is never
/// tried again. Only XNAT's own words count: a refusal without them (a locked account, a
/// front that refused for a moment) may pass, and is tried again later.
pub fn says_expired(body: &str) -> bool {
    let said = body.to_ascii_lowercase();
    said.contains(PASSWORD_EXPIRED) || said.contains(TOKEN_EXPIRED)
}

/// What XNAT's refusal of an expired local password says (lower-cased).
const PASSWORD_EXPIRED: &str = "password has expired";
/// What XNAT's refusal of an expired or revoked alias token says (lower-cased).
const TOKEN_EXPIRED: &str = "security token has expired";

/// A refused login, remembered for [`LOGIN_RETRY_AFTER`] (a wrong password may be put right
/// on the server), or for good when the credentials expired ([`says_expired`]).
#[derive(Debug, Default)]
pub struct LoginGate {
    /// When, what was said, and whether for good.
    refused: Mutex<Option<(Instant, String, bool)>>,
    retry_after: Option<Duration>,
}

impl LoginGate {
    pub fn new(retry_after: Duration) -> LoginGate {
        LoginGate {
            refused: Mutex::new(None),
            retry_after: Some(retry_after),
        }
    }

    fn window(&self) -> Duration {
        self.retry_after.unwrap_or(LOGIN_RETRY_AFTER)
    }

    /// Whether a login may be tried now: not while a refusal is fresh.
    pub fn check(&self) -> Result<()> {
        match &*self.refused.lock().unwrap() {
            Some((_, msg, true)) => Err(XnatError::Auth(format!(
                "{msg} (not tried again: it cannot work; start again with new credentials)"
            ))),
            Some((at, msg, _)) if at.elapsed() < self.window() => {
                let left = self.window().saturating_sub(at.elapsed()).as_secs() + 1;
                Err(XnatError::Auth(format!(
                    "{msg} (not tried again for {left} s, so that the account is not locked)"
                )))
            }
            _ => Ok(()),
        }
    }

    /// Remembers a refused login (`for_good`: expired credentials); the one log line about it.
    pub fn refused(&self, msg: &str, for_good: bool) {
        if for_good {
            tracing::warn!("login refused: {msg}; requests that need a login fail at once");
        } else {
            tracing::warn!(
                "login refused: {msg}; requests fail at once for {} s, then it is tried once more",
                self.window().as_secs()
            );
        }
        *self.refused.lock().unwrap() = Some((Instant::now(), msg.to_string(), for_good));
    }

    pub fn succeeded(&self) {
        *self.refused.lock().unwrap() = None;
    }
}

/// The first segments of XNAT's own pages and APIs: where a URL's path stops being the base.
const XNAT_SEGMENTS: [&str; 6] = ["app", "data", "REST", "xapi", "login", "index.jsp"];

/// The base URL of the XNAT a redirect ended at: the path up to XNAT's own pages
/// (`https://host/xnat/app/template/Login.vm` gives `https://host/xnat`).
pub fn base_of(end: &Url) -> String {
    let mut base = end.clone();
    base.set_query(None);
    base.set_fragment(None);
    let kept: Vec<&str> = end
        .path_segments()
        .map(|s| {
            s.take_while(|seg| !XNAT_SEGMENTS.contains(seg))
                .filter(|seg| !seg.is_empty())
                .collect()
        })
        .unwrap_or_default();
    base.set_path(&kept.join("/"));
    base.as_str().trim_end_matches('/').to_string()
}

/// What to try when `base` has no XNAT login: a wrong base path is the usual cause.
pub fn wrong_base_hint(base: &str) -> String {
    let path = Url::parse(base).map(|u| u.path().trim_end_matches('/').to_string());
    match path.as_deref() {
        Ok("") => format!(
            "if the site serves XNAT under a path, give it (like {base}/xnat): the address you open XNAT at in a browser"
        ),
        _ => "check the address: it is the one you open XNAT at in a browser (like \
              https://xnat.example.org or https://host/xnat), without /data/... or /app/..., and \
              with the right scheme (https or http)"
            .to_string(),
    }
}

/// A server URL that names a place inside XNAT (`.../data`, `.../REST`, `.../app/...`): the
/// error that says which base URL to give instead.
pub fn inside_xnat(url: &str) -> Option<String> {
    let parsed = Url::parse(url).ok()?;
    let segments: Vec<&str> = parsed.path_segments()?.collect();
    // XNAT's APIs, and its pages (`app/template/...`, `app/action/...`); a context path may
    // be named anything else.
    let at = segments.iter().enumerate().position(|(i, s)| {
        matches!(*s, "data" | "REST" | "xapi")
            || (*s == "app" && matches!(segments.get(i + 1).copied(), Some("template" | "action")))
    })?;
    let mut base = parsed.clone();
    base.set_path(&segments[..at].join("/"));
    base.set_query(None);
    let base = base.as_str().trim_end_matches('/').to_string();
    Some(format!(
        "{url} is a path inside XNAT, not the server's address: give {base} (without /{})",
        segments[at..].join("/")
    ))
}

/// Where to log in, given the URL the user gave and where asking it ended after redirects:
/// the given URL when nothing redirected, or the redirect went to another host (a single
/// sign-on page is no place for a password); the end's base otherwise. A redirect from
/// https to plain http is refused: credentials never go unencrypted where the site meant
/// them not to.
pub fn choose_base(given: &str, end: &Url) -> Result<String> {
    let Ok(start) = Url::parse(given) else {
        return Ok(given.to_string());
    };
    let same_place = start.scheme() == end.scheme()
        && start.host_str() == end.host_str()
        && start.port_or_known_default() == end.port_or_known_default()
        && start.path().trim_end_matches('/') == end.path().trim_end_matches('/');
    if same_place {
        return Ok(given.to_string());
    }
    if start.host_str() != end.host_str() {
        tracing::warn!(
            "{given} redirects to another host ({end}); logging in at {given} as given (if XNAT is there, pass --url {})",
            base_of(end)
        );
        return Ok(given.to_string());
    }
    if start.scheme() == "https" && end.scheme() == "http" {
        return Err(XnatError::InvalidUrl(format!(
            "{given} redirects to plain http ({end}); xnatfs sends no password unencrypted. \
             Ask the site for its https address"
        )));
    }
    let base = base_of(end);
    tracing::info!("{given} redirects to {end}: using {base} as the server's address");
    Ok(base)
}

/// Asks `given` (no credentials), follows its redirects, and returns where XNAT really is
/// (see [`choose_base`]). HTTP clients drop `Authorization` and `Cookie` on a redirect to
/// another scheme or port and turn a POST into a GET (reqwest: `src/redirect.rs`,
/// `remove_sensitive_headers`), so a login sent to a redirecting front would arrive
/// without its password: the base is found first, and the login sent there.
pub async fn discover_base(
    http: &reqwest::Client,
    given: &str,
    timeout: Duration,
) -> Result<String> {
    let probe = format!("{given}/");
    match http.get(&probe).timeout(timeout).send().await {
        Ok(resp) => choose_base(given, resp.url()),
        Err(e) if e.is_timeout() => Err(XnatError::Timeout(format!("asking {probe}"))),
        Err(e) => {
            let mut msg = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg = format!("{msg}: {s}");
                source = s.source();
            }
            if let Some(plain) = speaks_plain_http(http, given).await {
                return Err(XnatError::InvalidUrl(format!(
                    "{probe}: {msg}. The server answers plain HTTP there, not HTTPS: use {plain}"
                )));
            }
            Err(XnatError::Network { path: probe, msg })
        }
    }
}

/// For an `https://` URL whose TLS failed: the `http://` URL of the same host and port when
/// that answers plain HTTP (the user wrote https for an http server).
async fn speaks_plain_http(http: &reqwest::Client, given: &str) -> Option<String> {
    let mut url = Url::parse(given).ok()?;
    if url.scheme() != "https" {
        return None;
    }
    let port = url.port_or_known_default()?;
    url.set_scheme("http").ok()?;
    url.set_port(Some(port)).ok()?;
    let plain = url.as_str().trim_end_matches('/').to_string();
    let answered = http
        .get(format!("{plain}/"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    answered.ok().map(|_| plain)
}

/// Who the server takes a session for (`GET /xapi/users/username`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    User(String),
    /// Refused, or served as the guest: the session is dead (or never was).
    Guest,
    /// The server cannot say (an XNAT without the endpoint, or no answer).
    Unknown,
}

/// Asks who the session `token` is. XNAT answers the user name as plain text and refuses a
/// guest (xnat-web `org/nrg/xapi/rest/users/UsersApi.java`).
pub async fn whoami(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    timeout: Duration,
) -> Identity {
    let answer = http
        .get(format!("{base}/xapi/users/username"))
        .header(reqwest::header::COOKIE, format!("JSESSIONID={token}"))
        .timeout(timeout)
        .send()
        .await;
    let Ok(resp) = answer else {
        return Identity::Unknown;
    };
    let status = resp.status();
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        return Identity::Guest;
    }
    if !status.is_success() {
        return Identity::Unknown;
    }
    let Ok(body) = resp.text().await else {
        return Identity::Unknown;
    };
    let name = body.trim().trim_matches('"');
    if super::json::looks_like_html(name.as_bytes()) || name.eq_ignore_ascii_case("guest") {
        return Identity::Guest;
    }
    if name.is_empty() || name.len() > 255 {
        return Identity::Unknown;
    }
    Identity::User(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expired_password_or_token_is_said_so_not_a_wrong_password() {
        let base = "https://xnat.example.org";
        let page = |m: &str| format!("<html><body><h3>{m}</h3></body></html>");
        let expired =
            page("Your password has expired. Please try again after changing your password.");
        assert!(refusal("alice", base, &expired).starts_with("password expired:"));
        let token = page(
            "Your security token has expired or is invalid. Please try again after updating your session.",
        );
        let alias = "0b6f6a0e-5f43-4d9e-9c3b-6f8e0f8e2a11";
        assert!(refusal(alias, base, &token).starts_with("token expired:"));
        // An alias refused with a plain 401 is an expired or revoked token too.
        assert!(refusal(alias, base, "").starts_with("token expired:"));
        let wrong = refusal(
            "alice",
            base,
            &page("Login attempt failed. Please try again."),
        );
        assert!(wrong.starts_with("wrong user name or password"), "{wrong}");
    }

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn the_base_is_the_path_before_xnats_own_pages() {
        let base = |s| base_of(&url(s));
        assert_eq!(
            base("https://h/xnat/app/template/Login.vm"),
            "https://h/xnat"
        );
        assert_eq!(
            base("https://h/app/template/Login.vm;jsessionid=X"),
            "https://h"
        );
        assert_eq!(base("https://h:8443/ir/"), "https://h:8443/ir");
        assert_eq!(
            base("https://h/xnat/data/projects?format=json"),
            "https://h/xnat"
        );
        assert_eq!(base("https://h/"), "https://h");
    }

    #[test]
    fn urls_inside_xnat_are_refused_with_the_base_to_give() {
        let e = inside_xnat("https://h/xnat/data/projects").unwrap();
        assert!(
            e.contains("give https://h/xnat (without /data/projects)"),
            "{e}"
        );
        let e = inside_xnat("https://h/data").unwrap();
        assert!(e.contains("give https://h (without /data)"), "{e}");
        assert_eq!(inside_xnat("https://h/xnat"), None);
        assert_eq!(
            inside_xnat("https://h/app/xnat"),
            None,
            "a context path named app"
        );
        let e = inside_xnat("https://h/xnat/app/template/Login.vm").unwrap();
        assert!(e.contains("give https://h/xnat "), "{e}");
        assert_eq!(inside_xnat("https://h/"), None);
        assert!(wrong_base_hint("https://h").contains("https://h/xnat"));
    }

    #[test]
    fn redirects_are_followed_on_the_same_host_only_and_never_down_to_http() {
        let given = "http://h";
        let b = choose_base(given, &url("https://h/xnat/app/template/Login.vm")).unwrap();
        assert_eq!(b, "https://h/xnat");
        assert_eq!(choose_base(given, &url("http://h/")).unwrap(), "http://h");
        let sso = url("https://sso.example.org/auth/realms/x");
        assert_eq!(choose_base(given, &sso).unwrap(), "http://h");
        let down = choose_base("https://h", &url("http://h/xnat/")).unwrap_err();
        assert!(down.to_string().contains("plain http"), "{down}");
        assert_eq!(
            choose_base("http://h:8080", &url("http://h:9090/xnat/")).unwrap(),
            "http://h:9090/xnat"
        );
    }

    #[test]
    fn a_refused_login_is_remembered_for_a_while() {
        // A window a loaded machine cannot overrun between two calls.
        let gate = LoginGate::new(Duration::from_secs(1));
        gate.check().unwrap();
        gate.refused("wrong user name or password", false);
        let e = gate.check().unwrap_err();
        assert!(matches!(e, XnatError::Auth(_)) && e.to_string().contains("not tried again"));
        std::thread::sleep(Duration::from_millis(1100));
        gate.check().unwrap();
        gate.refused("x", false);
        gate.succeeded();
        gate.check().unwrap();
    }

    #[test]
    fn expired_credentials_are_never_tried_again() {
        let gate = LoginGate::new(Duration::from_millis(1));
        let base = "https://h";
        let body = "Your password has expired.";
        gate.refused(&refusal("alice", base, body), says_expired(body));
        std::thread::sleep(Duration::from_millis(20));
        let e = gate.check().unwrap_err().to_string();
        assert!(
            e.contains("password expired:") && e.contains("not tried again"),
            "{e}"
        );
        let alias = "0b6f6a0e-5f43-4d9e-9c3b-6f8e0f8e2a11";
        let body = "Your security token has expired or is invalid.";
        gate.refused(&refusal(alias, base, body), says_expired(body));
        std::thread::sleep(Duration::from_millis(20));
        assert!(
            gate.check()
                .unwrap_err()
                .to_string()
                .contains("token expired:")
        );
        // An alias refused without XNAT saying it expired (a locked account, a front that
        // refused for a moment) is tried again once the window has passed.
        gate.refused(&refusal(alias, base, ""), says_expired(""));
        std::thread::sleep(Duration::from_millis(20));
        gate.check().unwrap();
    }
}
