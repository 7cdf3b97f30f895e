//! Parsing XNAT's JSON answers into the domain types.
//!
//! Listings are `{"ResultSet": {"Result": [rows]}}` where every value is a string (numbers
//! included), missing values are `""` and key order varies. Parsing is lenient about value
//! types (a number where a string was expected is accepted) and strict about shape: a body
//! that is not a `ResultSet` is an error, never an empty listing.

use super::{Project, RemoteFile, Resource, Scan, Session, XnatError};
use crate::names::safe_relative_path;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::borrow::Cow;

pub type Row = Map<String, Value>;

/// The rows of a `ResultSet` listing.
pub fn result_rows(body: &[u8], path: &str) -> Result<Vec<Row>, XnatError> {
    let bad = |msg: String| XnatError::BadResponse {
        path: path.to_string(),
        msg,
    };
    let mut value: Value = serde_json::from_slice(body).map_err(|e| {
        if looks_like_html(body) {
            bad("an HTML page where JSON was expected".into())
        } else {
            bad(format!("malformed JSON: {e}"))
        }
    })?;
    let rows = match value
        .get_mut("ResultSet")
        .and_then(|rs| rs.get_mut("Result"))
        .map(Value::take)
    {
        Some(Value::Array(rows)) => rows,
        _ => return Err(bad("no ResultSet.Result in the answer".into())),
    };
    rows.into_iter()
        .map(|row| match row {
            Value::Object(map) => Ok(map),
            _ => Err(bad("a ResultSet row is not an object".into())),
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
            subject_label: field(r, "subject_label"),
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
        // The document names the subject by accession ID (`subject_ID`) only.
        subject_label: String::new(),
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

/// A session's assessors listing (`/data/experiments/{ID}/assessors`). XNAT: xnat-web
/// `org/nrg/xnat/restlet/resources/ProjSubExptAsstList.java` (`ID`, `label`, `xsiType`, ...).
pub fn assessors(rows: &[Row]) -> Vec<super::Assessor> {
    rows.iter()
        .map(|r| super::Assessor {
            id: field(r, "ID"),
            label: field(r, "label"),
            xsi_type: field(r, "xsiType"),
        })
        .filter(|a| !a.id.is_empty())
        .collect()
}

pub fn resources(rows: &[Row]) -> Vec<Resource> {
    rows.iter()
        .map(|r| Resource {
            id: field(r, "xnat_abstractresource_id"),
            label: field(r, "label"),
            format: field(r, "format"),
            content: field(r, "content"),
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

/// The fields of a files listing row that xnatfs uses, as text (XNAT sends numbers as
/// strings; a number, a boolean or null is taken as its text). Borrowed from the listing's
/// body where the JSON string has no escapes: a row of a 200,000-file listing costs its five
/// slices, not five allocations (the listing's peak memory).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct FileRow<'a> {
    #[serde(rename = "Name", borrow, deserialize_with = "lenient")]
    pub name: Cow<'a, str>,
    #[serde(rename = "Size", borrow, deserialize_with = "lenient")]
    pub size: Cow<'a, str>,
    #[serde(rename = "URI", borrow, deserialize_with = "lenient")]
    pub uri: Cow<'a, str>,
    #[serde(borrow, deserialize_with = "lenient")]
    pub digest: Cow<'a, str>,
    /// The numeric ID of the file's resource.
    #[serde(rename = "cat_ID", borrow, deserialize_with = "lenient")]
    pub cat_id: Cow<'a, str>,
}

impl FileRow<'static> {
    fn of(row: &Row) -> FileRow<'static> {
        FileRow {
            name: field(row, "Name").into(),
            size: field(row, "Size").into(),
            uri: field(row, "URI").into(),
            digest: field(row, "digest").into(),
            cat_id: field(row, "cat_ID").into(),
        }
    }
}

/// Any JSON scalar as text: strings as they are (borrowed when they can be), numbers and
/// booleans printed, null as `""`. An array or object is an error.
fn lenient<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Cow<'de, str>, D::Error> {
    struct Text;
    impl<'de> serde::de::Visitor<'de> for Text {
        type Value = Cow<'de, str>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a string, a number, a boolean or null")
        }
        fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Cow::Borrowed(v))
        }
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v.to_string()))
        }
        fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v.to_string()))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v.to_string()))
        }
        fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
            // Printed as serde_json prints it, as the generic reading does.
            Ok(Cow::Owned(Value::from(v).to_string()))
        }
        fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v.to_string()))
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(Cow::Borrowed(""))
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(Cow::Borrowed(""))
        }
    }
    d.deserialize_any(Text)
}

/// A `ResultSet` whose rows are parsed straight into `T`, with no generic JSON tree (a files
/// listing of 200,000 rows would cost hundreds of megabytes as one).
#[derive(Deserialize)]
struct Typed<T> {
    #[serde(rename = "ResultSet")]
    result_set: TypedRows<T>,
}

#[derive(Deserialize)]
struct TypedRows<T> {
    #[serde(rename = "Result")]
    result: Vec<T>,
}

/// The files of a files listing body: parsed row by row into [`FileRow`]s; a body that does
/// not parse that way is read as generic rows instead, whose errors say what is wrong.
pub fn files_listing(
    body: &[u8],
    path: &str,
) -> Result<(Vec<RemoteFile>, Vec<SkippedFile>), XnatError> {
    Ok(files_of(file_rows(body, path)?))
}

