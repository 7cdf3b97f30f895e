//! [`MemoryXnat`]: the [`XnatApi`] straight over a [`Dataset`] in memory, with no HTTP, for
//! unit tests of the core that need neither a server nor a mount. It answers as
//! [`crate::xnat::http::HttpXnat`] does against a [`super::MockServer`] serving the same data
//! (the mock's code finds and writes the answers, the client's code parses them), honours
//! ranges as a caching proxy would, counts calls, and fails when a test asks it to.

use super::data::{Dataset, MockFile, MockResource, MockScan, MockSession};
use super::responses::session_doc;
use super::responses::{file_row, parse_range, project_row, resource_rows, scan_row};
use super::select::{find_resources, listed_scans, project_experiment_rows};
use super::select::{select_scans, session_in_project};
use super::zip_download::{write_zip, zip_entries};
use crate::xnat::http::{IMAGE_SESSIONS, SESSION_COLUMNS};
use crate::xnat::json::{self, Row};
use crate::xnat::{Assessor, XnatApi, XnatError};
use crate::xnat::{Download, Project, RemoteFile, Resource, ResourceRef, Result, Scan, Session};
use async_trait::async_trait;
use bytes::Bytes;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Bodies stream in chunks of this size.
const CHUNK: usize = 64 * 1024;
const LISTINGS: [&str; 6] = [
    "projects",
    "sessions",
    "session",
    "scans",
    "resources",
    "files",
];
const BODIES: [&str; 2] = ["download_range", "download_zip"];

/// The data set's projects, sessions, scans, resources and files, answered in memory.
#[derive(Debug, Default)]
pub struct MemoryXnat {
    data: Dataset,
    calls: Mutex<HashMap<&'static str, usize>>,
    fail_listings: Mutex<Option<XnatError>>,
    fail_bodies: Mutex<Option<XnatError>>,
}

impl MemoryXnat {
    pub fn new(data: Dataset) -> Self {
        MemoryXnat {
            data,
            ..Default::default()
        }
    }

    pub fn data(&self) -> &Dataset {
        &self.data
    }

    /// Calls so far of one trait method, by name (`"files"`, `"download_range"`, ...), failed
    /// ones included. `download` counts as `download_range`, which it calls.
    pub fn calls(&self, method: &str) -> usize {
        self.calls.lock().unwrap().get(method).copied().unwrap_or(0)
    }

    /// Calls of the listing methods: projects, sessions, session, scans, resources, files.
    pub fn listing_calls(&self) -> usize {
        LISTINGS.iter().map(|m| self.calls(m)).sum()
    }

    /// Calls of the body methods: download_range (and so download), download_zip.
    pub fn body_calls(&self) -> usize {
        BODIES.iter().map(|m| self.calls(m)).sum()
    }

    /// Every listing method fails with `err` from now on (`None`: they answer again).
    pub fn fail_listings(&self, err: Option<XnatError>) {
        *self.fail_listings.lock().unwrap() = err;
    }

    /// Every body method fails with `err` from now on (`None`: they answer again).
    pub fn fail_bodies(&self, err: Option<XnatError>) {
        *self.fail_bodies.lock().unwrap() = err;
    }

    fn count(&self, method: &'static str) {
        *self.calls.lock().unwrap().entry(method).or_default() += 1;
    }

    /// Counts a call, then fails it if a test asked for that.
    fn call(&self, method: &'static str) -> Result<()> {
        self.count(method);
        let fail = match LISTINGS.contains(&method) {
            true => &self.fail_listings,
            false => &self.fail_bodies,
        };
        fail.lock().unwrap().clone().map_or(Ok(()), Err)
    }

    /// A session by accession ID; `NotFound(path)` as the server answers for `path`.
    fn session_by_id(&self, id: &str, path: &str) -> Result<&MockSession> {
        let found = self.data.session(id).map(|s| &**s);
        found.ok_or_else(|| XnatError::NotFound(path.to_string()))
    }

    /// The resources a request names (by session accession ID, scan, and the resource as the
    /// request names it: its numeric ID, or a label), as the mock finds them; `None` when the
    /// session or scan is not there.
    fn resources_named(
        &self,
        session_id: &str,
        scan: Option<&str>,
        key: &str,
    ) -> Option<(&MockSession, Vec<Entry<'_>>)> {
        let s = self.data.session(session_id)?;
        let entries = match scan {
            Some(spec) => {
                let sc = *select_scans(s, spec).first()?;
                let found = find_resources(&sc.resources, key);
                found.into_iter().map(|r| (Some(sc), r)).collect()
            }
            None => {
                let found = find_resources(&s.resources, key);
                found.into_iter().map(|r| (None, r)).collect()
            }
        };
        Some((s, entries))
    }

