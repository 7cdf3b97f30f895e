//! A mock XNAT server that answers XNAT's REST API the way real servers do, quirks included
//! (string numbers, HTML without `format=json`, numeric resource IDs in file URIs, base-name
//! `Name`, nested paths, JSESSION cookies that expire, no route for scans under a project
//! label, no Range unless asked, ZIP downloads). It counts requests, can add latency and
//! inject faults, so tests can assert what a client asked and how it copes.

pub mod data;

use axum::body::Body as HttpBody;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use data::{Dataset, MockFile, MockResource, MockScan, MockSession};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Settings fixed when the server starts.
#[derive(Debug, Clone)]
pub struct MockOptions {
    pub user: String,
    pub password: String,
    /// Idle time after which a JSESSION expires (XNAT: 15 minutes).
    pub token_ttl: Duration,
    /// Answer an expired session with 200 and the HTML login page instead of 401.
    pub login_page_on_expiry: bool,
}

impl Default for MockOptions {
    fn default() -> Self {
        MockOptions {
            user: "demo".into(),
            password: "demo".into(),
            token_ttl: Duration::from_secs(15 * 60),
            login_page_on_expiry: false,
        }
    }
}

/// Knobs tests turn while the server runs, and what it counted.
#[derive(Debug, Default)]
pub struct Controls {
    /// Added before every answer.
    pub latency_ms: AtomicU64,
    /// Honour `Range` on file bodies (as a caching proxy would); XNAT itself does not.
    pub honour_range: AtomicBool,
    /// The next N requests fail with 500.
    pub fail_next: AtomicU32,
    /// The next N file bodies stop halfway (the connection closes early).
    pub truncate_next: AtomicU32,
    /// File bodies never start (the server stalls) while set.
    pub stall_files: AtomicBool,
    /// Pause between chunks (256 KiB) of a file body, in milliseconds: a slow link.
    pub chunk_delay_ms: AtomicU64,
    /// File body bytes sent.
    pub bytes_sent: Arc<AtomicU64>,
    /// Every request: 503 while set.
    pub down: AtomicBool,
    /// File bodies (and ZIPs): 503 while set; listings still answer.
    pub files_down: AtomicBool,
    /// Percentage of requests (chosen pseudo-randomly, but the same each run) that go wrong:
    /// a third stall 2 s, the rest fail with a 500 or (file bodies, half the time) stop short.
    pub fault_percent: AtomicU32,
    pub requests: AtomicU64,
    pub logins: AtomicU64,
    /// File bodies sent (GET of a file URI with status 200 or 206).
    pub file_gets: AtomicU64,
    /// JSON listings and documents answered.
    pub listings: AtomicU64,
}

pub struct MockState {
    pub data: Dataset,
    pub options: MockOptions,
    pub controls: Controls,
    tokens: Mutex<HashMap<String, Instant>>,
    log: Mutex<Vec<String>>,
    next_token: AtomicU64,
}

impl MockState {
    pub fn new(data: Dataset, options: MockOptions) -> Arc<MockState> {
        Arc::new(MockState {
            data,
            options,
            controls: Controls::default(),
            tokens: Mutex::new(HashMap::new()),
            log: Mutex::new(Vec::new()),
            next_token: AtomicU64::new(1),
        })
    }

    /// Every request so far, as `METHOD /path?query`.
    pub fn request_log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Ends every JSESSION, as an idle timeout would.
    pub fn expire_sessions(&self) {
        self.tokens.lock().unwrap().clear();
    }

