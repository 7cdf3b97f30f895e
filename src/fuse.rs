//! The thin FUSE adapter: turns kernel requests into calls on the [`Tree`] and the
//! [`Fetcher`]. Anything that may touch the network runs on the tokio runtime and answers the
//! kernel from there, bounded by the I/O timeout, so FUSE threads never wait on the server.
//! Every change to the tree is refused with EROFS.

use crate::cache::read_at;
use crate::caller::{Waited, wait_for};
use crate::fetcher::Fetcher;
use crate::tree::{Children, Node, Tree};
use crate::xnat::{RemoteFile, ResourceRef};
use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::OnceCell;

pub struct FsOptions {
    /// How long the kernel may keep names and attributes.
    pub attr_ttl: Duration,
    /// Bound on any wait for the server in one request.
    pub io_timeout: Duration,
    pub uid: u32,
    pub gid: u32,
}

struct OpenFile {
    /// The complete cache file when it was there at open (kept from eviction while open).
    cached: Option<std::path::PathBuf>,
    res: Arc<ResourceRef>,
    file: Arc<RemoteFile>,
    /// The complete cache file, once there.
    local: std::sync::OnceLock<Arc<std::fs::File>>,
}

enum Handle {
    File(Arc<OpenFile>),
    /// A complete cache file handed to the kernel: it reads it directly, not through us. The
    /// handle keeps the backing file registered until released.
    Passthrough(
        #[allow(dead_code)] Arc<fuser::BackingId>,
        std::path::PathBuf,
    ),
    Dir(Arc<OnceCell<Children>>),
}

pub struct XnatFs {
    tree: Arc<Tree>,
    fetcher: Arc<Fetcher>,
    rt: tokio::runtime::Handle,
    opts: FsOptions,
    mounted_at: SystemTime,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    /// The kernel offers FUSE passthrough (Linux 6.9+) and we may use it.
    passthrough: std::sync::atomic::AtomicBool,
    /// One backing file per inode, shared by its open handles.
    backing: Mutex<HashMap<u64, std::sync::Weak<fuser::BackingId>>>,
}

fn errno(code: i32) -> Errno {
    Errno::from_i32(code)
}

const EROFS: i32 = libc::EROFS;

impl XnatFs {
    pub fn new(
        tree: Arc<Tree>,
        fetcher: Arc<Fetcher>,
        rt: tokio::runtime::Handle,
        opts: FsOptions,
    ) -> Self {
        XnatFs {
            tree,
            fetcher,
            rt,
            opts,
            mounted_at: SystemTime::now(),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            passthrough: std::sync::atomic::AtomicBool::new(false),
            backing: Mutex::new(HashMap::new()),
        }
    }

    fn attr(&self, ino: u64, node: &Node) -> FileAttr {
        attr_of(ino, node, (self.opts.uid, self.opts.gid, self.mounted_at))
    }

    fn add_handle(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::SeqCst);
        self.handles.lock().unwrap().insert(fh, h);
        fh
    }

    /// The backing file of a complete cache file, for passthrough (shared per inode).
    fn backing_for(
        &self,
        ino: u64,
        path: &std::path::Path,
        reply: &ReplyOpen,
    ) -> Option<Arc<fuser::BackingId>> {
        if !self.passthrough.load(Ordering::Relaxed) {
            return None;
        }
        let mut backing = self.backing.lock().unwrap();
        if let Some(b) = backing.get(&ino).and_then(std::sync::Weak::upgrade) {
            return Some(b);
        }
        let f = std::fs::File::open(path).ok()?;
        match reply.open_backing(&f) {
            Ok(id) => {
                let id = Arc::new(id);
                backing.retain(|_, w| w.strong_count() > 0);
                backing.insert(ino, Arc::downgrade(&id));
                Some(id)
            }
            Err(e) => {
                tracing::info!("FUSE passthrough unavailable ({e}); serving reads ourselves");
                self.passthrough.store(false, Ordering::Relaxed);
                None
            }
        }
    }

    /// Calls `done` with the entries of the open folder `fh` (listed once per opendir, so a
    /// listing read in several calls stays consistent), listing it first when needed, off the
    /// FUSE thread and within the I/O timeout.
    fn with_listing<F>(&self, caller: u32, fh: FileHandle, ino: INodeNo, done: F)
    where
        F: FnOnce(Result<&Children, i32>) + Send + 'static,
    {
        let snapshot = match self.handles.lock().unwrap().get(&fh.0) {
            Some(Handle::Dir(d)) => d.clone(),
            _ => return done(Err(libc::EBADF)),
        };
        if let Some(kids) = snapshot.get() {
            return done(Ok(kids));
        }
        let tree = self.tree.clone();
        let timeout = self.opts.io_timeout;
        self.rt.spawn(async move {
            let listing = snapshot.get_or_try_init(|| tree.children(ino.0));
            match wait_for(caller, timeout, listing).await {
                Waited::Done(Ok(kids)) => done(Ok(kids)),
                Waited::Done(Err(e)) => {
                    tracing::warn!("listing failed: {e}");
                    done(Err(e.errno()))
                }
                Waited::TimedOut => {
                    tracing::warn!("listing timed out");
                    done(Err(XnatFs::timeout_errno()))
                }
                Waited::GaveUp => done(Err(libc::EINTR)),
            }
        });
    }

    fn timeout_errno() -> i32 {
        libc::ETIMEDOUT
    }
}

