//! Listings kept on disk, for a mount that goes on working while the server is unreachable.
//!
//! [`RememberingApi`] wraps the real client: every listing it gets is also written to the
//! cache area (`listings/`); when the server cannot be reached (network errors, timeouts,
//! 5xx), the last listing on disk is served instead, with a warning. With `offline`, the
//! server is never asked: everything comes from what was browsed or prefetched before.
//! Answers that say something about the data (404, 401, 403) are never papered over.

use super::error::NEVER_LISTED_OFFLINE;
use super::{
    Assessor, Derived, Download, Project, RemoteFile, Resource, ResourceRef, Result, Scan, Session,
    SessionTree, XnatApi, XnatError, session_tree_by_listings,
};
use async_trait::async_trait;
use md5::{Digest, Md5};
use serde::{Serialize, de::DeserializeOwned};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub struct RememberingApi {
    inner: Arc<dyn XnatApi>,
    dir: PathBuf,
    offline: bool,
    /// When a kept listing exists, how long the server may take (retries included) before
    /// the kept one is served instead.
    fallback_after: Duration,
    /// After the server was found unreachable, kept listings are served at once until then
    /// (then the server is tried again).
    unreachable_until: std::sync::Mutex<Option<std::time::Instant>>,
    /// A kept listing younger than this is served without asking (a remount of a session
    /// browsed a moment ago makes no request).
    fresh_for: Duration,
}

/// How long kept listings are served without asking, once the server was unreachable.
const RETRY_SERVER_AFTER: Duration = Duration::from_secs(10);

