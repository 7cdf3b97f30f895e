//! The REST endpoints: XNAT's URLs for projects, sessions, scans, resources, assessors,
//! reconstructions, files, bodies and ZIPs, as the [`XnatApi`].

use super::client::HttpXnat;
use super::request::{Expect, body_of};
use crate::xnat::json;
use crate::xnat::{
    Assessor, Download, Project, RemoteFile, Resource, ResourceRef, Scan, Session, XnatApi,
};
use crate::xnat::{Result, XnatError};
use crate::xnat::{SessionTree, session_tree, session_tree_by_listings};
use async_trait::async_trait;
use std::time::{Duration, Instant};

/// The parent type of imaging sessions of every modality, for listing a project's sessions.
pub const IMAGE_SESSIONS: &str = "xnat:imageSessionData";

/// The columns asked of a sessions listing: XNAT's defaults (`ID, project, date, xsiType,
/// label`, less `insert_date`) and the subject's label, so that no request per session is
/// needed for it. `columns=` replaces the defaults rather than adding to them; `subject_label`
/// is XNAT's alias of `xnat:subjectData/label`, joined in by the query. XNAT: xnat-web
/// `org/nrg/xnat/restlet/resources/QueryOrganizerResource.java` (`populateQuery`),
/// `SubjAssessmentAbst.java` (`getDefaultFields`), `org/nrg/xnat/helpers/xmlpath/XMLPathShortcuts.java`
/// (`subject_label`).
pub const SESSION_COLUMNS: &str = "ID,label,project,date,xsiType,subject_label";

/// How long a session document read to find a session stands in for its tree's document.
const DOCUMENT_KEPT: Duration = Duration::from_secs(30);
/// At most this many such documents are kept.
const DOCUMENTS_KEPT: usize = 64;

impl HttpXnat {
    /// A session's whole tree from two requests at once: the session document and the
    /// session's files listing with `all=true` (see [`session_tree`]).
    async fn whole_tree(&self, session: &Session) -> Result<SessionTree> {
        let doc_path = format!("/data/experiments/{}", session.id);
        let files_path = format!("{doc_path}/files");
        let kept = self
            .documents
            .lock()
            .unwrap()
            .remove(&session.id)
            .filter(|(at, _)| at.elapsed() < DOCUMENT_KEPT);
        let (doc, files) = tokio::join!(
            async {
                match kept {
                    Some((_, doc)) => Ok(doc),
                    None => self.get_json(&doc_path, "").await,
                }
            },
            self.file_rows(&files_path, "&all=true", || {
                session_tree::SessionFiles::new(&session.id, &files_path)
            })
        );
        let shape = session_tree::shape(&doc?, &doc_path)?;
        let (mut tree, derived) = session_tree::with_files(shape, files?)?;
        // Assessors and reconstructions are asked listing by listing, and only of sessions the
        // document or the files listing shows to have some (requests more for those only).
        if !derived.is_empty() {
            tree.assessors = crate::xnat::assessor_trees(self, &session.id, &derived).await?;
        }
        Ok(tree)
    }
}

