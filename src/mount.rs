//! A mount's life: checking the mount point, choosing what the root shows, mounting, serving
//! until unmounted or signalled, and unmounting cleanly (lazily, with a message, when busy).

use crate::cache::Cache;
use crate::fetcher::Fetcher;
use crate::fuse::{FsOptions, XnatFs};
use crate::listings::RememberingApi;
use crate::tree::{Root, Tree};
use crate::xnat::{XnatApi, XnatError};
use anyhow::{Context, Result, bail};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct MountOptions {
    pub mountpoint: PathBuf,
    pub dir_ttl: Duration,
    pub io_timeout: Duration,
    /// FUSE worker threads.
    pub threads: usize,
    /// Other users may read the mount (`allow_other`).
    pub allow_other: bool,
    /// Bytes downloads may hold in memory at once.
    pub max_memory: u64,
}

/// Opens the cache area of `server_url`, and the client a mount uses: `api` with its
/// listings kept in the cache, served from there when the server cannot be reached (or
/// always, `offline`).
pub fn open_cache_and_api(
    api: Arc<dyn XnatApi>,
    cache_dir: &Path,
    server_url: &str,
    offline: bool,
    io_timeout: Duration,
    dir_ttl: Duration,
) -> Result<(Cache, Arc<dyn XnatApi>)> {
    let cache = Cache::open(cache_dir, server_url)
        .with_context(|| format!("cannot use the cache dir {}", cache_dir.display()))?;
    // A kept listing is served well within the I/O timeout when the server does not answer.
    let remembering = RememberingApi::new(api, cache.area().join("listings"), offline)
        .with_context(|| format!("cannot use the cache dir {}", cache_dir.display()))?
        .with_fallback_after((io_timeout / 3).max(Duration::from_secs(1)))
        .with_fresh_for(dir_ttl);
    Ok((cache, Arc::new(remembering)))
}

/// What `-P` and `-E` ask the root to show, checked against the server.
pub async fn resolve_root(
    api: &dyn XnatApi,
    project: Option<&str>,
    default_project: Option<&str>,
    sessions: &[String],
) -> Result<Root> {
    if !sessions.is_empty() {
        let in_project = project.or(default_project);
        let mut out = Vec::new();
        for name in sessions {
            let session = crate::xnat::find_session(api, in_project, name)
                .await
                .map_err(|e| match e {
                    XnatError::NotFound(what) => anyhow::anyhow!("unknown {what}"),
                    e => e.into(),
                })?;
            out.push((name.clone(), session));
        }
        return Ok(Root::Sessions(out));
    }
    if let Some(p) = project {
        api.sessions(p).await.map_err(|e| match e {
            XnatError::NotFound(what) => anyhow::anyhow!("unknown {what}"),
            e => e.into(),
        })?;
        return Ok(Root::Project(p.to_string()));
    }
    api.projects().await?;
    Ok(Root::Server)
}

fn cstring(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes()).context("the path holds a NUL byte")
}

/// Whether `path` is a mount point, from the kernel's mount table.
pub fn is_mounted(path: &Path) -> bool {
    let Ok(canon) = std::fs::canonicalize(path).or_else(|_| std::path::absolute(path)) else {
        return false;
    };
    let Ok(table) = std::fs::read_to_string("/proc/self/mounts") else {
        return false;
    };
    table.lines().any(|line| {
        line.split_whitespace()
            .nth(1)
            .map(|m| m.replace("\\040", " "))
            .is_some_and(|m| Path::new(&m) == canon)
    })
}

/// Checks the mount point before mounting: it must be an empty folder that is not mounted.
/// A mount left stale by a killed process ("Transport endpoint is not connected") is
/// cleaned up, with a message.
pub fn prepare_mountpoint(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            eprintln!(
                "xnatfs: {} is a stale mount left by a process that died; unmounting it",
                path.display()
            );
            lazy_unmount(path)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!(
                "mount point {} does not exist (create it with mkdir)",
                path.display()
            )
        }
        Err(e) => bail!("cannot use mount point {}: {e}", path.display()),
        Ok(meta) if !meta.is_dir() => bail!("mount point {} is not a folder", path.display()),
        Ok(_) => {}
    }
    if is_mounted(path) {
        // The kernel may still answer stat from its cache; a listing reaches the daemon.
        if let Err(e) = std::fs::read_dir(path)
            && e.raw_os_error() == Some(libc::ENOTCONN)
        {
            eprintln!(
                "xnatfs: {} is a stale mount left by a process that died; unmounting it",
                path.display()
            );
            lazy_unmount(path)?;
            return prepare_mountpoint(path);
        }
        bail!(
            "{} is busy: something is already mounted there (xnatfs unmount {} first)",
            path.display(),
            path.display()
        );
    }
    if std::fs::read_dir(path)?.next().is_some() {
        bail!(
            "mount point {} is not empty; xnatfs mounts only on an empty folder",
            path.display()
        );
    }
    Ok(())
}

