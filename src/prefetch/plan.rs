//! What a prefetch will transfer: the sessions, scans and resources chosen by the flags, every
//! file with its size, digest and destination, and which files are already there.

use crate::cache::Cache;
use crate::names::is_safe_component;
use crate::units::human_bytes;
use crate::xnat::{RemoteFile, ResourceRef, Session, XnatApi};
use anyhow::{Result, bail};
use futures::{StreamExt, TryStreamExt};
use std::path::{Path, PathBuf};

/// `-s 1,2,3` or `-s '*'`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanSelector {
    All,
    Ids(Vec<String>),
}

impl ScanSelector {
    pub fn parse(spec: &str) -> Result<Self> {
        let spec = spec.trim();
        if spec == "*" || spec.eq_ignore_ascii_case("all") {
            return Ok(ScanSelector::All);
        }
        let ids: Vec<String> = spec
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if ids.is_empty() {
            bail!("-s needs scan IDs like 1,2,3 or '*' for all scans");
        }
        if ids.iter().any(|id| id == "*") {
            return Ok(ScanSelector::All);
        }
        Ok(ScanSelector::Ids(ids))
    }

    pub fn matches(&self, id: &str) -> bool {
        match self {
            ScanSelector::All => true,
            ScanSelector::Ids(ids) => ids.iter().any(|i| i == id),
        }
    }
}

/// Which scans and resources to take.
#[derive(Debug, Clone)]
pub struct Selection {
    pub scans: ScanSelector,
    /// `-r`: only these resource labels (empty: all).
    pub include: Vec<String>,
    /// `--exclude-resource`: not these.
    pub exclude: Vec<String>,
    /// `--session-resources`: the session-level resources too.
    pub session_resources: bool,
}

impl Selection {
    pub fn wants_resource(&self, label: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|l| l == label))
            && !self.exclude.iter().any(|l| l == label)
    }
}

/// Where files go.
#[derive(Debug, Clone)]
pub enum Destination {
    /// The mount's cache, so a mount serves them with no request.
    Cache(Cache),
    /// Plain files at `root/<session label or name>/scans/<scan>/resources/<label>/files/...`.
    Out { root: PathBuf, name: Option<String> },
}

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

    /// The folder partial files are written in (on the destination's file system).
    pub fn tmp_dir(&self) -> PathBuf {
        match self {
            Destination::Cache(cache) => cache.tmp_dir(),
            Destination::Out { root, .. } => root.join(".xnatfs-tmp"),
        }
    }

    /// Whether `dest` already holds `file`: the listed size, and in `--out` folders (which
    /// users may change) the listed MD5 too. Files in the cache were verified when written,
    /// against the digest they keep: it must be the one listed now.
    pub fn holds(&self, file: &RemoteFile, dest: &Path) -> bool {
        let Ok(meta) = std::fs::symlink_metadata(dest) else {
            return false;
        };
        if !meta.is_file() || meta.len() != file.size {
            return false;
        }
        match (self, &file.digest) {
            // The digest it was verified against must be the one listed now.
            (Destination::Cache(cache), _) => cache.is_current(dest, file),
            (Destination::Out { .. }, Some(want)) => {
                crate::cache::hash_file(dest).is_ok_and(|got| &got == want)
            }
            _ => true,
        }
    }
}

#[derive(Debug, Clone)]
pub struct PlannedFile {
    pub file: RemoteFile,
    pub dest: PathBuf,
    /// Already at `dest`, verified.
    pub present: bool,
}

#[derive(Debug, Clone)]
pub struct PlannedResource {
    pub session: Session,
    /// The session's folder name under `--out`.
    pub dir_name: String,
    /// The scan's type, for scan resources.
    pub scan_type: Option<String>,
    pub res: ResourceRef,
    pub files: Vec<PlannedFile>,
}

#[derive(Debug, Default, Clone)]
pub struct Plan {
    pub resources: Vec<PlannedResource>,
    /// Files the listings offered that cannot be written safely.
    pub refused: Vec<String>,
}

/// Totals of a plan.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub files: u64,
    pub bytes: u64,
    pub present_files: u64,
    pub present_bytes: u64,
}

impl Plan {
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for f in self.resources.iter().flat_map(|r| &r.files) {
            t.files += 1;
            t.bytes += f.file.size;
            if f.present {
                t.present_files += 1;
                t.present_bytes += f.file.size;
            }
        }
        t
    }

    /// The plan as `--dry-run` prints it.
    pub fn describe(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let mut last_session = String::new();
        for r in &self.resources {
            if r.session.id != last_session {
                let _ = writeln!(
                    out,
                    "session {} ({}, project {})",
                    r.session.label, r.session.id, r.session.project
                );
                last_session = r.session.id.clone();
            }
            let bytes: u64 = r.files.iter().map(|f| f.file.size).sum();
            let present = r.files.iter().filter(|f| f.present).count();
            let place = match (&r.res.scan, &r.scan_type) {
                (Some(s), Some(t)) if !t.is_empty() => format!("scan {s} ({t})"),
                (Some(s), _) => format!("scan {s}"),
                (None, _) => "session".to_string(),
            };
            let _ = writeln!(
                out,
                "  {place:<24} {:<12} {:>6} files {:>12}  {} present",
                r.res.label,
                r.files.len(),
                human_bytes(bytes),
                present
            );
        }
        let t = self.totals();
        let _ = writeln!(
            out,
            "total: {} files, {}; already present: {} files, {}; to transfer: {} files, {}",
            t.files,
            human_bytes(t.bytes),
            t.present_files,
            human_bytes(t.present_bytes),
            t.files - t.present_files,
            human_bytes(t.bytes - t.present_bytes)
        );
        for r in &self.refused {
            let _ = writeln!(out, "refused (unsafe name): {r}");
        }
        out
    }
}

