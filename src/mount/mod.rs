//! A mount's life: choosing what the root shows, mounting, serving until unmounted or
//! signalled, and unmounting cleanly. [`run`] is the one way to mount, for `xnatfs mount` and
//! `xnatfs demo` alike; [`kernel`] mounts (as type `fuse.xnatfs`, the server URL its source)
//! and says what to do when FUSE cannot be used; [`mountpoint`] checks, lists and unmounts
//! mount points; [`state`] is what a running mount tells `xnatfs status`; [`notify`] tells
//! systemd it is ready.

pub mod kernel;
pub mod log_file;
pub mod mountpoint;
pub mod notify;
pub mod state;

pub use mountpoint::{
    Unmounted, XnatfsMount, is_mounted, prepare_mountpoint, unmount, xnatfs_mounts,
};

use crate::cache::Cache;
use crate::fetch::Fetcher;
use crate::fs::fuse::FuseAdapter;
use crate::fs::layout::ScanNames;
use crate::fs::node::Root;
use crate::fs::tree::Tree;
use crate::fs::{FsOptions, XnatFs};
use crate::units::human_bytes;
use crate::xnat::http::HttpXnat;
use crate::xnat::remembering::RememberingApi;
use crate::xnat::{XnatApi, named_sessions};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How often a mount saves the cache index, merged with other processes' (see
/// [`crate::cache::index`]).
const INDEX_SYNC_EVERY: Duration = Duration::from_secs(30);

/// How often a mount tells `xnatfs status` the cache's size (when it changed).
const STATE_REFRESH_EVERY: Duration = Duration::from_secs(2);

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
    /// Session trees fetched ahead at once while sessions are walked (0: none).
    pub crawl_ahead: usize,
    /// How scan folders are named (`scans/2`, or `scans/2-T1w`).
    pub scan_names: ScanNames,
    /// XNAT's metadata as `user.xnat.*` extended attributes.
    pub xattrs: bool,
    /// Files fetched at once ahead of a sequential reader at first (0: none;
    /// `--series-readahead`).
    pub series_readahead: usize,
    /// How downloads are checked (`--verify`).
    pub verify: crate::cache::Verify,
    /// The root shows the project as a BIDS dataset (`--bids`).
    pub bids: bool,
    /// How scans without BIDS names are named there (`--bids-map`).
    pub bids_map: Option<crate::bids::bidsmap::BidsMap>,
}

/// Session trees fetched ahead at once while a folder of sessions is walked, by default.
pub const DEFAULT_CRAWL_AHEAD: usize = 6;

/// Everything one mount needs.
pub struct MountPlan {
    pub client: Arc<HttpXnat>,
    pub cache_dir: PathBuf,
    /// No server at all: serve what is in the cache.
    pub offline: bool,
    /// `-P`, the profile's default project, and `-E`: what the root shows.
    pub project: Option<String>,
    pub default_project: Option<String>,
    pub sessions: Vec<String>,
    /// The cache's cap (default: [`crate::cache::default_limit`]).
    pub cache_size: Option<u64>,
    /// Where the log goes (for `xnatfs status`), if to a file.
    pub log_file: Option<PathBuf>,
    pub options: MountOptions,
}

