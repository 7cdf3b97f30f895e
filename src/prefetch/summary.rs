//! A prefetch's outcome as `--json` prints it: the plan (with `--dry-run`) or the result,
//! per session and in total, with every failure and skipped item. One JSON document on
//! stdout, whatever happened; its `exit_code` is the process's.

use super::Ending;
use super::plan::Plan;
use super::transfer::Report;
use serde::Serialize;
use std::collections::HashSet;
use std::path::PathBuf;

#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub dry_run: bool,
    /// `complete`, `partial`, `failed`, `unreachable`, `interrupted` or `terminated`.
    pub status: String,
    pub exit_code: i32,
    /// What ended the run before it planned (an unknown session, a filter that matches
    /// nothing, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub sessions: Vec<SessionSummary>,
    pub totals: Totals,
    /// Files that could not be transferred.
    pub failed: Vec<Failed>,
    /// Sessions, scans, resources or files left out of the plan, and why.
    pub skipped: Vec<Skipped>,
    /// What the filters did not find in some sessions (not a failure).
    pub notes: Vec<String>,
    pub seconds: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct Totals {
    /// Planned files and their bytes.
    pub files: u64,
    pub bytes: u64,
    /// Already present and verified before the run.
    pub present_files: u64,
    pub present_bytes: u64,
    pub downloaded_files: u64,
    pub downloaded_bytes: u64,
    /// Files that arrived after more than one attempt.
    pub retried: u64,
    pub failed_files: u64,
    pub skipped_items: u64,
}

#[derive(Debug, Serialize)]
pub struct SessionSummary {
    pub id: String,
    pub label: String,
    pub project: String,
    /// Its folder under `--out` (or its name in the cache).
    pub dir: String,
    pub files: u64,
    pub bytes: u64,
    pub present_files: u64,
    pub failed_files: u64,
    pub resources: Vec<ResourceSummary>,
}

#[derive(Debug, Serialize)]
pub struct ResourceSummary {
    /// The scan's ID; null for a session resource.
    pub scan: Option<String>,
    pub scan_type: Option<String>,
    pub label: String,
    pub files: u64,
    pub bytes: u64,
    pub present_files: u64,
}

#[derive(Debug, Serialize)]
pub struct Failed {
    /// The XNAT path.
    pub uri: String,
    pub dest: PathBuf,
    pub why: String,
}

#[derive(Debug, Serialize)]
pub struct Skipped {
    pub item: String,
    pub why: String,
}

impl Ending {
    pub fn name(self) -> &'static str {
        match self {
            Ending::Complete => "complete",
            Ending::Partial => "partial",
            Ending::Failed => "failed",
            Ending::Unreachable => "unreachable",
        }
    }
}

impl Summary {
    /// The summary of `plan` (and, after transferring, of `report`).
    pub fn new(plan: &Plan, report: Option<&Report>, ending: Ending, secs: f64) -> Summary {
        let failed_uris: HashSet<&str> = report
            .map(|r| r.failed.iter().map(|f| f.uri.as_str()).collect())
            .unwrap_or_default();
        let mut sessions: Vec<SessionSummary> = Vec::new();
        for r in &plan.resources {
            if sessions.last().is_none_or(|s| s.id != r.session.id) {
                sessions.push(SessionSummary {
                    id: r.session.id.clone(),
                    label: r.session.label.clone(),
                    project: r.session.project.clone(),
                    dir: r.dir_name.clone(),
                    files: 0,
                    bytes: 0,
                    present_files: 0,
                    failed_files: 0,
                    resources: Vec::new(),
                });
            }
            let s = sessions.last_mut().expect("pushed above");
            let files = r.files.len() as u64;
            let bytes: u64 = r.files.iter().map(|f| f.file.size).sum();
            let present = r.files.iter().filter(|f| f.present).count() as u64;
            let failed = r
                .files
                .iter()
                .filter(|f| failed_uris.contains(f.file.uri.as_str()))
                .count() as u64;
            s.files += files;
            s.bytes += bytes;
            s.present_files += present;
            s.failed_files += failed;
            s.resources.push(ResourceSummary {
                scan: r.res.scan.clone(),
                scan_type: r.scan_type.clone().filter(|t| !t.is_empty()),
                label: r.res.label.clone(),
                files,
                bytes,
                present_files: present,
            });
        }
        let t = plan.totals();
        let mut totals = Totals {
            files: t.files,
            bytes: t.bytes,
            present_files: t.present_files,
            present_bytes: t.present_bytes,
            skipped_items: plan.problems.len() as u64,
            ..Totals::default()
        };
        let mut failed = Vec::new();
        if let Some(r) = report {
            totals.downloaded_files = r.downloaded_files;
            totals.downloaded_bytes = r.downloaded_bytes;
            totals.retried = r.retried;
            totals.failed_files = r.failed.len() as u64;
            failed = r
                .failed
                .iter()
                .map(|f| Failed {
                    uri: f.uri.clone(),
                    dest: f.dest.clone(),
                    why: f.why.clone(),
                })
                .collect();
        }
        Summary {
            dry_run: report.is_none(),
            status: ending.name().into(),
            sessions,
            totals,
            failed,
            skipped: plan
                .problems
                .iter()
                .map(|p| Skipped {
                    item: p.item.clone(),
                    why: p.why.clone(),
                })
                .collect(),
            notes: plan.notes.clone(),
            seconds: (secs * 1000.0).round() / 1000.0,
            ..Summary::default()
        }
    }

    /// A run that ended before it had a plan: `status` and the error.
    pub fn ended(status: &str, error: Option<String>) -> Summary {
        Summary {
            status: status.into(),
            error,
            ..Summary::default()
        }
    }
}
