//! The URL routing: matching XNAT's REST URLs (under `/data/archive`, `/data` or `/REST`) to
//! answers, with XNAT's routing quirks.

use super::responses::{html, listing, not_found, project_row, session_document, session_row_with};
use super::select::{listed_experiments, project_experiment_rows, session_in_project};
use super::session_routes::session_routes;
use super::state::{Controls, MockState};
use super::{auth, data, faults, responses};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Whether Tomcat, in front of XNAT, refuses a request path (400) before XNAT sees it: every
/// byte must be one of RFC 3986's path characters (unreserved, `%`, sub-delims, `:`, `@`,
/// `/`), so raw `[ ] { } | \ ^ " < >`, spaces and non-ASCII bytes are refused. Tomcat:
/// `java/org/apache/tomcat/util/http/parser/HttpParser.java` (`IS_ABSOLUTEPATH_RELAXED`,
/// with no `relaxedPathChars`).
fn tomcat_refuses(path: &str) -> bool {
    !path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:@/".contains(&b))
}

fn query_map(uri: &Uri) -> HashMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.to_string(), String::new()),
        })
        .collect()
}

/// Every request: counted and logged, then faults, login and the route.
/// Every answer, with the `Server` header XNAT's own answers carry (Restlet 1.1 serves
/// `/data`: `Noelios-Restlet-Engine/1.1.10`, seen from XNAT Central in NrgXnat/oasis-scripts
/// issues 10 and 39) unless a front in the mock answered instead.
pub(super) async fn handle(
    state: State<Arc<MockState>>,
    axum::extract::ConnectInfo(conn): axum::extract::ConnectInfo<
        super::connections::ConnectionInfo,
    >,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let shared = state.0.clone();
    let mut answer = answer(state, method, uri, headers).await;
    super::connections::answered(&shared, &conn, &mut answer);
    if !answer.headers().contains_key(header::SERVER) {
        answer.headers_mut().insert(
            header::SERVER,
            header::HeaderValue::from_static("Noelios-Restlet-Engine/1.1.10"),
        );
    }
    answer
}

