//! ZIP downloads (`.../files?format=zip`): the resources' files in one archive, entries named
//! `<session label>/scans/<id>-<type>/resources/<label>/files/<path>` (see
//! [`crate::xnat::zip_scan_folder`]), written as XNAT writes
//! them: with Java's `ZipOutputStream` (xnat-web `restlet/representations/ZipRepresentation.java`,
//! NrgXnat/xnat `org/nrg/xft/utils/zip/ZipUtils.java`), in the method the `compression` query
//! parameter picks (`SecureResource.identifyCompression`: `Integer.valueOf`, 400 when not a
//! number), else `ZipUtils.DEFAULT_COMPRESSION`, STORED. STORED entries carry their size and
//! CRC in their local headers (`ZipUtils.write` computes them first); DEFLATED entries
//! (`compression=8`) have them only in data descriptors after their data.

use super::data::{MockFile, MockResource, MockScan, MockSession};
use super::responses::{CHUNK, not_found};
use super::state::MockState;
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

/// Writes `files` as a ZIP of STORED entries to a [`Spool`], which sends each entry on once
/// its local header holds its size and CRC.
fn write_zip_streamed(
    w: Spool,
    files: Vec<(String, Arc<MockFile>)>,
) -> zip::result::ZipResult<Spool> {
    let mut zw = zip::ZipWriter::new(w);
    // The writer flushes each entry once it has gone back to fill in its local header, and
    // never seeks before a flush after that (zip's `set_flush_on_finish_file`).
    zw.set_flush_on_finish_file(true);
    write_entries(&mut zw, files, zip::CompressionMethod::Stored)?;
    zw.finish()
}

/// A writer that holds what was written since its last flush, so the ZIP writer can seek back
/// into it (to fill in a local header), and sends it on to the response at each flush.
struct Spool {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    /// Send what is held once it reaches this many bytes (only for writers that never seek
    /// back: DEFLATED entries, whose sizes follow their data).
    send_at: Option<usize>,
    /// The bytes from `base` on, not yet sent.
    held: Vec<u8>,
    /// Offset in the archive of `held[0]`.
    base: u64,
    /// Offset in the archive the next write goes to.
    pos: u64,
    /// The client went away: what is written from now on is dropped, so the ZIP writer,
    /// which tries to finish its archive when dropped, finishes it into nothing.
    gone: bool,
}

impl Spool {
    fn new(tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>, send_at: Option<usize>) -> Spool {
        Spool {
            tx,
            send_at,
            held: Vec::new(),
            base: 0,
            pos: 0,
            gone: false,
        }
    }
}

impl std::io::Write for Spool {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.gone {
            return Ok(buf.len());
        }
        let at = (self.pos - self.base) as usize;
        let end = at + buf.len();
        if end > self.held.len() {
            self.held.resize(end, 0);
        }
        self.held[at..end].copy_from_slice(buf);
        self.pos += buf.len() as u64;
        if self.send_at.is_some_and(|n| self.held.len() >= n) {
            std::io::Write::flush(self)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.held.is_empty() || self.gone {
            return Ok(());
        }
        let held = std::mem::take(&mut self.held);
        self.base += held.len() as u64;
        self.pos = self.base;
        self.tx.blocking_send(Ok(Bytes::from(held))).map_err(|_| {
            self.gone = true;
            std::io::Error::other("the client went away")
        })
    }
}

/// The largest entry a [`Spool`] holds in memory.
const SPOOL_MAX: u64 = 32 << 20;

/// Streams a finished archive from its temporary file.
fn send_file(
    mut file: std::fs::File,
    tx: &tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
) -> std::io::Result<()> {
    use std::io::{Read, Seek};
    file.rewind()?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        tx.blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
            .map_err(|_| std::io::Error::other("the client went away"))?;
    }
}

/// Only for the ZIP writer's bounds (`set_flush_on_finish_file` wants a reader): it reads back
/// only to copy entries, which the mock never does.
impl std::io::Read for Spool {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        Err(std::io::Error::other("a spool is written, never read"))
    }
}