fn lazy_unmount(path: &Path) -> Result<()> {
    let c = cstring(path)?;
    // SAFETY: `c` is a valid NUL-terminated path that lives across the call.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        let e = std::io::Error::last_os_error();
        bail!("cannot unmount {}: {e}", path.display());
    }
    Ok(())
}

/// How an unmount went.
#[derive(Debug, PartialEq, Eq)]
pub enum Unmounted {
    Clean,
    /// The mount was busy: it is detached now and goes away when its last user closes it.
    Lazy,
}

/// Unmounts `path`; when it is busy, detaches it lazily instead.
pub fn unmount(path: &Path) -> Result<Unmounted> {
    let c = cstring(path)?;
    // SAFETY: as above.
    if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
        return Ok(Unmounted::Clean);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EBUSY) => {
            lazy_unmount(path)?;
            Ok(Unmounted::Lazy)
        }
        Some(libc::EPERM) => {
            // Not root: the setuid helper may do it for us.
            let status = std::process::Command::new("fusermount3")
                .arg("-u")
                .arg(path)
                .status()
                .with_context(|| format!("cannot unmount {}: {e}", path.display()))?;
            if !status.success() {
                bail!("fusermount3 -u {} failed", path.display());
            }
            Ok(Unmounted::Clean)
        }
        Some(libc::EINVAL) => bail!("{} is not mounted", path.display()),
        _ => bail!("cannot unmount {}: {e}", path.display()),
    }
}

/// Mounts the file system. The returned session serves nothing until run.
pub fn mount(
    rt: &tokio::runtime::Runtime,
    api: Arc<dyn XnatApi>,
    cache: Cache,
    root: Root,
    opts: &MountOptions,
) -> Result<fuser::Session<XnatFs>> {
    let tree = Arc::new(Tree::new(api.clone(), root, opts.dir_ttl));
    let fetcher = Fetcher::with_max_memory(
        api,
        rt.handle().clone(),
        cache,
        opts.io_timeout,
        opts.max_memory,
    );
    let fs = XnatFs::new(
        tree,
        fetcher,
        rt.handle().clone(),
        FsOptions {
            attr_ttl: opts.dir_ttl,
            io_timeout: opts.io_timeout,
            // SAFETY: getuid/getgid cannot fail.
            uid: unsafe { libc::getuid() },
            gid: unsafe { libc::getgid() },
        },
    );
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::RO,
        fuser::MountOption::FSName("xnatfs".into()),
        fuser::MountOption::Subtype("xnatfs".into()),
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
        fuser::MountOption::NoAtime,
    ];
    if opts.allow_other {
        config.acl = fuser::SessionACL::All;
    }
    config.n_threads = Some(opts.threads.max(1));
    config.clone_fd = true;
    fuser::Session::new(fs, &opts.mountpoint, &config)
        .with_context(|| format!("cannot mount on {}", opts.mountpoint.display()))
}

/// Serves `session` until the file system is unmounted, unmounting it on SIGINT or SIGTERM.
pub fn serve(
    rt: &tokio::runtime::Runtime,
    session: fuser::Session<XnatFs>,
    mountpoint: &Path,
) -> Result<()> {
    let target = mountpoint.to_path_buf();
    rt.spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
            tracing::error!("cannot listen for signals");
            return;
        };
        loop {
            let name = tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            };
            tracing::info!("{name}: unmounting {}", target.display());
            match unmount(&target) {
                Ok(Unmounted::Clean) => eprintln!("xnatfs: unmounted {}", target.display()),
                Ok(Unmounted::Lazy) => eprintln!(
                    "xnatfs: {} is busy; detached it (it goes away when the last file on it is closed)",
                    target.display()
                ),
                Err(e) => eprintln!("xnatfs: {e:#}"),
            }
        }
    });
    session
        .run()
        .context("the FUSE session ended with an error")
}
