//! What each running mount tells `xnatfs status` that the mount table does not: a small JSON
//! file per mount in the user's runtime folder (`$XDG_RUNTIME_DIR/xnatfs`, else
//! `/run/user/<uid>/xnatfs`, else `<default cache dir>/run`), named by its mount point,
//! written once the mount is ready, refreshed while it serves, and removed when it ends. A
//! file whose process is gone (killed, or the machine went down) is stale: whoever reads it
//! ignores and removes it.
//!
//! Downloads in flight are not written down: they are the partial files the mount's process
//! holds open, counted live from `/proc/<pid>/fd`.

use serde::{Deserialize, Serialize};
use std::io::{self, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One running mount, as its process wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountState {
    pub pid: u32,
    /// When the process started (clock ticks after boot, `/proc/<pid>/stat`): a pid reused by
    /// another process does not pass for the mount.
    pub started: u64,
    pub mountpoint: PathBuf,
    pub server: String,
    /// `-P` and `-E` as given: what the root shows.
    pub project: Option<String>,
    pub sessions: Vec<String>,
    pub offline: bool,
    pub cache_dir: PathBuf,
    /// The server's area of the cache: its partial files are the downloads in flight.
    pub cache_area: PathBuf,
    /// Bytes of complete files in the area, and its cap (as of the last refresh).
    pub cache_bytes: u64,
    pub cache_limit: u64,
    pub log_file: Option<PathBuf>,
}

impl MountState {
    /// Whether the process that wrote this still runs (the same process: same pid, same start).
    pub fn is_live(&self) -> bool {
        process_start(self.pid) == Some(self.started)
    }

    /// The downloads the mount has under way: the partial files its process holds open in
    /// its cache area. `None` when its file descriptors cannot be read (another user's
    /// process, or the process is gone).
    pub fn downloads_in_flight(&self) -> Option<usize> {
        let tmp = self.cache_area.join("tmp");
        let fds = std::fs::read_dir(format!("/proc/{}/fd", self.pid)).ok()?;
        let mut partial: Vec<PathBuf> = fds
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .filter(|target| {
                target.parent() == Some(tmp.as_path())
                    && target.file_name().is_some_and(|n| {
                        n.to_string_lossy()
                            .starts_with(crate::cache::PARTIAL_PREFIX)
                    })
            })
            .collect();
        // A download may hold its file open more than once (a writer and readers).
        partial.sort();
        partial.dedup();
        Some(partial.len())
    }
}

/// The start time of process `pid` (field 22 of `/proc/<pid>/stat`), if it runs: a process
/// that has exited but not been reaped (a zombie, whose parent has not waited for it, as
/// under a container's PID 1 that reaps nothing) runs no more.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    if matches!(fields.next(), Some("Z" | "X")) {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// The folder of the state files: `$XDG_RUNTIME_DIR/xnatfs`, else `/run/user/<uid>/xnatfs`
/// where that exists, else `run` in the default cache dir.
pub fn state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("xnatfs");
    }
    // SAFETY: getuid cannot fail.
    let run_user = PathBuf::from(format!("/run/user/{}", unsafe { libc::getuid() }));
    if run_user.is_dir() {
        return run_user.join("xnatfs");
    }
    crate::cache::default_cache_dir().join("run")
}

/// The state file of the mount on `mountpoint`: the path, every byte but letters, digits,
/// `.`, `_` and `-` percent-encoded (a hash of it when that is too long for a file name).
fn file_name(mountpoint: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut name = String::new();
    for &b in mountpoint.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
            name.push(b as char);
        } else {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    if name.len() > 200 {
        use md5::{Digest, Md5};
        name = hex::encode(Md5::digest(mountpoint.as_os_str().as_bytes()));
    }
    name + ".json"
}

/// Writes `state` to `path` whole or not at all (a reader never sees half a file).
fn write_atomically(path: &Path, state: &MountState) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".state-")
        .tempfile_in(dir)?;
    serde_json::to_writer(&mut tmp, state)?;
    tmp.flush()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// A running mount's state file: written when made, rewritten by [`StateFile::refresh`],
/// removed when dropped.
pub struct StateFile {
    path: PathBuf,
    state: Mutex<MountState>,
}

