//! `xnatfs unmount`: one mount, or every xnatfs mount of this user (`--all`); `--lazy`
//! detaches at once, even while files on it are open.

use crate::mount::{self, Unmounted};
use anyhow::{Result, bail};
use clap::Args;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct UnmountArgs {
    /// The folder to unmount.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub mountpoint: Option<PathBuf>,
    /// Unmount every xnatfs mount of yours (`xnatfs status` lists them).
    #[arg(long, short = 'a')]
    pub all: bool,
    /// Detach at once, even while files on it are open: it goes away when the last is closed.
    #[arg(long, short = 'l')]
    pub lazy: bool,
}

pub fn cmd_unmount(args: UnmountArgs) -> Result<()> {
    if let Some(mountpoint) = &args.mountpoint {
        return unmount_one(mountpoint, args.lazy);
    }
    let mounts = mount::xnatfs_mounts();
    if mounts.is_empty() {
        eprintln!("xnatfs: no xnatfs mounts to unmount");
        return Ok(());
    }
    // The last mounted first: a mount inside another goes before it.
    let mut failed = 0;
    for m in mounts.iter().rev() {
        if let Err(e) = unmount_one(&m.mountpoint, args.lazy) {
            eprintln!("xnatfs: {e:#}");
            failed += 1;
        }
    }
    if failed > 0 {
        bail!(
            "{failed} of {} xnatfs mounts could not be unmounted",
            mounts.len()
        );
    }
    Ok(())
}

/// How long `unmount` waits for the mount's process to save and exit once the kernel let go.
const DAEMON_EXIT_WAIT: Duration = Duration::from_secs(10);

fn unmount_one(mountpoint: &Path, lazy: bool) -> Result<()> {
    let daemon = mount::state::serving(mountpoint);
    match mount::unmount(mountpoint, lazy)? {
        Unmounted::Clean => {
            // Done means done: a script that removes the cache next (or mounts it again)
            // must not race the process still saving into it.
            if let Some(d) = daemon {
                wait_for_exit(&d, DAEMON_EXIT_WAIT);
            }
            eprintln!("xnatfs: unmounted {}", mountpoint.display())
        }
        Unmounted::Lazy if lazy => eprintln!(
            "xnatfs: detached {} (it goes away when the last file on it is closed)",
            mountpoint.display()
        ),
        Unmounted::Lazy => eprintln!(
            "xnatfs: {} is busy; detached it (it goes away when the last file on it is closed)",
            mountpoint.display()
        ),
    }
    Ok(())
}

/// Waits until the process of `daemon` has ended, at most `limit`; says so past it.
fn wait_for_exit(daemon: &mount::state::MountState, limit: Duration) {
    let began = Instant::now();
    while daemon.is_live() {
        if began.elapsed() >= limit {
            eprintln!(
                "xnatfs: the process of the mount on {} (pid {}) is still ending after {} s \
                 (its readers, its cache index, its logout); it ends by itself",
                daemon.mountpoint.display(),
                daemon.pid,
                limit.as_secs()
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
