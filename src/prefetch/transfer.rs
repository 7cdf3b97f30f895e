//! Moving the planned files: one request per file over the client's connection pool, or a
//! resource's ZIP streamed and unpacked on the fly (no temporary zip on disk), `workers` jobs at
//! a time. Every file goes through a partial file and is verified (size, MD5 when listed)
//! before it takes its final name. A ZIP entry is written only where the plan says its file
//! goes, so entry names from the server never become paths.

use super::plan::{Destination, Plan, PlannedFile, PlannedResource};
use super::progress::Progress;
use crate::cache::{CommitError, PartialFile};
use crate::fetcher::{RetryPolicy, download_verified};
use crate::xnat::{XnatApi, XnatError};
use futures::{StreamExt, TryStreamExt};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How files are fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    /// ZIP per resource where it pays (many small files, all missing), else per file.
    Auto,
    /// One request per file.
    Files,
    /// One ZIP per resource (per-file requests for whatever the ZIP did not deliver).
    Zip,
}

/// Whether a resource is better fetched as one ZIP. From `scripts/bench-prefetch`: with
/// per-request latency, a ZIP saves a round trip per file, which dominates for small files;
/// for large files parallel per-file requests win, and a ZIP cannot resume part of a resource.
pub fn zip_pays(resource: &PlannedResource, missing: usize) -> bool {
    let n = resource.files.len();
    let bytes: u64 = resource.files.iter().map(|f| f.file.size).sum();
    missing == n && n >= ZIP_MIN_FILES && bytes / (n as u64).max(1) <= ZIP_MAX_MEAN_SIZE
}

pub const ZIP_MIN_FILES: usize = 16;
pub const ZIP_MAX_MEAN_SIZE: u64 = 4 << 20;

/// What a transfer did.
#[derive(Debug, Default)]
pub struct Report {
    pub downloaded_files: u64,
    pub downloaded_bytes: u64,
    pub skipped_files: u64,
    pub skipped_bytes: u64,
    /// Each failed file: its destination and why.
    pub failed: Vec<(PathBuf, String)>,
}

enum Job<'a> {
    File(&'a PlannedFile),
    Zip(&'a PlannedResource),
}

type Outcome = (PathBuf, u64, Result<(), String>);

pub async fn run(
    api: Arc<dyn XnatApi>,
    plan: &Plan,
    dest: &Destination,
    workers: usize,
    method: Method,
    policy: &RetryPolicy,
    progress: &Progress,
) -> Report {
    let mut report = Report::default();
    let mut jobs = Vec::new();
    for r in &plan.resources {
        let missing: Vec<&PlannedFile> = r.files.iter().filter(|f| !f.present).collect();
        report.skipped_files += (r.files.len() - missing.len()) as u64;
        report.skipped_bytes += r
            .files
            .iter()
            .filter(|f| f.present)
            .map(|f| f.file.size)
            .sum::<u64>();
        if missing.is_empty() {
            continue;
        }
        let zip = match method {
            Method::Files => false,
            Method::Zip => true,
            Method::Auto => zip_pays(r, missing.len()),
        };
        if zip {
            jobs.push(Job::Zip(r));
        } else {
            jobs.extend(missing.into_iter().map(Job::File));
        }
    }
    let tmp_dir = dest.tmp_dir();
    if let Err(e) = std::fs::create_dir_all(&tmp_dir) {
        for f in plan
            .resources
            .iter()
            .flat_map(|r| &r.files)
            .filter(|f| !f.present)
        {
            report.failed.push((
                f.dest.clone(),
                format!("cannot create {}: {e}", tmp_dir.display()),
            ));
        }
        return report;
    }
    let api = api.as_ref();
    let tmp = tmp_dir.as_path();
    let outcomes: Vec<Vec<Outcome>> = futures::stream::iter(jobs)
        .map(|job| async move {
            match job {
                Job::File(f) => vec![one_file(api, f, tmp, policy, progress).await],
                Job::Zip(r) => zip_resource(api, r, tmp, policy, progress).await,
            }
        })
        .buffer_unordered(workers.max(1))
        .collect()
        .await;
    for (path, size, result) in outcomes.into_iter().flatten() {
        match result {
            Ok(()) => {
                report.downloaded_files += 1;
                report.downloaded_bytes += size;
                if let Destination::Cache(cache) = dest {
                    cache.budget().added(&path, size);
                }
            }
            Err(e) => report.failed.push((path, e)),
        }
    }
    if let Destination::Cache(cache) = dest
        && let Err(e) = cache.budget().save()
    {
        tracing::warn!("cannot save the cache index: {e}");
    }
    if matches!(dest, Destination::Out { .. }) {
        // Only our own partial files live there; an empty folder is not worth leaving.
        let _ = std::fs::remove_dir(&tmp_dir);
    }
    report
}

async fn one_file(
    api: &dyn XnatApi,
    f: &PlannedFile,
    tmp_dir: &Path,
    policy: &RetryPolicy,
    progress: &Progress,
) -> Outcome {
    let result = download_verified(api, &f.file, &f.dest, tmp_dir, policy, &|n| {
        progress.add_bytes(n)
    })
    .await
    .map_err(|e| e.to_string());
    if result.is_ok() {
        progress.file_done();
    }
    (f.dest.clone(), f.file.size, result)
}

/// Streams a resource's ZIP and writes the entries the plan expects; whatever the ZIP did not
/// deliver intact is then fetched file by file.
async fn zip_resource(
    api: &dyn XnatApi,
    r: &PlannedResource,
    tmp_dir: &Path,
    policy: &RetryPolicy,
    progress: &Progress,
) -> Vec<Outcome> {
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
    for f in leftover.values() {
        outcomes.push(one_file(api, f, tmp_dir, policy, progress).await);
    }
    outcomes
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
        .map_err(|e| match e {
            CommitError::Verify(v) => EntryError::Bad(v.to_string()),
            CommitError::Io(io) => EntryError::Bad(io.to_string()),
        })
}
