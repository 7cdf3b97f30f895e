//! Whole session trees for the mount: each session's scans, resources and files, from one
//! [`XnatApi::session_tree`] call (two requests against XNAT) when the session is first
//! entered, instead of one request per folder level; and crawl-ahead, which fetches the
//! trees of the sessions that follow in their folder while a walker (`find`, `ls -R`, `du`)
//! is busy with one, a bounded number at a time, never file bodies.
//!
//! A tree is fetched in a task of its own, so a caller that gives up (timeout, interrupt)
//! leaves it to finish for the next one; every caller waits for the same fetch.

use super::file_lists::{KnownFiles, give_back_freed_memory};
use super::node::Children;
use crate::xnat::{
    Assessor, Resource, ResourceRef, Scan, Session, SessionTree, XnatApi, XnatError,
};
use crate::xnat::{FileList, same_or_new};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// A resource and its files; `None` when the server would not list them (see
/// [`crate::xnat::walk`]): the resource is a folder, and its files are asked again.
pub type ResourceFiles = (Resource, Option<FileList>);

/// A session's scans (by ID) with their resources, its own resources, and its assessors with
/// their resources, each resource with its files.
#[derive(Debug, Default)]
pub struct SessionModel {
    pub scans: Vec<(Arc<Scan>, Vec<ResourceFiles>)>,
    pub resources: Vec<ResourceFiles>,
    pub assessors: Vec<(Arc<Assessor>, Vec<ResourceFiles>)>,
}

impl SessionModel {
    /// The model of the tree of session `id`, whose unchanged file lists are the ones
    /// `known` holds of the same resources.
    fn of(tree: SessionTree, id: &str, known: &KnownFiles) -> SessionModel {
        let files = |res: ResourceRef, r: crate::xnat::ResourceTree| {
            if r.unreadable.is_some() {
                return (r.resource, None);
            }
            let held = known.lock().unwrap().get(&res).map(|(_, f)| f.clone());
            (r.resource, Some(same_or_new(held, r.files)))
        };
        SessionModel {
            scans: tree
                .scans
                .into_iter()
                .map(|s| {
                    let of = |r: &Resource| ResourceRef::of(id, Some(&s.scan.id), r);
                    let resources = s.resources.into_iter();
                    let resources = resources.map(|r| files(of(&r.resource), r)).collect();
                    (Arc::new(s.scan), resources)
                })
                .collect(),
            resources: (tree.resources.into_iter())
                .map(|r| files(ResourceRef::of(id, None, &r.resource), r))
                .collect(),
            assessors: tree
                .assessors
                .into_iter()
                .map(|a| {
                    let of = |r: &Resource| ResourceRef::of_assessor(id, &a.assessor, r);
                    let resources = a.resources.into_iter();
                    let resources = resources.map(|r| files(of(&r.resource), r)).collect();
                    (Arc::new(a.assessor), resources)
                })
                .collect(),
        }
    }

    /// How many files the tree lists.
    fn file_count(&self) -> usize {
        let scans = self.scans.iter().flat_map(|(_, r)| r);
        let assessors = self.assessors.iter().flat_map(|(_, r)| r);
        (scans.chain(&self.resources).chain(assessors))
            .map(|(_, files)| files.as_ref().map_or(0, |f| f.len()))
            .sum()
    }

    /// The resources of assessor (or reconstruction) `a`, found by kind and ID; none for one
    /// the tree does not have.
    pub fn assessor_resources(&self, a: &Assessor) -> &[ResourceFiles] {
        self.assessors
            .iter()
            .find(|(x, _)| x.kind == a.kind && x.id == a.id)
            .map_or(&[], |(_, r)| r.as_slice())
    }

    /// The resources of scan `scan`, or the session's own (`None`); none for a scan the
    /// tree does not have.
    pub fn resources(&self, scan: Option<&str>) -> &[ResourceFiles] {
        match scan {
            None => &self.resources,
            Some(id) => self
                .scans
                .iter()
                .find(|(s, _)| s.id == id)
                .map_or(&[], |(_, r)| r.as_slice()),
        }
    }