#[async_trait]
impl XnatApi for HttpXnat {
    /// As a listing (`format=json`: one row of `tool, path, project, user, create_date,
    /// reason, contents, unversioned, version, status`), so that it is retried as listings
    /// are; 404 when there is none. XNAT: xnat-web
    /// `org/nrg/xnat/restlet/resources/ConfigResource.java` (`represent`).
    async fn config(
        &self,
        project: Option<&str>,
        tool: &str,
        path: &str,
    ) -> Result<Option<String>> {
        let at = crate::xnat::config_path(project, tool, path);
        match self.get_json(&at, "").await {
            Err(XnatError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
            Ok(body) => {
                let rows = json::result_rows(&body, &at)?;
                Ok(rows
                    .first()
                    .filter(|row| json::field(row, "status") != "disabled")
                    .map(|row| json::field(row, "contents")))
            }
        }
    }

    async fn projects(&self) -> Result<Vec<Project>> {
        Ok(json::projects(&self.rows("/data/projects", "").await?))
    }

    async fn sessions(&self, project: &str) -> Result<Vec<Session>> {
        // A project's experiments are every subject assessor (its default type is
        // `xnat:subjectAssessorData`), clinical forms and other non-imaging experiments
        // included, which have no scans: ask for the imaging sessions of every modality.
        // XNAT: xnat-web `org/nrg/xnat/restlet/resources/ProjSubExptList.java` and
        // `SubjAssessmentAbst.java` (`getDefaultElementName`).
        let path = format!("/data/projects/{project}/experiments");
        match self
            .rows(
                &path,
                &format!("&xsiType={IMAGE_SESSIONS}&columns={SESSION_COLUMNS}"),
            )
            .await
        {
            Err(XnatError::NotFound(_)) => Err(XnatError::NotFound(format!(
                "project {project} (or you may not read it)"
            ))),
            other => Ok(json::sessions(&other?)),
        }
    }

    async fn session(&self, project: Option<&str>, id_or_label: &str) -> Result<Session> {
        let path = match project {
            Some(p) => format!("/data/projects/{p}/experiments/{id_or_label}"),
            None => format!("/data/experiments/{id_or_label}"),
        };
        let body = match self.get_json(&path, "").await {
            Err(XnatError::NotFound(_)) => {
                return Err(XnatError::NotFound(match project {
                    Some(p) => format!("session {id_or_label} in project {p}"),
                    None => format!(
                        "session {id_or_label} (an accession ID like XNAT_E00001, or a label with -P PROJECT)"
                    ),
                }));
            }
            other => other?,
        };
        let session = json::session_document(&body, &path)?;
        let mut kept = self.documents.lock().unwrap();
        kept.retain(|_, (at, _)| at.elapsed() < DOCUMENT_KEPT);
        if kept.len() < DOCUMENTS_KEPT {
            kept.insert(session.id.clone(), (Instant::now(), body));
        }
        Ok(session)
    }

    async fn scans(&self, session: &Session) -> Result<Vec<Scan>> {
        // No `xsiType`: the listing's default type is `xnat:imageScanData`, the parent of every
        // scan type, so it lists the scans of any session (a PET/MR session's MR and PET scans
        // alike). A type given is taken as the query's root element: one that XNAT does not
        // know (`xnat:petmrScanData`) fails the listing with 500, and a real one lists only
        // scans of that type (`xnat:petScanData` would hide a PET/CT session's CT scans).
        // XNAT: xnat-web `org/nrg/xnat/restlet/resources/ScanList.java`
        // (`getDefaultElementName`) and `QueryOrganizerResource.java` (`getRootElementName`).
        let path = format!("/data/experiments/{}/scans", session.id);
        Ok(json::scans(&self.rows(&path, "").await?))
    }

    async fn resources(&self, session_id: &str, scan: Option<&str>) -> Result<Vec<Resource>> {
        let path = match scan {
            Some(s) => format!("/data/experiments/{session_id}/scans/{s}/resources"),
            None => format!("/data/experiments/{session_id}/resources"),
        };
        Ok(json::resources(&self.rows(&path, "").await?))
    }

    /// Asked without the guest check of other listings: most sessions have no assessors.
    async fn assessors(&self, session_id: &str) -> Result<Vec<Assessor>> {
        let path = format!("/data/experiments/{session_id}/assessors");
        let body = self.get_json(&path, "").await?;
        Ok(json::assessors(&json::result_rows(&body, &path)?))
    }

    /// As assessors, without the guest check.
    async fn reconstructions(&self, session_id: &str) -> Result<Vec<Assessor>> {
        let path = format!("/data/experiments/{session_id}/reconstructions");
        let body = self.get_json(&path, "").await?;
        Ok(json::reconstructions(&json::result_rows(&body, &path)?))
    }

    async fn assessor_resources(
        &self,
        session_id: &str,
        assessor: &Assessor,
    ) -> Result<Vec<Resource>> {
        let path = format!(
            "/data/experiments/{session_id}/{}/{}/out/resources",
            assessor.kind.folder(),
            assessor.id
        );
        Ok(json::resources(&self.rows(&path, "").await?))
    }

    async fn files(&self, resource: &ResourceRef) -> Result<Vec<RemoteFile>> {
        let path = format!("{}/files", resource.rest_path());
        let files = self
            .file_rows(&path, "", json::FilesBuilder::default)
            .await?;
        let (files, skipped) = files.finish();
        for s in skipped {
            tracing::warn!("skipping {:?} in {path}: {}", s.name, s.reason);
        }
        Ok(files)
    }

    async fn session_tree(&self, session: &Session) -> Result<SessionTree> {
        match self.whole_tree(session).await {
            Ok(tree) => Ok(tree),
            // A server that cannot be reached answers no listing either.
            Err(e @ (XnatError::Auth(_) | XnatError::Network { .. } | XnatError::Timeout(_))) => {
                Err(e)
            }
            Err(e) => {
                // Never a wrong tree: an answer that does not add up, or a request this
                // server fails (an older XNAT, a proxy), and the session is asked folder by
                // folder.
                tracing::debug!("{e}; listing session {} folder by folder", session.id);
                session_tree_by_listings(self, session).await
            }
        }
    }

    async fn download_range(&self, uri: &str, start: u64, end: Option<u64>) -> Result<Download> {
        let lower = uri.to_ascii_lowercase();
        let html_ok = lower.ends_with(".html") || lower.ends_with(".htm");
        let range = match (start, end) {
            (0, None) => None,
            (s, None) => Some(format!("bytes={s}-")),
            (s, Some(e)) => Some(format!("bytes={s}-{}", e.saturating_sub(1))),
        };
        // One attempt: the reader of the body retries (see `crate::xnat::retry`).
        let expect = Expect::File { html_ok };
        let resp = self.get_once(uri, "", expect, range.as_deref()).await?;
        match body_of(resp, uri, start, end) {
            Ok(download) => Ok(download),
            // An answer to Range that cannot be read safely (`crate::xnat::ranged`): the whole body.
            Err(why) => {
                tracing::info!("{uri}: {why}; asking for the whole body");
                let resp = self.get_once(uri, "", expect, None).await?;
                body_of(resp, uri, 0, None).map_err(|msg| XnatError::BadResponse {
                    path: uri.to_string(),
                    msg,
                })
            }
        }
    }

    /// Asks for STORED entries (`compression=0`), XNAT's default anyway
    /// (`SecureResource.identifyCompression`, `ZipUtils.DEFAULT_COMPRESSION`): nothing to
    /// inflate, and no CPU spent on the server compressing what is mostly compressed already.
    /// A server that sends DEFLATED entries all the same is read too (`prefetch::zip_stream`).
    async fn download_zip(&self, resource: &ResourceRef) -> Result<Download> {
        let path = format!("{}/files", resource.rest_path());
        let resp = self
            .get_once(
                &path,
                "?format=zip&compression=0",
                Expect::File { html_ok: false },
                None,
            )
            .await?;
        body_of(resp, &path, 0, None).map_err(|msg| XnatError::BadResponse { path, msg })
    }
}
