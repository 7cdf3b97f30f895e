//! What the mock server serves: a deterministic sample data set, or a folder laid out as
//! `<project>/<session label>/scans/<scan id>/resources/<label>/files/...` and
//! `<project>/<session label>/resources/<label>/files/...`.

use crate::xnat::Derived;
use bytes::Bytes;
use md5::{Digest, Md5};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};

pub use super::sample::SampleSpec;

#[derive(Debug, Default, Clone)]
pub struct Dataset {
    pub projects: Vec<MockProject>,
    /// Sessions shared into other projects than their own.
    pub shares: Vec<Share>,
    /// What XNAT's configuration service holds (`/data/config/...`,
    /// `/data/projects/{p}/config/...`).
    pub configs: Vec<MockConfig>,
}

/// A configuration of XNAT's configuration service: a tool's text at a path, site-wide or a
/// project's. XNAT: xnat-web `org/nrg/xnat/restlet/resources/ConfigResource.java`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockConfig {
    /// The project's ID; `None`: site-wide.
    pub project: Option<String>,
    pub tool: String,
    pub path: String,
    pub contents: String,
}

/// A session shared into another project, where it is listed under a label of its own there
/// (its accession ID is the same). XNAT: `xnat:experimentData/sharing/share`, with `project`
/// and `label`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// The session's accession ID.
    pub session: String,
    pub project: String,
    /// Its label in `project` (XNAT lists its own label where this is empty).
    pub label: String,
}

#[derive(Debug, Clone)]
pub struct MockProject {
    pub id: String,
    pub name: String,
    pub sessions: Vec<Arc<MockSession>>,
}

/// An experiment of a subject: an imaging session, or another subject assessor (a clinical
/// form), which has no scans.
#[derive(Debug, Clone)]
pub struct MockSession {
    pub id: String,
    pub label: String,
    pub project: String,
    /// The subject's accession ID and label.
    pub subject_id: String,
    pub subject_label: String,
    pub xsi_type: String,
    pub date: String,
    pub scans: Vec<MockScan>,
    pub resources: Vec<MockResource>,
    /// Its assessors (FreeSurfer, QC, ... outputs) and reconstructions, each with its `out`
    /// resources.
    pub assessors: Vec<MockAssessor>,
}

/// An assessor of a session (`xnat:imageAssessorData`), or a reconstruction
/// (`xnat:reconstructedImageData`, `kind`): derived data, in `out` resources. A
/// reconstruction has no label (its `label` is its ID).
#[derive(Debug, Clone)]
pub struct MockAssessor {
    pub id: String,
    pub label: String,
    pub xsi_type: String,
    pub kind: Derived,
    pub resources: Vec<MockResource>,
}

impl MockSession {
    /// Its assessor (or reconstruction: `kind`) with accession ID `id`.
    pub fn derived(&self, kind: Derived, id: &str) -> Option<&MockAssessor> {
        self.assessors.iter().find(|a| a.kind == kind && a.id == id)
    }

    /// Whether this experiment is an imaging session (`xnat:mrSessionData`,
    /// `xnat:petmrSessionData`, ...) rather than another subject assessor (a clinical form,
    /// `xnat:subjectVariablesData`), which has no scans.
    pub fn is_image_session(&self) -> bool {
        self.xsi_type.ends_with("SessionData")
    }
}

#[derive(Debug, Clone)]
pub struct MockScan {
    pub id: String,
    pub scan_type: String,
    pub series_description: String,
    pub quality: String,
    pub xsi_type: String,
    pub resources: Vec<MockResource>,
}

#[derive(Debug, Clone)]
pub struct MockResource {
    /// The numeric `xnat_abstractresource_id`.
    pub id: u64,
    pub label: String,
    pub format: String,
    pub content: String,
    pub files: Vec<Arc<MockFile>>,
}

