//! Property tests (proptest) over what the server controls: listing bodies and file paths.
//! Whatever the server sends, parsing never panics, and every accepted path stays inside the
//! folder it is joined to.

use proptest::prelude::*;
use std::path::{Component, Path};
use xnatfs::cache::Cache;
use xnatfs::names::safe_relative_path;
use xnatfs::xnat::ResourceRef;
use xnatfs::xnat::json::{
    FilesBuilder, files, files_listing, path_in_resource, read_file_rows, result_rows,
    session_document,
};

/// Strings built from the characters that matter for paths.
fn pathish() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("/".to_string()),
            Just("..".to_string()),
            Just(".".to_string()),
            Just("\0".to_string()),
            Just("files".to_string()),
            Just("resources".to_string()),
            Just("%2e".to_string()),
            "[a-z0-9 _+.-]{0,6}",
        ],
        0..12,
    )
    .prop_map(|parts| parts.concat())
}

fn stays_inside(base: &Path, p: &Path) -> bool {
    p.starts_with(base)
        && !p.strip_prefix(base).unwrap().components().any(|c| {
            matches!(
                c,
                Component::ParentDir | Component::RootDir | Component::CurDir
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn listing_parsers_never_panic(body in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = result_rows(&body, "/x");
        let _ = session_document(&body, "/x");
        let _ = files_listing(&body, "/x");
        let _ = read_file_rows(&body[..], "/x", &mut FilesBuilder::default());
    }

    /// A files listing read as it arrives (the mount's way), read whole, and read as generic
    /// rows: the same files, the same skipped rows, or the same error.
    #[test]
    fn a_listing_reads_the_same_every_way(
        rows in proptest::collection::vec(
            (pathish(), "[0-9x]{0,3}", prop_oneof![Just(r#""s""#), Just("7"), Just("null"), Just("[1]"), Just(r#"{"a":"\u00e9"}"#), Just("-2.5"), Just("true")]),
            0..6,
        ),
        cut in any::<proptest::sample::Index>(),
        whole in any::<bool>(),
    ) {
        let rows: Vec<String> = rows
            .iter()
            .map(|(name, size, odd)| format!(
                r#"{{"Name":{name:?},"URI":"/data/experiments/E1/resources/7/files/{}","Size":"{size}","digest":{odd},"x":{odd},"Size":{}}}"#,
                name.replace(['"', '\\'], ""),
                if size.is_empty() { odd.to_string() } else { format!("{size:?}") },
            ))
            .collect();
        let mut body = format!(r#"{{"title":[],"ResultSet":{{"Result":[{}]}}}}"#, rows.join(","));
        if !whole {
            // A body cut anywhere.
            body.truncate(cut.index(body.len() + 1));
        }
        let generic = result_rows(body.as_bytes(), "/f").map(|r| files(&r));
        let read_whole = files_listing(body.as_bytes(), "/f");
        let mut streamed = FilesBuilder::default();
        let streamed = read_file_rows(body.as_bytes(), "/f", &mut streamed).map(|()| streamed.finish());
        match (&generic, &read_whole, &streamed) {
            (Ok(g), Ok(w), Ok(s)) => {
                prop_assert_eq!(g, w);
                prop_assert_eq!(g, s);
            }
            (Err(g), Err(w), Err(s)) => {
                // A body cut short is malformed JSON every way; where serde notices first
                // (a cut number: "invalid number" whole, "EOF" as it streams) may differ.
                let said = |e: &dyn std::fmt::Display| {
                    let e = e.to_string();
                    match e.find("malformed JSON") {
                        Some(i) if !whole => e[..i + "malformed JSON".len()].to_string(),
                        _ => e,
                    }
                };
                prop_assert_eq!(said(g), said(w));
                prop_assert_eq!(said(g), said(s));
            }
            _ => prop_assert!(false, "{body}: {generic:?} {read_whole:?} {streamed:?}"),
        }
    }

    #[test]
    fn file_rows_only_yield_safe_paths(
        rows in proptest::collection::vec((pathish(), pathish(), "[0-9x]{0,4}", "[0-9a-f]{0,32}"), 0..8)
    ) {
        let rows: Vec<serde_json::Value> = rows
            .iter()
            .map(|(name, uri_tail, size, digest)| serde_json::json!({
                "Name": name,
                "URI": format!("/data/experiments/E1/resources/7/files/{uri_tail}"),
                "Size": size,
                "digest": digest,
            }))
            .collect();
        let body = serde_json::json!({"ResultSet": {"Result": rows}}).to_string();
        let parsed = result_rows(body.as_bytes(), "/f").unwrap();
        let (ok, _) = files(&parsed);
        let cache_dir = Path::new("/cache/area");
        let res = ResourceRef { session_id: "E1".into(), scan: Some("1".into()), assessor: None, label: "DICOM".into(), id: "7".into() };
        for f in ok {
            let parts = safe_relative_path(&f.path).expect("accepted paths are safe");
            prop_assert!(!parts.is_empty());
            let p = Cache::layout_path(cache_dir, &res, &f.path).unwrap();
            prop_assert!(stays_inside(cache_dir, &p), "{} escapes", p.display());
        }
    }

    #[test]
    fn layout_paths_stay_inside(session in pathish(), scan in pathish(), label in pathish(), rel in pathish()) {
        let base = Path::new("/base");
        let res = ResourceRef { session_id: session, scan: Some(scan), assessor: None, label, id: "7".into() };
        if let Some(p) = Cache::layout_path(base, &res, &rel) {
            prop_assert!(stays_inside(base, &p), "{} escapes", p.display());
        }
    }

    #[test]
    fn path_in_resource_never_panics(uri in pathish(), name in pathish()) {
        let _ = path_in_resource(&uri, &name);
    }
}
