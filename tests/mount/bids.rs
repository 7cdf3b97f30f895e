//! The BIDS view (`mount -P PROJ --bids`) of the mock's BIDS project, as BIDS tools read it:
//! the real BIDS validator and pybids (installed by `scripts/setup --test-tools`).

use super::metadata::getxattr;
use crate::common::*;
use std::time::Duration;
use xnatfs::mock::bids::{BIDS_MAP, PROJECT};
use xnatfs::mock::data::{Dataset, MockConfig};

fn mount_bids(url: &str, extra: &[&str]) -> Mount {
    let mut args = vec!["-P", PROJECT, "--bids"];
    args.extend_from_slice(extra);
    MountBuilder::new(url).args(&args).mount()
}

#[test]
fn the_bids_view_validates_and_pybids_finds_every_subject_session_and_run() {
    let Some(tools) = bids_tools() else { return };
    let mut data = Dataset::default().with_bids(3);
    // The project's BIDS map, in XNAT's configuration service, names RAW_01's scans.
    data.configs.push(MockConfig {
        project: Some(PROJECT.into()),
        tool: "bids".into(),
        path: "bidsmap".into(),
        contents: BIDS_MAP.into(),
    });
    let mock = start_mock(data.clone());
    let m = mount_bids(&mock.url(), &[]);
    let (errors, status) = validator_errors(&tools, &m.mountpoint);
    assert!(errors.is_empty(), "the validator found errors: {errors:#?}");
    assert!(status.success(), "the validator exits {status}");
    let layout = pybids_layout(&tools, &m.mountpoint);
    assert_eq!(
        layout["subjects"],
        serde_json::json!(["NAMES01", "P001", "P002", "P003", "RAW01", "TREE01"])
    );
    let mut sessions = vec!["1".to_string(), "MR1".to_string(), "NAMES01MR1".to_string()];
    for n in 1..=3 {
        sessions.extend([format!("P00{n}MR1"), format!("P00{n}MR2")]);
    }
    assert_eq!(layout["sessions"], serde_json::json!(sessions));
    assert_eq!(layout["tasks"], serde_json::json!(["rest"]));
    // Three images a converted session (T1w, bold, dwi), two in the whole tree, three mapped
    // (T1w and two runs of rest).
    let images = layout["images"].as_array().unwrap();
    assert_eq!(images.len(), 7 * 3 + 2 + 3, "{images:#?}");
    let run = "sub-RAW01/ses-MR1/func/sub-RAW01_ses-MR1_task-rest_run-02_bold.nii.gz";
    assert!(images.contains(&serde_json::json!(run)), "{images:#?}");
    // A NIfTI read through the view is XNAT's bytes, and names its XNAT source.
    let session = &data.projects[0].sessions[0];
    let image = &session.scans[1].resources[1].files[0];
    let path = m.path(&format!("sub-P001/ses-P001MR1/anat/{}", image.path));
    let want = image.read_at(0, image.size() as usize).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), want);
    let uri = getxattr(&path, "user.xnat.uri").unwrap();
    let scan = format!("/data/experiments/{}/scans/2/resources/", session.id);
    let file = format!("/files/{}", image.path);
    assert!(uri.contains(&scan) && uri.ends_with(&file), "{uri}");
    // Read-only, the files xnatfs writes included.
    for (what, result) in [
        ("a write", std::fs::write(&path, b"x").map(drop)),
        (
            "a new file",
            std::fs::File::create(m.path("sub-P001/x")).map(drop),
        ),
        (
            "a made file",
            std::fs::write(m.path("participants.tsv"), b"x").map(drop),
        ),
        ("a folder", std::fs::create_dir(m.path("derivatives"))),
    ] {
        assert_errno(result, &[libc::EROFS], what);
    }
    assert_eq!(std::fs::read(&path).unwrap(), want);
}

