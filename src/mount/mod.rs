//! A mount's life: choosing what the root shows, mounting, serving until unmounted or
//! signalled, and unmounting cleanly. [`run`] is the one way to mount, for `xnatfs mount` and
//! `xnatfs demo` alike; [`mountpoint`] checks and unmounts mount points.

pub mod mountpoint;

pub use mountpoint::{Unmounted, is_mounted, prepare_mountpoint, unmount};

use crate::cache::Cache;
use crate::fetch::Fetcher;
use crate::fs::fuse::FuseAdapter;
use crate::fs::tree::{Root, Tree};
use crate::fs::{FsOptions, XnatFs};
use crate::units::human_bytes;
use crate::xnat::http::HttpXnat;
use crate::xnat::remembering::RememberingApi;
use crate::xnat::{XnatApi, named_sessions, unknown};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How often a mount saves the cache index, merged with other processes' (see
/// [`crate::cache::index`]).
const INDEX_SYNC_EVERY: Duration = Duration::from_secs(30);

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
    /// The cache's cap (default: [`crate::cache::budget::default_limit`]).
    pub cache_size: Option<u64>,
    pub options: MountOptions,
}

/// Mounts as `plan` says, calls `on_mounted` once the mount is ready, and serves until the
/// file system is unmounted (SIGINT and SIGTERM unmount it).
pub fn run(rt: &tokio::runtime::Runtime, plan: MountPlan, on_mounted: impl FnOnce()) -> Result<()> {
    let opts = &plan.options;
    let url = plan.client.base_url().to_string();
    let (cache, api) = open_cache_and_api(
        plan.client.clone() as Arc<dyn XnatApi>,
        &plan.cache_dir,
        &url,
        plan.offline,
        opts.io_timeout,
        opts.dir_ttl,
    )?;
    let root = rt.block_on(async {
        if !plan.offline {
            plan.client.check_login().await?;
        }
        resolve_root(
            api.as_ref(),
            plan.project.as_deref(),
            plan.default_project.as_deref(),
            &plan.sessions,
        )
        .await
    })?;
    let budget = cache.budget();
    let limit = plan
        .cache_size
        .unwrap_or_else(|| crate::cache::budget::default_limit(cache.area().root(), budget.used()));
    budget.set_limit(limit);
    tracing::info!(
        "cache: {} used of a {} cap",
        human_bytes(budget.used()),
        human_bytes(limit)
    );
    let session = mount(rt, api, cache.clone(), root, opts)?;
    // Other processes share the cache: what they added is counted (and the cap kept with
    // it), and what this one added is saved, every so often.
    let shared = cache.clone();
    let syncing = rt.spawn(async move {
        loop {
            tokio::time::sleep(INDEX_SYNC_EVERY).await;
            let cache = shared.clone();
            let saved = tokio::task::spawn_blocking(move || cache.budget().save()).await;
            if let Ok(Err(e)) = saved {
                tracing::warn!("cannot save the cache index: {e}");
            }
        }
    });
    on_mounted();
    let served = serve(rt, session, &opts.mountpoint);
    syncing.abort();
    if let Err(e) = cache.budget().save() {
        tracing::warn!("cannot save the cache index: {e}");
    }
    rt.block_on(plan.client.logout());
    served
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

/// What `-P` and `-E` ask the root to show, checked against the server.
pub async fn resolve_root(
    api: &dyn XnatApi,
    project: Option<&str>,
    default_project: Option<&str>,
    sessions: &[String],
) -> Result<Root> {
    if !sessions.is_empty() {
        let in_project = project.or(default_project);
        return Ok(Root::Sessions(
            named_sessions(api, in_project, sessions).await?,
        ));
    }
    if let Some(p) = project {
        api.sessions(p).await.map_err(unknown)?;
        return Ok(Root::Project(p.to_string()));
    }
    api.projects().await?;
    Ok(Root::Server)
}

/// Mounts the file system. The returned session serves nothing until run.
pub fn mount(
    rt: &tokio::runtime::Runtime,
    api: Arc<dyn XnatApi>,
    cache: Cache,
    root: Root,
    opts: &MountOptions,
) -> Result<fuser::Session<FuseAdapter>> {
    let tree = Arc::new(Tree::new(api.clone(), root, opts.dir_ttl));
    let fetcher = Fetcher::with_max_memory(
        api,
        rt.handle().clone(),
        cache,
        opts.io_timeout,
        opts.max_memory,
    );
    let core = XnatFs::new(
        tree.clone(),
        fetcher,
        FsOptions {
            attr_ttl: opts.dir_ttl,
            io_timeout: opts.io_timeout,
            // SAFETY: getuid/getgid cannot fail.
            uid: unsafe { libc::getuid() },
            gid: unsafe { libc::getgid() },
        },
    );
    let fs = FuseAdapter::new(core, rt.handle().clone());
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
    let session = fuser::Session::new(fs, &opts.mountpoint, &config)
        .with_context(|| format!("cannot mount on {}", opts.mountpoint.display()))?;
    tree.on_change(crate::fs::fuse::kernel_invalidator(session.notifier()));
    Ok(session)
}

/// Serves `session` until the file system is unmounted, unmounting it on SIGINT or SIGTERM.
pub fn serve(
    rt: &tokio::runtime::Runtime,
    session: fuser::Session<FuseAdapter>,
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
