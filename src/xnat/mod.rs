//! The XNAT side: domain types, the small [`XnatApi`] trait the rest of xnatfs is written
//! against, the JSON parsing of XNAT's answers, and the HTTP client that implements the trait.

pub mod error;
pub mod http;
pub mod json;
pub mod login;
mod ranged;
pub mod remembering;
mod remote_file;
pub mod retry;
pub mod session_tree;
mod streamed;
pub mod suggest;

pub use error::{Result, XnatError};
pub use remote_file::{FileList, Md5, RemoteFile, file_list, same_or_new};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

/// A project the user can read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Project {
    pub id: String,
    pub name: String,
}

/// An imaging session (XNAT "experiment").
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Session {
    /// Accession ID, unique on the server (`XNAT_E00001`).
    pub id: String,
    /// Label, unique within its project.
    pub label: String,
    pub project: String,
    /// The session's type (`xnat:mrSessionData`, `xnat:petmrSessionData`, ...). It says
    /// nothing of its scans' types: a PET/MR session holds MR and PET scans, a PET/CT session
    /// CT and PET scans, so no scan type is ever derived from it.
    pub xsi_type: String,
    pub date: String,
    /// The subject's label, when the listing gave it (`columns=...,subject_label`: the
    /// sessions of a project); `""` when not known (a session named by `-E`).
    #[serde(default)]
    pub subject_label: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Scan {
    pub id: String,
    pub scan_type: String,
    pub series_description: String,
    pub quality: String,
    pub xsi_type: String,
}

/// A resource (a folder of files) of a scan or of a session.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resource {
    /// The numeric `xnat_abstractresource_id`.
    pub id: String,
    pub label: String,
    pub format: String,
    /// What the resource holds, as XNAT's `content` column says (`T1_RAW`, ...); often `""`.
    #[serde(default)]
    pub content: String,
    pub file_count: Option<u64>,
    pub file_size: Option<u64>,
}

/// An assessor of a session (FreeSurfer, QC, PUP outputs: an `xnat:imageAssessorData`), as
/// the session's assessors listing gives it. XNAT: xnat-web
/// `org/nrg/xnat/restlet/resources/ProjSubExptAsstList.java` (rows `ID`, `label`, `xsiType`,
/// `date`, `project`, `session_ID`, `session_label`, `insert_date`, `URI`).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Assessor {
    /// Accession ID (`XNAT_E00042`): how requests name it.
    pub id: String,
    /// Label, unique within its project: how folders, the cache and `--out` name it.
    pub label: String,
    #[serde(default)]
    pub xsi_type: String,
    /// An assessor, or a reconstruction (kept only when it is one).
    #[serde(default, skip_serializing_if = "Derived::is_assessor")]
    pub kind: Derived,
}

/// Which of a session's derived data an [`Assessor`] is. XNAT keeps both kinds as items of the
/// session, each with its `out` resources: xnat-web
/// `org/nrg/xnat/restlet/resources/files/XNATTemplate.java` (`assessors/{A}/out`,
/// `reconstructions/{R}/out`).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Derived {
    /// An image assessor (`xnat:imageAssessorData`): FreeSurfer, QC, PUP outputs.
    #[default]
    Assessor,
    /// A reconstruction (`xnat:reconstructedImageData`), which has an ID and no label: the
    /// ID names it. XNAT: `org/nrg/xnat/restlet/resources/ReconList.java` (rows `ID`, `type`,
    /// `baseScanType`, `xnat_reconstructedimagedata_id`).
    Reconstruction,
}

impl Derived {
    /// Both kinds.
    pub const ALL: [Derived; 2] = [Derived::Assessor, Derived::Reconstruction];

    /// The folder of this kind under a session, as in XNAT's REST paths: `assessors`,
    /// `reconstructions`.
    pub fn folder(self) -> &'static str {
        match self {
            Derived::Assessor => "assessors",
            Derived::Reconstruction => "reconstructions",
        }
    }

    /// One of this kind, in messages: `assessor`, `reconstruction`.
    pub fn noun(self) -> &'static str {
        match self {
            Derived::Assessor => "assessor",
            Derived::Reconstruction => "reconstruction",
        }
    }

    pub fn is_assessor(&self) -> bool {
        *self == Derived::Assessor
    }
}

/// Where a resource lives: a session, optionally a scan or an assessor of it, and the
/// resource, by numeric ID (how requests name it) and by label (how folders, the cache and
/// `--out` name it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceRef {
    pub session_id: String,
    pub scan: Option<String>,
    /// The assessor whose output resource this is (then `scan` is `None`).
    pub assessor: Option<std::sync::Arc<Assessor>>,
    pub label: String,
    /// The numeric `xnat_abstractresource_id`.
    pub id: String,
}