/// Mounts as `plan` says, calls `on_mounted` once the mount is ready, and serves until the
/// file system is unmounted (SIGINT and SIGTERM unmount it).
pub fn run(rt: &tokio::runtime::Runtime, plan: MountPlan, on_mounted: impl FnOnce()) -> Result<()> {
    let opts = &plan.options;
    // What needs no server first: whether FUSE can be used here at all.
    let device = kernel::open_device()?;
    // Resolved now: once mounted, resolving the path would ask this very process.
    let mountpoint = std::fs::canonicalize(&opts.mountpoint)
        .with_context(|| format!("cannot use mount point {}", opts.mountpoint.display()))?;
    let url = plan.client.base_url().to_string();
    // Logged in first: a mount that cannot log in makes no cache area.
    if !plan.offline {
        rt.block_on(plan.client.check_login())
            .map_err(|e| unreachable_hint(e.into(), &plan.cache_dir, &url))?;
    }
    let area = crate::cache::Area::of(&plan.cache_dir, &url);
    let area_is_new = !area.root().exists();
    let (cache, api) = open_cache_and_api(
        plan.client.clone() as Arc<dyn XnatApi>,
        &plan.cache_dir,
        &url,
        plan.offline,
        opts.io_timeout,
        opts.dir_ttl,
    )?;
    let root = rt
        .block_on(resolve_root(
            api.as_ref(),
            plan.project.as_deref(),
            plan.default_project.as_deref(),
            &plan.sessions,
            opts.bids,
        ))
        .inspect_err(|_| {
            if area_is_new {
                remove_unused_area(&area);
            }
        })?;
    // A session the user handed over (XNAT_TOKEN) is kept alive while mounted.
    let keepalive = {
        let _runtime = rt.enter();
        plan.client.keep_alive()
    };
    let limit = plan
        .cache_size
        .unwrap_or_else(|| crate::cache::default_limit(cache.area().root(), cache.used()));
    cache.set_limit(limit);
    tracing::info!(
        "cache: {} used of a {} cap",
        human_bytes(cache.used()),
        human_bytes(limit)
    );
    let session = mount(rt, api, cache.clone(), root, opts, device, &url)?;
    // The canonical path: mountinfo names mount points so.
    kernel::raise_read_ahead(&mountpoint);
    let state = write_state(&plan, &mountpoint, &cache, limit).map(Arc::new);
    // Other processes share the cache: what they added is counted (and the cap kept with
    // it), and what this one added is saved, every so often; `status` learns the size.
    let shared = cache.clone();
    let shown = state.clone();
    let syncing = rt.spawn(async move {
        let mut since_save = Duration::ZERO;
        loop {
            tokio::time::sleep(STATE_REFRESH_EVERY).await;
            since_save += STATE_REFRESH_EVERY;
            let cache = shared.clone();
            let save = since_save >= INDEX_SYNC_EVERY;
            if save {
                since_save = Duration::ZERO;
            }
            let shown = shown.clone();
            let saved = tokio::task::spawn_blocking(move || {
                if let Some(state) = &shown
                    && let Err(e) = state.refresh(cache.used(), limit)
                {
                    tracing::debug!("cannot refresh the mount's state file: {e}");
                }
                if !save {
                    return Ok(());
                }
                // Before saving: what processes that died left is counted and capped.
                cache.catch_up_and_save_index()
            })
            .await;
            if let Ok(Err(e)) = saved {
                tracing::warn!("cannot save the cache index: {e}");
            }
        }
    });
    notify::ready(&format!(
        "mounted {} on {}",
        kernel::mount_source(&url),
        mountpoint.display()
    ));
    on_mounted();
    let served = serve(rt, session, &opts.mountpoint);
    notify::stopping();
    syncing.abort();
    drop(state);
    // A cache area removed under the mount is not made again by its last save.
    if !cache.area().root().exists() {
        tracing::info!(
            "the cache area {} is gone: nothing saved",
            cache.area().root().display()
        );
    } else if let Err(e) = cache.save_index() {
        tracing::warn!("cannot save the cache index: {e}");
    }
    if let Some(task) = keepalive {
        task.abort();
    }
    // A courtesy to the server (its session ends now rather than when it expires), so it
    // gets a few seconds, not the I/O timeout: a server that stopped answering held the
    // exit back that long (field test).
    let _ = rt.block_on(async { tokio::time::timeout(LOGOUT_WAIT, plan.client.logout()).await });
    served
}

/// How long a mount ending waits for the server to end its session.
const LOGOUT_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// An error reaching the server, with the way out when data from it is cached: `--offline`.
fn unreachable_hint(e: anyhow::Error, cache_dir: &Path, url: &str) -> anyhow::Error {
    let unreachable = matches!(
        e.downcast_ref::<crate::xnat::XnatError>(),
        Some(x) if x.is_transient()
    );
    let area = crate::cache::Area::of(cache_dir, url);
    let cached = std::fs::read_dir(area.data()).is_ok_and(|mut d| d.next().is_some())
        || std::fs::read_dir(area.listings()).is_ok_and(|mut d| d.next().is_some());
    if unreachable && cached {
        return e.context(format!(
            "{url} cannot be reached, but what was browsed or prefetched from it is cached in {}: \
             add --offline to mount that without the server",
            area.root().display()
        ));
    }
    e
}