impl Filesystem for XnatFs {
    fn init(&mut self, _req: &Request, config: &mut fuser::KernelConfig) -> std::io::Result<()> {
        // Large kernel readahead: files do not change, and most reads are sequential.
        if let Err(max) = config.set_max_readahead(16 << 20) {
            let _ = config.set_max_readahead(max);
        }
        let plus = fuser::InitFlags::FUSE_DO_READDIRPLUS | fuser::InitFlags::FUSE_READDIRPLUS_AUTO;
        if config.capabilities().contains(plus) {
            let _ = config.add_capabilities(plus);
        }
        if config
            .capabilities()
            .contains(fuser::InitFlags::FUSE_PASSTHROUGH)
            && config
                .add_capabilities(fuser::InitFlags::FUSE_PASSTHROUGH)
                .is_ok()
            && config.set_max_stack_depth(2).is_ok()
        {
            self.passthrough.store(true, Ordering::SeqCst);
            tracing::info!("FUSE passthrough: cached files are read by the kernel directly");
        }
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(name) = name.to_str().map(str::to_string) else {
            return reply.error(errno(libc::ENOENT));
        };
        let tree = self.tree.clone();
        let timeout = self.opts.io_timeout;
        let ttl = self.opts.attr_ttl;
        let this_attr = {
            let opts = (self.opts.uid, self.opts.gid, self.mounted_at);
            move |ino: u64, node: &Node| attr_of(ino, node, opts)
        };
        let caller = req.pid();
        self.rt.spawn(async move {
            match wait_for(caller, timeout, tree.lookup(parent.0, &name)).await {
                Waited::Done(Ok((ino, node))) => {
                    reply.entry(&ttl, &this_attr(ino, &node), Generation(0))
                }
                Waited::Done(Err(e)) => {
                    if e.errno() != libc::ENOENT {
                        tracing::warn!("lookup of {name:?} failed: {e}");
                    }
                    reply.error(errno(e.errno()))
                }
                Waited::TimedOut => {
                    tracing::warn!("lookup of {name:?} timed out");
                    reply.error(errno(XnatFs::timeout_errno()))
                }
                Waited::GaveUp => reply.error(errno(libc::EINTR)),
            }
        });
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.tree.node(ino.0) {
            Some(node) => reply.attr(&self.opts.attr_ttl, &self.attr(ino.0, &node)),
            None => reply.error(errno(libc::ENOENT)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
            return reply.error(errno(EROFS));
        }
        match self.tree.node(ino.0) {
            Some(Node::File(res, file)) => {
                let cached = self.fetcher.cache().lookup(&res, &file);
                if let Some(path) = &cached {
                    self.fetcher.cache().budget().opened(path);
                }
                if let Some(path) = &cached
                    && let Some(backing) = self.backing_for(ino.0, path, &reply)
                {
                    let fh = self.add_handle(Handle::Passthrough(backing.clone(), path.clone()));
                    return reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &backing);
                }
                let fh = self.add_handle(Handle::File(Arc::new(OpenFile {
                    cached,
                    res,
                    file,
                    local: std::sync::OnceLock::new(),
                })));
                // XNAT files do not change while mounted: the kernel may keep its page cache.
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE);
            }
            Some(_) => reply.error(errno(libc::EISDIR)),
            None => reply.error(errno(libc::ENOENT)),
        }
    }

    fn read(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let open = match self.handles.lock().unwrap().get(&fh.0) {
            Some(Handle::File(f)) => f.clone(),
            _ => return reply.error(errno(libc::EBADF)),
        };
        // Complete in the cache: read it here, at local speed.
        let local = open.local.get().cloned().or_else(|| {
            let path = self.fetcher.cache().lookup(&open.res, &open.file)?;
            let f = Arc::new(std::fs::File::open(path).ok()?);
            let _ = open.local.set(f.clone());
            Some(f)
        });
        if let Some(local) = local {
            return match read_at(&local, offset, size) {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(errno(e.raw_os_error().unwrap_or(libc::EIO))),
            };
        }
        // Not yet complete: already-arrived bytes are served here, the rest as soon as they
        // arrive.
        if let Ok(d) = self.fetcher.download(&open.res, &open.file)
            && let Some(result) = d.read_now(offset, size)
        {
            return match result {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(errno(e.errno())),
            };
        }
        let fetcher = self.fetcher.clone();
        let tree = self.tree.clone();
        let caller = req.pid();
        self.rt.spawn(async move {
            let read = tokio::select! {
                r = fetcher.read(&open.res, &open.file, offset, size) => r,
                () = crate::caller::wait_gave_up(caller) => {
                    // The reader was interrupted (Ctrl-C): it does not wait for the bytes.
                    return reply.error(errno(libc::EINTR));
                }
            };
            match read {
                Ok(data) => reply.data(&data),
                Err(e) => {
                    tracing::warn!("read of {} at {offset} failed: {e}", open.file.uri);
                    if e.errno() == libc::ENOENT {
                        // Gone from the server: the listing that showed it is asked again.
                        tree.forget_resource(&open.res);
                    }
                    reply.error(errno(e.errno()))
                }
            }
        });
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let closed = match self.handles.lock().unwrap().remove(&fh.0) {
            Some(Handle::Passthrough(_, path)) => Some(path),
            Some(Handle::File(f)) => f.cached.clone(),
            _ => None,
        };
        if let Some(path) = closed {
            self.fetcher.cache().budget().closed(&path);
        }
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.tree.node(ino.0) {
            Some(node) if node.is_dir() => {
                let fh = self.add_handle(Handle::Dir(Arc::new(OnceCell::new())));
                reply.opened(FileHandle(fh), FopenFlags::empty());
            }
            Some(_) => reply.error(errno(libc::ENOTDIR)),
            None => reply.error(errno(libc::ENOENT)),
        }
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let tree = self.tree.clone();
        self.with_listing(req.pid(), fh, ino, move |listed| match listed {
            Ok(kids) => {
                for (i, (name, child)) in dot_entries(ino, kids).skip(offset as usize) {
                    let kind = match tree.node(child) {
                        Some(n) if !n.is_dir() => FileType::RegularFile,
                        _ => FileType::Directory,
                    };
                    if reply.add(INodeNo(child), (i + 1) as u64, kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(code) => reply.error(errno(code)),
        });
    }

    /// Entries with their attributes, so `ls -l` and `find -size` need no lookup per file.
    fn readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: fuser::ReplyDirectoryPlus,
    ) {
        let tree = self.tree.clone();
        let ttl = self.opts.attr_ttl;
        let owner = (self.opts.uid, self.opts.gid, self.mounted_at);
        self.with_listing(req.pid(), fh, ino, move |listed| match listed {
            Ok(kids) => {
                for (i, (name, child)) in dot_entries(ino, kids).skip(offset as usize) {
                    let node = tree.node(child).unwrap_or(Node::Root);
                    let attr = attr_of(child, &node, owner);
                    if reply.add(
                        INodeNo(child),
                        (i + 1) as u64,
                        name,
                        &ttl,
                        &attr,
                        Generation(0),
                    ) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(code) => reply.error(errno(code)),
        });
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.handles.lock().unwrap().remove(&fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(
            0,
            0,
            0,
            0,
            0,
            4096,
            crate::names::MAX_NAME_BYTES as u32,
            4096,
        );
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        if mask.contains(AccessFlags::W_OK) {
            reply.error(errno(EROFS))
        } else if self.tree.node(ino.0).is_some() {
            reply.ok()
        } else {
            reply.error(errno(libc::ENOENT))
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(errno(EROFS));
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(errno(EROFS));
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(errno(EROFS));
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(errno(EROFS));
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(errno(EROFS));
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        reply.error(errno(EROFS));
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(errno(EROFS));
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(errno(EROFS));
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(errno(EROFS));
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        reply.error(errno(EROFS));
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(errno(EROFS));
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(errno(EROFS));
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(errno(EROFS));
    }
}

/// `.` and `..`, then the folder's entries, each with its index.
fn dot_entries(ino: INodeNo, kids: &Children) -> impl Iterator<Item = (usize, (&str, u64))> {
    [(".", ino.0), ("..", ino.0)]
        .into_iter()
        .chain(kids.iter().map(|(n, i)| (n.as_str(), *i)))
        .enumerate()
}

fn attr_of(ino: u64, node: &Node, (uid, gid, at): (u32, u32, SystemTime)) -> FileAttr {
    let (kind, perm, nlink) = if node.is_dir() {
        (FileType::Directory, 0o555, 2)
    } else {
        (FileType::RegularFile, 0o444, 1)
    };
    let size = node.size();
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: at,
        mtime: at,
        ctime: at,
        crtime: at,
        kind,
        perm,
        nlink,
        uid,
        gid,
        rdev: 0,
        blksize: 128 * 1024,
        flags: 0,
    }
}
