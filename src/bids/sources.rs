//! Where one session's BIDS files are in XNAT, and where each goes in the view. The sources,
//! first match wins (the first two as NrgXnat/docker-images' `xnat2bids` setup command stages
//! a session for a BIDS app, `setup-commands/xnat2bids/xnat2bids.py`):
//!
//! 1. a session resource holding a whole tree (label `BIDS`, `BIDS-*` or `rawdata`, with
//!    files under `sub-*/`): its files under `sub-*/`, at their paths;
//! 2. the session's `BIDS` resource with a `*_scans.tsv` (as `dcm2bids-session` writes it,
//!    `dcm2bids-session/dcm2bids_wholeSession.py`: columns `filename`, `xnat_session_id`,
//!    `xnat_scan_id`): each scan's `NIFTI` and `BIDS` files placed in the folder its row
//!    names, and the `*_scans.tsv` itself beside the datatype folders;
//! 3. the scans' `NIFTI` and `BIDS` files placed by their own BIDS names (the datatype
//!    from the suffix);
//! 4. with a BIDS map ([`BidsMap`]: `--bids-map FILE`, or the project's or site's `bids/bidsmap`
//!    configuration), the `NIFTI` files of scans the map names by their series description,
//!    named as `dcm2bids-session` names them: `sub-<subject label>_ses-<session label less
//!    the subject's>_<bidsname>` with the labels sanitised, `run-NN` added by ascending scan
//!    ID when two scans map to one name; scans marked unusable are skipped.
//!
//! Files whose names are no BIDS names (dcm2niix's defaults) are not shown otherwise.

use super::ReadFile;
use super::bidsmap::BidsMap;
use super::labels::{FileName, sanitise, session_label};
use crate::names::is_safe_component;
use crate::xnat::{FileList, RemoteFile, ResourceRef, Scan, Session};
use std::sync::Arc;

/// A resource of a session (its scan's, or its own), with its files (`None`: XNAT would not
/// list them).
#[derive(Debug, Clone)]
pub struct SessionResource {
    pub res: Arc<ResourceRef>,
    /// The scan it is of (`None`: the session's own).
    pub scan: Option<Arc<Scan>>,
    pub files: Option<FileList>,
}

/// A file of the view: its path in the dataset (`sub-X/ses-Y/anat/sub-X_ses-Y_T1w.nii.gz`)
/// and where XNAT has it.
#[derive(Debug, Clone)]
pub struct Placed {
    pub path: String,
    pub res: Arc<ResourceRef>,
    pub file: Arc<RemoteFile>,
}

/// Which source gave a session's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Tree,
    ScansTsv,
    FileNames,
    Map,
}

/// What a session shows in the view.
#[derive(Debug, Clone)]
pub enum Placement {
    /// Its files, and what of it is left out and why (scans whose files XNAT would not list:
    /// a sidecar without its image, or a `*_scans.tsv` naming a file not there, would make
    /// the dataset invalid).
    Placed(Source, Vec<Placed>, Vec<String>),
    /// Nothing, and why (for `code/xnatfs/unmapped.tsv`).
    Unmapped(String),
}

/// The biggest `*_scans.tsv` read (one row a scan: a few KiB).
const MAX_SCANS_TSV: u64 = 1 << 20;

