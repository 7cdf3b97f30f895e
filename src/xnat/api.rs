//! The small [`XnatApi`] trait the rest of xnatfs is written against, and a session's tree
//! walked through it listing by listing (folder by folder, one request each), where one
//! unreadable item is left out or kept unreadable without sinking the rest.

use super::error::never_listed_offline;
use super::model::*;
use super::{RemoteFile, Result, XnatError};
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

/// A session's whole tree asked listing by listing: its scans, each scan's resources, each
/// resource's files, then the session's resources and their files (one request per folder).
pub async fn session_tree_by_listings<A: XnatApi + ?Sized>(
    api: &A,
    session: &Session,
) -> Result<SessionTree> {
    let mut tree = SessionTree::default();
    for scan in api.scans(session).await? {
        let mut resources = Vec::new();
        for resource in api.resources(&session.id, Some(&scan.id)).await? {
            let res = ResourceRef::of(&session.id, Some(&scan.id), &resource);
            resources.push(resource_tree(api, &res, resource).await?);
        }
        tree.scans.push(ScanTree { scan, resources });
    }
    for resource in api.resources(&session.id, None).await? {
        let res = ResourceRef::of(&session.id, None, &resource);
        tree.resources
            .push(resource_tree(api, &res, resource).await?);
    }
    tree.assessors = assessor_trees(api, &session.id, &Derived::ALL).await?;
    Ok(tree)
}

/// One resource of a session's tree with its files. A resource whose files the server will
/// not list is kept, marked unreadable, and sinks nothing else: XNAT answers 404 with an empty
/// body for the files of a resource whose catalog it cannot read (corrupt, or locked for more
/// than 2 minutes: xnat-web `org/nrg/xnat/utils/CatalogUtils.java`; `FileList.java`,
/// `handleSingleCatalog`, catching the `ServerException`), and so does every session-wide
/// listing that includes it, which is why the tree is then asked folder by folder. A server
/// that cannot be reached (or a login refused) fails the whole, as for any other listing.
pub async fn resource_tree<A: XnatApi + ?Sized>(
    api: &A,
    res: &ResourceRef,
    resource: Resource,
) -> Result<ResourceTree> {
    match api.files(res).await {
        Ok(files) => Ok(ResourceTree::listed(resource, files)),
        // What may pass (a 5xx, a server away) fails the tree as any listing would: listings
        // kept on disk may stand in for it (`remembering`), and a prefetch counts it.
        Err(e) if e.is_transient() || matches!(e, XnatError::Auth(_)) => Err(e),
        Err(e) => {
            let why = unreadable_files(&e);
            tracing::warn!("cannot list the files of {}: {why}", res.label_path());
            Ok(ResourceTree {
                resource,
                files: Vec::new(),
                unreadable: Some(why),
            })
        }
    }
}

/// Why the files of a resource the session has cannot be listed, in words a user can act on.
pub fn unreadable_files(e: &XnatError) -> String {
    match e {
        XnatError::NotFound(path) if !never_listed_offline(path) => format!(
            "XNAT answered 404 for {path}, a resource the session lists: it cannot read the \
             resource's catalog (ask the site's admin to check it)"
        ),
        e => e.to_string(),
    }
}

/// A session's derived data of the `kinds` asked (assessors, reconstructions), each with its
/// resources and their files, listing by listing. One that the server refuses to list (an
/// assessor type the user may not read, a listing that makes no sense) is reported and left
/// out, and never sinks the session's scans; a resource whose files cannot be listed is kept,
/// unreadable ([`resource_tree`]); a server that cannot be reached fails the whole, as for any
/// other listing.
pub async fn assessor_trees<A: XnatApi + ?Sized>(
    api: &A,
    session_id: &str,
    kinds: &[Derived],
) -> Result<Vec<AssessorTree>> {
    let mut out = Vec::new();
    for &kind in kinds {
        out.extend(derived_trees(api, session_id, kind).await?);
    }
    Ok(out)
}

/// The listing of a session's derived data of one kind.
pub async fn derived<A: XnatApi + ?Sized>(
    api: &A,
    session_id: &str,
    kind: Derived,
) -> Result<Vec<Assessor>> {
    match kind {
        Derived::Assessor => api.assessors(session_id).await,
        Derived::Reconstruction => api.reconstructions(session_id).await,
    }
}

async fn derived_trees<A: XnatApi + ?Sized>(
    api: &A,
    session_id: &str,
    kind: Derived,
) -> Result<Vec<AssessorTree>> {
    let skip = |what: String, e: XnatError| -> Result<()> {
        match e {
            XnatError::Auth(_) | XnatError::Network { .. } | XnatError::Timeout(_) => Err(e),
            e => {
                tracing::warn!("leaving out {what}: {e}");
                Ok(())
            }
        }
    };
    let mut out = Vec::new();
    let assessors = match derived(api, session_id, kind).await {
        Ok(a) => a,
        Err(e) => {
            skip(format!("the {} of {session_id}", kind.folder()), e)?;
            return Ok(out);
        }
    };
    for assessor in assessors {
        let listed = match api.assessor_resources(session_id, &assessor).await {
            Ok(r) => r,
            Err(e) => {
                skip(format!("{} {}", kind.noun(), assessor.label), e)?;
                continue;
            }
        };
        let mut resources = Vec::new();
        for resource in listed {
            let res = ResourceRef::of_assessor(session_id, &assessor, &resource);
            resources.push(resource_tree(api, &res, resource).await?);
        }
        out.push(AssessorTree {
            assessor,
            resources,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
