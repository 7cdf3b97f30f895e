//! The on-disk cache: its folder, and everything in it.
//!
//! One area per server URL under the cache dir. Every path under the cache dir is built in
//! this module and nowhere else ([`area`]: [`Area`]):
//!
//! ```text
//! <cache dir>/logs/<mount point>.log       a background mount's log (default; rotated)
//! <cache dir>/<area>/data/<session ID>/scans/<scan>/resources/<label>/files/<path>
//!                   data/<session ID>/resources/<label>/files/<path>
//!                   tmp/                   partial files, before they are verified
//!                   listings/              listings kept for offline use
//!                   index.json             the size cap's use order
//!                   .xnatfs-area           says xnatfs made this folder an area
//! ```
//!
//! Only a folder with the marker is an area to `cache stats` and `cache clear`, whatever else
//! the cache dir holds (it may be a folder the user keeps other things in). An area made
//! before the marker existed (`data/`, `tmp/` and `listings/`, an `index.json` at most, and
//! nothing else) is adopted: counted, cleared, and marked when next opened.
//!
//! `data/` holds the mount's layout keyed by accession ID. A file is written under a
//! temporary name in `tmp/` ([`partial`]), checked against the listed size and MD5, and only
//! then renamed into place: a file under its final name is always complete and verified.
//! Mount and prefetch share this cache; [`budget`] keeps it under its cap; [`stats`] reports
//! and clears it.
//!
//! A cache file's life has one owner, this module: it is begun ([`NewCopies::begin_in`]),
//! committed (checked, renamed into place and counted under the cap, in one call:
//! [`PartialFile::commit`] and its kin), found current or not ([`Cache::open_current`]),
//! pinned while open ([`Cache::pin`]: kept from eviction by this process and by others that
//! share the cache, let go when the [`Pinned`] is dropped), and evicted ([`budget`], which
//! nothing outside this module touches).

mod area;
mod budget;
pub mod digest_attr;
pub mod index;
pub mod lease;
pub mod md5_lanes;
pub mod partial;
pub mod stats;

pub(crate) use area::mkdir_private;
pub use area::{Area, area_name, create_cache_dir, default_cache_dir, default_log_file};
pub use budget::{default_limit, disk_space};
pub use partial::{
    CommitError, PARTIAL_PREFIX, PartialFile, Verify, VerifyError, hash_file, hash_open, read_at,
};
pub use stats::{AreaStats, clear, stats};

use crate::names::{is_safe_component, safe_relative_path};
use crate::xnat::{RemoteFile, ResourceRef};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Whether the open cache file `f` is `file` as listed now: its size, and the digest it was
/// verified against (see [`digest_attr`]). A copy that keeps no verified digest (kept before
/// digests were kept, or checked by size only) is hashed once and then keeps its digest;
/// with `--verify size`, one checked by size only is taken while the digest it was listed
/// with is the one listed now.
fn is_current_open(f: &std::fs::File, file: &RemoteFile, verify: Verify) -> bool {
    let Ok(meta) = f.metadata() else {
        return false;
    };
    if !meta.is_file() {
        return false;
    }
    if meta.len() != file.size {
        // A stale catalog size: the copy counts if it was verified against this listing, by
        // the digest it keeps, or with no digest listed, by the size the listing gave then.
        return match &file.digest {
            Some(want) => {
                matches!(digest_attr::read_open(f), digest_attr::Kept::Digest(d) if d == *want)
            }
            None => digest_attr::read_listed_size(f) == Some(file.size),
        };
    }
    let Some(want) = &file.digest else {
        return true;
    };
    match digest_attr::read_open(f) {
        digest_attr::Kept::Digest(kept) => kept == *want,
        digest_attr::Kept::Unsupported => {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                tracing::warn!(
                    "the cache's file system keeps no extended attributes: cached files are \
                     checked by size only, so a file changed on the server with the same size \
                     may be served from an old copy; put the cache on a local disk"
                )
            });
            true
        }
        digest_attr::Kept::Missing => {
            if verify == Verify::Size
                && let Some(listed) = digest_attr::read_listed(f)
            {
                return listed == *want;
            }
            let same = hash_open(f).is_ok_and(|got| got == *want);
            if same {
                digest_attr::write(f, &want.hex());
            }
            same
        }
    }
}