/// Where the files of `session`, with these resources, go: reading its `*_scans.tsv` (if it
/// has one) with `read`, and naming its NIfTI files by `map` if nothing else names them.
pub async fn place(
    session: &Session,
    resources: &[SessionResource],
    map: Option<&BidsMap>,
    read: &dyn ReadFile,
) -> Placement {
    let own = || {
        resources
            .iter()
            .filter(|r| r.res.scan.is_none() && r.res.assessor.is_none())
    };
    if let Some(placed) = own().find_map(whole_tree) {
        return Placement::Placed(Source::Tree, placed, Vec::new());
    }
    let left_out = unreadable_scans(resources);
    let tsv = own()
        .filter(|r| r.res.label.eq_ignore_ascii_case("BIDS"))
        .find_map(|r| {
            let files = r.files.as_ref()?;
            let f = files
                .iter()
                .find(|f| !f.path.contains('/') && f.path.ends_with("_scans.tsv"))?;
            Some((r.res.clone(), f.clone()))
        });
    if let Some((res, tsv)) = tsv {
        if tsv.size > MAX_SCANS_TSV {
            return Placement::Unmapped(format!("{} is larger than 1 MiB", tsv.path));
        }
        match read.read_whole(&res, &tsv).await {
            Ok(text) => {
                let text = String::from_utf8_lossy(&text);
                // A byte-order mark (a table saved by a spreadsheet) would hide the header.
                let text = text.trim_start_matches('\u{feff}');
                if let Some((placed, missing)) = by_scans_tsv(resources, &res, &tsv, text) {
                    let mut left_out = left_out;
                    if let Some(row) = missing {
                        tracing::warn!(
                            "BIDS view: {} of {} not shown: it names {row}, which is not there",
                            tsv.path,
                            session.id
                        );
                        left_out.push(format!("{} (it names {row}, which is not there)", tsv.path));
                    }
                    return Placement::Placed(Source::ScansTsv, placed, left_out);
                }
            }
            Err(e) => {
                tracing::warn!("cannot read {}: {e}", tsv.uri());
                return Placement::Unmapped(format!("cannot read {}: {e}", tsv.path));
            }
        }
    }
    let placed = by_file_names(resources);
    if !placed.is_empty() {
        return Placement::Placed(Source::FileNames, placed, left_out);
    }
    let has_nifti = resources.iter().any(|r| is_scan_resource(r, "NIFTI"));
    if has_nifti && let Some(map) = map {
        return match by_map(session, resources, map) {
            Ok((placed, left_out)) => Placement::Placed(Source::Map, placed, left_out),
            Err(reason) => Placement::Unmapped(reason),
        };
    }
    let unreadable = resources.iter().filter(|r| r.files.is_none());
    let unreadable: Vec<String> = unreadable.map(|r| r.res.label_path()).collect();
    Placement::Unmapped(if !unreadable.is_empty() {
        format!("XNAT would not list the files of {}", unreadable.join(", "))
    } else if has_nifti {
        "NIfTI files without BIDS names (a BIDS map would name them: --bids-map FILE, or the \
         project's bids/bidsmap configuration)"
            .into()
    } else {
        "no BIDS data (no NIFTI or BIDS resource with BIDS names)".into()
    })
}

/// Source 1: a session resource holding a whole BIDS tree.
fn whole_tree(r: &SessionResource) -> Option<Vec<Placed>> {
    let label = r.res.label.to_ascii_lowercase();
    if !(label == "bids" || label.starts_with("bids-") || label == "rawdata") {
        return None;
    }
    let files = r.files.as_ref()?;
    let placed: Vec<Placed> = files
        .iter()
        .filter(|f| {
            let first = f.path.split('/').next().unwrap_or("");
            f.path.contains('/') && first.strip_prefix("sub-").is_some_and(|l| !l.is_empty())
        })
        .map(|f| Placed {
            path: f.path.clone(),
            res: r.res.clone(),
            file: f.clone(),
        })
        .collect();
    (!placed.is_empty()).then_some(placed)
}

/// Whether `r` is a scan's resource labelled `label`.
fn is_scan_resource(r: &SessionResource, label: &str) -> bool {
    r.res.scan.is_some() && r.res.label.eq_ignore_ascii_case(label)
}

/// Whether `r` is a scan's `NIFTI` or `BIDS` resource.
fn is_bids_scan_resource(r: &SessionResource) -> bool {
    is_scan_resource(r, "NIFTI") || is_scan_resource(r, "BIDS")
}

/// The scans with a `NIFTI` or `BIDS` resource XNAT would not list (an unreadable catalog):
/// each left out whole, as its sidecars without its image (or the reverse) would make the
/// dataset invalid, and said so (by the view).
fn unreadable_scans(resources: &[SessionResource]) -> Vec<String> {
    unreadable(resources).map(left_out_scan).collect()
}

/// The scans' `NIFTI` and `BIDS` resources XNAT would not list.
fn unreadable(resources: &[SessionResource]) -> impl Iterator<Item = &SessionResource> {
    resources
        .iter()
        .filter(|r| r.files.is_none() && is_bids_scan_resource(r))
}

/// What a view shown without the scan of unreadable resource `r` lacks, in `unmapped.tsv`.
fn left_out_scan(r: &SessionResource) -> String {
    format!(
        "scan {} (XNAT would not list the files of {})",
        r.res.scan.as_deref().unwrap_or_default(),
        r.res.label_path()
    )
}

