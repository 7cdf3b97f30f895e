//! Moving the planned files: one request per file over the client's connection pool, or a
//! resource's ZIP streamed and unpacked on the fly (no temporary zip on disk), `workers` jobs at
//! a time. Every file goes through a partial file and is verified (size, MD5 when listed)
//! before it takes its final name. A ZIP entry is written only where the plan says its file
//! goes, so entry names from the server never become paths.

use super::destination::Destination;
use super::plan::{Plan, PlannedFile, PlannedResource};
use super::progress::Progress;
use super::verified::{TransferPolicy, download_verified};
use super::zip::{Outcome, zip_resource};
use crate::xnat::XnatApi;
use futures::StreamExt;
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

pub async fn run(
    api: Arc<dyn XnatApi>,
    plan: &Plan,
    dest: &Destination,
    workers: usize,
    method: Method,
    policy: &TransferPolicy,
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
                Job::Zip(r) => {
                    let (mut done, leftover) = zip_resource(api, r, tmp, policy, progress).await;
                    // Whatever the ZIP did not deliver intact is fetched file by file.
                    for f in &leftover {
                        done.push(one_file(api, f, tmp, policy, progress).await);
                    }
                    done
                }
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
    policy: &TransferPolicy,
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