    /// What the tree has of the files of `res` (found by ID and label): `None` when it does
    /// not have the resource, `Some(None)` when the server would not list its files.
    pub fn files_of(&self, res: &ResourceRef) -> Option<Option<FileList>> {
        let resources = match &res.assessor {
            Some(a) => self.assessor_resources(a),
            None => self.resources(res.scan.as_deref()),
        };
        resources
            .iter()
            .find(|(r, _)| r.id == res.id && r.label == res.label)
            .map(|(_, files)| files.clone())
    }
}

pub type ModelFuture = Shared<BoxFuture<'static, Result<Arc<SessionModel>, XnatError>>>;

struct Fetch {
    /// When the fetch ended (unset while it runs).
    done: Arc<OnceLock<Instant>>,
    model: ModelFuture,
}

impl Fetch {
    /// Under way, or done well less than `ttl` ago: callers join it.
    fn usable(&self, ttl: Duration) -> bool {
        let failed = matches!(self.model.peek(), Some(Err(_)));
        !failed && self.done.get().is_none_or(|t| t.elapsed() < ttl)
    }
}

/// The session trees fetched or being fetched, by session accession ID.
pub struct Sessions {
    api: Arc<dyn XnatApi>,
    ttl: Duration,
    fetches: Mutex<HashMap<String, Fetch>>,
    /// How many sessions ahead of the one entered are fetched (0: none).
    pub ahead: usize,
    /// Crawl-ahead fetches in flight at once (`ahead` of them).
    permits: Arc<Semaphore>,
    /// When trees past their TTL were last let go.
    swept: Mutex<Instant>,
    /// The file lists the mount holds, which a tree fetched again reuses where unchanged.
    known: KnownFiles,
}

/// How often, at most, trees past their TTL are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

impl Sessions {
    pub fn new(api: Arc<dyn XnatApi>, ttl: Duration, ahead: usize, known: KnownFiles) -> Sessions {
        Sessions {
            api,
            ttl,
            fetches: Mutex::new(HashMap::new()),
            ahead,
            permits: Arc::new(Semaphore::new(ahead.max(1))),
            swept: Mutex::new(Instant::now()),
            known,
        }
    }

    /// The tree of `session`: the one fetched (or being fetched) less than the TTL ago, or
    /// a new fetch, started at once (`ahead` false) or when one of the crawl-ahead places is
    /// free (`ahead` true).
    pub fn model(&self, session: &Session, ahead: bool) -> ModelFuture {
        let mut fetches = self.fetches.lock().unwrap();
        if let Some(f) = fetches.get(&session.id)
            && f.usable(self.ttl)
        {
            return f.model.clone();
        }
        // Trees past their TTL serve no one (a session entered again is fetched anew): they
        // go, with every file list of theirs that no folder the kernel holds still keeps.
        let mut swept = self.swept.lock().unwrap();
        if swept.elapsed() >= self.ttl.min(SWEEP_EVERY) {
            fetches.retain(|_, f| f.usable(self.ttl));
            *swept = Instant::now();
        }
        drop(swept);
        tracing::debug!("fetching the tree of session {}", session.id);
        let api = self.api.clone();
        let permits = ahead.then(|| self.permits.clone());
        let owned = session.clone();
        let known = self.known.clone();
        let done = Arc::new(OnceLock::new());
        let ended = done.clone();
        let task = tokio::spawn(async move {
            let _place = match permits {
                Some(p) => Some(p.acquire_owned().await),
                None => None,
            };
            let tree = api.session_tree(&owned).await;
            let _ = ended.set(Instant::now());
            let model = SessionModel::of(tree?, &owned.id, &known);
            if model.file_count() > 10_000 {
                give_back_freed_memory();
            }
            Ok(Arc::new(model))
        });
        let id = session.id.clone();
        let model = async move {
            task.await.unwrap_or_else(|e| {
                Err(XnatError::Network {
                    path: format!("/data/experiments/{id}"),
                    msg: format!("the listing task ended: {e}"),
                })
            })
        }
        .boxed()
        .shared();
        fetches.insert(
            session.id.clone(),
            Fetch {
                done,
                model: model.clone(),
            },
        );
        model
    }

