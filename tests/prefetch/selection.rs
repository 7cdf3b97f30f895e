//! What gets fetched: sessions, scans and resources chosen by flags and filters, projects, shards, dry runs.

use super::helpers::{actual_out, expected_out, fetched_both_ways};
use crate::common::*;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[test]
fn scan_and_resource_filters_select_exactly() {
    let data = small_sample();
    let mock = start_mock(data.clone());
    let cases: Vec<(Vec<&str>, BTreeMap<PathBuf, String>)> = vec![
        (
            vec!["-s", "1,3"],
            expected_out(
                &data,
                "XNAT_E00001",
                "SUBJ01_MR1",
                Some(&["1", "3"]),
                |_| true,
                false,
            ),
        ),
        (
            vec!["-s", "*", "-r", "NIFTI"],
            expected_out(
                &data,
                "XNAT_E00001",
                "SUBJ01_MR1",
                None,
                |l| l == "NIFTI",
                false,
            ),
        ),
        (
            vec!["-r", "NIFTI,SNAPSHOTS"],
            expected_out(
                &data,
                "XNAT_E00001",
                "SUBJ01_MR1",
                None,
                |l| l == "NIFTI" || l == "SNAPSHOTS",
                false,
            ),
        ),
        (
            vec!["--exclude-resource", "DICOM"],
            expected_out(
                &data,
                "XNAT_E00001",
                "SUBJ01_MR1",
                None,
                |l| l != "DICOM",
                false,
            ),
        ),
        (
            vec!["--session-resources", "-r", "QC"],
            expected_out(
                &data,
                "XNAT_E00001",
                "SUBJ01_MR1",
                None,
                |l| l == "QC",
                true,
            ),
        ),
        (
            vec![
                "--session-resources",
                "-s",
                "2",
                "--exclude-resource",
                "DICOM",
            ],
            expected_out(
                &data,
                "XNAT_E00001",
                "SUBJ01_MR1",
                Some(&["2"]),
                |l| l != "DICOM",
                true,
            ),
        ),
    ];
    for (flags, want) in cases {
        let home = tempfile::tempdir().unwrap();
        let out = home.path().join("out");
        let mut args = vec![
            "-P",
            "DEMO",
            "-E",
            "SUBJ01_MR1",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend(&flags);
        ok(&prefetch(&mock.url(), home.path(), &args));
        assert!(!want.is_empty());
        assert_eq!(actual_out(&out), want, "{flags:?}");
    }
}

#[test]
fn dry_run_transfers_nothing_and_tells_the_plan() {
    let mock = start_mock(small_sample());
    let home = tempfile::tempdir().unwrap();
    let out = home.path().join("out");
    let o = prefetch(
        &mock.url(),
        home.path(),
        &[
            "-E",
            "XNAT_E00001",
            "--session-resources",
            "--out",
            out.to_str().unwrap(),
            "--dry-run",
        ],
    );
    ok(&o);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("session SUBJ01_MR1 (XNAT_E00001, project DEMO)"),
        "{stdout}"
    );
    assert!(stdout.contains("scan 2 (T1w)"), "{stdout}");
    assert!(stdout.contains("total: 25 files"), "{stdout}");
    assert!(stdout.contains("to transfer: 25 files"), "{stdout}");
    assert_eq!(mock.state.file_gets(), 0);
    assert!(walk_files(&out).is_empty());
}

/// A PET/MR session's MR and PET scans and a PET/CT session's CT and PET scans are all
/// fetched: the scans listing is asked with no `xsiType`.
#[test]
fn sessions_of_every_modality_are_fetched_whole() {
    let data = small_sample();
    let all = |_: &str| true;
    let mut want = expected_out(&data, "XNAT_E00005", "SUBJ03_PETMR1", None, all, false);
    want.extend(expected_out(
        &data,
        "XNAT_E00006",
        "SUBJ03_PETCT1",
        None,
        all,
        false,
    ));
    let mock = start_mock(data);
    let home = tempfile::tempdir().unwrap();
    let out = home.path().join("out");
    ok(&prefetch(
        &mock.url(),
        home.path(),
        &["-P", "MULTI", "--out", out.to_str().unwrap()],
    ));
    assert_eq!(
        want.len(),
        4 * 6 + 1,
        "four scans of six DICOM files, and T1 raw"
    );
    assert_eq!(actual_out(&out), want);
    let log = mock.state.request_log();
    assert_eq!(scans_listed_with_a_type(&log), Vec::<&String>::new());
}

