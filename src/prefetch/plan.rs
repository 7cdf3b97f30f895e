//! What a prefetch will transfer: the sessions, scans and resources chosen by the flags, every
//! file with its size, digest and destination, and which files are already there. A session,
//! scan, resource or file that cannot be listed or written safely is left out as a
//! [`Problem`], and the rest planned.
//!
//! Each session is planned on its own ([`plan_session`]) from its whole tree of listings
//! ([`XnatApi::session_tree`], a couple of requests), so that a cohort's sessions are planned
//! in parallel and transfers start as each one is planned. Where the tree cannot be had, the
//! session is listed folder by folder, so that one failing listing leaves out only its item.

use super::breaker::{Breaker, Unreachable, is_unreachable};
use super::destination::{Destination, symlink_refused};
use super::select::{Seen, Selection, check_filters};
use crate::names::is_safe_component;
use crate::units::{files, human_bytes};
use crate::xnat::walk::{Listing, WalkPolicy, walk_session};
use crate::xnat::{self, RemoteFile, Resource, ResourceRef, Scan, Session, XnatApi};
use anyhow::Result;
use futures::StreamExt;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

mod assessors;

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
            t.add(f);
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
                (None, _) => match &r.res.assessor {
                    Some(a) => format!("{} {}", a.kind.noun(), a.label),
                    None => "session".to_string(),
                },
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

/// Sessions planned at once: listings are small and mostly waiting on the server, so more
/// of them run than transfers (`workers`); bounded so a cohort of thousands does not flood
/// the server.
pub fn plan_concurrency(workers: usize) -> usize {
    (2 * workers).clamp(16, 32)
}

/// One session's part of a plan.
#[derive(Debug, Default)]
pub struct SessionPlan {
    pub resources: Vec<PlannedResource>,
    pub problems: Vec<Problem>,
    /// What the session holds, for the filters' messages; `None` when its scans could not
    /// be listed (or it cannot be written at all).
    pub seen: Option<Seen>,
    /// False when a resources listing of it failed (a label may exist unseen).
    pub labels_known: bool,
}

impl SessionPlan {
    /// Files and bytes planned, and those of them already present.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for f in self.resources.iter().flat_map(|r| &r.files) {
            t.add(f);
        }
        t
    }
}

impl Totals {
    fn add(&mut self, f: &PlannedFile) {
        self.files += 1;
        self.bytes += f.file.size;
        if f.present {
            self.present_files += 1;
            self.present_bytes += f.file.size;
        }
    }

    pub fn merge(&mut self, o: Totals) {
        self.files += o.files;
        self.bytes += o.bytes;
        self.present_files += o.present_files;
        self.present_bytes += o.present_bytes;
    }
}

/// Lists what `selection` takes from `sessions` and where each file goes, planning
/// [`plan_concurrency`] sessions at a time (the plan keeps the sessions' order), for
/// `--dry-run`. Errors: a
/// filter that matches nothing, or a server that stops answering ([`Unreachable`], as
/// `breaker` decides).
pub async fn build(
    api: &dyn XnatApi,
    sessions: &[(String, Session)],
    selection: &Selection,
    dest: &Destination,
    workers: usize,
    breaker: &Breaker,
) -> Result<Plan> {
    // In whatever order they finish (a slow session holds up no other), then in order.
    let mut planned = futures::stream::iter(sessions.iter().enumerate())
        .map(|(i, (dir_name, session))| async move {
            (
                i,
                plan_session(api, dir_name, session, selection, dest, breaker).await,
            )
        })
        .buffer_unordered(plan_concurrency(workers));
    let mut done: Vec<Option<SessionPlan>> = Vec::new();
    done.resize_with(sessions.len(), || None);
    while let Some((i, one)) = planned.next().await {
        done[i] = Some(one?);
    }
    let mut plan = Plan::default();
    let mut fold = Folded::default();
    for one in done.into_iter().flatten() {
        plan.resources.extend(fold.add(one));
    }
    plan.notes = fold.filter_notes(selection)?;
    plan.problems = fold.problems;
    Ok(plan)
}