/// The rows of a files listing body, parsed row by row (see [`files_listing`]).
pub fn file_rows<'a>(body: &'a [u8], path: &str) -> Result<Vec<FileRow<'a>>, XnatError> {
    match serde_json::from_slice::<Typed<FileRow<'a>>>(body) {
        Ok(typed) => Ok(typed.result_set.result),
        Err(_) => Ok(result_rows(body, path)?.iter().map(FileRow::of).collect()),
    }
}

/// The files of a resource. Rows whose path is unsafe, whose size is not a number, or whose
/// path repeats an earlier row are skipped and reported.
pub fn files(rows: &[Row]) -> (Vec<RemoteFile>, Vec<SkippedFile>) {
    files_of(rows.iter().map(FileRow::of))
}

/// The files of a resource from its rows: see [`files`].
pub fn files_of<'a>(
    rows: impl IntoIterator<Item = FileRow<'a>>,
) -> (Vec<RemoteFile>, Vec<SkippedFile>) {
    let rows = rows.into_iter();
    let mut files: Vec<RemoteFile> = Vec::with_capacity(rows.size_hint().0);
    // Each file's row, and each skipped row with its place, to report them in listing order.
    let mut row_of: Vec<usize> = Vec::with_capacity(files.capacity());
    let mut skipped: Vec<(usize, SkippedFile)> = Vec::new();
    for (row, r) in rows.enumerate() {
        let path = path_in_resource(&r.uri, &r.name);
        let skip = |reason| {
            let name = path.clone();
            (row, SkippedFile { name, reason })
        };
        if safe_relative_path(&path).is_none() {
            skipped.push(skip("unsafe file name"));
            continue;
        }
        let Some(size) = r.size.trim().parse().ok() else {
            skipped.push(skip("Size is not a number"));
            continue;
        };
        if r.uri.is_empty() {
            skipped.push(skip("no URI"));
            continue;
        }
        let digest = super::Md5::parse(&r.digest);
        files.push(RemoteFile::new(path, size, digest, &r.uri));
        row_of.push(row);
    }
    // A path that repeats an earlier row's: the later row goes (found by sorting positions,
    // with no copy of the paths).
    let mut order: Vec<u32> = (0..files.len() as u32).collect();
    order.sort_by(|&a, &b| {
        files[a as usize]
            .path
            .cmp(&files[b as usize].path)
            .then(a.cmp(&b))
    });
    let mut repeated = vec![false; files.len()];
    for pair in order.windows(2) {
        if files[pair[0] as usize].path == files[pair[1] as usize].path {
            repeated[pair[1] as usize] = true;
        }
    }
    let mut n = 0;
    files.retain(|f| {
        let keep = !repeated[n];
        n += 1;
        if !keep {
            let name = f.path.clone();
            let reason = "duplicate name in the listing";
            skipped.push((row_of[n - 1], SkippedFile { name, reason }));
        }
        keep
    });
    files.shrink_to_fit();
    skipped.sort_by_key(|(row, _)| *row);
    (files, skipped.into_iter().map(|(_, s)| s).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_files_listing_reads_the_same_row_by_row_as_whole() {
        let body = br#"{"ResultSet":{"Result":[
            {"Name":"a.dcm","Size":"10","URI":"/data/experiments/E/scans/1/resources/7/files/s/a.dcm",
             "digest":"D41D8CD98F00B204E9800998ECF8427E","collection":"DICOM"},
            {"URI":"/data/experiments/E/resources/8/files/b.txt","Name":"b.txt","Size":20,"digest":null},
            {"Name":"../x","Size":"1","URI":"/data/experiments/E/resources/8/files/../x"},
            {"Name":"c\u00e9 \"q\".dcm","Size":"5","URI":"/data/experiments/E/resources/8/files/c\u00e9 \"q\".dcm","digest":true},
            {"Name":"d.dcm","Size":1.5e3,"URI":"/data/experiments/E/resources/8/files/d.dcm"}
        ],"title":"Files"}}"#;
        let typed = files_listing(body, "/x").unwrap();
        assert_eq!(typed, files(&result_rows(body, "/x").unwrap()));
        assert_eq!(typed.0.len(), 3);
        assert_eq!(typed.0[0].path, "s/a.dcm");
        assert_eq!(typed.0[1].size, 20);
        // Escapes decoded (that string is not borrowed), a boolean digest taken as no digest.
        assert_eq!(typed.0[2].path, "c\u{e9} \"q\".dcm");
        assert_eq!(typed.0[2].digest, None);
        // A size of 1500.0 is not a whole number of bytes.
        assert_eq!(typed.1.len(), 2);
        assert_eq!(typed.1[1].reason, "Size is not a number");
        // Not a listing: the generic reading says why.
        let err = files_listing(b"<html>login</html>", "/x").unwrap_err();
        assert!(err.to_string().contains("HTML"), "{err}");
        let err = files_listing(br#"{"ResultSet":{"Result":[1]}}"#, "/x").unwrap_err();
        assert!(err.to_string().contains("not an object"), "{err}");
    }

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
            files[0].digest.map(|d| d.to_string()).as_deref(),
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
    }
}
