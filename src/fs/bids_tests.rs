//! The BIDS view through the filesystem core, without a mount: what it shows of each case
//! the mock's BIDS project holds, the files xnatfs writes, and what indexing it costs.

use super::inodes::ROOT_INO;
use super::node::Root;
use super::tests::{read_all, setup_rooted, walk};
use super::{Errno, Opened, XnatFs};
use crate::bids::bidsmap::BidsMap;
use crate::mock::bids::{BIDS_MAP, PROJECT};
use crate::mock::data::Dataset;
use crate::mock::data::MockConfig;
use std::time::Duration;

/// Every path of the view under `path` (folders ending in `/`), in name order.
async fn find(fs: &XnatFs, ino: u64, path: &str, out: &mut Vec<String>) {
    let fh = fs.opendir(ino).unwrap();
    let kids = fs.list(fh, ino).await.unwrap();
    let entries: Vec<_> = fs
        .entries(ino, &kids, 2)
        .map(|(_, n, _, _)| n.to_string())
        .collect();
    fs.releasedir(fh);
    for name in entries {
        let at = if path.is_empty() {
            name
        } else {
            format!("{path}/{name}")
        };
        let attr = walk(fs, &at).await.unwrap();
        if attr.is_dir {
            out.push(format!("{at}/"));
            Box::pin(find(fs, attr.ino, &at, out)).await;
        } else {
            out.push(at);
        }
    }
}

