//! `xnatfs cache stats` and `xnatfs cache clear`.

use crate::cache::default_cache_dir;
use crate::units::human_bytes;
use anyhow::{Context, Result};
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum CacheCommand {
    /// Files, bytes and kept listings per server.
    Stats {
        /// Cache dir (default: $XDG_CACHE_HOME/xnatfs or ~/.cache/xnatfs).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
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
        CacheCommand::Stats { cache_dir } => {
            let dir = cache_dir.unwrap_or_else(default_cache_dir);
            let areas = crate::cache::stats(&dir)
                .with_context(|| format!("cannot read {}", dir.display()))?;
            println!("cache: {}", dir.display());
            if areas.is_empty() {
                println!("(empty)");
            }
            for a in &areas {
                println!(
                    "{:<40} {:>8} files {:>12} {:>6} listings {:>4} partial",
                    a.area,
                    a.files,
                    human_bytes(a.bytes),
                    a.listings,
                    a.partial
                );
            }
            let (files, bytes): (u64, u64) = areas
                .iter()
                .fold((0, 0), |(f, b), a| (f + a.files, b + a.bytes));
            println!("total: {files} files, {}", human_bytes(bytes));
        }
        CacheCommand::Clear { cache_dir, url } => {
            let dir = cache_dir.unwrap_or_else(default_cache_dir);
            let cleared = crate::cache::clear(&dir, url.as_deref())
                .with_context(|| format!("cannot clear {}", dir.display()))?;
            let (files, bytes): (u64, u64) = cleared
                .iter()
                .fold((0, 0), |(f, b), a| (f + a.files, b + a.bytes));
            eprintln!(
                "xnatfs: cleared {files} files ({}) from {}",
                human_bytes(bytes),
                dir.display()
            );
        }
    }
    Ok(())
}
