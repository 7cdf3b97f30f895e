//! A session's whole tree from two answers: the session document, whose `children` list its
//! scans with their resources and its own resources (empty ones included), and the session's
//! files listing with `all=true`, which lists the files of all of them at once, each row's
//! `URI` naming its scan and the resource's numeric ID.
//!
//! XNAT: xnat-web `org/nrg/xnat/restlet/resources/files/XNATTemplate.java` (`loadCatalogs`:
//! with `all`, the session's, its scans', reconstructions' and assessors' resources, each with
//! a `resource_path` of `/experiments/{session}/scans/{scan}/resources/{id}` or
//! `/experiments/{session}/resources/{id}`), `FileList.java` (`handleMultipleCatalogs`: a
//! row's `URI` is that path, `/files/`, and the entry's path; `cat_ID` the resource's ID) and
//! `org/nrg/xdat/om/base/BaseXnatAbstractresource.java` (`setBaseURI`: `/data` in front). The
//! document's fields (`scans/scan`, a scan's `file`, `resources/resource`) as a mature client
//! reads them: TIGRLab/datman `datman/xnat.py`.
//!
//! Anything that does not add up (a row of a resource the document does not have, a row whose
//! URI names no scan or resource of the session, a resource the document says holds files
//! and the listing lists none of) is an error, and the caller lists the session folder by
//! folder instead: never a wrong tree.

use super::json::{self, field, number_field};
use super::{Derived, Resource, ResourceTree, Scan, ScanTree, SessionTree, XnatError};
use serde_json::Value;
use std::collections::HashMap;

/// The scans and resources of a session, without their files.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Shape {
    pub scans: Vec<(Scan, Vec<Resource>)>,
    pub resources: Vec<Resource>,
    /// The kinds of derived data the document lists (`assessors/assessor`,
    /// `reconstructions/reconstructedImage`), whose resources it does not list.
    pub derived: Vec<Derived>,
}

/// Adds `kind` to `kinds` if it is not there.
fn note(kinds: &mut Vec<Derived>, kind: Derived) {
    if !kinds.contains(&kind) {
        kinds.push(kind);
        kinds.sort();
    }
}

fn bad(path: &str, msg: impl Into<String>) -> XnatError {
    XnatError::BadResponse {
        path: path.to_string(),
        msg: msg.into(),
    }
}

/// The items of the `children` entry `name` of a document item (none when it has none).
fn children<'a>(item: &'a Value, name: &str) -> impl Iterator<Item = &'a Value> {
    item.get("children")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(move |c| c.get("field").and_then(Value::as_str) == Some(name))
        .flat_map(|c| {
            c.get("items")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
}

fn data_fields<'a>(item: &'a Value, path: &str) -> Result<&'a json::Row, XnatError> {
    item.get("data_fields")
        .and_then(Value::as_object)
        .ok_or_else(|| bad(path, "an item without data_fields in the session document"))
}

fn resource(item: &Value, path: &str) -> Result<Resource, XnatError> {
    let f = data_fields(item, path)?;
    let r = Resource {
        id: field(f, "xnat_abstractresource_id"),
        label: field(f, "label"),
        format: field(f, "format"),
        content: field(f, "content"),
        file_count: number_field(f, "file_count"),
        file_size: number_field(f, "file_size"),
    };
    if r.id.is_empty() {
        return Err(bad(path, format!("resource {:?} without an ID", r.label)));
    }
    Ok(r)
}

