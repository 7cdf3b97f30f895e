//! Logging in: JSESSION tokens that expire after an idle time, and Basic auth on any request.

use super::responses::{html, login_page};
use super::{MockOptions, MockState, data_seed};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::atomic::Ordering;
use std::time::Instant;

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
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("JSESSIONID=").map(str::to_string))
}

fn basic_auth_ok(headers: &HeaderMap, options: &MockOptions) -> Option<bool> {
    use base64::Engine;
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, pass) = decoded.split_once(':')?;
    Some(user == options.user && pass == options.password)
}

/// The answer to a request that is not logged in, or `None` when it is.
pub(super) fn refusal(state: &MockState, headers: &HeaderMap) -> Option<Response> {
    // Authentication: a live cookie, or Basic auth on the request itself.
    let presented = cookie_token(headers);
    let authed = match &presented {
        Some(t) if state.touch(t) => true,
        _ => basic_auth_ok(headers, &state.options) == Some(true),
    };
    if !authed {
        if presented.is_some() && state.options.login_page_on_expiry {
            return Some(login_page());
        }
        let mut resp = html(StatusCode::UNAUTHORIZED, "Login required");
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"XNAT\""),
        );
        return Some(resp);
    }
    None
}

pub(super) fn jsession(state: &MockState, method: &Method, headers: &HeaderMap) -> Response {
    if *method == Method::DELETE {
        if let Some(t) = cookie_token(headers) {
            state.tokens.lock().unwrap().remove(&t);
        }
        return StatusCode::OK.into_response();
    }
    if basic_auth_ok(headers, &state.options) != Some(true) {
        // A wrong password: 401 with an HTML message and no WWW-Authenticate.
        return html(
            StatusCode::UNAUTHORIZED,
            "Login attempt failed. Please try again.",
        );
    }
    state.controls.logins.fetch_add(1, Ordering::SeqCst);
    let token = state.new_token();
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