async fn answer(
    State(state): State<Arc<MockState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let c = &state.controls;
    c.requests.fetch_add(1, Ordering::SeqCst);
    tracing::debug!("mock: {method} {uri}");
    state.log.lock().unwrap().push(format!(
        "{method} {}",
        uri.path_and_query().map_or("", |p| p.as_str())
    ));
    if uri.path() == "/mock/stats" {
        // Not XNAT: the mock's own counters, for scripts (benchmarks, soak).
        let body = json!({
            "requests": c.requests.load(Ordering::SeqCst),
            "logins": c.logins.load(Ordering::SeqCst),
            "file_gets": c.file_gets.load(Ordering::SeqCst),
            "image_gets": c.image_gets.load(Ordering::SeqCst),
            "listings": c.listings.load(Ordering::SeqCst),
            "listings_max_in_flight": c.listings_max_in_flight.load(Ordering::SeqCst),
            "bytes_sent": c.bytes_sent.load(Ordering::SeqCst),
        });
        return (
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
    }
    if uri.path() == "/mock/change" {
        // Not XNAT: changes a file on the server while it runs, for scripts (soak): every
        // byte of the file whose listed URI is `uri` becomes `fill`, its size kept; or with
        // `listed_size=N`, only its listing changes, to claim N bytes (a stale catalog).
        let mut q = query_map(&uri);
        if let Some(target) = q.get_mut("uri") {
            // Given percent-encoded (a URI with spaces, say), as a query value is.
            *target = percent_encoding::percent_decode_str(target)
                .decode_utf8_lossy()
                .into_owned();
        }
        if let (Some(target), Some(n)) = (q.get("uri"), q.get("listed_size")) {
            let Ok(n) = n.parse::<u64>() else {
                return html(StatusCode::BAD_REQUEST, "listed_size= is not a number");
            };
            return match responses::file_by_uri(&state.data, target) {
                Some(f) => {
                    f.set_listed_size(n);
                    html(StatusCode::OK, "listed size changed")
                }
                None => not_found("file"),
            };
        }
        let fill = q
            .get("fill")
            .and_then(|f| f.parse::<u8>().ok())
            .unwrap_or(b'x');
        let Some(target) = q.get("uri") else {
            return html(StatusCode::BAD_REQUEST, "uri= is missing");
        };
        return match responses::file_by_uri(&state.data, target) {
            Some(f) => {
                f.change(data::Body::Memory(vec![fill; f.size() as usize].into()));
                html(StatusCode::OK, "changed")
            }
            None => not_found("file"),
        };
    }
    if tomcat_refuses(uri.path()) {
        return html(StatusCode::BAD_REQUEST, "HTTP Status 400 – Bad Request");
    }
    let _in_flight = uri
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "format=json"))
        .then(|| ListingInFlight::new(c));
    if c.throttle_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        // A rate-limiting proxy in front of XNAT.
        let wait = c.retry_after_secs.load(Ordering::SeqCst).to_string();
        let mut resp = html(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
        if let Ok(v) = header::HeaderValue::from_str(&wait) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return resp;
    }
    if let Some(answer) = faults::inject(&state, &uri).await {
        return answer;
    }
    // XNAT under a context path (`/xnat`): Tomcat answers 404 outside it; the root
    // redirects into it (as sites commonly set it up), and the context's own root redirects
    // a visitor to the login page.
    let ctx = state.options.context_path.trim_end_matches('/');
    let full = uri.path();
    let inside = full
        .strip_prefix(ctx)
        .filter(|rest| rest.is_empty() || rest.starts_with('/'));
    let Some(path) = inside else {
        if full == "/" {
            return responses::redirect(&format!("{ctx}/"));
        }
        return html(StatusCode::NOT_FOUND, "HTTP Status 404 – Not Found");
    };
    if path.is_empty() || path == "/" {
        return responses::redirect(&format!("{ctx}/app/template/Login.vm"));
    }
    if path.starts_with("/app/template/") {
        return super::responses::login_page();
    }
    // Path segments are taken as they come, not URL-decoded, as XNAT takes most of them (a
    // scan ID and a file path are decoded where they are used).
    if path == "/xapi/users/username" {
        return match auth::identify(&state, &headers) {
            Ok(who) => auth::username(&state, who),
            Err(refused) => refused,
        };
    }
    let rest = ["/data/archive/", "/data/", "/REST/"]
        .iter()
        .find_map(|prefix| path.strip_prefix(prefix));
    let Some(rest) = rest else {
        return not_found("resource");
    };
    let segs: Vec<&str> = rest.split('/').collect();

    if segs == ["JSESSION"] {
        return auth::jsession(&state, &method, &headers);
    }
    let who = match auth::identify(&state, &headers) {
        Ok(who) => who,
        Err(refused) => return refused,
    };
    if method != Method::GET && method != Method::HEAD {
        return html(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed");
    }
    if segs == ["services", "tokens", "issue"] {
        return auth::issue_alias_token(&state, who);
    }
    let query = query_map(&uri);
    if who == auth::Who::Guest {
        // The guest reads no private data: it is hidden as absent (an empty projects
        // listing, 404 for everything else).
        return match segs.as_slice() {
            ["projects"] => listing(vec![], true),
            _ => not_found("resource"),
        };
    }
    let answer = route(&state, &segs, &query, &headers);
    faults::drip(&state, answer)
}

/// Counts a JSON request as in flight while it lives (for `listings_max_in_flight`).
struct ListingInFlight<'a>(&'a Controls);

impl<'a> ListingInFlight<'a> {
    fn new(c: &'a Controls) -> Self {
        let now = c.listings_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        c.listings_max_in_flight.fetch_max(now, Ordering::SeqCst);
        ListingInFlight(c)
    }
}

