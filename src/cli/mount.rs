//! `xnatfs mount`.

use super::daemon;
use super::shared::{ServerFlags, client, runtime};
use crate::cache::default_cache_dir;
use crate::fs::layout::ScanNames;
use crate::mount::{self, MountOptions, MountPlan};
use crate::settings::{self, Settings};
use anyhow::{Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Args, Debug, Clone)]
pub struct MountArgs {
    /// The folder to mount on (must exist and be empty).
    pub mountpoint: PathBuf,
    /// Show this project's sessions at the root (labels in -E are looked up here).
    #[arg(short = 'P', long)]
    pub project: Option<String>,
    /// Show just this session (accession ID, or label with -P); repeatable.
    #[arg(short = 'E', long = "session")]
    pub sessions: Vec<String>,
    /// Cache dir (default: $XDG_CACHE_HOME/xnatfs or ~/.cache/xnatfs).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Stay attached; Ctrl-C or SIGTERM unmounts.
    #[arg(long, short = 'f')]
    pub foreground: bool,
    /// How long listings are kept before they are asked again (like 60s, 5m; plain numbers
    /// are seconds).
    #[arg(long, value_parser = crate::units::parse_duration, default_value = "60s")]
    pub dir_ttl: Duration,
    /// How long one operation may wait for the server before it fails (like 30s, 2m).
    #[arg(long, value_parser = crate::units::parse_timeout, default_value = "30s")]
    pub io_timeout: Duration,
    /// Log file when in the background, rotated past 10 MiB (default: one per mount point,
    /// <cache dir>/logs/<mount point>.log).
    #[arg(long)]
    pub log_file: Option<PathBuf>,
    /// No server at all: serve what was browsed or prefetched before, from the cache.
    #[arg(long)]
    pub offline: bool,
    /// Cap on the cache's size (like 500M or 50G); least recently used files not open are
    /// evicted (default: 20G, or less to keep 10% of the disk free).
    #[arg(long, value_parser = crate::units::parse_size)]
    pub cache_size: Option<u64>,
    /// Memory downloads may hold at once (like 256M, at least 16M); past it they slow down to
    /// wait.
    #[arg(long, value_parser = crate::units::parse_size, default_value = "512M")]
    pub max_memory: u64,
    /// While a folder of sessions is walked (find, ls -R, du), fetch the listings of the next
    /// sessions, this many at a time (never file bodies; 0: off).
    #[arg(long, value_name = "N", default_value_t = crate::mount::DEFAULT_CRAWL_AHEAD)]
    pub crawl_ahead: usize,
    /// Files fetched at once ahead of a sequential reader: when a tool opens cold files of
    /// one folder one after another (dcm2niix, md5sum, cp -r over a DICOM series), the files
    /// after them are fetched ahead, in parallel, into the cache; N at first, doubling up to
    /// 4 x N while the reader keeps waiting for them; it stops when the reader stops. A
    /// single open (head of one file) or a listing never starts it. 0: off.
    #[arg(long, value_name = "N", default_value_t = crate::fetch::series::DEFAULT_IN_FLIGHT)]
    pub series_readahead: usize,
    /// How a downloaded file is checked before it is served whole and cached: md5 (its size
    /// and the MD5 XNAT lists; hashing takes one core, ~600-800 MB/s), or size (its size only:
    /// reads are not bound by hashing, ~1.2 GB/s on 2 cores, trusting TCP/TLS for the bytes).
    /// Cached copies verified by MD5 stay valid either way; copies checked by size are hashed
    /// once when a later md5 mount opens them.
    #[arg(long, value_enum, default_value = "md5")]
    pub verify: crate::cache::Verify,
    /// Let other users read the mount (it is private to you by default; as non-root this
    /// needs user_allow_other in /etc/fuse.conf).
    #[arg(long)]
    pub allow_other: bool,
    /// How scan folders are named: `id` (scans/2, as xnatctl lays out its downloads) or
    /// `id-type` (scans/2-T1w, as XNAT names scans in its ZIP downloads: the type's characters
    /// other than letters, digits and _ become _). Only the names shown change: the cache and
    /// `prefetch --out` keep scan IDs.
    #[arg(long, value_enum, default_value = "id")]
    pub scan_names: ScanNames,
    /// Show no user.xnat.* extended attributes (XNAT's metadata, read with getfattr -d).
    /// With them, `ls -l` costs one or two round trips to xnatfs per file (the kernel asks
    /// every file system for its security and ACL attributes); without, none.
    #[arg(long)]
    pub no_xattrs: bool,
    /// Show the project (-P, or the profile's default project) as a BIDS dataset, for BIDS
    /// apps and pybids: sub-*/ses-*/<datatype>/<file> from each session's BIDS data (a whole
    /// BIDS tree in a session resource, or the scans' NIFTI and BIDS resources as
    /// dcm2bids-session makes them), and dataset_description.json, participants.tsv, README
    /// at the top; sessions without BIDS data are listed in code/xnatfs/unmapped.tsv.
    #[arg(long)]
    pub bids: bool,
    /// With --bids, name the NIfTI files of scans that have no BIDS names by this BIDS map
    /// (the format dcm2bids-session reads: a JSON list of {"series_description": "T1_MPRAGE",
    /// "bidsname": "T1w"}, matched without regard to case); `run-NN` is added by ascending
    /// scan ID where two scans map to one name, unusable scans are skipped. Without it, the
    /// project's (or site's) bids/bidsmap configuration in XNAT is used, if there is one.
    #[arg(long, value_name = "FILE", requires = "bids")]
    pub bids_map: Option<PathBuf>,
    #[command(flatten)]
    pub server: ServerFlags,
}

