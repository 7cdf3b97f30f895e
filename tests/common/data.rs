//! The mock's data set in tests: the small sample, where its files show in a mount, finding
//! a file or resource by that path (to read it, or to change it before the mock starts), and
//! adding files with hostile names.

use bytes::Bytes;
use std::path::PathBuf;
use std::sync::Arc;
use xnatfs::mock::data::{
    Body, Dataset, MockAssessor, MockFile, MockResource, MockScan, MockSession, SampleSpec,
};

/// The T1w image of the first DEMO session, in a mount with no -P or -E.
pub const SUBJ01_T1W: &str = "DEMO/SUBJ01_MR1/scans/2/resources/NIFTI/files/T1w.nii.gz";
/// The T1w image of the second DEMO session.
pub const SUBJ02_T1W: &str = "DEMO/SUBJ02_MR1/scans/2/resources/NIFTI/files/T1w.nii.gz";

/// The session-level protocol files of the first DEMO session.
pub const SUBJ01_PROTOCOLS: &str = "DEMO/SUBJ01_MR1/resources/PROTOCOLS/files";

/// Makes the listed sizes of three files of SUBJ01_MR1 stale, as XNAT's catalog can have
/// them: the scan protocol listed 5 bytes long (with its right digest: the digest decides),
/// the notes 3 bytes short and the T1w image (300,000 bytes) at 200,000, both with no digest
/// (the answer's `Content-Length` decides). Returns their mount paths.
#[allow(dead_code)] // not every test binary uses every helper
pub fn make_sizes_stale(data: &mut Dataset) -> Vec<String> {
    let protocol = format!("{SUBJ01_PROTOCOLS}/scan protocol.txt");
    let notes = format!("{SUBJ01_PROTOCOLS}/notes+v2.txt");
    let f = mock_file_mut(data, &protocol);
    f.listed_size = Some(f.size() + 5);
    let f = mock_file_mut(data, &notes);
    f.listed_size = Some(f.size() - 3);
    f.listed_digest = false;
    let f = mock_file_mut(data, SUBJ01_T1W);
    f.listed_size = Some(200_000);
    f.listed_digest = false;
    vec![protocol, notes, SUBJ01_T1W.to_string()]
}

/// For `--verify size`: gives SUBJ01_MR1's notes a wrong listed digest (only MD5 can tell) and
/// its scan protocol a stale listed size, 5 bytes long (the answer's length is the truth).
/// Returns (the notes' path, the protocol's path).
#[allow(dead_code)] // not every test binary uses every helper
pub fn wrong_digest_and_stale_size(data: &mut Dataset) -> (String, String) {
    let wrong_digest = format!("{SUBJ01_PROTOCOLS}/notes+v2.txt");
    mock_file_mut(data, &wrong_digest).listed_digest_override =
        Some("0123456789abcdef0123456789abcdef".into());
    let stale = format!("{SUBJ01_PROTOCOLS}/scan protocol.txt");
    let f = mock_file_mut(data, &stale);
    f.listed_size = Some(f.size() + 5);
    (wrong_digest, stale)
}

pub fn small_sample() -> Dataset {
    Dataset::sample(&SampleSpec {
        dicom_files: 6,
        dicom_size: 4096,
        nifti_size: 300_000,
        scans: 3,
    })
}

/// A resource's folder below its session's: `scans/<id>/resources/<label>`, or
/// `resources/<label>` for a resource of the session itself.
pub fn resource_dir(scan: Option<&MockScan>, r: &MockResource) -> String {
    match scan {
        Some(sc) => format!("scans/{}/resources/{}", sc.id, r.label),
        None => format!("resources/{}", r.label),
    }
}

/// Where a file lies below its session's folder: `<resource_dir>/files/<path>`.
pub fn path_in_session(scan: Option<&MockScan>, r: &MockResource, f: &MockFile) -> String {
    format!("{}/files/{}", resource_dir(scan, r), f.path)
}

