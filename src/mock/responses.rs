//! Building the answers: HTML status pages, JSON `ResultSet` listings and rows, session
//! documents and file bodies (with HTTP ranges when asked to honour them). ZIP downloads are in
//! [`super::zip_download`].

use super::data::{MockAssessor, MockFile, MockProject, MockResource, MockScan, MockSession};
use super::state::{MockState, RangeMode};
use crate::xnat::Derived;
use axum::body::Body as HttpBody;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

pub(super) fn html(status: StatusCode, message: &str) -> Response {
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

pub(super) fn login_page() -> Response {
    html(
        StatusCode::OK,
        "<!DOCTYPE html><html><body><form action=\"/login\">XNAT login</form></body></html>",
    )
}

pub(super) fn not_found(what: &str) -> Response {
    html(
        StatusCode::NOT_FOUND,
        &format!("Unable to find the specified {what}."),
    )
}

pub(super) fn listing(rows: Vec<Value>, total: bool) -> Response {
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

/// A sessions listing row with the columns `columns=` asks for (comma-separated aliases), or
/// XNAT's defaults: the columns asked replace the defaults, unknown aliases are left out, and
/// `URI` always comes. XNAT: xnat-web `org/nrg/xnat/restlet/resources/QueryOrganizerResource.java`
/// (`populateQuery`, `formatHeaders`), `SubjAssessmentAbst.java` (`getDefaultFields`).
pub(super) fn session_row_with(s: &MockSession, columns: Option<&str>) -> Value {
    let columns = columns
        .filter(|c| *c != "DEFAULT")
        .unwrap_or("ID,project,date,xsiType,label,insert_date");
    let mut row = serde_json::Map::new();
    for column in columns.split(',').map(str::trim) {
        let value = match column {
            "ID" => &s.id,
            "project" => &s.project,
            "date" => &s.date,
            "xsiType" => &s.xsi_type,
            "label" => &s.label,
            "subject_ID" => &s.subject_id,
            "subject_label" => &s.subject_label,
            "insert_date" => "2024-01-01 12:00:00.0",
            _ => continue,
        };
        row.insert(column.to_string(), Value::String(value.to_string()));
    }
    row.insert(
        "URI".into(),
        Value::String(format!("/data/experiments/{}", s.id)),
    );
    Value::Object(row)
}

pub(super) fn project_row(p: &MockProject) -> Value {
    json!({"ID": p.id, "secondary_ID": p.id, "name": p.name, "description": "",
           "pi_firstname": "", "pi_lastname": "", "URI": format!("/data/projects/{}", p.id)})
}

pub(super) fn scan_row(session: &MockSession, sc: &MockScan) -> Value {
    json!({"xsiType": sc.xsi_type, "xnat_imagescandata_id": format!("{}", 200000 + sc.id.len()),
           "note": "", "series_description": sc.series_description, "ID": sc.id,
           "type": sc.scan_type, "quality": sc.quality,
           "URI": format!("/data/experiments/{}/scans/{}", session.id, sc.id)})
}

/// The single-object document of a session (`{"items": [...]}`), not a `ResultSet`: its
/// `children` hold the scans (`scans/scan`), each with its resources (`file`), and the
/// session's own resources (`resources/resource`), empty ones included; values are typed
/// (numbers are numbers). XNAT's schema: `xnat:imageScanData/file` and
/// `xnat:experimentData/resources/resource`; a mature client reading them: TIGRLab/datman
/// `datman/xnat.py` (`_get_experiment_contents`, `_get_scan_rIDs`).
pub(super) fn session_doc(s: &MockSession) -> Value {
    let resource = |r: &MockResource| {
        let size: u64 = r.files.iter().map(|f| f.size()).sum();
        json!({"meta": {"xsi:type": "xnat:resourceCatalog", "isHistory": false},
               "data_fields": {"xnat_abstractresource_id": r.id, "label": r.label,
                               "format": r.format, "content": r.content,
                               "file_count": r.files.len(), "file_size": size,
                               "URI": format!("/archive/{}/{}_catalog.xml", s.id, r.label)}})
    };
    let scans: Vec<Value> = s
        .scans
        .iter()
        .map(|sc| {
            json!({"meta": {"xsi:type": sc.xsi_type, "isHistory": false},
                   "data_fields": {"ID": sc.id, "type": sc.scan_type,
                                   "series_description": sc.series_description,
                                   "quality": sc.quality, "image_session_ID": s.id},
                   "children": [{"field": "file",
                                 "items": sc.resources.iter().map(resource).collect::<Vec<_>>()}]})
        })
        .collect();
    let mut children = Vec::new();
    if !scans.is_empty() {
        children.push(json!({"field": "scans/scan", "items": scans}));
    }
    if !s.resources.is_empty() {
        let items: Vec<Value> = s.resources.iter().map(resource).collect();
        children.push(json!({"field": "resources/resource", "items": items}));
    }
    // `xnat:imageSessionData/assessors/assessor` and `reconstructions/reconstructedImage`,
    // each with its `out/file` resources (the XFT schema's fields of `xnat:imageSessionData`).
    for kind in Derived::ALL {
        let items: Vec<Value> = (s.assessors.iter().filter(|a| a.kind == kind))
            .map(|a| {
                let fields = match kind {
                    Derived::Assessor => json!({"ID": a.id, "label": a.label,
                                                "project": s.project, "imageSession_ID": s.id}),
                    Derived::Reconstruction => json!({"ID": a.id, "type": "recon",
                                                      "image_session_ID": s.id}),
                };
                json!({"meta": {"xsi:type": a.xsi_type, "isHistory": false},
                       "data_fields": fields,
                       "children": [{"field": "out/file",
                                     "items": a.resources.iter().map(resource).collect::<Vec<_>>()}]})
            })
            .collect();
        if !items.is_empty() {
            let field = match kind {
                Derived::Assessor => "assessors/assessor",
                Derived::Reconstruction => "reconstructions/reconstructedImage",
            };
            children.push(json!({"field": field, "items": items}));
        }
    }
    json!({"items": [{
        "meta": {"xsi:type": s.xsi_type, "isHistory": false, "start_date": "Mon Jan 01 12:00:00 UTC 2024"},
        "data_fields": {"ID": s.id, "label": s.label, "project": s.project, "date": s.date,
                         "subject_ID": s.subject_id, "id": s.id},
        "children": children
    }]})
}

pub(super) fn session_document(state: &MockState, s: &MockSession) -> Response {
    let mut doc = session_doc(s);
    stale_stats(state, &mut doc);
    (
        [(header::CONTENT_TYPE, "application/json")],
        doc.to_string(),
    )
        .into_response()
}

pub(super) fn resource_rows(
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

/// With [`super::state::Controls::stale_file_stats`] set, every `file_count` and `file_size`
/// in `v` is off (one file and 1000 bytes more), each kept as the type it was (XNAT's
/// listings give strings, its documents numbers).
pub(super) fn stale_stats(state: &MockState, v: &mut Value) {
    if !state.controls.stale_file_stats.load(Ordering::SeqCst) {
        return;
    }
    fn off(v: &mut Value, by: u64) {
        *v = match &*v {
            Value::String(n) => json!((n.parse::<u64>().unwrap_or(0) + by).to_string()),
            Value::Number(n) => json!(n.as_u64().unwrap_or(0) + by),
            other => other.clone(),
        };
    }
    match v {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                match key.as_str() {
                    "file_count" => off(value, 1),
                    "file_size" => off(value, 1000),
                    _ => stale_stats(state, value),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| stale_stats(state, i)),
        _ => {}
    }
}

/// A resources listing of `rows`, its stats stale when the server is told so.
pub(super) fn resource_listing(state: &MockState, mut rows: Vec<Value>) -> Vec<Value> {
    rows.iter_mut().for_each(|r| stale_stats(state, r));
    rows
}

/// The rows of a session's assessors listing. XNAT: xnat-web
/// `org/nrg/xnat/restlet/resources/ProjSubExptAsstList.java`.
pub(super) fn assessor_rows(s: &MockSession) -> Vec<Value> {
    s.assessors
        .iter()
        .filter(|a| a.kind == Derived::Assessor)
        .map(|a| {
            json!({"ID": a.id, "label": a.label, "xsiType": a.xsi_type, "date": s.date,
                   "project": s.project, "session_ID": s.id, "session_label": s.label,
                   "insert_date": "2024-06-01 12:00:00.0",
                   "URI": format!("/data/experiments/{}", a.id)})
        })
        .collect()
}

/// The rows of a session's reconstructions listing: its default fields. XNAT: xnat-web
/// `org/nrg/xnat/restlet/resources/ReconList.java` (`getDefaultFields`:
/// `xnat_reconstructedimagedata_id`, `ID`, `type`, `baseScanType`).
pub(super) fn reconstruction_rows(s: &MockSession) -> Vec<Value> {
    (s.assessors
        .iter()
        .filter(|a| a.kind == Derived::Reconstruction))
    .enumerate()
    .map(|(i, a)| {
        json!({"xnat_reconstructedimagedata_id": (i + 1).to_string(), "ID": a.id,
                   "type": "recon", "baseScanType": "",
                   "URI": format!("/data/experiments/{}/reconstructions/{}", s.id, a.id)})
    })
    .collect()
}

/// The rows of a session's listing of derived data of one kind.
pub(super) fn derived_rows(s: &MockSession, kind: Derived) -> Vec<Value> {
    match kind {
        Derived::Assessor => assessor_rows(s),
        Derived::Reconstruction => reconstruction_rows(s),
    }
}

/// One row of a files listing of an assessor's (or reconstruction's) resource: its URI names
/// the assessor.
pub(super) fn assessor_file_row(
    session: &MockSession,
    a: &MockAssessor,
    r: &MockResource,
    f: &MockFile,
) -> Value {
    let mut row = file_row(session, None, r, f);
    row["URI"] = json!(format!(
        "/data/experiments/{}/{}/{}/out/resources/{}/files/{}",
        session.id,
        a.kind.folder(),
        a.id,
        r.id,
        f.path
    ));
    row
}

/// A files listing of rows already made.
pub(super) fn rows_listing(rows: Vec<Value>) -> Response {
    let body = json!({"ResultSet": {"Result": rows, "title": "Files",
                                    "Columns": [{"key": "URI", "serverRoot": ""}]}});
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The file whose listed URI is `uri`.
pub(super) fn file_by_uri(
    data: &super::data::Dataset,
    uri: &str,
) -> Option<std::sync::Arc<MockFile>> {
    data.all_files()
        .into_iter()
        .find(|(s, scan, r, f)| file_uri(s, *scan, r, f) == uri)
        .map(|(_, _, _, f)| f.clone())
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

/// One row of a files listing.
pub(super) fn file_row(
    session: &MockSession,
    scan: Option<&MockScan>,
    r: &MockResource,
    f: &MockFile,
) -> Value {
    let size = match f.listed_without_size {
        true => String::new(),
        false => f.listed_size().to_string(),
    };
    json!({"Name": f.name(), "Size": size,
    "URI": file_uri(session, scan, r, f), "collection": r.label,
    "file_tags": "", "file_format": "", "file_content": "",
    "cat_ID": r.id.to_string(),
    "digest": match (&f.listed_digest_override, f.listed_digest) {
        (Some(d), _) => d.clone(),
        (None, true) => f.md5().to_string(),
        (None, false) => String::new(),
    }})
}

pub(super) fn file_rows(
    entries: &[(Option<&MockScan>, &MockResource)],
    session: &MockSession,
) -> Response {
    let mut rows = Vec::new();
    for (scan, r) in entries {
        for f in &r.files {
            rows.push(file_row(session, *scan, r, f));
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
pub(super) fn parse_range(value: &str, size: u64) -> Option<(u64, u64)> {
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

pub(super) const CHUNK: usize = 256 * 1024;

pub(super) fn file_body(state: &MockState, file: Arc<MockFile>, headers: &HeaderMap) -> Response {
    let c = &state.controls;
    let size = file.size();
    let mode = c.range();
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .filter(|_| mode != RangeMode::Ignore)
        .and_then(|v| parse_range(v, size));
    // `(first, last)`: what `Content-Range` says; `start..end`: what the body holds.
    let (status, said, start, end) = match range {
        // Restlet 1.1 (see `RangeMode::Restlet`): the asked range said, the whole file sent.
        Some(r) if matches!(mode, RangeMode::Restlet | RangeMode::RestletChunked) => {
            (StatusCode::PARTIAL_CONTENT, r, 0, size)
        }
        Some((a, b)) if mode == RangeMode::Aligned && a > 0 => {
            let block = 64 * 1024;
            let first = if a % block == 0 {
                a - block.min(a)
            } else {
                a - a % block
            };
            (StatusCode::PARTIAL_CONTENT, (first, b), first, b + 1)
        }
        Some((a, b)) => (StatusCode::PARTIAL_CONTENT, (a, b), a, b + 1),
        None => (StatusCode::OK, (0, 0), 0, size),
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
    if file.path.ends_with(".nii") || file.path.ends_with(".nii.gz") {
        c.image_gets.fetch_add(1, Ordering::SeqCst);
    }
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
                        // A body cut short mid-way: what was sent reaches the client first (an
                        // error at once may abort the connection before the answer's first
                        // byte leaves, which a client rightly sends again as no attempt).
                        tokio::time::sleep(Duration::from_millis(30)).await;
                        return Some((
                            Err(std::io::Error::other("injected truncation")),
                            (file, end, false),
                        ));
                    }
                    return None;
                }
                let n = ((stop_at - pos) as usize).min(CHUNK);
                // Made in memory at once; read from disk on a blocking thread.
                let chunk = if file.reads_disk() {
                    tokio::task::spawn_blocking({
                        let file = file.clone();
                        move || file.read_at(pos, n)
                    })
                    .await
                    .unwrap_or_else(|e| Err(std::io::Error::other(e)))
                } else {
                    file.read_at(pos, n)
                };
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
    if !(mode == RangeMode::RestletChunked && status == StatusCode::PARTIAL_CONTENT) {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    }
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
    if mode != RangeMode::Ignore {
        // Restlet says so on every answer (XNAT Central's, in NrgXnat/oasis-scripts issue 39).
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    }
    let said = format!("bytes {}-{}/{size}", said.0, said.1);
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&said)
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    resp
}

/// A 302 to `location` on this server.
pub(super) fn redirect(location: &str) -> Response {
    (
        StatusCode::FOUND,
        [(header::LOCATION, location.to_string())],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

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