/// The files of scan `scan`'s `NIFTI` and `BIDS` resources (top level), with their names;
/// none of a scan with one of them unreadable (see [`unreadable_scans`]).
fn scan_files<'a>(
    resources: &'a [SessionResource],
    scan: Option<&'a str>,
) -> impl Iterator<Item = (&'a Arc<ResourceRef>, &'a Arc<RemoteFile>)> + 'a {
    let unreadable: std::collections::HashSet<&str> = unreadable(resources)
        .filter_map(|r| r.res.scan.as_deref())
        .collect();
    resources
        .iter()
        .filter(move |r| scan.is_none_or(|s| r.res.scan.as_deref() == Some(s)))
        .filter(|r| is_bids_scan_resource(r))
        .filter(move |r| {
            r.res
                .scan
                .as_deref()
                .is_none_or(|s| !unreadable.contains(s))
        })
        .flat_map(|r| {
            let files = r.files.iter().flat_map(|f| f.iter());
            files
                .filter(|f| !f.path.contains('/'))
                .map(move |f| (&r.res, f))
        })
}

/// The folder of the view a file of this BIDS name goes in: `sub-X[/ses-Y]`.
fn session_dir(name: &FileName) -> String {
    match name.session {
        Some(ses) => format!("sub-{}/ses-{ses}", name.subject),
        None => format!("sub-{}", name.subject),
    }
}

/// Source 2: the scans' files placed by the session's `*_scans.tsv`, and a file it names
/// that is not among them, if any (the table is then not shown: the validator takes a row
/// naming no file for an error); `None` when it names no scan's files.
fn by_scans_tsv(
    resources: &[SessionResource],
    tsv_res: &Arc<ResourceRef>,
    tsv: &Arc<RemoteFile>,
    text: &str,
) -> Option<(Vec<Placed>, Option<String>)> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next()?.split('\t').map(str::trim).collect();
    let filename = header.iter().position(|c| *c == "filename")?;
    let scan_id = header.iter().position(|c| *c == "xnat_scan_id")?;
    let mut placed = Vec::new();
    let mut dirs = Vec::new();
    let mut rows = Vec::new();
    // A row naming a file this view cannot place (no datatype folder, no BIDS name).
    let mut unplaceable = None;
    for line in lines {
        let cols: Vec<&str> = line.split('\t').map(str::trim).collect();
        let (Some(file), Some(scan)) = (cols.get(filename), cols.get(scan_id)) else {
            continue;
        };
        // `anat/sub-X_ses-Y_T1w.nii.gz`: the datatype folder, and the name that says which
        // subject and session.
        let parsed = file.rsplit_once('/').and_then(|(datatype, name)| {
            let parsed = FileName::parse(name)?;
            is_safe_component(datatype).then_some((datatype, parsed))
        });
        let Some((datatype, parsed)) = parsed else {
            unplaceable.get_or_insert_with(|| file.to_string());
            continue;
        };
        let dir = format!("{}/{datatype}", session_dir(&parsed));
        for (res, f) in scan_files(resources, Some(scan)) {
            if FileName::parse(&f.path).is_some_and(|n| n.subject == parsed.subject) {
                placed.push(Placed {
                    path: format!("{dir}/{}", f.path),
                    res: res.clone(),
                    file: f.clone(),
                });
            }
        }
        rows.push(format!("{}/{file}", session_dir(&parsed)));
        dirs.push(session_dir(&parsed));
    }
    if placed.is_empty() {
        return None;
    }
    let missing = unplaceable.or_else(|| {
        rows.into_iter()
            .find(|row| !placed.iter().any(|p| p.path == *row))
    });
    // The table itself, beside the datatype folders it names (when its name is a BIDS name),
    // when every file it names is there.
    if let Some(name) = FileName::parse(&tsv.path)
        && dirs.contains(&session_dir(&name))
        && missing.is_none()
    {
        placed.push(Placed {
            path: format!("{}/{}", session_dir(&name), tsv.path),
            res: tsv_res.clone(),
            file: tsv.clone(),
        });
    }
    Some((placed, missing))
}

/// Source 3: the scans' files placed by their BIDS names.
fn by_file_names(resources: &[SessionResource]) -> Vec<Placed> {
    scan_files(resources, None)
        .filter_map(|(res, f)| {
            let name = FileName::parse(&f.path)?;
            let datatype = name.datatype()?;
            Some(Placed {
                path: format!("{}/{datatype}/{}", session_dir(&name), f.path),
                res: res.clone(),
                file: f.clone(),
            })
        })
        .collect()
}

/// The extensions of the files a scan's `NIFTI` resource gives a mapped scan.
const MAPPED_EXTENSIONS: [&str; 5] = [".nii.gz", ".nii", ".json", ".bval", ".bvec"];

/// `bidsname` with `run-NN` before its suffix (`task-rest_bold` and 2: `task-rest_run-02_bold`).
fn with_run(bidsname: &str, run: usize) -> String {
    match bidsname.rsplit_once('_') {
        Some((entities, suffix)) => format!("{entities}_run-{run:02}_{suffix}"),
        None => format!("run-{run:02}_{bidsname}"),
    }
}

