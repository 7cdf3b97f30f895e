//! `xnatfs prefetch`.

use super::{ServerFlags, client, runtime};
use crate::cache::default_cache_dir;
use crate::prefetch::destination::Destination;
use crate::prefetch::select::{ScanSelector, Selection};
use crate::settings;
use crate::xnat::XnatApi;
use crate::xnat::remembering::RememberingApi;
use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args, Debug, Clone)]
pub struct PrefetchArgs {
    /// Session: accession ID, or label with -P (repeatable). Without -E, every session of -P.
    #[arg(short = 'E', long = "session")]
    pub sessions: Vec<String>,
    /// Project: where labels are looked up; alone, all its sessions.
    #[arg(short = 'P', long)]
    pub project: Option<String>,
    /// Scans: IDs like 1,2,3, ranges of numeric IDs like 1-3, or '*' for all.
    #[arg(short = 's', long = "scans", default_value = "*")]
    pub scans: String,
    /// Only these resource labels (repeatable, or comma-separated).
    #[arg(
        short = 'r',
        long = "resource",
        value_delimiter = ',',
        conflicts_with = "exclude_resource"
    )]
    pub resources: Vec<String>,
    /// Not these resource labels (repeatable, or comma-separated).
    #[arg(long = "exclude-resource", value_delimiter = ',')]
    pub exclude_resource: Vec<String>,
    /// Also the session-level resources (QC, PROTOCOLS, ...).
    #[arg(long)]
    pub session_resources: bool,
    /// Parallel transfers.
    #[arg(short = 'w', long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub workers: u16,
    /// Write plain files under DIR instead of the mount's cache.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// With --out and one session: the session's folder name (default: its label).
    #[arg(long, requires = "out")]
    pub name: Option<String>,
    /// Cache dir (default: $XDG_CACHE_HOME/xnatfs or ~/.cache/xnatfs).
    #[arg(long, conflicts_with = "out")]
    pub cache_dir: Option<PathBuf>,
    /// Print the plan (sessions, scans, resources, files, bytes, what is present); transfer nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// How to fetch: ZIP per resource where it pays, or one request per file.
    #[arg(long, value_enum, default_value = "auto")]
    pub method: crate::prefetch::transfer::Method,
    /// Seconds without progress before a transfer is given up (after retries).
    #[arg(long, default_value_t = 30)]
    pub io_timeout: u64,
    /// No progress output.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub server: ServerFlags,
}

pub fn cmd_prefetch(args: PrefetchArgs) -> Result<()> {
    let settings = settings::resolve(&args.server.server_args(), true, true)?;
    let selection = Selection {
        scans: ScanSelector::parse(&args.scans)?,
        include: args.resources.clone(),
        exclude: args.exclude_resource.clone(),
        session_resources: args.session_resources,
    };
    let destination = match &args.out {
        Some(root) => {
            std::fs::create_dir_all(root)
                .with_context(|| format!("cannot create {}", root.display()))?;
            if let Some(name) = &args.name
                && !crate::names::is_safe_component(name)
            {
                bail!("--name {name:?} is not a usable folder name");
            }
            Destination::Out {
                root: root.clone(),
                name: args.name.clone(),
            }
        }
        None => {
            let dir = args.cache_dir.clone().unwrap_or_else(default_cache_dir);
            Destination::Cache(
                crate::cache::Cache::open(&dir, &settings.url)
                    .with_context(|| format!("cannot use the cache dir {}", dir.display()))?,
            )
        }
    };
    let io_timeout = Duration::from_secs(args.io_timeout.max(1));
    let client = client(&settings, io_timeout, args.server.insecure)?;
    // Into the cache, the listings are kept too, so a mount can serve these sessions offline.
    let api: Arc<dyn XnatApi> = match &destination {
        Destination::Cache(cache) => Arc::new(
            RememberingApi::new(client.clone(), cache.area().listings(), false)
                .context("cannot use the cache dir")?,
        ),
        Destination::Out { .. } => client.clone(),
    };
    let opts = crate::prefetch::PrefetchOptions {
        sessions: args.sessions.clone(),
        project: args.project.clone(),
        default_project: settings.default_project.clone(),
        selection,
        destination,
        workers: usize::from(args.workers),
        method: args.method,
        dry_run: args.dry_run,
        io_timeout,
        quiet: args.quiet,
    };
    let rt = runtime()?;
    let outcome = rt.block_on(async {
        tokio::select! {
            r = crate::prefetch::run(api, &opts) => Some(r),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    rt.block_on(client.logout());
    match outcome {
        None => {
            eprintln!(
                "xnatfs: prefetch interrupted; no partial file was left under its final name; run it again to finish"
            );
            rt.shutdown_timeout(Duration::from_secs(1));
            std::process::exit(130);
        }
        Some(Ok(true)) => Ok(()),
        Some(Ok(false)) => bail!(
            "prefetch incomplete: some files failed (listed above); run it again to retry them"
        ),
        Some(Err(e)) => Err(e),
    }
}
