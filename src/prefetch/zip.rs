//! A resource's ZIP (`.../files?format=zip`), streamed and unpacked on the fly with no
//! temporary zip on disk ([`super::zip_stream`]: STORED entries, and DEFLATED ones whose sizes
//! follow their data). An entry is written only where the plan says its file goes, so entry
//! names from the server never become paths. An entry's size is the archive's (its header or
//! data descriptor, checked with its CRC), not the listed one, which can be stale; the listed
//! digest, when there is one, decides.

use super::breaker::{Breaker, is_unreachable};
use super::ledger::{Ledger, Outcome};
use super::plan::{PlannedFile, PlannedResource};
use super::verified::TransferPolicy;
use super::zip_stream::{EntryError, ZipStream};
use crate::cache::md5_lanes::md5_many;
use crate::cache::{NewCopies, PartialFile, Verify};
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
    // Each ZIP writes its partial files in a folder of its own (removed with what is left in it
    // when the unpacking ends): files created and renamed by several threads in one folder
    // all wait on that folder's lock (ext4's i_rwsem spun hot in profiles of a prefetch).
    let own = tempfile::Builder::new()
        .prefix("zip-")
        .tempdir_in(tmp_dir)
        .ok();
    let tmp = own.as_ref().map_or(tmp_dir, |d| d.path()).to_path_buf();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    let unzip = Unzip {
        marker,
        tmp_dir: tmp,
        _own_tmp: own,
        copies: policy.copies.clone(),
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
    /// `tmp_dir` when it is this ZIP's own folder: removed once the unpacking is over.
    _own_tmp: Option<tempfile::TempDir>,
    copies: NewCopies,
    events: tokio::sync::mpsc::UnboundedSender<Event>,
    /// The run is stopping: write nothing more.
    stop: CancellationToken,
}

/// Entries of at most this size are hashed in batches ([`Batch`]); larger ones as they stream.
const BATCHED_ENTRY_MAX: u64 = 1 << 20;
/// A batch is hashed and committed once it holds this many files, or this many bytes.
const BATCH_FILES: usize = 16;
const BATCH_BYTES: usize = 4 << 20;

/// Small entries read whole (checked against the archive's CRC and size) and kept in memory,
/// waiting to be hashed together (eight or sixteen at once on one core:
/// [`crate::cache::md5_lanes`]); each is then written and committed. One DICOM series is
/// hundreds of files of a few hundred KiB, and hashing them one after another was most of a
/// prefetch's CPU. No file is open while an entry waits in a batch.
#[derive(Default)]
struct Batch {
    entries: Vec<(Vec<u8>, PlannedFile)>,
    bytes: usize,
}

impl Batch {
    fn full(&self) -> bool {
        self.entries.len() >= BATCH_FILES || self.bytes >= BATCH_BYTES
    }
}