/// Source 4: the `NIFTI` files of the scans `map` names, under the names xnatfs makes, and
/// the scans it names whose `NIFTI` resource XNAT would not list (left out).
fn by_map(
    session: &Session,
    resources: &[SessionResource],
    map: &BidsMap,
) -> Result<(Vec<Placed>, Vec<String>), String> {
    let sub = sanitise(&session.subject_label)
        .ok_or("its subject's label has no letter or digit for a BIDS label")?;
    let ses = session_label(&session.label, &session.subject_label)
        .ok_or("its label has no letter or digit for a BIDS label")?;
    let mut mapped: Vec<(&Arc<Scan>, &SessionResource, &str)> = resources
        .iter()
        .filter(|r| is_scan_resource(r, "NIFTI"))
        .filter_map(|r| {
            let scan = r.scan.as_ref()?;
            if scan.quality.eq_ignore_ascii_case("unusable") {
                return None;
            }
            Some((
                scan,
                r,
                map.name_of(&scan.series_description, &scan.scan_type)?,
            ))
        })
        .collect();
    if mapped.is_empty() {
        return Err(
            "NIfTI files without BIDS names, and the BIDS map names none of its scans' series"
                .into(),
        );
    }
    // Runs by ascending scan ID (numerically where IDs are numbers).
    mapped.sort_by(|(a, _, _), (b, _, _)| {
        let key = |s: &Scan| (s.id.parse::<u64>().unwrap_or(u64::MAX), s.id.clone());
        key(a).cmp(&key(b))
    });
    let mut placed = Vec::new();
    let mut left_out = Vec::new();
    for (i, (scan, r, name)) in mapped.iter().enumerate() {
        let same: Vec<usize> = (0..mapped.len())
            .filter(|j| mapped[*j].2 == *name)
            .collect();
        let bidsname = match same.len() {
            1 => name.to_string(),
            _ => with_run(name, same.iter().position(|j| *j == i).unwrap_or(0) + 1),
        };
        let base = format!("sub-{sub}_ses-{ses}_{bidsname}");
        let Some(datatype) = FileName::parse(&format!("{base}.nii.gz")).and_then(|n| n.datatype())
        else {
            tracing::warn!(
                "BIDS view: scan {} of {}: {bidsname:?} has no datatype BIDS knows",
                scan.id,
                session.id
            );
            continue;
        };
        let Some(files) = &r.files else {
            left_out.push(left_out_scan(r));
            continue;
        };
        let files: Vec<&Arc<RemoteFile>> = files.iter().filter(|f| !f.path.contains('/')).collect();
        let images = files
            .iter()
            .filter(|f| f.path.ends_with(".nii.gz") || f.path.ends_with(".nii"))
            .count();
        if images != 1 {
            tracing::warn!(
                "BIDS view: scan {} of {} left out: its NIFTI resource holds {images} images, not one",
                scan.id,
                session.id
            );
            continue;
        }
        for f in files {
            let Some(ext) = MAPPED_EXTENSIONS.iter().find(|e| f.path.ends_with(*e)) else {
                continue;
            };
            placed.push(Placed {
                path: format!("sub-{sub}/ses-{ses}/{datatype}/{base}{ext}"),
                res: r.res.clone(),
                file: f.clone(),
            });
        }
    }
    if placed.is_empty() {
        return Err(
            "the BIDS map names scans whose NIFTI resources could not be placed (see the log)"
                .into(),
        );
    }
    Ok((placed, left_out))
}

/// The scans' and the session's own resources of session `session_id`'s tree, with their
/// files (none for a resource XNAT would not list).
pub fn resources_of_tree(session_id: &str, tree: crate::xnat::SessionTree) -> Vec<SessionResource> {
    let files = |r: crate::xnat::ResourceTree| match r.unreadable {
        Some(_) => None,
        None => Some(crate::xnat::file_list(r.files)),
    };
    let mut out = Vec::new();
    for s in tree.scans {
        let scan = Arc::new(s.scan);
        for r in s.resources {
            out.push(SessionResource {
                res: Arc::new(ResourceRef::of(session_id, Some(&scan.id), &r.resource)),
                scan: Some(scan.clone()),
                files: files(r),
            });
        }
    }
    for r in tree.resources {
        out.push(SessionResource {
            res: Arc::new(ResourceRef::of(session_id, None, &r.resource)),
            scan: None,
            files: files(r),
        });
    }
    out
}
