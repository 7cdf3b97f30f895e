//! The URL routing: matching XNAT's REST URLs (under `/data/archive`, `/data` or `/REST`) to
//! answers, with XNAT's routing quirks.

use super::data::{Dataset, MockProject, MockResource, MockScan, MockSession};
use super::responses::{
    file_body, file_rows, html, listing, not_found, project_row, resource_listing, resource_rows,
    scan_row, session_document, session_row_with,
};
use super::state::{Controls, MockState};
use super::zip_download::{Compression, zip_response};
use super::{auth, data, faults, responses};
use crate::xnat::Derived;
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

/// A session of project `p` (its own, or shared into it) by accession ID, or by its label
/// within the project: its own label, or for a shared one, its label there. XNAT:
/// `XnatExperimentdata.GetExptByProjectIdentifier` (`project`/`label`, then
/// `sharing/share/project`/`sharing/share/label`).
pub(super) fn session_in_project<'a>(
    data: &'a Dataset,
    p: &str,
    x: &str,
) -> Option<&'a Arc<MockSession>> {
    let shared = data.shared_into(p);
    data.session(x)
        .filter(|s| s.project == p || shared.iter().any(|(sh, _)| sh.id == s.id))
        .or_else(|| {
            data.projects
                .iter()
                .find(|pr| pr.id == p)
                .and_then(|pr| pr.sessions.iter().find(|s| s.label == x))
        })
        .or_else(|| {
            shared
                .iter()
                .find(|(_, label)| *label == x)
                .map(|(s, _)| *s)
        })
}

/// The rows of project `project`'s experiments listing: its own experiments, then those shared
/// into it, each under its label there. A shared row's `project` column still names the
/// project that owns the session; only `label` is the one in this project. XNAT: xnat-web
/// `org/nrg/xnat/restlet/resources/ProjSubExptList.java` (rows whose `project` or
/// `sharing/share/project` is the project; `label` replaced from `xnat_experimentData_share`
/// where the share has one).
pub(super) fn project_experiment_rows(
    data: &Dataset,
    project: &MockProject,
    xsi_type: Option<&str>,
    columns: Option<&str>,
) -> Vec<Value> {
    let mut rows: Vec<Value> = listed_experiments(&project.sessions, xsi_type)
        .into_iter()
        .map(|s| session_row_with(s, columns))
        .collect();
    for (s, label) in data.shared_into(&project.id) {
        if !listed_experiments([s], xsi_type).is_empty() {
            let mut row = session_row_with(s, columns);
            row["label"] = label.into();
            rows.push(row);
        }
    }
    rows
}

/// The scans a spec names: `ALL`, or IDs and types separated by commas.
pub(super) fn select_scans<'a>(session: &'a MockSession, spec: &str) -> Vec<&'a MockScan> {
    session
        .scans
        .iter()
        .filter(|sc| {
            spec == "ALL"
                || spec
                    .split(',')
                    .any(|want| want == sc.id || want == sc.scan_type)
        })
        .collect()
}

/// The experiments an experiments listing answers for the query's `xsiType`. The type is the
/// query's root element: by default `xnat:subjectAssessorData`, so every subject assessor is
/// listed, clinical forms and other experiments that are not imaging sessions included;
/// `xnat:imageSessionData` keeps the imaging sessions of every modality, and a session type
/// the sessions of that type. XNAT: xnat-web `org/nrg/xnat/restlet/resources/ProjSubExptList.java`
/// and `SubjAssessmentAbst.java` (`getDefaultElementName`), `QueryOrganizerResource.java`
/// (`getRootElementName`).
pub(super) fn listed_experiments<'a>(
    sessions: impl IntoIterator<Item = &'a Arc<MockSession>>,
    xsi_type: Option<&str>,
) -> Vec<&'a MockSession> {
    let root = xsi_type
        .filter(|t| !t.contains(','))
        .unwrap_or("xnat:subjectAssessorData");
    let listed = sessions.into_iter().map(|s| &**s);
    listed
        .filter(|s| match root {
            "xnat:subjectAssessorData" | "xnat:experimentData" => true,
            "xnat:imageSessionData" => s.is_image_session(),
            other => s.xsi_type == other,
        })
        .collect()
}