    /// The file that a `/data/experiments/...` URI (as [`XnatApi::files`] gives them) names,
    /// unless its body is gone.
    fn file_at(&self, uri: &str) -> Option<Arc<MockFile>> {
        let rest = ["/data/archive/", "/data/", "/REST/"]
            .iter()
            .find_map(|prefix| uri.strip_prefix(prefix))?;
        let segs: Vec<&str> = rest.split('/').collect();
        let (id, scan, rest) = match segs.as_slice() {
            ["experiments", id, "scans", spec, rest @ ..] => (id, Some(*spec), rest),
            ["experiments", id, rest @ ..] => (id, None, rest),
            _ => return None,
        };
        let ["resources", key, "files", path @ ..] = rest else {
            return None;
        };
        let (_, entries) = self.resources_named(id, scan, key)?;
        let wanted = path.join("/");
        let mut files = entries.iter().flat_map(|(_, r)| &r.files);
        files.find(|f| f.path == wanted && !f.body_gone).cloned()
    }
}

/// A resource of a session (`None`) or of a scan.
type Entry<'a> = (Option<&'a MockScan>, &'a MockResource);

fn rows(values: impl IntoIterator<Item = Value>) -> Vec<Row> {
    let object = |v: Value| v.as_object().cloned();
    values.into_iter().filter_map(object).collect()
}

/// A body of `start..end` read by `read(pos, len)`, streamed in chunks.
fn streamed(
    read: impl Fn(u64, usize) -> std::io::Result<Vec<u8>> + Send + Sync + 'static,
    (start, end, total): (u64, u64, u64),
    partial: bool,
    path: &str,
) -> Download {
    let (path, read) = (path.to_string(), Arc::new(read));
    let body = futures::stream::try_unfold(start, move |pos| {
        let (read, path) = (read.clone(), path.clone());
        async move {
            if pos >= end {
                return Ok(None);
            }
            let chunk = read(pos, ((end - pos) as usize).min(CHUNK));
            let chunk = chunk.map_err(|e| XnatError::Network {
                path,
                msg: e.to_string(),
            })?;
            // A file shorter than it claims ends the body there.
            let next = if chunk.is_empty() {
                end
            } else {
                pos + chunk.len() as u64
            };
            Ok(Some((Bytes::from(chunk), next)))
        }
    });
    Download {
        content_length: Some(end - start),
        total: Some(total),
        start,
        partial,
        body: Box::pin(body),
    }
}

#[async_trait]
impl XnatApi for MemoryXnat {
    async fn config(
        &self,
        project: Option<&str>,
        tool: &str,
        path: &str,
    ) -> Result<Option<String>> {
        self.call("config")?;
        let found = self
            .data
            .configs
            .iter()
            .find(|c| c.project.as_deref() == project && c.tool == tool && c.path == path);
        Ok(found.map(|c| c.contents.clone()))
    }

    async fn projects(&self) -> Result<Vec<Project>> {
        self.call("projects")?;
        Ok(json::projects(&rows(
            self.data.projects.iter().map(project_row),
        )))
    }

    async fn sessions(&self, project: &str) -> Result<Vec<Session>> {
        self.call("sessions")?;
        let Some(p) = self.data.projects.iter().find(|p| p.id == project) else {
            let msg = format!("project {project} (or you may not read it)");
            return Err(XnatError::NotFound(msg));
        };
        // As the client asks: imaging sessions only, with their subjects' labels.
        let listed =
            project_experiment_rows(&self.data, p, Some(IMAGE_SESSIONS), Some(SESSION_COLUMNS));
        Ok(json::sessions(&rows(listed)))
    }

    async fn session(&self, project: Option<&str>, id_or_label: &str) -> Result<Session> {
        self.call("session")?;
        let (path, found) = match project {
            Some(p) => (
                format!("/data/projects/{p}/experiments/{id_or_label}"),
                session_in_project(&self.data, p, id_or_label),
            ),
            None => (
                format!("/data/experiments/{id_or_label}"),
                self.data.session(id_or_label),
            ),
        };
        match found {
            Some(s) => json::session_document(session_doc(s).to_string().as_bytes(), &path),
            None => Err(XnatError::NotFound(match project {
                Some(p) => format!("session {id_or_label} in project {p}"),
                None => format!(
                    "session {id_or_label} (an accession ID like XNAT_E00001, or a label with -P PROJECT)"
                ),
            })),
        }
    }

    async fn scans(&self, session: &Session) -> Result<Vec<Scan>> {
        self.call("scans")?;
        let path = format!("/data/experiments/{}/scans", session.id);
        let s = self.session_by_id(&session.id, &path)?;
        if !s.is_image_session() {
            return Err(XnatError::NotFound(path));
        }
        // As the client asks: with no `xsiType`.
        let listed = listed_scans(s, None).unwrap_or_default();
        Ok(json::scans(&rows(
            listed.into_iter().map(|sc| scan_row(s, sc)),
        )))
    }

    async fn resources(&self, session_id: &str, scan: Option<&str>) -> Result<Vec<Resource>> {
        self.call("resources")?;
        let path = match scan {
            Some(sc) => format!("/data/experiments/{session_id}/scans/{sc}/resources"),
            None => format!("/data/experiments/{session_id}/resources"),
        };
        let s = self.session_by_id(session_id, &path)?;
        let values = match scan.map(|spec| select_scans(s, spec).first().copied()) {
            Some(Some(sc)) => resource_rows(&sc.resources, s, Some(sc)),
            Some(None) => return Err(XnatError::NotFound(path)),
            None => resource_rows(&s.resources, s, None),
        };
        Ok(json::resources(&rows(values)))
    }