#[derive(Debug)]
pub struct MockFile {
    /// The path inside the resource (subfolders included). Tests may put hostile paths here.
    pub path: String,
    pub body: Body,
    /// Whether the server lists an MD5 digest for this file.
    pub listed_digest: bool,
    /// The size the listing claims, when it should disagree with the body (a stale catalog:
    /// XNAT lists the size its catalog keeps, and stats the file only when the catalog has
    /// none; xnat-web `org/nrg/xnat/utils/CatalogUtils.java`, `getEntryDetails`).
    pub listed_size: Option<u64>,
    /// A listed size set while the server runs (`/mock/change?listed_size=N`); `u64::MAX`:
    /// none.
    stale_size: std::sync::atomic::AtomicU64,
    /// The digest the listing claims, when it should disagree with the body.
    pub listed_digest_override: Option<String>,
    /// Listed, but its body is gone (404), as when a file is deleted after a listing.
    pub body_gone: bool,
    /// Listed with `Size: ""`: a catalog entry without size, for a file XNAT could not stat
    /// (xnat-web `org/nrg/xnat/utils/CatalogUtils.java`, `getEntryDetails`).
    pub listed_without_size: bool,
    digest: OnceLock<String>,
    /// What replaced the body on the server since (a file changed in place): its size, bytes
    /// and digest are served from then on.
    changed: RwLock<Option<Arc<MockFile>>>,
}

/// A file's bytes: made up on the fly from a seed (so a 1 GiB file costs no memory and any
/// range can be served), held in memory, or read from a file on disk.
#[derive(Debug, Clone)]
pub enum Body {
    Generated {
        seed: u64,
        size: u64,
        /// Bytes that overlay the start (a DICOM preamble, say).
        prefix: Bytes,
    },
    Memory(Bytes),
    Disk {
        path: PathBuf,
        size: u64,
    },
}

impl MockFile {
    pub fn new(path: impl Into<String>, body: Body) -> Arc<MockFile> {
        Arc::new(MockFile {
            path: path.into(),
            body,
            listed_digest: true,
            listed_size: None,
            stale_size: std::sync::atomic::AtomicU64::new(u64::MAX),
            listed_digest_override: None,
            body_gone: false,
            listed_without_size: false,
            digest: OnceLock::new(),
            changed: RwLock::new(None),
        })
    }

    /// Changes the file on the server: from now on it has `body` (its size and digest too).
    pub fn change(&self, body: Body) {
        *self.changed.write().unwrap() = Some(MockFile::new(self.path.clone(), body));
    }

    /// Makes the listing claim `size` bytes from now on, whatever the body has (a stale
    /// catalog).
    pub fn set_listed_size(&self, size: u64) {
        self.stale_size
            .store(size, std::sync::atomic::Ordering::SeqCst);
    }

    /// The size the files listing gives: the catalog's, which may be stale.
    pub fn listed_size(&self) -> u64 {
        match self.stale_size.load(std::sync::atomic::Ordering::SeqCst) {
            u64::MAX => self.listed_size.unwrap_or_else(|| self.size()),
            stale => stale,
        }
    }

    fn current(&self) -> Option<Arc<MockFile>> {
        self.changed.read().unwrap().clone()
    }

    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }

    pub fn size(&self) -> u64 {
        if let Some(now) = self.current() {
            return now.size();
        }
        match &self.body {
            Body::Generated { size, .. } | Body::Disk { size, .. } => *size,
            Body::Memory(b) => b.len() as u64,
        }
    }

    /// Whether its bytes are read from a file on disk (a blocking read), not made in memory.
    pub fn reads_disk(&self) -> bool {
        match self.current() {
            Some(now) => now.reads_disk(),
            None => matches!(self.body, Body::Disk { .. }),
        }
    }

    /// Reads up to `len` bytes at `offset`.
    pub fn read_at(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        if let Some(now) = self.current() {
            return now.read_at(offset, len);
        }
        let len = len.min(self.size().saturating_sub(offset) as usize);
        match &self.body {
            Body::Generated { seed, prefix, .. } => {
                let mut buf = vec![0u8; len];
                generate(*seed, offset, &mut buf);
                if (offset as usize) < prefix.len() {
                    let start = offset as usize;
                    let n = (prefix.len() - start).min(len);
                    buf[..n].copy_from_slice(&prefix[start..start + n]);
                }
                Ok(buf)
            }
            Body::Memory(b) => Ok(b[offset as usize..offset as usize + len].to_vec()),
            Body::Disk { path, .. } => {
                use std::os::unix::fs::FileExt;
                let mut buf = vec![0u8; len];
                let n = std::fs::File::open(path)?.read_at(&mut buf, offset)?;
                buf.truncate(n);
                Ok(buf)
            }
        }
    }

    /// MD5 hex of the whole body, computed once.
    pub fn md5(&self) -> String {
        if let Some(now) = self.current() {
            return now.md5();
        }
        self.digest
            .get_or_init(|| {
                let mut hasher = Md5::new();
                let mut offset = 0;
                while offset < self.size() {
                    let chunk = self.read_at(offset, 1 << 20).unwrap_or_default();
                    if chunk.is_empty() {
                        break;
                    }
                    offset += chunk.len() as u64;
                    hasher.update(&chunk);
                }
                hex::encode(hasher.finalize())
            })
            .clone()
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The 8 bytes of word `word` of stream `key`: one multiply and one shift, and a bijection of
/// `word` (an odd multiplier, then a xorshift), so that no two words of a stream are alike and
/// a byte served from the wrong offset never matches. Cheap on purpose: the mock shares the
/// machine with the client in benchmarks, and its own cost would be counted against the client.
#[inline]
fn word_bytes(key: u64, word: u64) -> [u8; 8] {
    let x = (key ^ word).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x ^ (x >> 29)).to_le_bytes()
}