/// Where a file shows in a mount with no -P or -E: `<project>/<session label>/...`.
pub fn mount_path(
    s: &MockSession,
    scan: Option<&MockScan>,
    r: &MockResource,
    f: &MockFile,
) -> String {
    format!("{}/{}/{}", s.project, s.label, path_in_session(scan, r, f))
}

/// The mount-relative path of each sample file under a `-P`-less mount, with its MD5.
pub fn expected_files(data: &Dataset) -> Vec<(PathBuf, u64, String)> {
    let mut out: Vec<_> = data
        .all_files()
        .into_iter()
        .map(|(s, scan, r, f)| {
            let path = mount_path(s, scan, r, f);
            (PathBuf::from(path), f.size(), f.md5().to_string())
        })
        .collect();
    // A walk of the mount sees the assessors' (and reconstructions') files too.
    out.extend(data.assessor_files().into_iter().map(|(s, a, r, f)| {
        let path = format!(
            "{}/{}/{}",
            s.project,
            s.label,
            derived_path(a, &r.label, &f.path)
        );
        (PathBuf::from(path), f.size(), f.md5().to_string())
    }));
    out.sort();
    out
}

/// Where a file of an assessor's resource lies below its session's folder (in a mount and
/// under `prefetch --out`).
pub fn assessor_path(assessor: &str, resource: &str, path: &str) -> String {
    format!("assessors/{assessor}/resources/{resource}/files/{path}")
}

/// Where a file of an assessor's or reconstruction's resource lies below its session's folder:
/// `assessors/<label>/...` or `reconstructions/<ID>/...`.
pub fn derived_path(a: &MockAssessor, resource: &str, path: &str) -> String {
    let folder = a.kind.folder();
    format!("{folder}/{}/resources/{resource}/files/{path}", a.label)
}

/// The file of `data` at `path` in a mount with no -P or -E (as [`SUBJ01_T1W`]); panics if
/// there is none.
pub fn mock_file(data: &Dataset, path: &str) -> Arc<MockFile> {
    data.all_files()
        .into_iter()
        .find(|&(s, scan, r, f)| mount_path(s, scan, r, f) == path)
        .map(|(.., f)| f.clone())
        .unwrap_or_else(|| panic!("no file {path} in the data set"))
}

/// A resource's place in a data set: project, session, scan (`None`: the session's own) and
/// resource, as indices.
type ResourceAt = (usize, usize, Option<usize>, usize);

/// Every resource of `data` with its place and its folder in a mount with no -P or -E.
fn resources(data: &Dataset) -> Vec<(ResourceAt, String, &MockResource)> {
    let mut out = Vec::new();
    for (pi, p) in data.projects.iter().enumerate() {
        for (si, s) in p.sessions.iter().enumerate() {
            let session = format!("{}/{}", s.project, s.label);
            for (ci, sc) in s.scans.iter().enumerate() {
                for (ri, r) in sc.resources.iter().enumerate() {
                    let dir = format!("{session}/{}", resource_dir(Some(sc), r));
                    out.push(((pi, si, Some(ci), ri), dir, r));
                }
            }
            for (ri, r) in s.resources.iter().enumerate() {
                let dir = format!("{session}/{}", resource_dir(None, r));
                out.push(((pi, si, None, ri), dir, r));
            }
        }
    }
    out
}

fn resource_mut<'a>(data: &'a mut Dataset, at: ResourceAt, what: &str) -> &'a mut MockResource {
    let (pi, si, scan, ri) = at;
    let session = Arc::get_mut(&mut data.projects[pi].sessions[si])
        .unwrap_or_else(|| panic!("{what}: change the data set before the mock starts"));
    match scan {
        Some(ci) => &mut session.scans[ci].resources[ri],
        None => &mut session.resources[ri],
    }
}

