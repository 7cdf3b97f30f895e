//! `xnatfs cache stats` and `xnatfs cache clear`.

use crate::cache::AreaStats;
use crate::cache::default_cache_dir;
use crate::units::{files, human_bytes};
use anyhow::{Context, Result};
use clap::Subcommand;
use serde::Serialize;
use std::path::Path;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum CacheCommand {
    /// Files, bytes and kept listings per server.
    Stats {
        /// Cache dir (default: $XDG_CACHE_HOME/xnatfs or ~/.cache/xnatfs).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Print JSON: the cache dir, each server's area, and the totals.
        #[arg(long)]
        json: bool,
    },
    /// Delete cached files and listings (of one server with --url, else of all).
    Clear {
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Only this server's area.
        #[arg(long)]
        url: Option<String>,
    },
}

pub fn cmd_cache(c: CacheCommand) -> Result<()> {
    match c {
        CacheCommand::Stats { cache_dir, json } => {
            let dir = cache_dir.unwrap_or_else(default_cache_dir);
            let areas = crate::cache::stats(&dir)
                .with_context(|| format!("cannot read {}", dir.display()))?;
            if json {
                return print_json(&dir, &areas);
            }
            println!("cache: {}", dir.display());
            if areas.is_empty() {
                println!("(empty)");
            }
            for a in &areas {
                println!(
                    "{:<40} {:>14} {:>12} {:>6} listings {:>4} partial",
                    a.area,
                    files(a.files),
                    human_bytes(a.bytes),
                    a.listings,
                    a.partial
                );
            }
            let (total_files, bytes): (u64, u64) = areas
                .iter()
                .fold((0, 0), |(f, b), a| (f + a.files, b + a.bytes));
            println!("total: {}, {}", files(total_files), human_bytes(bytes));
        }
        CacheCommand::Clear { cache_dir, url } => {
            let dir = cache_dir.unwrap_or_else(default_cache_dir);
            let cleared = crate::cache::clear(&dir, url.as_deref())
                .with_context(|| format!("cannot clear {}", dir.display()))?;
            let (n, bytes): (u64, u64) = cleared
                .emptied
                .iter()
                .fold((0, 0), |(f, b), a| (f + a.files, b + a.bytes));
            eprintln!(
                "xnatfs: cleared {} ({}) from {}",
                files(n),
                human_bytes(bytes),
                dir.display()
            );
            if !cleared.in_use.is_empty() {
                anyhow::bail!(
                    "left {} as it is: in use by a running mount or prefetch (unmount it, or let it finish, then clear again)",
                    cleared.in_use.join(", ")
                );
            }
        }
    }
    Ok(())
}

/// `cache stats --json`.
#[derive(Serialize)]
struct StatsJson<'a> {
    cache_dir: &'a Path,
    areas: Vec<AreaJson<'a>>,
    total_files: u64,
    total_bytes: u64,
}

#[derive(Serialize)]
struct AreaJson<'a> {
    /// The area's folder name (one per server URL).
    area: &'a str,
    files: u64,
    bytes: u64,
    listings: u64,
    partial: u64,
}

fn print_json(dir: &Path, areas: &[AreaStats]) -> Result<()> {
    let out = StatsJson {
        cache_dir: dir,
        areas: areas
            .iter()
            .map(|a| AreaJson {
                area: &a.area,
                files: a.files,
                bytes: a.bytes,
                listings: a.listings,
                partial: a.partial,
            })
            .collect(),
        total_files: areas.iter().map(|a| a.files).sum(),
        total_bytes: areas.iter().map(|a| a.bytes).sum(),
    };
    super::shared::print(format!("{}\n", serde_json::to_string_pretty(&out)?).as_bytes())
}
