//! The filesystem core: lookup, getattr, readdir, open, read and release over the directory
//! model ([`tree`]), the downloads ([`crate::fetch`]) and the cache, answering with
//! [`Errno`]s and holding no FUSE types, so that it is tested without mounting. The FUSE
//! adapter ([`fuse`]) only translates kernel requests into these calls.

pub mod bids_layout;
pub mod errno;
pub mod file_lists;
pub mod fuse;
pub mod inodes;
pub mod interrupt;
pub mod layout;
pub mod node;
pub mod sessions;
pub mod tree;
pub mod xattrs;

#[cfg(test)]
mod bids_tests;
#[cfg(test)]
mod forget_tests;
#[cfg(test)]
mod series_tests;
#[cfg(test)]
mod tests;

pub use errno::Errno;

use crate::cache::{Pinned, read_at};
use crate::fetch::Fetcher;
use crate::fetch::series::SeriesConfig;
use crate::fetch::series_ahead::SeriesAhead;
use crate::xnat::{RemoteFile, ResourceRef};
use node::{Children, Node};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};
use tokio::sync::OnceCell;
use tree::Tree;

/// How long a read through a handle whose read just failed gets the same failure at once.
const RETRY_GETS_THE_SAME_ANSWER: Duration = Duration::from_secs(1);

pub struct FsOptions {
    /// How long the kernel may keep names and attributes.
    pub attr_ttl: Duration,
    /// Bound on any wait for the server in one request.
    pub io_timeout: Duration,
    pub uid: u32,
    pub gid: u32,
    /// XNAT's metadata shown as extended attributes. Off, every attribute request is ENOSYS,
    /// which the kernel remembers: no other comes (`ls -l` asks for two per file otherwise).
    pub xattrs: bool,
    /// The read-ahead of a resource's files for a sequential reader (`--series-readahead`).
    pub series: SeriesConfig,
}

/// What `stat` shows of a file or folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub is_dir: bool,
    pub size: u64,
    /// 0o555 for folders, 0o444 for files: the mount is read-only.
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    /// The session's date in XNAT for what is in a session; the mount's time above.
    pub time: SystemTime,
}

/// How a file was opened.
///
/// Linux refuses to mix the two kinds on one inode: while a passthrough open is live, every
/// other open of the inode must be passthrough too (with the same backing file), and while a
/// page-cached open is live, no passthrough open may start; either mistake fails the open
/// with EIO (`fs/fuse/iomode.c`). [`XnatFs::open`] counts the open handles of each kind per
/// inode and chooses so that they never conflict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// The kernel reads the cache file at `path` directly (FUSE passthrough). When other
    /// passthrough handles of the inode are open, their backing file is shared, even if
    /// `path` is gone from the cache since.
    Passthrough { fh: u64, path: PathBuf },
    /// Reads come to [`XnatFs::read`]. `keep_cache`: the file was complete and verified in
    /// the cache at open, so the kernel may keep the pages it read before; otherwise it drops
    /// them (pages of a download that failed its check must never be served again).
    /// `direct`: the kernel must send every read here, whatever size it holds (a file listed
    /// with no size shows as 0 bytes until its body says how long it is).
    Served {
        fh: u64,
        keep_cache: bool,
        direct: bool,
    },
}

struct OpenFile {
    ino: u64,
    res: Arc<ResourceRef>,
    file: Arc<RemoteFile>,
    /// The complete cache file, from open or from the first read after its download: pinned,
    /// kept from eviction while the handle is open, let go when it is dropped. (A copy read
    /// through a handle opened before it was complete used to stay unpinned: evicted while
    /// open, its space stayed taken until the close.)
    local: OnceLock<Pinned>,
    /// A body read through this handle failed its check: bytes served from it before may be
    /// wrong, so every later read fails too (the kernel retries a failed page, and a fresh
    /// download could answer it: the reader must still learn of the bad file).
    bad: std::sync::atomic::AtomicBool,
    /// The kernel was told this file's true size (see [`XnatFs::learnt_size`]).
    told_size: std::sync::atomic::AtomicBool,
    /// The last read that failed through this handle, and when: the kernel retries a failed
    /// page at once, through the same handle, and gets the same answer (a fresh download for
    /// it would double the wait of the read that already failed; a new open starts anew).
    failed: Mutex<Option<(std::time::Instant, Errno)>>,
}

