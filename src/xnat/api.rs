//! The small [`XnatApi`] trait the rest of xnatfs is written against (a session's tree walked
//! through it listing by listing: [`super::walk`]).

use super::model::*;
use super::walk::session_tree_by_listings;
use super::{RemoteFile, Result};
use async_trait::async_trait;

/// The XNAT operations xnatfs needs. [`http::HttpXnat`] talks to a real server; tests may
/// substitute their own.
#[async_trait]
pub trait XnatApi: Send + Sync {
    /// Projects the user can read.
    async fn projects(&self) -> Result<Vec<Project>>;
    /// Sessions of a project. `NotFound` when the project does not exist (or is hidden).
    async fn sessions(&self, project: &str) -> Result<Vec<Session>>;
    /// One session by accession ID, or by label within `project`.
    async fn session(&self, project: Option<&str>, id_or_label: &str) -> Result<Session>;
    async fn scans(&self, session: &Session) -> Result<Vec<Scan>>;
    /// Resources of a scan (`scan` given) or the session-level resources.
    async fn resources(&self, session_id: &str, scan: Option<&str>) -> Result<Vec<Resource>>;
    /// The assessors of a session. This default knows of none (an API without assessors).
    async fn assessors(&self, _session_id: &str) -> Result<Vec<Assessor>> {
        Ok(Vec::new())
    }
    /// The reconstructions of a session. This default knows of none.
    async fn reconstructions(&self, _session_id: &str) -> Result<Vec<Assessor>> {
        Ok(Vec::new())
    }
    /// The output resources of assessor (or reconstruction) `assessor` of a session.
    async fn assessor_resources(
        &self,
        _session_id: &str,
        _assessor: &Assessor,
    ) -> Result<Vec<Resource>> {
        Ok(Vec::new())
    }
    /// Files of a resource. Rows with unsafe paths are left out (with a warning).
    async fn files(&self, resource: &ResourceRef) -> Result<Vec<RemoteFile>>;
    /// A session's whole tree. This default asks listing by listing (one request per folder);
    /// the HTTP client overrides it with the few requests XNAT can answer it in.
    async fn session_tree(&self, session: &Session) -> Result<SessionTree> {
        session_tree_by_listings(self, session).await
    }
    /// Starts the download of a file body by its `uri`.
    async fn download(&self, uri: &str) -> Result<Download> {
        self.download_range(uri, 0, None).await
    }
    /// Starts the download of bytes `start..end` (`end` `None`: to the end) of a file. The
    /// server may ignore the range: look at [`Download::start`].
    async fn download_range(&self, uri: &str, start: u64, end: Option<u64>) -> Result<Download>;
    /// Starts the download of a resource's files as one ZIP (`.../files?format=zip`).
    async fn download_zip(&self, resource: &ResourceRef) -> Result<Download>;
    /// The text XNAT's configuration service holds for `tool` at `path`, the project's
    /// (`project` given) or the site's; `None` when there is none, or it is disabled. This
    /// default knows of none.
    async fn config(
        &self,
        _project: Option<&str>,
        _tool: &str,
        _path: &str,
    ) -> Result<Option<String>> {
        Ok(None)
    }
    /// Drops whatever is remembered of a resource's files listing (a file of it is gone).
    fn forget_files(&self, _resource: &ResourceRef) {}
}

/// The address of a configuration of XNAT's configuration service.
pub fn config_path(project: Option<&str>, tool: &str, path: &str) -> String {
    match project {
        Some(p) => format!("/data/projects/{p}/config/{tool}/{path}"),
        None => format!("/data/config/{tool}/{path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xnat::{XnatError, assessor_trees};

    /// Two assessors: `A1` lists a resource, `A2`'s resources are refused.
    struct TwoAssessors;

    fn assessor(id: &str) -> Assessor {
        Assessor {
            id: id.into(),
            label: format!("S1_{id}"),
            xsi_type: "fs:fsData".into(),
            kind: Derived::Assessor,
        }
    }

    #[async_trait]
    impl XnatApi for TwoAssessors {
        async fn projects(&self) -> Result<Vec<Project>> {
            Ok(vec![])
        }
        async fn sessions(&self, _: &str) -> Result<Vec<Session>> {
            Ok(vec![])
        }
        async fn session(&self, _: Option<&str>, n: &str) -> Result<Session> {
            Err(XnatError::NotFound(n.into()))
        }
        async fn scans(&self, _: &Session) -> Result<Vec<Scan>> {
            Ok(vec![])
        }
        async fn resources(&self, _: &str, _: Option<&str>) -> Result<Vec<Resource>> {
            Ok(vec![])
        }
        async fn assessors(&self, _: &str) -> Result<Vec<Assessor>> {
            Ok(vec![assessor("A1"), assessor("A2")])
        }
        async fn assessor_resources(&self, _: &str, a: &Assessor) -> Result<Vec<Resource>> {
            if a.id == "A2" {
                return Err(XnatError::Forbidden(a.id.clone()));
            }
            Ok(vec![Resource {
                id: "7".into(),
                label: "DATA".into(),
                format: String::new(),
                content: String::new(),
                file_count: None,
                file_size: None,
            }])
        }
        async fn files(&self, r: &ResourceRef) -> Result<Vec<RemoteFile>> {
            assert_eq!(
                r.rest_path(),
                "/data/experiments/E1/assessors/A1/out/resources/7"
            );
            Ok(vec![])
        }
        async fn download_range(&self, u: &str, _: u64, _: Option<u64>) -> Result<Download> {
            Err(XnatError::NotFound(u.into()))
        }
        async fn download_zip(&self, r: &ResourceRef) -> Result<Download> {
            Err(XnatError::NotFound(r.rest_path()))
        }
    }

    #[tokio::test]
    async fn an_assessor_the_server_refuses_is_left_out() {
        let trees = assessor_trees(&TwoAssessors, "E1", &Derived::ALL)
            .await
            .unwrap();
        assert_eq!(trees.len(), 1);
        assert_eq!(trees[0].assessor.id, "A1");
        assert_eq!(trees[0].resources[0].resource.label, "DATA");
    }
}
