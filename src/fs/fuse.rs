//! The FUSE adapter: turns kernel requests into calls on the core ([`XnatFs`]) and its answers
//! into replies. Whatever may wait for the server runs on the tokio runtime through one
//! helper ([`FuseAdapter::answer`]), bounded by the I/O timeout and by the caller's patience
//! ([`super::interrupt`]), so FUSE threads never wait on the network. Passthrough backing
//! files are kernel objects and live here.
//!
//! Writes need no code: the mount is read-only (`MS_RDONLY`), so the kernel refuses them with
//! EROFS before they reach us.

use super::interrupt::{Waited, wait_for};
use super::node::Children;
use super::{Attr, Errno, Opened, XnatFs, xattrs};
use fuser::{
    AccessFlags, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

pub struct FuseAdapter {
    core: Arc<XnatFs>,
    rt: tokio::runtime::Handle,
    /// The kernel offers FUSE passthrough (Linux 6.9+) and we may use it.
    passthrough: AtomicBool,
    /// One backing file per inode, shared by its open handles.
    backing: Mutex<HashMap<u64, Weak<fuser::BackingId>>>,
    /// The backing file of each passthrough handle, registered until the handle is released.
    held: Mutex<HashMap<u64, Arc<fuser::BackingId>>>,
}

fn errno(e: Errno) -> fuser::Errno {
    fuser::Errno::from_i32(e.0)
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.time,
        mtime: a.time,
        ctime: a.time,
        crtime: a.time,
        kind: file_type(a),
        perm: a.perm,
        nlink: if a.is_dir { 2 } else { 1 },
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: 128 * 1024,
        flags: 0,
    }
}

fn file_type(a: &Attr) -> FileType {
    if a.is_dir {
        FileType::Directory
    } else {
        FileType::RegularFile
    }
}

/// Answers a `getxattr` or `listxattr` whose caller has a buffer of `size` bytes: the length
/// for the size probe (`size` 0), the bytes when they fit, else ERANGE.
fn reply_sized(bytes: Result<Vec<u8>, Errno>, size: u32, reply: ReplyXattr) {
    match bytes.and_then(|b| xattrs::sized(b, size)) {
        Ok(xattrs::Sized::Size(n)) => reply.size(n),
        Ok(xattrs::Sized::Data(b)) => reply.data(&b),
        Err(e) => reply.error(errno(e)),
    }
}

impl FuseAdapter {
    pub fn new(core: Arc<XnatFs>, rt: tokio::runtime::Handle) -> FuseAdapter {
        FuseAdapter {
            core,
            rt,
            passthrough: AtomicBool::new(false),
            backing: Mutex::new(HashMap::new()),
            held: Mutex::new(HashMap::new()),
        }
    }

    /// Runs `work` on the runtime and hands its result to `reply`: at most `timeout` (when
    /// given), and no longer than the calling process wants it (Ctrl-C gives EINTR at once).
    fn answer<T: Send + 'static>(
        &self,
        req: &Request,
        timeout: Option<Duration>,
        what: String,
        work: impl Future<Output = Result<T, Errno>> + Send + 'static,
        reply: impl FnOnce(Result<T, Errno>) + Send + 'static,
    ) {
        let caller = req.pid();
        self.rt.spawn(async move {
            reply(match wait_for(caller, timeout, work).await {
                Waited::Done(r) => r,
                Waited::TimedOut => {
                    tracing::warn!("{what} timed out");
                    Err(Errno::TIMEDOUT)
                }
                Waited::GaveUp => Err(Errno::INTR),
                // Not EINTR, which readers such as coreutils' ask again, forever.
                Waited::Stopped => {
                    tracing::info!("{what} ended: the mount is stopping");
                    Err(Errno::IO)
                }
            })
        });
    }

    /// The backing file of passthrough handle `fh` (the cache file checked at its open),
    /// shared per inode.
    fn backing_for(&self, ino: u64, fh: u64, reply: &ReplyOpen) -> Option<Arc<fuser::BackingId>> {
        let mut backing = self.backing.lock().unwrap();
        if let Some(b) = backing.get(&ino).and_then(Weak::upgrade) {
            return Some(b);
        }
        let f = self.core.backing_file(fh)?;
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

    /// Hands the entries of open folder `fh` to `done`, listing it first (off the FUSE
    /// thread) when needed.
    fn with_listing(
        &self,
        req: &Request,
        fh: FileHandle,
        ino: INodeNo,
        done: impl FnOnce(Result<Children, Errno>) + Send + 'static,
    ) {
        match self.core.listed(fh.0) {
            Ok(Some(kids)) => done(Ok(kids)),
            Err(e) => done(Err(e)),
            Ok(None) => {
                let core = self.core.clone();
                // The listing is a task of its own: a caller's timeout (or Ctrl-C) ends the
                // wait, not the listing, which finishes in the background and is kept, so the
                // next `ls` finds it (XNAT builds a big listing whole before its first byte).
                let listing = self.rt.spawn(async move { core.list(fh.0, ino.0).await });
                let work = async move { listing.await.unwrap_or(Err(Errno::IO)) };
                let timeout = Some(self.core.options().io_timeout);
                self.answer(req, timeout, "listing".into(), work, done);
            }
        }
    }
}