/// The scan types of XNAT's schema (extensions of `xnat:imageScanData`), for the `xsiType`
/// of a scans listing.
const SCAN_TYPES: &[&str] = &[
    "xnat:mrScanData",
    "xnat:petScanData",
    "xnat:ctScanData",
    "xnat:eegScanData",
    "xnat:megScanData",
    "xnat:ecgScanData",
    "xnat:emgScanData",
    "xnat:eogScanData",
    "xnat:esScanData",
    "xnat:xaScanData",
    "xnat:xa3DScanData",
    "xnat:crScanData",
    "xnat:dxScanData",
    "xnat:mgScanData",
    "xnat:nmScanData",
    "xnat:usScanData",
    "xnat:rfScanData",
    "xnat:ioScanData",
    "xnat:opScanData",
    "xnat:optScanData",
    "xnat:smScanData",
    "xnat:gmScanData",
    "xnat:hdScanData",
    "xnat:srScanData",
    "xnat:scScanData",
    "xnat:segScanData",
    "xnat:mrsScanData",
    "xnat:otherDicomScanData",
    "xnat:cfmScanData",
    "xnat:dmsScanData",
    "xnat:objScanData",
    "xnat:paScanData",
    "xnat:posScanData",
    "xnat:respScanData",
    "xnat:xcScanData",
];

/// The scans a scans listing answers for the query's `xsiType`, or `None` when XNAT fails it
/// (500). The type is the query's root element: by default `xnat:imageScanData`, the parent
/// of every scan type, so every scan of the session is listed (a PET/MR session's MR and PET
/// scans alike); a scan type lists the scans of that type only; a type XNAT does not know
/// (`xnat:petmrScanData`: there is none) fails the query. A value with a comma is ignored.
/// XNAT: xnat-web `org/nrg/xnat/restlet/resources/ScanList.java` (`getDefaultElementName`,
/// and a failed query answered with `SERVER_ERROR_INTERNAL`) and `QueryOrganizerResource.java`
/// (`getRootElementName`).
pub(super) fn listed_scans<'a>(
    session: &'a MockSession,
    xsi_type: Option<&str>,
) -> Option<Vec<&'a MockScan>> {
    let root = xsi_type
        .filter(|t| !t.contains(','))
        .unwrap_or("xnat:imageScanData");
    if root != "xnat:imageScanData" && !SCAN_TYPES.contains(&root) {
        return None;
    }
    let all = root == "xnat:imageScanData";
    Some(
        session
            .scans
            .iter()
            .filter(|sc| all || sc.xsi_type == root)
            .collect(),
    )
}

/// The resources a resource in a path names. XNAT takes it as it comes, not URL-decoded,
/// and splits it on commas; each part names the resources of that label, or of that numeric
/// ID. A label with a space (sent as `T1%20raw`) or a comma names nothing, and its files
/// listing is empty. XNAT: xnat-web `org/nrg/xnat/restlet/resources/files/XNATCatalogTemplate.java`
/// (`RESOURCE_ID` split on commas), `SecureResource.java` (`getParameter`: not decoded),
/// `XNATTemplate.java` (`loadCatalogs`: by ID or label) and `FileList.java`.
pub(super) fn find_resources<'a>(
    resources: &'a [MockResource],
    key: &str,
) -> Vec<&'a MockResource> {
    let parts: Vec<&str> = key.split(',').filter(|p| !p.is_empty()).collect();
    resources
        .iter()
        .filter(|r| {
            let id = r.id.to_string();
            parts.iter().any(|p| *p == r.label || *p == id)
        })
        .collect()
}

/// Decodes as Java's `URLDecoder` does: `%XX` escapes as UTF-8 bytes, and `+` as a space.
pub(super) fn url_decode(s: &str) -> String {
    let plus_as_space = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus_as_space)
        .decode_utf8_lossy()
        .into_owned()
}