enum Handle {
    File(Arc<OpenFile>),
    /// A cache file the kernel reads directly, pinned in the cache while open when this
    /// handle found it there (one that joins live passthrough handles whose copy is gone
    /// since pins nothing: the kernel reads the backing file they share).
    Passthrough {
        ino: u64,
        pin: Option<Pinned>,
    },
    /// A file xnatfs writes (its inode and bytes), served from memory.
    Made(u64, bytes::Bytes),
    /// An open folder (its inode): listed once, so a listing read in several calls stays
    /// consistent.
    Dir(u64, Arc<OnceCell<Children>>),
}

/// Told of a file whose true size differs from the one the kernel was given (its inode), so
/// that the kernel asks for its attributes again.
pub type OnResize = Box<dyn Fn(u64) + Send + Sync>;

pub struct XnatFs {
    tree: Arc<Tree>,
    on_resize: OnceLock<OnResize>,
    fetcher: Arc<Fetcher>,
    /// Fetches a resource's files ahead of a reader who opens them one after another.
    series: Option<Arc<SeriesAhead>>,
    opts: FsOptions,
    mounted_at: SystemTime,
    handles: Mutex<HashMap<u64, Handle>>,
    /// Open file handles per inode, of each kind.
    open_kinds: Mutex<HashMap<u64, OpenKinds>>,
    next_fh: AtomicU64,
}

/// How many handles of an inode are open, of each kind.
#[derive(Debug, Default, Clone, Copy)]
struct OpenKinds {
    passthrough: u32,
    served: u32,
}

impl XnatFs {
    pub fn new(tree: Arc<Tree>, fetcher: Arc<Fetcher>, opts: FsOptions) -> Arc<XnatFs> {
        let fs = Arc::new(XnatFs {
            tree,
            series: SeriesAhead::start(fetcher.clone(), opts.series),
            on_resize: OnceLock::new(),
            fetcher,
            opts,
            mounted_at: SystemTime::now(),
            handles: Mutex::new(HashMap::new()),
            open_kinds: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
        });
        // A body refused after bytes of it were served, whoever was reading: every handle
        // open on the file fails from then on (see `mark_bad`).
        let this = Arc::downgrade(&fs);
        fs.fetcher.on_refused(Box::new(move |file| {
            if let Some(fs) = this.upgrade() {
                fs.mark_bad_where(|f| {
                    f.uri() == file.uri() && f.size == file.size && f.digest == file.digest
                });
            }
        }));
        fs
    }

    pub fn options(&self) -> &FsOptions {
        &self.opts
    }

    /// Files the series read-ahead started fetching.
    pub fn series_started(&self) -> u64 {
        self.series.as_ref().map_or(0, |s| s.started())
    }

    /// Calls `f` with the inode of each file whose true size differs from the one the kernel
    /// was told (a stale listed size), before the request that found it is answered (set once,
    /// when the mount is made).
    pub fn on_resize(&self, f: OnResize) {
        let _ = self.on_resize.set(f);
    }

    fn attr(&self, ino: u64, node: &Node) -> Attr {
        let is_dir = node.is_dir();
        // A file's true size where its listed one proved stale (see `crate::fetch::sizes`).
        let size = match node {
            Node::File(_, f) => self.fetcher.sizes().of(f).unwrap_or(f.size),
            _ => node.size(),
        };
        Attr {
            ino,
            is_dir,
            size,
            perm: if is_dir { 0o555 } else { 0o444 },
            uid: self.opts.uid,
            gid: self.opts.gid,
            time: self.tree.time_of(node).unwrap_or(self.mounted_at),
        }
    }

