//! Logging in: JSESSION tokens that expire after an idle time, Basic auth on any request,
//! accounts locked after repeated failed logins, guest access, and who-am-I.

use super::responses::{html, login_page};
use super::state::{MockState, data_seed};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Who a request is served as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Who {
    User,
    /// No live session on a site that allows guest access: served, but sees no private data.
    Guest,
}

impl MockState {
    fn new_token(&self) -> String {
        let n = self.next_token.fetch_add(1, Ordering::SeqCst);
        let token = format!("{:016X}{:016X}", data_seed(n), n);
        self.tokens
            .lock()
            .unwrap()
            .insert(token.clone(), Instant::now());
        token
    }

    /// Whether `token` is a live session; using it keeps it alive.
    fn touch(&self, token: &str) -> bool {
        let mut tokens = self.tokens.lock().unwrap();
        match tokens.get_mut(token) {
            Some(last) if last.elapsed() < self.options.token_ttl => {
                *last = Instant::now();
                true
            }
            Some(_) => {
                tokens.remove(token);
                false
            }
            None => false,
        }
    }

    /// Checks a password login and counts it: `maxFailedLogins` failures in a row lock the
    /// account for `maxFailedLoginsLockoutDuration`, and a locked account refuses even the
    /// right password. XNAT: xnat-web `org/nrg/xnat/security/XnatProviderManager.java`
    /// (failed logins counted, the account locked), `SiteConfigPreferences.java`
    /// (`maxFailedLogins`, `maxFailedLoginsLockoutDuration` "1 hour").
    fn password_login(&self, user: &str, password: &str) -> bool {
        if user != self.options.user {
            // Another name: an alias token's, logging in by its secret. XNAT counts failed
            // logins per user name, so these never lock the user's own account.
            let tokens = self.alias_tokens.lock().unwrap();
            let right = tokens.get(user).map(String::as_str) == Some(password);
            if !right {
                self.controls.failed_logins.fetch_add(1, Ordering::SeqCst);
            }
            return right;
        }
        let mut lock = self.lock.lock().unwrap();
        let locked = matches!(lock.1, Some(until) if Instant::now() < until);
        let right = password == *self.password.lock().unwrap();
        if right && !locked {
            *lock = (0, None);
            return true;
        }
        self.controls.failed_logins.fetch_add(1, Ordering::SeqCst);
        if !locked {
            lock.0 += 1;
            let max = self.options.max_failed_logins;
            if max > 0 && lock.0 >= max {
                tracing::info!("mock: account {user} locked");
                *lock = (0, Some(Instant::now() + self.options.lockout));
            }
        }
        false
    }
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("JSESSIONID=").map(str::to_string))
}

/// The user name and password of a Basic `Authorization` header.
fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    use base64::Engine;
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, pass) = decoded.split_once(':')?;
    Some((user.to_string(), pass.to_string()))
}

/// What XNAT answers a Basic-auth request (a login included) before it checks the password,
/// in xnat-web `org/nrg/xnat/security/XnatExpiredPasswordFilter.java`: a user name in alias
/// token format whose token is gone (alias tokens expire after `aliasTokenTimeout`, 2 days by
/// default) gets 403 "Your security token has expired or is invalid"; a user whose local
/// password has expired, 403 "Your password has expired". An alias the mock did not issue (or
/// expired: [`MockState::expire_alias_tokens`]) is an expired one.
fn expired_login(state: &MockState, user: &str) -> Option<Response> {
    let issued = || state.alias_tokens.lock().unwrap().contains_key(user);
    if crate::xnat::login::is_alias_token(user) && !issued() {
        return Some(html(
            StatusCode::FORBIDDEN,
            "Your security token has expired or is invalid. Please try again after updating your session.",
        ));
    }
    (user == state.options.user && state.controls.password_expired.load(Ordering::SeqCst)).then(
        || {
            html(
                StatusCode::FORBIDDEN,
                "Your password has expired. Please try again after changing your password.",
            )
        },
    )
}

fn unauthorized() -> Response {
    let mut resp = html(StatusCode::UNAUTHORIZED, "Login required");
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"XNAT\""),
    );
    resp
}