/// Fills `buf` with the deterministic bytes of stream `seed` starting at `offset`.
pub fn generate(seed: u64, offset: u64, buf: &mut [u8]) {
    let key = splitmix64(seed);
    let mut word = offset / 8;
    let within = (offset % 8) as usize;
    let mut rest = buf;
    if within != 0 {
        // The tail of the word the offset falls in.
        let bytes = word_bytes(key, word);
        let n = (8 - within).min(rest.len());
        rest[..n].copy_from_slice(&bytes[within..within + n]);
        rest = &mut rest[n..];
        word += 1;
    }
    let mut words = rest.chunks_exact_mut(8);
    for chunk in &mut words {
        chunk.copy_from_slice(&word_bytes(key, word));
        word += 1;
    }
    let tail = words.into_remainder();
    let n = tail.len();
    tail.copy_from_slice(&word_bytes(key, word)[..n]);
}

impl Dataset {
    /// A data set from a folder laid out as the mount shows it, one level of projects above.
    pub fn from_dir(root: &Path) -> std::io::Result<Dataset> {
        let mut next_resource = 1000;
        let mut next_session = 0;
        let mut projects = Vec::new();
        for project in sorted_dirs(root)? {
            let pid = file_name(&project);
            let mut sessions = Vec::new();
            for session in sorted_dirs(&project)? {
                next_session += 1;
                let mut resources_of = |dir: &Path| -> std::io::Result<Vec<MockResource>> {
                    let mut out = Vec::new();
                    for res in sorted_dirs(&dir.join("resources")).unwrap_or_default() {
                        next_resource += 1;
                        let files_dir = res.join("files");
                        let mut files = Vec::new();
                        collect_files(&files_dir, &files_dir, &mut files)?;
                        out.push(MockResource {
                            id: next_resource,
                            label: file_name(&res),
                            format: String::new(),
                            content: String::new(),
                            files,
                        });
                    }
                    Ok(out)
                };
                let mut scans = Vec::new();
                for scan in sorted_dirs(&session.join("scans")).unwrap_or_default() {
                    scans.push(MockScan {
                        id: file_name(&scan),
                        scan_type: String::new(),
                        series_description: String::new(),
                        quality: "usable".into(),
                        xsi_type: "xnat:mrScanData".into(),
                        resources: resources_of(&scan)?,
                    });
                }
                let resources = resources_of(&session)?;
                let label = file_name(&session);
                sessions.push(Arc::new(MockSession {
                    id: format!("XNAT_E{next_session:05}"),
                    subject_id: String::new(),
                    subject_label: label.split('_').next().unwrap_or(&label).to_string(),
                    label,
                    project: pid.clone(),
                    xsi_type: "xnat:mrSessionData".into(),
                    date: String::new(),
                    scans,
                    resources,
                    assessors: Vec::new(),
                }));
            }
            projects.push(MockProject {
                name: pid.clone(),
                id: pid,
                sessions,
            });
        }
        let mut data = Dataset {
            projects,
            shares: Vec::new(),
            configs: Vec::new(),
        };
        data.number_subjects();
        Ok(data)
    }

    /// Shares session `session_id` into `project` under `label` there.
    pub fn share(&mut self, session_id: &str, project: &str, label: &str) {
        self.shares.push(Share {
            session: session_id.into(),
            project: project.into(),
            label: label.into(),
        });
    }

    /// The sessions shared into `project`, each with its label there.
    pub fn shared_into(&self, project: &str) -> Vec<(&Arc<MockSession>, &str)> {
        self.shares
            .iter()
            .filter(|sh| sh.project == project)
            .filter_map(|sh| {
                let s = self.session(&sh.session)?;
                let label = if sh.label.is_empty() {
                    &s.label
                } else {
                    &sh.label
                };
                Some((s, label.as_str()))
            })
            .collect()
    }

