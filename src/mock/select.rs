//! What XNAT selects for a URL: a session within a project (its own or shared), the rows of
//! a project's experiments listing, the scans and resources a path names, and the decoding
//! XNAT applies where it decodes. Used by the routes and by the in-memory API alike.

use super::data::{Dataset, MockProject, MockResource, MockScan, MockSession};
use super::responses::session_row_with;
use serde_json::Value;
use std::sync::Arc;

/// A session of project `p` (its own, or shared into it) by accession ID, or by its label
/// within the project: its own label, or for a shared one, its label there. XNAT:
/// `XnatExperimentdata.GetExptByProjectIdentifier` (`project`/`label`, then
/// `sharing/share/project`/`sharing/share/label`).
pub(super) fn session_in_project<'a>(
    data: &'a Dataset,
    p: &str,
    x: &str,
) -> Option<&'a Arc<MockSession>> {
    let shared = data.shared_into(p);
    data.session(x)
        .filter(|s| s.project == p || shared.iter().any(|(sh, _)| sh.id == s.id))
        .or_else(|| {
            data.projects
                .iter()
                .find(|pr| pr.id == p)
                .and_then(|pr| pr.sessions.iter().find(|s| s.label == x))
        })
        .or_else(|| {
            shared
                .iter()
                .find(|(_, label)| *label == x)
                .map(|(s, _)| *s)
        })
}

/// The rows of project `project`'s experiments listing: its own experiments, then those shared
/// into it, each under its label there. A shared row's `project` column still names the
/// project that owns the session; only `label` is the one in this project. XNAT: xnat-web
/// `org/nrg/xnat/restlet/resources/ProjSubExptList.java` (rows whose `project` or
/// `sharing/share/project` is the project; `label` replaced from `xnat_experimentData_share`
/// where the share has one).
pub(super) fn project_experiment_rows(
    data: &Dataset,
    project: &MockProject,
    xsi_type: Option<&str>,
    columns: Option<&str>,
) -> Vec<Value> {
    let mut rows: Vec<Value> = listed_experiments(&project.sessions, xsi_type)
        .into_iter()
        .map(|s| session_row_with(s, columns))
        .collect();
    for (s, label) in data.shared_into(&project.id) {
        if !listed_experiments([s], xsi_type).is_empty() {
            let mut row = session_row_with(s, columns);
            row["label"] = label.into();
            rows.push(row);
        }
    }
    rows
}

/// The scans a spec names: `ALL`, or IDs and types separated by commas.
pub(super) fn select_scans<'a>(session: &'a MockSession, spec: &str) -> Vec<&'a MockScan> {
    session
        .scans
        .iter()
        .filter(|sc| {
            spec == "ALL"
                || spec
                    .split(',')
                    .any(|want| want == sc.id || want == sc.scan_type)
        })
        .collect()
}

/// The experiments an experiments listing answers for the query's `xsiType`. The type is the
/// query's root element: by default `xnat:subjectAssessorData`, so every subject assessor is
/// listed, clinical forms and other experiments that are not imaging sessions included;
/// `xnat:imageSessionData` keeps the imaging sessions of every modality, and a session type
/// the sessions of that type. XNAT: xnat-web `org/nrg/xnat/restlet/resources/ProjSubExptList.java`
/// and `SubjAssessmentAbst.java` (`getDefaultElementName`), `QueryOrganizerResource.java`
/// (`getRootElementName`).
pub(super) fn listed_experiments<'a>(
    sessions: impl IntoIterator<Item = &'a Arc<MockSession>>,
    xsi_type: Option<&str>,
) -> Vec<&'a MockSession> {
    let root = xsi_type
        .filter(|t| !t.contains(','))
        .unwrap_or("xnat:subjectAssessorData");
    let listed = sessions.into_iter().map(|s| &**s);
    listed
        .filter(|s| match root {
            "xnat:subjectAssessorData" | "xnat:experimentData" => true,
            "xnat:imageSessionData" => s.is_image_session(),
            other => s.xsi_type == other,
        })
        .collect()
}

