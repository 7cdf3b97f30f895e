//! Where a prefetch writes: the mount's cache or a plain `--out` folder; where each file
//! goes there, whether it is already there, and the run's own folder of partial files, which
//! goes away with the run however it ends (done, stopped, interrupted).

use crate::cache::Cache;
use crate::names::is_safe_component;
use crate::xnat::{RemoteFile, ResourceRef};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tokio_util::sync::CancellationToken;

/// Where files go.
#[derive(Debug, Clone)]
pub enum Destination {
    /// The mount's cache, so a mount serves them with no request.
    Cache(Cache),
    /// Plain files at `root/<session label or name>/scans/<scan>/resources/<label>/files/...`.
    Out { root: PathBuf, name: Option<String> },
}

/// The temporary folder's name inside `--out`.
pub const OUT_TMP: &str = ".xnatfs-tmp";

impl Destination {
    /// Where the file at `rel` of `res` (in the session shown as `session_dir`) goes; `None`
    /// if any part of that path is unsafe.
    pub fn path_of(&self, session_dir: &str, res: &ResourceRef, rel: &str) -> Option<PathBuf> {
        match self {
            Destination::Cache(cache) => cache.file_path(res, rel),
            Destination::Out { root, name } => {
                let session_dir = name.as_deref().unwrap_or(session_dir);
                let relocated = ResourceRef {
                    session_id: session_dir.to_string(),
                    ..res.clone()
                };
                // The same layout as the cache's data folder, rooted at `root`.
                let in_cache = Cache::layout_path(Path::new(""), &relocated, rel)?;
                Some(root.join(in_cache))
            }
        }
    }

    /// Why a session (shown as `session_dir`, with accession ID `id`) cannot be written
    /// here, if it cannot: its folder name is unsafe, or (under `--out`) its folder is a
    /// symlink, which would lead out of `--out`.
    pub fn session_problem(&self, session_dir: &str, id: &str) -> Option<String> {
        match self {
            Destination::Cache(_) => {
                (!is_safe_component(id)).then(|| format!("{id:?} is not a usable folder name"))
            }
            Destination::Out { root, name } => {
                let dir = name.as_deref().unwrap_or(session_dir);
                if !is_safe_component(dir) {
                    return Some(format!("{dir:?} is not a usable folder name"));
                }
                is_symlink(&root.join(dir)).then(|| symlink_refused(&root.join(dir)))
            }
        }
    }

    /// Under `--out`, the first folder between the root and `path` that is a symlink (one
    /// that would take writes out of `--out`). `seen` remembers folders already looked at.
    pub fn symlink_on_the_way(
        &self,
        path: &Path,
        seen: &mut HashMap<PathBuf, bool>,
    ) -> Option<PathBuf> {
        let Destination::Out { root, .. } = self else {
            return None;
        };
        let rel = path.parent()?.strip_prefix(root).ok()?;
        let mut dir = root.clone();
        for part in rel.components() {
            dir.push(part);
            let link = *seen.entry(dir.clone()).or_insert_with(|| is_symlink(&dir));
            if link {
                return Some(dir);
            }
        }
        None
    }

    /// How new files are written there: the cache's way (checked as the cache was opened to
    /// check, which `prefetch` opens with `--verify`; counted under its cap), or as plain
    /// files checked as `verify` says.
    pub fn new_copies(&self, verify: crate::cache::Verify) -> crate::cache::NewCopies {
        match self {
            Destination::Cache(cache) => cache.new_copies(),
            Destination::Out { .. } => crate::cache::NewCopies::plain(verify),
        }
    }

    /// The folder partial files are written in (on the destination's file system); each run
    /// makes its own folder inside it ([`RunTmp`]).
    pub fn tmp_dir(&self) -> PathBuf {
        match self {
            Destination::Cache(cache) => cache.tmp_dir(),
            Destination::Out { root, .. } => root.join(OUT_TMP),
        }
    }

    /// Whether `dest` already holds `file`: the listed size, and in `--out` folders (which
    /// users may change) the listed MD5 too. Files in the cache were verified when written,
    /// against the digest they keep: it must be the one listed now.
    pub fn holds(&self, file: &RemoteFile, dest: &Path) -> bool {
        let Ok(meta) = std::fs::symlink_metadata(dest) else {
            return false;
        };
        if !meta.is_file() {
            return false;
        }
        match (self, &file.digest) {
            // The digest it was verified against must be the one listed now (its size may
            // differ from a stale listed size: see `Cache::is_current`).
            (Destination::Cache(cache), _) => cache.is_current(dest, file),
            // The digest decides, whatever the (possibly stale) listed size says.
            (Destination::Out { .. }, Some(want)) => {
                crate::cache::hash_file(dest).is_ok_and(|got| &got == want)
            }
            _ => meta.len() == file.size,
        }
    }
}

fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// The refusal of a symlink inside `--out`.
pub fn symlink_refused(link: &Path) -> String {
    format!(
        "{} is a symlink; refusing to follow it out of --out (remove it, or choose another --out)",
        link.display()
    )
}