/// Lists what `selection` takes from `sessions` and where each file goes. Listings run
/// `workers` at a time.
pub async fn build(
    api: &dyn XnatApi,
    sessions: &[(String, Session)],
    selection: &Selection,
    dest: &Destination,
    workers: usize,
) -> Result<Plan> {
    // Every resource to list.
    struct Wanted {
        session: Session,
        dir_name: String,
        /// The scan's ID and type, for scan resources.
        scan: Option<(String, String)>,
        label: String,
    }
    let mut wanted: Vec<Wanted> = Vec::new();
    for (dir_name, session) in sessions {
        let scans = api.scans(session).await?;
        let chosen: Vec<_> = scans
            .into_iter()
            .filter(|s| selection.scans.matches(&s.id))
            .collect();
        if let ScanSelector::Ids(ids) = &selection.scans {
            for id in ids {
                if !chosen.iter().any(|s| &s.id == id) {
                    bail!("session {} has no scan {id}", session.label);
                }
            }
        }
        let scan_resources = futures::stream::iter(chosen.iter())
            .map(|scan| async move {
                let res = api.resources(&session.id, Some(&scan.id)).await?;
                Ok::<_, anyhow::Error>((scan, res))
            })
            .buffered(workers.max(1))
            .try_collect::<Vec<_>>()
            .await?;
        for (scan, resources) in scan_resources {
            for r in resources {
                if selection.wants_resource(&r.label) {
                    wanted.push(Wanted {
                        session: session.clone(),
                        dir_name: dir_name.clone(),
                        scan: Some((scan.id.clone(), scan.scan_type.clone())),
                        label: r.label,
                    });
                }
            }
        }
        if selection.session_resources {
            for r in api.resources(&session.id, None).await? {
                if selection.wants_resource(&r.label) {
                    wanted.push(Wanted {
                        session: session.clone(),
                        dir_name: dir_name.clone(),
                        scan: None,
                        label: r.label,
                    });
                }
            }
        }
    }
    let listed = futures::stream::iter(wanted)
        .map(
            |Wanted {
                 session,
                 dir_name,
                 scan,
                 label,
             }| async move {
                let res = ResourceRef {
                    session_id: session.id.clone(),
                    scan: scan.as_ref().map(|(id, _)| id.clone()),
                    label,
                };
                let files = api.files(&res).await?;
                Ok::<_, anyhow::Error>((session, dir_name, scan.map(|(_, t)| t), res, files))
            },
        )
        .buffered(workers.max(1))
        .try_collect::<Vec<_>>()
        .await?;
    let mut plan = Plan::default();
    for (session, dir_name, scan_type, res, files) in listed {
        let mut planned = Vec::with_capacity(files.len());
        for file in files {
            let safe = is_safe_component(&dir_name)
                && is_safe_component(&res.label)
                && res.scan.as_deref().is_none_or(is_safe_component);
            match dest.path_of(&dir_name, &res, &file.path).filter(|_| safe) {
                Some(path) => planned.push(PlannedFile {
                    file,
                    dest: path,
                    present: false,
                }),
                None => plan
                    .refused
                    .push(format!("{}/{}", res.rest_path(), file.path)),
            }
        }
        plan.resources.push(PlannedResource {
            session,
            dir_name,
            scan_type,
            res,
            files: planned,
        });
    }
    // What is already there: checked in parallel on blocking threads (it may hash files).
    let checks: Vec<(usize, usize)> = plan
        .resources
        .iter()
        .enumerate()
        .flat_map(|(i, r)| (0..r.files.len()).map(move |j| (i, j)))
        .collect();
    let present = futures::stream::iter(checks)
        .map(|(i, j)| {
            let f = plan.resources[i].files[j].clone();
            let dest = dest.clone();
            async move {
                let held = tokio::task::spawn_blocking(move || dest.holds(&f.file, &f.dest))
                    .await
                    .unwrap_or(false);
                (i, j, held)
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    for (i, j, held) in present {
        plan.resources[i].files[j].present = held;
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_selectors() {
        assert_eq!(ScanSelector::parse("*").unwrap(), ScanSelector::All);
        assert_eq!(ScanSelector::parse("1,2,*").unwrap(), ScanSelector::All);
        let s = ScanSelector::parse(" 1, 3 ").unwrap();
        assert!(s.matches("1") && s.matches("3") && !s.matches("2"));
        assert!(ScanSelector::parse(",").is_err());
    }

    #[test]
    fn resource_filters() {
        let sel = |inc: &[&str], exc: &[&str]| Selection {
            scans: ScanSelector::All,
            include: inc.iter().map(|s| s.to_string()).collect(),
            exclude: exc.iter().map(|s| s.to_string()).collect(),
            session_resources: false,
        };
        assert!(sel(&[], &[]).wants_resource("DICOM"));
        assert!(sel(&["DICOM"], &[]).wants_resource("DICOM"));
        assert!(!sel(&["NIFTI"], &[]).wants_resource("DICOM"));
        assert!(!sel(&[], &["DICOM"]).wants_resource("DICOM"));
    }

    #[test]
    fn out_layout_and_unsafe_names() {
        let d = Destination::Out {
            root: PathBuf::from("/out"),
            name: None,
        };
        let res = ResourceRef {
            session_id: "XNAT_E1".into(),
            scan: Some("2".into()),
            label: "DICOM".into(),
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
            ..res.clone()
        };
        assert_eq!(
            named.path_of("SUBJ01", &session_res, "x").unwrap(),
            PathBuf::from("/out/mine/resources/DICOM/files/x")
        );
        assert!(d.path_of("..", &res, "x").is_none());
        assert!(d.path_of("S", &res, "../../x").is_none());
    }
}
