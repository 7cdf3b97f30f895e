//! `xnatfs prefetch`.

use super::exit::{self, Exit};
use super::shared::{ServerFlags, client, failed, runtime};
use crate::cache::default_cache_dir;
use crate::prefetch::destination::Destination;
use crate::prefetch::select::{ScanSelector, Selection};
use crate::prefetch::summary::Summary;
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
    /// Also the resources of the session's assessors (FreeSurfer, QC, PUP outputs), under
    /// `<session>/assessors/<assessor label>/resources/<label>/files`; -r and
    /// --exclude-resource apply to them too.
    #[arg(long)]
    pub assessors: bool,
    /// Also the resources of the session's reconstructions, under
    /// `<session>/reconstructions/<ID>/resources/<label>/files`; -r and --exclude-resource
    /// apply to them too.
    #[arg(long)]
    pub reconstructions: bool,
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
    /// How long a transfer may go without progress before it is given up (like 30s, 2m;
    /// plain numbers are seconds).
    #[arg(long, value_parser = crate::units::parse_timeout, default_value = "30s")]
    pub io_timeout: Duration,
    /// How each file is checked before it takes its final name: md5 (its size and the MD5
    /// XNAT lists) or size (its size only: no MD5 is computed, trusting TCP/TLS for the
    /// bytes). Files already present in the cache are taken by the digest they keep; in
    /// --out they are checked by MD5 either way.
    #[arg(long, value_enum, default_value = "md5")]
    pub verify: crate::cache::Verify,
    /// No progress output.
    #[arg(short, long)]
    pub quiet: bool,
    /// Only part I of N of the sessions (I from 0 to N-1), split by accession ID: the same
    /// on every node, disjoint, together everything. For a Slurm array --array=0-<N-1>:
    /// --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT.
    #[arg(long, value_name = "I/N", value_parser = crate::prefetch::shard::Shard::parse)]
    pub shard: Option<crate::prefetch::shard::Shard>,
    /// Print the plan (with --dry-run) or the result as JSON on stdout: per session and in
    /// total, files, bytes, failures, skipped items, status and exit code. No progress output.
    #[arg(long)]
    pub json: bool,
    /// The files of the project's BIDS view (what `mount -P PROJ --bids` shows), into the
    /// cache (a `mount --bids` then reads them with no request, even offline) or, with --out
    /// DIR, as a plain BIDS dataset at DIR (dataset_description.json, participants.tsv and
    /// the rest included). Needs -P (or a profile's default project).
    #[arg(long, conflicts_with_all = ["sessions", "resources", "exclude_resource", "session_resources", "assessors", "reconstructions", "name"])]
    pub bids: bool,
    /// With --bids, only the files BIDS indexers read (pybids, the validator, fMRIPrep's
    /// first step): the JSON sidecars, TSV tables and bval/bvec files, not the images.
    #[arg(long, requires = "bids")]
    pub bids_metadata_only: bool,
    /// With --bids, name scans that have no BIDS names by this BIDS map (as `mount
    /// --bids-map` does).
    #[arg(long, value_name = "FILE", requires = "bids")]
    pub bids_map: Option<PathBuf>,
    #[command(flatten)]
    pub server: ServerFlags,
}

/// `xnatfs prefetch --help` after the options: where files go, examples, exit codes.
pub fn after_help() -> String {
    format!(
        "Into the mount's cache by default (a mount then reads them with no request, even offline),\n\
        or with --out into plain folders: DIR/<session>/scans/<scan>/resources/<label>/files/...\n\n\
        Examples:\n  \
        xnatfs prefetch -E XNAT_E00001                          # a whole session, into the cache\n  \
        xnatfs prefetch -P MYPROJ -E SUBJ01_MR1 -s 1,2 -r DICOM  # scans 1 and 2, DICOM only\n  \
        xnatfs prefetch -P MYPROJ --out ./data -w 8              # every session of a project\n  \
        xnatfs prefetch -E XNAT_E00001 --session-resources --exclude-resource SNAPSHOTS --dry-run\n  \
        xnatfs prefetch -P MYPROJ --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT -q  # one node's part (sbatch --array=0-9)\n  \
        xnatfs prefetch -P MYPROJ --bids --bids-metadata-only    # what pybids and BIDS apps index, into the cache\n  \
        xnatfs prefetch -P MYPROJ --bids --out ./bids            # the project as a plain BIDS dataset\n\n\
        {}",
        exit::prefetch_table()
    )
}

