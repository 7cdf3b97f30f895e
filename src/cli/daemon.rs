//! The background mount: `xnatfs mount` without `--foreground` starts this program again,
//! with the user's own arguments and a marker in its environment, as a detached child that
//! mounts and serves; the parent returns once the child says the mount is ready (or why it
//! failed). A new mount flag needs nothing here: the child parses the same command line.

use crate::settings::Settings;
use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader};
use std::path::Path;

/// Set in the child's environment: "you are the background mount".
const MARKER: &str = "XNATFS_DAEMON_CHILD";

/// Whether this process is the background child of `xnatfs mount`.
pub fn is_child() -> bool {
    std::env::var_os(MARKER).is_some()
}

/// Tells the waiting parent the mount is ready, and lets go of its pipe.
pub fn ready() {
    println!("ready");
    detach_stdout();
}

/// Tells the waiting parent why the mount failed.
pub fn failed(e: &anyhow::Error) {
    println!("error: {e:#}");
}

/// Points stdout at /dev/null, so the parent's read of it ends.
fn detach_stdout() {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        // SAFETY: both descriptors are valid; dup2 replaces fd 1 atomically.
        unsafe {
            libc::dup2(null.as_raw_fd(), 1);
        }
    }
}

/// Starts the background child, logging to `log_path`, and waits until it says the mount on
/// `mountpoint` is ready (or why it failed).
pub fn spawn(
    settings: &Settings,
    cache_dir: &Path,
    log_path: &Path,
    mountpoint: &Path,
) -> Result<()> {
    use std::os::unix::process::CommandExt;
    crate::cache::create_cache_dir(cache_dir)
        .with_context(|| format!("cannot create the cache dir {}", cache_dir.display()))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .with_context(|| format!("cannot open the log file {}", log_path.display()))?;
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(std::env::args_os().skip(1)).env(MARKER, "1");
    // The child gets the resolved server and credentials through its environment, never argv
    // (it must not prompt for a password again).
    cmd.env("XNAT_URL", &settings.url);
    let creds = &settings.credentials;
    for (name, value) in [
        ("XNAT_USER", &creds.user),
        ("XNAT_PASS", &creds.password),
        ("XNAT_TOKEN", &creds.token),
    ] {
        match value {
            Some(v) => cmd.env(name, v),
            None => cmd.env_remove(name),
        };
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; the child leaves our session and terminal so that
    // Ctrl-C in this shell does not reach it.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("cannot start the background mount")?;
    let stdout = child
        .stdout
        .take()
        .context("no pipe to the background mount")?;
    let mut verdict = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap_or_default();
        if line == "ready" {
            verdict = Some(Ok(()));
            break;
        }
        if let Some(msg) = line.strip_prefix("error: ") {
            verdict = Some(Err(anyhow::anyhow!("{msg}")));
        }
    }
    match verdict {
        Some(Ok(())) => {
            eprintln!(
                "xnatfs: mounted {} on {} (log: {}; unmount with: xnatfs unmount {})",
                settings.url,
                mountpoint.display(),
                log_path.display(),
                mountpoint.display()
            );
            Ok(())
        }
        Some(Err(e)) => {
            let _ = child.wait();
            Err(e)
        }
        None => {
            let status = child.wait()?;
            bail!(
                "the background mount exited ({status}) before it was ready; see {}",
                log_path.display()
            )
        }
    }
}
