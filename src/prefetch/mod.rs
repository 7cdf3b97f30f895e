//! `xnatfs prefetch`: downloads whole sessions, chosen scans or filtered resources in
//! parallel into the mount's cache or a plain folder, verifying every file; sessions are
//! planned from their listings while those planned before transfer ([`cohort`]). Re-runs
//! transfer only what is missing or wrong. `--shard I/N` takes one part of the sessions.

pub mod bids;
pub mod breaker;
pub mod cohort;
pub mod destination;
pub mod ledger;
pub mod options;
pub mod plan;
pub mod progress;
pub mod select;
pub mod shard;
pub mod summary;
pub mod transfer;
pub mod verified;
pub mod zip;
pub mod zip_stream;

use crate::units::{count, files, human_bytes, human_rate};
use crate::xnat::retry::PREFETCH_BODY_ATTEMPTS;
use crate::xnat::{Session, XnatApi, named_sessions};
use anyhow::{Context, Result, bail};
use breaker::{Breaker, Unreachable};
use destination::{Destination, RunTmp};
use futures::StreamExt;
use ledger::{Ending, Report};
pub use options::PrefetchOptions;
use plan::{Problem, Totals};
use progress::Progress;
use std::sync::Arc;
use std::time::Instant;
use verified::TransferPolicy;

/// How a prefetch ended, its summary for `--json`, and what to tell the user: the caller
/// (`cli/prefetch.rs`) prints it.
pub struct Outcome {
    pub ending: Ending,
    pub summary: summary::Summary,
    /// For standard error, in order: notes, what was left out and what failed (capped at
    /// [`LISTED_AT_MOST`]), the counts, and how the run ended.
    pub told: Vec<String>,
    /// For standard output: the plan of a dry run (none with `--json`).
    pub plan: Option<String>,
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
        let sessions = crate::xnat::check_project(api, project).await?;
        return Ok(sessions.into_iter().map(|s| (s.label.clone(), s)).collect());
    }
    let in_project = opts.project.as_deref().or(opts.default_project.as_deref());
    // Looked up several at a time (a cohort may be named session by session), in order.
    let mut found = futures::stream::iter(opts.sessions.chunks(1))
        .map(|name| named_sessions(api, in_project, name))
        .buffered(RESOLVED_AT_ONCE);
    let mut sessions = Vec::with_capacity(opts.sessions.len());
    while let Some(one) = found.next().await {
        sessions.extend(one?);
    }
    Ok(sessions)
}

/// `-E` names looked up at once.
const RESOLVED_AT_ONCE: usize = 16;

/// Lines of failures (and of notes) printed at most; the rest are counted.
pub const LISTED_AT_MOST: usize = 20;

