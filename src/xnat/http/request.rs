//! Request plumbing: paths encoded as Tomcat takes them, one GET with the session cookie
//! (renewed on 401), sending again on a connection the server closed, an answer's status and
//! front told apart from XNAT's, listings retried as [`crate::xnat::retry`] says, bodies.

use super::client::HttpXnat;
use crate::xnat::Download;
use crate::xnat::error::network_error;
use crate::xnat::json::{self, Row};
use crate::xnat::login::Identity;
use crate::xnat::ranged;
use crate::xnat::retry::Attempts;
use crate::xnat::{Result, XnatError};
use futures::TryStreamExt;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, COOKIE};
use std::borrow::Cow;
use std::time::Instant;

/// What a request expects back, to tell data from XNAT's login page.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Expect {
    Json,
    /// A file body; `html_ok` when the file itself is an HTML document.
    File {
        html_ok: bool,
    },
}

/// Seconds a 429 or 503 asks to wait (`Retry-After` in seconds; an HTTP date is not read).
pub(super) fn retry_after(resp: &reqwest::Response) -> Option<u64> {
    resp.headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
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

pub(super) fn is_html(resp: &reqwest::Response) -> bool {
    resp.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("text/html"))
}

/// How many times a request whose connection the server closed before answering is sent
/// again at once (each on another connection), before it counts as a failed attempt.
const RESENDS_ON_CLOSED: usize = 3;

/// Sends a request; one whose connection the server closed before any byte of an answer is
/// sent again at once, and not counted as an attempt (see [`closed_before_answer`]).
pub(super) async fn send(req: reqwest::RequestBuilder, path: &str) -> Result<reqwest::Response> {
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
/// answer, which the pool honours.) The close may come as an orderly end (hyper: an
/// incomplete message) or as a reset, when the server's socket was gone by the time the
/// request arrived (ECONNRESET, or EPIPE while sending). A GET is safe to send again. (Idle
/// connections are let go after [`POOL_IDLE`], before any server's close, so this is the race
/// alone.) A connection refused is not this: nothing is listening.
pub(super) fn closed_before_answer(e: &reqwest::Error) -> bool {
    if e.is_connect() {
        return false; // a new connection that failed: no pooled one the server let go
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<hyper::Error>()
            && h.is_incomplete_message()
        {
            return true;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            );
        }
        source = s.source();
    }
    false
}

/// The error of an answer that is not a success.
pub(super) fn status_error(resp: &reqwest::Response, path: &str) -> XnatError {
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
            // Only a front makes these (Tomcat and Restlet send no 502, 504 or 429); any
            // other status may be XNAT's own, passed on under the front's `Server` header
            // (nginx does not pass the upstream's: `proxy_hide_header`'s default).
            by: [502, 504, 429]
                .contains(&s.as_u16())
                .then(|| front_of(resp))
                .flatten(),
        },
    }
}

/// The front that answered instead of XNAT (a reverse proxy's 502/504 page, a gateway's
/// 429), as its `Server` header names it; `None` for XNAT's own answers, which Restlet
/// (`Noelios-Restlet-Engine`) or Tomcat (`Apache-Coyote`) send, or when it does not say.
pub(super) fn front_of(resp: &reqwest::Response) -> Option<String> {
    let server = resp.headers().get(reqwest::header::SERVER)?.to_str().ok()?;
    let server = server.trim();
    let xnat = ["restlet", "coyote", "tomcat"];
    let lower = server.to_ascii_lowercase();
    (!server.is_empty() && !xnat.iter().any(|x| lower.contains(x)))
        .then(|| server.chars().take(80).collect())
}

/// Where a web page answered instead of data came through: the front that served it (a
/// maintenance or sign-in page of a proxy is the usual cause), or nothing when XNAT's own
/// server sent it or none is named.
pub(super) fn page_from(resp: &reqwest::Response) -> String {
    match front_of(resp) {
        Some(front) => format!(
            " (served by {front} in front of XNAT: likely a page of that front, such as a \
             maintenance or single sign-on page, not XNAT's)"
        ),
        None => String::new(),
    }
}

impl HttpXnat {
    /// One GET with the session cookie; a refused session is renewed and the request sent
    /// once more.
    pub(super) async fn get_once(
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
                        msg: format!(
                            "an HTML page where data was expected, even after logging in again{}",
                            page_from(&resp)
                        ),
                    }
                } else {
                    XnatError::Auth(format!("access to {path} refused after logging in again"))
                });
            }
            // An `.html` file answered with HTML may be the file, or the login page a site
            // serves a dead session instead of a 401 (`Login.vm`): the answer's
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
    pub(super) async fn get_json(&self, path: &str, query: &str) -> Result<bytes::Bytes> {
        self.get_json_read(path, query, |resp| async move {
            whole_body(resp).await.map_err(|e| network_error(path, e))
        })
        .await
    }

    /// The rows of a files listing (`format=json` is added to `query`), each handed to a
    /// sink as it arrives (see [`crate::xnat::streamed`]); each attempt starts a sink anew.
    pub(super) async fn file_rows<S: json::FileRowSink + Send + 'static>(
        &self,
        path: &str,
        query: &str,
        sink: impl Fn() -> S,
    ) -> Result<S> {
        self.get_json_read(path, query, |resp| {
            let mut rows = sink();
            let at = path.to_string();
            crate::xnat::streamed::parse_as_it_arrives(resp, path, move |body| {
                json::read_file_rows(body, &at, &mut rows).map(|()| rows)
            })
        })
        .await
    }

    /// A JSON answer, read by `read`: the request and the reading of its body are one
    /// attempt, tried again after transient failures (the one place listings are retried:
    /// see [`crate::xnat::retry`]).
    pub(super) async fn get_json_read<T, F: Future<Output = Result<T>>>(
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
                Err(e) if let Some(wait) = crate::xnat::retry::throttle_wait(&e, throttled) => {
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

    pub(super) async fn rows(&self, path: &str, query: &str) -> Result<Vec<Row>> {
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

/// A whole answer's body as one buffer: read chunk by chunk, then copied into one allocation
/// of the exact size, each chunk freed once copied. (reqwest's `bytes()` holds every chunk
/// until its copy is whole: for the files listing of a 200,000-file session, 54 MB of chunks
/// and 54 MB of copy at once, the daemon's peak memory.)
pub(super) async fn whole_body(mut resp: reqwest::Response) -> reqwest::Result<bytes::Bytes> {
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
pub(super) fn body_of(
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
    pub(super) fn paths_are_encoded_as_tomcat_takes_them_and_xnat_decodes_them() {
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
}
