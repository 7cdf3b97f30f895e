//! A prefetch's outcome as `--json` prints it: the plan (with `--dry-run`) or the result,
//! per session and in total, with every failure and skipped item. One JSON document on
//! stdout, whatever happened; its `exit_code` is the process's.

use super::ledger::Ending;
use super::ledger::Report;
use super::plan::{self, Plan, PlannedResource, Problem};
use serde::Serialize;
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

impl SessionSummary {
    /// The sessions of `resources` (a whole plan, or one session's part of it), in order.
    pub fn of(resources: &[PlannedResource]) -> Vec<SessionSummary> {
        let mut sessions: Vec<SessionSummary> = Vec::new();
        for r in resources {
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
            s.files += files;
            s.bytes += bytes;
            s.present_files += present;
            s.resources.push(ResourceSummary {
                scan: r.res.scan.clone(),
                scan_type: r.scan_type.clone().filter(|t| !t.is_empty()),
                label: r.res.label.clone(),
                files,
                bytes,
                present_files: present,
            });
        }
        sessions
    }
}

impl Summary {
    /// The summary of a whole `plan` (and, after transferring, of `report`).
    pub fn new(plan: &Plan, report: Option<&Report>, ending: Ending, secs: f64) -> Summary {
        Summary::assemble(
            SessionSummary::of(&plan.resources),
            plan.totals(),
            &plan.problems,
            &plan.notes,
            report,
            ending,
            secs,
        )
    }

    /// The summary of `sessions` (as [`SessionSummary::of`] made them, session by session or
    /// from a whole plan), the plan's totals, what it left out and noted, and the transfers'
    /// `report` (none for a dry run). A failed file counts against the session in its XNAT path.
    pub fn assemble(
        mut sessions: Vec<SessionSummary>,
        planned: plan::Totals,
        problems: &[Problem],
        notes: &[String],
        report: Option<&Report>,
        ending: Ending,
        secs: f64,
    ) -> Summary {
        let mut totals = Totals {
            files: planned.files,
            bytes: planned.bytes,
            present_files: planned.present_files,
            present_bytes: planned.present_bytes,
            skipped_items: problems.len() as u64,
            ..Totals::default()
        };
        let mut failed = Vec::new();
        if let Some(r) = report {
            totals.downloaded_files = r.downloaded_files;
            totals.downloaded_bytes = r.downloaded_bytes;
            totals.retried = r.retried;
            totals.failed_files = r.failed.len() as u64;
            for s in &mut sessions {
                let prefix = format!("/data/experiments/{}/", s.id);
                s.failed_files = r
                    .failed
                    .iter()
                    .filter(|f| f.uri.starts_with(&prefix))
                    .count() as u64;
            }
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
            skipped: problems
                .iter()
                .map(|p| Skipped {
                    item: p.item.clone(),
                    why: p.why.clone(),
                })
                .collect(),
            notes: notes.to_vec(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prefetch::ledger::Failure;
    use crate::prefetch::plan::PlannedFile;
    use crate::xnat::{RemoteFile, ResourceRef, Session};

    fn resource(session: &str, scan: Option<&str>, sizes: &[(u64, bool)]) -> PlannedResource {
        PlannedResource {
            session: Session {
                id: session.into(),
                label: format!("{session}_label"),
                project: "P".into(),
                xsi_type: "xnat:mrSessionData".into(),
                date: String::new(),
                subject_label: String::new(),
            },
            dir_name: format!("{session}_label"),
            scan_type: scan.map(|_| "T1w".into()),
            res: ResourceRef {
                session_id: session.into(),
                scan: scan.map(Into::into),
                assessor: None,
                label: "NIFTI".into(),
                id: "1".into(),
            },
            files: sizes
                .iter()
                .enumerate()
                .map(|(i, (size, present))| PlannedFile {
                    file: RemoteFile::new(
                        format!("f{i}"),
                        *size,
                        None,
                        &format!("/data/experiments/{session}/resources/1/files/f{i}"),
                    ),
                    dest: format!("/out/f{i}").into(),
                    present: *present,
                })
                .collect(),
        }
    }

    #[test]
    fn per_session_counts_and_failures_by_session() {
        let plan = Plan {
            resources: vec![
                resource("E1", Some("2"), &[(10, true), (20, false)]),
                resource("E1", None, &[(5, false)]),
                resource("E2", Some("1"), &[(7, false)]),
            ],
            problems: vec![Problem::new("E3", "cannot list")],
            notes: vec!["no scan 9 in E2".into()],
        };
        let dry = Summary::new(&plan, None, Ending::Partial, 0.1234);
        assert!(dry.dry_run);
        assert_eq!(dry.status, "partial");
        assert_eq!(dry.sessions.len(), 2);
        let e1 = &dry.sessions[0];
        assert_eq!((e1.files, e1.bytes, e1.present_files), (3, 35, 1));
        assert_eq!(e1.resources.len(), 2);
        assert_eq!(e1.resources[1].scan, None);
        assert_eq!((dry.totals.files, dry.totals.skipped_items), (4, 1));
        assert_eq!(dry.seconds, 0.123);
        let report = Report {
            downloaded_files: 2,
            downloaded_bytes: 25,
            failed: vec![Failure {
                uri: "/data/experiments/E2/resources/1/files/f0".into(),
                dest: "/out/f0".into(),
                why: "MD5 mismatch".into(),
            }],
            ..Report::default()
        };
        let done = Summary::new(&plan, Some(&report), Ending::Partial, 1.0);
        assert!(!done.dry_run);
        assert_eq!(
            (done.sessions[0].failed_files, done.sessions[1].failed_files),
            (0, 1)
        );
        assert_eq!(
            (done.totals.downloaded_files, done.totals.failed_files),
            (2, 1)
        );
        let json = serde_json::to_value(&done).unwrap();
        assert_eq!(json["failed"][0]["why"], "MD5 mismatch");
        assert!(json.get("error").is_none());
    }
}
