//! The on-disk file cache.
//!
//! One area per server URL under the cache dir, holding files at
//! `data/<session ID>/scans/<scan>/resources/<label>/files/<path>` and
//! `data/<session ID>/resources/<label>/files/<path>` (the mount's layout, keyed by accession
//! ID). A file is written under a temporary name in `tmp/`, checked against the listed size
//! and MD5, and only then renamed into place: a file under its final name is always complete
//! and verified. Mount and prefetch share this cache.

use crate::names::{is_safe_component, safe_relative_path};
use crate::xnat::{RemoteFile, ResourceRef};
use md5::{Digest, Md5};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why a downloaded body was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum VerifyError {
    #[error("{path}: got {got} bytes, the listing says {want}")]
    Size { path: String, got: u64, want: u64 },
    #[error("{path}: MD5 {got} does not match the listed digest {want}")]
    Digest {
        path: String,
        got: String,
        want: String,
    },
}

#[derive(Clone)]
pub struct Cache {
    area: PathBuf,
    budget: std::sync::Arc<crate::budget::Budget>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("area", &self.area).finish()
    }
}

/// The default cache dir: `$XDG_CACHE_HOME/xnatfs`, else `~/.cache/xnatfs`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("xnatfs");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".cache").join("xnatfs")
}

/// The area name for a server URL: readable, one per URL (`https_xnat.example.org_8443`).
pub fn area_name(url: &str) -> String {
    let trimmed = url.trim_end_matches('/').replace("://", "_");
    trimmed
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn mkdir_private(path: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

impl Cache {
    /// Opens (creating it, private to the user) the area of `server_url` under `cache_dir`.
    pub fn open(cache_dir: &Path, server_url: &str) -> io::Result<Cache> {
        mkdir_private(cache_dir)?;
        std::fs::set_permissions(cache_dir, std::fs::Permissions::from_mode(0o700))?;
        let area = cache_dir.join(area_name(server_url));
        mkdir_private(&area.join("tmp"))?;
        mkdir_private(&area.join("data"))?;
        let budget = std::sync::Arc::new(crate::budget::Budget::load(&area));
        Ok(Cache { area, budget })
    }

    /// The size cap and use order of the cached files.
    pub fn budget(&self) -> &crate::budget::Budget {
        &self.budget
    }

    pub fn area(&self) -> &Path {
        &self.area
    }

    /// Where a file of a resource lives in the cache; `None` if any part is unsafe.
    pub fn file_path(&self, res: &ResourceRef, rel: &str) -> Option<PathBuf> {
        Cache::layout_path(&self.area.join("data"), res, rel)
    }

    /// `base/<session>/scans/<scan>/resources/<label>/files/<rel>` (or
    /// `base/<session>/resources/<label>/files/<rel>`); `None` if any part is unsafe.
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
        p.push("resources");
        p.push(&res.label);
        p.push("files");
        for part in safe_relative_path(rel)? {
            p.push(part);
        }
        Some(p)
    }

    /// The cached copy of `file`, when it is there and has the listed size.
    pub fn lookup(&self, res: &ResourceRef, file: &RemoteFile) -> Option<PathBuf> {
        let path = self.file_path(res, &file.path)?;
        let meta = std::fs::symlink_metadata(&path).ok()?;
        if !(meta.is_file() && meta.len() == file.size) {
            return None;
        }
        self.budget.touch(&path);
        Some(path)
    }

    /// Where partial files are written before they are verified.
    pub fn tmp_dir(&self) -> PathBuf {
        self.area.join("tmp")
    }

    /// Starts writing a new copy of a file, under a temporary name.
    pub fn begin(&self) -> io::Result<PartialFile> {
        PartialFile::new_in(&self.tmp_dir(), true)
    }
}

/// A file being written into the cache. Dropped without [`PartialFile::commit`], it leaves
/// nothing behind.
pub struct PartialFile {
    tmp: tempfile::NamedTempFile,
    hasher: Md5,
    written: u64,
    /// Cache files and folders are private to the user (0600/0700); plain `--out` copies get
    /// ordinary permissions.
    private: bool,
}

impl PartialFile {
    /// A new partial file in `tmp_dir`, which must be on the file system of its destination
    /// so that the final rename is atomic.
    pub fn new_in(tmp_dir: &Path, private: bool) -> io::Result<PartialFile> {
        let tmp = tempfile::Builder::new()
            .prefix(".part-")
            .tempfile_in(tmp_dir)?;
        Ok(PartialFile {
            tmp,
            hasher: Md5::new(),
            written: 0,
            private,
        })
    }

    /// Gives the file its full length up front (a sparse file filled out of order).
    pub fn set_len(&self, len: u64) -> io::Result<()> {
        self.tmp.as_file().set_len(len)
    }

    /// Another handle on the same file, for reading and for writing at offsets.
    pub fn reopen(&self) -> io::Result<std::fs::File> {
        self.tmp.reopen()
    }

    /// Commits a file that was filled through [`Self::reopen`] handles rather than
    /// [`Self::write`]: `md5` is its digest when the filler could hash it in order; otherwise
    /// it is computed here when the listing has one to check.
    pub fn commit_filled(
        mut self,
        file: &RemoteFile,
        dest: &Path,
        len: u64,
        md5: Option<String>,
    ) -> Result<(), CommitError> {
        self.written = len;
        let got = match (md5, &file.digest) {
            (Some(d), _) => Some(d),
            (None, Some(_)) => Some(hash_file(self.tmp.path())?),
            (None, None) => None,
        };
        self.check_and_persist(file, dest, got)
    }

    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.tmp.write_all(bytes)?;
        self.hasher.update(bytes);
        self.written += bytes.len() as u64;
        Ok(())
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Checks size and digest against the listing, then renames the file to `dest`.
    pub fn commit(self, file: &RemoteFile, dest: &Path) -> Result<(), CommitError> {
        let md5 = hex::encode(self.hasher.clone().finalize());
        self.check_and_persist(file, dest, Some(md5))
    }

    fn check_and_persist(
        self,
        file: &RemoteFile,
        dest: &Path,
        md5: Option<String>,
    ) -> Result<(), CommitError> {
        let got = self.written;
        if got != file.size {
            return Err(VerifyError::Size {
                path: file.path.clone(),
                got,
                want: file.size,
            }
            .into());
        }
        if let (Some(want), Some(got)) = (&file.digest, md5)
            && &got != want
        {
            return Err(VerifyError::Digest {
                path: file.path.clone(),
                got,
                want: want.clone(),
            }
            .into());
        }
        if let Some(parent) = dest.parent() {
            if self.private {
                mkdir_private(parent)?;
            } else {
                std::fs::create_dir_all(parent)?;
            }
        }
        let mut tmp = self.tmp;
        tmp.flush()?;
        let mode = if self.private { 0o600 } else { 0o644 };
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))?;
        tmp.persist(dest).map_err(|e| e.error)?;
        Ok(())
    }
}