/// Removes the cache area a failed mount just made (and the listings it kept on the way),
/// unless a file was stored in it meanwhile (by another process).
fn remove_unused_area(area: &crate::cache::Area) {
    let empty = |dir: PathBuf| std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none());
    if empty(area.data())
        && let Err(e) = std::fs::remove_dir_all(area.root())
    {
        tracing::debug!(
            "cannot remove the unused cache area {}: {e}",
            area.root().display()
        );
    }
}

/// Writes the state file `xnatfs status` reads; a mount that cannot write it still serves.
fn write_state(
    plan: &MountPlan,
    mountpoint: &Path,
    cache: &Cache,
    limit: u64,
) -> Option<state::StateFile> {
    let pid = std::process::id();
    let mount_state = state::MountState {
        pid,
        started: state::process_start(pid)?,
        mountpoint: mountpoint.to_path_buf(),
        server: crate::names::without_userinfo(plan.client.base_url()),
        project: plan.project.clone(),
        sessions: plan.sessions.clone(),
        offline: plan.offline,
        cache_dir: std::path::absolute(&plan.cache_dir).unwrap_or(plan.cache_dir.clone()),
        cache_area: cache.area().root().to_path_buf(),
        cache_bytes: cache.used(),
        cache_limit: limit,
        log_file: plan.log_file.clone(),
    };
    let dir = state::state_dir();
    match state::StateFile::create_in(&dir, mount_state) {
        Ok(file) => Some(file),
        Err(e) => {
            tracing::warn!(
                "cannot write the mount's state in {} (xnatfs status shows less): {e}",
                dir.display()
            );
            None
        }
    }
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
    let remembering = RememberingApi::new(api, cache.area().listings(), offline)
        .with_context(|| format!("cannot use the cache dir {}", cache_dir.display()))?
        .with_fallback_after((io_timeout / 3).max(Duration::from_secs(1)))
        .with_fresh_for(dir_ttl);
    Ok((cache, Arc::new(remembering)))
}

/// What `-P` and `-E` (and `--bids`) ask the root to show, checked against the server.
pub async fn resolve_root(
    api: &dyn XnatApi,
    project: Option<&str>,
    default_project: Option<&str>,
    sessions: &[String],
    bids: bool,
) -> Result<Root> {
    if bids {
        if !sessions.is_empty() {
            anyhow::bail!("--bids shows a whole project: give -P PROJECT, not -E");
        }
        let Some(p) = project.or(default_project) else {
            anyhow::bail!(
                "--bids shows one project as a BIDS dataset: give it with -P PROJECT (or a profile's default project)"
            );
        };
        crate::xnat::check_project(api, p).await?;
        return Ok(Root::Bids(p.to_string()));
    }
    if !sessions.is_empty() {
        let in_project = project.or(default_project);
        return Ok(Root::Sessions(
            named_sessions(api, in_project, sessions).await?,
        ));
    }
    if let Some(p) = project {
        crate::xnat::check_project(api, p).await?;
        return Ok(Root::Project(p.to_string()));
    }
    api.projects().await?;
    Ok(Root::Server)
}

/// A mounted file system, serving nothing until [`serve`]d.
pub struct Mounted {
    session: fuser::Session<FuseAdapter>,
    /// Mounted by this process with mount(2) rather than by fuser: fuser does not unmount it
    /// when the session ends in an error.
    direct: bool,
}

