//! ZIP downloads (`.../files?format=zip`): the resources' files in one archive, entries named
//! `<session label>/scans/<id>-<type>/resources/<label>/files/<path>` (see
//! [`crate::xnat::zip_scan_folder`]), written as XNAT writes
//! them: with Java's `ZipOutputStream` (xnat-web `restlet/representations/ZipRepresentation.java`,
//! NrgXnat/xnat `org/nrg/xft/utils/zip/ZipUtils.java`), in the method the `compression` query
//! parameter picks (`SecureResource.identifyCompression`: `Integer.valueOf`, 400 when not a
//! number), else `ZipUtils.DEFAULT_COMPRESSION`, STORED. STORED entries carry their size and
//! CRC in their local headers (`ZipUtils.write` computes them first); DEFLATED entries
//! (`compression=8`) have them only in data descriptors after their data.

use super::MockState;
use super::data::{MockFile, MockResource, MockScan, MockSession};
use super::responses::{CHUNK, not_found};
use axum::body::Body as HttpBody;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// How the entries of a ZIP are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Compression {
    /// Sizes and CRCs in the local headers.
    Stored,
    /// Sizes and CRCs in data descriptors after the data.
    Deflated,
}

impl Compression {
    /// The `compression` query parameter as XNAT takes it: absent, STORED; `0` STORED, `8`
    /// DEFLATED; not a number, 400; another number, 500 (`ZipOutputStream.setMethod` throws).
    pub(super) fn of_query(value: Option<&str>) -> Result<Compression, Box<Response>> {
        match value.map(|v| v.parse::<i64>()) {
            None | Some(Ok(0)) => Ok(Compression::Stored),
            Some(Ok(8)) => Ok(Compression::Deflated),
            Some(Ok(_)) => Err(Box::new(super::responses::html(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "invalid compression method",
            ))),
            Some(Err(e)) => Err(Box::new(super::responses::html(
                axum::http::StatusCode::BAD_REQUEST,
                &e.to_string(),
            ))),
        }
    }
}

fn zip_entry_path(
    session: &MockSession,
    scan: Option<&MockScan>,
    r: &MockResource,
    f: &MockFile,
) -> String {
    match scan {
        Some(sc) => format!(
            "{}/scans/{}/resources/{}/files/{}",
            session.label,
            crate::xnat::zip_scan_folder(&sc.id, &sc.scan_type),
            r.label,
            f.path
        ),
        None => format!("{}/resources/{}/files/{}", session.label, r.label, f.path),
    }
}

/// The ZIP entries of the given resources' files: (path in the archive, file).
pub(super) fn zip_entries(
    session: &MockSession,
    entries: &[(Option<&MockScan>, &MockResource)],
) -> Vec<(String, Arc<MockFile>)> {
    let mut files = Vec::new();
    for (scan, r) in entries {
        for f in &r.files {
            files.push((zip_entry_path(session, *scan, r, f), f.clone()));
        }
    }
    files
}

/// Writes `files` as a ZIP of STORED entries. `w` must seek for the sizes and CRCs to go in the
/// local headers.
pub(super) fn write_zip<W: std::io::Write + std::io::Seek>(
    w: W,
    files: Vec<(String, Arc<MockFile>)>,
) -> zip::result::ZipResult<W> {
    let mut zw = zip::ZipWriter::new(w);
    write_entries(&mut zw, files, zip::CompressionMethod::Stored)?;
    zw.finish()
}

/// Writes `files` as a ZIP of DEFLATED entries, written as a stream: each entry's size and CRC
/// follow its data in a data descriptor, as Java's `ZipOutputStream` writes them.
pub(super) fn write_zip_deflated<W: std::io::Write>(
    w: W,
    files: Vec<(String, Arc<MockFile>)>,
) -> zip::result::ZipResult<W> {
    let mut zw = zip::ZipWriter::new_stream(w);
    write_entries(&mut zw, files, zip::CompressionMethod::Deflated)?;
    Ok(zw.finish()?.into_inner())
}

fn write_entries<W: std::io::Write + std::io::Seek>(
    zw: &mut zip::ZipWriter<W>,
    files: Vec<(String, Arc<MockFile>)>,
    method: zip::CompressionMethod,
) -> zip::result::ZipResult<()> {
    use std::io::Write;
    for (name, f) in files {
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(method)
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
    Ok(())
}

/// A ZIP of the given resources' files, streamed with no Content-Length, its entries written
/// as `compression` says (DEFLATED whatever is asked while `zip_deflated` is set).
pub(super) fn zip_response(
    state: &MockState,
    session: &MockSession,
    entries: &[(Option<&MockScan>, &MockResource)],
    compression: Compression,
) -> Response {
    let compression = if state.controls.zip_deflated.load(Ordering::SeqCst) {
        Compression::Deflated
    } else {
        compression
    };
    let files = zip_entries(session, entries);
    if files.is_empty() {
        return not_found("files");
    }
    state.controls.file_gets.fetch_add(1, Ordering::SeqCst);
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(8);
    // Like XNAT's (Java's ZipOutputStream with STORED entries), every local header carries the
    // entry's size and CRC, so a client can unpack the stream as it arrives. The zip crate writes
    // those only to a seekable file, so the archive is built in a temporary file, then streamed.
    tokio::task::spawn_blocking(move || {
        let built = tempfile::tempfile()
            .map_err(zip::result::ZipError::from)
            .and_then(|tmp| match compression {
                Compression::Stored => write_zip(tmp, files),
                Compression::Deflated => write_zip_deflated(tmp, files),
            });
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
