//! The BIDS view of a project as a mount's layout (`xnatfs mount --bids`): the folders and
//! files of [`crate::bids::view`], built from every session's tree (the same fetches, kept
//! for `--dir-ttl`, as the plain layout's) and each session's `*_scans.tsv` (read through the
//! cache). The view is built once for all its folders and built again once older than
//! `--dir-ttl`, so a session added on the server shows then; names keep their inodes. The
//! JSON sidecars of a folder listed are fetched ahead ([`BidsLayout::warm`]).
//!
//! A build runs in a task of its own: a caller that gives up (timeout, interrupt) leaves it to
//! finish for the next one, and every caller waits for the same build.

use super::node::{Node, TreeError};
use super::sessions::{SessionModel, Sessions};
use crate::bids::ReadFile;
use crate::bids::bidsmap::BidsMap;
use crate::bids::sources::{Placement, SessionResource, place};
use crate::bids::view::{self, Entry, ProjectInfo, View};
use crate::xnat::{RemoteFile, ResourceRef, Session, XnatApi, XnatError};
use futures::future::{BoxFuture, Shared};
use futures::{FutureExt, StreamExt};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Sessions placed at once while a view is built.
const SESSIONS_AT_ONCE: usize = 16;

/// How long a view that left out a session whose listing failed for a reason that may pass
/// (a 5xx, a timeout) is kept at most (a longer `--dir-ttl` would hide a session for its
/// whole length after one failed request).
const INCOMPLETE_VIEW_TTL: Duration = Duration::from_secs(30);

type ViewFuture = Shared<BoxFuture<'static, Result<Arc<View>, XnatError>>>;

struct Build {
    /// When it ended (unset while it runs).
    done: Arc<OnceLock<Instant>>,
    view: ViewFuture,
}

pub struct BidsLayout {
    project: String,
    /// The project's address on the server, for the dataset's description.
    url: String,
    read: Arc<dyn ReadFile>,
    /// The BIDS map given (`--bids-map`); `None`: the project's or site's, if any.
    map: Option<Arc<BidsMap>>,
    ttl: Duration,
    build: Mutex<Option<Build>>,
    /// Places for sidecars fetched ahead.
    warming: Arc<tokio::sync::Semaphore>,
}

impl BidsLayout {
    /// The view of `project` of the server at `server_url`, whose small files are read with
    /// `read`, built again once older than `ttl`; scans without BIDS names are named by `map`
    /// (`None`: by the project's or site's `bids/bidsmap` configuration, if there is one).
    pub fn new(
        project: &str,
        server_url: &str,
        read: Arc<dyn ReadFile>,
        map: Option<BidsMap>,
        ttl: Duration,
    ) -> Self {
        BidsLayout {
            project: project.to_string(),
            url: format!(
                "{}/data/projects/{project}",
                server_url.trim_end_matches('/')
            ),
            read,
            map: map.map(Arc::new),
            warming: Arc::new(tokio::sync::Semaphore::new(SIDECARS_AT_ONCE)),
            ttl,
            build: Mutex::new(None),
        }
    }

    /// The view as built less than the TTL ago (or being built), or a new build.
    async fn view(
        &self,
        api: &Arc<dyn XnatApi>,
        sessions: &Arc<Sessions>,
    ) -> Result<Arc<View>, XnatError> {
        let view = {
            let mut build = self.build.lock().unwrap();
            let usable = build.as_ref().is_some_and(|b| {
                let ttl = match b.view.peek() {
                    Some(Err(_)) => return false,
                    Some(Ok(v)) => kept_for(self.ttl, v),
                    None => self.ttl,
                };
                b.done.get().is_none_or(|t| t.elapsed() < ttl)
            });
            if !usable {
                let done = Arc::new(OnceLock::new());
                let ended = done.clone();
                let (api, sessions, read) = (api.clone(), sessions.clone(), self.read.clone());
                let map = self.map.clone();
                let project = ProjectInfo {
                    id: self.project.clone(),
                    name: String::new(),
                    url: self.url.clone(),
                };
                let task = tokio::spawn(async move {
                    let view = build_view(api, sessions, read, project, map).await;
                    let _ = ended.set(Instant::now());
                    view
                });
                let project = self.project.clone();
                let view = async move {
                    task.await.unwrap_or_else(|e| {
                        Err(XnatError::Network {
                            path: format!("/data/projects/{project}/experiments"),
                            msg: format!("the BIDS view's task ended: {e}"),
                        })
                    })
                };
                *build = Some(Build {
                    done,
                    view: view.boxed().shared(),
                });
            }
            build.as_ref().expect("set").view.clone()
        };
        view.await
    }

