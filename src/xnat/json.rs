//! Parsing XNAT's JSON answers into the domain types.
//!
//! Listings are `{"ResultSet": {"Result": [rows]}}` where every value is a string (numbers
//! included), missing values are `""` and key order varies. Parsing is lenient about value
//! types (a number where a string was expected is accepted) and strict about shape: a body
//! that is not a `ResultSet` is an error, never an empty listing.

use super::{Project, RemoteFile, Resource, Scan, Session, XnatError};
use crate::names::safe_relative_path;
use serde_json::{Map, Value};

pub type Row = Map<String, Value>;

/// The rows of a `ResultSet` listing.
pub fn result_rows(body: &[u8], path: &str) -> Result<Vec<Row>, XnatError> {
    let bad = |msg: String| XnatError::BadResponse {
        path: path.to_string(),
        msg,
    };
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        if looks_like_html(body) {
            bad("an HTML page where JSON was expected".into())
        } else {
            bad(format!("malformed JSON: {e}"))
        }
    })?;
    let rows = value
        .get("ResultSet")
        .and_then(|rs| rs.get("Result"))
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no ResultSet.Result in the answer".into()))?;
    rows.iter()
        .map(|row| {
            row.as_object()
                .cloned()
                .ok_or_else(|| bad("a ResultSet row is not an object".into()))
        })
        .collect()
}