#[derive(Clone)]
pub struct Cache {
    area: Area,
    budget: Arc<budget::Budget>,
    /// How new copies are checked, and copies kept without a verified digest taken.
    verify: Verify,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("area", &self.area).finish()
    }
}

impl Cache {
    /// Opens the area of `server_url` under `cache_dir`, creating it (and the cache dir, when
    /// missing) private to the user.
    pub fn open(cache_dir: &Path, server_url: &str) -> io::Result<Cache> {
        create_cache_dir(cache_dir)?;
        let area = Area::of(cache_dir, server_url);
        area.open_or_create()?;
        let budget = Arc::new(budget::Budget::load(area.data(), area.index(), &area.tmp()));
        // Partial files of processes that are gone (killed mid-download, say).
        lease::sweep(&area.tmp(), lease::SWEEP_MIN_AGE);
        Ok(Cache {
            area,
            budget,
            verify: Verify::Md5,
        })
    }

    /// The same cache, checking new copies as `verify` says (see [`Verify`]).
    pub fn verifying(mut self, verify: Verify) -> Cache {
        self.verify = verify;
        self
    }

    pub fn verify(&self) -> Verify {
        self.verify
    }

    /// Bytes of complete files in the cache.
    pub fn used(&self) -> u64 {
        self.budget.used()
    }

    /// The cache's cap, when one is set.
    pub fn limit(&self) -> Option<u64> {
        self.budget.limit()
    }

    /// Caps the cache at `limit` bytes (evicting now if it is over).
    pub fn set_limit(&self, limit: u64) {
        self.budget.set_limit(limit)
    }

    /// Makes room for a file of `incoming` bytes before it is written (see
    /// [`budget::Budget::make_room`]).
    pub fn make_room(&self, incoming: u64) {
        self.budget.make_room(incoming)
    }

    /// Saves the use order of the cached files (merged with what other processes saved).
    pub fn save_index(&self) -> io::Result<()> {
        self.budget.save()
    }

    /// Counts what processes that shared the cache and died left (see
    /// [`budget::Budget::catch_up_with_the_dead`]), then saves the use order.
    pub fn catch_up_and_save_index(&self) -> io::Result<()> {
        self.budget.catch_up_with_the_dead();
        self.budget.save()
    }

    /// Whether the cache file at `path` is pinned (open, and so kept from eviction).
    #[cfg(test)]
    pub(crate) fn is_pinned(&self, path: &Path) -> bool {
        self.budget.is_open(path)
    }

    pub fn area(&self) -> &Area {
        &self.area
    }

    /// Where a file of a resource lives in the cache; `None` if any part is unsafe.
    pub fn file_path(&self, res: &ResourceRef, rel: &str) -> Option<PathBuf> {
        Cache::layout_path(&self.area.data(), res, rel)
    }

    /// `base/<session>/scans/<scan>/resources/<label>/files/<rel>` (or
    /// `base/<session>/resources/<label>/files/<rel>`, or
    /// `base/<session>/assessors/<assessor label>/resources/<label>/files/<rel>`, or the same
    /// under `reconstructions/<reconstruction ID>`); `None` if any part is unsafe.
    pub fn layout_path(base: &Path, res: &ResourceRef, rel: &str) -> Option<PathBuf> {
        let mut p = base.to_path_buf();
        if !is_safe_component(&res.session_id) || !is_safe_component(&res.label) {
            return None;
        }
        p.push(&res.session_id);
        if let Some(scan) = &res.scan {
            if !is_safe_component(scan) {
                return None;
            }
            p.push("scans");
            p.push(scan);
        }
        if let Some(a) = &res.assessor {
            if !is_safe_component(&a.label) {
                return None;
            }
            p.push(a.kind.folder());
            p.push(&a.label);
        }
        p.push("resources");
        p.push(&res.label);
        p.push("files");
        for part in safe_relative_path(rel)? {
            p.push(part);
        }
        Some(p)
    }

