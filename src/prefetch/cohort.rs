//! A cohort's prefetch as a pipeline: sessions are planned in parallel (a bounded number at a
//! time, in whatever order their listings come back, so a slow session holds up no other) and
//! each session's transfers start as soon as it is planned, while the rest are still being
//! planned. Planning runs ahead of the transfers by a bounded number of sessions, so a cohort
//! of any size holds only a window of its plan in memory.
//!
//! Transfers wait only while a `-s`/`-r` item has matched in no session planned yet
//! ([`FilterGate`]): a filter that matches nothing anywhere stays an error before anything
//! is transferred. A session that cannot be planned is a problem of its own; the rest go on.

use super::breaker::{Breaker, Unreachable};
use super::ledger::Report;
use super::options::PrefetchOptions;
use super::plan::{Folded, Problem, SessionPlan, Totals, plan_concurrency, plan_session};
use super::progress::Progress;
use super::select::FilterGate;
use super::transfer::{Job, Transfers};
use super::verified::TransferPolicy;
use crate::xnat::{Session, XnatApi};
use anyhow::Result;
use futures::StreamExt;
use std::path::Path;
use std::sync::Arc;

/// Sessions planned but not yet handed to the transfers, at most (besides those held back
/// by the filters).
const PLANNED_AHEAD: usize = 64;

/// What a cohort's prefetch did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Items left out while planning, in the order they were found.
    pub problems: Vec<Problem>,
    /// What the filters did not find in some sessions.
    pub notes: Vec<String>,
    /// What was planned (files of sessions never planned are not in it).
    pub totals: Totals,
    pub report: Report,
    /// Sessions planned, of `sessions`.
    pub planned: usize,
    pub sessions: usize,
    /// The server was taken for gone while sessions were still being planned.
    pub unreachable_planning: Option<String>,
    /// What each planned session holds, for `--json`, in the order they were planned.
    pub summaries: Vec<super::summary::SessionSummary>,
}

/// Plans `sessions` (or takes their plans `ready`, one a session, made already) and transfers
/// what they hold into `opts.destination`, partial files in `tmp_dir`. Errors: a `-s`/`-r`
/// filter that matches in none of the sessions (then nothing was transferred).
#[allow(clippy::too_many_arguments)]
pub async fn prefetch(
    api: Arc<dyn XnatApi>,
    sessions: Vec<(String, Session)>,
    ready: Option<Vec<SessionPlan>>,
    opts: &PrefetchOptions,
    policy: &TransferPolicy,
    breaker: Arc<Breaker>,
    progress: Arc<Progress>,
    tmp_dir: &Path,
) -> Result<Outcome> {
    let mut outcome = Outcome {
        sessions: sessions.len(),
        ..Outcome::default()
    };
    let (tx, mut planned) = tokio::sync::mpsc::channel::<Result<SessionPlan>>(PLANNED_AHEAD);
    // Dropped on return (or with this future, on a signal), it stops the planning.
    let mut planner = tokio::task::JoinSet::new();
    {
        let api = api.clone();
        let selection = Arc::new(opts.selection.clone());
        let dest = Arc::new(opts.destination.clone());
        let breaker = breaker.clone();
        let at_once = plan_concurrency(opts.workers);
        planner.spawn(async move {
            if let Some(ready) = ready {
                for one in ready {
                    if tx.send(Ok(one)).await.is_err() {
                        break;
                    }
                }
                return;
            }
            let mut plans = futures::stream::iter(sessions)
                .map(move |(dir, s)| {
                    let (api, selection) = (api.clone(), selection.clone());
                    let (dest, breaker) = (dest.clone(), breaker.clone());
                    async move {
                        plan_session(api.as_ref(), &dir, &s, &selection, &dest, &breaker).await
                    }
                })
                .buffer_unordered(at_once);
            while let Some(one) = plans.next().await {
                let stop = one.is_err();
                if tx.send(one).await.is_err() || stop {
                    break;
                }
            }
        });
    }
    let mut transfers = Transfers::new(
        api,
        &opts.destination,
        tmp_dir,
        opts.workers,
        // A BIDS view's names are not all XNAT's: never from a resource's ZIP.
        match opts.bids {
            Some(_) => super::transfer::Method::Files,
            None => opts.method,
        },
        policy,
        progress,
        breaker.clone(),
    );
    let mut gate = FilterGate::new(&opts.selection);
    let mut held: Vec<Job> = Vec::new();
    let mut fold = Folded::default();
    while let Some(one) = planned.recv().await {
        let one = match one {
            Ok(one) => one,
            Err(e) => {
                let why = match e.downcast::<Unreachable>() {
                    Ok(gone) => gone.to_string(),
                    Err(e) => e.to_string(),
                };
                outcome.unreachable_planning = Some(why);
                break;
            }
        };
        outcome.planned += 1;
        if opts.json {
            let summaries = super::summary::SessionSummary::of(&one.resources);
            outcome.summaries.extend(summaries);
        }
        let open = gate.saw(&opts.selection, one.seen.as_ref());
        let jobs = transfers.jobs_of(fold.add(one));
        if open {
            for job in held.drain(..).chain(jobs) {
                transfers.start(job).await;
            }
        } else {
            held.extend(jobs);
        }
        if breaker.stopping() {
            break;
        }
    }
    drop(planned);
    planner.shutdown().await;
    if outcome.unreachable_planning.is_none() && !breaker.stopping() {
        match fold.filter_notes(&opts.selection) {
            Ok(notes) => outcome.notes = notes,
            // The gate held every transfer back: nothing was transferred.
            Err(e) if transfers.started == 0 => return Err(e),
            Err(e) => outcome.notes.push(e.to_string()),
        }
        for job in held {
            transfers.start(job).await;
        }
    }
    outcome.problems = fold.problems;
    outcome.totals = fold.totals;
    outcome.report = transfers.finish().await;
    Ok(outcome)
}

#[cfg(test)]
#[path = "cohort_tests.rs"]
mod tests;