/// The scan types of XNAT's schema (extensions of `xnat:imageScanData`), for the `xsiType`
/// of a scans listing.
const SCAN_TYPES: &[&str] = &[
    "xnat:mrScanData",
    "xnat:petScanData",
    "xnat:ctScanData",
    "xnat:eegScanData",
    "xnat:megScanData",
    "xnat:ecgScanData",
    "xnat:emgScanData",
    "xnat:eogScanData",
    "xnat:esScanData",
    "xnat:xaScanData",
    "xnat:xa3DScanData",
    "xnat:crScanData",
    "xnat:dxScanData",
    "xnat:mgScanData",
    "xnat:nmScanData",
    "xnat:usScanData",
    "xnat:rfScanData",
    "xnat:ioScanData",
    "xnat:opScanData",
    "xnat:optScanData",
    "xnat:smScanData",
    "xnat:gmScanData",
    "xnat:hdScanData",
    "xnat:srScanData",
    "xnat:scScanData",
    "xnat:segScanData",
    "xnat:mrsScanData",
    "xnat:otherDicomScanData",
    "xnat:cfmScanData",
    "xnat:dmsScanData",
    "xnat:objScanData",
    "xnat:paScanData",
    "xnat:posScanData",
    "xnat:respScanData",
    "xnat:xcScanData",
];

/// The scans a scans listing answers for the query's `xsiType`, or `None` when XNAT fails it
/// (500). The type is the query's root element: by default `xnat:imageScanData`, the parent
/// of every scan type, so every scan of the session is listed (a PET/MR session's MR and PET
/// scans alike); a scan type lists the scans of that type only; a type XNAT does not know
/// (`xnat:petmrScanData`: there is none) fails the query. A value with a comma is ignored.
/// XNAT: xnat-web `org/nrg/xnat/restlet/resources/ScanList.java` (`getDefaultElementName`,
/// and a failed query answered with `SERVER_ERROR_INTERNAL`) and `QueryOrganizerResource.java`
/// (`getRootElementName`).
pub(super) fn listed_scans<'a>(
    session: &'a MockSession,
    xsi_type: Option<&str>,
) -> Option<Vec<&'a MockScan>> {
    let root = xsi_type
        .filter(|t| !t.contains(','))
        .unwrap_or("xnat:imageScanData");
    if root != "xnat:imageScanData" && !SCAN_TYPES.contains(&root) {
        return None;
    }
    let all = root == "xnat:imageScanData";
    Some(
        session
            .scans
            .iter()
            .filter(|sc| all || sc.xsi_type == root)
            .collect(),
    )
}

/// The resources a resource in a path names. XNAT takes it as it comes, not URL-decoded,
/// and splits it on commas; each part names the resources of that label, or of that numeric
/// ID. A label with a space (sent as `T1%20raw`) or a comma names nothing, and its files
/// listing is empty. XNAT: xnat-web `org/nrg/xnat/restlet/resources/files/XNATCatalogTemplate.java`
/// (`RESOURCE_ID` split on commas), `SecureResource.java` (`getParameter`: not decoded),
/// `XNATTemplate.java` (`loadCatalogs`: by ID or label) and `FileList.java`.
pub(super) fn find_resources<'a>(
    resources: &'a [MockResource],
    key: &str,
) -> Vec<&'a MockResource> {
    let parts: Vec<&str> = key.split(',').filter(|p| !p.is_empty()).collect();
    resources
        .iter()
        .filter(|r| {
            let id = r.id.to_string();
            parts.iter().any(|p| *p == r.label || *p == id)
        })
        .collect()
}

/// Decodes as Java's `URLDecoder` does: `%XX` escapes as UTF-8 bytes, and `+` as a space.
pub(super) fn url_decode(s: &str) -> String {
    let plus_as_space = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus_as_space)
        .decode_utf8_lossy()
        .into_owned()
}
