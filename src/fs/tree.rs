//! The inode table of a mount and its folders' listings, independent of FUSE: what the
//! folders hold is [`super::layout`]'s; the table keeps each listing for `dir_ttl` and numbers
//! its entries, under one lock order (`inodes`, then `dirs`, then `files`).
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

use super::file_lists::{KnownFiles, give_back_freed_memory};
use super::inodes::Inodes;
use super::layout::{Layout, ScanNames, session_date};
use super::node::{Children, Listing, Node, Root, TreeError, another};
use super::sessions::Walks;
use crate::names::is_safe_component;
use crate::xnat::{FileList, ResourceRef, Session, XnatApi};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

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
    on_change: std::sync::OnceLock<OnChange>,
    dir_ttl: Duration,
    /// Lock order: `inodes`, then `dirs`, then `files`.
    inodes: RwLock<Inodes>,
    /// The listings of folders in the inode table, by inode.
    dirs: Mutex<HashMap<u64, Dir>>,
    /// Shared with the layout (and its sessions), to reuse what it holds; a resource's list
    /// goes with its `files/` folder.
    files: KnownFiles,
    /// Each session's date (by accession ID), for the times of everything in it.
    dates: Mutex<HashMap<String, SystemTime>>,
    /// What the folders are, and where their listings come from.
    layout: Layout,
    /// Where each session folder is listed: its folder's inode and its place in the listing.
    places: Mutex<HashMap<u64, (u64, usize)>>,
    /// Which sessions to fetch ahead.
    walks: Walks,
    /// Listings begun so far: numbers each listing in the order it was begun.
    listings_begun: AtomicU64,
}

impl Tree {
    pub fn new(api: Arc<dyn XnatApi>, root: Root, dir_ttl: Duration) -> Tree {
        let files = KnownFiles::default();
        Tree {
            on_change: std::sync::OnceLock::new(),
            dir_ttl,
            inodes: RwLock::new(Inodes::new()),
            dirs: Mutex::new(HashMap::new()),
            files: files.clone(),
            dates: Mutex::new(HashMap::new()),
            layout: Layout::new(api, root, dir_ttl, files),
            places: Mutex::new(HashMap::new()),
            walks: Walks::default(),
            listings_begun: AtomicU64::new(0),
        }
    }

    /// Fetches the trees of up to `2 * n` sessions that follow an entered one in its
    /// folder, `n` at a time (0: none).
    pub fn with_crawl_ahead(mut self, n: usize) -> Tree {
        self.layout.crawl_ahead(n);
        self
    }

    /// Names scan folders as `names` says (by ID unless told otherwise).
    pub fn with_scan_names(mut self, names: ScanNames) -> Tree {
        self.layout.scan_names = names;
        self
    }

    /// Shows a [`Root::Bids`] root as a BIDS view, reading small files (a session's
    /// `*_scans.tsv`) with `read`, naming scans without BIDS names by `map` (`None`: the
    /// project's own map, if it has one); `server_url` names the source in its description.
    pub fn with_bids(
        mut self,
        server_url: &str,
        read: Arc<dyn crate::bids::ReadFile>,
        map: Option<crate::bids::bidsmap::BidsMap>,
    ) -> Tree {
        self.layout.show_bids(server_url, read, map);
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
        self.layout.forget_resource(res);
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
        inodes.count(ino, &node);
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
        self.inodes.write().unwrap().count(ino, node);
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
            Node::Root | Node::Project(_) | Node::BidsDir(_) | Node::Made(_) => return None,
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

    /// A resource's files as listed now, if they were listed within `--dir-ttl` (no request):
    /// for the series read-ahead.
    pub fn known_files(&self, res: &ResourceRef) -> Option<FileList> {
        self.layout.known_files(res)
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
        let listed = self.layout.list(&node).await?;
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
        drop(self.layout.sessions.model(session, false));
        if self.layout.sessions.ahead == 0 {
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
        let n = 2 * self.layout.sessions.ahead;
        for ino in self.walks.ahead(parent, &listing, at, n) {
            let node = listing.nodes().find(|(_, i, _)| *i == ino);
            if let Some((_, _, Node::Session(s))) = node {
                drop(self.layout.sessions.model(s, true));
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
        let mut out = Listing::unnumbered(listed);
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
}

#[cfg(test)]
#[path = "tree_tests.rs"]
mod tests;
