//! Keeping the cache under its size cap: least recently used files go first, never one that
//! is open. The order is kept in memory (the `lru` crate) and saved as `index.json` in the
//! cache area, so a remount neither rescans a large cache nor forgets what was used last; with
//! no index (first use, or after a crash) the files are scanned once, oldest first.
//!
//! What is read back from disk is not trusted: an index entry that is not a plain relative
//! path below the data dir (absolute, `..`, empty parts) is dropped, the scan does not follow
//! links, and a file is evicted only through real folders of the data dir.

use super::{index, lease};
use lru::LruCache;
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

pub struct Budget {
    data_dir: PathBuf,
    index_path: PathBuf,
    /// The partial files' folder, where every process's lease is.
    tmp_dir: PathBuf,
    /// This process's use of the cache, dropped at a clean exit.
    _lease: Option<index::Lease>,
    inner: Mutex<Inner>,
}

struct Inner {
    /// Cached files (relative to the data dir) and their sizes, least recently used first.
    lru: LruCache<PathBuf, u64>,
    total: u64,
    limit: Option<u64>,
    open: HashMap<PathBuf, usize>,
}

impl Inner {
    /// Counts `files` (oldest first) that are unknown here as the least recently used, the
    /// oldest last of all; those already known keep their place. Returns how many were new.
    fn adopt_as_least_recent(&mut self, files: Vec<(PathBuf, u64)>) -> usize {
        let mut adopted = 0;
        for (rel, size) in files.into_iter().rev() {
            if self.lru.contains(&rel) {
                continue;
            }
            self.lru.put(rel.clone(), size);
            self.lru.demote(&rel);
            self.total += size;
            adopted += 1;
        }
        adopted
    }
}

/// The default cap: 20 GiB, or less so that 10% of the disk stays free.
pub fn default_limit(dir: &Path, used_now: u64) -> u64 {
    const CAP: u64 = 20 << 30;
    let Some((total, avail)) = disk_space(dir) else {
        return CAP;
    };
    let room = (avail + used_now).saturating_sub(total / 10);
    room.min(CAP)
}

/// The size of the file system holding `dir`, and the bytes free on it for us.
pub fn disk_space(dir: &Path) -> Option<(u64, u64)> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs fills the struct we pass; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let frsize = st.f_frsize as u64;
    Some((st.f_blocks as u64 * frsize, st.f_bavail as u64 * frsize))
}

/// The files under `root` with their sizes, by their last change, oldest first.
fn scanned(root: &Path) -> Vec<(PathBuf, u64)> {
    let mut found = Vec::new();
    scan(root, root, &mut found);
    found.sort();
    found
        .into_iter()
        .map(|(_, rel, size)| (rel, size))
        .collect()
}

fn scan(dir: &Path, root: &Path, out: &mut Vec<(SystemTime, PathBuf, u64)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        // DirEntry's type does not follow links: a link is neither walked nor counted.
        let Ok(kind) = e.file_type() else { continue };
        let Ok(meta) = e.metadata() else { continue };
        if kind.is_dir() {
            scan(&e.path(), root, out);
        } else if kind.is_file() {
            let rel = e.path().strip_prefix(root).map(Path::to_path_buf);
            if let Ok(rel) = rel {
                out.push((
                    meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    rel,
                    meta.len(),
                ));
            }
        }
    }
}

/// `root/rel` when `rel` is a safe relative path and every folder on the way below `root` is
/// a real folder, not a link that would lead out of it.
fn inside(root: &Path, rel: &Path) -> Option<PathBuf> {
    if !index::is_safe_rel(rel) {
        return None;
    }
    let mut path = root.to_path_buf();
    let mut parts = rel.components().peekable();
    while let Some(part) = parts.next() {
        path.push(part);
        if parts.peek().is_some() && !std::fs::symlink_metadata(&path).ok()?.is_dir() {
            return None;
        }
    }
    Some(path)
}