    pub fn file_gets(&self) -> u64 {
        self.controls.file_gets.load(Ordering::SeqCst)
    }

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

fn data_seed(n: u64) -> u64 {
    n.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17)
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<MockState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let app = axum::Router::new().fallback(handle).with_state(state);
    // As Tomcat in front of XNAT does: no Nagle delay on small writes.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// A mock server running on its own threads, for tests and the demo. Dropping it stops it.
pub struct MockServer {
    pub addr: SocketAddr,
    pub state: Arc<MockState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MockServer {
    /// Starts on `addr` (port 0 picks a free port).
    pub fn start(addr: SocketAddr, data: Dataset, options: MockOptions) -> std::io::Result<Self> {
        Self::start_with_state(addr, MockState::new(data, options))
    }

    /// Starts serving an existing state (to bring a stopped server back with its counters).
    pub fn start_with_state(addr: SocketAddr, state: Arc<MockState>) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("xnat-mock")
            .enable_all()
            .build()?;
        let listener = runtime.block_on(tokio::net::TcpListener::bind(addr))?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = state.clone();
        let thread = std::thread::Builder::new()
            .name("xnat-mock".into())
            .spawn(move || {
                let result = runtime.block_on(serve(listener, serving, async {
                    let _ = stopped.await;
                }));
                if let Err(e) = result {
                    tracing::error!("mock server stopped: {e}");
                }
                runtime.shutdown_timeout(Duration::from_millis(200));
            })?;
        Ok(MockServer {
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn html(status: StatusCode, message: &str) -> Response {
    let body = format!(
        "<html><head><title>Status page</title></head><body><h3>{message}</h3></body></html>"
    );
    (
        status,
        [(header::CONTENT_TYPE, "text/html;charset=UTF-8")],
        body,
    )
        .into_response()
}

fn login_page() -> Response {
    html(
        StatusCode::OK,
        "<!DOCTYPE html><html><body><form action=\"/login\">XNAT login</form></body></html>",
    )
}

fn not_found(what: &str) -> Response {
    html(
        StatusCode::NOT_FOUND,
        &format!("Unable to find the specified {what}."),
    )
}

/// Percent-decodes the way XNAT does: only when the path holds `%20` or `%2B` (and then `+`
/// is a space too).
fn xnat_decode(path: &str) -> String {
    if !(path.contains("%20") || path.contains("%2B") || path.contains("%2b")) {
        return path.to_string();
    }
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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

fn listing(rows: Vec<Value>, total: bool) -> Response {
    let mut rs = json!({ "Result": rows });
    if total {
        rs["totalRecords"] = Value::String(rs["Result"].as_array().map_or(0, Vec::len).to_string());
    }
    (
        [(header::CONTENT_TYPE, "application/json")],
        json!({ "ResultSet": rs }).to_string(),
    )
        .into_response()
}

async fn handle(
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
            "bytes_sent": c.bytes_sent.load(Ordering::SeqCst),
        });
        return (
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
    }
    let latency = c.latency_ms.load(Ordering::SeqCst);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    if c.down.load(Ordering::SeqCst) {
        return html(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable");
    }
    if c.fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return html(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
    }

    let n = c.requests.load(Ordering::SeqCst);
    let fault =
        data_seed(n ^ 0x5EED) % 1000 < u64::from(c.fault_percent.load(Ordering::SeqCst)) * 10;
    let file_body = uri
        .path()
        .split_once("/files/")
        .is_some_and(|(_, rest)| !rest.is_empty());
    if file_body && c.files_down.load(Ordering::SeqCst) {
        return html(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable");
    }
    // A third of the faults is a 2 s stall before an otherwise normal answer; of the rest,
    // file bodies are cut short half the time, and everything else is a 500.
    let kind = data_seed(n) % 6;
    if fault && kind < 2 {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let fault = fault && kind >= 2;
    let truncate_fault = fault && file_body && kind % 2 == 1;
    if fault && !truncate_fault {
        return html(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error (injected)",
        );
    }
    if truncate_fault {
        // Taken up by this request's file body.
        c.truncate_next.fetch_add(1, Ordering::SeqCst);
    }
    let path = xnat_decode(uri.path());
    let rest = ["/data/archive/", "/data/", "/REST/"]
        .iter()
        .find_map(|prefix| path.strip_prefix(prefix));
    let Some(rest) = rest else {
        return not_found("resource");
    };
    let segs: Vec<&str> = rest.split('/').collect();

    if segs == ["JSESSION"] {
        return jsession(&state, &method, &headers);
    }
    // Authentication: a live cookie, or Basic auth on the request itself.
    let presented = cookie_token(&headers);
    let authed = match &presented {
        Some(t) if state.touch(t) => true,
        _ => basic_auth_ok(&headers, &state.options) == Some(true),
    };
    if !authed {
        if presented.is_some() && state.options.login_page_on_expiry {
            return login_page();
        }
        let mut resp = html(StatusCode::UNAUTHORIZED, "Login required");
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"XNAT\""),
        );
        return resp;
    }
    if method != Method::GET && method != Method::HEAD {
        return html(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed");
    }
    let query = query_map(&uri);
    route(&state, &segs, &query, &headers)
}

fn jsession(state: &MockState, method: &Method, headers: &HeaderMap) -> Response {
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
        ["projects"] => listing(
            data.projects
                .iter()
                .map(|p| {
                    json!({"ID": p.id, "secondary_ID": p.id, "name": p.name, "description": "",
                           "pi_firstname": "", "pi_lastname": "", "URI": format!("/data/projects/{}", p.id)})
                })
                .collect(),
            true,
        ),
        ["projects", p, "experiments"] => match data.projects.iter().find(|x| x.id == *p) {
            Some(project) => listing(project.sessions.iter().map(|s| session_row(s)).collect(), true),
            None => not_found("project"),
        },
        ["experiments"] => {
            let project = query.get("project");
            listing(
                data.projects
                    .iter()
                    .filter(|p| project.is_none_or(|want| *want == p.id))
                    .flat_map(|p| &p.sessions)
                    .map(|s| session_row(s))
                    .collect(),
                true,
            )
        }
        ["projects", p, "experiments", x, tail @ ..] => {
            let found = data
                .session(x)
                .filter(|s| s.project == *p)
                .or_else(|| {
                    data.projects
                        .iter()
                        .find(|pr| pr.id == *p)
                        .and_then(|pr| pr.sessions.iter().find(|s| s.label == *x))
                });
            let Some(session) = found else {
                return not_found("experiment");
            };
            match tail {
                // The resources of a session under its project are routed...
                ["resources", more @ ..] => session_routes(state, session, &[&["resources"], more].concat(), query, headers),
                // ...but scans are not: XNAT answers with the session document and 200.
                _ => session_document(session),
            }
        }
        ["projects", p, "subjects"] => match data.projects.iter().find(|x| x.id == *p) {
            Some(project) => {
                let mut rows: Vec<Value> = Vec::new();
                for s in &project.sessions {
                    if !rows.iter().any(|r| r["ID"] == s.subject_id.as_str()) {
                        rows.push(json!({"ID": s.subject_id, "project": p, "label": s.subject_label,
                            "insert_date": "2024-01-01 12:00:00.0", "insert_user": "admin",
                            "URI": format!("/data/subjects/{}", s.subject_id)}));
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
                Some(session) if tail.is_empty() => session_document(session),
                Some(session) => session_routes(state, session, tail, query, headers),
                None => not_found("experiment"),
            }
        }
        ["experiments", id, tail @ ..] => match data.session(id) {
            Some(session) if tail.is_empty() => session_document(session),
            Some(session) => session_routes(state, session, tail, query, headers),
            None => not_found("experiment"),
        },
        _ => not_found("resource"),
    }
}

fn session_row(s: &MockSession) -> Value {
    json!({"ID": s.id, "project": s.project, "date": s.date, "xsiType": s.xsi_type,
           "label": s.label, "insert_date": "2024-01-01 12:00:00.0",
           "URI": format!("/data/experiments/{}", s.id)})
}

fn session_document(s: &MockSession) -> Response {
    let doc = json!({"items": [{
        "meta": {"xsi:type": s.xsi_type, "isHistory": false, "start_date": "Mon Jan 01 12:00:00 UTC 2024"},
        "data_fields": {"ID": s.id, "label": s.label, "project": s.project, "date": s.date,
                         "subject_ID": s.subject_id, "id": s.id},
        "children": [{"field": "scans/scan", "items": s.scans.iter().map(|sc| json!({
            "data_fields": {"ID": sc.id, "type": sc.scan_type}})).collect::<Vec<_>>()}]
    }]});
    (
        [(header::CONTENT_TYPE, "application/json")],
        doc.to_string(),
    )
        .into_response()
}

fn find_resource<'a>(resources: &'a [MockResource], key: &str) -> Option<&'a MockResource> {
    resources
        .iter()
        .find(|r| r.label == key)
        .or_else(|| resources.iter().find(|r| r.id.to_string() == key))
}

fn resource_rows(
    resources: &[MockResource],
    session: &MockSession,
    scan: Option<&MockScan>,
) -> Vec<Value> {
    resources
        .iter()
        .map(|r| {
            let size: u64 = r.files.iter().map(|f| f.size()).sum();
            let (category, cat_id, cat_desc) = match scan {
                Some(sc) => ("scans", sc.id.clone(), sc.scan_type.clone()),
                None => ("resources", session.id.clone(), " ".to_string()),
            };
            json!({"xnat_abstractresource_id": r.id.to_string(), "label": r.label,
                   "element_name": "xnat:resourceCatalog", "category": category,
                   "cat_id": cat_id, "cat_desc": cat_desc,
                   "file_count": r.files.len().to_string(), "file_size": size.to_string(),
                   "tags": "", "content": r.content, "format": r.format})
        })
        .collect()
}

fn file_uri(
    session: &MockSession,
    scan: Option<&MockScan>,
    r: &MockResource,
    f: &MockFile,
) -> String {
    match scan {
        Some(sc) => format!(
            "/data/experiments/{}/scans/{}/resources/{}/files/{}",
            session.id, sc.id, r.id, f.path
        ),
        None => format!(
            "/data/experiments/{}/resources/{}/files/{}",
            session.id, r.id, f.path
        ),
    }
}

fn file_rows(entries: &[(Option<&MockScan>, &MockResource)], session: &MockSession) -> Response {
    let mut rows = Vec::new();
    for (scan, r) in entries {
        for f in &r.files {
            let size = f.listed_size.unwrap_or_else(|| f.size());
            rows.push(json!({"Name": f.name(), "Size": size.to_string(),
            "URI": file_uri(session, *scan, r, f), "collection": r.label,
            "file_tags": "", "file_format": "", "file_content": "",
            "cat_ID": r.id.to_string(),
            "digest": match (&f.listed_digest_override, f.listed_digest) {
                (Some(d), _) => d.clone(),
                (None, true) => f.md5().to_string(),
                (None, false) => String::new(),
            }}));
        }
    }
    let body = json!({"ResultSet": {"Result": rows, "title": "Files",
                                    "Columns": [{"key": "URI", "serverRoot": ""}]}});
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn session_routes(
    state: &MockState,
    session: &MockSession,
    tail: &[&str],
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Response {
    let select_scans = |spec: &str| -> Vec<&MockScan> {
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
    };
    let zip = query.get("format").map(String::as_str) == Some("zip");
    match tail {
        ["scans"] => {
            // Non-MR sessions list their scans only when asked with their xsiType.
            let needs_type = session.xsi_type != "xnat:mrSessionData";
            let visible = !needs_type || query.contains_key("xsiType");
            let rows = session
                .scans
                .iter()
                .filter(|_| visible)
                .map(|sc| {
                    json!({"xsiType": sc.xsi_type, "xnat_imagescandata_id": format!("{}", 200000 + sc.id.len()),
                           "note": "", "series_description": sc.series_description, "ID": sc.id,
                           "type": sc.scan_type, "quality": sc.quality,
                           "URI": format!("/data/experiments/{}/scans/{}", session.id, sc.id)})
                })
                .collect();
            listing(rows, true)
        }
        ["scans", spec, "resources"] => match select_scans(spec).first() {
            Some(scan) => listing(resource_rows(&scan.resources, session, Some(scan)), true),
            None => not_found("scan"),
        },
        ["scans", spec, "files"] => {
            let entries: Vec<_> = select_scans(spec)
                .into_iter()
                .flat_map(|sc| sc.resources.iter().map(move |r| (Some(sc), r)))
                .collect();
            if entries.is_empty() {
                return not_found("scan");
            }
            if zip {
                zip_response(state, session, &entries)
            } else {
                file_rows(&entries, session)
            }
        }
        ["scans", spec, "resources", res, "files", path @ ..] => {
            let Some(scan) = select_scans(spec).into_iter().next() else {
                return not_found("scan");
            };
            let Some(r) = find_resource(&scan.resources, res) else {
                return not_found("resource");
            };
            files_or_body(state, session, Some(scan), r, path, zip, headers)
        }
        ["resources"] => listing(resource_rows(&session.resources, session, None), true),
        ["files"] => {
            let entries: Vec<_> = session.resources.iter().map(|r| (None, r)).collect();
            if zip {
                zip_response(state, session, &entries)
            } else {
                file_rows(&entries, session)
            }
        }
        ["resources", res, "files", path @ ..] => match find_resource(&session.resources, res) {
            Some(r) => files_or_body(state, session, None, r, path, zip, headers),
            None => not_found("resource"),
        },
        _ => not_found("resource"),
    }
}

fn files_or_body(
    state: &MockState,
    session: &MockSession,
    scan: Option<&MockScan>,
    r: &MockResource,
    path: &[&str],
    zip: bool,
    headers: &HeaderMap,
) -> Response {
    if path.is_empty() {
        let entries = [(scan, r)];
        return if zip {
            zip_response(state, session, &entries)
        } else {
            file_rows(&entries, session)
        };
    }
    let wanted = path.join("/");
    match r.files.iter().find(|f| f.path == wanted) {
        Some(f) if !f.body_gone => file_body(state, f.clone(), headers),
        // A missing file: 404 with an empty body.
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

fn content_type(name: &str) -> &'static str {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".html") || lower.ends_with(".htm") {
        "text/html"
    } else if lower.ends_with(".txt") {
        "text/plain"
    } else if lower.ends_with(".png") {
        "image/png"
    } else if lower.ends_with(".gif") {
        "image/gif"
    } else {
        "application/octet-stream"
    }
}

/// Parses `bytes=a-b` / `bytes=a-` / `bytes=-n` into an inclusive range within `size`.
fn parse_range(value: &str, size: u64) -> Option<(u64, u64)> {
    let spec = value.strip_prefix("bytes=")?;
    if spec.contains(',') || size == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            (size.saturating_sub(n), size - 1)
        }
        (a, "") => (a.parse().ok()?, size - 1),
        (a, b) => (a.parse().ok()?, b.parse::<u64>().ok()?.min(size - 1)),
    };
    (start <= end && start < size).then_some((start, end))
}

const CHUNK: usize = 256 * 1024;

fn file_body(state: &MockState, file: Arc<MockFile>, headers: &HeaderMap) -> Response {
    let c = &state.controls;
    let size = file.size();
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .filter(|_| c.honour_range.load(Ordering::SeqCst))
        .and_then(|v| parse_range(v, size));
    let (status, start, end) = match range {
        Some((a, b)) => (StatusCode::PARTIAL_CONTENT, a, b + 1),
        None => (StatusCode::OK, 0, size),
    };
    let truncate = c
        .truncate_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let stop_at = if truncate {
        start + (end - start) / 2
    } else {
        end
    };
    let stall = c.stall_files.load(Ordering::SeqCst);
    let delay = Duration::from_millis(c.chunk_delay_ms.load(Ordering::SeqCst));
    let sent = c.bytes_sent.clone();
    c.file_gets.fetch_add(1, Ordering::SeqCst);
    let stream =
        futures::stream::unfold((file.clone(), start, stall), move |(file, pos, stall)| {
            let sent = sent.clone();
            async move {
                if stall {
                    // Hold the connection open, sending nothing, for far longer than any client waits.
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                if !delay.is_zero() && pos > start {
                    tokio::time::sleep(delay).await;
                }
                if pos >= stop_at {
                    if truncate {
                        return Some((
                            Err(std::io::Error::other("injected truncation")),
                            (file, end, false),
                        ));
                    }
                    return None;
                }
                let n = ((stop_at - pos) as usize).min(CHUNK);
                let chunk = tokio::task::spawn_blocking({
                    let file = file.clone();
                    move || file.read_at(pos, n)
                })
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)));
                match chunk {
                    Ok(bytes) if !bytes.is_empty() => {
                        let next = pos + bytes.len() as u64;
                        sent.fetch_add(bytes.len() as u64, Ordering::SeqCst);
                        Some((Ok(Bytes::from(bytes)), (file, next, false)))
                    }
                    Ok(_) => None,
                    Err(e) => Some((Err(e), (file, stop_at, false))),
                }
            }
        });
    let mut resp = Response::new(HttpBody::from_stream(stream));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(file.name())),
    );
    h.insert(
        header::LAST_MODIFIED,
        HeaderValue::from_static("Mon, 01 Jan 2024 12:00:00 GMT"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("must-revalidate"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{}\";", file.name())) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", end - 1)) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    resp
}

fn zip_entry_path(
    session: &MockSession,
    scan: Option<&MockScan>,
    r: &MockResource,
    f: &MockFile,
) -> String {
    match scan {
        Some(sc) => {
            let ty: String = sc
                .scan_type
                .chars()
                .map(|c| {
                    if c.is_alphanumeric() || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            format!(
                "{}/scans/{}-{ty}/resources/{}/files/{}",
                session.label, sc.id, r.label, f.path
            )
        }
        None => format!("{}/resources/{}/files/{}", session.label, r.label, f.path),
    }
}

/// A ZIP of the given resources' files, STORED, streamed with no Content-Length.
fn zip_response(
    state: &MockState,
    session: &MockSession,
    entries: &[(Option<&MockScan>, &MockResource)],
) -> Response {
    use std::io::Write;
    let mut files = Vec::new();
    for (scan, r) in entries {
        for f in &r.files {
            files.push((zip_entry_path(session, *scan, r, f), f.clone()));
        }
    }
    if files.is_empty() {
        return not_found("files");
    }
    state.controls.file_gets.fetch_add(1, Ordering::SeqCst);
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(8);
    // Like XNAT's (Java's ZipOutputStream with STORED entries), every local header carries the
    // entry's size and CRC, so a client can unpack the stream as it arrives. The zip crate writes
    // those only to a seekable file, so the archive is built in a temporary file, then streamed.
    tokio::task::spawn_blocking(move || {
        let built = (|| -> zip::result::ZipResult<std::fs::File> {
            let mut zw = zip::ZipWriter::new(tempfile::tempfile()?);
            for (name, f) in files {
                let opts = zip::write::SimpleFileOptions::default()
                    .compression_method(zip::CompressionMethod::Stored)
                    .large_file(f.size() >= u32::MAX as u64);
                zw.start_file(name, opts)?;
                let mut pos = 0;
                while pos < f.size() {
                    let chunk = f.read_at(pos, CHUNK)?;
                    if chunk.is_empty() {
                        break;
                    }
                    pos += chunk.len() as u64;
                    zw.write_all(&chunk)?;
                }
            }
            zw.finish()
        })();
        let mut file = match built {
            Ok(f) => f,
            Err(e) => {
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                return;
            }
        };
        use std::io::{Read, Seek};
        if let Err(e) = file.rewind() {
            let _ = tx.blocking_send(Err(e));
            return;
        }
        let mut buf = vec![0u8; CHUNK];
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx
                        .blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
                        .is_err()
                    {
                        break; // the client went away
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    break;
                }
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut resp = Response::new(HttpBody::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/zip"),
    );
    if let Ok(v) =
        HeaderValue::from_str(&format!("attachment; filename=\"{}.zip\";", session.label))
    {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_follows_xnat() {
        assert_eq!(xnat_decode("/a/b%41"), "/a/b%41");
        assert_eq!(xnat_decode("/a%20b/c%2Bd+e"), "/a b/c+d e");
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=95-200", 100), Some((95, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
    }
}