/// Sessions' plans added up as they come, for a dry run's whole plan ([`build`]) and a
/// cohort's pipeline alike: their problems and totals, and what they hold, for the filters'
/// messages.
#[derive(Debug)]
pub struct Folded {
    /// Items left out, in the order their sessions came.
    pub problems: Vec<Problem>,
    pub totals: Totals,
    seen: Vec<Seen>,
    labels_known: bool,
}

impl Default for Folded {
    fn default() -> Self {
        Folded {
            problems: Vec::new(),
            totals: Totals::default(),
            seen: Vec::new(),
            labels_known: true,
        }
    }
}

impl Folded {
    /// Adds one session's plan, and gives back its resources (to plan or to transfer).
    pub fn add(&mut self, one: SessionPlan) -> Vec<PlannedResource> {
        self.totals.merge(one.totals());
        self.problems.extend(one.problems);
        self.seen.extend(one.seen);
        self.labels_known &= one.labels_known;
        one.resources
    }

    /// What the filters found in some sessions only (notes); an error for one that matched
    /// in none of the sessions added (see [`check_filters`]).
    pub fn filter_notes(&self, selection: &Selection) -> Result<Vec<String>> {
        check_filters(selection, &self.seen, self.labels_known)
    }
}

/// Plans one session (shown as `dir_name` under `--out`): from its whole tree when it can be
/// had, else folder by folder. What cannot be listed or written safely is left out as a
/// problem. Errors: only a server taken for gone ([`Unreachable`]).
pub async fn plan_session(
    api: &dyn XnatApi,
    dir_name: &str,
    session: &Session,
    selection: &Selection,
    dest: &Destination,
    breaker: &Breaker,
) -> Result<SessionPlan> {
    let at = format!("/data/experiments/{}", session.id);
    let mut planner = Planner {
        session,
        dir_name,
        selection,
        dest,
        plan: SessionPlan {
            labels_known: true,
            ..SessionPlan::default()
        },
        dirs_seen: HashMap::new(),
        links_refused: HashSet::new(),
    };
    if let Some(why) = dest.session_problem(dir_name, &session.id) {
        let item = format!("session {} ({at})", session.label);
        planner.plan.problems.push(Problem::new(item, why));
        return Ok(planner.plan);
    }
    match api.session_tree(session).await {
        Ok(tree) => {
            breaker.record(Ok(()));
            planner.plan_tree(tree);
        }
        // The server is not there: listing folder by folder would not fare better.
        Err(e) if is_unreachable(&e) => {
            heard(breaker, Err(&e))?;
            planner.plan.problems.push(Problem::new(at, e));
            return Ok(planner.plan);
        }
        // The server answered no to some listing: find which, leaving out just its item.
        Err(e) => {
            tracing::debug!("the tree of {at} failed ({e}); listing it folder by folder");
            let derived = selection.derived();
            let mut walk = PlanWalk {
                planner: &mut planner,
                breaker,
            };
            match walk_session(api, session, &derived, &mut walk).await {
                Ok(tree) => planner.plan_tree(tree),
                // A problem already: the session is left out.
                Err(e) if e.is::<ScansUnlisted>() => {}
                Err(e) => return Err(e),
            }
        }
    }
    let mut plan = planner.plan;
    mark_present(&mut plan.resources, dest).await;
    Ok(plan)
}

/// What one session's planning has found so far.
struct Planner<'a> {
    session: &'a Session,
    dir_name: &'a str,
    selection: &'a Selection,
    dest: &'a Destination,
    plan: SessionPlan,
    /// Folders looked at for symlinks, and the symlinks refused (each told once).
    dirs_seen: HashMap<PathBuf, bool>,
    links_refused: HashSet<PathBuf>,
}