/// A project's clinical form (an experiment that is no imaging session, listed by XNAT among
/// the project's experiments) is never planned: a project-wide prefetch ends complete.
#[test]
fn a_clinical_form_in_a_project_is_skipped_and_the_prefetch_ends_complete() {
    let data = small_sample();
    let mock = start_mock(data);
    let home = tempfile::tempdir().unwrap();
    let out = home.path().join("out");
    let args = [
        "-P",
        "MULTI",
        "--session-resources",
        "--out",
        out.to_str().unwrap(),
    ];
    ok(&prefetch(&mock.url(), home.path(), &args));
    assert_eq!(dir_names(&out), ["SUBJ03_PETCT1", "SUBJ03_PETMR1"]);
    let log = mock.state.request_log();
    assert!(!log.iter().any(|r| r.contains("XNAT_E00007")), "{log:?}");
}

/// Resources labelled `T1 raw` (a space) and `QC,v2` (a comma) are fetched, file by file and
/// as ZIPs: requests name them by numeric ID, files go under their labels (in `--out` and in
/// the cache).
#[test]
fn resource_labels_with_a_space_or_a_comma_are_fetched_by_id_under_their_labels() {
    let data = small_sample();
    let want = expected_out(&data, "XNAT_E00005", "XNAT_E00005", None, |_| true, true);
    for label in ["T1 raw", "QC,v2"] {
        assert!(want.keys().any(|p| p.to_string_lossy().contains(label)));
    }
    let mock = start_mock(data);
    let home = tempfile::tempdir().unwrap();
    let session = ["-E", "XNAT_E00005", "--session-resources"];
    fetched_both_ways(&mock.url(), home.path(), &session, &want);
    let cache = home.path().join("cache");
    let args = [&session[..], &["--cache-dir", cache.to_str().unwrap()]];
    ok(&prefetch(&mock.url(), home.path(), &args.concat()));
    let cached: Vec<String> = walk_files(&cache)
        .into_iter()
        .map(|(p, _)| p.to_string_lossy().into_owned())
        .collect();
    for file in [
        "data/XNAT_E00005/scans/1/resources/T1 raw/files/T1w_raw.nii",
        "data/XNAT_E00005/resources/QC,v2/files/report.txt",
    ] {
        assert!(
            cached.iter().any(|p| p.ends_with(file)),
            "{file}: {cached:?}"
        );
    }
    let log = mock.state.request_log();
    assert_eq!(resources_named_by_label(&log), Vec::<&String>::new());
}

/// File names with brackets, braces, quotes, `+`, `%`, spaces and non-ASCII letters are
/// fetched, file by file (percent-encoded as Tomcat takes them) and as a ZIP.
#[test]
fn file_names_tomcat_refuses_raw_are_fetched() {
    let data = small_sample();
    let notes = |label: &str| label == "NOTES";
    let want = expected_out(&data, "XNAT_E00006", "XNAT_E00006", Some(&[]), notes, true);
    assert_eq!(want.len(), 7);
    let mock = start_mock(data);
    let home = tempfile::tempdir().unwrap();
    let args = ["-E", "XNAT_E00006", "-r", "NOTES", "--session-resources"];
    fetched_both_ways(&mock.url(), home.path(), &args, &want);
}