fn session_routes(
    state: &MockState,
    session: &MockSession,
    tail: &[&str],
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Response {
    let zip = match query.get("format").map(String::as_str) {
        Some("zip") => match Compression::of_query(query.get("compression").map(String::as_str)) {
            Ok(c) => Some(c),
            Err(refused) => return *refused,
        },
        _ => None,
    };
    if let [folder, rest @ ..] = tail
        && let Some(kind) = derived_folder(folder)
    {
        return derived_routes(state, session, kind, rest, zip, headers);
    }
    match tail {
        // An experiment that is not an imaging session has no scans listing: XNAT finds the
        // session as an image session or answers 404 (xnat-web `ScanList.java`).
        ["scans"] if !session.is_image_session() => not_found("experiment"),
        ["scans"] => match listed_scans(session, query.get("xsiType").map(String::as_str)) {
            Some(scans) => listing(scans.iter().map(|sc| scan_row(session, sc)).collect(), true),
            None => html(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
        },
        ["scans", spec, "resources"] => match select_scans(session, &url_decode(spec)).first() {
            Some(scan) => listing(
                resource_listing(state, resource_rows(&scan.resources, session, Some(scan))),
                true,
            ),
            None => not_found("scan"),
        },
        ["scans", spec, "files"] => {
            let entries: Vec<_> = select_scans(session, &url_decode(spec))
                .into_iter()
                .flat_map(|sc| sc.resources.iter().map(move |r| (Some(sc), r)))
                .collect();
            if entries.is_empty() {
                return not_found("scan");
            }
            if state
                .controls
                .catalog_unreadable(entries.iter().map(|(_, r)| *r))
            {
                return StatusCode::NOT_FOUND.into_response();
            }
            match zip {
                Some(c) => zip_response(state, session, &entries, c),
                None => file_rows(&entries, session),
            }
        }
        // The scan is decoded (xnat-web `XNATTemplate.java`: `getUrlEncodedParameter`).
        ["scans", spec, "resources", res, "files", path @ ..] => {
            let Some(scan) = select_scans(session, &url_decode(spec)).into_iter().next() else {
                return not_found("scan");
            };
            let found = find_resources(&scan.resources, res);
            let entries: Vec<_> = found.into_iter().map(|r| (Some(scan), r)).collect();
            files_or_body(state, session, &entries, path, zip, headers)
        }
        ["resources"] => {
            let rows = resource_rows(&session.resources, session, None);
            listing(resource_listing(state, rows), true)
        }
        // A session's files listing lists its own resources' files; `all=true` adds its
        // scans', reconstructions' and assessors', each row's
        // URI naming its scan and numeric resource ID. XNAT: xnat-web
        // `org/nrg/xnat/restlet/resources/files/XNATTemplate.java` (`loadCatalogs`: `all`
        // unions the session's, scans', reconstructions' and assessors' resources, each with
        // its `resource_path`), `FileList.java` (`handleMultipleCatalogs`: URI = that path +
        // `/files/` + the entry's path) and `org/nrg/xdat/om/base/BaseXnatAbstractresource.java`
        // (`setBaseURI`: `/data` in front).
        ["files"] => {
            let all = query.get("all").is_some_and(|v| v == "true")
                && !state.controls.files_all_ignored.load(Ordering::SeqCst);
            let scans = session.scans.iter().filter(|_| all);
            let entries: Vec<_> = session
                .resources
                .iter()
                .map(|r| (None, r))
                .chain(scans.flat_map(|sc| sc.resources.iter().map(move |r| (Some(sc), r))))
                .collect();
            let assessors = session.assessors.iter().filter(|_| all);
            let included =
                (entries.iter().map(|(_, r)| *r)).chain(assessors.flat_map(|a| a.resources.iter()));
            if state.controls.catalog_unreadable(included) {
                return StatusCode::NOT_FOUND.into_response();
            }
            match zip {
                Some(c) => zip_response(state, session, &entries, c),
                None if all => {
                    let mut rows: Vec<Value> = entries
                        .iter()
                        .flat_map(|(sc, r)| r.files.iter().map(move |f| (sc, r, f)))
                        .map(|(sc, r, f)| responses::file_row(session, *sc, r, f))
                        .collect();
                    for a in &session.assessors {
                        for r in &a.resources {
                            for f in &r.files {
                                rows.push(responses::assessor_file_row(session, a, r, f));
                            }
                        }
                    }
                    responses::rows_listing(rows)
                }
                None => file_rows(&entries, session),
            }
        }
        ["resources", res, "files", path @ ..] => {
            let found = find_resources(&session.resources, res);
            let entries: Vec<_> = found.into_iter().map(|r| (None, r)).collect();
            files_or_body(state, session, &entries, path, zip, headers)
        }
        _ => not_found("resource"),
    }
}

/// A session's assessors or reconstructions (`kind`), and what lies under each one's `out`
/// resources; an assessor is named by its ID or its label, a reconstruction (no label) by its
/// ID. XNAT: xnat-web `org/nrg/xnat/restlet/resources/ProjSubExptAsstList.java` and
/// `ReconList.java` (the listings), `files/XNATTemplate.java`
/// (`assessors/{A}/out/resources/...`, `reconstructions/{R}/out/resources/...`).
fn derived_routes(
    state: &MockState,
    session: &MockSession,
    kind: Derived,
    tail: &[&str],
    zip: Option<Compression>,
    headers: &HeaderMap,
) -> Response {
    match tail {
        [] => listing(responses::derived_rows(session, kind), true),
        [a, "out", "resources", more @ ..] => {
            let a = url_decode(a);
            let by_label = || match kind {
                Derived::Assessor => session
                    .assessors
                    .iter()
                    .find(|x| x.kind == kind && x.label == a),
                // A reconstruction has no label.
                Derived::Reconstruction => None,
            };
            match session.derived(kind, &a).or_else(by_label) {
                Some(assessor) => assessor_routes(state, session, assessor, more, zip, headers),
                None => not_found(kind.noun()),
            }
        }
        _ => not_found("resource"),
    }
}

/// The kind of derived data a session subfolder of XNAT's holds (`assessors`,
/// `reconstructions`).
fn derived_folder(folder: &str) -> Option<Derived> {
    Derived::ALL.into_iter().find(|k| k.folder() == folder)
}

/// What lies under an assessor's `out/resources`: its resources listing, a resource's files
/// listing (each row's URI naming the assessor), its ZIP, or a file body.
fn assessor_routes(
    state: &MockState,
    session: &MockSession,
    a: &data::MockAssessor,
    tail: &[&str],
    zip: Option<Compression>,
    headers: &HeaderMap,
) -> Response {
    match tail {
        [] => listing(
            resource_listing(state, resource_rows(&a.resources, session, None)),
            true,
        ),
        [res, "files", path @ ..] => {
            let found = find_resources(&a.resources, res);
            if state.controls.catalog_unreadable(found.iter().copied()) {
                return StatusCode::NOT_FOUND.into_response();
            }
            if path.is_empty() && zip.is_none() {
                let rows = found
                    .iter()
                    .flat_map(|r| r.files.iter().map(move |f| (r, f)))
                    .map(|(r, f)| responses::assessor_file_row(session, a, r, f))
                    .collect();
                return responses::rows_listing(rows);
            }
            let entries: Vec<_> = found.into_iter().map(|r| (None, r)).collect();
            files_or_body(state, session, &entries, path, zip, headers)
        }
        _ => not_found("resource"),
    }
}

/// The files listing, the ZIP or a file body of the resources a path names. None named: an
/// empty listing (XNAT finds no catalog, and lists the files of none), a 404 for a ZIP or a
/// file.
fn files_or_body(
    state: &MockState,
    session: &MockSession,
    entries: &[(Option<&MockScan>, &MockResource)],
    path: &[&str],
    zip: Option<Compression>,
    headers: &HeaderMap,
) -> Response {
    if state
        .controls
        .catalog_unreadable(entries.iter().map(|(_, r)| *r))
    {
        return StatusCode::NOT_FOUND.into_response();
    }
    if path.is_empty() {
        return match zip {
            Some(c) => zip_response(state, session, entries, c),
            None => file_rows(entries, session),
        };
    }
    // A file is looked up by its path as sent, then by it URL-decoded (`%XX` as UTF-8, `+` as
    // a space). XNAT: xnat-web `org/nrg/xnat/utils/CatalogUtils.java` (`getEntryByURI`), from
    // `FileList.java`.
    let raw = path.join("/");
    let files = || entries.iter().flat_map(|(_, r)| &r.files);
    let found = files()
        .find(|f| f.path == raw)
        .or_else(|| files().find(|f| f.path == url_decode(&raw)));
    match found {
        Some(f) if !f.body_gone => file_body(state, f.clone(), headers),
        // A missing file: 404 with an empty body.
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

#[cfg(test)]
mod tests {
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