impl Planner<'_> {
    fn at(&self) -> String {
        format!("/data/experiments/{}", self.session.id)
    }

    fn seen(&self, scans: &[&Scan]) -> Seen {
        Seen {
            session: self.session.label.clone(),
            scans: scans.iter().map(|s| s.id.clone()).collect(),
            labels: Vec::new(),
        }
    }

    /// Whether the chosen `scan` can be a folder (else it is a problem).
    fn usable_scan(&mut self, scan: &Scan) -> bool {
        if is_safe_component(&scan.id) {
            return true;
        }
        let why = format!("scan ID {:?} is not a usable folder name", scan.id);
        let item = format!("{}/scans", self.at());
        self.plan.problems.push(Problem::new(item, why));
        false
    }

    /// The resource `r` of the session (of its `scan`, if given) when the filters take it
    /// and its label can be a folder; its label is seen either way.
    fn wanted(
        &mut self,
        scan: Option<&Scan>,
        r: &Resource,
        seen: &mut Seen,
    ) -> Option<ResourceRef> {
        seen.labels.push(r.label.clone());
        if !self.selection.wants_resource(&r.label) {
            return None;
        }
        let res = ResourceRef::of(&self.session.id, scan.map(|s| s.id.as_str()), r);
        if !is_safe_component(&res.label) {
            let why = format!("resource label {:?} is not a usable folder name", res.label);
            self.plan.problems.push(Problem::new(res.label_path(), why));
            return None;
        }
        Some(res)
    }

    /// Plans the files of a wanted resource.
    fn add(&mut self, scan: Option<&Scan>, res: ResourceRef, files: Vec<RemoteFile>) {
        let mut planned = Vec::with_capacity(files.len());
        for file in files {
            let Some(path) = self.dest.path_of(self.dir_name, &res, &file.path) else {
                let item = format!("{}/files/{}", res.label_path(), file.path);
                self.plan
                    .problems
                    .push(Problem::new(item, "not a usable file name"));
                continue;
            };
            if let Some(link) = self.dest.symlink_on_the_way(&path, &mut self.dirs_seen) {
                if self.links_refused.insert(link.clone()) {
                    let why = symlink_refused(&link);
                    self.plan.problems.push(Problem::new(res.label_path(), why));
                }
                continue;
            }
            planned.push(PlannedFile {
                file,
                dest: path,
                present: false,
            });
        }
        self.plan.resources.push(PlannedResource {
            session: self.session.clone(),
            dir_name: self.dir_name.to_string(),
            scan_type: scan.map(|s| s.scan_type.clone()),
            res,
            files: planned,
        });
    }

    /// Plans a wanted resource of a session's tree; one whose files could not be listed is
    /// a problem of its own, and the rest of the session is planned.
    fn add_listed(&mut self, scan: Option<&Scan>, res: ResourceRef, rt: &xnat::ResourceTree) {
        match &rt.unreadable {
            Some(why) => {
                let item = format!("{}/files", res.label_path());
                self.plan.problems.push(Problem::new(item, why));
            }
            None => self.add(scan, res, rt.files.clone()),
        }
    }

    fn plan_tree(&mut self, tree: xnat::SessionTree) {
        let scans: Vec<&Scan> = tree.scans.iter().map(|s| &s.scan).collect();
        let mut seen = self.seen(&scans);
        for st in &tree.scans {
            if !self.selection.scans.matches(&st.scan.id) || !self.usable_scan(&st.scan) {
                continue;
            }
            for rt in &st.resources {
                if let Some(res) = self.wanted(Some(&st.scan), &rt.resource, &mut seen) {
                    self.add_listed(Some(&st.scan), res, rt);
                }
            }
        }
        if self.selection.session_resources {
            for rt in &tree.resources {
                if let Some(res) = self.wanted(None, &rt.resource, &mut seen) {
                    self.add_listed(None, res, rt);
                }
            }
        }
        let derived = self.selection.derived();
        let asked = tree.assessors.iter();
        for at in asked.filter(|at| derived.contains(&at.assessor.kind)) {
            if !self.usable_assessor(&at.assessor) {
                continue;
            }
            for rt in &at.resources {
                if let Some(res) = self.wanted_of_assessor(&at.assessor, &rt.resource, &mut seen) {
                    self.add_listed(None, res, rt);
                }
            }
        }
        self.plan.seen = Some(seen);
    }
}

