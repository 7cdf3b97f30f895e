//! How XNAT's projects, sessions, scans, resources, assessors and reconstructions become
//! folders and names (the layout xnatctl's downloads have):
//!
//! ```text
//! <root>/[<project>/]<session>/scans/<scan>/resources/<label>/files/<path...>
//!                              resources/<label>/files/<path...>
//!                              assessors/<assessor label>/resources/<label>/files/<path...>
//!                              reconstructions/<ID>/resources/<label>/files/<path...>
//! ```
//! `assessors/` and `reconstructions/` are always there, empty when the session has none (as
//! `resources/` is); a reconstruction has no label in XNAT, its ID names it. Everything inside
//! a session comes from its whole tree, fetched when the session is first entered (see
//! [`super::sessions`]); one resource's files are listed again on their own once older than
//! `dir_ttl`. Names that cannot be path components, and repeats, are left out. The times
//! shown are the sessions' dates.

use super::bids_layout::BidsLayout;
use super::file_lists::KnownFiles;
use super::node::{Node, Root, TreeError};
use super::sessions::{ResourceFiles, Sessions};
use crate::names::is_safe_component;
use crate::xnat::{
    Derived, FileList, RemoteFile, ResourceRef, Scan, Session, XnatApi, XnatError, same_or_new,
};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How scan folders are named. Only the names shown change: lookups go by the name shown,
/// and everything below (requests, the cache) knows a scan by its ID.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ScanNames {
    /// `scans/2`: the scan ID, as xnatctl lays out its downloads.
    #[default]
    Id,
    /// `scans/2-T1w`: the scan ID and type, as XNAT names scans in its ZIP downloads.
    IdType,
}

impl ScanNames {
    /// The folder name of `scan`. A name that could not be a folder name (too long) falls
    /// back to the ID.
    pub fn name(self, scan: &Scan) -> String {
        match self {
            ScanNames::Id => scan.id.clone(),
            ScanNames::IdType => {
                let name = crate::xnat::zip_scan_folder(&scan.id, &scan.scan_type);
                if is_safe_component(&name) {
                    name
                } else {
                    scan.id.clone()
                }
            }
        }
    }
}

/// The folders a mount shows for what XNAT lists, and where each listing comes from.
pub struct Layout {
    api: Arc<dyn XnatApi>,
    root: Root,
    dir_ttl: Duration,
    /// Shared with `sessions` (and the tree, which drops a list with its folder).
    files: KnownFiles,
    /// Each session's whole tree, and crawl-ahead.
    pub(super) sessions: Arc<Sessions>,
    pub(super) scan_names: ScanNames,
    /// The BIDS view, when the root is one ([`Root::Bids`]).
    pub(super) bids: Option<BidsLayout>,
}

impl Layout {
    pub(super) fn new(
        api: Arc<dyn XnatApi>,
        root: Root,
        dir_ttl: Duration,
        files: KnownFiles,
    ) -> Layout {
        Layout {
            sessions: Arc::new(Sessions::new(api.clone(), dir_ttl, 0, files.clone())),
            api,
            root,
            dir_ttl,
            files,
            scan_names: ScanNames::Id,
            bids: None,
        }
    }

    /// Fetches the trees of up to `2 * n` sessions that follow an entered one (0: none).
    pub(super) fn crawl_ahead(&mut self, n: usize) {
        let (api, files) = (self.api.clone(), self.files.clone());
        self.sessions = Arc::new(Sessions::new(api, self.dir_ttl, n, files));
    }

    /// Shows the root as a BIDS view of its project (see [`BidsLayout`]), reading small
    /// files with `read`; `server_url` names the source in the dataset's description.
    pub(super) fn show_bids(
        &mut self,
        server_url: &str,
        read: Arc<dyn crate::bids::ReadFile>,
        map: Option<crate::bids::bidsmap::BidsMap>,
    ) {
        if let Root::Bids(project) = &self.root {
            let bids = BidsLayout::new(project, server_url, read, map, self.dir_ttl);
            self.bids = Some(bids);
        }
    }

    /// The entries of folder `path` of the BIDS view.
    async fn bids_entries(&self, path: &str) -> Result<Vec<(String, Node)>, TreeError> {
        match &self.bids {
            Some(bids) => bids.list(&self.api, &self.sessions, path).await,
            None => Err(TreeError::NotFound),
        }
    }

