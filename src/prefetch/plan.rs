//! What a prefetch will transfer: the sessions, scans and resources chosen by the flags, every
//! file with its size, digest and destination, and which files are already there. A session,
//! scan, resource or file that cannot be listed or written safely is left out as a
//! [`Problem`], and the rest planned.

use super::breaker::{Breaker, Unreachable, is_unreachable};
use super::destination::{Destination, symlink_refused};
use super::select::{Seen, Selection, check_filters};
use crate::names::is_safe_component;
use crate::units::{files, human_bytes};
use crate::xnat::{self, RemoteFile, ResourceRef, Scan, Session, XnatApi};
use anyhow::Result;
use futures::StreamExt;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct PlannedFile {
    pub file: RemoteFile,
    pub dest: PathBuf,
    /// Already at `dest`, verified.
    pub present: bool,
}

#[derive(Debug, Clone)]
pub struct PlannedResource {
    pub session: Session,
    /// The session's folder name under `--out`.
    pub dir_name: String,
    /// The scan's type, for scan resources.
    pub scan_type: Option<String>,
    pub res: ResourceRef,
    pub files: Vec<PlannedFile>,
}

#[derive(Debug, Default, Clone)]
pub struct Plan {
    pub resources: Vec<PlannedResource>,
    /// Sessions, scans, resources and files left out, and why: a listing that failed, a
    /// name that cannot be written safely, a symlink in the way.
    pub problems: Vec<Problem>,
    /// What the filters did not find in some sessions (not a failure).
    pub notes: Vec<String>,
}

/// Something the plan had to leave out: its XNAT path, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub item: String,
    pub why: String,
}

impl Problem {
    pub fn new(item: impl Into<String>, why: impl std::fmt::Display) -> Problem {
        Problem {
            item: item.into(),
            why: why.to_string(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "skipped {}: {}", self.item, self.why)
    }
}

/// Totals of a plan.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub files: u64,
    pub bytes: u64,
    pub present_files: u64,
    pub present_bytes: u64,
}

impl Plan {
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for f in self.resources.iter().flat_map(|r| &r.files) {
            t.files += 1;
            t.bytes += f.file.size;
            if f.present {
                t.present_files += 1;
                t.present_bytes += f.file.size;
            }
        }
        t
    }

    /// The plan as `--dry-run` prints it.
    pub fn describe(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let mut last_session = String::new();
        for r in &self.resources {
            if r.session.id != last_session {
                let _ = writeln!(
                    out,
                    "session {} ({}, project {})",
                    r.session.label, r.session.id, r.session.project
                );
                last_session = r.session.id.clone();
            }
            let bytes: u64 = r.files.iter().map(|f| f.file.size).sum();
            let present = r.files.iter().filter(|f| f.present).count();
            let place = match (&r.res.scan, &r.scan_type) {
                (Some(s), Some(t)) if !t.is_empty() => format!("scan {s} ({t})"),
                (Some(s), _) => format!("scan {s}"),
                (None, _) => "session".to_string(),
            };
            let _ = writeln!(
                out,
                "  {place:<24} {:<12} {:>11} {:>12}  {} present",
                r.res.label,
                files(r.files.len() as u64),
                human_bytes(bytes),
                present
            );
        }
        let t = self.totals();
        let _ = writeln!(
            out,
            "total: {}, {}; already present: {}, {}; to transfer: {}, {}",
            files(t.files),
            human_bytes(t.bytes),
            files(t.present_files),
            human_bytes(t.present_bytes),
            files(t.files - t.present_files),
            human_bytes(t.bytes - t.present_bytes)
        );
        for p in &self.problems {
            let _ = writeln!(out, "{p}");
        }
        out
    }
}

