//! `xnatfs prefetch`: plans from the listings, then downloads whole sessions, chosen scans or
//! filtered resources in parallel into the mount's cache or a plain folder, verifying every
//! file. Re-runs transfer only what is missing or wrong.

pub mod breaker;
pub mod destination;
pub mod plan;
pub mod progress;
pub mod select;
pub mod transfer;
pub mod verified;
pub mod zip;

use crate::units::human_bytes;
use crate::xnat::retry::PREFETCH_BODY_ATTEMPTS;
use crate::xnat::{Session, XnatApi, named_sessions, unknown};
use anyhow::{Result, bail};
use breaker::{Breaker, Unreachable};
use destination::Destination;
use progress::Progress;
use select::Selection;
use std::sync::Arc;
use std::time::{Duration, Instant};
use transfer::Method;
use verified::TransferPolicy;

pub struct PrefetchOptions {
    /// `-E`: accession IDs, or labels in `project`.
    pub sessions: Vec<String>,
    /// `-P`.
    pub project: Option<String>,
    /// The profile's default project, for labels when `-P` is not given.
    pub default_project: Option<String>,
    pub selection: Selection,
    pub destination: Destination,
    pub workers: usize,
    pub method: Method,
    pub dry_run: bool,
    pub io_timeout: Duration,
    /// No progress output (summary and failures are still printed).
    pub quiet: bool,
}

/// The sessions named by `-E`, each with the name it was given (its folder under `--out`, as
/// xnatctl names it), or every session of `-P`, named by label.
pub async fn resolve_sessions(
    api: &dyn XnatApi,
    opts: &PrefetchOptions,
) -> Result<Vec<(String, Session)>> {
    if opts.sessions.is_empty() {
        let Some(project) = &opts.project else {
            bail!(
                "say what to prefetch: -E SESSION (repeatable), or -P PROJECT for all its sessions"
            );
        };
        let sessions = api.sessions(project).await.map_err(unknown)?;
        return Ok(sessions.into_iter().map(|s| (s.label.clone(), s)).collect());
    }
    let in_project = opts.project.as_deref().or(opts.default_project.as_deref());
    named_sessions(api, in_project, &opts.sessions).await
}

/// Runs a prefetch. `Ok(true)` when every planned file is present and verified.
pub async fn run(api: Arc<dyn XnatApi>, opts: &PrefetchOptions) -> Result<bool> {
    let started = Instant::now();
    let sessions = resolve_sessions(api.as_ref(), opts).await?;
    if let Destination::Cache(_) = &opts.destination {
        // The listings above the sessions, so that a mount finds its way to them offline.
        let _ = api.projects().await;
        let mut projects: Vec<&str> = sessions.iter().map(|(_, s)| s.project.as_str()).collect();
        projects.dedup();
        for p in projects {
            let _ = api.sessions(p).await;
        }
    }
    if let Destination::Out { name: Some(_), .. } = &opts.destination
        && sessions.len() > 1
    {
        bail!(
            "--name renames one session; {} sessions were given",
            sessions.len()
        );
    }
    let breaker = Breaker::default();
    let built = plan::build(
        api.as_ref(),
        &sessions,
        &opts.selection,
        &opts.destination,
        opts.workers,
        &breaker,
    )
    .await;
    let plan = match built {
        Ok(plan) => plan,
        Err(e) => match e.downcast::<Unreachable>() {
            Ok(gone) => bail!("{gone} while planning; nothing transferred; run again to resume"),
            Err(e) => return Err(e),
        },
    };
    for n in &plan.notes {
        eprintln!("note: {n}");
    }
    let totals = plan.totals();
    if opts.dry_run {
        print!("{}", plan.describe());
        println!("dry run: nothing transferred");
        return Ok(plan.problems.is_empty());
    }
    let to_files = totals.files - totals.present_files;
    let to_bytes = totals.bytes - totals.present_bytes;
    let progress = Progress::new(to_files, to_bytes, opts.quiet);
    let policy = TransferPolicy {
        attempts: PREFETCH_BODY_ATTEMPTS,
        stall_timeout: opts.io_timeout,
        private: matches!(opts.destination, Destination::Cache(_)),
    };
    let report = transfer::run(
        api.clone(),
        &plan,
        &opts.destination,
        opts.workers,
        opts.method,
        &policy,
        &progress,
    )
    .await;
    progress.finish();
    let secs = started.elapsed().as_secs_f64();
    for (path, why) in &report.failed {
        eprintln!("failed: {}: {why}", path.display());
    }
    for p in &plan.problems {
        eprintln!("{p}");
    }
    let failed = report.failed.len() + plan.problems.len();
    eprintln!(
        "prefetch: {} files ({}) downloaded, {} files ({}) already present, {} failed, in {:.1} s ({:.1} MB/s)",
        report.downloaded_files,
        human_bytes(report.downloaded_bytes),
        report.skipped_files,
        human_bytes(report.skipped_bytes),
        failed,
        secs,
        report.downloaded_bytes as f64 / secs.max(0.001) / 1e6
    );
    Ok(failed == 0 && report.downloaded_files + report.skipped_files == totals.files)
}
