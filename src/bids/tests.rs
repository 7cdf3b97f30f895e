//! Unit tests of where sessions' files go in the view and what is left out: clashing files,
//! scans XNAT would not list.

use super::ReadFile;
use super::sources::{Placement, SessionResource, Source, place};
use super::view::{self, Entry, ProjectInfo, View};
use crate::xnat::{RemoteFile, Resource, ResourceRef, Scan, Session, file_list};
use std::sync::Arc;

fn session(id: &str, label: &str, subject: &str) -> Session {
    Session {
        id: id.into(),
        label: label.into(),
        project: "P".into(),
        xsi_type: "xnat:mrSessionData".into(),
        date: String::new(),
        subject_label: subject.into(),
    }
}

/// A resource `label` of scan `scan` (or of the session) of `session_id`, holding `files`
/// (`None`: XNAT would not list them).
fn resource(
    session_id: &str,
    scan: Option<&str>,
    label: &str,
    files: Option<&[&str]>,
) -> SessionResource {
    let r = Resource {
        id: format!("{session_id}-{scan:?}-{label}"),
        label: label.into(),
        format: String::new(),
        content: String::new(),
        file_count: None,
        file_size: None,
    };
    let res = Arc::new(ResourceRef::of(session_id, scan, &r));
    let files = files.map(|names| {
        let uri = |n: &str| {
            format!(
                "/data/experiments/{session_id}/{}/files/{n}",
                res.label_path()
            )
        };
        file_list(
            names
                .iter()
                .map(|n| RemoteFile::new(n.to_string(), 10, None, &uri(n)))
                .collect(),
        )
    });
    let scan = scan.map(|id| {
        Arc::new(Scan {
            id: id.into(),
            scan_type: String::new(),
            series_description: String::new(),
            quality: "usable".into(),
            xsi_type: String::new(),
        })
    });
    SessionResource { res, scan, files }
}