/// A row's field as a string: strings as they are, numbers and booleans printed, missing or
/// null as `""`.
pub fn field(row: &Row, key: &str) -> String {
    match row.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// A numeric field that XNAT sends as a string; `None` when empty or not a number.
pub fn number_field(row: &Row, key: &str) -> Option<u64> {
    field(row, key).trim().parse().ok()
}

/// Whether a body is an HTML page (an error page or XNAT's login page).
pub fn looks_like_html(body: &[u8]) -> bool {
    let start: Vec<u8> = body
        .iter()
        .skip_while(|b| b.is_ascii_whitespace())
        .take(15)
        .map(u8::to_ascii_lowercase)
        .collect();
    start.starts_with(b"<!doctype") || start.starts_with(b"<html")
}

pub fn projects(rows: &[Row]) -> Vec<Project> {
    rows.iter()
        .map(|r| Project {
            id: field(r, "ID"),
            name: field(r, "name"),
        })
        .collect()
}

pub fn sessions(rows: &[Row]) -> Vec<Session> {
    rows.iter()
        .map(|r| Session {
            id: field(r, "ID"),
            label: field(r, "label"),
            project: field(r, "project"),
            xsi_type: field(r, "xsiType"),
            date: field(r, "date"),
        })
        .collect()
}

/// One session from the single-object document `{"items": [{"data_fields": {...}, "meta":
/// {"xsi:type": ...}}]}`.
pub fn session_document(body: &[u8], path: &str) -> Result<Session, XnatError> {
    let bad = |msg: &str| XnatError::BadResponse {
        path: path.to_string(),
        msg: msg.to_string(),
    };
    let value: Value = serde_json::from_slice(body).map_err(|_| {
        bad(if looks_like_html(body) {
            "an HTML page where JSON was expected"
        } else {
            "malformed JSON"
        })
    })?;
    let item = value
        .get("items")
        .and_then(|items| items.get(0))
        .ok_or_else(|| bad("no items in the session document"))?;
    let fields = item
        .get("data_fields")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("no data_fields in the session document"))?;
    let xsi_type = item
        .get("meta")
        .and_then(|m| m.get("xsi:type"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let session = Session {
        id: field(fields, "ID"),
        label: field(fields, "label"),
        project: field(fields, "project"),
        xsi_type,
        date: field(fields, "date"),
    };
    if session.id.is_empty() {
        return Err(bad("the session document has no ID"));
    }
    Ok(session)
}

pub fn scans(rows: &[Row]) -> Vec<Scan> {
    rows.iter()
        .map(|r| Scan {
            id: field(r, "ID"),
            scan_type: field(r, "type"),
            series_description: field(r, "series_description"),
            quality: field(r, "quality"),
            xsi_type: field(r, "xsiType"),
        })
        .collect()
}

pub fn resources(rows: &[Row]) -> Vec<Resource> {
    rows.iter()
        .map(|r| Resource {
            id: field(r, "xnat_abstractresource_id"),
            label: field(r, "label"),
            format: field(r, "format"),
            file_count: number_field(r, "file_count"),
            file_size: number_field(r, "file_size"),
        })
        .collect()
}

/// The path of a file inside its resource: the part of its `URI` after
/// `/resources/{id}/files/` (not URL-encoded), or the bare `Name` when the URI has no such
/// part.
pub fn path_in_resource(uri: &str, name: &str) -> String {
    let mut rest = uri;
    while let Some(at) = rest.find("/resources/") {
        rest = &rest[at + "/resources/".len()..];
        if let Some(slash) = rest.find('/')
            && let Some(path) = rest[slash..].strip_prefix("/files/")
        {
            return path.to_string();
        }
    }
    name.to_string()
}

/// Why a file row was left out of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedFile {
    pub name: String,
    pub reason: &'static str,
}

/// The files of a resource. Rows whose path is unsafe, whose size is not a number, or whose
/// path repeats an earlier row are skipped and reported.
pub fn files(rows: &[Row]) -> (Vec<RemoteFile>, Vec<SkippedFile>) {
    let mut files: Vec<RemoteFile> = Vec::with_capacity(rows.len());
    let mut skipped = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for r in rows {
        let uri = field(r, "URI");
        let name = field(r, "Name");
        let path = path_in_resource(&uri, &name);
        let skip = |reason| SkippedFile {
            name: path.clone(),
            reason,
        };
        if safe_relative_path(&path).is_none() {
            skipped.push(skip("unsafe file name"));
            continue;
        }
        let Some(size) = number_field(r, "Size") else {
            skipped.push(skip("Size is not a number"));
            continue;
        };
        if uri.is_empty() {
            skipped.push(skip("no URI"));
            continue;
        }
        if !seen.insert(path.clone()) {
            skipped.push(skip("duplicate name in the listing"));
            continue;
        }
        let digest = field(r, "digest").trim().to_ascii_lowercase();
        let digest =
            (digest.len() == 32 && digest.bytes().all(|b| b.is_ascii_hexdigit())).then_some(digest);
        files.push(RemoteFile {
            path,
            size,
            digest,
            uri,
        });
    }
    (files, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_with_string_numbers_and_varying_keys() {
        let body = br#"{"ResultSet":{"Result":[
            {"URI":"/data/experiments/E1/scans/2/resources/1736/files/sub/dir/x.dcm","Name":"x.dcm","Size":"52344","digest":"0123456789ABCDEF0123456789abcdef","collection":"DICOM","cat_ID":"1736"},
            {"Name":"y.dcm","Size":12,"URI":"/data/experiments/E1/scans/2/resources/1736/files/y.dcm","digest":""}
        ],"title":"Files","Columns":[{"key":"URI","serverRoot":""}]}}"#;
        let rows = result_rows(body, "/files").unwrap();
        let (files, skipped) = files(&rows);
        assert!(skipped.is_empty());
        assert_eq!(files[0].path, "sub/dir/x.dcm");
        assert_eq!(files[0].size, 52344);
        assert_eq!(
            files[0].digest.as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert_eq!(files[1].path, "y.dcm");
        assert_eq!(files[1].digest, None);
    }

    #[test]
    fn hostile_and_broken_rows_are_skipped() {
        let body = br#"{"ResultSet":{"Result":[
            {"Name":"a","Size":"1","URI":"/data/experiments/E1/resources/9/files/../../etc/passwd"},
            {"Name":"b","Size":"x","URI":"/data/experiments/E1/resources/9/files/b"},
            {"Name":"c","Size":"1","URI":"/data/experiments/E1/resources/9/files/c"},
            {"Name":"c","Size":"1","URI":"/data/experiments/E1/resources/9/files/c"},
            {"Name":"","Size":"1","URI":"/data/experiments/E1/resources/9/files/"}
        ]}}"#;
        let (files, skipped) = files(&result_rows(body, "/f").unwrap());
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].path, "c");
        let reasons: Vec<_> = skipped.iter().map(|s| s.reason).collect();
        assert_eq!(
            reasons,
            [
                "unsafe file name",
                "Size is not a number",
                "duplicate name in the listing",
                "unsafe file name"
            ]
        );
    }

    #[test]
    fn html_and_malformed_bodies_are_errors() {
        let html = b"<!DOCTYPE html><html><body>Login</body></html>";
        let err = result_rows(html, "/p").unwrap_err().to_string();
        assert!(err.contains("HTML"), "{err}");
        assert!(result_rows(b"{\"ResultSet\":", "/p").is_err());
        assert!(result_rows(b"{\"items\":[]}", "/p").is_err());
        assert!(session_document(b"{\"ResultSet\":{}}", "/p").is_err());
    }

    #[test]
    fn path_uses_the_uri_not_the_label() {
        assert_eq!(
            path_in_resource("/data/experiments/E/resources/77/files/a b/c.txt", "c.txt"),
            "a b/c.txt"
        );
        assert_eq!(
            path_in_resource(
                "/data/projects/P/subjects/S/experiments/E/scans/1/resources/5/files/x",
                "x"
            ),
            "x"
        );
        assert_eq!(path_in_resource("/weird", "n.dcm"), "n.dcm");
    }

    #[test]
    fn session_document_parses() {
        let body = br#"{"items":[{"meta":{"xsi:type":"xnat:mrSessionData","isHistory":false},
            "data_fields":{"ID":"XNAT_E00001","label":"S1","project":"P","date":"2024-01-02"}}]}"#;
        let s = session_document(body, "/e").unwrap();
        assert_eq!(s.id, "XNAT_E00001");
        assert_eq!(s.xsi_type, "xnat:mrSessionData");
        assert_eq!(s.scan_xsi_type(), None);
        let eeg = Session {
            xsi_type: "xnat:eegSessionData".into(),
            ..s
        };
        assert_eq!(eeg.scan_xsi_type().as_deref(), Some("xnat:eegScanData"));
    }
}