/// The scans and resources the session document (`/data/experiments/{ID}?format=json`) lists.
pub fn shape(body: &[u8], path: &str) -> Result<Shape, XnatError> {
    let value: Value = serde_json::from_slice(body).map_err(|_| {
        bad(
            path,
            if json::looks_like_html(body) {
                "an HTML page where JSON was expected"
            } else {
                "malformed JSON"
            },
        )
    })?;
    let session = value
        .get("items")
        .and_then(|items| items.get(0))
        .ok_or_else(|| bad(path, "no items in the session document"))?;
    data_fields(session, path)?;
    let mut shape = Shape::default();
    for item in children(session, "scans/scan") {
        let f = data_fields(item, path)?;
        let scan = Scan {
            id: field(f, "ID"),
            scan_type: field(f, "type"),
            series_description: field(f, "series_description"),
            quality: field(f, "quality"),
            xsi_type: item
                .get("meta")
                .and_then(|m| m.get("xsi:type"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        };
        if scan.id.is_empty() {
            return Err(bad(path, "a scan without an ID in the session document"));
        }
        let resources = children(item, "file")
            .map(|r| resource(r, path))
            .collect::<Result<_, _>>()?;
        shape.scans.push((scan, resources));
    }
    shape.resources = children(session, "resources/resource")
        .map(|r| resource(r, path))
        .collect::<Result<_, _>>()?;
    if children(session, "assessors/assessor").next().is_some() {
        note(&mut shape.derived, Derived::Assessor);
    }
    // xnat:imageSessionData's `reconstructions/reconstructedImage` (xnat.xsd).
    if children(session, "reconstructions/reconstructedImage")
        .next()
        .is_some()
    {
        note(&mut shape.derived, Derived::Reconstruction);
    }
    Ok(shape)
}

/// Where a files listing row belongs, from its URI.
#[derive(Debug, PartialEq, Eq)]
enum Place {
    /// A resource of the session (`scan` given: of that scan), by numeric ID.
    Resource { scan: Option<String>, id: String },
    /// A resource of an assessor or a reconstruction: listed on its own (see
    /// `HttpXnat::whole_tree`).
    Derived(Derived),
}

/// The place a row's URI names, `None` when it names nothing of the session whose
/// `/experiments/{ID}/` is `marker`.
fn place(uri: &str, marker: &str) -> Option<Place> {
    let rest = &uri[uri.find(marker)? + marker.len()..];
    let mut segs = rest.split('/');
    let first = segs.next()?;
    let (scan, kind) = match first {
        "scans" => (Some(segs.next()?.to_string()), segs.next()?),
        "resources" => (None, first),
        "assessors" => return Some(Place::Derived(Derived::Assessor)),
        "reconstructions" => return Some(Place::Derived(Derived::Reconstruction)),
        _ => return None,
    };
    if kind != "resources" {
        return None;
    }
    let id = segs.next()?.to_string();
    (segs.next()? == "files" && !id.is_empty()).then_some(Place::Resource { scan, id })
}

/// The rows of a session's `all=true` files listing, sorted into their resources as the
/// listing is read (before the session document is known: the two are asked at once).
pub struct SessionFiles {
    /// `/experiments/{session}/`, which every row's URI holds.
    marker: String,
    /// The listing's path, for messages.
    path: String,
    /// Each resource's files, by scan and numeric ID.
    resources: HashMap<(Option<String>, String), json::FilesBuilder>,
    /// The kinds of derived data the listing lists files of.
    derived: Vec<Derived>,
}

impl SessionFiles {
    /// The files of session `session_id`'s listing at `path`.
    pub fn new(session_id: &str, path: &str) -> SessionFiles {
        SessionFiles {
            marker: format!("/experiments/{session_id}/"),
            path: path.to_string(),
            resources: HashMap::new(),
            derived: Vec::new(),
        }
    }
}

impl json::FileRowSink for SessionFiles {
    fn row(&mut self, row: json::FileRow<'_>) -> Result<(), XnatError> {
        match place(&row.uri, &self.marker) {
            Some(Place::Resource { scan, id }) => {
                if !row.cat_id.is_empty() && row.cat_id != id {
                    let msg = format!("{}: cat_ID {}", row.uri, row.cat_id);
                    return Err(bad(&self.path, msg));
                }
                self.resources.entry((scan, id)).or_default().push(row);
            }
            Some(Place::Derived(kind)) => note(&mut self.derived, kind),
            None => {
                let msg = format!("a row of nothing in the session: {}", row.uri);
                return Err(bad(&self.path, msg));
            }
        }
        Ok(())
    }
}

/// The tree: `shape` with each resource's files from the session's `all=true` files listing.
/// Unsafe rows are left out of their resource (and reported), as in a resource's own
/// listing. With it, the kinds of derived data the session has (the document lists some, or
/// the listing lists files of some), whose resources the tree then still lacks.
pub fn with_files(
    shape: Shape,
    files: SessionFiles,
) -> Result<(SessionTree, Vec<Derived>), XnatError> {
    let SessionFiles {
        mut resources,
        mut derived,
        path,
        ..
    } = files;
    let path = path.as_str();
    for kind in shape.derived {
        note(&mut derived, kind);
    }
    let mut files_of = |scan: Option<&str>, r: Resource| -> Result<ResourceTree, XnatError> {
        let (files, skipped) = resources
            .remove(&(scan.map(str::to_string), r.id.clone()))
            .unwrap_or_default()
            .finish();
        if files.is_empty() && skipped.is_empty() && r.file_count.is_some_and(|n| n > 0) {
            return Err(bad(path, format!("no files listed of resource {}", r.id)));
        }
        for s in skipped {
            tracing::warn!("skipping {:?} in {path}: {}", s.name, s.reason);
        }
        Ok(ResourceTree::listed(r, files))
    };
    let mut tree = SessionTree::default();
    for (scan, resources) in shape.scans {
        let resources = resources
            .into_iter()
            .map(|r| files_of(Some(&scan.id), r))
            .collect::<Result<_, _>>()?;
        tree.scans.push(ScanTree { scan, resources });
    }
    tree.resources = shape
        .resources
        .into_iter()
        .map(|r| files_of(None, r))
        .collect::<Result<_, _>>()?;
    if let Some(((scan, id), _)) = resources.into_iter().next() {
        let of = scan.map_or("the session".into(), |s| format!("scan {s}"));
        return Err(bad(
            path,
            format!("files of resource {id} of {of}, which the session document does not list"),
        ));
    }
    Ok((tree, derived))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &[u8] = br#"{"items":[{"meta":{"xsi:type":"xnat:mrSessionData"},
        "data_fields":{"ID":"E1","label":"S1"},
        "children":[
          {"field":"scans/scan","items":[
            {"meta":{"xsi:type":"xnat:mrScanData"},"data_fields":{"ID":"1","type":"T1","quality":"usable"},
             "children":[{"field":"file","items":[
               {"data_fields":{"xnat_abstractresource_id":11,"label":"DICOM","format":"DICOM","file_count":2,"file_size":30}},
               {"data_fields":{"xnat_abstractresource_id":12,"label":"EMPTY","file_count":0}}]}]},
            {"meta":{"xsi:type":"xnat:petScanData"},"data_fields":{"ID":"2","type":"PET"}}]},
          {"field":"resources/resource","items":[
            {"data_fields":{"xnat_abstractresource_id":"13","label":"NOTES"}}]}]}]}"#;

    fn listing(rows: &[(&str, &str)]) -> bytes::Bytes {
        let rows: Vec<Value> = rows
            .iter()
            .map(|(uri, cat)| {
                let name = uri.rsplit('/').next().unwrap();
                serde_json::json!({"Name": name, "Size": "10", "URI": uri, "cat_ID": cat, "digest": ""})
            })
            .collect();
        serde_json::json!({"ResultSet": {"Result": rows}})
            .to_string()
            .into()
    }

    fn with_body(body: bytes::Bytes) -> Result<(SessionTree, Vec<Derived>), XnatError> {
        let mut files = SessionFiles::new("E1", "/f");
        json::each_file_row(&body, "/f", &mut files)?;
        with_files(shape(DOC, "/d").unwrap(), files)
    }

    #[test]
    fn the_document_gives_scans_and_resources_empty_ones_included() {
        let s = shape(DOC, "/d").unwrap();
        assert_eq!(s.scans.len(), 2);
        assert_eq!(s.scans[0].0.xsi_type, "xnat:mrScanData");
        assert_eq!(s.scans[0].0.quality, "usable");
        let ids: Vec<_> = s.scans[0].1.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["11", "12"]);
        assert_eq!(s.scans[0].1[0].file_count, Some(2));
        assert!(s.scans[1].1.is_empty());
        assert_eq!(s.resources[0].label, "NOTES");
        assert!(shape(b"<html>login</html>", "/d").is_err());
        assert!(shape(br#"{"items":[]}"#, "/d").is_err());
    }

    #[test]
    fn rows_go_to_their_resources_and_derived_data_is_left_out() {
        let body = listing(&[
            ("/data/experiments/E1/resources/13/files/a b/n.txt", "13"),
            (
                "/data/experiments/E1/scans/1/resources/11/files/x/1.dcm",
                "11",
            ),
            (
                "/data/experiments/E1/scans/1/resources/11/files/../../evil",
                "11",
            ),
            (
                "/data/experiments/E1/scans/1/resources/11/files/2.dcm",
                "11",
            ),
            (
                "/data/experiments/E1/assessors/A1/out/resources/99/files/fs.txt",
                "99",
            ),
            (
                "/data/experiments/E1/reconstructions/R1/out/resources/98/files/r.nii",
                "98",
            ),
        ]);
        let (tree, derived) = with_body(body).unwrap();
        assert_eq!(
            derived,
            [Derived::Assessor, Derived::Reconstruction],
            "the assessor's and the reconstruction's rows show the session has both"
        );
        let paths: Vec<_> = tree.scans[0].resources[0]
            .files
            .iter()
            .map(|f| f.path.as_str())
            .collect();
        assert_eq!(paths, ["x/1.dcm", "2.dcm"]);
        assert!(tree.scans[0].resources[1].files.is_empty());
        assert_eq!(tree.resources[0].files[0].path, "a b/n.txt");
    }

    #[test]
    fn what_does_not_add_up_is_an_error() {
        let ok = "/data/experiments/E1/scans/1/resources/11/files/1.dcm";
        let tree = |rows: &[(&str, &str)]| with_body(listing(rows));
        // A resource the document does not list.
        assert!(
            tree(&[
                (ok, "11"),
                ("/data/experiments/E1/resources/77/files/x", "77")
            ])
            .is_err()
        );
        // A resource of another scan than the document says.
        assert!(
            tree(&[
                (ok, "11"),
                ("/data/experiments/E1/scans/2/resources/11/files/y", "11")
            ])
            .is_err()
        );
        // A URI that names nothing of the session, or a cat_ID that disagrees.
        assert!(
            tree(&[
                (ok, "11"),
                ("/data/experiments/E2/scans/1/resources/11/files/z", "11")
            ])
            .is_err()
        );
        assert!(
            tree(&[(
                "/data/experiments/E1/scans/1/resources/11/files/1.dcm",
                "12"
            )])
            .is_err()
        );
        // A resource that holds files by the document, and none listed.
        assert!(tree(&[]).is_err());
        assert!(tree(&[(ok, "11")]).unwrap().1.is_empty(), "no assessors");
    }
}
