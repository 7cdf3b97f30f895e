//! What a prefetch will transfer: the sessions, scans and resources chosen by the flags, every
//! file with its size, digest and destination, and which files are already there.

use super::select::{Seen, Selection, check_filters};
use crate::cache::Cache;
use crate::names::is_safe_component;
use crate::units::human_bytes;
use crate::xnat::{RemoteFile, ResourceRef, Session, XnatApi};
use anyhow::Result;
use futures::{StreamExt, TryStreamExt};
use std::path::{Path, PathBuf};

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
    /// users may change) the listed MD5 too. Files in the cache were verified when written.
    pub fn holds(&self, file: &RemoteFile, dest: &Path) -> bool {
        let Ok(meta) = std::fs::symlink_metadata(dest) else {
            return false;
        };
        if !meta.is_file() || meta.len() != file.size {
            return false;
        }
        match (self, &file.digest) {
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
    /// What the filters did not find in some sessions (not a failure).
    pub notes: Vec<String>,
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
    let mut seen_all = Vec::new();
    for (dir_name, session) in sessions {
        let scans = api.scans(session).await?;
        let mut seen = Seen {
            session: session.label.clone(),
            scans: scans.iter().map(|s| s.id.clone()).collect(),
            labels: Vec::new(),
        };
        let chosen: Vec<_> = scans
            .into_iter()
            .filter(|s| selection.scans.matches(&s.id))
            .collect();
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
                seen.labels.push(r.label.clone());
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
                seen.labels.push(r.label.clone());
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
        seen_all.push(seen);
    }
    let notes = check_filters(selection, &seen_all, true)?;
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
    let mut plan = Plan {
        notes,
        ..Plan::default()
    };
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