impl Unzip {
    /// Reads ZIP entries from a stream, writing those whose path (after the marker) the plan
    /// wants. Returns the files still wanted.
    fn run<R: Read>(
        &self,
        reader: R,
        mut wanted: HashMap<String, PlannedFile>,
    ) -> HashMap<String, PlannedFile> {
        let mut zip = ZipStream::new(reader);
        let mut batch = Batch::default();
        while !self.stop.is_cancelled() {
            let entry = match zip.next_entry() {
                Ok(Some(entry)) => entry,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!("the ZIP stream broke off: {e}");
                    break;
                }
            };
            let name = String::from_utf8_lossy(&entry.name).into_owned();
            let key = name
                .find(&self.marker)
                .map(|i| &name[i + self.marker.len()..]);
            let Some(planned) = key.and_then(|k| wanted.remove(k)) else {
                if !name.ends_with('/') {
                    tracing::warn!("skipping unexpected ZIP entry {name:?}");
                }
                if let Err(EntryError::Stream(e)) = zip.read_data(&entry, |_| Ok(())) {
                    tracing::debug!("the ZIP stream broke off in {name:?}: {e}");
                    break;
                }
                continue;
            };
            if entry.method != 0 {
                tracing::debug!("ZIP entry {name:?} is compressed (method {})", entry.method);
            }
            let key = planned.file.path.clone();
            let batched = self.copies.verify() == Verify::Md5
                && planned.file.digest.is_some()
                && entry.size.is_some_and(|n| n <= BATCHED_ENTRY_MAX);
            let written = if batched {
                self.read_whole(&mut zip, &entry).map(|data| {
                    batch.bytes += data.len();
                    batch.entries.push((data, planned.clone()));
                    if batch.full() {
                        self.commit_batch(&mut batch, &mut wanted);
                    }
                })
            } else {
                self.write_entry(&mut zip, &entry, &planned).map(|()| {
                    let _ = self.events.send(Event::Written(planned.clone()));
                })
            };
            match written {
                Ok(()) => {}
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
        // What was read whole before the stream ended (or broke off) is still good.
        self.commit_batch(&mut batch, &mut wanted);
        wanted
    }

    /// Hashes the batch's entries together, then writes each to a partial file and commits it
    /// if its digest is right; the others are wanted again (fetched on their own). A stopping
    /// run commits nothing more.
    fn commit_batch(&self, batch: &mut Batch, wanted: &mut HashMap<String, PlannedFile>) {
        let entries = std::mem::take(&mut batch.entries);
        batch.bytes = 0;
        let bodies: Vec<&[u8]> = entries.iter().map(|(data, _)| data.as_slice()).collect();
        let digests = if self.stop.is_cancelled() {
            Vec::new()
        } else {
            md5_many(&bodies)
        };
        let mut digests = digests.into_iter();
        for (data, planned) in entries {
            let digest = digests.next().filter(|_| !self.stop.is_cancelled());
            let committed = digest
                .ok_or_else(|| "the prefetch is stopping".to_string())
                .and_then(|digest| {
                    let mut part = self
                        .copies
                        .begin_in(&self.tmp_dir)
                        .map_err(|e| e.to_string())?
                        .hashed_elsewhere();
                    part.write(&data).map_err(|e| e.to_string())?;
                    part.expect_size(data.len() as u64);
                    part.commit_hashed(&planned.file, &planned.dest, digest)
                        .map_err(|e| e.to_string())
                });
            match committed {
                Ok(()) => {
                    let _ = self.events.send(Event::Written(planned));
                }
                Err(e) => {
                    tracing::debug!(
                        "ZIP entry {}: {e}; fetching it on its own",
                        planned.file.path
                    );
                    wanted.insert(planned.file.path.clone(), planned);
                }
            }
        }
    }

    /// Writes the data of `entry` (the stream is just past its header) to a partial file, and
    /// gives it its final name once the archive's CRC and size and the listed digest agree.
    fn write_entry<R: Read>(
        &self,
        zip: &mut ZipStream<R>,
        entry: &super::zip_stream::Entry,
        planned: &PlannedFile,
    ) -> Result<(), EntryError> {
        let part = self.read_entry(zip, entry)?;
        part.commit(&planned.file, &planned.dest)
            .map_err(|e| EntryError::Bad(e.to_string()))
    }

    /// Reads the data of `entry` into a new partial file, checked against the archive's CRC
    /// and size.
    fn read_entry<R: Read>(
        &self,
        zip: &mut ZipStream<R>,
        entry: &super::zip_stream::Entry,
    ) -> Result<PartialFile, EntryError> {
        let mut part = self.copies.begin_in(&self.tmp_dir);
        let size = self.read_checked(zip, entry, |chunk| {
            let part = part
                .as_mut()
                .map_err(|e| std::io::Error::new(e.kind(), e.to_string()))?;
            part.write(chunk)
        })?;
        let mut part = part.map_err(|e| EntryError::Bad(e.to_string()))?;
        // The archive's size (checked with its CRC), not the listed one: see the module doc.
        part.expect_size(size);
        Ok(part)
    }

    /// Reads the data of a small `entry` whose header gives its size into memory, checked
    /// against the archive's CRC and size. Data past the header's size is refused as it comes
    /// (a damaged or hostile archive cannot make it grow past that).
    fn read_whole<R: Read>(
        &self,
        zip: &mut ZipStream<R>,
        entry: &super::zip_stream::Entry,
    ) -> Result<Vec<u8>, EntryError> {
        let most = entry.size.unwrap_or(0) as usize;
        let mut data = Vec::with_capacity(most);
        self.read_checked(zip, entry, |chunk| {
            if data.len() + chunk.len() > most {
                return Err(std::io::Error::other(
                    "the entry is longer than its header says",
                ));
            }
            data.extend_from_slice(chunk);
            Ok(())
        })?;
        Ok(data)
    }

    /// Reads the data of `entry` (the stream is just past its header) into `sink`, telling
    /// progress; the stream stays aligned on the next entry whatever the sink says.
    fn read_checked<R: Read>(
        &self,
        zip: &mut ZipStream<R>,
        entry: &super::zip_stream::Entry,
        mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<u64, EntryError> {
        // Progress is told a MiB at a time: each message wakes the task that reports it.
        let mut untold = 0u64;
        let size = zip.read_data(entry, |chunk| {
            if self.stop.is_cancelled() {
                return Err(std::io::Error::other("the prefetch is stopping"));
            }
            sink(chunk)?;
            untold += chunk.len() as u64;
            if untold >= 1 << 20 {
                let _ = self.events.send(Event::Bytes(std::mem::take(&mut untold)));
            }
            Ok(())
        });
        if untold > 0 {
            let _ = self.events.send(Event::Bytes(untold));
        }
        let size = size?;
        if self.stop.is_cancelled() {
            return Err(EntryError::Stream("the prefetch is stopping".into()));
        }
        Ok(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Cursor, Write};

    fn unzip(tmp: &Path) -> Unzip {
        Unzip {
            marker: "/files/".into(),
            tmp_dir: tmp.to_path_buf(),
            _own_tmp: None,
            copies: NewCopies::plain(Verify::Md5),
            events: tokio::sync::mpsc::unbounded_channel().0,
            stop: CancellationToken::new(),
        }
    }

    /// A STORED entry whose header says 100 bytes but whose data runs 5,000 is refused as it
    /// comes, before it is held whole, and the stream stays on the next entry.
    #[test]
    fn an_entry_longer_than_its_header_says_is_refused_and_not_held() {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        w.start_file("R/files/long.dcm", opts).unwrap();
        w.write_all(&[7u8; 5000]).unwrap();
        w.start_file("R/files/next.dcm", opts).unwrap();
        w.write_all(b"next").unwrap();
        let mut archive = w.finish().unwrap().into_inner();
        // The first local header's uncompressed size (offset 22) now says 100.
        archive[22..26].copy_from_slice(&100u32.to_le_bytes());
        let tmp = tempfile::tempdir().unwrap();
        let u = unzip(tmp.path());
        let mut zip = ZipStream::new(Cursor::new(archive));
        let first = zip.next_entry().unwrap().unwrap();
        assert_eq!(first.size, Some(100));
        assert!(matches!(
            u.read_whole(&mut zip, &first),
            Err(EntryError::Bad(_))
        ));
        let next = zip.next_entry().unwrap().unwrap();
        assert_eq!(u.read_whole(&mut zip, &next).unwrap(), b"next");
    }
}
