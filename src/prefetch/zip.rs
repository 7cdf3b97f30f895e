//! A resource's ZIP (`.../files?format=zip`), streamed and unpacked on the fly with no
//! temporary zip on disk. An entry is written only where the plan says its file goes, so
//! entry names from the server never become paths.

use super::plan::{PlannedFile, PlannedResource};
use super::progress::Progress;
use super::verified::TransferPolicy;
use crate::cache::PartialFile;
use crate::xnat::{XnatApi, XnatError};
use futures::TryStreamExt;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// What became of one file: its destination, its size, and whether it is there, verified.
pub type Outcome = (PathBuf, u64, Result<(), String>);

/// Streams a resource's ZIP and writes the entries the plan expects. Returns what it wrote,
/// and the files it did not deliver intact (to be fetched file by file).
pub async fn zip_resource(
    api: &dyn XnatApi,
    r: &PlannedResource,
    tmp_dir: &Path,
    policy: &TransferPolicy,
    progress: &Progress,
) -> (Vec<Outcome>, Vec<PlannedFile>) {
    let wanted: HashMap<String, PlannedFile> = r
        .files
        .iter()
        .filter(|f| !f.present)
        .map(|f| (f.file.path.clone(), f.clone()))
        .collect();
    let mut outcomes = Vec::new();
    let leftover = match api.download_zip(&r.res).await {
        Ok(download) => {
            let reader = tokio_util::io::StreamReader::new(
                download
                    .body
                    .map_err(|e: XnatError| std::io::Error::other(e.to_string())),
            );
            let bridge = tokio_util::io::SyncIoBridge::new(reader);
            let marker = format!("/resources/{}/files/", r.res.label);
            let tmp = tmp_dir.to_path_buf();
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
            let private = policy.private;
            let unpack = tokio::task::spawn_blocking(move || {
                unzip_stream(bridge, &marker, wanted, &tmp, private, &tx)
            });
            // Progress is reported from here, as the blocking thread sends it.
            let mut unpack = std::pin::pin!(unpack);
            let joined = loop {
                tokio::select! {
                    Some(n) = rx.recv() => {
                        if n == FILE_DONE { progress.file_done() } else { progress.add_bytes(n) }
                    }
                    joined = &mut unpack => break joined,
                }
            };
            while let Ok(n) = rx.try_recv() {
                if n == FILE_DONE {
                    progress.file_done()
                } else {
                    progress.add_bytes(n)
                }
            }
            match joined {
                Ok((done, leftover)) => {
                    outcomes.extend(done);
                    leftover
                }
                Err(e) => {
                    tracing::warn!("unpacking the ZIP of {} failed: {e}", r.res.rest_path());
                    r.files
                        .iter()
                        .filter(|f| !f.present)
                        .map(|f| (f.file.path.clone(), f.clone()))
                        .collect()
                }
            }
        }
        Err(e) => {
            tracing::warn!(
                "ZIP of {} failed ({e}); fetching its files one by one",
                r.res.rest_path()
            );
            wanted
        }
    };
    (outcomes, leftover.into_values().collect())
}

/// Sent on the progress channel when a file is complete (no chunk is ever that large).
const FILE_DONE: u64 = u64::MAX;

/// Reads ZIP entries from a stream, writing those whose path (after `marker`) the plan wants.
/// Returns the files written (with their outcome) and those still wanted.
fn unzip_stream<R: Read>(
    mut reader: R,
    marker: &str,
    mut wanted: HashMap<String, PlannedFile>,
    tmp_dir: &Path,
    private: bool,
    progress: &tokio::sync::mpsc::UnboundedSender<u64>,
) -> (Vec<Outcome>, HashMap<String, PlannedFile>) {
    let mut done = Vec::new();
    loop {
        let mut entry = match zip::read::read_zipfile_from_stream(&mut reader) {
            Ok(Some(entry)) => entry,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!("the ZIP stream broke off: {e}");
                break;
            }
        };
        if entry.is_dir() {
            continue;
        }
        let name = String::from_utf8_lossy(entry.name_raw()).into_owned();
        let key = name.find(marker).map(|i| &name[i + marker.len()..]);
        let Some(planned) = key.and_then(|k| wanted.remove(k)) else {
            tracing::warn!("skipping unexpected ZIP entry {name:?}");
            if std::io::copy(&mut entry, &mut std::io::sink()).is_err() {
                break;
            }
            continue;
        };
        let key = planned.file.path.clone();
        match write_entry(&mut entry, &planned, tmp_dir, private, progress) {
            Ok(()) => {
                let _ = progress.send(FILE_DONE);
                done.push((planned.dest.clone(), planned.file.size, Ok(())));
            }
            Err(EntryError::Bad(e)) => {
                // A bad entry (short, wrong digest): fetch it again on its own.
                tracing::warn!("ZIP entry {name:?}: {e}; fetching it on its own");
                wanted.insert(key, planned);
            }
            Err(EntryError::Stream(e)) => {
                tracing::warn!("the ZIP stream broke off in {name:?}: {e}");
                wanted.insert(key, planned);
                break;
            }
        }
    }
    (done, wanted)
}

enum EntryError {
    /// The entry was read but is not the listed file.
    Bad(String),
    /// Reading failed: the rest of the stream is lost.
    Stream(String),
}

fn write_entry<R: Read>(
    entry: &mut R,
    planned: &PlannedFile,
    tmp_dir: &Path,
    private: bool,
    progress: &tokio::sync::mpsc::UnboundedSender<u64>,
) -> Result<(), EntryError> {
    let mut part =
        PartialFile::new_in(tmp_dir, private).map_err(|e| EntryError::Bad(e.to_string()))?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = entry
            .read(&mut buf)
            .map_err(|e| EntryError::Stream(e.to_string()))?;
        if n == 0 {
            break;
        }
        if part.written() + n as u64 > planned.file.size {
            // Drain the rest so the stream stays aligned for the next entry.
            std::io::copy(entry, &mut std::io::sink())
                .map_err(|e| EntryError::Stream(e.to_string()))?;
            return Err(EntryError::Bad("longer than the listed size".into()));
        }
        part.write(&buf[..n])
            .map_err(|e| EntryError::Bad(e.to_string()))?;
        let _ = progress.send(n as u64);
    }
    part.commit(&planned.file, &planned.dest)
        .map_err(|e| EntryError::Bad(e.to_string()))
}
