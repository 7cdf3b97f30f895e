//! Whether a file in the cache is in use by a live process, in any process on any host that
//! shares the cache: `flock` locks, which the kernel releases when their owner dies, however
//! it dies (`kill -9` included). They work on local file systems and on NFSv4 (where Linux
//! emulates them with byte-range locks) and Lustre mounted with `flock`.
//!
//! - A partial file is held exclusively by the process writing it: one not held belongs to a
//!   process that is gone, and is swept.
//! - A cache file being read is held shared by each process that has it open: eviction,
//!   which needs it exclusively, passes it over.
//!
//! One caveat of NFS's emulation: closing any descriptor of a file drops all of the
//! process's locks on it. So a process never probes a file it holds itself (it knows its own
//! open files), and sweeps only when it starts.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

fn flock(f: &File, how: libc::c_int) -> io::Result<()> {
    // SAFETY: flock on an open descriptor.
    if unsafe { libc::flock(f.as_raw_fd(), how | libc::LOCK_NB) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Waits until `f` is held exclusively (a short critical section shared with other
/// processes, like merging the index).
pub fn wait_exclusive(f: &File) -> io::Result<()> {
    // SAFETY: flock on an open descriptor.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Holds `f` exclusively (a partial file its writer owns) for as long as it is open.
pub fn hold(f: &File) {
    if let Err(e) = flock(f, libc::LOCK_EX) {
        tracing::debug!("cannot lock a partial file: {e}");
    }
}

/// Holds `f` shared (a cache file being read) for as long as it is open.
pub fn share(f: &File) {
    if let Err(e) = flock(f, libc::LOCK_SH) {
        tracing::debug!("cannot lock a cache file being read: {e}");
    }
}

/// Whether some process holds the file at `path` (shared or exclusive). Only a lock this
/// process gets says "no": anything else (a lock refused, or one that cannot be asked for) is
/// taken as "in use", so nothing is ever removed on a guess. The probe opens the file for
/// writing, as NFS needs for an exclusive lock. A file that is gone is not held.
pub fn is_held(path: &Path) -> bool {
    let f = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return false,
        Err(_) => return true,
    };
    flock(&f, libc::LOCK_EX).is_err()
}

/// How old an unheld partial file must be before it is swept: its writer holds it a moment
/// after creating it.
pub const SWEEP_MIN_AGE: Duration = Duration::from_secs(2);

/// Partial files (and per-run folders of them) in `tmp_dir` that no live process holds and
/// that are older than `min_age` are removed. Returns how many were.
pub fn sweep(tmp_dir: &Path, min_age: Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(tmp_dir) else {
        return 0;
    };
    let mut swept = 0;
    for e in entries.flatten() {
        let Ok(meta) = e.path().symlink_metadata() else {
            continue;
        };
        let old = meta
            .modified()
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= min_age);
        if !old {
            continue;
        }
        let path = e.path();
        let gone = if meta.is_dir() {
            !is_alive(&path, true) && std::fs::remove_dir_all(&path).is_ok()
        } else {
            meta.is_file() && !is_alive(&path, false) && std::fs::remove_file(&path).is_ok()
        };
        if gone {
            tracing::info!("removed {}, left by a process that is gone", path.display());
            swept += 1;
        }
    }
    swept
}

/// Whether the entry `path` of the cache's `tmp/` (a folder when `is_dir`) belongs to a live
/// process: a lease or partial file its owner holds, or a run's folder whose lock file (see
/// [`RUN_LOCK`]) its run holds.
pub fn is_alive(path: &Path, is_dir: bool) -> bool {
    if is_dir {
        is_held(&path.join(RUN_LOCK))
    } else {
        is_held(path)
    }
}

/// The file in a run's folder of partial files that the run holds while it lives.
pub const RUN_LOCK: &str = ".owner";

/// Makes and holds the lock file of a run's folder `dir`; keep it open for the run's life.
pub fn hold_run(dir: &Path) -> io::Result<File> {
    let f = File::create(dir.join(RUN_LOCK))?;
    hold(&f);
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_held_by_a_live_owner_is_held_and_not_swept() {
        let dir = tempfile::tempdir().unwrap();
        let mine = dir.path().join(".part-live");
        let f = File::create(&mine).unwrap();
        hold(&f);
        let orphan = dir.path().join(".part-orphan");
        File::create(&orphan).unwrap();
        // A run's folder whose run is gone, and one whose run lives.
        let gone_run = dir.path().join("prefetch-gone");
        std::fs::create_dir(&gone_run).unwrap();
        drop(hold_run(&gone_run).unwrap());
        let live_run = dir.path().join("prefetch-live");
        std::fs::create_dir(&live_run).unwrap();
        let _live = hold_run(&live_run).unwrap();
        // A new open file description sees our own lock as another process would.
        assert!(is_held(&mine));
        assert_eq!(sweep(dir.path(), Duration::ZERO), 2);
        assert!(mine.exists() && live_run.exists());
        assert!(!orphan.exists() && !gone_run.exists());
        assert_eq!(sweep(dir.path(), Duration::from_secs(3600)), 0, "too young");
    }

    #[test]
    fn shared_holders_block_an_exclusive_probe() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"x").unwrap();
        assert!(!is_held(&p));
        let reader = File::open(&p).unwrap();
        share(&reader);
        assert!(is_held(&p));
        drop(reader);
        assert!(!is_held(&p));
    }
}