/// Lists what `selection` takes from `sessions` and where each file goes. Listings run
/// `workers` at a time. A listing that fails, or a name that cannot be written safely, leaves
/// that item out (in [`Plan::problems`]); the rest is planned. Errors: a filter that matches
/// nothing, or a server that stops answering ([`Unreachable`], as `breaker` decides).
pub async fn build(
    api: &dyn XnatApi,
    sessions: &[(String, Session)],
    selection: &Selection,
    dest: &Destination,
    workers: usize,
    breaker: &Breaker,
) -> Result<Plan> {
    // A resource to list.
    struct Wanted {
        session: Session,
        dir_name: String,
        scan_type: Option<String>,
        res: ResourceRef,
    }
    let workers = workers.max(1);
    let mut plan = Plan::default();
    let mut wanted: Vec<Wanted> = Vec::new();
    let mut seen_all = Vec::new();
    let mut labels_known = true;
    for (dir_name, session) in sessions {
        let at = format!("/data/experiments/{}", session.id);
        if let Some(why) = dest.session_problem(dir_name, &session.id) {
            let item = format!("session {} ({at})", session.label);
            plan.problems.push(Problem::new(item, why));
            continue;
        }
        let scans = match heard(breaker, api.scans(session).await)? {
            Ok(scans) => scans,
            Err(e) => {
                plan.problems.push(Problem::new(format!("{at}/scans"), e));
                continue;
            }
        };
        let mut seen = Seen {
            session: session.label.clone(),
            scans: scans.iter().map(|s| s.id.clone()).collect(),
            labels: Vec::new(),
        };
        // Where resources are listed: each chosen scan, and the session itself when asked.
        let mut places: Vec<Option<&Scan>> = Vec::new();
        for scan in scans.iter().filter(|s| selection.scans.matches(&s.id)) {
            if is_safe_component(&scan.id) {
                places.push(Some(scan));
            } else {
                let why = format!("scan ID {:?} is not a usable folder name", scan.id);
                plan.problems.push(Problem::new(format!("{at}/scans"), why));
            }
        }
        if selection.session_resources {
            places.push(None);
        }
        let mut listings = futures::stream::iter(places)
            .map(|scan| async move {
                let listed = api
                    .resources(&session.id, scan.map(|s| s.id.as_str()))
                    .await;
                (scan, listed)
            })
            .buffered(workers);
        while let Some((scan, listed)) = listings.next().await {
            let resources = match heard(breaker, listed)? {
                Ok(resources) => resources,
                Err(e) => {
                    labels_known = false;
                    let item = match scan {
                        Some(s) => format!("{at}/scans/{}/resources", s.id),
                        None => format!("{at}/resources"),
                    };
                    plan.problems.push(Problem::new(item, e));
                    continue;
                }
            };
            for r in resources {
                seen.labels.push(r.label.clone());
                if !selection.wants_resource(&r.label) {
                    continue;
                }
                let res = ResourceRef::of(&session.id, scan.map(|s| s.id.as_str()), &r);
                if !is_safe_component(&res.label) {
                    let why = format!("resource label {:?} is not a usable folder name", res.label);
                    plan.problems.push(Problem::new(res.label_path(), why));
                    continue;
                }
                wanted.push(Wanted {
                    session: session.clone(),
                    dir_name: dir_name.clone(),
                    scan_type: scan.map(|s| s.scan_type.clone()),
                    res,
                });
            }
        }
        seen_all.push(seen);
    }
    plan.notes = check_filters(selection, &seen_all, labels_known)?;

    let mut listings = futures::stream::iter(wanted)
        .map(|w| async move {
            let files = api.files(&w.res).await;
            (w, files)
        })
        .buffered(workers);
    let mut dirs_seen = HashMap::new();
    let mut links_refused = HashSet::new();
    while let Some((w, files)) = listings.next().await {
        let files = match heard(breaker, files)? {
            Ok(files) => files,
            Err(e) => {
                let item = format!("{}/files", w.res.label_path());
                plan.problems.push(Problem::new(item, e));
                continue;
            }
        };
        let mut planned = Vec::with_capacity(files.len());
        for file in files {
            let Some(path) = dest.path_of(&w.dir_name, &w.res, &file.path) else {
                let item = format!("{}/files/{}", w.res.label_path(), file.path);
                plan.problems
                    .push(Problem::new(item, "not a usable file name"));
                continue;
            };
            if let Some(link) = dest.symlink_on_the_way(&path, &mut dirs_seen) {
                if links_refused.insert(link.clone()) {
                    let why = symlink_refused(&link);
                    plan.problems.push(Problem::new(w.res.label_path(), why));
                }
                continue;
            }
            planned.push(PlannedFile {
                file,
                dest: path,
                present: false,
            });
        }
        plan.resources.push(PlannedResource {
            session: w.session,
            dir_name: w.dir_name,
            scan_type: w.scan_type,
            res: w.res,
            files: planned,
        });
    }
    // What is already there: checked in parallel on blocking threads (it may hash files).
    let checks: Vec<(usize, usize)> = plan
        .resources
        .iter()
        .enumerate()
        .flat_map(|(i, r)| (0..r.files.len()).map(move |j| (i, j)))
        .collect();
    let present = futures::stream::iter(checks)
        .map(|(i, j)| {
            let f = plan.resources[i].files[j].clone();
            let dest = dest.clone();
            async move {
                let held = tokio::task::spawn_blocking(move || dest.holds(&f.file, &f.dest))
                    .await
                    .unwrap_or(false);
                (i, j, held)
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    for (i, j, held) in present {
        plan.resources[i].files[j].present = held;
    }
    Ok(plan)
}

/// Tells `breaker` how a listing went: the listing as it was, or [`Unreachable`] once so
/// many in a row could not reach the server.
fn heard<T>(breaker: &Breaker, listed: xnat::Result<T>) -> Result<xnat::Result<T>> {
    breaker.record(listed.as_ref().map(|_| ()).map_err(is_unreachable));
    match listed {
        Err(e) if breaker.tripped() => Err(Unreachable(e.to_string()).into()),
        listed => Ok(listed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::MemoryXnat;
    use crate::mock::data::{Dataset, SampleSpec};
    use crate::prefetch::select::ScanSelector;
    use crate::xnat::{Download, Project, Resource, XnatError};
    use async_trait::async_trait;

    /// The sample in memory, with listings that fail where a test says: the scans of one
    /// session, the resources of one scan, the files of one resource (with `err`).
    struct Failing {
        inner: MemoryXnat,
        /// Listings whose path (as in [`Problem::item`]) is here fail.
        fail: Vec<String>,
        err: XnatError,
    }

    impl Failing {
        fn check(&self, path: String) -> xnat::Result<()> {
            match self.fail.contains(&path) {
                true => Err(self.err.clone()),
                false => Ok(()),
            }
        }
    }

    #[async_trait]
    impl XnatApi for Failing {
        async fn projects(&self) -> xnat::Result<Vec<Project>> {
            self.inner.projects().await
        }
        async fn sessions(&self, project: &str) -> xnat::Result<Vec<Session>> {
            self.inner.sessions(project).await
        }
        async fn session(&self, project: Option<&str>, name: &str) -> xnat::Result<Session> {
            self.inner.session(project, name).await
        }
        async fn scans(&self, session: &Session) -> xnat::Result<Vec<Scan>> {
            self.check(format!("/data/experiments/{}/scans", session.id))?;
            self.inner.scans(session).await
        }
        async fn resources(&self, id: &str, scan: Option<&str>) -> xnat::Result<Vec<Resource>> {
            let path = match scan {
                Some(s) => format!("/data/experiments/{id}/scans/{s}/resources"),
                None => format!("/data/experiments/{id}/resources"),
            };
            self.check(path)?;
            self.inner.resources(id, scan).await
        }
        async fn files(&self, res: &ResourceRef) -> xnat::Result<Vec<RemoteFile>> {
            self.check(format!("{}/files", res.label_path()))?;
            self.inner.files(res).await
        }
        async fn download_range(
            &self,
            uri: &str,
            start: u64,
            end: Option<u64>,
        ) -> xnat::Result<Download> {
            self.inner.download_range(uri, start, end).await
        }
        async fn download_zip(&self, res: &ResourceRef) -> xnat::Result<Download> {
            self.inner.download_zip(res).await
        }
    }

    fn sample() -> Dataset {
        Dataset::sample(&SampleSpec {
            dicom_files: 2,
            dicom_size: 100,
            nifti_size: 100,
            scans: 3,
        })
    }

    fn everything() -> Selection {
        Selection {
            scans: ScanSelector::All,
            include: Vec::new(),
            exclude: Vec::new(),
            session_resources: true,
        }
    }

    async fn sessions(api: &dyn XnatApi, ids: &[&str]) -> Vec<(String, Session)> {
        let mut out = Vec::new();
        for id in ids {
            out.push((id.to_string(), api.session(None, id).await.unwrap()));
        }
        out
    }

    #[tokio::test]
    async fn a_failing_listing_leaves_out_its_item_and_the_rest_is_planned() {
        let fail = [
            "/data/experiments/XNAT_E00001/scans",
            "/data/experiments/XNAT_E00002/scans/2/resources",
            "/data/experiments/XNAT_E00002/resources/QC/files",
        ];
        let api = Failing {
            inner: MemoryXnat::new(sample()),
            fail: fail.iter().map(|s| s.to_string()).collect(),
            err: XnatError::Status {
                status: 500,
                path: "/x".into(),
            },
        };
        let dir = tempfile::tempdir().unwrap();
        let dest = Destination::Out {
            root: dir.path().to_path_buf(),
            name: None,
        };
        let sessions = sessions(&api, &["XNAT_E00001", "XNAT_E00002"]).await;
        let breaker = Breaker::default();
        let plan = build(&api, &sessions, &everything(), &dest, 4, &breaker)
            .await
            .unwrap();
        let items: Vec<&str> = plan.problems.iter().map(|p| p.item.as_str()).collect();
        assert_eq!(items, fail);
        assert!(plan.problems[0].why.contains("HTTP 500"));
        // The rest of XNAT_E00002: scans 1 and 3 (DICOM), its session resources but QC.
        let mut planned: Vec<String> = plan.resources.iter().map(|r| r.res.label_path()).collect();
        planned.sort();
        let mut want: Vec<String> = [
            "/data/experiments/XNAT_E00002/scans/1/resources/DICOM",
            "/data/experiments/XNAT_E00002/scans/3/resources/DICOM",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let session_res = api.inner.resources("XNAT_E00002", None).await.unwrap();
        want.extend(
            session_res
                .iter()
                .filter(|r| r.label != "QC")
                .map(|r| format!("/data/experiments/XNAT_E00002/resources/{}", r.label)),
        );
        want.sort();
        assert_eq!(planned, want);
        assert!(!breaker.tripped());
    }

    #[tokio::test]
    async fn listings_that_cannot_reach_the_server_stop_the_plan() {
        let api = Failing {
            inner: MemoryXnat::new(sample()),
            fail: ["XNAT_E00001", "XNAT_E00002", "XNAT_E00003", "XNAT_E00004"]
                .iter()
                .map(|id| format!("/data/experiments/{id}/scans"))
                .collect(),
            err: XnatError::Network {
                path: "/x".into(),
                msg: "Connection refused".into(),
            },
        };
        let dest = Destination::Out {
            root: PathBuf::from("/nonexistent"),
            name: None,
        };
        let ids = ["XNAT_E00001", "XNAT_E00002", "XNAT_E00003", "XNAT_E00004"];
        let sessions = sessions(&api, &ids).await;
        let breaker = Breaker::new(3);
        let e = build(&api, &sessions, &everything(), &dest, 4, &breaker)
            .await
            .unwrap_err();
        assert!(e.downcast_ref::<Unreachable>().is_some(), "{e}");
        assert!(breaker.tripped());
        // Fewer in a row than the limit: each is a problem, the plan goes on.
        let breaker = Breaker::new(5);
        let plan = build(&api, &sessions, &everything(), &dest, 4, &breaker)
            .await
            .unwrap();
        assert_eq!(plan.problems.len(), 4);
    }
}
