//! The background mount: `xnatfs mount` without `--foreground` starts this program again,
//! with the user's own arguments and a marker in its environment, as a detached child that
//! mounts and serves; the parent returns once the child says the mount is ready (or why it
//! failed). A new mount flag needs nothing here: the child parses the same command line.
//!
//! The server and credentials the parent resolved reach the child through its stdin, never
//! its environment or command line (which `/proc/<pid>/environ` and `ps` show for as long
//! as the mount lives): the child starts without `XNAT_PASS`, `XNAT_TOKEN` and the rest, and
//! a user name and password in `--url` are taken out of its arguments.

use super::exit::{Exit, WithExit};
use crate::names::without_userinfo;
use crate::settings::Settings;
use crate::xnat::http::Credentials;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

/// Set in the child's environment: "you are the background mount".
const MARKER: &str = "XNATFS_DAEMON_CHILD";

/// The variables the child must not inherit: it gets the settings through its stdin.
const SETTINGS_VARS: [&str; 4] = ["XNAT_URL", "XNAT_USER", "XNAT_PASS", "XNAT_TOKEN"];

/// The settings as the parent hands them to the child.
#[derive(Serialize, Deserialize)]
struct Handoff {
    url: String,
    user: Option<String>,
    password: Option<String>,
    token: Option<String>,
    default_project: Option<String>,
    #[serde(default)]
    insecure: bool,
}

/// In the child: the settings its parent resolved, read from stdin.
pub fn received_settings() -> Result<Settings> {
    let text = std::io::read_to_string(std::io::stdin())
        .context("cannot read the settings from the parent")?;
    let h: Handoff =
        serde_json::from_str(&text).context("cannot read the settings from the parent")?;
    Ok(Settings {
        url: h.url,
        credentials: Credentials {
            user: h.user,
            password: h.password,
            token: h.token,
        },
        default_project: h.default_project,
        insecure: h.insecure,
    })
}

/// This command line's arguments for the child (the `xnatfs mount` one that a mount(8)
/// helper form stands for), with any user name and password taken out of `--url`'s value.
fn child_args() -> Vec<OsString> {
    let mut out = Vec::new();
    let mut after_url = false;
    let mut options_ended = false;
    for arg in super::shared::command_line().into_iter().skip(1) {
        let text = arg.to_str().filter(|_| !options_ended);
        let kept = match text {
            Some(url) if after_url => without_userinfo(url).into(),
            Some(a) if a.starts_with("--url=") => {
                format!("--url={}", without_userinfo(&a["--url=".len()..])).into()
            }
            _ => arg.clone(),
        };
        after_url = text == Some("--url");
        options_ended |= text == Some("--");
        out.push(kept);
    }
    out
}

/// Whether this process is the background child of `xnatfs mount`.
pub fn is_child() -> bool {
    std::env::var_os(MARKER).is_some()
}

/// Tells the waiting parent the mount is ready, and lets go of its pipe.
pub fn ready() {
    println!("ready");
    detach_stdout();
}

/// Tells the waiting parent why the mount failed, and the exit status that gives
/// (`error: CODE MESSAGE`).
pub fn failed(e: &anyhow::Error) {
    println!("error: {} {e:#}", Exit::for_error(e).code());
}

/// The error a child's `error: CODE MESSAGE` line stands for, with its exit status.
fn reported_error(line: &str) -> anyhow::Error {
    let (code, msg) = line
        .split_once(' ')
        .and_then(|(c, m)| Some((Exit::from_code(c.parse().ok()?)?, m)))
        .unwrap_or((Exit::Failed, line));
    WithExit(code, msg.to_string()).into()
}

/// Points stdout at /dev/null, so the parent's read of it ends.
fn detach_stdout() {
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
    if let Some(dir) = log_path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the log folder {}", dir.display()))?;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .with_context(|| format!("cannot open the log file {}", log_path.display()))?;
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(child_args()).env(MARKER, "1");
    for name in SETTINGS_VARS {
        cmd.env_remove(name);
    }
    cmd.stdin(std::process::Stdio::piped())
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
    let creds = &settings.credentials;
    let handoff = Handoff {
        url: settings.url.clone(),
        user: creds.user.clone(),
        password: creds.password.clone(),
        token: creds.token.clone(),
        default_project: settings.default_project.clone(),
        insecure: settings.insecure,
    };
    if let Some(mut stdin) = child.stdin.take() {
        // A child that fails before reading says so on its stdout, read below.
        let _ = serde_json::to_writer(&mut stdin, &handoff);
        let _ = stdin.flush();
    }
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
            verdict = Some(Err(reported_error(msg)));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_childs_exit_status_reaches_the_parent() {
        let e = anyhow::Error::new(crate::xnat::XnatError::Auth("wrong password".into()));
        let line = format!("{} {e:#}", Exit::for_error(&e).code());
        let back = reported_error(&line);
        assert_eq!(Exit::for_error(&back), Exit::Auth);
        assert_eq!(back.to_string(), "authentication failed: wrong password");
        assert_eq!(Exit::for_error(&reported_error("garbled")), Exit::Failed);
    }
}