impl Budget {
    /// Loads the saved index `index_path` of the files under `data_dir` (each entry checked
    /// against the file on disk), or scans the files when there is no index or when a process
    /// that used the cache died before it saved (see [`super::index`]). Takes this process's
    /// lease in `tmp_dir`.
    pub fn load(data_dir: PathBuf, index_path: PathBuf, tmp_dir: &Path) -> Budget {
        let (lease, crashed) = index::take_lease(tmp_dir);
        let saved = if crashed {
            tracing::info!("a process died without saving the cache index: scanning the cache");
            None
        } else {
            index::read(&index_path)
        };
        let mut inner = Inner {
            lru: LruCache::unbounded(),
            total: 0,
            limit: None,
            open: HashMap::new(),
        };
        match saved {
            Some(entries) => {
                for (rel, _) in entries {
                    // The file on disk is the truth: gone, it goes; its size is its own.
                    let Ok(meta) = std::fs::symlink_metadata(data_dir.join(&rel)) else {
                        continue;
                    };
                    if !meta.is_file() {
                        continue;
                    }
                    inner.total += meta.len();
                    if let Some(old) = inner.lru.put(rel, meta.len()) {
                        inner.total -= old;
                    }
                }
            }
            None => {
                inner.adopt_as_least_recent(scanned(&data_dir));
            }
        }
        Budget {
            data_dir,
            index_path,
            tmp_dir: tmp_dir.to_path_buf(),
            _lease: lease,
            inner: Mutex::new(inner),
        }
    }

    fn rel(&self, path: &Path) -> Option<PathBuf> {
        path.strip_prefix(&self.data_dir)
            .ok()
            .map(Path::to_path_buf)
    }

    /// Bytes of complete files in the cache.
    pub fn used(&self) -> u64 {
        self.inner.lock().unwrap().total
    }

    /// The cap, when one is set.
    pub fn limit(&self) -> Option<u64> {
        self.inner.lock().unwrap().limit
    }

    /// Caps the cache at `limit` bytes (evicting now if it is over).
    pub fn set_limit(&self, limit: u64) {
        self.inner.lock().unwrap().limit = Some(limit);
        self.evict();
    }

    /// A cached file was used: it moves to the back of the eviction queue.
    pub fn touch(&self, path: &Path) {
        if let Some(rel) = self.rel(path) {
            let mut inner = self.inner.lock().unwrap();
            inner.lru.get(&rel);
        }
    }

    /// A new complete file: counted, then the cache is trimmed to its cap, sparing the file
    /// itself (it is about to be read: with every other file open, it would be the one to go).
    pub fn added(&self, path: &Path, size: u64) {
        let rel = self.rel(path);
        if let Some(rel) = &rel {
            let mut inner = self.inner.lock().unwrap();
            if let Some(old) = inner.lru.put(rel.clone(), size) {
                inner.total -= old;
            }
            inner.total += size;
        }
        self.evict_while_sparing(rel.as_deref(), |inner, limit| inner.total > limit);
    }

    pub fn opened(&self, path: &Path) {
        if let Some(rel) = self.rel(path) {
            let mut inner = self.inner.lock().unwrap();
            *inner.open.entry(rel.clone()).or_default() += 1;
            inner.lru.get(&rel);
        }
    }

    /// Whether `path` is open (and so kept from eviction).
    #[cfg(test)]
    pub fn is_open(&self, path: &Path) -> bool {
        self.rel(path)
            .is_some_and(|rel| self.inner.lock().unwrap().open.contains_key(&rel))
    }

    pub fn closed(&self, path: &Path) {
        if let Some(rel) = self.rel(path) {
            let mut inner = self.inner.lock().unwrap();
            if let Some(n) = inner.open.get_mut(&rel) {
                *n -= 1;
                if *n == 0 {
                    inner.open.remove(&rel);
                }
            }
        }
    }

    /// Removes least recently used files that are not open until the cache fits its cap.
    fn evict(&self) {
        self.evict_while(|inner, limit| inner.total > limit);
    }

    /// Makes room for a file of `incoming` bytes before it is written: evicts least recently
    /// used files that are not open until the cache fits its cap with it and the disk has it
    /// free (a download that would fill the disk fails; one that waits for room does not).
    pub fn make_room(&self, incoming: u64) {
        let fits = |limit: u64| {
            incoming <= limit && disk_space(&self.data_dir).is_none_or(|(size, _)| incoming <= size)
        };
        if !self.inner.lock().unwrap().limit.is_some_and(fits) {
            return; // no cap set, or the file cannot fit whatever goes: evict nothing for it
        }
        self.evict_while(|inner, limit| {
            inner.total + incoming > limit
                || disk_space(&self.data_dir).is_some_and(|(_, free)| free < incoming)
        });
    }