    /// The cached copy of `file`, when it is there and is the listed file.
    pub fn lookup(&self, res: &ResourceRef, file: &RemoteFile) -> Option<PathBuf> {
        self.open_current(res, file).map(|(path, _)| path)
    }

    /// The cached copy of `file`, open, when it is the listed file: checked on the open file
    /// itself, so that another process that shares the cache and renames another version into
    /// place meanwhile cannot make this one serve it.
    pub fn open_current(
        &self,
        res: &ResourceRef,
        file: &RemoteFile,
    ) -> Option<(PathBuf, std::fs::File)> {
        let path = self.file_path(res, &file.path)?;
        let f = std::fs::File::open(&path).ok()?;
        if !is_current_open(&f, file, self.verify) {
            return None;
        }
        self.budget.touch(&path);
        Some((path, f))
    }

    /// The cached copy of `file` when it is the listed file (see [`Self::open_current`]),
    /// pinned: kept from eviction, by this process and by the others that share the cache,
    /// until the [`Pinned`] is dropped.
    pub fn pin(&self, res: &ResourceRef, file: &RemoteFile) -> Option<Pinned> {
        let (path, f) = self.open_current(res, file)?;
        self.budget.opened(&path);
        lease::share(&f);
        Some(Pinned {
            path,
            file: Arc::new(f),
            budget: self.budget.clone(),
        })
    }

    /// Whether the cache file at `path` is `file` as listed now (see [`is_current_open`]).
    pub fn is_current(&self, path: &Path, file: &RemoteFile) -> bool {
        std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
            && std::fs::File::open(path).is_ok_and(|f| is_current_open(&f, file, self.verify))
    }

    /// Where partial files are written before they are verified.
    pub fn tmp_dir(&self) -> PathBuf {
        self.area.tmp()
    }

    /// How new copies of files are made in this cache: private to the user, checked as
    /// [`Self::verify`] says, and counted under the cap once committed.
    pub fn new_copies(&self) -> NewCopies {
        NewCopies {
            private: true,
            verify: self.verify,
            budget: Some(self.budget.clone()),
        }
    }

    /// Starts writing a new copy of a file, under a temporary name.
    pub fn begin(&self) -> io::Result<PartialFile> {
        self.new_copies().begin_in(&self.tmp_dir())
    }
}

/// A complete cache file, checked current when it was pinned, held open and kept from
/// eviction (see [`Cache::pin`]).
pub struct Pinned {
    path: PathBuf,
    file: Arc<std::fs::File>,
    budget: Arc<budget::Budget>,
}

impl Pinned {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open file (the very one checked).
    pub fn file(&self) -> &Arc<std::fs::File> {
        &self.file
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        self.budget.closed(&self.path);
    }
}

impl std::fmt::Debug for Pinned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pinned").field("path", &self.path).finish()
    }
}

/// How new copies of files are made: with the cache's permissions or ordinary ones, checked
/// how, and whether the cache counts them once committed ([`Cache::new_copies`]; plain
/// copies outside the cache: [`NewCopies::plain`]).
#[derive(Clone)]
pub struct NewCopies {
    private: bool,
    verify: Verify,
    budget: Option<Arc<budget::Budget>>,
}

impl std::fmt::Debug for NewCopies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewCopies")
            .field("private", &self.private)
            .field("verify", &self.verify)
            .field("counted", &self.budget.is_some())
            .finish()
    }
}

impl NewCopies {
    /// Copies outside the cache (`prefetch --out`): ordinary permissions (those the umask
    /// leaves), checked as `verify` says, counted by nobody.
    pub fn plain(verify: Verify) -> NewCopies {
        NewCopies {
            private: false,
            verify,
            budget: None,
        }
    }

    pub fn verify(&self) -> Verify {
        self.verify
    }

    /// A new partial file in `tmp_dir`, on the file system of its destination (see
    /// [`PartialFile::new_in`]).
    pub fn begin_in(&self, tmp_dir: &Path) -> io::Result<PartialFile> {
        Ok(PartialFile::new_in(tmp_dir, self.private)?
            .verifying(self.verify)
            .counted_by(self.budget.clone()))
    }
}

#[cfg(test)]
mod tests;