/// Mounts the file system of the server at `url` on `opts.mountpoint` through the opened
/// FUSE `device`.
pub fn mount(
    rt: &tokio::runtime::Runtime,
    api: Arc<dyn XnatApi>,
    cache: Cache,
    root: Root,
    opts: &MountOptions,
    device: std::fs::File,
    url: &str,
) -> Result<Mounted> {
    let source = &kernel::mount_source(url);
    let fetcher = Fetcher::with_max_memory(
        api.clone(),
        rt.handle().clone(),
        cache.verifying(opts.verify),
        opts.io_timeout,
        opts.max_memory,
    );
    let tree = Tree::new(api, root, opts.dir_ttl)
        .with_crawl_ahead(opts.crawl_ahead)
        .with_scan_names(opts.scan_names)
        .with_bids(url, fetcher.clone(), opts.bids_map.clone());
    let tree = Arc::new(tree);
    let core = XnatFs::new(
        tree.clone(),
        fetcher,
        FsOptions {
            attr_ttl: opts.dir_ttl,
            io_timeout: opts.io_timeout,
            // SAFETY: getuid/getgid cannot fail.
            uid: unsafe { libc::getuid() },
            gid: unsafe { libc::getgid() },
            xattrs: opts.xattrs,
            series: crate::fetch::series::SeriesConfig::with_in_flight(opts.series_readahead),
        },
    );
    let fs = FuseAdapter::new(core.clone(), rt.handle().clone());
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::RO,
        fuser::MountOption::FSName(source.to_string()),
        fuser::MountOption::Subtype(kernel::SUBTYPE.into()),
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
        fuser::MountOption::NoAtime,
    ];
    if opts.allow_other {
        config.acl = fuser::SessionACL::All;
    }
    config.n_threads = Some(opts.threads.max(1));
    config.clone_fd = true;
    let mountpoint = &opts.mountpoint;
    let failed = |e: std::io::Error| anyhow::anyhow!(kernel::mount_error(&e, mountpoint));
    // SAFETY: geteuid cannot fail.
    let as_root = unsafe { libc::geteuid() } == 0;
    let direct = as_root
        && kernel::mount_directly(&device, mountpoint, source, opts.allow_other).map_err(failed)?;
    let session = if direct {
        let acl = config.acl;
        fuser::Session::from_fd(fs, device.into(), acl, config).map_err(|e| {
            let _ = mountpoint::unmount(mountpoint, true);
            failed(e)
        })?
    } else {
        drop(device);
        fuser::Session::new(fs, mountpoint, &config).map_err(failed)?
    };
    tree.on_change(crate::fs::fuse::kernel_invalidator(session.notifier()));
    core.on_resize(crate::fs::fuse::kernel_size_invalidator(session.notifier()));
    Ok(Mounted { session, direct })
}

/// Serves `mounted` until the file system is unmounted, unmounting it on SIGINT or SIGTERM.
pub fn serve(rt: &tokio::runtime::Runtime, mounted: Mounted, mountpoint: &Path) -> Result<()> {
    let target = mountpoint.to_path_buf();
    let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let asked = stopping.clone();
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
            asked.store(true, std::sync::atomic::Ordering::SeqCst);
            crate::fs::interrupt::stop_waiting();
            let said = match unmount(&target, false) {
                Ok(Unmounted::Clean) => format!("xnatfs: unmounted {}", target.display()),
                Ok(Unmounted::Lazy) => format!(
                    "xnatfs: {} is busy; detached it (it goes away when the last file on it is closed)",
                    target.display()
                ),
                Err(e) => format!("xnatfs: {e:#}"),
            };
            // Not `eprintln!`, which panics when stderr (the log, in the background) is on a
            // full disk.
            let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("{said}\n").as_bytes());
        }
    });
    let served = mounted.session.run();
    if let Err(e) = &served
        && stopping.load(std::sync::atomic::Ordering::SeqCst)
        && !mountpoint::is_mounted(mountpoint)
    {
        // Unmounted as asked: how the kernel's end of the connection reached each of the
        // session's threads is no failure of the mount.
        tracing::info!("the FUSE session ended after the unmount: {e}");
        return Ok(());
    }
    if mounted.direct && served.is_err() {
        // Not left behind as a stale mount.
        let _ = unmount(mountpoint, true);
    }
    served.context("the FUSE session ended with an error")
}
