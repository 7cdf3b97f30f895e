//! Moving the planned files: one request per file over the client's connection pool, or a
//! resource's ZIP streamed and unpacked on the fly (no temporary zip on disk), `workers` jobs at
//! a time. Every file goes through a partial file and is verified (size, MD5 when listed)
//! before it takes its final name. A ZIP entry is written only where the plan says its file
//! goes, so entry names from the server never become paths. When the server is taken for gone
//! ([`Breaker`]), no more jobs start and those under way are dropped.

use super::breaker::{Breaker, fetch_unreachable};
use super::destination::Destination;
use super::plan::{Plan, PlannedFile, PlannedResource};
use super::progress::Progress;
use super::verified::{TransferPolicy, download_verified};
use super::zip::zip_resource;
use crate::xnat::XnatApi;
use futures::StreamExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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
    /// Files that arrived after more than one attempt.
    pub retried: u64,
    /// Each failed file, once.
    pub failed: Vec<Failure>,
    /// The server was taken for gone: the jobs left were not run.
    pub unreachable: bool,
}

/// A file that could not be transferred.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Its XNAT path (REST URI).
    pub uri: String,
    /// Where it was to go.
    pub dest: PathBuf,
    pub why: String,
}

/// What became of one file.
#[derive(Debug)]
pub struct Outcome {
    pub file: PlannedFile,
    /// It took more than one attempt (a retry, or a ZIP that did not deliver it).
    pub retried: bool,
    pub result: Result<(), String>,
}

/// Where jobs tell of bytes and of each file as it ends, so that a stopped run still counts
/// what it did.
pub struct Ledger<'a> {
    progress: &'a Progress,
    dest: &'a Destination,
    report: Mutex<Report>,
}

impl Ledger<'_> {
    pub fn bytes(&self, n: u64) {
        self.progress.add_bytes(n);
    }

    pub fn done(&self, o: Outcome) {
        let mut report = self.report.lock().unwrap();
        match o.result {
            Ok(()) => {
                self.progress.file_done();
                report.downloaded_files += 1;
                report.downloaded_bytes += o.file.file.size;
                report.retried += u64::from(o.retried);
                if let Destination::Cache(cache) = self.dest {
                    cache.budget().added(&o.file.dest, o.file.file.size);
                }
            }
            Err(why) => {
                // The line names the file already: say why without naming it again.
                let uri = o.file.file.uri;
                let why = why
                    .replace(&format!(" for {uri}"), "")
                    .replace(&format!(": {uri}"), "");
                report.failed.push(Failure {
                    uri,
                    dest: o.file.dest,
                    why,
                })
            }
        }
    }
}

enum Job<'a> {
    File(&'a PlannedFile),
    Zip(&'a PlannedResource),
}

/// Transfers what `plan` says is missing, writing partial files in `tmp_dir`.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    api: Arc<dyn XnatApi>,
    plan: &Plan,
    dest: &Destination,
    tmp_dir: &Path,
    workers: usize,
    method: Method,
    policy: &TransferPolicy,
    progress: &Progress,
    breaker: &Breaker,
) -> Report {
    let ledger = Ledger {
        progress,
        dest,
        report: Mutex::new(Report::default()),
    };
    let mut jobs = Vec::new();
    {
        let mut report = ledger.report.lock().unwrap();
        for r in &plan.resources {
            let missing: Vec<&PlannedFile> = r.files.iter().filter(|f| !f.present).collect();
            for f in r.files.iter().filter(|f| f.present) {
                report.skipped_files += 1;
                report.skipped_bytes += f.file.size;
            }
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
    }
    let api = api.as_ref();
    let ledger = &ledger;
    futures::stream::iter(jobs)
        .for_each_concurrent(workers.max(1), |job| async move {
            if breaker.stopping() {
                return;
            }
            let work = async {
                match job {
                    Job::File(f) => one_file(api, f, tmp_dir, policy, ledger, breaker, false).await,
                    Job::Zip(r) => {
                        let leftover = zip_resource(api, r, tmp_dir, policy, ledger, breaker).await;
                        // Whatever the ZIP did not deliver intact is fetched file by file.
                        for f in &leftover {
                            one_file(api, f, tmp_dir, policy, ledger, breaker, true).await;
                        }
                    }
                }
            };
            tokio::select! {
                _ = breaker.stopped() => {}
                _ = work => {}
            }
        })
        .await;
    if let Destination::Cache(cache) = dest
        && let Err(e) = cache.budget().save()
    {
        tracing::warn!("cannot save the cache index: {e}");
    }
    let mut report = ledger.report.lock().unwrap();
    report.unreachable = breaker.tripped();
    std::mem::take(&mut *report)
}

async fn one_file(
    api: &dyn XnatApi,
    f: &PlannedFile,
    tmp_dir: &Path,
    policy: &TransferPolicy,
    ledger: &Ledger<'_>,
    breaker: &Breaker,
    tried_before: bool,
) {
    let result =
        download_verified(api, &f.file, &f.dest, tmp_dir, policy, &|n| ledger.bytes(n)).await;
    breaker.record(result.as_ref().map(|_| ()).map_err(fetch_unreachable));
    ledger.done(Outcome {
        file: f.clone(),
        retried: tried_before || result.as_ref().is_ok_and(|&attempts| attempts > 1),
        result: result.map(|_| ()).map_err(|e| e.to_string()),
    });
}
