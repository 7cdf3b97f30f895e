//! Test harness: a mock XNAT server in this process on 127.0.0.1, and real FUSE mounts made
//! by the `xnatfs` binary. Every mount is unmounted in `Drop` (`fusermount3 -u`, then
//! `umount -l`), its process waited for (killed if need be), and a watchdog unmounts it if a
//! test runs past its deadline, so no test leaves a mount or a process behind or hangs.

// Each test target uses a part of this module; the rest is unused there.
#![allow(dead_code, unused_imports)]

mod background;
mod bids_tools;
mod data;
mod expect;
mod mount;
mod prefetch_run;

pub use background::*;
pub use bids_tools::*;
pub use data::*;
pub use expect::*;
pub use mount::*;
pub use prefetch_run::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use xnatfs::mock::data::Dataset;
use xnatfs::mock::{MockOptions, MockServer};

pub const BIN: &str = env!("CARGO_BIN_EXE_xnatfs");

pub fn start_mock(data: Dataset) -> MockServer {
    start_mock_with(data, MockOptions::default())
}

pub fn start_mock_with(data: Dataset, options: MockOptions) -> MockServer {
    MockServer::start("127.0.0.1:0".parse().unwrap(), data, options).expect("mock server starts")
}

/// An HTTP client of the mock at `url` with its demo credentials.
pub fn demo_client(url: &str) -> std::sync::Arc<xnatfs::xnat::http::HttpXnat> {
    use xnatfs::xnat::http::{ClientOptions, Credentials, HttpXnat};
    let creds = Credentials {
        user: Some("demo".into()),
        password: Some("demo".into()),
        token: None,
    };
    let options = ClientOptions {
        timeout: std::time::Duration::from_secs(10),
        ..Default::default()
    };
    std::sync::Arc::new(HttpXnat::new(url, creds, options).unwrap())
}

/// A `Command` for the binary with a clean environment: the mock's URL and the demo
/// credentials, and a private HOME (and runtime folder) so no profile or netrc of the
/// machine is read, and no mount's state file is seen by another test.
pub fn xnatfs(url: &str, home: &Path) -> Command {
    xnatfs_via(&[], url, home)
}

/// As [`xnatfs`], run through `wrapper` (a command and its arguments, like
/// `unshare --pid --fork`), when given.
pub fn xnatfs_via(wrapper: &[String], url: &str, home: &Path) -> Command {
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(BIN);
            c
        }
        None => Command::new(BIN),
    };
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_RUNTIME_DIR", home.join("run"))
        .env("XNAT_URL", url)
        .env("XNAT_USER", "demo")
        .env("XNAT_PASS", "demo");
    cmd
}

pub fn is_mounted(path: &Path) -> bool {
    let table = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let want = path.to_string_lossy().replace(' ', "\\040");
    table
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(want.as_str()))
}

pub fn force_unmount(path: &Path) {
    if !is_mounted(path) {
        return;
    }
    let _ = Command::new("fusermount3")
        .arg("-u")
        .arg(path)
        .stderr(Stdio::null())
        .status();
    if is_mounted(path) {
        let _ = Command::new("umount").arg("-l").arg(path).status();
    }
}

/// Every regular file below `root`, relative, sorted.
pub fn walk_files(root: &Path) -> Vec<(PathBuf, u64)> {
    fn go(dir: &Path, root: &Path, out: &mut Vec<(PathBuf, u64)>) {
        for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("ls {}: {e}", dir.display())) {
            let e = e.unwrap();
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            if meta.is_dir() {
                go(&e.path(), root, out);
            } else {
                out.push((
                    e.path().strip_prefix(root).unwrap().to_path_buf(),
                    meta.len(),
                ));
            }
        }
    }
    let mut out = Vec::new();
    go(root, root, &mut out);
    out.sort();
    out
}

/// The names in folder `dir`, sorted.
pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("ls {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

pub fn md5_file(path: &Path) -> String {
    use md5::{Digest, Md5};
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    hex::encode(Md5::digest(&bytes))
}

/// A small tmpfs mounted on a temporary folder, unmounted when dropped (CI runs as root;
/// elsewhere `mount` returns `None` and the test says so and stops).
pub struct Tmpfs {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "xnatfs-test"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("cannot mount a tmpfs here (not root?): skipping this test");
            return None;
        }
        Some(Tmpfs {
            path: dir.path().to_path_buf(),
            _dir: dir,
        })
    }

    /// Bytes free on it.
    pub fn free(&self) -> u64 {
        xnatfs::cache::disk_space(&self.path).map_or(0, |(_, free)| free)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Whatever a test left mounted on it goes too.
        for _ in 0..5 {
            if !is_mounted(&self.path) {
                break;
            }
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// The partial files below a cache area's `tmp` folder (downloads under way or left behind),
/// by name.
pub fn partial_files(tmp: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    for e in walkdir(tmp) {
        let name = e.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with(xnatfs::cache::PARTIAL_PREFIX) {
            found.push(name);
        }
    }
    found
}

fn walkdir(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walkdir(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// One prefetch transfer of `file` into a temporary folder (`attempts` at most, given up
/// after `stall` without progress): whether it ended with the file there, verified.
pub fn transfer_one(
    rt: &tokio::runtime::Runtime,
    api: &dyn xnatfs::xnat::XnatApi,
    file: &xnatfs::xnat::RemoteFile,
    attempts: u32,
    stall: std::time::Duration,
) -> bool {
    use xnatfs::prefetch::verified::{TransferPolicy, download_verified};
    let dir = tempfile::tempdir().unwrap();
    let policy = TransferPolicy {
        attempts,
        stall_timeout: stall,
        copies: xnatfs::cache::NewCopies::plain(Default::default()),
    };
    let dest = dir.path().join("file");
    let done = rt.block_on(download_verified(
        api,
        file,
        &dest,
        dir.path(),
        &policy,
        &|_| {},
        &|_| {},
    ));
    assert_eq!(
        done.is_ok(),
        dest.exists(),
        "a file is there only when verified"
    );
    done.is_ok()
}

/// Runs `xnatfs prefetch ARGS --cache-dir CACHE` (HOME `home`), which must succeed; returns
/// what it said.
pub fn prefetch_into_cache(url: &str, home: &Path, cache: &Path, args: &[&str]) -> String {
    let out = xnatfs(url, home)
        .arg("prefetch")
        .args(args)
        .arg("--cache-dir")
        .arg(cache)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "prefetch {args:?} failed: {said}");
    said
}
