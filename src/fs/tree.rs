//! The directory model and inode table of a mount, independent of FUSE.
//!
//! ```text
//! <root>/[<project>/]<session>/scans/<scan>/resources/<label>/files/<path...>
//!                              resources/<label>/files/<path...>
//!                              assessors/<assessor label>/resources/<label>/files/<path...>
//!                              reconstructions/<ID>/resources/<label>/files/<path...>
//! ```
//! `assessors/` and `reconstructions/` are always there, empty when the session has none (as
//! `resources/` is); a reconstruction has no label in XNAT, its ID names it.
//! Directories are listed lazily from XNAT and kept for `dir_ttl`. Everything inside a
//! session comes from its whole tree, fetched when the session is first entered (see
//! [`super::sessions`]); one resource's files are listed again on their own once older than
//! `dir_ttl`.
//!
//! Inodes: each entry of a folder's listing has a number, kept when the folder is listed
//! again (it changes only when the file under that name changes on the server: another file,
//! another inode). The inode table holds only what the kernel holds: an inode enters it when
//! it is handed to the kernel (a lookup's answer, a readdirplus entry) and leaves it when the
//! kernel has forgotten it as often as it was given it (FUSE `forget`) and no file or folder
//! handle of it is open; the root stays. Counting and the decision to remove are made under
//! the table's lock, and a lookup finds its name in the listing, never in the table: a
//! lookup racing a forget gives the kernel an inode that stays in the table, and never
//! answers ENOENT for a listed name. A folder that leaves the table takes its listing with it
//! (a 200,000-file listing is most of a daemon's memory), and is listed anew when the kernel
//! looks it up again; its own name and number stay in its parent's listing.

use super::sessions::{Sessions, Walks};
use crate::names::is_safe_component;
use crate::xnat::{
    Assessor, Derived, RemoteFile, Resource, ResourceRef, Scan, Session, XnatApi, XnatError,
};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// `<session>/assessors` or `<session>/reconstructions`.
    AssessorsDir(Arc<Session>, Derived),
    /// An assessor (or reconstruction) folder, as its listing gave it.
    Assessor(Arc<Session>, Arc<Assessor>),
    /// `<session>/assessors/<label>/resources` (or `reconstructions/<ID>/resources`).
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

/// A folder's entries in listing order, with their inodes and nodes, and found by name at
/// once (a resource may hold hundreds of thousands of files).
#[derive(Debug, Default)]
pub struct Listing {
    entries: Vec<Entry>,
    /// Each name's place in `entries`.
    by_name: HashMap<Arc<str>, u32>,
}

/// Listings are the same when they have the same names and inodes, in the same order.
impl PartialEq for Listing {
    fn eq(&self, other: &Listing) -> bool {
        self.iter().eq(other.iter())
    }
}

#[derive(Debug)]
struct Entry {
    name: Arc<str>,
    ino: u64,
    node: Node,
}