    pub fn session(&self, id: &str) -> Option<&Arc<MockSession>> {
        self.projects
            .iter()
            .flat_map(|p| &p.sessions)
            .find(|s| s.id == id)
    }

    /// The resource labelled `label` of session `session_id` (of its scan `scan`, if given),
    /// as the client refers to it; panics if there is none (for tests).
    pub fn resource_ref(
        &self,
        session_id: &str,
        scan: Option<&str>,
        label: &str,
    ) -> crate::xnat::ResourceRef {
        let s = self.session(session_id).expect("a session of the data set");
        let resources = match scan {
            Some(id) => {
                &s.scans
                    .iter()
                    .find(|sc| sc.id == id)
                    .expect("a scan")
                    .resources
            }
            None => &s.resources,
        };
        let r = resources
            .iter()
            .find(|r| r.label == label)
            .expect("a resource");
        crate::xnat::ResourceRef {
            session_id: session_id.into(),
            scan: scan.map(Into::into),
            assessor: None,
            label: label.into(),
            id: r.id.to_string(),
        }
    }

    /// Every file of the assessors (and reconstructions) of the data set with its session,
    /// assessor and resource.
    pub fn assessor_files(
        &self,
    ) -> Vec<(&MockSession, &MockAssessor, &MockResource, &Arc<MockFile>)> {
        let mut out = Vec::new();
        for s in self.projects.iter().flat_map(|p| &p.sessions) {
            for a in &s.assessors {
                for r in &a.resources {
                    out.extend(r.files.iter().map(|f| (&**s, a, r, f)));
                }
            }
        }
        out
    }

    /// Every file of the data set with its session, scan (if any) and resource label; the
    /// files of assessors are in [`Dataset::assessor_files`].
    pub fn all_files(
        &self,
    ) -> Vec<(
        &MockSession,
        Option<&MockScan>,
        &MockResource,
        &Arc<MockFile>,
    )> {
        let mut out = Vec::new();
        for s in self.projects.iter().flat_map(|p| &p.sessions) {
            for scan in &s.scans {
                for r in &scan.resources {
                    out.extend(r.files.iter().map(|f| (&**s, Some(scan), r, f)));
                }
            }
            for r in &s.resources {
                out.extend(r.files.iter().map(|f| (&**s, None, r, f)));
            }
        }
        out
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn sorted_dirs(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    out.sort();
    Ok(out)
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<Arc<MockFile>>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let path = e.path();
        let meta = e.metadata()?;
        if meta.is_dir() {
            collect_files(root, &path, out)?;
        } else if meta.is_file() {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            out.push(MockFile::new(
                rel.to_string_lossy(),
                Body::Disk {
                    path: path.clone(),
                    size: meta.len(),
                },
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_bytes_are_the_same_at_any_offset() {
        let mut whole = vec![0u8; 100];
        generate(7, 0, &mut whole);
        for start in [0usize, 1, 7, 8, 13, 64] {
            let mut part = vec![0u8; 100 - start];
            generate(7, start as u64, &mut part);
            assert_eq!(part, whole[start..]);
        }
        let mut other = vec![0u8; 100];
        generate(8, 0, &mut other);
        assert_ne!(whole, other);
    }

    #[test]
    fn a_folder_serves_as_a_data_set() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir
            .path()
            .join("P1/S1/scans/7/resources/DICOM/files/sub/a.dcm");
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(&f, b"abc").unwrap();
        let g = dir.path().join("P1/S1/resources/QC/files/r.txt");
        std::fs::create_dir_all(g.parent().unwrap()).unwrap();
        std::fs::write(&g, b"report").unwrap();
        let data = Dataset::from_dir(dir.path()).unwrap();
        let files = data.all_files();
        assert_eq!(files.len(), 2);
        let (s, scan, r, file) = files[0];
        assert_eq!((s.label.as_str(), s.project.as_str()), ("S1", "P1"));
        assert_eq!(scan.map(|sc| sc.id.as_str()), Some("7"));
        assert_eq!(
            (r.label.as_str(), file.path.as_str()),
            ("DICOM", "sub/a.dcm")
        );
        assert_eq!(file.read_at(1, 10).unwrap(), b"bc");
        assert_eq!(files[1].3.path, "r.txt");
        assert!(files[1].1.is_none());
    }
}
