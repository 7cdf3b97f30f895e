//! The directory model and inode table of a mount, independent of FUSE.
//!
//! ```text
//! <root>/[<project>/]<session>/scans/<scan>/resources/<label>/files/<path...>
//!                              resources/<label>/files/<path...>
//!                              assessors/<assessor label>/resources/<label>/files/<path...>
//! ```
//! `assessors/` is always there, empty when the session has none (as `resources/` is).
//! Directories are listed lazily from XNAT and kept for `dir_ttl`. Everything inside a
//! session comes from its whole tree, fetched when the session is first entered (see
//! [`super::sessions`]); one resource's files are listed again on their own once older than
//! `dir_ttl`. An inode number is given to a (parent, name) pair the first time it is seen and
//! is never reused while mounted; it changes only when the file under that name changes on
//! the server (another file, another inode).

use super::sessions::{Sessions, Walks};
use crate::names::is_safe_component;
use crate::xnat::{Assessor, RemoteFile, Resource, ResourceRef, Scan, Session, XnatApi, XnatError};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

pub const ROOT_INO: u64 = 1;

/// What the root of the mount shows.
#[derive(Debug, Clone)]
pub enum Root {
    /// Every project the user can read, each a folder of its sessions.
    Server,
    /// One project's sessions, by label.
    Project(String),
    /// Just these sessions, each under the name the user gave.
    Sessions(Vec<(String, Session)>),
}

#[derive(Debug, Clone)]
pub enum Node {
    Root,
    Project(Arc<str>),
    Session(Arc<Session>),
    ScansDir(Arc<Session>),
    /// A scan folder, with the scan as its listing gave it (for its attributes).
    Scan(Arc<Session>, Arc<Scan>),
    ScanResources(Arc<Session>, Arc<str>),
    SessionResources(Arc<Session>),
    /// `<session>/assessors`.
    AssessorsDir(Arc<Session>),
    /// An assessor folder, with the assessor as its listing gave it.
    Assessor(Arc<Session>, Arc<Assessor>),
    /// `<session>/assessors/<label>/resources`.
    AssessorResources(Arc<Session>, Arc<Assessor>),
    /// A resource folder, with the resource as its listing gave it (for its attributes).
    Resource(Arc<ResourceRef>, Arc<Resource>),
    /// A folder under `files/`: the resource and the path prefix inside it (`""` for
    /// `files/` itself).
    FilesDir(Arc<ResourceRef>, Arc<str>),
    File(Arc<ResourceRef>, Arc<RemoteFile>),
}

impl Node {
    pub fn is_dir(&self) -> bool {
        !matches!(self, Node::File(..))
    }

