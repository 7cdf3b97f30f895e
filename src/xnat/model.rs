//! XNAT's data model as xnatfs sees it: projects, sessions, scans, resources, assessors and
//! reconstructions, where a resource lives (its REST paths), a session's whole tree, and a
//! file body on its way.

use super::{RemoteFile, Result, XnatError};
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
    /// [`super::walk`]). Only this resource fails; the rest of the session is listed.
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

#[cfg(test)]
mod tests {
    use super::*;

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