#[test]
fn a_session_added_on_the_server_shows_in_the_bids_view_after_dir_ttl() {
    let mock = start_mock(Dataset::default().with_bids(1));
    let addr = mock.addr;
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("bidsmap.json");
    std::fs::write(&map, BIDS_MAP).unwrap();
    let m = mount_bids(
        &mock.url(),
        &["--dir-ttl", "1s", "--bids-map", map.to_str().unwrap()],
    );
    // The map given names RAW_01's scans.
    let anat = m.path("sub-RAW01/ses-MR1/anat");
    assert_eq!(
        dir_names(&anat),
        ["sub-RAW01_ses-MR1_T1w.json", "sub-RAW01_ses-MR1_T1w.nii.gz"]
    );
    let participants = m.path("participants.tsv");
    let listed = std::fs::read_to_string(&participants).unwrap();
    assert!(
        listed.contains("sub-P001\tP_001") && !listed.contains("sub-P002"),
        "{listed}"
    );
    // The same server, with a second subject's sessions now.
    drop(mock);
    let state = xnatfs::mock::MockState::new(Dataset::default().with_bids(2), Default::default());
    let _back = xnatfs::mock::MockServer::start_with_state(addr, state).unwrap();
    wait_until(Duration::from_secs(20), "the new subject shows", || {
        std::fs::read_to_string(&participants).is_ok_and(|t| t.contains("sub-P002\tP_002"))
    });
    let anat = m.path("sub-P002/ses-P002MR2/anat");
    assert_eq!(
        dir_names(&anat),
        [
            "sub-P002_ses-P002MR2_T1w.json",
            "sub-P002_ses-P002MR2_T1w.nii.gz"
        ]
    );
}

#[test]
fn bids_without_a_project_is_refused_with_what_to_give() {
    let mock = start_mock(Dataset::default().with_bids(1));
    let home = tempfile::tempdir().unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let bad = home.path().join("bad.json");
    std::fs::write(&bad, r#"{"T1_MPRAGE": "T1w"}"#).unwrap();
    let bad = bad.to_str().unwrap();
    for (args, want) in [
        (
            vec!["--bids", "-P", PROJECT, "--bids-map", bad],
            "not a BIDS map",
        ),
        (
            vec!["--bids", "-P", PROJECT, "--bids-map", "/nonexistent"],
            "cannot read the BIDS map /nonexistent",
        ),
        (vec!["--bids"], "give it with -P PROJECT"),
        (
            vec!["--bids", "-E", "XNAT_E200001"],
            "give -P PROJECT, not -E",
        ),
        (vec!["--bids", "-P", "NOPE"], "NOPE"),
    ] {
        let out = xnatfs(&mock.url(), home.path())
            .arg("mount")
            .arg(mnt.path())
            .arg("--foreground")
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} mounted");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
        assert!(!is_mounted(mnt.path()));
    }
}

#[test]
fn a_scan_whose_catalog_cannot_be_read_is_left_out_and_the_view_still_validates() {
    let Some(tools) = bids_tools() else { return };
    let data = Dataset::default().with_bids(2);
    let mock = start_mock(data.clone());
    // P_001's first session: its rest run's NIFTI resource (the sidecar is readable).
    let session = &data.projects[0].sessions[0];
    let (scan, nifti) = session
        .scans
        .iter()
        .find_map(|s| {
            let r = s.resources.iter().find(|r| r.label == "NIFTI")?;
            r.files[0].path.contains("_bold").then_some((s, r))
        })
        .expect("a bold scan");
    mock.state.controls.make_catalog_unreadable(nifti.id);
    let m = mount_bids(&mock.url(), &[]);
    let (errors, status) = validator_errors(&tools, &m.mountpoint);
    assert!(errors.is_empty(), "the validator found errors: {errors:#?}");
    assert!(status.success(), "the validator exits {status}");
    let func = m.path("sub-P001/ses-P001MR1/func");
    assert!(
        !func.exists(),
        "{:?}",
        std::fs::read_dir(&func).map(|d| d.count())
    );
    assert!(m.path("sub-P001/ses-P001MR1/anat").is_dir());
    assert!(m.path("sub-P001/ses-P001MR2/func").is_dir());
    let unmapped = std::fs::read_to_string(m.path("code/xnatfs/unmapped.tsv")).unwrap();
    let row = format!(
        "{}\t{}\tP_001\tshown without scan {} (",
        session.id, session.label, scan.id
    );
    assert!(unmapped.contains(&row), "{unmapped}");
}