#[test]
fn project_wide_prefetch_with_a_name_and_bad_combinations() {
    let data = small_sample();
    let mock = start_mock(data.clone());
    let home = tempfile::tempdir().unwrap();
    let out = home.path().join("out");
    ok(&prefetch(
        &mock.url(),
        home.path(),
        &["-P", "PILOT", "--out", out.to_str().unwrap()],
    ));
    let top: std::collections::BTreeSet<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        top,
        ["SUBJ01_EEG1", "SUBJ01_MR1"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    // The EEG file has no digest: checked by size.
    assert!(
        out.join("SUBJ01_EEG1/scans/1/resources/EDF/files/SUBJ01_EEG1.edf")
            .is_file()
    );

    let named = home.path().join("named");
    ok(&prefetch(
        &mock.url(),
        home.path(),
        &[
            "-E",
            "XNAT_E00002",
            "-s",
            "2",
            "-r",
            "NIFTI",
            "--out",
            named.to_str().unwrap(),
            "--name",
            "sub-02",
        ],
    ));
    assert!(
        named
            .join("sub-02/scans/2/resources/NIFTI/files/T1w.nii.gz")
            .is_file()
    );

    for (args, want) in [
        (
            vec![
                "-E",
                "XNAT_E00001",
                "-r",
                "DICOM",
                "--exclude-resource",
                "NIFTI",
            ],
            "cannot be used with",
        ),
        (
            vec![
                "-E",
                "XNAT_E00001",
                "-E",
                "XNAT_E00002",
                "--out",
                "o",
                "--name",
                "x",
            ],
            "--name renames one session",
        ),
        (vec!["-E", "XNAT_E09999"], "unknown session XNAT_E09999"),
        (vec!["-E", "XNAT_E00001", "-s", "42"], "has no scan 42"),
        (vec!["-s", "1"], "-E SESSION"),
    ] {
        let o = prefetch(&mock.url(), home.path(), &args);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
}

#[test]
fn a_filter_that_matches_nothing_lists_what_exists_and_ranges_select_numeric_ids() {
    let data = small_sample();
    let mock = start_mock(data.clone());
    let home = tempfile::tempdir().unwrap();
    let out = home.path().join("out");
    let out_arg = out.to_str().unwrap();
    for (args, want) in [
        (
            vec!["-E", "XNAT_E00001", "-r", "DICMO"],
            "no resource DICMO in session SUBJ01_MR1; it has: DICOM, NIFTI, SNAPSHOTS",
        ),
        (
            vec!["-E", "XNAT_E00001", "-s", "99"],
            "session SUBJ01_MR1 has no scan 99; it has: 1, 2, 3",
        ),
        (
            vec!["-E", "XNAT_E00001", "-s", "4-9"],
            "session SUBJ01_MR1 has no scan 4-9; it has: 1, 2, 3",
        ),
        (
            vec![
                "-P",
                "DEMO",
                "-E",
                "SUBJ01_MR1",
                "-E",
                "SUBJ02_MR1",
                "-r",
                "QC",
            ],
            "no resource QC in any of the 2 sessions; they have: DICOM, NIFTI, SNAPSHOTS (the session's own resources are looked at with --session-resources)",
        ),
    ] {
        let mut all = args.clone();
        all.extend(["--out", out_arg]);
        ended(&prefetch(&mock.url(), home.path(), &all), 1, want);
        assert_eq!(mock.state.file_gets(), 0, "{args:?}");
    }
    // A `-s` that cannot be read is a usage error, as any refused argument is.
    for (scans, want) in [
        ("3-1", "a range goes from low to high (1-3)"),
        (",", "-s needs scan IDs like 1,2,3"),
    ] {
        let args = ["-E", "XNAT_E00001", "-s", scans, "--out", out_arg];
        ended(&prefetch(&mock.url(), home.path(), &args), 2, want);
    }
    assert!(!out.exists() || walk_files(&out).is_empty());

    // A range takes every scan whose numeric ID lies in it.
    ok(&prefetch(
        &mock.url(),
        home.path(),
        &["-E", "XNAT_E00001", "-s", "1-2", "--out", out_arg],
    ));
    let want = expected_out(
        &data,
        "XNAT_E00001",
        "XNAT_E00001",
        Some(&["1", "2"]),
        |_| true,
        false,
    );
    assert_eq!(actual_out(&out), want);
}

/// `--shard I/N` over a project: the parts are disjoint and together every session, each
/// part's sessions planned and fetched by that run alone into one shared `--out`; I counts
/// from 0, and anything else is a usage error (exit 2) that says how to count.
#[test]
fn shards_of_a_project_are_disjoint_and_together_fetch_every_session() {
    let data = small_sample().with_cohort(24);
    let labels: Vec<String> = data
        .projects
        .iter()
        .find(|p| p.id == "COHORT")
        .unwrap()
        .sessions
        .iter()
        .map(|s| s.label.clone())
        .collect();
    let files_per_session = 7;
    let mock = start_mock(data);
    let home = tempfile::tempdir().unwrap();
    let shared = home.path().join("shared");
    let mut seen: Vec<String> = Vec::new();
    for i in 0..3 {
        let gets = mock.state.file_gets();
        let shard = format!("{i}/3");
        let args = ["-P", "COHORT", "--session-resources", "--shard", &shard];
        // Alone, to see which sessions this part holds; then into the shared folder.
        let alone = home.path().join(format!("part{i}"));
        let o = prefetch(
            &mock.url(),
            home.path(),
            &[
                &args[..],
                &["--out", alone.to_str().unwrap(), "--method", "files"],
            ]
            .concat(),
        );
        let stderr = ok(&o);
        let part = dir_names(&alone);
        assert!(
            stderr.contains(&format!("shard {i}/3: {} of the 24 sessions", part.len())),
            "{stderr}"
        );
        assert!(!part.is_empty() && part.len() < 24, "{part:?}");
        assert_eq!(
            (mock.state.file_gets() - gets) as usize,
            part.len() * files_per_session
        );
        for label in &part {
            assert!(!seen.contains(label), "{label} in two parts");
            assert_eq!(walk_files(&alone.join(label)).len(), files_per_session);
        }
        seen.extend(part);
        ok(&prefetch(
            &mock.url(),
            home.path(),
            &[&args[..], &["--out", shared.to_str().unwrap()]].concat(),
        ));
    }
    seen.sort();
    assert_eq!(seen, labels);
    assert_eq!(dir_names(&shared), labels);
    assert_eq!(walk_files(&shared).len(), 24 * files_per_session);

    for (shard, want) in [
        ("3/3", "I counts from 0 to 2"),
        ("1/0", "N must be at least 1"),
        ("x", "--shard takes I/N"),
    ] {
        let o = prefetch(
            &mock.url(),
            home.path(),
            &["-P", "COHORT", "--shard", shard],
        );
        ended(&o, 2, want);
    }
    // A Slurm array numbered 1..3 with --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT:
    // refused in every task, not just the one that would be out of range.
    let o = xnatfs(&mock.url(), home.path())
        .args(["prefetch", "-P", "COHORT", "--shard", "1/3", "--dry-run"])
        .envs([
            ("SLURM_ARRAY_TASK_ID", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_MAX", "3"),
        ])
        .output()
        .unwrap();
    ended(&o, 2, "--array=0-2");
}

/// A session named on the command line is read once: the document that finds it is the one
/// its tree starts from (one round trip less per named session).
#[test]
fn a_named_sessions_document_is_asked_once() {
    let mock = start_mock(small_sample());
    let home = tempfile::tempdir().unwrap();
    let out = home.path().join("out");
    for named in [
        &["-E", "XNAT_E00001"][..],
        &["-P", "DEMO", "-E", "SUBJ01_MR1"],
    ] {
        let before = mock.state.request_log().len();
        let mut args = named.to_vec();
        args.extend(["--dry-run", "--out", out.to_str().unwrap()]);
        ok(&prefetch(&mock.url(), home.path(), &args));
        let log = mock.state.request_log()[before..].to_vec();
        let documents: Vec<_> = log
            .iter()
            .filter(|r| {
                r.contains("/experiments/XNAT_E00001?") || r.contains("/experiments/SUBJ01_MR1?")
            })
            .collect();
        assert_eq!(documents.len(), 1, "{named:?}: {log:#?}");
    }
}