impl Listing {
    /// Names and inodes, in listing order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.entries.iter().map(|e| (&*e.name, e.ino))
    }

    /// Names, inodes and nodes, in listing order.
    pub fn nodes(&self) -> impl Iterator<Item = (&str, u64, &Node)> {
        self.entries.iter().map(|e| (&*e.name, e.ino, &e.node))
    }

    /// Names, inodes and nodes from entry `start` on (none past the end), in listing order.
    pub fn nodes_from(&self, start: usize) -> impl Iterator<Item = (&str, u64, &Node)> {
        let rest = self.entries.get(start..).unwrap_or_default();
        rest.iter().map(|e| (&*e.name, e.ino, &e.node))
    }

    /// The inode of entry `name`.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.entry(name).map(|(ino, _)| ino)
    }

    /// The inode and node of entry `name`.
    pub fn entry(&self, name: &str) -> Option<(u64, &Node)> {
        let e = &self.entries[*self.by_name.get(name)? as usize];
        Some((e.ino, &e.node))
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

/// The listing of `files`. Not `collect()`ed: that would keep the files' own vector's
/// allocation, ten times the size of the pointers it then holds (16 MB for 200,000 files).
pub fn file_list(files: Vec<RemoteFile>) -> FileList {
    let mut list = Vec::with_capacity(files.len());
    list.extend(files.into_iter().map(Arc::new));
    Arc::new(list)
}

/// `held` when `files` (the same resource listed again) are the same files in the same
/// order, else the listing of `files`: a listing fetched again unchanged, as most are, costs
/// no second copy of a resource's files (and changes none of their inodes).
pub fn same_or_new(held: Option<FileList>, files: Vec<RemoteFile>) -> FileList {
    match held {
        Some(held)
            if held.len() == files.len() && held.iter().zip(&files).all(|(h, f)| **h == *f) =>
        {
            held
        }
        _ => file_list(files),
    }
}

/// The file lists of resources, by resource, with when each was listed: the ones the mount
/// holds (see [`Tree`]), which a session's tree fetched again reuses where unchanged.
pub type KnownFiles = Arc<Mutex<HashMap<ResourceRef, (Instant, FileList)>>>;

/// The inodes the kernel holds or that have open handles (and the root).
struct Inodes {
    live: HashMap<u64, Live>,
    /// The next number to give a new entry.
    next: u64,
}

struct Live {
    node: Node,
    /// How many times the kernel was given the inode and has not forgotten it yet.
    lookups: u64,
    /// Open file and folder handles.
    opens: u32,
}

impl Inodes {
    /// Whether `ino` may leave the table, and if so takes it out.
    fn remove_if_unused(&mut self, ino: u64) -> Option<Node> {
        let live = self.live.get(&ino)?;
        if ino == ROOT_INO || live.lookups > 0 || live.opens > 0 {
            return None;
        }
        self.live.remove(&ino).map(|l| l.node)
    }
}

/// A folder's listing and when it was made (`None`: to be listed again before it is used,
/// keeping its numbers).
struct Dir {
    at: Option<Instant>,
    kids: Children,
    /// The order in which its listing was begun among all listings (see [`Tree::store`]).
    begun: u64,
}

impl Dir {
    fn fresh(&self, ttl: Duration) -> Option<&Children> {
        self.at
            .is_some_and(|at| at.elapsed() < ttl)
            .then_some(&self.kids)
    }
}

/// Told of each file whose listing changed (its folder's inode, its name and its old inode),
/// so that the kernel drops what it kept of the old one.
pub type OnChange = Box<dyn Fn(u64, &str, u64) + Send + Sync>;

pub struct Tree {
    api: Arc<dyn XnatApi>,
    on_change: std::sync::OnceLock<OnChange>,
    root: Root,
    dir_ttl: Duration,
    /// Lock order: `inodes`, then `dirs`, then `files`.
    inodes: RwLock<Inodes>,
    /// The listings of folders in the inode table, by inode.
    dirs: Mutex<HashMap<u64, Dir>>,
    /// Shared with `sessions`, to reuse what it holds.
    files: KnownFiles,
    /// Each session's date (by accession ID), for the times of everything in it.
    dates: Mutex<HashMap<String, SystemTime>>,
    /// Each session's whole tree, and crawl-ahead.
    sessions: Sessions,
    /// Where each session folder is listed: its folder's inode and its place in the listing.
    places: Mutex<HashMap<u64, (u64, usize)>>,
    /// Which sessions to fetch ahead.
    walks: Walks,
    scan_names: ScanNames,
    /// Listings begun so far: numbers each listing in the order it was begun.
    listings_begun: AtomicU64,
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
        let mut live = HashMap::new();
        let root_live = Live {
            node: Node::Root,
            lookups: 0,
            opens: 0,
        };
        live.insert(ROOT_INO, root_live);
        let files = KnownFiles::default();
        Tree {
            api: api.clone(),
            on_change: std::sync::OnceLock::new(),
            root,
            dir_ttl,
            inodes: RwLock::new(Inodes {
                live,
                next: ROOT_INO + 1,
            }),
            dirs: Mutex::new(HashMap::new()),
            files: files.clone(),
            dates: Mutex::new(HashMap::new()),
            sessions: Sessions::new(api, dir_ttl, 0, files),
            places: Mutex::new(HashMap::new()),
            walks: Walks::default(),
            scan_names: ScanNames::Id,
            listings_begun: AtomicU64::new(0),
        }
    }

    /// Fetches the trees of up to `2 * n` sessions that follow an entered one in its
    /// folder, `n` at a time (0: none).
    pub fn with_crawl_ahead(mut self, n: usize) -> Tree {
        self.sessions = Sessions::new(self.api.clone(), self.dir_ttl, n, self.files.clone());
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
    /// the next lookup asks XNAT again (names listed before keep their inodes).
    pub fn forget_resource(&self, res: &ResourceRef) {
        self.api.forget_files(res);
        self.files.lock().unwrap().remove(res);
        self.sessions.forget(&res.session_id);
        let inodes = self.inodes.read().unwrap();
        for (ino, dir) in self.dirs.lock().unwrap().iter_mut() {
            if matches!(inodes.live.get(ino), Some(l) if matches!(&l.node, Node::FilesDir(r, _) if **r == *res))
            {
                dir.at = None;
            }
        }
    }

    /// The kernel was given entry `name` of folder `parent` (a lookup's answer), as found in
    /// `kids`, or in the folder's current listing if that has replaced `kids` since: counted,
    /// and in the table until the kernel forgets it. `None`: no such name.
    fn hand_out_name(&self, parent: u64, kids: &Children, name: &str) -> Option<(u64, Node)> {
        let mut inodes = self.inodes.write().unwrap();
        let dirs = self.dirs.lock().unwrap();
        let listing = dirs.get(&parent).map_or(kids, |d| &d.kids);
        let (ino, node) = listing.entry(name)?;
        let node = node.clone();
        drop(dirs);
        count(&mut inodes, ino, &node);
        Some((ino, node))
    }

    /// Entry `name` of folder `parent` as its current listing has it, when that listing is
    /// another than `kids` (an open folder's copy); `None` when the name is not in it, or
    /// when `kids` is the current listing or the folder has none now (the caller's entry of
    /// `kids` is the one, with no second look-up per name of a big folder).
    pub fn current_entry(&self, parent: u64, kids: &Children, name: &str) -> Option<(u64, Node)> {
        let dirs = self.dirs.lock().unwrap();
        let listing = dirs.get(&parent).map_or(kids, |d| &d.kids);
        if Arc::ptr_eq(listing, kids) {
            return None;
        }
        listing.entry(name).map(|(ino, node)| (ino, node.clone()))
    }

    /// The kernel was given inode `ino` (node `node`) as a readdirplus entry: counted, and in
    /// the table until the kernel forgets it.
    pub fn hand_out(&self, ino: u64, node: &Node) {
        count(&mut self.inodes.write().unwrap(), ino, node);
    }

    /// The kernel was given entry `name` of the listing `kids` (a readdirplus entry).
    #[cfg(test)]
    pub fn hand_out_entry(&self, kids: &Children, name: &str) {
        if let Some((ino, node)) = kids.entry(name) {
            self.hand_out(ino, node);
        }
    }

    /// The kernel forgot inode `ino` `n` times (FUSE `forget`). Once it holds it no more and
    /// no handle of it is open, it leaves the table, a folder with its listing.
    pub fn forget(&self, ino: u64, n: u64) {
        let mut inodes = self.inodes.write().unwrap();
        let Some(live) = inodes.live.get_mut(&ino) else {
            return;
        };
        live.lookups = live.lookups.saturating_sub(n);
        self.remove_if_unused(inodes, ino);
    }

    /// A file or folder handle of `ino` was opened: its node, and the inode stays in the table
    /// until [`Self::closed`]. `None`: not in the table.
    pub fn opened(&self, ino: u64) -> Option<Node> {
        let mut inodes = self.inodes.write().unwrap();
        let live = inodes.live.get_mut(&ino)?;
        live.opens += 1;
        Some(live.node.clone())
    }

    /// A handle of `ino` opened with [`Self::opened`] was closed.
    pub fn closed(&self, ino: u64) {
        let mut inodes = self.inodes.write().unwrap();
        let Some(live) = inodes.live.get_mut(&ino) else {
            return;
        };
        live.opens = live.opens.saturating_sub(1);
        self.remove_if_unused(inodes, ino);
    }

    /// Takes `ino` out of the table if nothing holds it, with what only it needed: its
    /// listing, and for a resource's `files/` folder the resource's files kept for it.
    fn remove_if_unused(&self, mut inodes: std::sync::RwLockWriteGuard<'_, Inodes>, ino: u64) {
        let Some(node) = inodes.remove_if_unused(ino) else {
            return;
        };
        // Under the table's lock: a listing under way stores itself only for an inode in
        // the table (see `store`).
        let dir = self.dirs.lock().unwrap().remove(&ino);
        let files = match &node {
            Node::FilesDir(res, prefix) if prefix.is_empty() => {
                self.files.lock().unwrap().remove(&**res)
            }
            _ => None,
        };
        drop(inodes);
        if let Some(d) = &dir {
            // A folder of sessions: their places in this listing (for crawl-ahead) go with
            // it, and so does its walk; a new listing numbers them anew.
            if matches!(d.kids.nodes().next(), Some((_, _, Node::Session(_)))) {
                let mut places = self.places.lock().unwrap();
                for (_, child) in d.kids.iter() {
                    places.remove(&child);
                }
            }
            self.walks.forget(ino);
        }
        // Dropped outside the locks: a big listing takes a while to free.
        let entries = dir.as_ref().map_or(0, |d| d.kids.len());
        drop((dir, files));
        if entries > 0 {
            tracing::debug!("inode {ino} forgotten with its listing of {entries} entries");
        }
        if entries > 10_000 {
            give_back_freed_memory();
        }
    }

    /// How many inodes the table holds (the root included).
    pub fn inode_count(&self) -> usize {
        self.inodes.read().unwrap().live.len()
    }

    /// How many folder listings are kept.
    pub fn listing_count(&self) -> usize {
        self.dirs.lock().unwrap().len()
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
            | Node::AssessorsDir(s, _)
            | Node::Assessor(s, _)
            | Node::AssessorResources(s, _) => return session_date(&s.date),
            Node::Resource(r, _) | Node::FilesDir(r, _) | Node::File(r, _) => &r.session_id,
        };
        self.dates.lock().unwrap().get(session_id).copied()
    }

    /// The node of inode `ino`, if it is in the table.
    pub fn node(&self, ino: u64) -> Option<Node> {
        self.inodes
            .read()
            .unwrap()
            .live
            .get(&ino)
            .map(|l| l.node.clone())
    }

    /// The entries of folder `ino`, from XNAT or from the listing cache.
    pub async fn children(&self, ino: u64) -> Result<Children, TreeError> {
        if let Some(kids) = self
            .dirs
            .lock()
            .unwrap()
            .get(&ino)
            .and_then(|d| d.fresh(self.dir_ttl))
        {
            return Ok(kids.clone());
        }
        let node = self.node(ino).ok_or(TreeError::NotFound)?;
        if let Node::Session(s) = &node {
            self.entered(ino, s);
        }
        let begun = self.listings_begun.fetch_add(1, Ordering::Relaxed);
        let listed = self.list(&node).await?;
        let kids = self.store(ino, listed, begun);
        if kids.len() > 10_000 {
            tracing::debug!("folder {ino} listed: {} entries", kids.len());
            give_back_freed_memory();
        }
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
            .map(|d| d.kids.clone())
        else {
            return;
        };
        let n = 2 * self.sessions.ahead;
        for ino in self.walks.ahead(parent, &listing, at, n) {
            let node = listing.nodes().find(|(_, i, _)| *i == ino);
            if let Some((_, _, Node::Session(s))) = node {
                drop(self.sessions.model(s, true));
            }
        }
    }

    /// The child `name` of folder `parent`, handed to the kernel: it stays in the inode table
    /// until the kernel forgets it ([`Self::forget`]).
    pub async fn lookup(&self, parent: u64, name: &str) -> Result<(u64, Node), TreeError> {
        if !is_safe_component(name) {
            return Err(TreeError::NotFound);
        }
        let kids = self.children(parent).await?;
        self.hand_out_name(parent, &kids, name)
            .ok_or(TreeError::NotFound)
    }

    /// Gives each listed child of folder `parent` its inode (the one its name had in the
    /// folder's listing before, unless it is another file now) and keeps the listing, if the
    /// folder is still in the inode table. All under the table's lock: two listings of one
    /// folder at once give a new name one number. A listing begun before the one the folder
    /// holds is not stored: of two listings of one folder around a change on the server, the
    /// older one, if it came last, would undo the newer (the folder then shows the old file,
    /// and its reads fail until the next listing). The caller gets the newer one instead.
    fn store(&self, parent: u64, listed: Vec<(String, Node)>, begun: u64) -> Children {
        // Built before the lock; only the numbers are given under it.
        let mut out = Listing {
            entries: Vec::with_capacity(listed.len()),
            by_name: HashMap::with_capacity(listed.len()),
        };
        for (name, node) in listed {
            let name = Arc::<str>::from(name);
            out.by_name.insert(name.clone(), out.entries.len() as u32);
            out.entries.push(Entry { name, ino: 0, node });
        }
        let mut changed = Vec::new();
        let mut inodes = self.inodes.write().unwrap();
        let mut dirs = self.dirs.lock().unwrap();
        if let Some(newer) = dirs.get(&parent).filter(|d| d.begun > begun) {
            let kids = newer.kids.clone();
            drop(dirs);
            drop(inodes);
            drop(out); // outside the locks
            return kids;
        }
        let before = dirs.get(&parent).map(|d| d.kids.clone());
        for (at, e) in out.entries.iter_mut().enumerate() {
            e.ino = match before.as_ref().and_then(|b| b.entry(&e.name)) {
                Some((ino, was)) if another(was, &e.node) => {
                    // Another file (or a folder) under the same name: a new inode, so that
                    // nothing the kernel keeps per inode (pages, a passthrough backing
                    // file) mixes the two. The old inode stays for whoever holds it.
                    changed.push((e.name.clone(), ino));
                    0
                }
                Some((ino, _)) => ino,
                None => 0,
            };
            if e.ino == 0 {
                e.ino = inodes.next;
                inodes.next += 1;
            }
            if let Node::Session(session) = &e.node {
                if let Some(date) = session_date(&session.date) {
                    self.dates.lock().unwrap().insert(session.id.clone(), date);
                }
                self.places.lock().unwrap().insert(e.ino, (parent, at));
            }
            if let Some(live) = inodes.live.get_mut(&e.ino) {
                live.node = e.node.clone();
            }
        }
        let kids = Arc::new(out);
        // A folder that left the table while it was listed keeps no listing (nothing would
        // drop it).
        if inodes.live.contains_key(&parent) {
            let dir = Dir {
                at: Some(Instant::now()),
                kids: kids.clone(),
                begun,
            };
            dirs.insert(parent, dir);
        }
        drop(dirs);
        drop(inodes);
        if let Some(tell) = self.on_change.get() {
            for (name, old) in changed {
                tell(parent, &name, old);
            }
        }
        // The listing it replaced is freed here, outside the locks.
        drop(before);
        kids
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
        // catalog: `crate::xnat::resource_tree`), is an I/O error of its folder alone.
        let listed = self.api.files(res).await.map_err(|e| match &e {
            XnatError::NotFound(path)
                if unreadable && !crate::xnat::remembering::never_listed_offline(path) =>
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
            Node::File(..) => return Err(TreeError::NotDir),
        };
        Ok(keep_safe_unique(entries))
    }
}

/// Whether `now` is another file than `was` (the same name in a fresh listing), or a file
/// where a folder was, or the other way round.
fn another(was: &Node, now: &Node) -> bool {
    match (was, now) {
        (Node::File(_, was), Node::File(_, now)) => {
            was.size != now.size || was.digest != now.digest
        }
        _ => was.is_dir() != now.is_dir(),
    }
}

/// Counts one more handing of inode `ino` (node `node`) to the kernel, entering it in the
/// table if it is not there.
fn count(inodes: &mut Inodes, ino: u64, node: &Node) {
    let live = inodes.live.entry(ino).or_insert_with(|| Live {
        node: node.clone(),
        lookups: 0,
        opens: 0,
    });
    live.lookups += 1;
}

/// Returns the memory freed while a big listing was built to the system (glibc keeps it
/// otherwise, and a daemon that listed a 200,000-file folder once would stay that large).
pub(super) fn give_back_freed_memory() {
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
