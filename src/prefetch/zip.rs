//! A resource's ZIP (`.../files?format=zip`), streamed and unpacked on the fly with no
//! temporary zip on disk. An entry is written only where the plan says its file goes, so
//! entry names from the server never become paths.

use super::breaker::{Breaker, is_unreachable};
use super::plan::{PlannedFile, PlannedResource};
use super::transfer::{Ledger, Outcome};
use super::verified::TransferPolicy;
use crate::cache::PartialFile;
use crate::xnat::{XnatApi, XnatError};
use futures::TryStreamExt;
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::Path;
use tokio_util::sync::CancellationToken;

/// Streams a resource's ZIP and writes the entries the plan expects, telling `ledger` of each
/// as it is written. Returns the files it did not deliver intact (to be fetched file by
/// file). A ZIP that cannot be had, or that breaks off, is not an error of its own: its files
/// are fetched one by one, which retries them.
pub async fn zip_resource(
    api: &dyn XnatApi,
    r: &PlannedResource,
    tmp_dir: &Path,
    policy: &TransferPolicy,
    ledger: &Ledger,
    breaker: &Breaker,
) -> Vec<PlannedFile> {
    let wanted: HashMap<String, PlannedFile> = r
        .files
        .iter()
        .filter(|f| !f.present)
        .map(|f| (f.file.path.clone(), f.clone()))
        .collect();
    let download = match api.download_zip(&r.res).await {
        Ok(download) => download,
        Err(e) => {
            breaker.record(Err(is_unreachable(&e)));
            tracing::debug!(
                "ZIP of {} failed ({e}); fetching its files one by one",
                r.res.label_path()
            );
            return wanted.into_values().collect();
        }
    };
    breaker.record(Ok(()));
    let reader = tokio_util::io::StreamReader::new(
        download
            .body
            .map_err(|e: XnatError| std::io::Error::other(e.to_string())),
    );
    let bridge = tokio_util::io::SyncIoBridge::new(reader);
    let marker = format!("/resources/{}/files/", r.res.label);
    let tmp = tmp_dir.to_path_buf();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    let unzip = Unzip {
        marker,
        tmp_dir: tmp,
        private: policy.private,
        verify: policy.verify,
        events: tx,
        stop: breaker.token(),
    };
    let unpack = tokio::task::spawn_blocking(move || unzip.run(bridge, wanted));
    // Progress and finished files are reported from here, as the blocking thread sends them.
    let mut unpack = std::pin::pin!(unpack);
    let mut written = HashSet::new();
    let mut tell = |event: Event| match event {
        Event::Bytes(n) => ledger.bytes(n),
        Event::Written(file) => {
            written.insert(file.file.path.clone());
            ledger.done(Outcome {
                file,
                retried: false,
                result: Ok(()),
            })
        }
    };
    let joined = loop {
        tokio::select! {
            Some(event) = rx.recv() => tell(event),
            joined = &mut unpack => break joined,
        }
    };
    while let Ok(event) = rx.try_recv() {
        tell(event);
    }
    match joined {
        Ok(leftover) => leftover.into_values().collect(),
        Err(e) => {
            tracing::warn!("unpacking the ZIP of {} failed: {e}", r.res.label_path());
            r.files
                .iter()
                .filter(|f| !f.present && !written.contains(&f.file.path))
                .cloned()
                .collect()
        }
    }
}

/// What the unpacking thread tells.
enum Event {
    Bytes(u64),
    Written(PlannedFile),
}

/// Unpacking one ZIP stream on a blocking thread.
struct Unzip {
    /// Entries are keyed by their path after this (`/resources/<label>/files/`).
    marker: String,
    tmp_dir: std::path::PathBuf,
    private: bool,
    verify: crate::cache::Verify,
    events: tokio::sync::mpsc::UnboundedSender<Event>,
    /// The run is stopping: write nothing more.
    stop: CancellationToken,
}

impl Unzip {
    /// Reads ZIP entries from a stream, writing those whose path (after the marker) the plan
    /// wants. Returns the files still wanted.
    fn run<R: Read>(
        &self,
        mut reader: R,
        mut wanted: HashMap<String, PlannedFile>,
    ) -> HashMap<String, PlannedFile> {
        while !self.stop.is_cancelled() {
            let mut entry = match zip::read::read_zipfile_from_stream(&mut reader) {
                Ok(Some(entry)) => entry,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!("the ZIP stream broke off: {e}");
                    break;
                }
            };
            if entry.is_dir() {
                continue;
            }
            let name = String::from_utf8_lossy(entry.name_raw()).into_owned();
            let key = name
                .find(&self.marker)
                .map(|i| &name[i + self.marker.len()..]);
            let Some(planned) = key.and_then(|k| wanted.remove(k)) else {
                tracing::warn!("skipping unexpected ZIP entry {name:?}");
                if std::io::copy(&mut entry, &mut std::io::sink()).is_err() {
                    break;
                }
                continue;
            };
            let key = planned.file.path.clone();
            match self.write_entry(&mut entry, &planned) {
                Ok(()) => {
                    let _ = self.events.send(Event::Written(planned));
                }
                Err(EntryError::Bad(e)) => {
                    // A bad entry (short, wrong digest): fetch it again on its own.
                    tracing::debug!("ZIP entry {name:?}: {e}; fetching it on its own");
                    wanted.insert(key, planned);
                }
                Err(EntryError::Stream(e)) => {
                    tracing::debug!("the ZIP stream broke off in {name:?}: {e}");
                    wanted.insert(key, planned);
                    break;
                }
            }
        }
        wanted
    }
}

enum EntryError {
    /// The entry was read but is not the listed file.
    Bad(String),
    /// Reading failed: the rest of the stream is lost.
    Stream(String),
}

impl Unzip {
    fn write_entry<R: Read>(&self, entry: &mut R, planned: &PlannedFile) -> Result<(), EntryError> {
        let mut part = PartialFile::new_in(&self.tmp_dir, self.private)
            .map_err(|e| EntryError::Bad(e.to_string()))?
            .verifying(self.verify);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            if self.stop.is_cancelled() {
                return Err(EntryError::Stream("the prefetch is stopping".into()));
            }
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
            let _ = self.events.send(Event::Bytes(n as u64));
        }
        part.commit(&planned.file, &planned.dest)
            .map_err(|e| EntryError::Bad(e.to_string()))
    }
}