/// Who a request is, or the answer to one that is not logged in.
#[allow(clippy::result_large_err)] // the refusal is sent at once, never carried around
pub(super) fn identify(state: &MockState, headers: &HeaderMap) -> Result<Who, Response> {
    // Authentication: a live cookie, or Basic auth on the request itself.
    let presented = cookie_token(headers);
    if presented.as_deref().is_some_and(|t| state.touch(t)) {
        if state.controls.password_expired.load(Ordering::SeqCst) {
            // A signed-in user whose password expired is sent to change it
            // (`XnatExpiredPasswordFilter`: `sendRedirect(... changePasswordPath)`).
            let ctx = state.options.context_path.trim_end_matches('/');
            return Err(super::responses::redirect(&format!(
                "{ctx}/app/template/XDATScreen_UpdateUser.vm"
            )));
        }
        return Ok(Who::User);
    }
    if let Some((user, pass)) = basic_auth(headers) {
        if let Some(refused) = expired_login(state, &user) {
            return Err(refused);
        }
        if state.password_login(&user, &pass) {
            return Ok(Who::User);
        }
        return Err(unauthorized());
    }
    if state.options.guest {
        // XNAT serves a request with no (or a dead) session as the guest user when the
        // site allows it: no 401, and private data is hidden as absent.
        return Ok(Who::Guest);
    }
    if presented.is_some() && state.options.login_page_on_expiry {
        return Err(login_page());
    }
    Err(unauthorized())
}

/// `/data/JSESSION`: POST (or GET) with Basic auth logs in; GET with a live session cookie
/// answers that session's ID and keeps it alive (how clients keep a session they were handed
/// alive); DELETE ends the session (XNAT's `JSESSION` resource, as XNAT's REST docs and
/// xnatpy's `XNATSession` use it).
pub(super) fn jsession(state: &MockState, method: &Method, headers: &HeaderMap) -> Response {
    if *method == Method::DELETE {
        if let Some(t) = cookie_token(headers) {
            state.tokens.lock().unwrap().remove(&t);
        }
        return StatusCode::OK.into_response();
    }
    let login = basic_auth(headers);
    if let Some((user, _)) = &login {
        state.controls.login_attempts.fetch_add(1, Ordering::SeqCst);
        if let Some(refused) = expired_login(state, user) {
            return refused;
        }
    }
    let token = match login {
        Some((user, pass)) if state.password_login(&user, &pass) => state.new_token(),
        Some(_) => {
            // A wrong password (or a locked account): 401 with an HTML message and no
            // WWW-Authenticate.
            return html(
                StatusCode::UNAUTHORIZED,
                "Login attempt failed. Please try again.",
            );
        }
        None => match cookie_token(headers) {
            Some(t) if *method == Method::GET && state.touch(&t) => {
                return ([(header::CONTENT_TYPE, "text/plain")], t).into_response();
            }
            _ => return unauthorized(),
        },
    };
    state.controls.logins.fetch_add(1, Ordering::SeqCst);
    let cookie = format!("JSESSIONID={token}; Path=/; HttpOnly");
    (
        [
            (header::CONTENT_TYPE, "text/plain".to_string()),
            (header::SET_COOKIE, cookie),
        ],
        token,
    )
        .into_response()
}

/// `/data/services/tokens/issue`: a new alias token for the signed-in user, as XNAT's
/// `AliasTokenRestlet` (xnat-web `org/nrg/xnat/restlet/services/AliasTokenRestlet.java`)
/// serialises its `AliasToken`: the alias (a UUID, the user name of later logins), the secret
/// (their password), the user it stands for and when it is expected to expire (epoch
/// milliseconds, `aliasTokenTimeout` after now: 2 days by default). The guest gets none.
pub(super) fn issue_alias_token(state: &MockState, who: Who) -> Response {
    if who == Who::Guest {
        return html(
            StatusCode::FORBIDDEN,
            "The guest user can't request alias tokens",
        );
    }
    let n = state.next_token.fetch_add(1, Ordering::SeqCst);
    let hex = format!("{:016x}{:016x}", data_seed(n), data_seed(!n));
    let alias = format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    );
    let secret = format!("{}", data_seed(n ^ 0xA11A5) >> 1);
    state
        .alias_tokens
        .lock()
        .unwrap()
        .insert(alias.clone(), secret.clone());
    let expires = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64 + 2 * 24 * 3600 * 1000)
        .unwrap_or_default();
    let token = serde_json::json!({
        "alias": alias,
        "secret": secret,
        "xdatUserId": state.options.user,
        "singleUse": false,
        "enabled": true,
        "estimatedExpirationTime": expires,
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        token.to_string(),
    )
        .into_response()
}

/// `/xapi/users/username`: the signed-in user's name, as plain text; a guest is refused.
/// XNAT: xnat-web `org/nrg/xapi/rest/users/UsersApi.java` (the `/xapi/users` controller).
pub(super) fn username(state: &MockState, who: Who) -> Response {
    match who {
        Who::User => (
            [(header::CONTENT_TYPE, "text/plain")],
            state.options.user.clone(),
        )
            .into_response(),
        Who::Guest => unauthorized(),
    }
}
