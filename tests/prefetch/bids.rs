//! `xnatfs prefetch -P PROJ --bids`: a project's BIDS view as a plain BIDS folder (`--out`), or
//! into the cache for an offline `mount --bids`; `--bids-metadata-only`.

use crate::common::*;
use std::path::Path;
use xnatfs::mock::bids::PROJECT;
use xnatfs::mock::data::Dataset;

/// Every file under `root`, relative, sorted.
fn files_under(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = walk_files(root)
        .into_iter()
        .map(|(p, _)| {
            p.strip_prefix(root)
                .unwrap_or(&p)
                .to_string_lossy()
                .into_owned()
        })
        .filter(|p| !p.starts_with(".xnatfs-tmp"))
        .collect();
    out.sort();
    out
}

#[test]
fn a_bids_prefetch_out_is_a_valid_bids_dataset_and_a_second_run_transfers_nothing() {
    let data = Dataset::default().with_bids(2);
    let mock = start_mock(data.clone());
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_str().unwrap();
    let said = ok(&prefetch(
        &mock.url(),
        home.path(),
        &["-P", PROJECT, "--bids", "--out", dir, "-q"],
    ));
    assert!(
        said.contains("4 of the project's sessions are not in its BIDS view"),
        "{said}"
    );
    let files = files_under(out.path());
    for made in [
        "dataset_description.json",
        "participants.tsv",
        "README",
        "code/xnatfs/unmapped.tsv",
    ] {
        assert!(files.contains(&made.to_string()), "{made} in {files:#?}");
    }
    // XNAT's bytes at their BIDS names.
    let session = &data.projects[0].sessions[0];
    let image = &session.scans[1].resources[1].files[0];
    let at = out
        .path()
        .join("sub-P001/ses-P001MR1/anat")
        .join(&image.path);
    assert_eq!(
        std::fs::read(&at).unwrap(),
        image.read_at(0, image.size() as usize).unwrap()
    );
    assert!(
        !files
            .iter()
            .any(|f| f.contains("COL") || f.ends_with(".dcm")),
        "{files:#?}"
    );
    if let Some(tools) = bids_tools() {
        let (errors, status) = validator_errors(&tools, out.path());
        assert!(errors.is_empty() && status.success(), "{errors:#?}");
    }
    let again = ok(&prefetch(
        &mock.url(),
        home.path(),
        &["-P", PROJECT, "--bids", "--out", dir, "-q"],
    ));
    assert!(again.contains(": 0 files (0 B) downloaded"), "{again}");
    assert_eq!(files_under(out.path()), files);
}

#[test]
fn a_bids_metadata_prefetch_into_the_cache_lets_an_offline_bids_mount_index_the_view() {
    let data = Dataset::default().with_bids(2);
    let mock = start_mock(data.clone());
    let url = mock.url();
    let home = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let said = prefetch_into_cache(
        &url,
        home.path(),
        cache.path(),
        &["-P", PROJECT, "--bids", "--bids-metadata-only"],
    );
    // Sidecars and tables only: no image was asked for.
    assert!(
        !mock.state.request_log().iter().any(|r| r.contains(".nii")),
        "{said}"
    );
    drop(mock);
    let m = MountBuilder::new(&url)
        .cache_dir(cache.path())
        .args(&["--offline", "-P", PROJECT, "--bids"])
        .env("XNAT_PASS", "")
        .mount();
    let sidecar = m.path("sub-P002/ses-P002MR2/func/sub-P002_ses-P002MR2_task-rest_bold.json");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&sidecar).unwrap()).unwrap();
    assert_eq!(json["TaskName"], "rest");
    // The images are listed with their sizes, but not there offline.
    let image = m.path("sub-P002/ses-P002MR2/func/sub-P002_ses-P002MR2_task-rest_bold.nii.gz");
    assert!(std::fs::metadata(&image).unwrap().len() > 0);
    assert_errno(
        std::fs::read(&image),
        &[libc::EIO, libc::ETIMEDOUT],
        "an image offline",
    );
    if let Some(tools) = bids_tools() {
        let layout = pybids_layout(&tools, &m.mountpoint);
        assert_eq!(
            layout["subjects"],
            serde_json::json!(["NAMES01", "P001", "P002", "TREE01"])
        );
    }
}

#[test]
fn bids_prefetch_needs_a_project_and_takes_no_selection() {
    let mock = start_mock(Dataset::default().with_bids(1));
    let home = tempfile::tempdir().unwrap();
    ended(
        &prefetch(&mock.url(), home.path(), &["--bids"]),
        2,
        "give it with -P PROJECT",
    );
    for clash in [["-E", "XNAT_E200001"], ["-r", "NIFTI"]] {
        let mut args = vec!["-P", PROJECT, "--bids"];
        args.extend(clash);
        ended(
            &prefetch(&mock.url(), home.path(), &args),
            2,
            "cannot be used with",
        );
    }
    ended(
        &prefetch(
            &mock.url(),
            home.path(),
            &["-P", PROJECT, "--bids-metadata-only"],
        ),
        2,
        "--bids",
    );
}
