//! Assessors and reconstructions: `--assessors`, `--reconstructions`, whole tree and folder by folder.

use super::helpers::{expected_assessor_out, expected_derived_out, expected_out, out_md5s};
use crate::common::*;
use std::sync::atomic::Ordering;
use xnatfs::xnat::Derived;

/// `--assessors` fetches the session's assessors' resources into
/// `<session>/assessors/<assessor label>/resources/<label>/files`, `-r` and
/// `--exclude-resource` apply to them too, and without `--assessors` nothing of them is
/// fetched.
#[test]
fn assessors_are_fetched_with_assessors_and_filtered_by_resource() {
    let data = small_sample();
    let all = |_: &str| true;
    let scans = expected_out(&data, "XNAT_E00005", "SUBJ03_PETMR1", None, all, false);
    let assessors = expected_assessor_out(&data, "XNAT_E00005", "SUBJ03_PETMR1", all);
    assert_eq!(assessors.len(), 3, "{assessors:?}");
    let only_qc = expected_assessor_out(&data, "XNAT_E00005", "SUBJ03_PETMR1", |l| l == "QC");
    let mock = start_mock(data);
    let home = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let out = tempfile::tempdir().unwrap();
        let mut args = vec!["-P", "MULTI", "-E", "SUBJ03_PETMR1", "--out"];
        args.push(out.path().to_str().unwrap());
        args.extend_from_slice(extra);
        ok(&prefetch(&mock.url(), home.path(), &args));
        out_md5s(out.path())
    };
    assert_eq!(run(&[]), scans, "without --assessors, no assessor file");
    let mut want = scans.clone();
    want.extend(assessors);
    assert_eq!(run(&["--assessors"]), want);
    assert_eq!(run(&["--assessors", "-r", "QC"]), only_qc);
    let mut want = scans;
    want.extend(expected_assessor_out(
        &mock.state.data,
        "XNAT_E00005",
        "SUBJ03_PETMR1",
        |l| l != "DATA",
    ));
    assert_eq!(run(&["--assessors", "--exclude-resource", "DATA"]), want);
}

/// A server whose session files listing ignores `all=true` (the whole tree does not add up):
/// the session is listed folder by folder, and `--assessors` still fetches the assessors.
#[test]
fn assessors_are_fetched_folder_by_folder_too() {
    let data = small_sample();
    let all = |_: &str| true;
    let mut want = expected_out(&data, "XNAT_E00005", "SUBJ03_PETMR1", None, all, false);
    want.extend(expected_assessor_out(
        &data,
        "XNAT_E00005",
        "SUBJ03_PETMR1",
        all,
    ));
    let mock = start_mock(data);
    mock.state
        .controls
        .files_all_ignored
        .store(true, Ordering::SeqCst);
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_str().unwrap();
    let args = [
        "-E",
        "XNAT_E00005",
        "--name",
        "SUBJ03_PETMR1",
        "--out",
        dir,
        "--assessors",
    ];
    ok(&prefetch(&mock.url(), home.path(), &args));
    assert_eq!(out_md5s(out.path()), want);
    let log = mock.state.request_log();
    assert!(
        log.iter()
            .any(|l| l.contains("/assessors/XNAT_E00008/out/resources")),
        "{log:?}"
    );
}

/// `--reconstructions` fetches the session's reconstructions' resources into
/// `<session>/reconstructions/<ID>/resources/<label>/files`, from the whole tree and folder by
/// folder, beside `--assessors` or alone; without it nothing of them is fetched.
#[test]
fn reconstructions_are_fetched_with_reconstructions() {
    let data = small_sample();
    let all = |_: &str| true;
    let (id, dir) = ("XNAT_E00005", "SUBJ03_PETMR1");
    let scans = expected_out(&data, id, dir, None, all, false);
    let recons = expected_derived_out(&data, id, dir, Derived::Reconstruction, all);
    assert_eq!(recons.len(), 1, "{recons:?}");
    assert!(
        recons
            .keys()
            .all(|p| p.starts_with("SUBJ03_PETMR1/reconstructions/PET_AC/resources/NIFTI/files")),
        "{recons:?}"
    );
    let assessors = expected_assessor_out(&data, id, dir, all);
    let mock = start_mock(data);
    let home = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let out = tempfile::tempdir().unwrap();
        let mut args = vec!["-P", "MULTI", "-E", dir, "--out"];
        args.push(out.path().to_str().unwrap());
        args.extend_from_slice(extra);
        ok(&prefetch(&mock.url(), home.path(), &args));
        out_md5s(out.path())
    };
    let mut want = scans.clone();
    want.extend(recons.clone());
    assert_eq!(run(&["--reconstructions"]), want);
    let no_nifti = expected_out(&mock.state.data, id, dir, None, |l| l != "NIFTI", false);
    let args = ["--reconstructions", "--exclude-resource", "NIFTI"];
    assert_eq!(run(&args), no_nifti, "--exclude-resource applies to them");
    let mut both = want.clone();
    both.extend(assessors);
    assert_eq!(run(&["--assessors", "--reconstructions"]), both);
    assert_eq!(run(&["--assessors"]).len(), both.len() - recons.len());
    // Folder by folder (the whole tree does not add up): the same files.
    mock.state
        .controls
        .files_all_ignored
        .store(true, Ordering::SeqCst);
    assert_eq!(run(&["--reconstructions"]), want);
    let log = mock.state.request_log();
    assert!(
        log.iter()
            .any(|l| l.contains("/experiments/XNAT_E00005/reconstructions/PET_AC/out/resources")),
        "{log:?}"
    );
}