impl StateFile {
    /// Writes the state file of `state`'s mount in `dir` (made private to the user if missing).
    pub fn create_in(dir: &Path, state: MountState) -> io::Result<StateFile> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let path = dir.join(file_name(&state.mountpoint));
        write_atomically(&path, &state)?;
        Ok(StateFile {
            path,
            state: Mutex::new(state),
        })
    }

    /// Rewrites the file if the cache's size or cap changed.
    pub fn refresh(&self, cache_bytes: u64, cache_limit: u64) -> io::Result<()> {
        let mut state = self.state.lock().unwrap();
        if (state.cache_bytes, state.cache_limit) == (cache_bytes, cache_limit) {
            return Ok(());
        }
        state.cache_bytes = cache_bytes;
        state.cache_limit = cache_limit;
        write_atomically(&self.path, &state)
    }
}

impl Drop for StateFile {
    fn drop(&mut self) {
        // A mount detached while busy may still be serving when a new mount takes its mount
        // point: the file is removed only while it is still this process's.
        let ours = read(&self.path).is_some_and(|s| s.pid == std::process::id());
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn read(path: &Path) -> Option<MountState> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// The live mount on `mountpoint`, as its state file in [`state_dir`] says (`None`: none
/// known here, as for a mount of another user or of another PID namespace).
pub fn serving(mountpoint: &Path) -> Option<MountState> {
    // The mount wrote its mount point resolved; resolving it whole would ask the mount.
    let name = mountpoint.file_name()?;
    let parent = match mountpoint.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.canonicalize().ok()?,
        _ => std::env::current_dir().ok()?,
    };
    let want = parent.join(name);
    live_in(&state_dir())
        .into_iter()
        .find(|s| s.mountpoint == want)
}

/// The states of the mounts whose process still runs, from the files in `dir`; stale files
/// are removed.
pub fn live_in(dir: &Path) -> Vec<MountState> {
    let mut live = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        match read(&path) {
            Some(state) if state.is_live() => live.push(state),
            // Stale, or not a state file at all (unreadable, cut short): gone.
            _ => {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    live.sort_by(|a, b| a.mountpoint.cmp(&b.mountpoint));
    live
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(mountpoint: &str, pid: u32, started: u64) -> MountState {
        MountState {
            pid,
            started,
            mountpoint: mountpoint.into(),
            server: "http://127.0.0.1:9".into(),
            project: Some("DEMO".into()),
            sessions: vec![],
            offline: false,
            cache_dir: "/tmp/cache".into(),
            cache_area: "/tmp/cache/area".into(),
            cache_bytes: 0,
            cache_limit: 1 << 30,
            log_file: None,
        }
    }

    #[test]
    fn names_are_safe_and_one_per_mount_point() {
        assert_eq!(
            file_name(Path::new("/home/a b/x")),
            "%2Fhome%2Fa%20b%2Fx.json"
        );
        assert_ne!(file_name(Path::new("/a/b")), file_name(Path::new("/a_b")));
        let long = Path::new("/x").join("y".repeat(300));
        assert_eq!(file_name(&long).len(), 32 + ".json".len());
    }

    #[test]
    fn live_files_are_read_and_stale_ones_removed() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id();
        let started = process_start(me).expect("this process runs");
        let file = StateFile::create_in(dir.path(), state("/mnt/live", me, started)).unwrap();
        // A pid reused by another process, and a process that is gone.
        StateFile::create_in(dir.path(), state("/mnt/reused", me, started + 1))
            .map(std::mem::forget)
            .unwrap();
        StateFile::create_in(dir.path(), state("/mnt/gone", u32::MAX - 1, 1))
            .map(std::mem::forget)
            .unwrap();
        std::fs::write(dir.path().join("junk.json"), "{").unwrap();
        let live = live_in(dir.path());
        assert_eq!(live, [state("/mnt/live", me, started)]);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "stale ones removed"
        );
        file.refresh(42, 1 << 30).unwrap();
        assert_eq!(live_in(dir.path())[0].cache_bytes, 42);
        drop(file);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "removed on exit"
        );
    }

    #[test]
    fn downloads_in_flight_are_the_partial_files_held_open() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let mut s = state("/mnt/x", std::process::id(), 0);
        s.cache_area = dir.path().to_path_buf();
        let before = s.downloads_in_flight().unwrap();
        let a = crate::cache::PartialFile::new_in(&tmp, true).unwrap();
        let _again = a.reopen().unwrap();
        let _b = crate::cache::PartialFile::new_in(&tmp, true).unwrap();
        let _other = tempfile::tempfile_in(&tmp).unwrap();
        assert_eq!(s.downloads_in_flight().unwrap(), before + 2);
    }
}
