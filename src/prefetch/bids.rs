//! `xnatfs prefetch -P PROJ --bids`: the files of a project's BIDS view (see [`crate::bids`]),
//! into the cache (so that `mount --bids` then works offline) or, with `--out DIR`, as a plain
//! BIDS folder at `DIR` (the files xnatfs writes, `dataset_description.json` and the rest,
//! included). `--bids-metadata-only` takes only what indexers read: the JSON, TSV and
//! bval/bvec files.
//!
//! The view is built from every session of the project first (labels that clash can only be
//! told with all of them), then each session's files are planned as any prefetch's are and
//! transferred one request a file (their names in the view may not be XNAT's, so never from a
//! resource's ZIP).

use super::breaker::{Breaker, is_unreachable};
use super::destination::{Destination, symlink_refused};
use super::plan::{PlannedFile, PlannedResource, Problem, SessionPlan, mark_present};
use crate::bids::ReadFile;
use crate::bids::bidsmap::BidsMap;
use crate::bids::sources::{Placement, place, resources_of_tree};
use crate::bids::view::{self, Entry, ProjectInfo, View};
use crate::xnat::{RemoteFile, ResourceRef, Session, XnatApi};
use anyhow::Result;
use futures::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

/// What `--bids` asks of a prefetch.
#[derive(Debug, Clone, Default)]
pub struct BidsPrefetch {
    /// `--bids-metadata-only`: the JSON, TSV and bval/bvec files only.
    pub metadata_only: bool,
    /// `--bids-map`: names for scans without BIDS names (else the project's, if any).
    pub map: Option<BidsMap>,
    /// The server's address, for the dataset's description.
    pub server_url: String,
}

/// Sessions listed at once while the view is built.
const SESSIONS_AT_ONCE: usize = 16;

/// The biggest small file read whole to place a session (a `*_scans.tsv`).
const SMALL: usize = 1 << 20;

/// Reads a small file whole with one request.
struct Whole<'a>(&'a dyn XnatApi);

#[async_trait::async_trait]
impl ReadFile for Whole<'_> {
    async fn read_whole(&self, _: &ResourceRef, file: &RemoteFile) -> Result<Vec<u8>, String> {
        let d = self
            .0
            .download(&file.uri())
            .await
            .map_err(|e| e.to_string())?;
        let mut body = d.body;
        let mut out = Vec::new();
        while let Some(chunk) = body.next().await {
            out.extend_from_slice(&chunk.map_err(|e| e.to_string())?);
            if out.len() > SMALL {
                return Err("larger than 1 MiB".into());
            }
        }
        Ok(out)
    }
}

/// The BIDS view of `project` (its `sessions`), with the problems of sessions that could not
/// be listed, each with its session's ID. Errors: only a server taken for gone.
pub async fn view_of(
    api: &dyn XnatApi,
    project: &str,
    sessions: &[(String, Session)],
    map: Option<&BidsMap>,
    server_url: &str,
    breaker: &Breaker,
) -> Result<(View, Vec<(String, Problem)>)> {
    let map = match map {
        Some(m) => Some(m.clone()),
        None => crate::bids::bidsmap::configured(api, project).await,
    };
    let read = Whole(api);
    let placed: Vec<(Session, Result<Placement, crate::xnat::XnatError>)> =
        futures::stream::iter(sessions)
            .map(|(_, s)| {
                let (read, map) = (&read, map.as_ref());
                async move {
                    let placement = match api.session_tree(s).await {
                        Ok(tree) => {
                            let resources = resources_of_tree(&s.id, tree);
                            Ok(place(s, &resources, map, read).await)
                        }
                        Err(e) => Err(e),
                    };
                    (s.clone(), placement)
                }
            })
            .buffered(SESSIONS_AT_ONCE)
            .collect()
            .await;
    let mut problems = Vec::new();
    let mut listed = Vec::with_capacity(placed.len());
    for (s, p) in placed {
        match p {
            Ok(p) => {
                breaker.record(Ok(()));
                listed.push((s, p));
            }
            Err(e) => {
                if is_unreachable(&e) {
                    breaker.record(Err(true));
                    if breaker.tripped() {
                        return Err(super::breaker::Unreachable(e.to_string()).into());
                    }
                }
                let item = format!("session {} (/data/experiments/{})", s.label, s.id);
                problems.push((s.id.clone(), Problem::new(item, e)));
            }
        }
    }
    let name = match api.projects().await {
        Ok(projects) => projects
            .into_iter()
            .find(|p| p.id == project)
            .map(|p| p.name),
        Err(_) => None,
    };
    let info = ProjectInfo {
        id: project.to_string(),
        name: name.unwrap_or_default(),
        url: format!(
            "{}/data/projects/{project}",
            server_url.trim_end_matches('/')
        ),
    };
    Ok((view::build(&info, &listed), problems))
}