/// The planner's walk of a session, listing by listing ([`xnat::walk`]): what the filters
/// choose is listed; a listing that fails leaves out its item as a problem of its own (a
/// resource whose files cannot be listed is kept unreadable, and [`Planner::plan_tree`] makes
/// it one), but for the session's scans, whose failure leaves out the session
/// ([`ScansUnlisted`]); a server taken for gone ends the walk ([`Unreachable`]).
struct PlanWalk<'p, 'a> {
    planner: &'p mut Planner<'a>,
    breaker: &'p Breaker,
}

/// The walk of a session whose scans could not be listed ends: the session is a problem, and
/// what it holds is not known.
#[derive(Debug)]
struct ScansUnlisted;

impl std::fmt::Display for ScansUnlisted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the session's scans could not be listed")
    }
}

impl std::error::Error for ScansUnlisted {}

impl WalkPolicy for PlanWalk<'_, '_> {
    type Error = anyhow::Error;

    fn lists_resources_of(&mut self, scan: &Scan) -> bool {
        self.planner.selection.scans.matches(&scan.id) && is_safe_component(&scan.id)
    }

    fn lists_session_resources(&self) -> bool {
        self.planner.selection.session_resources
    }

    fn lists_files_of(&mut self, res: &ResourceRef) -> bool {
        self.planner.selection.wants_resource(&res.label) && is_safe_component(&res.label)
    }

    fn lists_derived(&mut self, a: &xnat::Assessor) -> bool {
        self.planner.usable_assessor(a)
    }

    fn heard(&mut self, listing: Listing<'_>, outcome: Result<(), &xnat::XnatError>) -> Result<()> {
        heard(self.breaker, outcome)?;
        let Err(e) = outcome else { return Ok(()) };
        let at = self.planner.at();
        let item = match listing {
            Listing::Scans => {
                let item = format!("{at}/scans");
                self.planner.plan.problems.push(Problem::new(item, e));
                return Err(ScansUnlisted.into());
            }
            Listing::Resources(scan) => {
                self.planner.plan.labels_known = false;
                match scan {
                    Some(s) => format!("{at}/scans/{}/resources", s.id),
                    None => format!("{at}/resources"),
                }
            }
            Listing::Files(_) => return Ok(()),
            Listing::Derived(kind) => format!("{at}/{}", kind.folder()),
            Listing::DerivedResources(a) => {
                self.planner.plan.labels_known = false;
                format!("{at}/{}/{}/out/resources", a.kind.folder(), a.id)
            }
        };
        self.planner.plan.problems.push(Problem::new(item, e));
        Ok(())
    }
}

/// Marks the files already at their destination: checked in parallel on blocking threads
/// (under `--out` it hashes them).
pub(super) async fn mark_present(resources: &mut [PlannedResource], dest: &Destination) {
    let checks: Vec<(usize, usize)> = resources
        .iter()
        .enumerate()
        .flat_map(|(i, r)| (0..r.files.len()).map(move |j| (i, j)))
        .collect();
    let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
    let present = futures::stream::iter(checks)
        .map(|(i, j)| {
            let f = resources[i].files[j].clone();
            let dest = dest.clone();
            async move {
                let held = tokio::task::spawn_blocking(move || dest.holds(&f.file, &f.dest))
                    .await
                    .unwrap_or(false);
                (i, j, held)
            }
        })
        .buffer_unordered(parallel.max(2))
        .collect::<Vec<_>>()
        .await;
    for (i, j, held) in present {
        resources[i].files[j].present = held;
    }
}

/// Tells `breaker` how a listing went: [`Unreachable`] once so many in a row could not reach
/// the server.
fn heard(breaker: &Breaker, outcome: Result<(), &xnat::XnatError>) -> Result<()> {
    breaker.record(outcome.map_err(is_unreachable));
    match outcome {
        Err(e) if breaker.tripped() => Err(Unreachable(e.to_string()).into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