    /// The entries of the view's folder `path`.
    pub async fn list(
        &self,
        api: &Arc<dyn XnatApi>,
        sessions: &Arc<Sessions>,
        path: &str,
    ) -> Result<Vec<(String, Node)>, TreeError> {
        let view = self.view(api, sessions).await?;
        let entries = view.entries(path).ok_or(TreeError::NotFound)?;
        let mut sidecars = Vec::new();
        let nodes = entries.map(|(name, e)| {
            if let Entry::Remote(res, file) = e
                && name.ends_with(".json")
                && file.size <= SIDECAR_AT_MOST
            {
                sidecars.push((res.clone(), file.clone()));
            }
            let node = match e {
                Entry::Dir(path) => Node::BidsDir(path.clone()),
                Entry::Remote(res, file) => Node::File(res.clone(), file.clone()),
                Entry::Made(bytes) => Node::Made(bytes.clone()),
            };
            (name.clone(), node)
        });
        let nodes = nodes.collect();
        self.warm(sidecars);
        Ok(nodes)
    }

    /// Fetches the JSON sidecars of a folder just listed into the cache in the background,
    /// [`SIDECARS_AT_ONCE`] at a time: pybids (and so every BIDS app) reads every sidecar of
    /// every folder it lists, one after another, and would wait a round trip for each; a
    /// reader joins a fetch under way. `scripts/bench-bids` (20 ms a request): at 50 subjects
    /// of 2 sessions a cold index took 4 s with this against 14 s without (2.5 s on a local
    /// copy); at 200 subjects 14 s, against 10 s on a local copy.
    /// Only JSON: fetching the bval/bvec files too made a plain `find` three times slower on
    /// 2 cores, for nothing pybids reads.
    fn warm(&self, sidecars: Vec<(Arc<ResourceRef>, Arc<RemoteFile>)>) {
        for (res, file) in sidecars {
            let (read, permits) = (self.read.clone(), self.warming.clone());
            tokio::spawn(async move {
                let Ok(_place) = permits.acquire_owned().await else {
                    return;
                };
                if let Err(e) = read.fill(&res, &file).await {
                    tracing::debug!("BIDS view: {} not fetched ahead: {e}", file.uri());
                }
            });
        }
    }
}

/// How long a view built is kept, given the `--dir-ttl`: at most [`INCOMPLETE_VIEW_TTL`]
/// when a session's listing failed for a reason that may pass.
fn kept_for(ttl: Duration, view: &View) -> Duration {
    match view.incomplete {
        true => ttl.min(INCOMPLETE_VIEW_TTL),
        false => ttl,
    }
}

/// Sidecars fetched ahead at once (see [`BidsLayout::warm`]).
const SIDECARS_AT_ONCE: usize = 8;

/// The biggest file fetched ahead as a sidecar.
const SIDECAR_AT_MOST: u64 = 1 << 20;

/// The view of `project`: its sessions' trees fetched and placed, [`SESSIONS_AT_ONCE`] at a
/// time. A session whose tree cannot be fetched is left out (and said so, and the view is
/// then built again sooner: [`INCOMPLETE_VIEW_TTL`]); the project's listing failing fails
/// the view.
async fn build_view(
    api: Arc<dyn XnatApi>,
    sessions: Arc<Sessions>,
    read: Arc<dyn ReadFile>,
    mut project: ProjectInfo,
    given: Option<Arc<BidsMap>>,
) -> Result<Arc<View>, XnatError> {
    let started = Instant::now();
    let list = api.sessions(&project.id).await?;
    let map = match given {
        Some(map) => Some(map),
        None => crate::bids::bidsmap::configured(api.as_ref(), &project.id)
            .await
            .map(Arc::new),
    };
    if let Ok(projects) = api.projects().await
        && let Some(p) = projects.into_iter().find(|p| p.id == project.id)
    {
        project.name = p.name;
    }
    let failed = std::sync::atomic::AtomicBool::new(false);
    let placed: Vec<(Session, Placement)> = futures::stream::iter(list)
        .map(|s| {
            let (sessions, read, map) = (sessions.clone(), read.clone(), map.clone());
            let failed = &failed;
            async move {
                let placement = match sessions.model(&s, false).await {
                    Ok(model) => {
                        let resources = resources_of(&s, &model);
                        place(&s, &resources, map.as_deref(), read.as_ref()).await
                    }
                    Err(e) => {
                        tracing::warn!("BIDS view: session {} ({}) left out: {e}", s.label, s.id);
                        // A refusal for good (403, 404) is no reason to build it again sooner.
                        if e.is_transient() {
                            failed.store(true, std::sync::atomic::Ordering::Relaxed);
                        }
                        Placement::Unmapped(format!("cannot list it: {e}"))
                    }
                };
                (s, placement)
            }
        })
        .buffered(SESSIONS_AT_ONCE)
        .collect()
        .await;
    let mut view = view::build(&project, &placed);
    view.incomplete = failed.into_inner();
    tracing::info!(
        "BIDS view of {}: {} sessions shown, {} not (code/xnatfs/unmapped.tsv), in {:.1?}",
        project.id,
        view.shown,
        view.unmapped,
        started.elapsed()
    );
    Ok(Arc::new(view))
}