/// A run's own folder of partial files, inside the destination's temporary folder. Dropped
/// (the run done, stopped, or its future dropped on a signal), it stops the run (`stop`: so
/// that threads unpacking a ZIP write no more) and is removed with whatever is in it, and
/// `--out`'s temporary folder too when nothing else is left there.
#[derive(Debug)]
pub struct RunTmp {
    path: PathBuf,
    /// Held while the run lives (a folder nobody holds is swept by the next run or mount).
    _owner: std::fs::File,
    /// `--out`'s temporary folder, to remove when empty.
    out_tmp: Option<PathBuf>,
    stop: CancellationToken,
}

impl RunTmp {
    pub fn new(dest: &Destination, stop: CancellationToken) -> anyhow::Result<RunTmp> {
        let base = dest.tmp_dir();
        let out_tmp = matches!(dest, Destination::Out { .. }).then(|| base.clone());
        if is_symlink(&base) {
            anyhow::bail!("{}", symlink_refused(&base));
        }
        match std::fs::create_dir(&base) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && base.is_dir() => {}
            Err(e) => anyhow::bail!("cannot create {}: {e}", base.display()),
        }
        // What runs killed before they could clean up left there.
        crate::cache::lease::sweep(&base, crate::cache::lease::SWEEP_MIN_AGE);
        let path = tempfile::Builder::new()
            .prefix("prefetch-")
            .tempdir_in(&base)
            .map_err(|e| anyhow::anyhow!("cannot create a folder in {}: {e}", base.display()))?
            .keep();
        let owner = crate::cache::lease::hold_run(&path)
            .map_err(|e| anyhow::anyhow!("cannot create a file in {}: {e}", path.display()))?;
        Ok(RunTmp {
            path,
            _owner: owner,
            out_tmp,
            stop,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunTmp {
    fn drop(&mut self) {
        self.stop.cancel();
        // A ZIP being unpacked on a blocking thread may still add a file while this runs:
        // try again (it creates no more once it has seen the stop).
        for _ in 0..5 {
            match std::fs::remove_dir_all(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                _ => break,
            }
        }
        if let Some(out_tmp) = &self.out_tmp {
            // Only partial files live there; an empty folder is not worth leaving.
            let _ = std::fs::remove_dir(out_tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_layout_and_unsafe_names() {
        let d = Destination::Out {
            root: PathBuf::from("/out"),
            name: None,
        };
        let res = ResourceRef {
            session_id: "XNAT_E1".into(),
            scan: Some("2".into()),
            assessor: None,
            label: "DICOM".into(),
            id: "1001".into(),
        };
        assert_eq!(
            d.path_of("SUBJ01", &res, "a/b.dcm").unwrap(),
            PathBuf::from("/out/SUBJ01/scans/2/resources/DICOM/files/a/b.dcm")
        );
        let named = Destination::Out {
            root: PathBuf::from("/out"),
            name: Some("mine".into()),
        };
        let session_res = ResourceRef {
            scan: None,
            assessor: None,
            ..res.clone()
        };
        assert_eq!(
            named.path_of("SUBJ01", &session_res, "x").unwrap(),
            PathBuf::from("/out/mine/resources/DICOM/files/x")
        );
        assert!(d.path_of("..", &res, "x").is_none());
        assert!(d.path_of("S", &res, "../../x").is_none());
        assert!(d.session_problem("..", "XNAT_E1").is_some());
    }

    #[test]
    fn symlinks_inside_out_are_found_and_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("out");
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir_all(root.join("S1/scans")).unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, root.join("S2")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, root.join("S1/scans/2")).unwrap();
        let d = Destination::Out {
            root: root.clone(),
            name: None,
        };
        assert!(d.session_problem("S1", "E1").is_none());
        let why = d.session_problem("S2", "E2").unwrap();
        assert!(why.contains("is a symlink; refusing"), "{why}");
        let mut seen = HashMap::new();
        assert_eq!(
            d.symlink_on_the_way(&root.join("S1/scans/2/resources/R/files/x"), &mut seen),
            Some(root.join("S1/scans/2"))
        );
        assert_eq!(
            d.symlink_on_the_way(&root.join("S1/scans/3/resources/R/files/x"), &mut seen),
            None
        );

        // The temporary folder as a symlink: refused, nothing written through it.
        std::os::unix::fs::symlink(&elsewhere, root.join(OUT_TMP)).unwrap();
        let e = RunTmp::new(&d, CancellationToken::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains(".xnatfs-tmp is a symlink"), "{e}");
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    }

    #[test]
    fn a_run_folder_goes_away_with_its_contents() {
        let dir = tempfile::tempdir().unwrap();
        let d = Destination::Out {
            root: dir.path().to_path_buf(),
            name: None,
        };
        let stop = CancellationToken::new();
        let run = RunTmp::new(&d, stop.clone()).unwrap();
        std::fs::write(run.path().join(".part-x"), b"half").unwrap();
        drop(run);
        assert!(stop.is_cancelled());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
