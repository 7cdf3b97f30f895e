//! Moving the planned files: one request per file over the client's connection pool, or a
//! resource's ZIP streamed and unpacked on the fly (no temporary zip on disk), `workers` jobs
//! at a time, each a task of its own, started as sessions are planned. Every file goes through
//! a partial file and is verified (size, MD5 when listed) before it takes its final name. A ZIP entry is written only where the plan says its file
//! goes, so entry names from the server never become paths. When the server is taken for gone
//! ([`Breaker`]), no more jobs start and those under way are dropped.

use super::breaker::{Breaker, fetch_unreachable};
use super::destination::Destination;
use super::ledger::{Ledger, Outcome, Report};
use super::plan::{PlannedFile, PlannedResource};
use super::progress::Progress;
use super::verified::{TransferPolicy, download_verified};
use super::zip::zip_resource;
use crate::fetch::FetchError;
use crate::xnat::XnatApi;
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

/// One unit of work: a file, or a resource's ZIP. It holds its session's [`SessionMark`]:
/// when the last job of a session ends (or is dropped), the session is done.
pub struct Job {
    work: Work,
    _session: Arc<SessionMark>,
}

enum Work {
    File(PlannedFile),
    Zip(Box<PlannedResource>),
}

/// Tells the progress a session is done when the last of its jobs goes.
pub struct SessionMark(Arc<Progress>);

impl Drop for SessionMark {
    fn drop(&mut self) {
        self.0.session_done();
    }
}

/// What every job needs.
struct Context {
    api: Arc<dyn XnatApi>,
    tmp_dir: PathBuf,
    policy: TransferPolicy,
    ledger: Ledger,
    breaker: Arc<Breaker>,
}

/// The transfers of a run: jobs are handed in as sessions are planned, and each runs as a
/// task of its own (so that writing and hashing of different files use every core),
/// `workers` at a time. Dropped, it aborts the jobs under way (their partial files go with
/// them).
pub struct Transfers {
    ctx: Arc<Context>,
    method: Method,
    workers: Arc<tokio::sync::Semaphore>,
    tasks: tokio::task::JoinSet<()>,
    /// Jobs handed to a worker so far.
    pub started: u64,
}

impl Transfers {
    /// Transfers into `dest`, writing partial files in `tmp_dir`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        api: Arc<dyn XnatApi>,
        dest: &Destination,
        tmp_dir: &Path,
        workers: usize,
        method: Method,
        policy: &TransferPolicy,
        progress: Arc<Progress>,
        breaker: Arc<Breaker>,
    ) -> Transfers {
        let ledger = Ledger::new(progress, dest.clone());
        Transfers {
            ctx: Arc::new(Context {
                api,
                tmp_dir: tmp_dir.to_path_buf(),
                policy: policy.clone(),
                ledger,
                breaker,
            }),
            method,
            workers: Arc::new(tokio::sync::Semaphore::new(workers.max(1))),
            tasks: tokio::task::JoinSet::new(),
            started: 0,
        }
    }

    /// The jobs of one planned session: what is missing, per file or as a resource's ZIP
    /// where that pays. What is present is counted as such; the progress hears of the rest.
    pub fn jobs_of(&self, resources: Vec<PlannedResource>) -> Vec<Job> {
        let ledger = &self.ctx.ledger;
        let mark = Arc::new(SessionMark(ledger.progress.clone()));
        let mut jobs = Vec::new();
        let (mut files, mut bytes) = (0, 0);
        let mut report = ledger.report.lock().unwrap();
        for r in resources {
            let missing = r.files.iter().filter(|f| !f.present).count();
            for f in &r.files {
                if f.present {
                    report.skipped_files += 1;
                    report.skipped_bytes += f.file.size;
                } else {
                    files += 1;
                    bytes += f.file.size;
                }
            }
            if missing == 0 {
                continue;
            }
            let zip = match self.method {
                Method::Files => false,
                Method::Zip => true,
                Method::Auto => zip_pays(&r, missing),
            };
            let job = |work| Job {
                work,
                _session: mark.clone(),
            };
            if zip {
                jobs.push(job(Work::Zip(Box::new(r))));
            } else {
                let missing = r.files.into_iter().filter(|f| !f.present);
                jobs.extend(missing.map(|f| job(Work::File(f))));
            }
        }
        ledger.progress.planned(files, bytes);
        jobs
    }

    /// Starts `job` as soon as a worker is free (waiting for one: planning waits with it).
    /// Once the run is stopping, jobs are dropped unstarted.
    pub async fn start(&mut self, job: Job) {
        let ctx = self.ctx.clone();
        let permit = tokio::select! {
            permit = self.workers.clone().acquire_owned() => permit,
            _ = ctx.breaker.stopped() => return,
        };
        let Ok(permit) = permit else { return };
        while self.tasks.try_join_next().is_some() {}
        self.started += 1;
        self.tasks.spawn(async move {
            let _permit = permit;
            let _session = job._session;
            let c = &*ctx;
            let work = async {
                match &job.work {
                    Work::File(f) => one_file(c, f, false).await,
                    Work::Zip(r) => {
                        let (api, ledger) = (c.api.as_ref(), &c.ledger);
                        let leftover =
                            zip_resource(api, r, &c.tmp_dir, &c.policy, ledger, &c.breaker).await;
                        // Whatever the ZIP did not deliver intact is fetched file by file.
                        for f in &leftover {
                            one_file(c, f, true).await;
                        }
                    }
                }
            };
            tokio::select! {
                _ = c.breaker.stopped() => {}
                _ = work => {}
            }
        });
    }

    /// Waits for every job started, and tells what they did.
    pub async fn finish(mut self) -> Report {
        while self.tasks.join_next().await.is_some() {}
        if let Destination::Cache(cache) = &self.ctx.ledger.dest
            && let Err(e) = cache.save_index()
        {
            tracing::warn!("cannot save the cache index: {e}");
        }
        let mut report = self.ctx.ledger.report.lock().unwrap();
        report.unreachable = self.ctx.breaker.tripped();
        report.disk_full = self.ctx.breaker.full_disk();
        std::mem::take(&mut *report)
    }
}

async fn one_file(c: &Context, f: &PlannedFile, tried_before: bool) {
    let ledger = &c.ledger;
    // The bytes of attempts that failed made no file: given back, or the progress line showed
    // more bytes done than planned (field test, 20% faults).
    let result = download_verified(
        c.api.as_ref(),
        &f.file,
        &f.dest,
        &c.tmp_dir,
        &c.policy,
        &|n| ledger.bytes(n),
        &|n| ledger.bytes_back(n),
    )
    .await;
    c.breaker
        .record(result.as_ref().map(|_| ()).map_err(fetch_unreachable));
    if let Err(FetchError::DiskFull(why)) = &result {
        c.breaker.stop_for_full_disk(why);
    }
    ledger.done(Outcome {
        file: f.clone(),
        retried: tried_before || result.as_ref().is_ok_and(|&attempts| attempts > 1),
        result: result.map(|_| ()).map_err(|e| e.to_string()),
    });
}