impl ResourceRef {
    /// The resource `r` (as a resources listing gives it) of a session, or of its scan `scan`.
    pub fn of(session_id: &str, scan: Option<&str>, r: &Resource) -> ResourceRef {
        ResourceRef {
            session_id: session_id.to_string(),
            scan: scan.map(str::to_string),
            assessor: None,
            label: r.label.clone(),
            id: r.id.clone(),
        }
    }

    /// The output resource `r` of assessor `a` of a session.
    pub fn of_assessor(session_id: &str, a: &Assessor, r: &Resource) -> ResourceRef {
        ResourceRef {
            assessor: Some(std::sync::Arc::new(a.clone())),
            ..ResourceRef::of(session_id, None, r)
        }
    }

    /// The REST path of this resource, under `/data`, naming it by its numeric ID: XNAT takes
    /// a resource in a path as it comes (not URL-decoded) and splits it on commas, so a label
    /// with a space, a comma or an `&` cannot name it there; its ID always can (a label only
    /// when XNAT gave no ID). XNAT: xnat-web
    /// `org/nrg/xnat/restlet/resources/files/XNATCatalogTemplate.java` (`RESOURCE_ID` split on
    /// commas), `SecureResource.java` (`getParameter`: not decoded), `FileList.java`.
    pub fn rest_path(&self) -> String {
        self.path_naming(self.rest_name())
    }

    /// How requests name this resource: by its numeric ID (by its label only when XNAT gave
    /// no ID).
    pub fn rest_name(&self) -> &str {
        if self.id.is_empty() {
            &self.label
        } else {
            &self.id
        }
    }

    /// The path of this resource naming it by its label, as users know it: for messages
    /// (requests use [`ResourceRef::rest_path`]).
    pub fn label_path(&self) -> String {
        self.path_naming(&self.label)
    }

    fn path_naming(&self, resource: &str) -> String {
        if let Some(a) = &self.assessor {
            // An assessor's (or reconstruction's) resources are its `out` resources. XNAT:
            // xnat-web `org/nrg/xnat/restlet/resources/files/XNATTemplate.java`
            // (`assessors/{A}/out`, `reconstructions/{R}/out`).
            return format!(
                "/data/experiments/{}/{}/{}/out/resources/{resource}",
                self.session_id,
                a.kind.folder(),
                a.id
            );
        }
        match &self.scan {
            Some(scan) => format!(
                "/data/experiments/{}/scans/{scan}/resources/{resource}",
                self.session_id
            ),
            None => format!("/data/experiments/{}/resources/{resource}", self.session_id),
        }
    }
}

/// The folder XNAT names a scan by in its ZIP downloads: `{ID}-{type}`, each character of the
/// type that is not an ASCII letter, digit or `_` replaced by `_` (Java's `\W`, which sees a
/// character outside the BMP as two UTF-16 units, so two `_`); just the ID when the scan has no
/// type. XNAT: xnat-web `org/nrg/xnat/restlet/files/utils/RestFileUtils.java` (`getReMaps`),
/// used by `org/nrg/xnat/restlet/resources/files/FileList.java` for the default `structure`.
pub fn zip_scan_folder(id: &str, scan_type: &str) -> String {
    if scan_type.is_empty() {
        return id.to_string();
    }
    let mut name = format!("{id}-");
    for c in scan_type.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            name.push(c);
        } else {
            name.extend(std::iter::repeat_n('_', c.len_utf16()));
        }
    }
    name
}