/// The scans' and the session's own resources of `s`'s tree, with their files.
fn resources_of(s: &Session, model: &SessionModel) -> Vec<SessionResource> {
    let scans = model.scans.iter().flat_map(|(scan, resources)| {
        resources.iter().map(|(r, files)| SessionResource {
            res: Arc::new(ResourceRef::of(&s.id, Some(&scan.id), r)),
            scan: Some(scan.clone()),
            files: files.clone(),
        })
    });
    let own = model.resources.iter().map(|(r, files)| SessionResource {
        res: Arc::new(ResourceRef::of(&s.id, None, r)),
        scan: None,
        files: files.clone(),
    });
    scans.chain(own).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::MemoryXnat;
    use crate::mock::bids::PROJECT;
    use crate::mock::data::Dataset;
    use crate::mock::failing::FailingXnat;

    /// Reads nothing: the sessions of the test are placed without a table.
    struct NoRead;

    #[async_trait::async_trait]
    impl ReadFile for NoRead {
        async fn read_whole(&self, _: &ResourceRef, f: &RemoteFile) -> Result<Vec<u8>, String> {
            Err(format!("{} not read here", f.path))
        }
    }

    #[tokio::test]
    async fn a_session_whose_listing_failed_is_said_and_its_view_kept_for_a_short_while() {
        let inner = MemoryXnat::new(Dataset::default().with_bids(1));
        let sessions = inner.sessions(PROJECT).await.unwrap();
        let bad = sessions.iter().find(|s| s.label == "NAMES_01_MR1").unwrap();
        let api: Arc<dyn XnatApi> = Arc::new(FailingXnat {
            fail: vec![format!("/data/experiments/{}/scans", bad.id)],
            inner,
            err: XnatError::Status {
                status: 500,
                path: "/x".into(),
                retry_after: None,
                by: None,
            },
        });
        let known = Default::default();
        let sessions = Arc::new(Sessions::new(
            api.clone(),
            Duration::from_secs(60),
            0,
            known,
        ));
        let project = ProjectInfo {
            id: PROJECT.into(),
            name: String::new(),
            url: "http://memory".into(),
        };
        let view = build_view(api, sessions, Arc::new(NoRead), project, None)
            .await
            .unwrap();
        assert!(view.incomplete);
        let ttl = Duration::from_secs(3600);
        assert_eq!(kept_for(ttl, &view), INCOMPLETE_VIEW_TTL);
        assert_eq!(
            kept_for(Duration::from_secs(1), &view),
            Duration::from_secs(1)
        );
        let shown: Vec<&String> = view.entries("").unwrap().map(|(n, _)| n).collect();
        assert!(
            !shown.iter().any(|n| n.as_str() == "sub-NAMES01"),
            "{shown:?}"
        );
        let Some(Entry::Made(unmapped)) = view
            .files()
            .find(|(p, _)| p == "code/xnatfs/unmapped.tsv")
            .map(|(_, e)| e.clone())
        else {
            panic!("no unmapped.tsv")
        };
        let unmapped = String::from_utf8(unmapped.to_vec()).unwrap();
        assert!(
            unmapped.contains(&format!(
                "{}\tNAMES_01_MR1\tNAMES_01\tcannot list it: ",
                bad.id
            )),
            "{unmapped}"
        );
        // A view every session's listing went into is kept for the whole TTL.
        let complete = View::default();
        assert_eq!(kept_for(ttl, &complete), ttl);
    }
}