    /// Evicts least recently used files that are not open while `too_full` says so.
    fn evict_while(&self, too_full: impl Fn(&Inner, u64) -> bool) {
        self.evict_while_sparing(None, too_full)
    }

    /// [`Self::evict_while`], never evicting `spare` (a path relative to the data folder).
    fn evict_while_sparing(&self, spare: Option<&Path>, too_full: impl Fn(&Inner, u64) -> bool) {
        let mut inner = self.inner.lock().unwrap();
        let Some(limit) = inner.limit else { return };
        let mut skipped = Vec::new();
        while too_full(&inner, limit) {
            let Some((rel, size)) = inner.lru.pop_lru() else {
                break;
            };
            // Open here, or in another process that shares the cache (it holds the file).
            if inner.open.contains_key(&rel)
                || spare == Some(rel.as_path())
                || lease::is_held(&self.data_dir.join(&rel))
            {
                skipped.push((rel, size));
                continue;
            }
            inner.total -= size;
            let Some(path) = inside(&self.data_dir, &rel) else {
                tracing::warn!(
                    "not evicting {}: not a path inside the cache",
                    rel.display()
                );
                continue;
            };
            match std::fs::remove_file(path) {
                Ok(()) => tracing::debug!("evicted {} ({size} bytes)", rel.display()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!("cannot evict {}: {e}", rel.display()),
            }
        }
        // Open files keep their place at the front of the queue.
        for (rel, size) in skipped.into_iter().rev() {
            inner.lru.put(rel.clone(), size);
            inner.lru.demote(&rel);
        }
    }

    /// Catches up with processes that used the cache and died (`kill -9`, a node that went
    /// down) while this one runs: their partial files are removed, and when one of them died
    /// without saving the index (its lease is there, held by nobody), the files on disk are
    /// scanned, those unknown here counted as the least recently used, and the cap enforced
    /// with them. Without this, what a killed process had downloaded went uncounted until the
    /// next process started. Returns how many files were adopted so.
    pub fn catch_up_with_the_dead(&self) -> usize {
        let died = index::remove_dead_leases(&self.tmp_dir);
        lease::sweep(&self.tmp_dir, lease::SWEEP_MIN_AGE);
        if !died {
            return 0;
        }
        let found = scanned(&self.data_dir);
        let adopted = self.inner.lock().unwrap().adopt_as_least_recent(found);
        if adopted > 0 {
            tracing::info!(
                "a process that used the cache died without saving: {adopted} files it left counted"
            );
            self.evict();
        }
        adopted
    }

    /// Saves the index (least recently used first), merged with what other processes saved
    /// (their files, unknown here, are counted from now on, and the cap enforced with them).
    pub fn save(&self) -> io::Result<()> {
        let ours: Vec<index::Entry> = {
            let inner = self.inner.lock().unwrap();
            inner
                .lru
                .iter()
                .rev()
                .map(|(k, v)| (k.clone(), *v))
                .collect()
        };
        let theirs = index::save_merged(&self.index_path, &self.data_dir, &ours)?;
        // Unknown here, so not used here: the least recently used.
        if self.inner.lock().unwrap().adopt_as_least_recent(theirs) > 0 {
            self.evict();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(area: &Path) -> Budget {
        std::fs::create_dir_all(area.join("tmp")).unwrap();
        Budget::load(
            area.join("data"),
            area.join("index.json"),
            &area.join("tmp"),
        )
    }

    fn put(b: &Budget, area: &Path, name: &str, size: usize) -> PathBuf {
        let p = area.join("data").join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, vec![0u8; size]).unwrap();
        b.added(&p, size as u64);
        p
    }

    #[test]
    fn least_recently_used_and_not_open_go_first() {
        let dir = tempfile::tempdir().unwrap();
        let area = dir.path();
        let b = load(area);
        let a = put(&b, area, "s/a", 100);
        let bb = put(&b, area, "s/b", 100);
        let c = put(&b, area, "s/c", 100);
        b.touch(&a); // order now: b, c, a
        b.set_limit(200);
        assert!(
            a.exists() && c.exists() && !bb.exists(),
            "b was the least recently used"
        );
        b.opened(&c); // order: a, c (open)
        let d = put(&b, area, "s/d", 100);
        assert!(!a.exists() && c.exists() && d.exists());
        b.touch(&d); // order: c (open), d
        let e = put(&b, area, "s/e", 100);
        assert!(
            c.exists() && !d.exists() && e.exists(),
            "an open file is never evicted"
        );
        assert_eq!(b.used(), 200);
        b.closed(&c);
        // The order survives a reload through the saved index: c, then e.
        b.save().unwrap();
        let again = load(area);
        assert_eq!(again.used(), 200);
        again.set_limit(100);
        assert!(!c.exists() && e.exists());
    }

    #[test]
    fn index_entries_outside_the_cache_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let area = dir.path().join("area");
        let victims = [
            dir.path().join("absolute"),
            area.join("x"),
            dir.path().join("y"),
        ];
        for v in &victims {
            std::fs::create_dir_all(v.parent().unwrap()).unwrap();
            std::fs::write(v, b"precious").unwrap();
        }
        let inside = area.join("data/s/f");
        std::fs::create_dir_all(inside.parent().unwrap()).unwrap();
        std::fs::write(&inside, b"12345").unwrap();
        // Through a link in the data dir to a folder outside.
        std::os::unix::fs::symlink(dir.path(), area.join("data/link")).unwrap();
        let index = serde_json::json!([
            [victims[0], 8],
            ["../x", 8],
            ["s/../../../y", 8],
            ["link/absolute", 8],
            ["", 8],
            ["s/f", 5],
            ["s/f", 5],
        ]);
        std::fs::write(area.join("index.json"), index.to_string()).unwrap();
        let b = load(&area);
        assert_eq!(
            b.used(),
            13,
            "paths that are not plain relative paths are dropped; a repeat counts once"
        );
        b.set_limit(0);
        for v in &victims {
            assert_eq!(std::fs::read(v).unwrap(), b"precious", "{}", v.display());
        }
        assert!(!inside.exists(), "what is inside the cache is evicted");
        // The scan, with no index, does not follow the link either.
        std::fs::remove_file(area.join("index.json")).unwrap();
        assert_eq!(load(&area).used(), 0);
    }

    #[test]
    fn without_an_index_the_files_are_scanned() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("data/x/y");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"12345").unwrap();
        assert_eq!(load(dir.path()).used(), 5);
    }

    #[test]
    fn what_a_process_that_died_left_is_counted_and_capped_while_this_one_runs() {
        let dir = tempfile::tempdir().unwrap();
        let area = dir.path();
        let b = load(area);
        let ours = put(&b, area, "s/ours", 100);
        b.touch(&ours);
        // A live peer (its lease held): no catching up.
        let peer = load(area);
        assert_eq!(b.catch_up_with_the_dead(), 0);
        // The peer wrote two files and was killed before it saved; its partial file stays.
        let theirs = |name: &str| {
            let p = area.join("data/t").join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, vec![1u8; 100]).unwrap();
            p
        };
        let (old, new) = (theirs("old"), theirs("new"));
        let past = |p: &Path, secs| {
            let f = std::fs::File::options().write(true).open(p).unwrap();
            let t = std::time::SystemTime::now() - std::time::Duration::from_secs(secs);
            f.set_modified(t).unwrap();
        };
        past(&old, 100);
        let partial = area.join("tmp/.part-dead");
        std::fs::write(&partial, b"half").unwrap();
        past(&partial, 100);
        // What a process killed with -9 leaves: its lease, held by nobody.
        let lease = area.join("tmp/.lease-dead");
        std::fs::write(&lease, b"").unwrap();
        past(&lease, 100);
        assert_eq!(b.used(), 100);
        b.set_limit(200);
        assert_eq!(b.catch_up_with_the_dead(), 2);
        // Counted as the least recently used, the older first: it goes, ours stays.
        assert_eq!(b.used(), 200);
        assert!(!old.exists() && new.exists() && ours.exists());
        assert!(!partial.exists() && !lease.exists());
        assert_eq!(b.catch_up_with_the_dead(), 0, "once");
        drop(peer);
    }

    #[test]
    fn a_file_another_process_holds_open_is_never_evicted() {
        let dir = tempfile::tempdir().unwrap();
        let area = dir.path();
        let b = load(area);
        let held = put(&b, area, "s/held", 100);
        let other = put(&b, area, "s/other", 100);
        // Held shared, as a reader in another process holds it (not open here).
        let reader = std::fs::File::open(&held).unwrap();
        lease::share(&reader);
        b.set_limit(100);
        assert!(held.exists() && !other.exists());
        drop(reader);
        b.set_limit(0);
        assert!(!held.exists());
    }
}