/// A session's whole tree of listings: its scans with their resources and files, and its
/// session-level resources with their files. Empty scans and resources are kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionTree {
    pub scans: Vec<ScanTree>,
    /// The session-level resources (`<session>/resources/<label>`).
    pub resources: Vec<ResourceTree>,
    /// The session's assessors with their resources
    /// (`<session>/assessors/<label>/resources/<label>`).
    #[serde(default)]
    pub assessors: Vec<AssessorTree>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AssessorTree {
    pub assessor: Assessor,
    pub resources: Vec<ResourceTree>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScanTree {
    pub scan: Scan,
    pub resources: Vec<ResourceTree>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResourceTree {
    pub resource: Resource,
    pub files: Vec<RemoteFile>,
    /// Why its files could not be listed, when they could not (`files` is then empty): XNAT
    /// answers 404 for the files of a resource whose catalog it cannot read (see
    /// [`resource_tree`]). Only this resource fails; the rest of the session is listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
}

impl ResourceTree {
    pub fn listed(resource: Resource, files: Vec<RemoteFile>) -> ResourceTree {
        ResourceTree {
            resource,
            files,
            unreadable: None,
        }
    }
}

/// A file body on its way from the server.
pub struct Download {
    pub content_length: Option<u64>,
    /// The whole file's size as this answer gives it: a 200's `Content-Length`, the total of
    /// a 206's `Content-Range`. It is the truth where the listing's `Size` (from XNAT's
    /// catalog, which can be stale) disagrees; `None` when the answer does not say.
    pub total: Option<u64>,
    /// Where the body starts in the file: the start of the range when the server honoured a
    /// `Range` request, else 0 (the whole body).
    pub start: u64,
    /// The body is the asked range, checked (see `ranged`): exactly `content_length` bytes
    /// from `start`. `false`: the whole file from byte 0, whatever the status said (Restlet 1.1,
    /// XNAT's own server, answers 206 with the whole file).
    pub partial: bool,
    pub body: BoxStream<'static, Result<Bytes, XnatError>>,
}

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
    /// Drops whatever is remembered of a resource's files listing (a file of it is gone).
    fn forget_files(&self, _resource: &ResourceRef) {}
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
        XnatError::NotFound(path) if !remembering::never_listed_offline(path) => format!(
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

/// The sessions the user named (`-E`), each with the name it was given: labels are looked up
/// in `project` when given, accession IDs work from anywhere. An unknown one is an error that
/// names it.
pub async fn named_sessions(
    api: &dyn XnatApi,
    project: Option<&str>,
    names: &[String],
) -> anyhow::Result<Vec<(String, Session)>> {
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let session = match find_session(api, project, name).await {
            Ok(s) => s,
            Err(e @ XnatError::NotFound(_)) => {
                let hint = suggest::session(api, project, name).await;
                return Err(with_hint(unknown(e), hint));
            }
            Err(e) => return Err(e.into()),
        };
        out.push((name.clone(), session));
    }
    Ok(out)
}

/// A project named by the user (`-P`), checked: an unknown one is an error that suggests the
/// project meant, if one looks like it.
pub async fn check_project(api: &dyn XnatApi, project: &str) -> anyhow::Result<Vec<Session>> {
    match api.sessions(project).await {
        Ok(sessions) => Ok(sessions),
        Err(e @ XnatError::NotFound(_)) => {
            let hint = suggest::project(api, project).await;
            Err(with_hint(unknown(e), hint))
        }
        Err(e) => Err(e.into()),
    }
}

fn with_hint(e: anyhow::Error, hint: Option<String>) -> anyhow::Error {
    match hint {
        Some(h) => anyhow::anyhow!("{e}; {h}"),
        None => e,
    }
}

/// A `NotFound` as the user reads it ("unknown project X"); other errors as they are.
pub fn unknown(e: XnatError) -> anyhow::Error {
    match e {
        XnatError::NotFound(what) => anyhow::anyhow!("unknown {what}"),
        e => e.into(),
    }
}

/// A session named by the user: a label looked up in `project` (when given), or an accession
/// ID, which works from any project.
///
/// A session shared into `project` is found there by its label in that project (XNAT looks a
/// label up among the project's own sessions, then among those shared into it:
/// `XnatExperimentdata.GetExptByProjectIdentifier`); its document gives the label and project
/// it has where it is owned, so it keeps the label it was found by.
pub async fn find_session(api: &dyn XnatApi, project: Option<&str>, name: &str) -> Result<Session> {
    let found = api.session(project, name).await;
    if project.is_some()
        && matches!(found, Err(XnatError::NotFound(_)))
        && let Ok(session) = api.session(None, name).await
    {
        return Ok(session);
    }
    found.map(|mut session| {
        if project.is_some_and(|p| p != session.project) && session.id != name {
            session.label = name.to_string();
        }
        session
    })
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

    #[test]
    fn scans_are_named_in_zips_as_xnat_names_them() {
        assert_eq!(zip_scan_folder("2", "T1w"), "2-T1w");
        assert_eq!(zip_scan_folder("3", "rs fMRI (AP)"), "3-rs_fMRI__AP_");
        assert_eq!(zip_scan_folder("4", "T1/T2*"), "4-T1_T2_");
        assert_eq!(zip_scan_folder("5", ""), "5", "no type: the ID alone");
        // Java's \W is ASCII-only, and sees UTF-16 units.
        assert_eq!(zip_scan_folder("6", "résumé"), "6-r_sum_");
        assert_eq!(zip_scan_folder("7", "a\u{1F600}"), "7-a__");
    }
}