/// The files of the resource whose folder in a mount with no -P or -E is `dir`
/// (`DEMO/SUBJ01_MR1/resources/QC`, with or without `/files`), to change before the mock
/// starts; panics if there is none.
pub fn resource_files_mut<'a>(data: &'a mut Dataset, dir: &str) -> &'a mut Vec<Arc<MockFile>> {
    let want = dir.strip_suffix("/files").unwrap_or(dir);
    let at = resources(data)
        .into_iter()
        .find(|(_, d, _)| d == want)
        .map(|(at, ..)| at)
        .unwrap_or_else(|| panic!("no resource {dir} in the data set"));
    &mut resource_mut(data, at, dir).files
}

/// The file of `data` at `path` (as for [`mock_file`]), to change before the mock starts.
pub fn mock_file_mut<'a>(data: &'a mut Dataset, path: &str) -> &'a mut MockFile {
    let (at, fi) = resources(data)
        .into_iter()
        .find_map(|(at, dir, r)| {
            let rel = path.strip_prefix(&dir)?.strip_prefix("/files/")?;
            let fi = r.files.iter().position(|f| f.path == rel)?;
            Some((at, fi))
        })
        .unwrap_or_else(|| panic!("no file {path} in the data set"));
    Arc::get_mut(&mut resource_mut(data, at, path).files[fi])
        .unwrap_or_else(|| panic!("{path}: change the data set before the mock starts"))
}

/// Adds to the resource at `dir` (as for [`resource_files_mut`]) a 4-byte file (`evil`)
/// listed under each of `names`: whatever a hostile server might list, such as `../` paths,
/// absolute paths, names with a NUL, names over 255 bytes, or a name listed twice.
pub fn add_hostile_files(data: &mut Dataset, dir: &str, names: &[&str]) {
    let files = resource_files_mut(data, dir);
    for name in names {
        files.push(MockFile::new(
            *name,
            Body::Memory(Bytes::from_static(b"evil")),
        ));
    }
}

/// Adds to the session at `dir` (`DEMO/SUBJ01_MR1`, as in a mount with no -P or -E) a
/// session-level resource labelled `label` holding one 4-byte file (`evil`): for labels a
/// hostile server might list, such as `../UP`.
pub fn add_hostile_session_resource(data: &mut Dataset, dir: &str, label: &str) {
    let next_id = resources(data)
        .iter()
        .map(|(.., r)| r.id)
        .max()
        .unwrap_or(0)
        + 1;
    let session = data
        .projects
        .iter_mut()
        .flat_map(|p| p.sessions.iter_mut())
        .find(|s| format!("{}/{}", s.project, s.label) == dir)
        .unwrap_or_else(|| panic!("no session {dir} in the data set"));
    let session = Arc::get_mut(session)
        .unwrap_or_else(|| panic!("{dir}: change the data set before the mock starts"));
    session.resources.push(MockResource {
        id: next_id,
        label: label.to_string(),
        format: String::new(),
        content: String::new(),
        files: vec![MockFile::new(
            "evil.txt",
            Body::Memory(Bytes::from_static(b"evil")),
        )],
    });
}

/// The requests of `log` that name a resource other than by its numeric ID
/// (`.../resources/<label>/files...`): XNAT cannot take every label in a path.
pub fn resources_named_by_label(log: &[String]) -> Vec<&String> {
    log.iter()
        .filter(|line| {
            line.split("/resources/").skip(1).any(|rest| {
                let (name, after) = rest.split_once('/').unwrap_or((rest, ""));
                after.starts_with("files") && !name.chars().all(|c| c.is_ascii_digit())
            })
        })
        .collect()
}

/// The scans listings of `log` asked with an `xsiType` (which XNAT takes as the only type to
/// list, or fails).
pub fn scans_listed_with_a_type(log: &[String]) -> Vec<&String> {
    let typed = |r: &&String| r.contains("/scans?") && r.contains("xsiType");
    log.iter().filter(typed).collect()
}
