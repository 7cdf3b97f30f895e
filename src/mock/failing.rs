//! An XNAT in memory whose listings fail where a test says (the scans of a session, the
//! resources of a scan, the files of a resource): for unit tests of what a failing listing
//! leaves out.

use super::MemoryXnat;
use crate::xnat::{
    self, Download, Project, RemoteFile, Resource, ResourceRef, Scan, Session, XnatApi, XnatError,
};
use async_trait::async_trait;

/// `inner`, with the listings whose path (as in a prefetch problem's item:
/// `/data/experiments/E/scans`, `.../scans/S/resources`, `<resource>/files`) is in `fail`
/// failing with `err`.
pub struct FailingXnat {
    pub inner: MemoryXnat,
    /// Listings whose path is here fail.
    pub fail: Vec<String>,
    pub err: XnatError,
}

impl FailingXnat {
    fn check(&self, path: String) -> xnat::Result<()> {
        match self.fail.contains(&path) {
            true => Err(self.err.clone()),
            false => Ok(()),
        }
    }
}

#[async_trait]
impl XnatApi for FailingXnat {
    async fn projects(&self) -> xnat::Result<Vec<Project>> {
        self.inner.projects().await
    }
    async fn sessions(&self, project: &str) -> xnat::Result<Vec<Session>> {
        self.inner.sessions(project).await
    }
    async fn session(&self, project: Option<&str>, name: &str) -> xnat::Result<Session> {
        self.inner.session(project, name).await
    }
    async fn scans(&self, session: &Session) -> xnat::Result<Vec<Scan>> {
        self.check(format!("/data/experiments/{}/scans", session.id))?;
        self.inner.scans(session).await
    }
    async fn resources(&self, id: &str, scan: Option<&str>) -> xnat::Result<Vec<Resource>> {
        let path = match scan {
            Some(s) => format!("/data/experiments/{id}/scans/{s}/resources"),
            None => format!("/data/experiments/{id}/resources"),
        };
        self.check(path)?;
        self.inner.resources(id, scan).await
    }
    async fn files(&self, res: &ResourceRef) -> xnat::Result<Vec<RemoteFile>> {
        self.check(format!("{}/files", res.label_path()))?;
        self.inner.files(res).await
    }
    async fn download_range(
        &self,
        uri: &str,
        start: u64,
        end: Option<u64>,
    ) -> xnat::Result<Download> {
        self.inner.download_range(uri, start, end).await
    }
    async fn download_zip(&self, res: &ResourceRef) -> xnat::Result<Download> {
        self.inner.download_zip(res).await
    }
}