    /// Forgets what is kept of a resource's files, so that they are listed anew.
    pub(super) fn forget_resource(&self, res: &ResourceRef) {
        self.api.forget_files(res);
        self.files.lock().unwrap().remove(res);
        self.sessions.forget(&res.session_id);
    }

    /// A resource's files as listed now, if they were listed within `--dir-ttl` (no request):
    /// for the series read-ahead.
    pub(super) fn known_files(&self, res: &ResourceRef) -> Option<FileList> {
        let files = self.files.lock().unwrap();
        let (at, list) = files.get(res)?;
        (at.elapsed() < self.dir_ttl).then(|| list.clone())
    }

    /// The files of `res`: kept ones younger than `dir_ttl`, else from its session's tree
    /// when that is younger, else listed on their own.
    async fn resource_files(&self, res: &ResourceRef) -> Result<FileList, TreeError> {
        if let Some((at, files)) = self.files.lock().unwrap().get(res)
            && at.elapsed() < self.dir_ttl
        {
            return Ok(files.clone());
        }
        let mut unreadable = false;
        if let Some((at, model)) = self.sessions.fresh(&res.session_id).await {
            match model.files_of(res) {
                Some(Some(files)) => {
                    self.files
                        .lock()
                        .unwrap()
                        .insert(res.clone(), (at, files.clone()));
                    return Ok(files);
                }
                Some(None) => unreadable = true,
                None => {}
            }
        }
        // A resource its session lists, whose files XNAT will not list (an unreadable
        // catalog: `crate::xnat::walk`), is an I/O error of its folder alone.
        let listed = self.api.files(res).await.map_err(|e| match &e {
            XnatError::NotFound(path)
                if unreadable && !crate::xnat::error::never_listed_offline(path) =>
            {
                let msg = crate::xnat::unreadable_files(&e);
                tracing::warn!("cannot list the files of {}: {msg}", res.label_path());
                XnatError::BadResponse {
                    path: path.clone(),
                    msg,
                }
            }
            _ => e,
        })?;
        let held = self.files.lock().unwrap().get(res).map(|(_, f)| f.clone());
        let files = same_or_new(held, listed);
        self.files
            .lock()
            .unwrap()
            .insert(res.clone(), (Instant::now(), files.clone()));
        Ok(files)
    }

    /// The entries of the folder `node` stands for, as XNAT lists them now.
    pub(super) async fn list(&self, node: &Node) -> Result<Vec<(String, Node)>, TreeError> {
        let api = &self.api;
        let entries = match node {
            Node::Root => match &self.root {
                Root::Server => api
                    .projects()
                    .await?
                    .into_iter()
                    .map(|p| (p.id.clone(), Node::Project(p.id.into())))
                    .collect(),
                Root::Project(p) => sessions_by_label(api.sessions(p).await?),
                Root::Sessions(list) => list
                    .iter()
                    .map(|(name, s)| (name.clone(), Node::Session(Arc::new(s.clone()))))
                    .collect(),
                Root::Bids(_) => self.bids_entries("").await?,
            },
            Node::BidsDir(path) => self.bids_entries(path).await?,
            Node::Project(p) => sessions_by_label(api.sessions(p).await?),
            Node::Session(s) => vec![
                ("scans".into(), Node::ScansDir(s.clone())),
                ("resources".into(), Node::SessionResources(s.clone())),
                (
                    "assessors".into(),
                    Node::AssessorsDir(s.clone(), Derived::Assessor),
                ),
                (
                    "reconstructions".into(),
                    Node::AssessorsDir(s.clone(), Derived::Reconstruction),
                ),
            ],
            Node::AssessorsDir(s, kind) => {
                let model = self.sessions.model(s, false).await?;
                let assessors = model.assessors.iter().filter(|(a, _)| a.kind == *kind);
                assessors
                    .map(|(a, _)| (a.label.clone(), Node::Assessor(s.clone(), a.clone())))
                    .collect()
            }
            Node::Assessor(s, a) => vec![(
                "resources".into(),
                Node::AssessorResources(s.clone(), a.clone()),
            )],
            Node::AssessorResources(s, a) => {
                let model = self.sessions.model(s, false).await?;
                let list = model.assessor_resources(a);
                list.iter()
                    .map(|(r, _)| {
                        let res = ResourceRef::of_assessor(&s.id, a, r);
                        (
                            r.label.clone(),
                            Node::Resource(Arc::new(res), Arc::new(r.clone())),
                        )
                    })
                    .collect()
            }
            Node::ScansDir(s) => {
                let model = self.sessions.model(s, false).await?;
                let scans = model.scans.iter();
                scans
                    .map(|(scan, _)| {
                        let name = self.scan_names.name(scan);
                        (name, Node::Scan(s.clone(), scan.clone()))
                    })
                    .collect()
            }
            Node::Scan(s, scan) => vec![(
                "resources".into(),
                Node::ScanResources(s.clone(), scan.id.as_str().into()),
            )],
            Node::ScanResources(s, id) => {
                let model = self.sessions.model(s, false).await?;
                resources(model.resources(Some(id)), s, Some(id))
            }
            Node::SessionResources(s) => {
                let model = self.sessions.model(s, false).await?;
                resources(model.resources(None), s, None)
            }
            Node::Resource(r, _) => vec![("files".into(), Node::FilesDir(r.clone(), "".into()))],
            Node::FilesDir(r, prefix) => {
                let files = self.resource_files(r).await?;
                files_under(r, prefix, &files)
            }
            Node::File(..) | Node::Made(_) => return Err(TreeError::NotDir),
        };
        Ok(keep_safe_unique(entries))
    }
}