/// Runs a prefetch, telling on stderr what failed or was left out and how it ended.
pub async fn run(api: Arc<dyn XnatApi>, opts: &PrefetchOptions) -> Result<Outcome> {
    let started = Instant::now();
    let mut sessions = resolve_sessions(api.as_ref(), opts).await?;
    // The BIDS view is of every session of the project (a clash of labels shows only among
    // all of them), whichever shard this run takes.
    let all_sessions = opts.bids.as_ref().map(|_| sessions.clone());
    if let Destination::Out { name: Some(_), .. } = &opts.destination
        && sessions.len() > 1
    {
        bail!(
            "--name renames one session; {} sessions were given",
            sessions.len()
        );
    }
    if let Some(shard) = opts.shard {
        let all = sessions.len();
        sessions.retain(|(_, s)| shard.contains(&s.id));
        if !opts.quiet {
            eprintln!(
                "shard {}/{}: {} of the {all} sessions",
                shard.index,
                shard.count,
                sessions.len()
            );
        }
    }
    if let Destination::Cache(_) = &opts.destination {
        // The listings above the sessions, so that a mount finds its way to them offline.
        let _ = api.projects().await;
        let mut projects: Vec<&str> = sessions.iter().map(|(_, s)| s.project.as_str()).collect();
        // The project given too: sessions shared into it are listed there, not only where
        // they are owned.
        projects.extend(opts.project.as_deref());
        projects.sort_unstable();
        projects.dedup();
        for p in projects {
            let _ = api.sessions(p).await;
        }
    }
    let breaker = Arc::new(Breaker::default());
    let mut ready = None;
    let mut bids_notes = Vec::new();
    if let (Some(bids), Some(all)) = (&opts.bids, &all_sessions) {
        let project = opts.project.as_deref().unwrap_or_default();
        let map = bids.map.as_ref();
        let (view, problems) = match bids::view_of(
            api.as_ref(),
            project,
            all,
            map,
            &bids.server_url,
            &breaker,
        )
        .await
        {
            Ok(v) => v,
            Err(e) => return unreachable_planning(e),
        };
        if view.unmapped > 0 {
            bids_notes.push(format!(
                "{} of the project's sessions are not in its BIDS view (code/xnatfs/unmapped.tsv of `mount --bids` or --out says why)",
                view.unmapped
            ));
        }
        let mut plans =
            bids::session_plans(&view, &sessions, &opts.destination, bids.metadata_only).await;
        // A session that could not be listed is a problem of its own plan (one a session of
        // this shard: another shard's run says its own).
        for (id, problem) in problems {
            if let Some(i) = sessions.iter().position(|(_, s)| s.id == id) {
                plans[i].problems.push(problem);
            }
        }
        if let Destination::Out { root, .. } = &opts.destination
            && !opts.dry_run
        {
            bids::write_made_files(&view, root)
                .with_context(|| format!("cannot write the BIDS files into {}", root.display()))?;
        }
        ready = Some(plans);
    }
    if opts.dry_run {
        if let Some(plans) = ready {
            return Ok(planned_dry_run(plans, bids_notes, opts, started));
        }
        return dry_run(api.as_ref(), &sessions, opts, &breaker, started).await;
    }
    let run_tmp = RunTmp::new(&opts.destination, breaker.token())?;
    let progress = Arc::new(Progress::new(
        sessions.len() as u64,
        opts.quiet || opts.json,
    ));
    let policy = TransferPolicy {
        attempts: PREFETCH_BODY_ATTEMPTS,
        stall_timeout: opts.io_timeout,
        copies: opts.destination.new_copies(opts.verify),
    };
    let done = cohort::prefetch(
        api.clone(),
        sessions,
        ready,
        opts,
        &policy,
        breaker.clone(),
        progress.clone(),
        run_tmp.path(),
    )
    .await;
    drop(run_tmp);
    progress.finish();
    let mut done = done?;
    done.notes.extend(bids_notes);
    let mut told = capped(done.notes.iter().map(|n| format!("note: {n}")));
    let out = matches!(opts.destination, Destination::Out { .. });
    let secs = started.elapsed().as_secs_f64();
    let ending = conclude(&done, out, secs, &mut told);
    let summary = summary::Summary::assemble(
        done.summaries,
        done.totals,
        &done.problems,
        &done.notes,
        Some(&done.report),
        ending,
        secs,
    );
    Ok(Outcome {
        ending,
        summary,
        told,
        plan: None,
    })
}

/// A server taken for gone while the plan was made: nothing transferred.
fn unreachable_planning(e: anyhow::Error) -> Result<Outcome> {
    let gone = e.downcast::<Unreachable>()?;
    let msg = format!("{gone} while planning; nothing transferred; run again to resume");
    Ok(Outcome {
        ending: Ending::Unreachable,
        summary: summary::Summary::ended(Ending::Unreachable.name(), Some(msg.clone())),
        told: vec![format!("xnatfs: {msg}")],
        plan: None,
    })
}

/// `--dry-run` of plans made already (a BIDS view's).
fn planned_dry_run(
    plans: Vec<plan::SessionPlan>,
    notes: Vec<String>,
    opts: &PrefetchOptions,
    started: Instant,
) -> Outcome {
    let mut plan = plan::Plan {
        notes,
        ..plan::Plan::default()
    };
    for one in plans {
        plan.resources.extend(one.resources);
        plan.problems.extend(one.problems);
    }
    let told = capped(plan.notes.iter().map(|n| format!("note: {n}")));
    let ending = if plan.problems.is_empty() {
        Ending::Complete
    } else {
        Ending::Partial
    };
    let described =
        (!opts.json).then(|| format!("{}dry run: nothing transferred\n", plan.describe()));
    let summary = summary::Summary::new(&plan, None, ending, started.elapsed().as_secs_f64());
    Outcome {
        ending,
        summary,
        told,
        plan: described,
    }
}