impl MountArgs {
    /// Makes the paths absolute, from the folder the command runs in.
    fn make_paths_absolute(&mut self) -> Result<()> {
        let absolute = |p: &Path| {
            std::path::absolute(p).with_context(|| format!("cannot resolve {}", p.display()))
        };
        self.mountpoint = absolute(&self.mountpoint)?;
        if let Some(dir) = &self.cache_dir {
            self.cache_dir = Some(absolute(dir)?);
        }
        if let Some(log) = &self.log_file {
            self.log_file = Some(absolute(log)?);
        }
        Ok(())
    }
}

pub fn cmd_mount(mut args: MountArgs) -> Result<()> {
    let child = daemon::is_child();
    // Relative paths name what they name from here, even once the background mount has left
    // this folder (it keeps no folder busy but `/`).
    args.make_paths_absolute()?;
    if child {
        std::env::set_current_dir("/").context("cannot change to the folder /")?;
    }
    let settings = match child {
        // The background mount gets what its parent resolved, through its stdin.
        true => daemon::received_settings()?,
        false => settings::resolve(&args.server.server_args(), true, !args.offline)?,
    };
    mount::prepare_mountpoint(&args.mountpoint)?;
    let cache_dir = match args.cache_dir.clone() {
        Some(dir) => dir,
        None => std::path::absolute(default_cache_dir())?,
    };
    let log = args
        .log_file
        .clone()
        .unwrap_or_else(|| crate::cache::default_log_file(&cache_dir, &args.mountpoint));
    if !args.foreground && !child {
        return daemon::spawn(&settings, &cache_dir, &log, &args.mountpoint);
    }
    if child && let Err(e) = mount::log_file::rotate_stderr_at(&log) {
        tracing::warn!("the log {} will not be rotated: {e}", log.display());
    }
    // In the foreground the log is this terminal.
    let log = child.then_some(log);
    let result = serve(&args, &settings, cache_dir, log, child);
    if child && let Err(e) = &result {
        daemon::failed(e);
    }
    result
}

/// Mounts and serves in this process until unmounted.
fn serve(
    args: &MountArgs,
    settings: &Settings,
    cache_dir: PathBuf,
    log_file: Option<PathBuf>,
    child: bool,
) -> Result<()> {
    let io_timeout = args.io_timeout;
    let plan = MountPlan {
        client: client(settings, io_timeout, &args.server)?,
        cache_dir,
        offline: args.offline,
        project: args.project.clone(),
        default_project: settings.default_project.clone(),
        sessions: args.sessions.clone(),
        cache_size: args.cache_size,
        log_file,
        options: MountOptions {
            mountpoint: args.mountpoint.clone(),
            dir_ttl: args.dir_ttl,
            io_timeout,
            threads: 4,
            allow_other: args.allow_other,
            max_memory: args.max_memory,
            crawl_ahead: args.crawl_ahead,
            scan_names: args.scan_names,
            xattrs: !args.no_xattrs,
            series_readahead: args.series_readahead,
            verify: args.verify,
            bids: args.bids,
            bids_map: bids_map(args.bids_map.as_deref())?,
        },
    };
    mount::run(&runtime()?, plan, || {
        if child {
            // The parent is waiting on our stdout for the verdict.
            daemon::ready();
        } else {
            eprintln!(
                "xnatfs: mounted {} on {} (Ctrl-C to unmount)",
                settings.url,
                args.mountpoint.display()
            );
        }
    })
}

/// The BIDS map in `file`, checked before anything is mounted.
pub(super) fn bids_map(file: Option<&Path>) -> Result<Option<crate::bids::bidsmap::BidsMap>> {
    let Some(file) = file else { return Ok(None) };
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the BIDS map {}", file.display()))?;
    crate::bids::bidsmap::BidsMap::parse(&text)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("the BIDS map {}: {e}", file.display()))
}