impl Drop for ListingInFlight<'_> {
    fn drop(&mut self) {
        self.0.listings_in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn route(
    state: &MockState,
    segs: &[&str],
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Response {
    let data = &state.data;
    match segs {
        ["config", tool, path @ ..] => return config(state, None, tool, path, query),
        ["projects", p, "config", tool, path @ ..] => {
            return config(state, Some(p), tool, path, query);
        }
        _ => {}
    }
    let is_listing =
        !matches!(segs.iter().position(|s| *s == "files"), Some(i) if i + 1 < segs.len());
    let format = query.get("format").map(String::as_str);
    if is_listing && format != Some("json") && format != Some("zip") {
        // XNAT negotiates and answers HTML to a browser-like request.
        return html(StatusCode::OK, "XNAT listing (ask for format=json)");
    }
    if is_listing && format == Some("json") {
        state.controls.listings.fetch_add(1, Ordering::SeqCst);
    }
    match segs {
        ["projects"] => listing(data.projects.iter().map(project_row).collect(), true),
        ["projects", p, "experiments"] => match data.projects.iter().find(|x| x.id == *p) {
            Some(project) => {
                let xsi_type = query.get("xsiType").map(String::as_str);
                let columns = query.get("columns").map(String::as_str);
                listing(
                    project_experiment_rows(data, project, xsi_type, columns),
                    true,
                )
            }
            None => not_found("project"),
        },
        ["experiments"] => {
            let project = query.get("project");
            let sessions = data
                .projects
                .iter()
                .filter(|p| project.is_none_or(|want| *want == p.id))
                .flat_map(|p| &p.sessions);
            let listed = listed_experiments(sessions, query.get("xsiType").map(String::as_str));
            let columns = query.get("columns").map(String::as_str);
            let rows = listed.into_iter().map(|s| session_row_with(s, columns));
            listing(rows.collect(), true)
        }
        ["projects", p, "experiments", x, tail @ ..] => {
            let Some(session) = session_in_project(data, p, x) else {
                return not_found("experiment");
            };
            match tail {
                // The resources of a session under its project are routed...
                ["resources", more @ ..] => session_routes(
                    state,
                    session,
                    &[&["resources"], more].concat(),
                    query,
                    headers,
                ),
                // ...but scans are not: XNAT answers with the session document and 200.
                _ => session_document(state, session),
            }
        }
        ["projects", p, "subjects"] => match data.projects.iter().find(|x| x.id == *p) {
            Some(project) => {
                let mut rows: Vec<Value> = Vec::new();
                for s in &project.sessions {
                    if !rows.iter().any(|r| r["ID"] == s.subject_id.as_str()) {
                        rows.push(
                            json!({"ID": s.subject_id, "project": p, "label": s.subject_label,
                            "insert_date": "2024-01-01 12:00:00.0", "insert_user": "admin",
                            "URI": format!("/data/subjects/{}", s.subject_id)}),
                        );
                    }
                }
                listing(rows, true)
            }
            None => not_found("project"),
        },
        // The full path through the subject is routed for scans too.
        ["projects", p, "subjects", subj, "experiments", x, tail @ ..] => {
            let found = data
                .projects
                .iter()
                .find(|pr| pr.id == *p)
                .and_then(|pr| pr.sessions.iter().find(|s| s.id == *x || s.label == *x))
                .filter(|s| s.subject_id == *subj || s.subject_label == *subj);
            match found {
                Some(session) if tail.is_empty() => session_document(state, session),
                Some(session) => session_routes(state, session, tail, query, headers),
                None => not_found("experiment"),
            }
        }
        ["experiments", id, tail @ ..] => match data.session(id) {
            Some(session) if tail.is_empty() => session_document(state, session),
            Some(session) => session_routes(state, session, tail, query, headers),
            None => not_found("experiment"),
        },
        _ => not_found("resource"),
    }
}

/// A configuration of XNAT's configuration service: with `contents=true` its text alone,
/// else a one-row table (as listings are); 404 when there is none (or no such project).
/// XNAT: xnat-web `org/nrg/xnat/restlet/resources/ConfigResource.java` (`represent`).
fn config(
    state: &MockState,
    project: Option<&str>,
    tool: &str,
    path: &[&str],
    query: &HashMap<String, String>,
) -> Response {
    if project.is_some_and(|p| !state.data.projects.iter().any(|x| x.id == p)) {
        return not_found("project");
    }
    let path = path.join("/");
    let found = state
        .data
        .configs
        .iter()
        .find(|c| c.project.as_deref() == project && c.tool == tool && c.path == path);
    let Some(c) = found else {
        return not_found("config");
    };
    if query.get("contents").is_some_and(|v| v == "true") && query.get("meta").is_none() {
        return c.contents.clone().into_response();
    }
    let row = json!({
        "tool": c.tool, "path": c.path, "project": c.project.clone().unwrap_or_default(),
        "user": "admin", "create_date": "2025-01-02 03:04:05.0", "reason": "",
        "contents": c.contents, "unversioned": "false", "version": "1", "status": "enabled",
    });
    listing(vec![row], true)
}

#[cfg(test)]
mod tests {
    use super::super::data::Dataset;
    use super::super::select::{find_resources, listed_experiments, listed_scans};
    use super::*;

    fn sample() -> Dataset {
        Dataset::sample(&super::super::sample::SampleSpec::default())
    }

    /// The status of the answer to a GET of `/data/<segs>?<query>`.
    fn status(data: &Dataset, segs: &[&str], query: &[(&str, &str)]) -> StatusCode {
        let state = MockState::new(data.clone(), Default::default());
        let query = query.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        route(&state, segs, &query.collect(), &HeaderMap::new()).status()
    }

    #[test]
    fn scans_are_listed_by_the_default_type_and_a_made_up_type_fails() {
        let data = sample();
        let petmr = data.session("XNAT_E00005").unwrap();
        let ids = |xsi: Option<&str>| -> Option<String> {
            let listed = listed_scans(petmr, xsi)?;
            Some(
                listed
                    .iter()
                    .map(|s| s.id.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            )
        };
        assert_eq!(ids(None).as_deref(), Some("1,2"));
        assert_eq!(ids(Some("xnat:imageScanData")).as_deref(), Some("1,2"));
        assert_eq!(ids(Some("xnat:petScanData")).as_deref(), Some("2"));
        assert_eq!(ids(Some("xnat:ctScanData")).as_deref(), Some(""));
        assert_eq!(ids(Some("xnat:petmrScanData")), None);
        let segs = ["experiments", "XNAT_E00005", "scans"];
        let query = [("format", "json"), ("xsiType", "xnat:petmrScanData")];
        let failed = StatusCode::INTERNAL_SERVER_ERROR;
        assert_eq!(status(&data, &segs, &query), failed);
    }

    #[test]
    fn experiments_are_every_subject_assessor_unless_imaging_sessions_are_asked() {
        let data = sample();
        let multi = &data.projects[2].sessions;
        let labels = |xsi| -> Vec<String> {
            let listed = listed_experiments(multi, xsi);
            listed.iter().map(|s| s.label.clone()).collect()
        };
        assert_eq!(
            labels(None),
            ["SUBJ03_PETMR1", "SUBJ03_VARS1", "SUBJ03_PETCT1"]
        );
        let imaging = ["SUBJ03_PETMR1", "SUBJ03_PETCT1"];
        assert_eq!(labels(Some("xnat:imageSessionData")), imaging);
        assert_eq!(labels(Some("xnat:petmrSessionData")), ["SUBJ03_PETMR1"]);
        // The clinical form has no scans listing.
        let segs = ["experiments", "XNAT_E00007", "scans"];
        let query = [("format", "json")];
        assert_eq!(status(&data, &segs, &query), StatusCode::NOT_FOUND);
    }

    #[test]
    fn resources_are_named_undecoded_and_split_on_commas() {
        let data = sample();
        let petmr = data.session("XNAT_E00005").unwrap();
        let scan = &petmr.scans[0].resources;
        let labels = |key: &str| -> Vec<String> {
            let found = find_resources(scan, key);
            found.iter().map(|r| r.label.clone()).collect()
        };
        let (dicom, raw) = (scan[0].id.to_string(), scan[1].id.to_string());
        assert_eq!(labels("T1 raw"), ["T1 raw"]);
        assert_eq!(labels(&raw), ["T1 raw"]);
        assert_eq!(labels(&format!("{dicom},{raw}")), ["DICOM", "T1 raw"]);
        assert!(labels("T1%20raw").is_empty());
        let session = &petmr.resources;
        assert_eq!(find_resources(session, "QC,v2").len(), 0);
        // A label that names nothing has an empty files listing, as in XNAT.
        let segs = ["experiments", "XNAT_E00005", "resources", "QC,v2", "files"];
        let query = [("format", "json")];
        assert_eq!(status(&data, &segs, &query), StatusCode::OK);
    }

    #[test]
    fn tomcat_refuses_raw_brackets_and_friends() {
        assert!(!tomcat_refuses(
            "/data/x/files/a%5B1%5D+b%20c,d(e)@f:g~h.nii"
        ));
        for c in [
            "[", "]", "{", "}", "|", "\\", "^", "\"", "<", ">", " ", "`", "é",
        ] {
            assert!(tomcat_refuses(&format!("/data/x/files/a{c}b")), "{c}");
        }
    }

    #[test]
    fn a_file_is_found_by_its_path_as_sent_then_url_decoded() {
        let data = sample();
        let file = |name| {
            let segs = [
                "experiments",
                "XNAT_E00001",
                "resources",
                "PROTOCOLS",
                "files",
                name,
            ];
            status(&data, &segs, &[])
        };
        assert_eq!(file("notes+v2.txt"), StatusCode::OK);
        assert_eq!(file("notes%2Bv2.txt"), StatusCode::OK);
        assert_eq!(file("scan%20protocol.txt"), StatusCode::OK);
        assert_eq!(file("scan+protocol.txt"), StatusCode::OK);
        assert_eq!(file("notes%20v2.txt"), StatusCode::NOT_FOUND);
    }
}