    /// The file's size; 0 for folders.
    pub fn size(&self) -> u64 {
        match self {
            Node::File(_, f) => f.size,
            _ => 0,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum TreeError {
    #[error("no such file or folder")]
    NotFound,
    #[error("not a folder")]
    NotDir,
    #[error(transparent)]
    Xnat(#[from] XnatError),
}

/// A folder's entries, in listing order: name and inode.
pub type Children = Arc<Listing>;

/// A folder's entries in listing order, with their inodes, and found by name at once (a
/// resource may hold hundreds of thousands of files).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Listing {
    entries: Vec<(Arc<str>, u64)>,
    by_name: HashMap<Arc<str>, u64>,
}

impl Listing {
    /// Names and inodes, in listing order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.entries.iter().map(|(n, i)| (&**n, *i))
    }

    /// The inode of entry `name`.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.by_name.get(name).copied()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A resource's files, as one listing.
pub type FileList = Arc<Vec<Arc<RemoteFile>>>;

struct Inodes {
    nodes: HashMap<u64, Node>,
    names: HashMap<(u64, Arc<str>), u64>,
    next: u64,
}

/// Told of each file whose listing changed (its folder's inode, its name and its old inode),
/// so that the kernel drops what it kept of the old one.
pub type OnChange = Box<dyn Fn(u64, &str, u64) + Send + Sync>;

pub struct Tree {
    api: Arc<dyn XnatApi>,
    on_change: std::sync::OnceLock<OnChange>,
    root: Root,
    dir_ttl: Duration,
    inodes: RwLock<Inodes>,
    dirs: Mutex<HashMap<u64, (Instant, Children)>>,
    files: Mutex<HashMap<ResourceRef, (Instant, FileList)>>,
    /// Each session's date (by accession ID), for the times of everything in it.
    dates: Mutex<HashMap<String, SystemTime>>,
    /// Each session's whole tree, and crawl-ahead.
    sessions: Sessions,
    /// Where each session folder is listed: its folder's inode and its place in the listing.
    places: Mutex<HashMap<u64, (u64, usize)>>,
    /// Which sessions to fetch ahead.
    walks: Walks,
    scan_names: ScanNames,
}

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

impl Tree {
    pub fn new(api: Arc<dyn XnatApi>, root: Root, dir_ttl: Duration) -> Tree {
        let mut nodes = HashMap::new();
        nodes.insert(ROOT_INO, Node::Root);
        Tree {
            api: api.clone(),
            on_change: std::sync::OnceLock::new(),
            root,
            dir_ttl,
            inodes: RwLock::new(Inodes {
                nodes,
                names: HashMap::new(),
                next: ROOT_INO + 1,
            }),
            dirs: Mutex::new(HashMap::new()),
            files: Mutex::new(HashMap::new()),
            dates: Mutex::new(HashMap::new()),
            sessions: Sessions::new(api, dir_ttl, 0),
            places: Mutex::new(HashMap::new()),
            walks: Walks::default(),
            scan_names: ScanNames::Id,
        }
    }

    /// Fetches the trees of up to `2 * n` sessions that follow an entered one in its
    /// folder, `n` at a time (0: none).
    pub fn with_crawl_ahead(mut self, n: usize) -> Tree {
        self.sessions = Sessions::new(self.api.clone(), self.dir_ttl, n);
        self
    }

    /// Names scan folders as `names` says (by ID unless told otherwise).
    pub fn with_scan_names(mut self, names: ScanNames) -> Tree {
        self.scan_names = names;
        self
    }

    /// Calls `f` for each file whose size or digest a fresh listing shows changed: the file
    /// gets a new inode, and `f` hears of its folder, name and old inode (set once, when the
    /// mount is made).
    pub fn on_change(&self, f: OnChange) {
        let _ = self.on_change.set(f);
    }

    /// Forgets the listings of a resource's files (a file of it turned out to be gone), so
    /// the next lookup asks XNAT again.
    pub fn forget_resource(&self, res: &ResourceRef) {
        self.api.forget_files(res);
        self.files.lock().unwrap().remove(res);
        self.sessions.forget(&res.session_id);
        let inodes = self.inodes.read().unwrap();
        self.dirs.lock().unwrap().retain(
            |ino, _| !matches!(inodes.nodes.get(ino), Some(Node::FilesDir(r, _)) if **r == *res),
        );
    }

    /// The time `node` shows (mtime): the date of its session in XNAT, the same on every
    /// mount (`rsync`, `make` and `find -newer` rely on it); `None` above sessions, or when
    /// XNAT gives no date.
    pub fn time_of(&self, node: &Node) -> Option<SystemTime> {
        let session_id = match node {
            Node::Root | Node::Project(_) => return None,
            Node::Session(s)
            | Node::ScansDir(s)
            | Node::Scan(s, _)
            | Node::ScanResources(s, _)
            | Node::SessionResources(s)
            | Node::AssessorsDir(s)
            | Node::Assessor(s, _)
            | Node::AssessorResources(s, _) => return session_date(&s.date),
            Node::Resource(r, _) | Node::FilesDir(r, _) | Node::File(r, _) => &r.session_id,
        };
        self.dates.lock().unwrap().get(session_id).copied()
    }

    pub fn node(&self, ino: u64) -> Option<Node> {
        self.inodes.read().unwrap().nodes.get(&ino).cloned()
    }

    /// The entries of folder `ino`, from XNAT or from the listing cache.
    pub async fn children(&self, ino: u64) -> Result<Children, TreeError> {
        if let Some((at, kids)) = self.dirs.lock().unwrap().get(&ino)
            && at.elapsed() < self.dir_ttl
        {
            return Ok(kids.clone());
        }
        let node = self.node(ino).ok_or(TreeError::NotFound)?;
        if let Node::Session(s) = &node {
            self.entered(ino, s);
        }
        let listed = self.list(&node).await?;
        let kids = Arc::new(self.register(ino, listed));
        if kids.len() > 10_000 {
            give_back_freed_memory();
        }
        self.dirs
            .lock()
            .unwrap()
            .insert(ino, (Instant::now(), kids.clone()));
        Ok(kids)
    }

    /// A session folder is entered: its tree is fetched in the background, and so are the
    /// trees of the sessions that follow it in its folder (crawl-ahead, once a walk of the
    /// folder shows: see [`Walks`]).
    fn entered(&self, ino: u64, session: &Session) {
        drop(self.sessions.model(session, false));
        if self.sessions.ahead == 0 {
            return;
        }
        let Some((parent, at)) = self.places.lock().unwrap().get(&ino).copied() else {
            return;
        };
        let Some(listing) = self
            .dirs
            .lock()
            .unwrap()
            .get(&parent)
            .map(|(_, k)| k.clone())
        else {
            return;
        };
        let n = 2 * self.sessions.ahead;
        for ino in self.walks.ahead(parent, &listing, at, n) {
            if let Some(Node::Session(s)) = self.node(ino) {
                drop(self.sessions.model(&s, true));
            }
        }
    }

    /// The child `name` of folder `parent`.
    pub async fn lookup(&self, parent: u64, name: &str) -> Result<(u64, Node), TreeError> {
        if !is_safe_component(name) {
            return Err(TreeError::NotFound);
        }
        let kids = self.children(parent).await?;
        let ino = kids.get(name).ok_or(TreeError::NotFound)?;
        let node = self.node(ino).ok_or(TreeError::NotFound)?;
        Ok((ino, node))
    }

    /// Gives each listed child its inode (the same one as before for a name seen before) and
    /// records its current node.
    fn register(&self, parent: u64, listed: Vec<(String, Node)>) -> Listing {
        let mut changed = Vec::new();
        let mut out = Listing {
            entries: Vec::with_capacity(listed.len()),
            by_name: HashMap::with_capacity(listed.len()),
        };
        {
            let mut inodes = self.inodes.write().unwrap();
            for (name, node) in listed {
                let key = (parent, Arc::<str>::from(name));
                let mut ino = match inodes.names.get(&key) {
                    Some(ino) => *ino,
                    None => {
                        let ino = inodes.next;
                        inodes.next += 1;
                        inodes.names.insert(key.clone(), ino);
                        ino
                    }
                };
                if let Node::Session(session) = &node {
                    if let Some(date) = session_date(&session.date) {
                        self.dates.lock().unwrap().insert(session.id.clone(), date);
                    }
                    let at = out.entries.len();
                    self.places.lock().unwrap().insert(ino, (parent, at));
                }
                if let (Some(Node::File(_, was)), Node::File(_, now)) =
                    (inodes.nodes.get(&ino), &node)
                    && (was.size != now.size || was.digest != now.digest)
                {
                    // Another file under the same name: a new inode, so that nothing the
                    // kernel keeps per inode (pages, a passthrough backing file) mixes the
                    // two. The old inode stays for whoever has it open.
                    changed.push((key.1.clone(), ino));
                    ino = inodes.next;
                    inodes.next += 1;
                    inodes.names.insert(key.clone(), ino);
                }
                inodes.nodes.insert(ino, node);
                out.by_name.insert(key.1.clone(), ino);
                out.entries.push((key.1, ino));
            }
        }
        if let Some(tell) = self.on_change.get() {
            for (name, old) in changed {
                tell(parent, &name, old);
            }
        }
        out
    }

    /// A resource's files as listed now, if they were listed within `--dir-ttl` (no request):
    /// for the series read-ahead.
    pub fn known_files(&self, res: &ResourceRef) -> Option<FileList> {
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
        if let Some((at, model)) = self.sessions.fresh(&res.session_id).await
            && let Some(files) = model.files_of(res)
        {
            self.files
                .lock()
                .unwrap()
                .insert(res.clone(), (at, files.clone()));
            return Ok(files);
        }
        let files: FileList = Arc::new(
            self.api
                .files(res)
                .await?
                .into_iter()
                .map(Arc::new)
                .collect(),
        );
        self.files
            .lock()
            .unwrap()
            .insert(res.clone(), (Instant::now(), files.clone()));
        Ok(files)
    }

    async fn list(&self, node: &Node) -> Result<Vec<(String, Node)>, TreeError> {
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
            },
            Node::Project(p) => sessions_by_label(api.sessions(p).await?),
            Node::Session(s) => vec![
                ("scans".into(), Node::ScansDir(s.clone())),
                ("resources".into(), Node::SessionResources(s.clone())),
                ("assessors".into(), Node::AssessorsDir(s.clone())),
            ],
            Node::AssessorsDir(s) => {
                let model = self.sessions.model(s, false).await?;
                let assessors = model.assessors.iter();
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
                let list = model.assessor_resources(&a.id);
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
            Node::File(..) => return Err(TreeError::NotDir),
        };
        Ok(keep_safe_unique(entries))
    }
}

/// Returns the memory freed while a big listing was built to the system (glibc keeps it
/// otherwise, and a daemon that listed a 200,000-file folder once would stay that large).
fn give_back_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory of the allocator.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// XNAT's session date (`2024-03-01`) as midnight UTC of that day.
fn session_date(date: &str) -> Option<SystemTime> {
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

fn resources(
    list: &[super::sessions::ResourceFiles],
    s: &Session,
    scan: Option<&str>,
) -> Vec<(String, Node)> {
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

#[cfg(test)]
#[path = "tree_tests.rs"]
mod tests;