/// XNAT's session date (`2024-03-01`) as midnight UTC of that day.
pub(super) fn session_date(date: &str) -> Option<SystemTime> {
    let mut parts = date.trim().splitn(3, '-').map(str::parse::<i64>);
    let (Some(Ok(y)), Some(Ok(m)), Some(Ok(d))) = (parts.next(), parts.next(), parts.next()) else {
        return None;
    };
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar.
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(days as u64 * 86_400))
}

fn sessions_by_label(sessions: Vec<Session>) -> Vec<(String, Node)> {
    sessions
        .into_iter()
        .map(|s| (s.label.clone(), Node::Session(Arc::new(s))))
        .collect()
}

fn resources(list: &[ResourceFiles], s: &Session, scan: Option<&str>) -> Vec<(String, Node)> {
    list.iter()
        .map(|(r, _)| {
            let res = ResourceRef::of(&s.id, scan, r);
            (
                r.label.clone(),
                Node::Resource(Arc::new(res), Arc::new(r.clone())),
            )
        })
        .collect()
}

/// The entries of the folder `prefix` inside a resource's files: files directly in it, and
/// a folder for each first component of deeper paths.
fn files_under(
    res: &Arc<ResourceRef>,
    prefix: &str,
    files: &[Arc<RemoteFile>],
) -> Vec<(String, Node)> {
    let mut out = Vec::new();
    let mut dirs = HashSet::new();
    for f in files {
        let rest = if prefix.is_empty() {
            Some(f.path.as_str())
        } else {
            f.path
                .strip_prefix(prefix)
                .and_then(|r| r.strip_prefix('/'))
        };
        let Some(rest) = rest else { continue };
        match rest.split_once('/') {
            None => out.push((rest.to_string(), Node::File(res.clone(), f.clone()))),
            Some((dir, _)) => {
                if dirs.insert(dir.to_string()) {
                    let sub = if prefix.is_empty() {
                        dir.to_string()
                    } else {
                        format!("{prefix}/{dir}")
                    };
                    out.push((dir.to_string(), Node::FilesDir(res.clone(), sub.into())));
                }
            }
        }
    }
    out
}

/// Drops names that are unsafe as path components, and later repeats of a name.
fn keep_safe_unique(entries: Vec<(String, Node)>) -> Vec<(String, Node)> {
    let mut seen = HashSet::new();
    entries
        .into_iter()
        .filter(|(name, _)| {
            if !is_safe_component(name) {
                tracing::warn!("skipping unsafe name {name:?} from the server");
                return false;
            }
            if !seen.insert(name.clone()) {
                tracing::warn!("skipping repeated name {name:?} in a listing");
                return false;
            }
            true
        })
        .collect()
}
