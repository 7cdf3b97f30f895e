//! Parsing XNAT's JSON answers into the domain types.
//!
//! Listings are `{"ResultSet": {"Result": [rows]}}` where every value is a string (numbers
//! included), missing values are `""` and key order varies. Parsing is lenient about value
//! types (a number where a string was expected is accepted) and strict about shape: a body
//! that is not a `ResultSet` is an error, never an empty listing.
//!
//! Here, rows to types; in `file_rows`, the reading of a files listing row by row as it
//! arrives (the streaming serde machinery).

mod file_rows;

pub use file_rows::{FileRow, FileRowSink, each_file_row, looks_like_html, read_file_rows};

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
            kind: super::Derived::Assessor,
        })
        .filter(|a| !a.id.is_empty())
        .collect()
}

/// A session's reconstructions listing (`/data/experiments/{ID}/reconstructions`): rows of
/// `ID`, `type`, `baseScanType`. A reconstruction has no label, so its ID names its folder.
/// XNAT: xnat-web `org/nrg/xnat/restlet/resources/ReconList.java` (`getDefaultFields`).
pub fn reconstructions(rows: &[Row]) -> Vec<super::Assessor> {
    rows.iter()
        .map(|r| super::Assessor {
            id: field(r, "ID"),
            label: field(r, "ID"),
            xsi_type: "xnat:reconstructedImageData".into(),
            kind: super::Derived::Reconstruction,
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

/// The files of a files listing body held whole: see [`FilesBuilder`].
pub fn files_listing(
    body: &[u8],
    path: &str,
) -> Result<(Vec<RemoteFile>, Vec<SkippedFile>), XnatError> {
    let mut files = FilesBuilder::default();
    each_file_row(body, path, &mut files)?;
    Ok(files.finish())
}

/// The files of a resource. Rows whose path is unsafe, whose size is not a number, or whose
/// path repeats an earlier row are skipped and reported.
pub fn files(rows: &[Row]) -> (Vec<RemoteFile>, Vec<SkippedFile>) {
    let mut files = FilesBuilder::default();
    for row in rows {
        files.push(FileRow::of(row));
    }
    files.finish()
}

/// A resource's files, made row by row as its listing is read: rows whose path is unsafe,
/// whose size is not a number, or that have no URI are skipped at once, rows whose path
/// repeats an earlier row's at the end; each skipped row is reported, in listing order.
#[derive(Default)]
pub struct FilesBuilder {
    files: Vec<RemoteFile>,
    /// Each file's row.
    row_of: Vec<u32>,
    skipped: Vec<(u32, SkippedFile)>,
    rows: u32,
}

impl FileRowSink for FilesBuilder {
    fn row(&mut self, row: FileRow<'_>) -> Result<(), XnatError> {
        self.push(row);
        Ok(())
    }
}

impl FilesBuilder {
    /// The next row of the listing.
    pub fn push(&mut self, r: FileRow<'_>) {
        let row = self.rows;
        self.rows = self.rows.saturating_add(1);
        let path = path_in_resource(&r.uri, &r.name);
        let reason = if safe_relative_path(&path).is_none() {
            "unsafe file name"
        } else if r.size.trim().is_empty() && !r.uri.is_empty() {
            // No size in the catalog, and none XNAT could stat (`CatalogUtils`: it stats the
            // file only when the catalog has no size): shown, and the body decides.
            let digest = super::Md5::parse(&r.digest);
            self.files
                .push(RemoteFile::of_unknown_size(path, digest, &r.uri));
            self.row_of.push(row);
            return;
        } else if let Ok(size) = r.size.trim().parse() {
            if r.uri.is_empty() {
                "no URI"
            } else {
                let digest = super::Md5::parse(&r.digest);
                self.files.push(RemoteFile::new(path, size, digest, &r.uri));
                self.row_of.push(row);
                return;
            }
        } else {
            "Size is not a number"
        };
        self.skipped.push((row, SkippedFile { name: path, reason }));
    }

    /// The files, each path once, at their own size; and the rows skipped.
    pub fn finish(self) -> (Vec<RemoteFile>, Vec<SkippedFile>) {
        let FilesBuilder {
            mut files,
            row_of,
            mut skipped,
            ..
        } = self;
        // A path that repeats an earlier row's: the later row goes (found by sorting
        // positions, with no copy of the paths).
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
        drop(order);
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

    /// A body that arrives so many bytes at a time.
    struct Chunks<'a>(&'a [u8], usize);

    impl std::io::Read for Chunks<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    /// The files of a body read as it arrives, `chunk` bytes at a time.
    fn read_in_chunks(
        body: &[u8],
        chunk: usize,
    ) -> Result<(Vec<RemoteFile>, Vec<SkippedFile>), XnatError> {
        let mut files = FilesBuilder::default();
        read_file_rows(Chunks(body, chunk), "/x", &mut files)?;
        Ok(files.finish())
    }

    #[test]
    fn a_listing_read_as_it_arrives_is_the_one_read_whole() {
        let body = br#"{"title":"Files","ResultSet":{"totalRecords":"4","Result":[
            {"Name":"a.dcm","Size":"10","URI":"/data/experiments/E/resources/7/files/a.dcm","digest":"D41D8CD98F00B204E9800998ECF8427E"},
            {"Name":"b\u00e9.dcm","Size":"1","URI":"/data/experiments/E/resources/7/files/b\u00e9.dcm","Name":"ignored, the URI names it"},
            {"Size":{"odd":[1,2]},"Name":"c","URI":"/data/experiments/E/resources/7/files/c","extra":{"x":[null]}},
            {"Name":"d","Size":"2","URI":"/data/experiments/E/resources/7/files/d","digest":["x"]}
        ],"Columns":[]}}"#;
        let whole = files_listing(body, "/x").unwrap();
        assert_eq!(whole, files(&result_rows(body, "/x").unwrap()));
        for chunk in [1, 2, 7, 4096] {
            assert_eq!(read_in_chunks(body, chunk).unwrap(), whole, "{chunk}");
        }
        assert_eq!(whole.0.len(), 3);
        assert_eq!(whole.0[1].path, "b\u{e9}.dcm");
        // An object where a size was: its JSON text, not a number.
        assert_eq!(whole.1[0].reason, "Size is not a number");
        assert_eq!(whole.1[0].name, "c");
    }

    #[test]
    fn a_listing_of_the_wrong_shape_says_what_is_wrong_however_it_is_read() {
        let cases: [(&[u8], &str); 8] = [
            (b"<html>login</html>", "HTML"),
            (b"  <!DOCTYPE html><html>", "HTML"),
            (br#"{"ResultSet":{"Result":[1]}}"#, "not an object"),
            (
                br#"{"ResultSet":{"Result":[{"Name":"a"},"x"]}}"#,
                "not an object",
            ),
            (br#"{"ResultSet":[]}"#, "no ResultSet.Result"),
            (br#"{"ResultSet":{"Results":[]}}"#, "no ResultSet.Result"),
            (br#"{"ResultSet":{"Result":[]}} x"#, "malformed JSON"),
            (br#"{"ResultSet":{"Result":[{"Name":"#, "malformed JSON"),
        ];
        for (body, says) in cases {
            let whole = files_listing(body, "/x").unwrap_err().to_string();
            let read = read_in_chunks(body, 3).unwrap_err().to_string();
            assert!(whole.contains(says), "{whole}");
            assert_eq!(read, whole);
            // The generic reading of rows says the same.
            assert_eq!(result_rows(body, "/x").unwrap_err().to_string(), whole);
        }
    }

    #[test]
    fn a_sink_that_refuses_a_row_ends_the_reading_with_its_error() {
        struct UpTo(usize);
        impl FileRowSink for UpTo {
            fn row(&mut self, _: FileRow<'_>) -> Result<(), XnatError> {
                self.0 = self
                    .0
                    .checked_sub(1)
                    .ok_or(XnatError::NotFound("enough".into()))?;
                Ok(())
            }
        }
        let body = br#"{"ResultSet":{"Result":[{"Name":"a"},{"Name":"b"},{"Name":"c"}]}}"#;
        assert!(each_file_row(body, "/x", &mut UpTo(3)).is_ok());
        let err = each_file_row(body, "/x", &mut UpTo(2)).unwrap_err();
        assert!(
            matches!(err, XnatError::NotFound(ref m) if m == "enough"),
            "{err}"
        );
        let err = read_file_rows(Chunks(body, 5), "/x", &mut UpTo(1)).unwrap_err();
        assert!(matches!(err, XnatError::NotFound(_)), "{err}");
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
    fn a_file_listed_without_size_is_kept_of_unknown_size() {
        let body = br#"{"ResultSet":{"Result":[
            {"Name":"a","Size":"","URI":"/data/experiments/E1/resources/9/files/a","digest":""},
            {"Name":"b","Size":"3","URI":"/data/experiments/E1/resources/9/files/b","digest":""}
        ]}}"#;
        let (files, skipped) = files(&result_rows(body, "/f").unwrap());
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!((files[0].size, files[0].size_unknown), (0, true));
        assert_eq!((files[1].size, files[1].size_unknown), (3, false));
        // Kept on disk and read back as it was.
        let text = serde_json::to_string(&files[0]).unwrap();
        assert!(text.contains(r#""size_unknown":true"#), "{text}");
        assert_eq!(serde_json::from_str::<RemoteFile>(&text).unwrap(), files[0]);
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
