//! The saved use order of the cache's files (`index.json`), shared by every process that uses
//! the cache. It is a hint: the files on disk are the truth.
//!
//! - Saving merges: under a lock, the index on disk is read, the entries of other processes
//!   that this one did not know are kept (their files still there), and the result written.
//!   No process's entries are lost to another's save.
//! - A process that uses the cache holds a lease (a locked file in `tmp/`) and drops it at a
//!   clean exit. A lease that nobody holds is a process that died before it saved: its files
//!   are missing from the index, so the next process scans the files instead of trusting it.

use super::lease;
use crate::names::safe_relative_path;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// An index entry: a file's path below the data dir, and its size.
pub type Entry = (PathBuf, u64);

/// Whether `rel` is a plain relative path (no `..`, not absolute, no empty parts).
pub fn is_safe_rel(rel: &Path) -> bool {
    rel.to_str().and_then(safe_relative_path).is_some()
}

/// The entries of the index at `path` that are paths inside the cache (least recently used
/// first); `None` when there is no readable index.
pub fn read(path: &Path) -> Option<Vec<Entry>> {
    let entries: Vec<Entry> = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    let all = entries.len();
    let safe: Vec<Entry> = entries
        .into_iter()
        .filter(|(r, _)| is_safe_rel(r))
        .collect();
    if safe.len() < all {
        tracing::warn!(
            "{}: dropped {} entries that are not paths inside the cache",
            path.display(),
            all - safe.len()
        );
    }
    Some(safe)
}

/// Writes `ours` (least recently used first) as the index at `path`, merged with the entries
/// on disk that `ours` lacks and whose files are still under `data_dir` (those go first, as
/// the least recently used). Returns those entries.
pub fn save_merged(path: &Path, data_dir: &Path, ours: &[Entry]) -> io::Result<Vec<Entry>> {
    let lock = File::create(path.with_extension("json.lock"))?;
    lease::wait_exclusive(&lock)?;
    let known: std::collections::HashSet<&Path> = ours.iter().map(|(r, _)| r.as_path()).collect();
    let theirs: Vec<Entry> = read(path)
        .unwrap_or_default()
        .into_iter()
        .filter(|(rel, _)| !known.contains(rel.as_path()))
        .filter_map(|(rel, _)| {
            let meta = std::fs::symlink_metadata(data_dir.join(&rel)).ok()?;
            meta.is_file().then_some((rel, meta.len()))
        })
        .collect();
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    // Buffered: the writer makes a write call per token otherwise.
    let mut out = io::BufWriter::new(&mut tmp);
    serde_json::to_writer(&mut out, &theirs.iter().chain(ours).collect::<Vec<_>>())?;
    io::Write::flush(&mut out)?;
    drop(out);
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(theirs)
}

/// This process's use of a cache: held while it lives, removed at a clean exit.
pub struct Lease {
    path: PathBuf,
    /// Locked while open.
    _held: Option<File>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Leases are files named so in the partial files' folder.
pub(crate) const LEASE_PREFIX: &str = ".lease-";

/// Takes a lease in `tmp_dir`, and says whether a process that used the cache before died
/// without saving (its lease is there, held by nobody; it is removed).
pub fn take_lease(tmp_dir: &Path) -> (Option<Lease>, bool) {
    let crashed = remove_dead_leases(tmp_dir);
    let lease = tempfile::Builder::new()
        .prefix(LEASE_PREFIX)
        .tempfile_in(tmp_dir)
        .and_then(|t| t.keep().map_err(|e| e.error))
        .ok()
        .map(|(file, path)| {
            lease::hold(&file);
            Lease {
                path,
                _held: Some(file),
            }
        });
    (lease, crashed)
}

/// Removes the leases in `tmp_dir` that nobody holds, and says whether there were any: a
/// process that used the cache died without saving (its files are missing from the index).
pub fn remove_dead_leases(tmp_dir: &Path) -> bool {
    let mut crashed = false;
    if let Ok(entries) = std::fs::read_dir(tmp_dir) {
        for e in entries.flatten() {
            let name = e.file_name();
            // A lease younger than a moment may not be locked yet by its new owner.
            let young = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_none_or(|age| age < lease::SWEEP_MIN_AGE);
            if name.to_string_lossy().starts_with(LEASE_PREFIX)
                && !young
                && !lease::is_held(&e.path())
            {
                crashed = true;
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    crashed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saving_keeps_the_entries_of_other_processes() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("s")).unwrap();
        for f in ["a", "b", "c"] {
            std::fs::write(data.join("s").join(f), b"12345").unwrap();
        }
        let index = dir.path().join("index.json");
        let e = |n: &str| (PathBuf::from(format!("s/{n}")), 5u64);
        // One process saves a and gone (whose file went); another saves b and c.
        save_merged(&index, &data, &[e("a"), e("gone")]).unwrap();
        let theirs = save_merged(&index, &data, &[e("b"), e("c")]).unwrap();
        assert_eq!(theirs, [e("a")], "a is kept; gone is not");
        assert_eq!(read(&index).unwrap(), [e("a"), e("b"), e("c")]);
    }

    #[test]
    fn a_lease_nobody_holds_says_a_process_died_before_saving() {
        let dir = tempfile::tempdir().unwrap();
        let (first, crashed) = take_lease(dir.path());
        assert!(first.is_some() && !crashed);
        // A clean exit removes the lease.
        drop(first);
        let (second, crashed) = take_lease(dir.path());
        assert!(!crashed);
        // A process that dies leaves its lease, held by nobody (unlocked, not removed).
        let mut killed = second.unwrap();
        drop(killed._held.take());
        let a_while_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        File::options()
            .write(true)
            .open(&killed.path)
            .unwrap()
            .set_modified(a_while_ago)
            .unwrap();
        std::mem::forget(killed);
        let (_third, crashed) = take_lease(dir.path());
        assert!(crashed);
    }
}