    fn add_handle(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::SeqCst);
        self.handles.lock().unwrap().insert(fh, h);
        fh
    }

    /// The child `name` of folder `parent`, listing the folder first if needed.
    pub async fn lookup(&self, parent: u64, name: &str) -> Result<Attr, Errno> {
        match self.tree.lookup(parent, name).await {
            Ok((ino, node)) => Ok(self.attr(ino, &node)),
            Err(e) => {
                let errno = Errno::from(&e);
                if errno != Errno::NOENT {
                    tracing::warn!("lookup of {name:?} failed: {e}");
                }
                Err(errno)
            }
        }
    }

    pub fn getattr(&self, ino: u64) -> Result<Attr, Errno> {
        let node = self.tree.node(ino).ok_or(Errno::NOENT)?;
        Ok(self.attr(ino, &node))
    }

    /// The value of extended attribute `name` of `ino` (see [`xattrs`]): from what the
    /// listings gave, never a request.
    pub fn getxattr(&self, ino: u64, name: &[u8]) -> Result<Vec<u8>, Errno> {
        if !self.opts.xattrs {
            return Err(Errno::NOSYS);
        }
        // Before the lookup: `ls -l` asks this of every file it lists.
        xattrs::namespace_supported(name)?;
        let node = self.tree.node(ino).ok_or(Errno::NOENT)?;
        xattrs::value(&node, name)
    }

    /// The names of the extended attributes of `ino`, each ending in NUL.
    pub fn listxattr(&self, ino: u64) -> Result<Vec<u8>, Errno> {
        if !self.opts.xattrs {
            return Err(Errno::NOSYS);
        }
        let node = self.tree.node(ino).ok_or(Errno::NOENT)?;
        Ok(xattrs::names(&node))
    }

    /// Setting or removing an extended attribute: refused, the mount is read-only.
    pub fn change_xattr(&self, ino: u64) -> Result<(), Errno> {
        self.tree.node(ino).ok_or(Errno::NOENT)?;
        Err(Errno::ROFS)
    }

    /// Whether the caller may access `ino` (`write`: for writing, which it never may).
    pub fn access(&self, ino: u64, write: bool) -> Result<(), Errno> {
        if write {
            return Err(Errno::ROFS);
        }
        self.tree.node(ino).map(drop).ok_or(Errno::NOENT)
    }

    /// Opens file `ino` for reading (`write`: opened for writing or truncation, refused).
    /// With `passthrough` allowed, a file complete in the cache is handed to the kernel, as
    /// far as the other open handles of the inode let it (see [`Opened`]).
    pub fn open(&self, ino: u64, write: bool, passthrough: bool) -> Result<Opened, Errno> {
        if write {
            return Err(Errno::ROFS);
        }
        // The inode stays in the table while the handle is open (see `release`).
        let (res, file) = match self.tree.opened(ino) {
            Some(Node::File(res, file)) => (res, file),
            Some(Node::Made(bytes)) => {
                let fh = self.add_handle(Handle::Made(ino, bytes));
                return Ok(Opened::Served {
                    fh,
                    keep_cache: true,
                    direct: false,
                });
            }
            Some(_) => {
                self.tree.closed(ino);
                return Err(Errno::ISDIR);
            }
            None => return Err(Errno::NOENT),
        };
        let cache = self.fetcher.cache();
        // Before the lock: a copy kept before digests were kept is hashed once here. The copy
        // checked is held shared while open, so that no process sharing the cache evicts it.
        let pin = cache.pin(&res, &file);
        // Verified against this listing, with another size than listed (a stale catalog).
        let resized = pin
            .as_ref()
            .and_then(|p| p.file().metadata().ok())
            .filter(|meta| self.fetcher.sizes().learn(&file, meta.len()))
            .map(|meta| meta.len() > file.size);
        if let Some(series) = &self.series {
            series.opened(&res, &file, pin.is_none(), || self.tree.known_files(&res));
        }
        let mut kinds = self.open_kinds.lock().unwrap();
        let open = kinds.entry(ino).or_default();
        // The kernel asks for the size again before it reads past what it took for the end.
        // A smaller size is told only while no other handle of the file is open: told
        // during a read, the kernel would keep the old size and serve zeros up to it (see
        // `learnt_size`).
        if resized.is_some_and(|grew| grew || (open.passthrough == 0 && open.served == 0)) {
            self.tell_resized(ino);
        }
        let passthrough =
            passthrough && (open.passthrough > 0 || (open.served == 0 && pin.is_some()));
        if passthrough {
            open.passthrough += 1;
            // Joining live passthrough handles whose cache copy is gone: the path only names
            // the file; the kernel reads the backing file they share.
            let path = match pin.as_ref().map(|p| p.path().to_path_buf()) {
                Some(p) => p,
                None => cache
                    .file_path(&res, &file.path)
                    .unwrap_or_else(|| PathBuf::from(&file.path)),
            };
            let fh = self.add_handle(Handle::Passthrough { ino, pin });
            return Ok(Opened::Passthrough { fh, path });
        }
        open.served += 1;
        let keep_cache = pin.is_some();
        let direct = file.size_unknown && self.fetcher.sizes().of(&file).is_none();
        let local = OnceLock::new();
        if let Some(p) = pin {
            let _ = local.set(p);
        }
        let fh = self.add_handle(Handle::File(Arc::new(OpenFile {
            ino,
            res,
            file,
            local,
            bad: Default::default(),
            told_size: Default::default(),
            failed: Mutex::new(None),
        })));
        Ok(Opened::Served {
            fh,
            keep_cache,
            direct,
        })
    }

    fn open_file(&self, fh: u64) -> Result<Arc<OpenFile>, Errno> {
        match self.handles.lock().unwrap().get(&fh) {
            Some(Handle::File(f)) => Ok(f.clone()),
            _ => Err(Errno::BADF),
        }
    }

    /// Reads `size` bytes at `offset` of open file `fh` if that needs no wait: from the
    /// complete cache file, or bytes of a download that have arrived. `None`: call
    /// [`Self::read`].
    pub fn read_now(&self, fh: u64, offset: u64, size: u32) -> Option<Result<Vec<u8>, Errno>> {
        if let Some(Handle::Made(_, bytes)) = self.handles.lock().unwrap().get(&fh) {
            let start = usize::try_from(offset)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            let end = start.saturating_add(size as usize).min(bytes.len());
            return Some(Ok(bytes[start..end].to_vec()));
        }
        let open = match self.open_file(fh) {
            Ok(open) => open,
            Err(e) => return Some(Err(e)),
        };
        if open.bad.load(Ordering::SeqCst) {
            return Some(Err(Errno::IO));
        }
        let local = open.local.get().map(|p| p.file().clone()).or_else(|| {
            let pinned = self.fetcher.cache().pin(&open.res, &open.file)?;
            let f = pinned.file().clone();
            // Another read pinned it first: this pin is let go at once.
            let _ = open.local.set(pinned);
            Some(f)
        });
        if let Some(local) = local {
            let read = read_at(&local, offset, size).map_err(|e| Errno::of_io(&e));
            return Some(self.learnt_size(&open, offset, size, read));
        }
        // Only a download under way: starting one is for `read`, which waits for it.
        let d = self.fetcher.running(&open.res, &open.file)?;
        let read = d.read_now(offset, size)?.map_err(|e| Errno::from(&e));
        Some(self.learnt_size(&open, offset, size, read))
    }

    /// A read that reaches the listed end of a file, or ends short: if the file's true size
    /// (learnt from the server's answer) is larger than listed, the kernel is told before this
    /// read is answered, so that it asks for the size before reading past the listed end.
    /// (Told of a smaller size while a read is under way, the kernel would keep the old one
    /// and serve zeros up to it; the short read at the true end tells it instead.)
    fn learnt_size(
        &self,
        open: &OpenFile,
        offset: u64,
        size: u32,
        read: Result<Vec<u8>, Errno>,
    ) -> Result<Vec<u8>, Errno> {
        if let Ok(data) = &read
            && (offset + u64::from(size) >= open.file.size || data.len() < size as usize)
            && !open.told_size.load(Ordering::Relaxed)
            && let Some(true_size) = self.fetcher.sizes().of(&open.file)
        {
            open.told_size.store(true, Ordering::Relaxed);
            if true_size > open.file.size {
                self.tell_resized(open.ino);
            }
        }
        read
    }

    fn tell_resized(&self, ino: u64) {
        if let Some(tell) = self.on_resize.get() {
            tell(ino);
        }
    }

    /// Reads `size` bytes at `offset` of open file `fh`, waiting for them to arrive. A file
    /// gone from the server (404) is ENOENT, and its resource is listed again next time.
    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        if matches!(
            self.handles.lock().unwrap().get(&fh),
            Some(Handle::Made(..))
        ) {
            return self.read_now(fh, offset, size).unwrap_or(Err(Errno::BADF));
        }
        let open = self.open_file(fh)?;
        if open.bad.load(Ordering::SeqCst) {
            return Err(Errno::IO);
        }
        if let Some((at, errno)) = *open.failed.lock().unwrap()
            && at.elapsed() < RETRY_GETS_THE_SAME_ANSWER
        {
            return Err(errno);
        }
        let read = self
            .fetcher
            .read(&open.res, &open.file, offset, size)
            .await
            .map_err(|e| {
                tracing::warn!("read of {} at {offset} failed: {e}", open.file.uri());
                if matches!(e, crate::fetch::FetchError::Verify(_)) {
                    self.mark_bad(open.ino);
                }
                let errno = Errno::from(&e);
                if errno == Errno::NOENT {
                    self.tree.forget_resource(&open.res);
                }
                *open.failed.lock().unwrap() = Some((std::time::Instant::now(), errno));
                errno
            });
        self.learnt_size(&open, offset, size, read)
    }

    /// A body read for file `ino` failed its check (a wrong MD5, other bytes for the same
    /// offset, a file changed on the server mid-download): every handle of the file open now
    /// fails its later reads, not only the one whose read failed. They share the kernel's
    /// pages of the file, bad ones included, and a fresh download would serve them another
    /// version beside those (a field test saw single reads of old and new bytes together).
    /// A new open starts anew.
    fn mark_bad(&self, ino: u64) {
        for handle in self.handles.lock().unwrap().values() {
            if let Handle::File(f) = handle
                && f.ino == ino
            {
                f.bad.store(true, Ordering::SeqCst);
            }
        }
    }

    /// [`Self::mark_bad`] for the files of which `refused` holds, told by the fetcher when a
    /// download refuses a body no reader was waiting for.
    fn mark_bad_where(&self, refused: impl Fn(&RemoteFile) -> bool) {
        let inos: std::collections::HashSet<u64> = self
            .handles
            .lock()
            .unwrap()
            .values()
            .filter_map(|h| match h {
                Handle::File(f) if refused(&f.file) => Some(f.ino),
                _ => None,
            })
            .collect();
        for ino in inos {
            self.mark_bad(ino);
        }
    }

    pub fn release(&self, fh: u64) {
        // A pinned copy is let go when its handle goes (an open file's once the reads still
        // under way through it are over), after the handles' lock: letting go may take the
        // cache's lock.
        let removed = self.handles.lock().unwrap().remove(&fh);
        let (ino, passthrough) = match &removed {
            Some(Handle::Passthrough { ino, .. }) => (*ino, true),
            Some(Handle::File(f)) => (f.ino, false),
            Some(Handle::Made(ino, _)) => {
                self.tree.closed(*ino);
                return;
            }
            _ => return,
        };
        drop(removed);
        self.tree.closed(ino);
        let mut kinds = self.open_kinds.lock().unwrap();
        if let Some(open) = kinds.get_mut(&ino) {
            if passthrough {
                open.passthrough = open.passthrough.saturating_sub(1);
            } else {
                open.served = open.served.saturating_sub(1);
            }
            if open.passthrough == 0 && open.served == 0 {
                kinds.remove(&ino);
            }
        }
    }

    /// The cache file a passthrough handle was opened on (the very file checked at open), for
    /// the kernel to read.
    pub fn backing_file(&self, fh: u64) -> Option<std::fs::File> {
        match self.handles.lock().unwrap().get(&fh) {
            Some(Handle::Passthrough { pin: Some(p), .. }) => p.file().try_clone().ok(),
            _ => None,
        }
    }

    /// Opens folder `ino`: it stays in the inode table, with its listing, until
    /// [`Self::releasedir`].
    pub fn opendir(&self, ino: u64) -> Result<u64, Errno> {
        match self.tree.opened(ino) {
            Some(node) if node.is_dir() => Ok(self.add_handle(Handle::Dir(ino, Arc::default()))),
            Some(_) => {
                self.tree.closed(ino);
                Err(Errno::NOTDIR)
            }
            None => Err(Errno::NOENT),
        }
    }

    fn dir_snapshot(&self, fh: u64) -> Result<Arc<OnceCell<Children>>, Errno> {
        match self.handles.lock().unwrap().get(&fh) {
            Some(Handle::Dir(_, d)) => Ok(d.clone()),
            _ => Err(Errno::BADF),
        }
    }

    /// The entries of open folder `fh` if they were listed already (no wait).
    pub fn listed(&self, fh: u64) -> Result<Option<Children>, Errno> {
        Ok(self.dir_snapshot(fh)?.get().cloned())
    }

    /// The entries of open folder `fh` (folder `ino`), listed once per open.
    pub async fn list(&self, fh: u64, ino: u64) -> Result<Children, Errno> {
        let snapshot = self.dir_snapshot(fh)?;
        snapshot
            .get_or_try_init(|| self.tree.children(ino))
            .await
            .cloned()
            .map_err(|e| {
                tracing::warn!("listing failed: {e}");
                Errno::from(&e)
            })
    }

    /// `.` and `..`, then the entries of folder `ino`, from position `offset` on: each with
    /// the position that follows it, its name and attributes. An entry handed to the kernel
    /// with its attributes (readdirplus) is counted with [`Self::handed_out`].
    pub fn entries<'a>(
        &'a self,
        ino: u64,
        kids: &'a Children,
        offset: u64,
    ) -> impl Iterator<Item = (u64, &'a str, Attr, Node)> + 'a {
        let dot = self.tree.node(ino).unwrap_or(Node::Root);
        let dots = [(".", ino, dot.clone()), ("..", ino, dot)];
        // Each name as the folder's current listing has it: an open folder's own copy may
        // hold the old inode of a file that changed on the server since, which the kernel
        // would take back in place of the new one (and check reads against the old digest).
        // A name gone from the current listing keeps the copy's entry.
        // The listing is entered at `offset` directly: a big folder is read in many calls,
        // each going on from where the last stopped, and walking it from its start each time
        // made `ls` of 200,000 files quadratic.
        let offset = usize::try_from(offset).unwrap_or(usize::MAX);
        let kids =
            kids.nodes_from(offset.saturating_sub(dots.len()))
                .map(move |(name, old, node)| {
                    let (child, node) = self
                        .tree
                        .current_entry(ino, kids, name)
                        .unwrap_or_else(|| (old, node.clone()));
                    (name, child, node)
                });
        dots.into_iter()
            .skip(offset)
            .chain(kids)
            .zip(offset as u64 + 1..)
            .map(move |((name, child, node), next)| {
                let attr = self.attr(child, &node);
                (next, name, attr, node)
            })
    }

    /// The kernel was given inode `ino` (node `node`) with its attributes as a readdirplus
    /// entry (not `.` and `..`): it holds it as after a lookup, until it forgets it.
    pub fn handed_out(&self, ino: u64, node: &Node) {
        self.tree.hand_out(ino, node);
    }

    /// The kernel forgot inode `ino` `n` times (FUSE `forget`).
    pub fn forget(&self, ino: u64, n: u64) {
        self.tree.forget(ino, n);
    }

    pub fn releasedir(&self, fh: u64) {
        let removed = self.handles.lock().unwrap().remove(&fh);
        if let Some(Handle::Dir(ino, _)) = removed {
            self.tree.closed(ino);
        }
    }
}
