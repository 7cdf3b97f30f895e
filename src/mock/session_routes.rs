//! What lies under a session's URL: its scans, resources, assessors and reconstructions, as
//! listings, ZIPs or file bodies, with XNAT's quirks (unreadable catalogs, paths as sent).

use super::data::{self, MockResource, MockScan, MockSession};
use super::responses::{
    self, file_body, file_rows, html, listing, not_found, resource_listing, resource_rows, scan_row,
};
use super::select::{find_resources, listed_scans, select_scans, url_decode};
use super::state::MockState;
use super::zip_download::{Compression, zip_response};
use crate::xnat::Derived;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::Ordering;

pub(super) fn session_routes(
    state: &MockState,
    session: &MockSession,
    tail: &[&str],
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Response {
    let zip = match query.get("format").map(String::as_str) {
        Some("zip") => match Compression::of_query(query.get("compression").map(String::as_str)) {
            Ok(c) => Some(c),
            Err(refused) => return *refused,
        },
        _ => None,
    };
    if let [folder, rest @ ..] = tail
        && let Some(kind) = derived_folder(folder)
    {
        return derived_routes(state, session, kind, rest, zip, headers);
    }
    match tail {
        // An experiment that is not an imaging session has no scans listing: XNAT finds the
        // session as an image session or answers 404 (xnat-web `ScanList.java`).
        ["scans"] if !session.is_image_session() => not_found("experiment"),
        ["scans"] => match listed_scans(session, query.get("xsiType").map(String::as_str)) {
            Some(scans) => listing(scans.iter().map(|sc| scan_row(session, sc)).collect(), true),
            None => html(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
        },
        ["scans", spec, "resources"] => match select_scans(session, &url_decode(spec)).first() {
            Some(scan) => listing(
                resource_listing(state, resource_rows(&scan.resources, session, Some(scan))),
                true,
            ),
            None => not_found("scan"),
        },
        ["scans", spec, "files"] => {
            let entries: Vec<_> = select_scans(session, &url_decode(spec))
                .into_iter()
                .flat_map(|sc| sc.resources.iter().map(move |r| (Some(sc), r)))
                .collect();
            if entries.is_empty() {
                return not_found("scan");
            }
            if state
                .controls
                .catalog_unreadable(entries.iter().map(|(_, r)| *r))
            {
                return StatusCode::NOT_FOUND.into_response();
            }
            match zip {
                Some(c) => zip_response(state, session, &entries, c),
                None => file_rows(&entries, session),
            }
        }
        // The scan is decoded (xnat-web `XNATTemplate.java`: `getUrlEncodedParameter`).
        ["scans", spec, "resources", res, "files", path @ ..] => {
            let Some(scan) = select_scans(session, &url_decode(spec)).into_iter().next() else {
                return not_found("scan");
            };
            let found = find_resources(&scan.resources, res);
            let entries: Vec<_> = found.into_iter().map(|r| (Some(scan), r)).collect();
            files_or_body(state, session, &entries, path, zip, headers)
        }
        ["resources"] => {
            let rows = resource_rows(&session.resources, session, None);
            listing(resource_listing(state, rows), true)
        }
        // A session's files listing lists its own resources' files; `all=true` adds its
        // scans', reconstructions' and assessors', each row's
        // URI naming its scan and numeric resource ID. XNAT: xnat-web
        // `org/nrg/xnat/restlet/resources/files/XNATTemplate.java` (`loadCatalogs`: `all`
        // unions the session's, scans', reconstructions' and assessors' resources, each with
        // its `resource_path`), `FileList.java` (`handleMultipleCatalogs`: URI = that path +
        // `/files/` + the entry's path) and `org/nrg/xdat/om/base/BaseXnatAbstractresource.java`
        // (`setBaseURI`: `/data` in front).
        ["files"] => {
            let all = query.get("all").is_some_and(|v| v == "true")
                && !state.controls.files_all_ignored.load(Ordering::SeqCst);
            let scans = session.scans.iter().filter(|_| all);
            let entries: Vec<_> = session
                .resources
                .iter()
                .map(|r| (None, r))
                .chain(scans.flat_map(|sc| sc.resources.iter().map(move |r| (Some(sc), r))))
                .collect();
            let assessors = session.assessors.iter().filter(|_| all);
            let included =
                (entries.iter().map(|(_, r)| *r)).chain(assessors.flat_map(|a| a.resources.iter()));
            if state.controls.catalog_unreadable(included) {
                return StatusCode::NOT_FOUND.into_response();
            }
            match zip {
                Some(c) => zip_response(state, session, &entries, c),
                None if all => {
                    let mut rows: Vec<Value> = entries
                        .iter()
                        .flat_map(|(sc, r)| r.files.iter().map(move |f| (sc, r, f)))
                        .map(|(sc, r, f)| responses::file_row(session, *sc, r, f))
                        .collect();
                    for a in &session.assessors {
                        for r in &a.resources {
                            for f in &r.files {
                                rows.push(responses::assessor_file_row(session, a, r, f));
                            }
                        }
                    }
                    responses::rows_listing(rows)
                }
                None => file_rows(&entries, session),
            }
        }
        ["resources", res, "files", path @ ..] => {
            let found = find_resources(&session.resources, res);
            let entries: Vec<_> = found.into_iter().map(|r| (None, r)).collect();
            files_or_body(state, session, &entries, path, zip, headers)
        }
        _ => not_found("resource"),
    }
}

/// A session's assessors or reconstructions (`kind`), and what lies under each one's `out`
/// resources; an assessor is named by its ID or its label, a reconstruction (no label) by its
/// ID. XNAT: xnat-web `org/nrg/xnat/restlet/resources/ProjSubExptAsstList.java` and
/// `ReconList.java` (the listings), `files/XNATTemplate.java`
/// (`assessors/{A}/out/resources/...`, `reconstructions/{R}/out/resources/...`).
fn derived_routes(
    state: &MockState,
    session: &MockSession,
    kind: Derived,
    tail: &[&str],
    zip: Option<Compression>,
    headers: &HeaderMap,
) -> Response {
    match tail {
        [] => listing(responses::derived_rows(session, kind), true),
        [a, "out", "resources", more @ ..] => {
            let a = url_decode(a);
            let by_label = || match kind {
                Derived::Assessor => session
                    .assessors
                    .iter()
                    .find(|x| x.kind == kind && x.label == a),
                // A reconstruction has no label.
                Derived::Reconstruction => None,
            };
            match session.derived(kind, &a).or_else(by_label) {
                Some(assessor) => assessor_routes(state, session, assessor, more, zip, headers),
                None => not_found(kind.noun()),
            }
        }
        _ => not_found("resource"),
    }
}

/// The kind of derived data a session subfolder of XNAT's holds (`assessors`,
/// `reconstructions`).
fn derived_folder(folder: &str) -> Option<Derived> {
    Derived::ALL.into_iter().find(|k| k.folder() == folder)
}

/// What lies under an assessor's `out/resources`: its resources listing, a resource's files
/// listing (each row's URI naming the assessor), its ZIP, or a file body.
fn assessor_routes(
    state: &MockState,
    session: &MockSession,
    a: &data::MockAssessor,
    tail: &[&str],
    zip: Option<Compression>,
    headers: &HeaderMap,
) -> Response {
    match tail {
        [] => listing(
            resource_listing(state, resource_rows(&a.resources, session, None)),
            true,
        ),
        [res, "files", path @ ..] => {
            let found = find_resources(&a.resources, res);
            if state.controls.catalog_unreadable(found.iter().copied()) {
                return StatusCode::NOT_FOUND.into_response();
            }
            if path.is_empty() && zip.is_none() {
                let rows = found
                    .iter()
                    .flat_map(|r| r.files.iter().map(move |f| (r, f)))
                    .map(|(r, f)| responses::assessor_file_row(session, a, r, f))
                    .collect();
                return responses::rows_listing(rows);
            }
            let entries: Vec<_> = found.into_iter().map(|r| (None, r)).collect();
            files_or_body(state, session, &entries, path, zip, headers)
        }
        _ => not_found("resource"),
    }
}

/// The files listing, the ZIP or a file body of the resources a path names. None named: an
/// empty listing (XNAT finds no catalog, and lists the files of none), a 404 for a ZIP or a
/// file.
fn files_or_body(
    state: &MockState,
    session: &MockSession,
    entries: &[(Option<&MockScan>, &MockResource)],
    path: &[&str],
    zip: Option<Compression>,
    headers: &HeaderMap,
) -> Response {
    if state
        .controls
        .catalog_unreadable(entries.iter().map(|(_, r)| *r))
    {
        return StatusCode::NOT_FOUND.into_response();
    }
    if path.is_empty() {
        return match zip {
            Some(c) => zip_response(state, session, entries, c),
            None => file_rows(entries, session),
        };
    }
    // A file is looked up by its path as sent, then by it URL-decoded (`%XX` as UTF-8, `+` as
    // a space). XNAT: xnat-web `org/nrg/xnat/utils/CatalogUtils.java` (`getEntryByURI`), from
    // `FileList.java`.
    let raw = path.join("/");
    let files = || entries.iter().flat_map(|(_, r)| &r.files);
    let found = files()
        .find(|f| f.path == raw)
        .or_else(|| files().find(|f| f.path == url_decode(&raw)));
    match found {
        Some(f) if !f.body_gone => file_body(state, f.clone(), headers),
        // A missing file: 404 with an empty body.
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}