/// Reads every `*_scans.tsv` as `text`.
struct Table(&'static str);

#[async_trait::async_trait]
impl ReadFile for Table {
    async fn read_whole(&self, _: &ResourceRef, _: &RemoteFile) -> Result<Vec<u8>, String> {
        Ok(self.0.as_bytes().to_vec())
    }
}

fn build(placed: &[(Session, Placement)]) -> View {
    let project = ProjectInfo {
        id: "P".into(),
        name: String::new(),
        url: "http://x/data/projects/P".into(),
    };
    view::build(&project, placed)
}

fn paths(view: &View) -> Vec<String> {
    view.files()
        .filter(|(_, e)| matches!(e, Entry::Remote(..)))
        .map(|(p, _)| p)
        .collect()
}

/// The text of the file xnatfs writes at `path` of the view.
fn made(view: &View, path: &str) -> String {
    view.files()
        .find_map(|(p, e)| match e {
            Entry::Made(bytes) if p == path => Some(String::from_utf8(bytes.to_vec()).unwrap()),
            _ => None,
        })
        .unwrap()
}

fn unmapped(view: &View) -> String {
    made(view, "code/xnatfs/unmapped.tsv")
}

/// Session E1's scan 2 (a BIDS-named T1w image) and its own `BIDS` resource with a table.
fn t1_and_its_table() -> Vec<SessionResource> {
    let t1 = ["sub-S1_ses-MR1_T1w.nii.gz"];
    vec![
        resource("E1", Some("2"), "NIFTI", Some(&t1)),
        resource("E1", None, "BIDS", Some(&["sub-S1_ses-MR1_scans.tsv"])),
    ]
}

#[tokio::test]
async fn two_sessions_placing_a_file_at_one_path_are_both_left_out_whatever_their_order() {
    // Two whole trees of one subject without a ses- level, one file in common.
    let tree = |id: &str, names: &[&str]| {
        let s = session(id, &format!("{id}_MR"), "S5");
        let r = resource(id, None, "BIDS", Some(names));
        (s, vec![r])
    };
    let (a, a_res) = tree(
        "E1",
        &[
            "sub-S5/anat/sub-S5_T1w.nii.gz",
            "sub-S5/anat/sub-S5_T1w.json",
        ],
    );
    let (b, b_res) = tree("E2", &["sub-S5/anat/sub-S5_T1w.nii.gz"]);
    let (c, c_res) = tree("E3", &["sub-S6/anat/sub-S6_T1w.nii.gz"]);
    let mut placed = Vec::new();
    for (s, r) in [(&a, &a_res), (&b, &b_res), (&c, &c_res)] {
        let p = place(s, r, None, &Table("")).await;
        assert!(matches!(p, Placement::Placed(Source::Tree, ..)), "{p:?}");
        placed.push((s.clone(), p));
    }
    for order in [placed.clone(), placed.iter().rev().cloned().collect()] {
        let view = build(&order);
        assert_eq!(paths(&view), ["sub-S6/anat/sub-S6_T1w.nii.gz"]);
        assert_eq!((view.shown, view.unmapped), (1, 2));
        let table = unmapped(&view);
        for id in ["E1", "E2"] {
            assert!(
                table.contains(&format!(
                    "{id}\t{id}_MR\tS5\tsub-S5/anat/sub-S5_T1w.nii.gz is a file of more than one XNAT session (E1, E2)"
                )),
                "{table}"
            );
        }
    }
}

#[tokio::test]
async fn a_session_with_no_usable_path_is_said_not_shown() {
    let s = session("E1", "E1_MR", "S1");
    let placed = Placement::Placed(
        Source::Tree,
        vec![super::sources::Placed {
            path: "sub-S1/../x.nii.gz".into(),
            res: resource("E1", None, "BIDS", Some(&[])).res,
            file: Arc::new(RemoteFile::new("x".into(), 1, None, "/data/x")),
        }],
        Vec::new(),
    );
    let view = build(&[(s, placed)]);
    assert_eq!((view.shown, view.unmapped), (0, 1));
    assert!(paths(&view).is_empty());
    assert!(unmapped(&view).contains("E1\tE1_MR\tS1\tnone of its files has a usable path"));
}

#[tokio::test]
async fn a_scan_xnat_will_not_list_is_left_out_whole_and_its_table_with_it() {
    const TSV: &str = "filename\txnat_session_id\txnat_scan_id\n\
        anat/sub-S1_ses-MR1_T1w.nii.gz\tE1\t2\n\
        func/sub-S1_ses-MR1_task-rest_bold.nii.gz\tE1\t3\n";
    let s = session("E1", "S1_MR1", "S1");
    let resources = |nifti_3: Option<&'static [&'static str]>| {
        vec![
            resource(
                "E1",
                Some("2"),
                "NIFTI",
                Some(&["sub-S1_ses-MR1_T1w.nii.gz"]),
            ),
            resource("E1", Some("2"), "BIDS", Some(&["sub-S1_ses-MR1_T1w.json"])),
            resource("E1", Some("3"), "NIFTI", nifti_3),
            resource(
                "E1",
                Some("3"),
                "BIDS",
                Some(&["sub-S1_ses-MR1_task-rest_bold.json"]),
            ),
            resource("E1", None, "BIDS", Some(&["sub-S1_ses-MR1_scans.tsv"])),
        ]
    };
    // Every scan listed: both scans and the table.
    let whole = place(
        &s,
        &resources(Some(&["sub-S1_ses-MR1_task-rest_bold.nii.gz"])),
        None,
        &Table(TSV),
    )
    .await;
    let view = build(&[(s.clone(), whole)]);
    assert_eq!(paths(&view).len(), 5, "{:?}", paths(&view));
    assert!(!unmapped(&view).contains("E1"));
    // Scan 3's NIFTI unreadable: its sidecar is not shown without it, nor the table naming
    // it; scan 2 is, and the row says what is missing.
    let part = place(&s, &resources(None), None, &Table(TSV)).await;
    let Placement::Placed(Source::ScansTsv, _, left_out) = &part else {
        panic!("{part:?}")
    };
    assert_eq!(left_out.len(), 2, "{left_out:?}");
    let view = build(&[(s, part)]);
    assert_eq!(
        paths(&view),
        [
            "sub-S1/ses-MR1/anat/sub-S1_ses-MR1_T1w.json",
            "sub-S1/ses-MR1/anat/sub-S1_ses-MR1_T1w.nii.gz"
        ]
    );
    assert_eq!((view.shown, view.unmapped), (1, 0));
    let table = unmapped(&view);
    assert!(
        table.contains("E1\tS1_MR1\tS1\tshown without scan 3 (XNAT would not list the files of ")
            && table.contains("/scans/3/resources/NIFTI)"),
        "{table}"
    );
    assert!(
        table.contains("shown without sub-S1_ses-MR1_scans.tsv (it names sub-S1/ses-MR1/func/sub-S1_ses-MR1_task-rest_bold.nii.gz, which is not there)"),
        "{table}"
    );
    // Placed by file names (no table): the same scan left out.
    let mut no_table = resources(None);
    no_table.pop();
    let s = session("E1", "S1_MR1", "S1");
    let Placement::Placed(Source::FileNames, files, left_out) =
        place(&s, &no_table, None, &Table("")).await
    else {
        panic!("not placed by names")
    };
    assert_eq!(files.len(), 2);
    assert_eq!(left_out.len(), 1);
}