/// A resource and the files of it the view plans.
type ResourceFiles = (Arc<ResourceRef>, Vec<PlannedFile>);

/// Each session's plan of the view's files, in session order: where each file goes in
/// `dest` (its BIDS path under `--out`, its place in the cache otherwise), and whether it is
/// there already. Sessions not in `sessions` (another shard's) are left out.
pub async fn session_plans(
    view: &View,
    sessions: &[(String, Session)],
    dest: &Destination,
    metadata_only: bool,
) -> Vec<SessionPlan> {
    // Files by session, then by resource.
    let mut by_session: BTreeMap<usize, BTreeMap<String, ResourceFiles>> = BTreeMap::new();
    let index: HashMap<&str, usize> = sessions
        .iter()
        .enumerate()
        .map(|(i, (_, s))| (s.id.as_str(), i))
        .collect();
    let mut problems: BTreeMap<usize, Vec<Problem>> = BTreeMap::new();
    let mut seen = HashMap::new();
    for (path, entry) in view.files() {
        let Entry::Remote(res, file) = entry else {
            continue;
        };
        if metadata_only && !crate::bids::is_metadata(&path) {
            continue;
        }
        let Some(&i) = index.get(res.session_id.as_str()) else {
            continue;
        };
        let at = match dest {
            Destination::Cache(cache) => cache.file_path(res, &file.path),
            Destination::Out { root, .. } => Some(root.join(&path)),
        };
        let Some(at) = at else {
            let why = format!("{:?} cannot be written safely", file.path);
            problems
                .entry(i)
                .or_default()
                .push(Problem::new(file.uri().into_owned(), why));
            continue;
        };
        if let Some(link) = dest.symlink_on_the_way(&at, &mut seen) {
            problems
                .entry(i)
                .or_default()
                .push(Problem::new(path, symlink_refused(&link)));
            continue;
        }
        let key = format!(
            "{}/{}/{}",
            res.scan.as_deref().unwrap_or("-"),
            res.id,
            res.label
        );
        let planned = PlannedFile {
            file: (**file).clone(),
            dest: at,
            present: false,
        };
        let slot = by_session.entry(i).or_default();
        slot.entry(key)
            .or_insert_with(|| (res.clone(), Vec::new()))
            .1
            .push(planned);
    }
    let mut plans = Vec::new();
    for (i, (dir_name, session)) in sessions.iter().enumerate() {
        let resources: Vec<PlannedResource> = by_session
            .remove(&i)
            .unwrap_or_default()
            .into_values()
            .map(|(res, files)| PlannedResource {
                session: session.clone(),
                dir_name: dir_name.clone(),
                scan_type: None,
                res: (*res).clone(),
                files,
            })
            .collect();
        let mut plan = SessionPlan {
            resources,
            problems: problems.remove(&i).unwrap_or_default(),
            seen: None,
            labels_known: true,
        };
        mark_present(&mut plan.resources, dest).await;
        plans.push(plan);
    }
    plans
}

/// Writes the files xnatfs makes (`dataset_description.json`, `participants.tsv`, ...) into
/// `root`, each whole or not at all.
pub fn write_made_files(view: &View, root: &std::path::Path) -> std::io::Result<usize> {
    let mut written = 0;
    for (path, entry) in view.files() {
        let Entry::Made(bytes) = entry else { continue };
        let at: PathBuf = root.join(&path);
        if let Some(dir) = at.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut tmp = tempfile::NamedTempFile::new_in(at.parent().unwrap_or(root))?;
        std::io::Write::write_all(&mut tmp, bytes)?;
        tmp.persist(&at).map_err(|e| e.error)?;
        written += 1;
    }
    Ok(written)
}