async fn read_text(fs: &XnatFs, path: &str) -> String {
    let attr = walk(fs, path).await.unwrap();
    let Ok(Opened::Served { fh, .. }) = fs.open(attr.ino, false, false) else {
        panic!("{path} is not served");
    };
    let bytes = read_all(fs, fh, attr.size).await.unwrap();
    fs.release(fh);
    String::from_utf8(bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bids_view_shows_each_source_and_leaves_out_what_cannot_be_placed() {
    let s = setup_rooted(
        Dataset::default().with_bids(2),
        Root::Bids(PROJECT.into()),
        Duration::from_secs(60),
        None,
    );
    let mut paths = Vec::new();
    find(&s.fs, ROOT_INO, "", &mut paths).await;
    let top: Vec<&str> = paths
        .iter()
        .filter(|p| !p.trim_end_matches('/').contains('/'))
        .map(String::as_str)
        .collect();
    assert_eq!(
        top,
        [
            ".bidsignore",
            "README",
            "code/",
            "dataset_description.json",
            "participants.json",
            "participants.tsv",
            "sub-NAMES01/",
            "sub-P001/",
            "sub-P002/",
            "sub-TREE01/"
        ]
    );
    // dcm2bids-session's layout, placed by the session's *_scans.tsv (with the table beside).
    let p001: Vec<&str> = paths
        .iter()
        .filter(|p| p.starts_with("sub-P001/ses-P001MR1/") && p.len() > 21)
        .map(String::as_str)
        .collect();
    let base = "sub-P001/ses-P001MR1";
    let want = [
        format!("{base}/anat/"),
        format!("{base}/anat/sub-P001_ses-P001MR1_T1w.json"),
        format!("{base}/anat/sub-P001_ses-P001MR1_T1w.nii.gz"),
        format!("{base}/dwi/"),
        format!("{base}/dwi/sub-P001_ses-P001MR1_dwi.bval"),
        format!("{base}/dwi/sub-P001_ses-P001MR1_dwi.bvec"),
        format!("{base}/dwi/sub-P001_ses-P001MR1_dwi.json"),
        format!("{base}/dwi/sub-P001_ses-P001MR1_dwi.nii.gz"),
        format!("{base}/func/"),
        format!("{base}/func/sub-P001_ses-P001MR1_task-rest_bold.json"),
        format!("{base}/func/sub-P001_ses-P001MR1_task-rest_bold.nii.gz"),
        format!("{base}/sub-P001_ses-P001MR1_scans.tsv"),
    ];
    assert_eq!(p001, want);
    // A whole tree, at its paths; BIDS names without a table, by their suffixes.
    assert!(
        paths.contains(&"sub-TREE01/ses-1/func/sub-TREE01_ses-1_task-rest_bold.nii.gz".to_string())
    );
    assert!(paths.contains(
        &"sub-NAMES01/ses-NAMES01MR1/dwi/sub-NAMES01_ses-NAMES01MR1_dwi.bvec".to_string()
    ));
    // No DICOM, no dcm2niix names, no colliding subjects.
    assert!(
        !paths.iter().any(|p| p.contains("COL")
            || p.contains("RAW")
            || p.contains("DICOM")
            || p.ends_with(".dcm")),
        "{paths:#?}"
    );

    let unmapped = read_text(&s.fs, "code/xnatfs/unmapped.tsv").await;
    let rows: Vec<Vec<&str>> = unmapped.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(
        rows[0],
        [
            "xnat_session_id",
            "xnat_session_label",
            "xnat_subject_label",
            "reason"
        ]
    );
    let reasons: Vec<(&str, &str)> = rows[1..].iter().map(|r| (r[1], r[3])).collect();
    assert_eq!(reasons.len(), 4, "{unmapped}");
    assert_eq!(reasons[0].0, "RAW_01_MR1");
    assert!(
        reasons[0]
            .1
            .starts_with("NIfTI files without BIDS names (a BIDS map would name them")
    );
    assert!(
        reasons[1]
            .1
            .contains("sub-COL01 is the label of more than one XNAT subject (COL-01, COL_01)")
    );
    assert_eq!(reasons[2].0, "COL-01_MR1");
    assert!(reasons[3].1.starts_with("no BIDS data"));

    // A whole tree's stray file is shown, and the validator told to ignore it.
    assert!(paths.contains(&"sub-TREE01/ses-1/notes.txt".to_string()));
    assert_eq!(
        read_text(&s.fs, ".bidsignore").await,
        "code/\nsub-TREE01/ses-1/notes.txt\n"
    );

    let participants = read_text(&s.fs, "participants.tsv").await;
    assert_eq!(
        participants,
        "participant_id\txnat_subject_label\nsub-NAMES01\tNAMES_01\nsub-P001\tP_001\nsub-P002\tP_002\nsub-TREE01\tTREE_01\n"
    );
    let description: serde_json::Value =
        serde_json::from_str(&read_text(&s.fs, "dataset_description.json").await).unwrap();
    assert_eq!(description["Name"], "A BIDS project");
    assert_eq!(description["DatasetType"], "raw");
    assert_eq!(description["BIDSVersion"], crate::bids::view::BIDS_VERSION);
    assert_eq!(description["GeneratedBy"][0]["Name"], "xnatfs");
    assert_eq!(
        description["SourceDatasets"][0]["URL"],
        "http://memory/data/projects/BIDSDEMO"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn indexing_a_bids_view_reads_the_scans_tables_and_sidecars_ahead_and_no_image() {
    let s = setup_rooted(
        Dataset::default().with_bids(3),
        Root::Bids(PROJECT.into()),
        Duration::from_secs(60),
        None,
    );
    let mut paths = Vec::new();
    find(&s.fs, ROOT_INO, "", &mut paths).await;
    // One *_scans.tsv a dcm2bids-session session (3 subjects of 2, and the colliding 2), and
    // the JSON sidecars of the folders listed, fetched ahead: 3 a converted session, 3 of
    // NAMES_01, 2 of the whole tree. No image, no bval/bvec.
    let want = (3 * 2 + 2) + (3 * 2 * 3 + 3 + 2);
    let started = std::time::Instant::now();
    while s.api.body_calls() < want && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(s.api.body_calls(), want);
    // A sidecar read is one fetched ahead: no request.
    let sidecar = "sub-P003/ses-P003MR2/func/sub-P003_ses-P003MR2_task-rest_bold.json";
    let json: serde_json::Value = serde_json::from_str(&read_text(&s.fs, sidecar).await).unwrap();
    assert_eq!(json["TaskName"], "rest");
    assert_eq!(s.api.body_calls(), want);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bids_views_files_are_read_only_and_its_images_are_xnats_bytes() {
    let data = Dataset::default().with_bids(1);
    let session = data.projects[0].sessions[0].clone();
    let image = session.scans[1].resources[1].files[0].clone();
    let s = setup_rooted(
        data,
        Root::Bids(PROJECT.into()),
        Duration::from_secs(60),
        None,
    );
    let path = format!("sub-P001/ses-P001MR1/anat/{}", image.path);
    let attr = walk(&s.fs, &path).await.unwrap();
    assert_eq!(attr.size, image.size());
    let Ok(Opened::Served { fh, .. }) = s.fs.open(attr.ino, false, false) else {
        panic!("not served");
    };
    let bytes = read_all(&s.fs, fh, attr.size).await.unwrap();
    assert_eq!(bytes, image.read_at(0, image.size() as usize).unwrap());
    s.fs.release(fh);
    for made in [
        "participants.tsv",
        "sub-P001/ses-P001MR1/anat/sub-P001_ses-P001MR1_T1w.json",
    ] {
        let attr = walk(&s.fs, made).await.unwrap();
        assert_eq!(s.fs.open(attr.ino, true, false), Err(Errno::ROFS));
        assert_eq!(attr.perm, 0o444);
    }
    assert_eq!(walk(&s.fs, "sub-P001/ses-nope").await, Err(Errno::NOENT));
}

/// The BIDS paths of `RAW_01`'s session, named by a BIDS map, and `unmapped.tsv`.
async fn raw_paths(data: Dataset, map: Option<BidsMap>) -> (Vec<String>, String) {
    let s = setup_rooted(
        data,
        Root::Bids(PROJECT.into()),
        Duration::from_secs(60),
        map,
    );
    let mut paths = Vec::new();
    find(&s.fs, ROOT_INO, "", &mut paths).await;
    let raw = paths
        .into_iter()
        .filter(|p| p.starts_with("sub-RAW01/"))
        .collect();
    (raw, read_text(&s.fs, "code/xnatfs/unmapped.tsv").await)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bids_map_names_scans_without_bids_names_runs_by_scan_id_and_skips_unusable_ones() {
    let want = [
        "sub-RAW01/",
        "sub-RAW01/ses-MR1/",
        "sub-RAW01/ses-MR1/anat/",
        "sub-RAW01/ses-MR1/anat/sub-RAW01_ses-MR1_T1w.json",
        "sub-RAW01/ses-MR1/anat/sub-RAW01_ses-MR1_T1w.nii.gz",
        "sub-RAW01/ses-MR1/func/",
        "sub-RAW01/ses-MR1/func/sub-RAW01_ses-MR1_task-rest_run-01_bold.json",
        "sub-RAW01/ses-MR1/func/sub-RAW01_ses-MR1_task-rest_run-01_bold.nii.gz",
        "sub-RAW01/ses-MR1/func/sub-RAW01_ses-MR1_task-rest_run-02_bold.json",
        "sub-RAW01/ses-MR1/func/sub-RAW01_ses-MR1_task-rest_run-02_bold.nii.gz",
    ];
    // Given (--bids-map), or kept by the project in XNAT's configuration service.
    let map = BidsMap::parse(BIDS_MAP).unwrap();
    let (given, unmapped) = raw_paths(Dataset::default().with_bids(1), Some(map)).await;
    assert_eq!(given, want);
    assert!(!unmapped.contains("RAW_01"), "{unmapped}");
    let mut data = Dataset::default().with_bids(1);
    data.configs.push(MockConfig {
        project: Some(PROJECT.into()),
        tool: "bids".into(),
        path: "bidsmap".into(),
        contents: BIDS_MAP.into(),
    });
    assert_eq!(raw_paths(data, None).await.0, want);
    // Without a map: named in unmapped.tsv, with what would name them.
    let (none, unmapped) = raw_paths(Dataset::default().with_bids(1), None).await;
    assert!(none.is_empty(), "{none:?}");
    let said = "RAW_01_MR1\tRAW_01\tNIfTI files without BIDS names (a BIDS map would name them";
    assert!(unmapped.contains(said), "{unmapped}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_scan_with_the_lower_id_is_run_1() {
    let map = BidsMap::parse(BIDS_MAP).unwrap();
    let data = Dataset::default().with_bids(1);
    let sessions = &data.projects[0].sessions;
    let raw = sessions
        .iter()
        .find(|s| s.label == "RAW_01_MR1")
        .unwrap()
        .clone();
    let s = setup_rooted(
        data,
        Root::Bids(PROJECT.into()),
        Duration::from_secs(60),
        Some(map),
    );
    for (run, scan) in [("01", "3"), ("02", "5")] {
        let path =
            format!("sub-RAW01/ses-MR1/func/sub-RAW01_ses-MR1_task-rest_run-{run}_bold.nii.gz");
        let attr = walk(&s.fs, &path).await.unwrap();
        let Some(super::node::Node::File(res, file)) = s.fs.tree.node(attr.ino) else {
            panic!("{path} is no XNAT file");
        };
        assert_eq!(res.scan.as_deref(), Some(scan), "{path}");
        let mock = raw.scans.iter().find(|x| x.id == scan).unwrap();
        assert_eq!(file.path, mock.resources[1].files[0].path);
    }
}