/// `--dry-run`: plans every session (in parallel) and prints the plan.
async fn dry_run(
    api: &dyn XnatApi,
    sessions: &[(String, Session)],
    opts: &PrefetchOptions,
    breaker: &Breaker,
    started: Instant,
) -> Result<Outcome> {
    let built = plan::build(
        api,
        sessions,
        &opts.selection,
        &opts.destination,
        opts.workers,
        breaker,
    )
    .await;
    let plan = match built {
        Ok(plan) => plan,
        Err(e) => match e.downcast::<Unreachable>() {
            Ok(gone) => {
                let msg =
                    format!("{gone} while planning; nothing transferred; run again to resume");
                return Ok(Outcome {
                    ending: Ending::Unreachable,
                    summary: summary::Summary::ended(Ending::Unreachable.name(), Some(msg.clone())),
                    told: vec![format!("xnatfs: {msg}")],
                    plan: None,
                });
            }
            Err(e) => return Err(e),
        },
    };
    let told = capped(plan.notes.iter().map(|n| format!("note: {n}")));
    let ending = if plan.problems.is_empty() {
        Ending::Complete
    } else {
        Ending::Partial
    };
    let described =
        (!opts.json).then(|| format!("{}dry run: nothing transferred\n", plan.describe()));
    let secs = started.elapsed().as_secs_f64();
    let summary = summary::Summary::new(&plan, None, ending, secs);
    Ok(Outcome {
        ending,
        summary,
        told,
        plan: described,
    })
}

/// How the run ended; adds to `told` what was left out and what failed (by XNAT path, and by
/// `--out` path when `out`), the counts, and how it ended.
fn conclude(done: &cohort::Outcome, out: bool, secs: f64, told: &mut Vec<String>) -> Ending {
    let (problems, report): (&[Problem], &Report) = (&done.problems, &done.report);
    let skipped = problems.iter().map(ToString::to_string);
    let failed = report.failed.iter().map(|f| match out {
        true => format!("failed: {} -> {}: {}", f.uri, f.dest.display(), f.why),
        false => format!("failed: {}: {}", f.uri, f.why),
    });
    told.extend(capped(skipped.chain(failed)));
    let sessions = match done.sessions {
        1 => String::new(),
        n => format!("{n} sessions: "),
    };
    told.push(format!(
        "prefetch: {sessions}{} ({}) downloaded, {} retried, {} ({}) already present, {} failed, {} skipped, in {secs:.1} s ({})",
        files(report.downloaded_files),
        human_bytes(report.downloaded_bytes),
        report.retried,
        files(report.skipped_files),
        human_bytes(report.skipped_bytes),
        report.failed.len(),
        problems.len(),
        human_rate(report.downloaded_bytes as f64 / secs.max(0.001))
    ));
    let Totals { files: total, .. } = done.totals;
    let present = report.downloaded_files + report.skipped_files;
    let left = total - present;
    let unplanned = done.sessions - done.planned;
    let ending = if report.unreachable || done.unreachable_planning.is_some() {
        Ending::Unreachable
    } else if left == 0 && problems.is_empty() {
        Ending::Complete
    } else if present == 0 {
        Ending::Failed
    } else {
        Ending::Partial
    };
    let said = match ending {
        Ending::Complete => None,
        Ending::Unreachable if unplanned > 0 && report.downloaded_files == 0 => Some(format!(
            "xnatfs: {} while planning; nothing transferred; run again to resume",
            done.unreachable_planning
                .as_deref()
                .unwrap_or("server unreachable")
        )),
        Ending::Unreachable if unplanned > 0 => Some(format!(
            "xnatfs: server unreachable; {left} of {total} files left, and {unplanned} of {} sessions not planned yet; run again to resume",
            done.sessions
        )),
        Ending::Unreachable => Some(format!(
            "xnatfs: server unreachable; {left} of {} left; run again to resume",
            files(total)
        )),
        Ending::Partial | Ending::Failed if let Some(why) = &report.disk_full => {
            let sessions = match unplanned {
                0 => String::new(),
                n => format!(", and {n} of {} sessions not planned yet", done.sessions),
            };
            Some(format!(
                "xnatfs: stopped: local disk full ({why}); {left} of {}{sessions} left; free some space and run again to resume",
                files(total)
            ))
        }
        Ending::Partial | Ending::Failed => Some(format!(
            "xnatfs: prefetch incomplete: {left} of {} left, {} skipped (listed above); run it again to retry them",
            files(total),
            count(problems.len() as u64, "item", "items")
        )),
    };
    told.extend(said);
    ending
}

/// `lines`, at most [`LISTED_AT_MOST`], then how many more there were.
fn capped(lines: impl Iterator<Item = String>) -> Vec<String> {
    let mut kept = Vec::new();
    let mut more = 0usize;
    for (i, line) in lines.enumerate() {
        if i < LISTED_AT_MOST {
            kept.push(line);
        } else {
            more += 1;
        }
    }
    if more > 0 {
        kept.push(format!("... and {more} more"));
    }
    kept
}