    /// The tree of session `id` if it is being fetched or was fetched less than the TTL
    /// ago, with when that fetch ends. An older one is let go at once: the caller lists
    /// anew, and the old tree's file lists would stay beside the new ones until the next
    /// sweep (two copies of a 200,000-file listing).
    pub async fn fresh(&self, id: &str) -> Option<(Instant, Arc<SessionModel>)> {
        let (done, model) = {
            let mut fetches = self.fetches.lock().unwrap();
            let f = fetches.get(id)?;
            if !f.usable(self.ttl) {
                let stale = fetches.remove(id);
                drop(fetches);
                drop(stale); // outside the lock: a big tree takes a while to free
                return None;
            }
            (f.done.clone(), f.model.clone())
        };
        let model = model.await.ok()?;
        Some((*done.get().unwrap_or(&Instant::now()), model))
    }

    /// Forgets the tree of session `id` (a file of it turned out to be gone).
    pub fn forget(&self, id: &str) {
        self.fetches.lock().unwrap().remove(id);
    }
}

/// Which sessions of a folder to fetch ahead: crawl-ahead starts once a second session of the
/// folder is entered (one `cat` deep into one session fetches nothing more), then, from each
/// session entered, the ones that follow it in listing order (as `find` and `du` walk) and in
/// name order (as `ls -R` and `tree` walk).
#[derive(Default)]
pub struct Walks {
    folders: Mutex<HashMap<u64, Walk>>,
}

struct Walk {
    /// The listing the orders are of (a new listing of the folder starts over).
    listing: Children,
    /// Entry indexes in name order, and each entry's place in that order.
    by_name: Vec<u32>,
    rank: Vec<u32>,
    entered: u32,
}

impl Walks {
    /// The inodes of up to `n` entries after entry `at` of folder `parent` (listed as
    /// `listing`) in listing order, then up to `n` after it in name order; none before a
    /// second entry of the folder was entered.
    pub fn ahead(&self, parent: u64, listing: &Children, at: usize, n: usize) -> Vec<u64> {
        let mut folders = self.folders.lock().unwrap();
        let walk = folders.entry(parent).or_insert_with(|| Walk::of(listing));
        if !Arc::ptr_eq(&walk.listing, listing) {
            *walk = Walk::of(listing);
        }
        walk.entered += 1;
        if walk.entered < 2 || at >= walk.rank.len() {
            return Vec::new();
        }
        let inos: Vec<u64> = listing.iter().map(|(_, ino)| ino).collect();
        let next_listed = (at + 1..inos.len()).take(n);
        let from = walk.rank[at] as usize + 1;
        let next_named = walk.by_name[from.min(walk.by_name.len())..]
            .iter()
            .take(n)
            .map(|&i| i as usize);
        let mut out: Vec<u64> = Vec::with_capacity(2 * n);
        for i in next_listed.chain(next_named) {
            if !out.contains(&inos[i]) {
                out.push(inos[i]);
            }
        }
        out
    }

    /// Folder `parent` left the table with its listing: its walk goes too.
    pub fn forget(&self, parent: u64) {
        self.folders.lock().unwrap().remove(&parent);
    }
}

impl Walk {
    fn of(listing: &Children) -> Walk {
        let names: Vec<&str> = listing.iter().map(|(name, _)| name).collect();
        let mut by_name: Vec<u32> = (0..names.len() as u32).collect();
        by_name.sort_by(|&a, &b| names[a as usize].cmp(names[b as usize]));
        let mut rank = vec![0; names.len()];
        for (place, &i) in by_name.iter().enumerate() {
            rank[i as usize] = place as u32;
        }
        Walk {
            listing: listing.clone(),
            by_name,
            rank,
            entered: 0,
        }
    }
}