impl std::io::Seek for Spool {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        if self.gone {
            return Ok(self.pos);
        }
        let end = self.base + self.held.len() as u64;
        let pos = match to {
            std::io::SeekFrom::Start(p) => Some(p),
            std::io::SeekFrom::End(d) => end.checked_add_signed(d),
            std::io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match pos {
            Some(p) if p >= self.base && p <= end => {
                self.pos = p;
                Ok(p)
            }
            _ => Err(std::io::Error::other("seek outside what is held")),
        }
    }
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
    // entry's size and CRC, so a client can unpack the stream as it arrives. The archive streams
    // as it is built, entry by entry, as XNAT's does: see [`Spool`].
    tokio::task::spawn_blocking(move || {
        // An entry is held in memory until its header is filled in: a big one is built in a
        // temporary file instead, and the archive streamed from there once written.
        let big = files.iter().any(|(_, f)| f.size() > SPOOL_MAX);
        let built = match compression {
            Compression::Stored if big => tempfile::tempfile()
                .map_err(zip::result::ZipError::from)
                .and_then(|tmp| write_zip(tmp, files))
                .and_then(|file| Ok(send_file(file, &tx)?)),
            Compression::Stored => write_zip_streamed(Spool::new(tx.clone(), None), files)
                .and_then(|mut spool| Ok(std::io::Write::flush(&mut spool)?)),
            Compression::Deflated => write_zip_deflated(Spool::new(tx.clone(), Some(CHUNK)), files)
                .and_then(|mut spool| Ok(std::io::Write::flush(&mut spool)?)),
        };
        if let Err(e) = built {
            // The client went away (nothing to tell), or the archive failed: cut the stream.
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
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
    use crate::mock::data::Body;

    /// Runs `write` on a blocking thread with a [`Spool`] and collects what it sends, counting
    /// the chunks sent before the writer finished.
    fn spooled(
        send_at: Option<usize>,
        write: impl FnOnce(Spool) -> zip::result::ZipResult<Spool> + Send + 'static,
    ) -> Vec<u8> {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        std::thread::spawn(move || {
            let mut spool = write(Spool::new(tx, send_at)).unwrap();
            std::io::Write::flush(&mut spool).unwrap();
        })
        .join()
        .unwrap();
        let mut all = Vec::new();
        while let Ok(chunk) = rx.try_recv() {
            all.extend_from_slice(&chunk.unwrap());
        }
        all
    }

    fn files() -> Vec<(String, Arc<MockFile>)> {
        (0..5u8)
            .map(|i| {
                let body = Body::Generated {
                    seed: i as u64,
                    size: 300_000 + i as u64,
                    prefix: Bytes::new(),
                };
                (
                    format!("S/scans/1/resources/DICOM/files/f{i}.dcm"),
                    MockFile::new(format!("f{i}.dcm"), body),
                )
            })
            .collect()
    }

    fn expected(f: &MockFile) -> Vec<u8> {
        f.read_at(0, f.size() as usize).unwrap().to_vec()
    }

    #[test]
    fn a_streamed_archive_has_sizes_and_crcs_in_its_local_headers() {
        let zip = spooled(None, |s| write_zip_streamed(s, files()));
        // Read as a stream, front to back, as a client does: every entry's header carries its
        // size (no data descriptors), and the data matches.
        let mut stream = crate::prefetch::zip_stream::ZipStream::new(&zip[..]);
        for (name, f) in files() {
            let entry = stream.next_entry().unwrap().unwrap();
            assert_eq!(String::from_utf8_lossy(&entry.name), name);
            assert_eq!(entry.method, 0);
            assert_eq!(entry.size, Some(f.size()), "size in the local header");
            let mut got = Vec::new();
            stream
                .read_data(&entry, |chunk| {
                    got.extend_from_slice(chunk);
                    Ok(())
                })
                .unwrap();
            assert!(got == expected(&f));
        }
        assert!(stream.next_entry().unwrap().is_none());
        // And as a whole archive, central directory included.
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).unwrap();
        assert_eq!(archive.len(), 5);
        let mut first = Vec::new();
        std::io::Read::read_to_end(&mut archive.by_index(0).unwrap(), &mut first).unwrap();
        assert!(first == expected(&files()[0].1));
    }

    #[test]
    fn a_client_that_goes_away_ends_the_archive_quietly() {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        drop(rx);
        let written = write_zip_streamed(Spool::new(tx, None), files());
        // The first entry's flush finds no client: the writer stops there, and what the zip
        // writer writes as it is dropped goes nowhere (no "failed to finalize" on stderr).
        assert!(written.is_err());
    }

    #[test]
    fn a_deflated_archive_streams_with_data_descriptors() {
        let zip = spooled(Some(CHUNK), |s| write_zip_deflated(s, files()));
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).unwrap();
        for (i, (_, f)) in files().into_iter().enumerate() {
            let mut got = Vec::new();
            std::io::Read::read_to_end(&mut archive.by_index(i).unwrap(), &mut got).unwrap();
            assert!(got == expected(&f));
        }
    }
}