/// Tells the kernel that a file changed on the server: its name now leads to a new inode (the
/// kernel looks it up again), and what it kept of the old inode goes. Sent from a thread of its
/// own and not waited for: the request that found the change may hold a lock the kernel needs
/// for this (a lookup in the same folder).
pub fn kernel_invalidator(notifier: fuser::Notifier) -> super::tree::OnChange {
    let notifier = Arc::new(notifier);
    Box::new(move |parent, name, old| {
        let n = notifier.clone();
        let name = std::ffi::OsString::from(name);
        std::thread::spawn(move || {
            // ENOENT: the kernel keeps nothing of it.
            let _ = n.inval_entry(INodeNo(parent), &name);
            let _ = n.inval_inode(INodeNo(old), 0, -1);
        });
    })
}

/// Tells the kernel that a file's size is not the one it was told (a stale listed size): its
/// attributes are dropped, so it asks for them (and the true size) before it reads past what it
/// took for the end. Sent at once, before the request that learnt it is answered: dropping
/// attributes takes no lock that request may hold (`fuse_reverse_inval_inode` with a negative
/// offset touches no pages).
pub fn kernel_size_invalidator(notifier: fuser::Notifier) -> super::OnResize {
    Box::new(move |ino| {
        // ENOENT: the kernel keeps nothing of it.
        let _ = notifier.inval_inode(INodeNo(ino), -1, 0);
    })
}

impl Filesystem for FuseAdapter {
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
            return reply.error(errno(Errno::NOENT));
        };
        let core = self.core.clone();
        let ttl = self.core.options().attr_ttl;
        let what = format!("lookup of {name:?}");
        let work = async move { core.lookup(parent.0, &name).await };
        let timeout = Some(self.core.options().io_timeout);
        self.answer(req, timeout, what, work, move |r| match r {
            Ok(attr) => reply.entry(&ttl, &file_attr(&attr), Generation(0)),
            Err(e) => reply.error(errno(e)),
        });
    }

    /// The kernel dropped inode `ino` `nlookup` times: once it holds it no more, it leaves
    /// the table (`batch_forget` comes here once per inode).
    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.core.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.core.getattr(ino.0) {
            Ok(attr) => reply.attr(&self.core.options().attr_ttl, &file_attr(&attr)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let write = flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0;
        let passthrough = self.passthrough.load(Ordering::Relaxed);
        let opened = match self.core.open(ino.0, write, passthrough) {
            Ok(Opened::Passthrough { fh, .. }) => match self.backing_for(ino.0, fh, &reply) {
                Some(backing) => {
                    self.held.lock().unwrap().insert(fh, backing.clone());
                    return reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &backing);
                }
                None => {
                    self.core.release(fh);
                    self.core.open(ino.0, write, false)
                }
            },
            other => other,
        };
        match opened {
            Ok(Opened::Served {
                fh,
                keep_cache,
                direct,
            }) => {
                // A file that changes on the server gets a new inode (`kernel_invalidator`):
                // pages kept of a verified copy are the file's.
                let mut flags = if keep_cache {
                    FopenFlags::FOPEN_KEEP_CACHE
                } else {
                    FopenFlags::empty()
                };
                // Listed with no size: the kernel holds 0, and would read nothing.
                if direct {
                    flags |= FopenFlags::FOPEN_DIRECT_IO;
                }
                reply.opened(FileHandle(fh), flags)
            }
            Ok(Opened::Passthrough { .. }) => unreachable!("passthrough was not asked for"),
            Err(e) => reply.error(errno(e)),
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
        let send = move |r: Result<Vec<u8>, Errno>| match r {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(e)),
        };
        if let Some(now) = self.core.read_now(fh.0, offset, size) {
            return send(now);
        }
        let core = self.core.clone();
        let work = async move { core.read(fh.0, offset, size).await };
        // A read is bounded by its download's stall timeout, not by a total time (a large
        // file's last read waits for its check).
        self.answer(req, None, format!("read at {offset}"), work, send);
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
        self.held.lock().unwrap().remove(&fh.0);
        self.core.release(fh.0);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.core.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno(e)),
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
        let core = self.core.clone();
        self.with_listing(req, fh, ino, move |listed| match listed {
            Ok(kids) => {
                for (next, name, attr, _) in core.entries(ino.0, &kids, offset) {
                    if reply.add(INodeNo(attr.ino), next, file_type(&attr), name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(e)),
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
        let core = self.core.clone();
        self.with_listing(req, fh, ino, move |listed| match listed {
            Ok(kids) => {
                let ttl = core.options().attr_ttl;
                for (next, name, attr, node) in core.entries(ino.0, &kids, offset) {
                    let fattr = file_attr(&attr);
                    // Counted before the kernel can have it (a forget may follow at once),
                    // and taken back if it did not fit. The kernel counts no `.` or `..`.
                    let counted = name != "." && name != "..";
                    if counted {
                        core.handed_out(attr.ino, &node);
                    }
                    if reply.add(INodeNo(attr.ino), next, name, &ttl, &fattr, Generation(0)) {
                        if counted {
                            core.forget(attr.ino, 1);
                        }
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(e)),
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
        self.core.releasedir(fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let name_max = crate::names::MAX_NAME_BYTES as u32;
        reply.statfs(0, 0, 0, 0, 0, 4096, name_max, 4096);
    }

    /// XNAT's metadata (see [`super::xattrs`]): answered at once from the listings.
    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let value = self.core.getxattr(ino.0, name.as_encoded_bytes());
        reply_sized(value, size, reply);
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        reply_sized(self.core.listxattr(ino.0), size, reply);
    }

    // The kernel refuses both on a read-only mount before they come here; answered the same
    // way all the same.
    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        match self.core.change_xattr(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        match self.core.change_xattr(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        match self.core.access(ino.0, mask.contains(AccessFlags::W_OK)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }
}