/// Reads up to `size` bytes at `offset` of an open file (fewer only at its end).
pub fn read_at(file: &std::fs::File, offset: u64, size: u32) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; size as usize];
    let mut filled = 0;
    while filled < buf.len() {
        let n = file.read_at(&mut buf[filled..], offset + filled as u64)?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    buf.truncate(filled);
    Ok(buf)
}

/// MD5 hex of a file's contents.
pub fn hash_file(path: &Path) -> io::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// What one server's area of the cache holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AreaStats {
    pub area: String,
    pub files: u64,
    pub bytes: u64,
    pub listings: u64,
    /// Partial files (downloads under way, or left by a crash).
    pub partial: u64,
}

fn count(dir: &Path, files: &mut u64, bytes: &mut u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(meta) = e.metadata() else { continue };
        if meta.is_dir() {
            count(&e.path(), files, bytes);
        } else if meta.is_file() {
            *files += 1;
            *bytes += meta.len();
        }
    }
}

/// What each server area under `cache_dir` holds.
pub fn stats(cache_dir: &Path) -> io::Result<Vec<AreaStats>> {
    let mut out = Vec::new();
    let mut areas: Vec<_> = match std::fs::read_dir(cache_dir) {
        Ok(r) => r
            .flatten()
            .filter(|e| e.path().join("data").is_dir())
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    areas.sort_by_key(|e| e.file_name());
    for a in areas {
        let mut st = AreaStats {
            area: a.file_name().to_string_lossy().into_owned(),
            ..Default::default()
        };
        count(&a.path().join("data"), &mut st.files, &mut st.bytes);
        let (mut n, mut b) = (0, 0);
        count(&a.path().join("listings"), &mut n, &mut b);
        st.listings = n;
        let (mut p, mut pb) = (0, 0);
        count(&a.path().join("tmp"), &mut p, &mut pb);
        st.partial = p;
        out.push(st);
    }
    Ok(out)
}

/// Empties the areas under `cache_dir` (only the one of `server_url`, when given). Files open
/// in a running mount stay readable until closed; what it reads next is fetched again.
pub fn clear(cache_dir: &Path, server_url: Option<&str>) -> io::Result<Vec<AreaStats>> {
    let all = stats(cache_dir)?;
    let wanted = server_url.map(area_name);
    let mut cleared = Vec::new();
    for st in all {
        if wanted.as_ref().is_some_and(|w| *w != st.area) {
            continue;
        }
        let area = cache_dir.join(&st.area);
        for sub in ["data", "listings", "tmp"] {
            match std::fs::remove_dir_all(area.join(sub)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            mkdir_private(&area.join(sub))?;
        }
        cleared.push(st);
    }
    Ok(cleared)
}

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error("cannot write the cache: {0}")]
    Io(#[from] io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(scan: Option<&str>, label: &str) -> ResourceRef {
        ResourceRef {
            session_id: "XNAT_E00001".into(),
            scan: scan.map(Into::into),
            label: label.into(),
        }
    }

    fn remote(path: &str, body: &[u8], digest: bool) -> RemoteFile {
        RemoteFile {
            path: path.into(),
            size: body.len() as u64,
            digest: digest.then(|| hex::encode(Md5::digest(body))),
            uri: format!("/data/x/{path}"),
        }
    }

    #[test]
    fn layout_and_hostile_parts() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), "http://127.0.0.1:8080/").unwrap();
        assert!(cache.area().ends_with("http_127.0.0.1_8080"));
        let p = cache
            .file_path(&res(Some("2"), "DICOM"), "a/b.dcm")
            .unwrap();
        assert!(p.ends_with("data/XNAT_E00001/scans/2/resources/DICOM/files/a/b.dcm"));
        let s = cache.file_path(&res(None, "QC"), "r.html").unwrap();
        assert!(s.ends_with("data/XNAT_E00001/resources/QC/files/r.html"));
        assert!(cache.file_path(&res(Some(".."), "DICOM"), "x").is_none());
        assert!(cache.file_path(&res(None, "../.."), "x").is_none());
        assert!(cache.file_path(&res(None, "QC"), "../../x").is_none());
        assert!(cache.file_path(&res(None, "QC"), "/etc/passwd").is_none());
    }

    #[test]
    fn stats_and_clear() {
        let dir = tempfile::tempdir().unwrap();
        let a = Cache::open(dir.path(), "http://a").unwrap();
        let b = Cache::open(dir.path(), "http://b").unwrap();
        for (cache, body) in [(&a, &b"12345"[..]), (&b, &b"123"[..])] {
            let f = remote("x.dcm", body, true);
            let r = res(Some("1"), "DICOM");
            let mut part = cache.begin().unwrap();
            part.write(body).unwrap();
            part.commit(&f, &cache.file_path(&r, "x.dcm").unwrap())
                .unwrap();
        }
        let st = stats(dir.path()).unwrap();
        assert_eq!(st.len(), 2);
        assert_eq!(
            (st[0].area.as_str(), st[0].files, st[0].bytes),
            ("http_a", 1, 5)
        );
        let cleared = clear(dir.path(), Some("http://a")).unwrap();
        assert_eq!(cleared.len(), 1);
        let st = stats(dir.path()).unwrap();
        assert_eq!((st[0].files, st[1].files), (0, 1));
        assert!(stats(&dir.path().join("none")).unwrap().is_empty());
    }

    #[test]
    fn only_verified_files_become_visible() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), "http://h").unwrap();
        let r = res(Some("1"), "DICOM");
        let good = remote("x.dcm", b"hello world", true);
        let dest = cache.file_path(&r, &good.path).unwrap();

        // Short body: refused, nothing visible.
        let mut part = cache.begin().unwrap();
        part.write(b"hello").unwrap();
        assert!(matches!(
            part.commit(&good, &dest),
            Err(CommitError::Verify(VerifyError::Size { .. }))
        ));
        assert!(cache.lookup(&r, &good).is_none());

        // Right size, wrong bytes: refused by the digest.
        let mut part = cache.begin().unwrap();
        part.write(b"hello WORLD").unwrap();
        assert!(matches!(
            part.commit(&good, &dest),
            Err(CommitError::Verify(VerifyError::Digest { .. }))
        ));
        assert!(cache.lookup(&r, &good).is_none());

        let mut part = cache.begin().unwrap();
        part.write(b"hello ").unwrap();
        part.write(b"world").unwrap();
        part.commit(&good, &dest).unwrap();
        assert_eq!(cache.lookup(&r, &good), Some(dest.clone()));
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello world");
        // No temporary files are left behind.
        assert_eq!(
            std::fs::read_dir(cache.area().join("tmp")).unwrap().count(),
            0
        );
    }
}