/// Runs `xnatfs prefetch`; what it returns is the exit status. With `--json`, stdout holds
/// one JSON document whatever happened (its `exit_code` is the exit status).
pub fn cmd_prefetch(args: PrefetchArgs) -> Exit {
    let json = args.json;
    let (exit, summary) = match prefetch(args) {
        Ok(done) => done,
        Err(e) => {
            let msg = format!("{e:#}");
            let exit = failed(e);
            (exit, Some(Summary::ended("failed", Some(msg))))
        }
    };
    if json {
        let mut summary = summary.unwrap_or_default();
        summary.exit_code = exit.code();
        match exit {
            Exit::Interrupted => summary.status = "interrupted".into(),
            Exit::Terminated => summary.status = "terminated".into(),
            Exit::Auth => summary.status = "authentication".into(),
            Exit::Unreachable => summary.status = "unreachable".into(),
            Exit::Usage => summary.status = "usage".into(),
            _ => {}
        }
        let text = serde_json::to_string_pretty(&summary).unwrap_or_default();
        if let Err(e) = super::shared::print(format!("{text}\n").as_bytes()) {
            return failed(e);
        }
    }
    exit
}

fn prefetch(args: PrefetchArgs) -> Result<(Exit, Option<Summary>)> {
    if let Some(shard) = args.shard
        && let Err(e) = shard.check_slurm(&crate::prefetch::shard::SlurmArray::from_env())
    {
        eprintln!("xnatfs: {e}");
        return Ok((
            Exit::Usage,
            Some(Summary::ended("usage", Some(e.to_string()))),
        ));
    }
    let settings = settings::resolve(&args.server.server_args(), true, true)?;
    let selection = Selection {
        scans: ScanSelector::parse(&args.scans)
            .map_err(|e| crate::cli::exit::UsageError(e.to_string()))?,
        include: args.resources.clone(),
        exclude: args.exclude_resource.clone(),
        session_resources: args.session_resources,
        assessors: args.assessors,
        reconstructions: args.reconstructions,
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
                    .with_context(|| format!("cannot use the cache dir {}", dir.display()))?
                    .verifying(args.verify),
            )
        }
    };
    let io_timeout = args.io_timeout;
    let client = client(&settings, io_timeout, &args.server)?;
    // Into the cache, the listings are kept too, so a mount can serve these sessions offline.
    let api: Arc<dyn XnatApi> = match &destination {
        Destination::Cache(cache) => Arc::new(
            RememberingApi::new(client.clone(), cache.area().listings(), false)
                .context("cannot use the cache dir")?,
        ),
        Destination::Out { .. } => client.clone(),
    };
    let bids = match args.bids {
        false => None,
        true => Some(crate::prefetch::bids::BidsPrefetch {
            metadata_only: args.bids_metadata_only,
            map: super::mount::bids_map(args.bids_map.as_deref())?,
            server_url: settings.url.clone(),
        }),
    };
    let project = match (args.bids, &args.project) {
        (true, None) => match &settings.default_project {
            Some(p) => Some(p.clone()),
            None => {
                return Err(crate::cli::exit::UsageError(
                    "--bids prefetches a project's BIDS view: give it with -P PROJECT (or a profile's default project)".into(),
                )
                .into());
            }
        },
        _ => args.project.clone(),
    };
    let opts = crate::prefetch::PrefetchOptions {
        sessions: args.sessions.clone(),
        project,
        default_project: settings.default_project.clone(),
        selection,
        destination,
        workers: usize::from(args.workers),
        method: args.method,
        dry_run: args.dry_run,
        io_timeout,
        quiet: args.quiet,
        shard: args.shard,
        verify: args.verify,
        json: args.json,
        bids,
    };
    let rt = runtime()?;
    let outcome = rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        // Who the session is, beside the first listings: a session that dies mid-run on a
        // site with guest access is then noticed and replaced.
        let who = client.clone();
        tokio::spawn(async move { who.learn_identity().await });
        let mut term = signal(SignalKind::terminate()).context("cannot watch for SIGTERM")?;
        // Dropping the prefetch on a signal drops every transfer under way with its partial
        // file, and the run's folder of partial files with whatever is left in it.
        Ok::<_, anyhow::Error>(tokio::select! {
            r = crate::prefetch::run(api, &opts) => r.map(|o| {
                tell(&o);
                (Exit::from(o.ending), Some(o.summary))
            }),
            _ = tokio::signal::ctrl_c() => Ok((Exit::Interrupted, None)),
            _ = term.recv() => Ok((Exit::Terminated, None)),
        })
    })?;
    // A server that went away may not answer: do not wait for it long.
    rt.block_on(async {
        let _ = tokio::time::timeout(Duration::from_secs(3), client.logout()).await;
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    if let Ok((Exit::Interrupted | Exit::Terminated, _)) = outcome {
        eprintln!("xnatfs: prefetch interrupted; no partial file was left; run it again to finish");
    }
    outcome
}

/// What a run tells when it ends: notes, what was left out or failed, the counts and how it
/// ended on standard error; the plan of a dry run on standard output.
fn tell(outcome: &crate::prefetch::Outcome) {
    for line in &outcome.told {
        eprintln!("{line}");
    }
    if let Some(plan) = &outcome.plan {
        print!("{plan}");
    }
}