    async fn assessors(&self, session_id: &str) -> Result<Vec<Assessor>> {
        self.call("assessors")?;
        let path = format!("/data/experiments/{session_id}/assessors");
        let s = self.session_by_id(session_id, &path)?;
        Ok(json::assessors(&rows(super::responses::assessor_rows(s))))
    }

    async fn reconstructions(&self, session_id: &str) -> Result<Vec<Assessor>> {
        self.call("reconstructions")?;
        let path = format!("/data/experiments/{session_id}/reconstructions");
        let s = self.session_by_id(session_id, &path)?;
        let listed = super::responses::reconstruction_rows(s);
        Ok(json::reconstructions(&rows(listed)))
    }

    async fn assessor_resources(
        &self,
        session_id: &str,
        assessor: &Assessor,
    ) -> Result<Vec<Resource>> {
        self.call("assessor_resources")?;
        let folder = assessor.kind.folder();
        let path = format!("/data/experiments/{session_id}/{folder}/{}", assessor.id);
        let s = self.session_by_id(session_id, &path)?;
        let a = s.derived(assessor.kind, &assessor.id);
        let a = a.ok_or(XnatError::NotFound(path))?;
        Ok(json::resources(&rows(resource_rows(&a.resources, s, None))))
    }

    async fn files(&self, resource: &ResourceRef) -> Result<Vec<RemoteFile>> {
        self.call("files")?;
        let path = format!("{}/files", resource.rest_path());
        if let Some(wanted) = &resource.assessor {
            let s = self.session_by_id(&resource.session_id, &path)?;
            let a = s.derived(wanted.kind, &wanted.id);
            let a = a.ok_or_else(|| XnatError::NotFound(path.clone()))?;
            let found = find_resources(&a.resources, resource.rest_name());
            let listed = found.iter().flat_map(|r| {
                r.files
                    .iter()
                    .map(move |f| super::responses::assessor_file_row(s, a, r, f))
            });
            let (files, _) = json::files(&rows(listed));
            return Ok(files);
        }
        let (id, scan) = (&resource.session_id, resource.scan.as_deref());
        let Some((s, entries)) = self.resources_named(id, scan, resource.rest_name()) else {
            return Err(XnatError::NotFound(path));
        };
        let listed = entries
            .iter()
            .flat_map(|&(scan, r)| r.files.iter().map(move |f| file_row(s, scan, r, f)));
        let (files, skipped) = json::files(&rows(listed));
        for s in skipped {
            tracing::warn!("skipping {:?} in {path}: {}", s.name, s.reason);
        }
        Ok(files)
    }

    async fn download_range(&self, uri: &str, start: u64, end: Option<u64>) -> Result<Download> {
        self.call("download_range")?;
        let file = self.file_at(uri);
        let file = file.ok_or_else(|| XnatError::NotFound(uri.to_string()))?;
        // The Range header the HTTP client would send, read as the mock reads it.
        let range = match (start, end) {
            (0, None) => None,
            (s, None) => Some(format!("bytes={s}-")),
            (s, Some(e)) => Some(format!("bytes={s}-{}", e.saturating_sub(1))),
        };
        let size = file.size();
        let (partial, span) = match range.and_then(|r| parse_range(&r, size)) {
            Some((a, b)) => (true, (a, b + 1)),
            None => (false, (0, size)),
        };
        Ok(streamed(
            move |pos, n| file.read_at(pos, n),
            (span.0, span.1, size),
            partial,
            uri,
        ))
    }

    async fn download_zip(&self, resource: &ResourceRef) -> Result<Download> {
        self.call("download_zip")?;
        let path = format!("{}/files", resource.rest_path());
        let (id, scan) = (&resource.session_id, resource.scan.as_deref());
        let found = self.resources_named(id, scan, resource.rest_name());
        let files = found.map_or_else(Vec::new, |(s, entries)| zip_entries(s, &entries));
        if files.is_empty() {
            return Err(XnatError::NotFound(path));
        }
        let zip = write_zip(std::io::Cursor::new(Vec::new()), files);
        let zip = zip.map_err(|e| XnatError::BadResponse {
            path: path.clone(),
            msg: e.to_string(),
        })?;
        let zip = Bytes::from(zip.into_inner());
        let len = zip.len() as u64;
        let read = move |pos: u64, n: usize| Ok(zip.slice(pos as usize..pos as usize + n).to_vec());
        // Streamed with no Content-Length, as the server sends it.
        let download = streamed(read, (0, len, len), false, &path);
        Ok(Download {
            content_length: None,
            total: None,
            ..download
        })
    }

    fn forget_files(&self, _resource: &ResourceRef) {
        self.count("forget_files");
    }
}
