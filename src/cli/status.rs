//! `xnatfs status`: this user's xnatfs mounts (from the mount table), with what each mount's
//! state file adds (see [`crate::mount::state`]) and its downloads in flight.

use crate::mount::state::{self, MountState};
use crate::mount::{self, XnatfsMount};
use crate::units::human_bytes;
use anyhow::Result;
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Print JSON (a list of mounts) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// One mount as `status` shows it; what is not known (no state file: a mount made by an
/// older xnatfs, or whose process is in another mount namespace) is null.
#[derive(Debug, Serialize)]
struct MountStatus {
    mountpoint: PathBuf,
    server: Option<String>,
    project: Option<String>,
    sessions: Vec<String>,
    offline: Option<bool>,
    cache_dir: Option<PathBuf>,
    pid: Option<u32>,
    downloads: Option<usize>,
    cache_bytes: Option<u64>,
    cache_limit: Option<u64>,
    log_file: Option<PathBuf>,
}

impl MountStatus {
    fn new(m: &XnatfsMount, state: Option<&MountState>) -> MountStatus {
        // The source is the server URL but for mounts made before it was.
        let source = Some(m.source.clone()).filter(|s| s.contains("://"));
        MountStatus {
            mountpoint: m.mountpoint.clone(),
            server: state.map(|s| s.server.clone()).or(source),
            project: state.and_then(|s| s.project.clone()),
            sessions: state.map(|s| s.sessions.clone()).unwrap_or_default(),
            offline: state.map(|s| s.offline),
            cache_dir: state.map(|s| s.cache_dir.clone()),
            pid: state.map(|s| s.pid),
            downloads: state.and_then(MountState::downloads_in_flight),
            cache_bytes: state.map(|s| s.cache_bytes),
            cache_limit: state.map(|s| s.cache_limit),
            log_file: state.and_then(|s| s.log_file.clone()),
        }
    }

    /// What the root shows, in words.
    fn root(&self) -> String {
        let mut root = match (&self.project, self.sessions.as_slice()) {
            _ if self.pid.is_none() => "?".to_string(),
            (None, []) => "every project".to_string(),
            (Some(p), []) => format!("project {p}"),
            (None, s) => format!("sessions {}", s.join(", ")),
            (Some(p), s) => format!("sessions {} in project {p}", s.join(", ")),
        };
        if self.offline == Some(true) {
            root.push_str(" (offline)");
        }
        root
    }

    fn text(&self) -> String {
        let unknown = || "?".to_string();
        let cache = match (&self.cache_dir, self.cache_bytes, self.cache_limit) {
            (Some(dir), Some(bytes), Some(limit)) => format!(
                "{} ({} of a {} cap)",
                dir.display(),
                human_bytes(bytes),
                human_bytes(limit)
            ),
            _ => unknown(),
        };
        let mut lines = vec![
            self.mountpoint.display().to_string(),
            format!(
                "  server     {}",
                self.server.clone().unwrap_or_else(unknown)
            ),
            format!("  root       {}", self.root()),
            format!("  cache      {cache}"),
            format!(
                "  pid        {}",
                self.pid.map_or_else(unknown, |p| p.to_string())
            ),
            format!(
                "  downloads  {}",
                self.downloads
                    .map_or_else(unknown, |n| format!("{n} in flight"))
            ),
        ];
        if let Some(log) = &self.log_file {
            lines.push(format!("  log        {}", log.display()));
        }
        lines.join("\n")
    }
}

pub fn cmd_status(args: StatusArgs) -> Result<()> {
    let states = state::live_in(&state::state_dir());
    let mounts: Vec<MountStatus> = mount::xnatfs_mounts()
        .iter()
        .map(|m| MountStatus::new(m, states.iter().find(|s| s.mountpoint == m.mountpoint)))
        .collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&mounts)?);
    } else if mounts.is_empty() {
        println!("no xnatfs mounts");
    } else {
        let blocks: Vec<String> = mounts.iter().map(MountStatus::text).collect();
        println!("{}", blocks.join("\n\n"));
    }
    Ok(())
}