#[tokio::test]
async fn a_scans_table_saved_with_a_byte_order_mark_still_places_its_scans() {
    let s = session("E1", "S1_MR1", "S1");
    let resources = t1_and_its_table();
    // By the table (source 2), not by the image's own name (source 3): the header is found.
    const TSV: &str = "\u{feff}filename\txnat_scan_id\nanat/sub-S1_ses-MR1_T1w.nii.gz\t2\n";
    let placed = place(&s, &resources, None, &Table(TSV)).await;
    assert!(
        matches!(placed, Placement::Placed(Source::ScansTsv, ..)),
        "{placed:?}"
    );
}

#[tokio::test]
async fn a_whole_trees_stray_files_are_shown_and_ignored_by_bids_tools() {
    let s = session("E1", "E1_MR", "A3");
    let names = [
        "sub-A3/anat/sub-A3_T1w.nii.gz",
        "sub-A3/junk.txt",
        "sub-A3/anat/!odd[1]*.txt",
    ];
    let r = vec![resource("E1", None, "BIDS", Some(&names))];
    let placed = place(&s, &r, None, &Table("")).await;
    let view = build(&[(s, placed)]);
    assert_eq!(paths(&view).len(), 3);
    assert_eq!(
        made(&view, ".bidsignore"),
        "code/\nsub-A3/anat/!odd\\[1\\]\\*.txt\nsub-A3/junk.txt\n"
    );
}

#[tokio::test]
async fn a_scans_table_naming_a_file_the_view_cannot_place_is_not_shown() {
    let s = session("E1", "S1_MR1", "S1");
    let resources = t1_and_its_table();
    // Its second row names a file with no datatype folder: the validator would find no file.
    const TSV: &str = "filename\txnat_scan_id\nanat/sub-S1_ses-MR1_T1w.nii.gz\t2\nnotes.txt\t3\n";
    let placed = place(&s, &resources, None, &Table(TSV)).await;
    let Placement::Placed(Source::ScansTsv, files, left_out) = &placed else {
        panic!("{placed:?}")
    };
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(
        left_out,
        &["sub-S1_ses-MR1_scans.tsv (it names notes.txt, which is not there)"]
    );
}

#[tokio::test]
async fn a_mapped_scan_xnat_will_not_list_is_said_left_out() {
    let s = session("E1", "S1_MR1", "S1");
    let mapped = |id: &str, files: Option<&[&str]>| {
        let mut r = resource("E1", Some(id), "NIFTI", files);
        let scan = Arc::make_mut(r.scan.as_mut().unwrap());
        scan.series_description = "rsfmri".into();
        r
    };
    let resources = vec![
        mapped("3", Some(&["rest.nii.gz", "rest.json"])),
        mapped("4", None),
    ];
    let map = super::bidsmap::BidsMap::parse(
        r#"[{"series_description": "rsfmri", "bidsname": "task-rest_bold"}]"#,
    )
    .unwrap();
    let placed = place(&s, &resources, Some(&map), &Table("")).await;
    let Placement::Placed(Source::Map, files, left_out) = &placed else {
        panic!("{placed:?}")
    };
    // Runs by scan ID, the unreadable scan's included: names do not move when it comes back.
    let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "sub-S1/ses-MR1/func/sub-S1_ses-MR1_task-rest_run-01_bold.nii.gz",
            "sub-S1/ses-MR1/func/sub-S1_ses-MR1_task-rest_run-01_bold.json"
        ]
    );
    assert_eq!(left_out.len(), 1);
    assert!(
        left_out[0].starts_with("scan 4 (XNAT would not list the files of "),
        "{left_out:?}"
    );
}