impl RememberingApi {
    /// `dir`: where listings are kept (created if missing).
    pub fn new(inner: Arc<dyn XnatApi>, dir: PathBuf, offline: bool) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(RememberingApi {
            inner,
            dir,
            offline,
            fallback_after: Duration::from_secs(10),
            unreachable_until: std::sync::Mutex::new(None),
            fresh_for: Duration::ZERO,
        })
    }

    /// Serves kept listings younger than `age` without asking the server.
    pub fn with_fresh_for(mut self, age: Duration) -> Self {
        self.fresh_for = age;
        self
    }

    /// Sets how long the server may take before a kept listing is served instead.
    pub fn with_fallback_after(mut self, after: Duration) -> Self {
        self.fallback_after = after;
        self
    }

    /// Whether the server was found away less than [`RETRY_SERVER_AFTER`] ago (kept listings
    /// are served without asking it meanwhile).
    fn server_away(&self) -> bool {
        self.unreachable_until
            .lock()
            .unwrap()
            .is_some_and(|until| std::time::Instant::now() < until)
    }

    /// The server did not answer: it is not asked again for [`RETRY_SERVER_AFTER`]. Whether
    /// this is news (it was not taken for away already).
    fn server_went_away(&self) -> bool {
        self.unreachable_until
            .lock()
            .unwrap()
            .replace(std::time::Instant::now() + RETRY_SERVER_AFTER)
            .is_none()
    }

    fn server_answered(&self) {
        *self.unreachable_until.lock().unwrap() = None;
    }

    /// Waits for `ask`; with a kept answer to fall back on (`kept`), no longer than
    /// `fallback_after` (then a timeout naming `what`).
    async fn ask_kept<T>(
        &self,
        kept: bool,
        ask: impl std::future::Future<Output = Result<T>>,
        what: impl FnOnce() -> String,
    ) -> Result<T> {
        if !kept {
            return ask.await;
        }
        tokio::time::timeout(self.fallback_after, ask)
            .await
            .unwrap_or_else(|_| Err(XnatError::Timeout(what())))
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir
            .join(format!("{}.json", hex::encode(Md5::digest(key.as_bytes()))))
    }

    fn load<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        let text = std::fs::read(self.path(key)).ok()?;
        let (stored_key, value): (String, T) = serde_json::from_slice(&text).ok()?;
        (stored_key == key).then_some(value)
    }

    fn store<T: Serialize>(&self, key: &str, value: &T) {
        let write = || -> std::io::Result<()> {
            let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
            // Buffered: the writer makes a write call per token otherwise.
            let mut out = std::io::BufWriter::new(&mut tmp);
            serde_json::to_writer(&mut out, &(key, value))?;
            std::io::Write::flush(&mut out)?;
            drop(out);
            tmp.persist(self.path(key)).map_err(|e| e.error)?;
            Ok(())
        };
        if let Err(e) = write() {
            tracing::debug!("cannot keep the listing {key}: {e}");
        }
    }

    /// Asks the server (unless offline), keeping the answer; falls back to the kept answer
    /// when the server cannot be reached.
    async fn remembered<T, F>(&self, key: String, ask: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned + Send,
        F: std::future::Future<Output = Result<T>> + Send,
    {
        if self.offline {
            return self
                .load(&key)
                .ok_or_else(|| XnatError::NotFound(format!("{key} {NEVER_LISTED_OFFLINE}")));
        }
        let kept_age = std::fs::metadata(self.path(&key))
            .and_then(|m| m.modified())
            .ok()
            .map(|t| t.elapsed().unwrap_or(Duration::ZERO));
        let kept_exists = kept_age.is_some();
        if kept_age.is_some_and(|age| age < self.fresh_for)
            && let Some(value) = self.load(&key)
        {
            return Ok(value);
        }
        let server_away = self.server_away();
        if kept_exists
            && server_away
            && let Some(value) = self.load(&key)
        {
            return Ok(value);
        }
        let answer = self
            .ask_kept(kept_exists, ask, || format!("listing {key}"))
            .await;
        match answer {
            Ok(value) => {
                self.server_answered();
                self.store(&key, &value);
                Ok(value)
            }
            Err(e) if e.is_transient() => {
                let first = self.server_went_away();
                match self.load(&key) {
                    Some(value) => {
                        if first {
                            tracing::warn!(
                                "{e}; serving listings kept from before until the server answers again"
                            );
                        }
                        Ok(value)
                    }
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }
}

fn scans_key(session_id: &str) -> String {
    format!("scans/{session_id}")
}

fn resources_key(session_id: &str, scan: Option<&str>) -> String {
    format!("resources/{session_id}/{}", scan.unwrap_or("-"))
}

/// The listing of a session's assessors, or reconstructions.
fn assessors_key(session_id: &str, kind: Derived) -> String {
    format!("{}/{session_id}", kind.folder())
}

fn assessor_resources_key(session_id: &str, assessor: &Assessor) -> String {
    let id = &assessor.id;
    format!("{}-resources/{session_id}/{id}", assessor.kind.noun())
}

impl RememberingApi {
    /// A session's listing of its assessors or reconstructions (`kind`), kept; offline, none
    /// where none was kept.
    async fn derived_listing(&self, session_id: &str, kind: Derived) -> Result<Vec<Assessor>> {
        let key = assessors_key(session_id, kind);
        let asked = super::derived(&*self.inner, session_id, kind);
        match self.remembered(key, asked).await {
            Err(e) if self.offline => {
                tracing::debug!("{e}; no {} kept of {session_id}", kind.folder());
                Ok(Vec::new())
            }
            answer => answer,
        }
    }

    /// A session's tree from kept listings all younger than `fresh_for`, or `None`.
    fn fresh_tree(&self, session: &Session) -> Option<SessionTree> {
        if self.fresh_for.is_zero() {
            return None;
        }
        let load = |key: String| self.load_fresh(&key);
        let files = |scan: Option<&str>, resource: Resource| {
            let key = files_key(&ResourceRef::of(&session.id, scan, &resource));
            Some(super::ResourceTree::listed(
                resource,
                self.load_fresh(&key)?,
            ))
        };
        let mut tree = SessionTree::default();
        let scans: Vec<Scan> = self.load_fresh(&scans_key(&session.id))?;
        for scan in scans {
            let listed: Vec<Resource> = load(resources_key(&session.id, Some(&scan.id)))?;
            let resources = listed
                .into_iter()
                .map(|r| files(Some(&scan.id), r))
                .collect::<Option<_>>()?;
            tree.scans.push(super::ScanTree { scan, resources });
        }
        let listed: Vec<Resource> = load(resources_key(&session.id, None))?;
        tree.resources = listed
            .into_iter()
            .map(|r| files(None, r))
            .collect::<Option<_>>()?;
        let mut assessors: Vec<Assessor> =
            self.load_fresh(&assessors_key(&session.id, Derived::Assessor))?;
        // Listings kept before reconstructions were listed have none of them.
        let reconstructions = assessors_key(&session.id, Derived::Reconstruction);
        assessors.extend(
            self.load_fresh::<Vec<Assessor>>(&reconstructions)
                .unwrap_or_default(),
        );
        for assessor in assessors {
            let listed: Vec<Resource> = load(assessor_resources_key(&session.id, &assessor))?;
            let resources = listed
                .into_iter()
                .map(|resource| {
                    let res = ResourceRef::of_assessor(&session.id, &assessor, &resource);
                    let files = self.load_fresh(&files_key(&res))?;
                    Some(super::ResourceTree::listed(resource, files))
                })
                .collect::<Option<_>>()?;
            tree.assessors.push(super::AssessorTree {
                assessor,
                resources,
            });
        }
        Some(tree)
    }

    /// A kept listing younger than `fresh_for`.
    fn load_fresh<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        let modified = std::fs::metadata(self.path(key)).and_then(|m| m.modified());
        let age = modified.ok()?.elapsed().unwrap_or(Duration::ZERO);
        (age < self.fresh_for).then(|| self.load(key)).flatten()
    }

    /// Keeps a session's tree as the listings it is made of, under their own keys.
    fn store_tree(&self, session: &Session, tree: &SessionTree) {
        let scans: Vec<&Scan> = tree.scans.iter().map(|s| &s.scan).collect();
        self.store(&scans_key(&session.id), &scans);
        let keep = |scan: Option<&str>, resources: &[super::ResourceTree]| {
            let listed: Vec<&Resource> = resources.iter().map(|r| &r.resource).collect();
            self.store(&resources_key(&session.id, scan), &listed);
            // An unreadable resource's files are not known: nothing is kept of them.
            for r in resources.iter().filter(|r| r.unreadable.is_none()) {
                let key = files_key(&ResourceRef::of(&session.id, scan, &r.resource));
                self.store(&key, &r.files);
            }
        };
        for s in &tree.scans {
            keep(Some(&s.scan.id), &s.resources);
        }
        keep(None, &tree.resources);
        for kind in Derived::ALL {
            let of_kind = tree.assessors.iter().map(|a| &a.assessor);
            let of_kind: Vec<&Assessor> = of_kind.filter(|a| a.kind == kind).collect();
            self.store(&assessors_key(&session.id, kind), &of_kind);
        }
        for a in &tree.assessors {
            let listed: Vec<&Resource> = a.resources.iter().map(|r| &r.resource).collect();
            self.store(&assessor_resources_key(&session.id, &a.assessor), &listed);
            for r in a.resources.iter().filter(|r| r.unreadable.is_none()) {
                let res = ResourceRef::of_assessor(&session.id, &a.assessor, &r.resource);
                self.store(&files_key(&res), &r.files);
            }
        }
    }
}

fn files_key(resource: &ResourceRef) -> String {
    if let Some(a) = &resource.assessor {
        return format!(
            "{}-files/{}/{}/{}",
            a.kind.noun(),
            resource.session_id,
            a.id,
            resource.label
        );
    }
    format!(
        "files/{}/{}/{}",
        resource.session_id,
        resource.scan.as_deref().unwrap_or("-"),
        resource.label
    )
}

#[async_trait]
impl XnatApi for RememberingApi {
    async fn config(
        &self,
        project: Option<&str>,
        tool: &str,
        path: &str,
    ) -> Result<Option<String>> {
        let key = format!("config/{}/{tool}/{path}", project.unwrap_or("-"));
        self.remembered(key, self.inner.config(project, tool, path))
            .await
    }

    async fn projects(&self) -> Result<Vec<Project>> {
        self.remembered("projects".into(), self.inner.projects())
            .await
    }

    async fn sessions(&self, project: &str) -> Result<Vec<Session>> {
        self.remembered(format!("sessions/{project}"), self.inner.sessions(project))
            .await
    }

    async fn session(&self, project: Option<&str>, id_or_label: &str) -> Result<Session> {
        let key = format!("session/{}/{id_or_label}", project.unwrap_or("-"));
        self.remembered(key, self.inner.session(project, id_or_label))
            .await
    }

    async fn scans(&self, session: &Session) -> Result<Vec<Scan>> {
        self.remembered(scans_key(&session.id), self.inner.scans(session))
            .await
    }

    async fn resources(&self, session_id: &str, scan: Option<&str>) -> Result<Vec<Resource>> {
        let key = resources_key(session_id, scan);
        self.remembered(key, self.inner.resources(session_id, scan))
            .await
    }

    /// Listings kept from before assessors were listed have none: offline, such a session
    /// shows no assessors rather than nothing at all.
    async fn assessors(&self, session_id: &str) -> Result<Vec<Assessor>> {
        self.derived_listing(session_id, Derived::Assessor).await
    }

    /// As assessors: none offline where none were kept.
    async fn reconstructions(&self, session_id: &str) -> Result<Vec<Assessor>> {
        self.derived_listing(session_id, Derived::Reconstruction)
            .await
    }

    async fn assessor_resources(
        &self,
        session_id: &str,
        assessor: &Assessor,
    ) -> Result<Vec<Resource>> {
        let key = assessor_resources_key(session_id, assessor);
        self.remembered(key, self.inner.assessor_resources(session_id, assessor))
            .await
    }

    async fn files(&self, resource: &ResourceRef) -> Result<Vec<RemoteFile>> {
        self.remembered(files_key(resource), self.inner.files(resource))
            .await
    }

    /// The whole tree from the server, kept as the listings it is made of (so that offline
    /// mounts and the refresh of one resource find them); from kept listings offline, when
    /// they are fresh, or when the server cannot be reached.
    async fn session_tree(&self, session: &Session) -> Result<SessionTree> {
        if self.offline {
            return session_tree_by_listings(self, session).await;
        }
        if let Some(tree) = self.fresh_tree(session) {
            return Ok(tree);
        }
        let server_away = self.server_away();
        if server_away {
            return session_tree_by_listings(self, session).await;
        }
        let kept = self.path(&scans_key(&session.id)).exists();
        let ask = self.inner.session_tree(session);
        let answer = self
            .ask_kept(kept, ask, || format!("the tree of {}", session.id))
            .await;
        match answer {
            Ok(tree) => {
                self.server_answered();
                self.store_tree(session, &tree);
                Ok(tree)
            }
            // Listing by listing, each served from what was kept while the server is away.
            Err(e) if e.is_transient() => {
                let first = self.server_went_away();
                if first && kept {
                    tracing::warn!(
                        "{e}; serving listings kept from before until the server answers again"
                    );
                }
                session_tree_by_listings(self, session).await
            }
            Err(e) => Err(e),
        }
    }

    fn forget_files(&self, resource: &ResourceRef) {
        let _ = std::fs::remove_file(self.path(&files_key(resource)));
        self.inner.forget_files(resource);
    }

    async fn download_range(&self, uri: &str, start: u64, end: Option<u64>) -> Result<Download> {
        if self.offline {
            return Err(XnatError::Network {
                path: uri.into(),
                msg: "offline: only files already in the cache can be read".into(),
            });
        }
        self.inner.download_range(uri, start, end).await
    }

    async fn download_zip(&self, resource: &ResourceRef) -> Result<Download> {
        if self.offline {
            return Err(XnatError::Network {
                path: resource.rest_path(),
                msg: "offline".into(),
            });
        }
        self.inner.download_zip(resource).await
    }
}
