//! `xnatfs prefetch` against the mock XNAT server, run as the real binary.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use xnatfs::mock::data::{Dataset, SampleSpec};
use xnatfs::xnat::Derived;

/// What the session's files should be under `--out`: relative path -> MD5.
/// `dir` is the session's folder: the name given with -E, or the label.
fn expected_out(
    data: &Dataset,
    session_id: &str,
    dir: &str,
    scans: Option<&[&str]>,
    keep: impl Fn(&str) -> bool,
    session_res: bool,
) -> BTreeMap<PathBuf, String> {
    data.all_files()
        .into_iter()
        .filter(|(s, _, _, _)| s.id == session_id)
        .filter(|(_, scan, r, _)| {
            keep(&r.label)
                && match scan {
                    Some(sc) => scans.is_none_or(|ids| ids.contains(&sc.id.as_str())),
                    None => session_res,
                }
        })
        .map(|(_, scan, r, f)| {
            let p = format!("{dir}/{}", path_in_session(scan, r, f));
            (PathBuf::from(p), f.md5().to_string())
        })
        .collect()
}

/// Runs `xnatfs prefetch ARGS --out DIR` once file by file and once by ZIPs, each into a new
/// DIR, and checks that DIR then holds `want` (as [`expected_out`] gives it).
fn fetched_both_ways(url: &str, home: &Path, args: &[&str], want: &BTreeMap<PathBuf, String>) {
    for method in ["files", "zip"] {
        let out = home.join(method);
        let more = ["--method", method, "--out", out.to_str().unwrap()];
        ok(&prefetch(url, home, &[args, &more[..]].concat()));
        assert_eq!(&actual_out(&out), want, "{method}");
    }
}

fn actual_out(root: &Path) -> BTreeMap<PathBuf, String> {
    walk_files(root)
        .into_iter()
        .map(|(p, _)| {
            let md5 = md5_file(&root.join(&p));
            (p, md5)
        })
        .collect()
}

#[test]
fn whole_session_to_out_both_methods_verified_then_rerun_transfers_nothing() {
    let data = small_sample();
    let want = expected_out(&data, "XNAT_E00001", "XNAT_E00001", None, |_| true, true);
    let mock = start_mock(data);
    for method in ["files", "zip", "auto"] {
        let home = tempfile::tempdir().unwrap();
        let out = home.path().join("out");
        let before = mock.state.file_gets();
        let stderr = ok(&prefetch(
            &mock.url(),
            home.path(),
            &[
                "-E",
                "XNAT_E00001",
                "--session-resources",
                "--out",
                out.to_str().unwrap(),
                "--method",
                method,
            ],
        ));
        assert_eq!(actual_out(&out), want, "method {method}");
        assert!(
            stderr.contains(&format!("{} files", want.len())),
            "{stderr}"
        );
        if method == "files" {
            assert_eq!(mock.state.file_gets() - before, want.len() as u64);
        } else if method == "zip" {
            // One ZIP per resource (7 resources), no per-file requests.
            assert_eq!(mock.state.file_gets() - before, 7, "{method}");
        }
        // No partial files are left.
        assert!(!out.join(".xnatfs-tmp").exists());
        // A re-run transfers nothing.
        let gets = mock.state.file_gets();
        let stderr = ok(&prefetch(
            &mock.url(),
            home.path(),
            &[
                "-E",
                "XNAT_E00001",
                "--session-resources",
                "--out",
                out.to_str().unwrap(),
                "--method",
                method,
            ],
        ));
        assert_eq!(mock.state.file_gets(), gets, "re-run with {method}");
        assert!(stderr.contains("0 files (0 B) downloaded"), "{stderr}");
    }
}

#[test]
fn a_damaged_copy_is_fetched_again() {
    let data = small_sample();
    let want = expected_out(&data, "XNAT_E00002", "XNAT_E00002", None, |_| true, false);
    let mock = start_mock(data);
    let home = tempfile::tempdir().unwrap();
    let out = home.path().join("out");
    let args = ["-E", "XNAT_E00002", "--out", out.to_str().unwrap()];
    ok(&prefetch(&mock.url(), home.path(), &args));
    // Same size, other bytes: found by MD5. And one file removed.
    let (first, _) = want.iter().next().unwrap();
    let damaged = out.join(first);
    let mut bytes = std::fs::read(&damaged).unwrap();
    bytes[200] ^= 0xff;
    std::fs::write(&damaged, &bytes).unwrap();
    let (last, _) = want.iter().last().unwrap();
    std::fs::remove_file(out.join(last)).unwrap();
    let gets = mock.state.file_gets();
    ok(&prefetch(&mock.url(), home.path(), &args));
    assert_eq!(mock.state.file_gets() - gets, 2);
    assert_eq!(actual_out(&out), want);
}

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

#[test]
fn faults_on_ten_percent_of_requests_still_end_complete_and_verified() {
    let data = xnatfs::mock::data::Dataset::sample(&xnatfs::mock::data::SampleSpec {
        dicom_files: 40,
        dicom_size: 8192,
        nifti_size: 500_000,
        scans: 3,
    });
    let want = expected_out(&data, "XNAT_E00001", "XNAT_E00001", None, |_| true, true);
    let mock = start_mock(data);
    mock.state
        .controls
        .fault_percent
        .store(10, Ordering::SeqCst);
    for method in ["files", "zip"] {
        let home = tempfile::tempdir().unwrap();
        let out = home.path().join("out");
        ok(&prefetch(
            &mock.url(),
            home.path(),
            &[
                "-E",
                "XNAT_E00001",
                "--session-resources",
                "--out",
                out.to_str().unwrap(),
                "-w",
                "8",
                "--method",
                method,
            ],
        ));
        assert_eq!(actual_out(&out), want, "{method}");
    }
}

#[test]
fn a_server_that_stays_down_ends_non_zero_with_a_clear_message() {
    let home = tempfile::tempdir().unwrap();
    let out = home.path().join("out");
    let o = prefetch(
        "http://127.0.0.1:9",
        home.path(),
        &["-E", "XNAT_E00001", "--out", out.to_str().unwrap()],
    );
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("cannot reach the server"), "{stderr}");

    // Down after planning: every file fails, each named, exit non-zero.
    let mock = start_mock(small_sample());
    mock.state.controls.files_down.store(true, Ordering::SeqCst);
    let o = prefetch(
        &mock.url(),
        home.path(),
        &[
            "-E",
            "XNAT_E00001",
            "--out",
            out.to_str().unwrap(),
            "-r",
            "NIFTI,SNAPSHOTS",
            "--io-timeout",
            "3",
        ],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{stderr}");
    assert!(
        stderr.contains("failed: ") && stderr.contains("T1w.nii.gz"),
        "{stderr}"
    );
    assert!(stderr.contains("prefetch incomplete"), "{stderr}");
    assert!(walk_files(&out).is_empty(), "nothing under a final name");
}

#[test]
fn prefetch_into_the_cache_then_the_mount_reads_with_no_file_request() {
    let data = small_sample();
    // The assessors' and reconstructions' files too: `--assessors` and `--reconstructions`
    // put them where the mount looks.
    let expected = expected_files(&data);
    let mock = start_mock(data);
    let cache = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let sessions = [
        "XNAT_E00001",
        "XNAT_E00002",
        "XNAT_E00003",
        "XNAT_E00004",
        "XNAT_E00005",
        "XNAT_E00006",
    ];
    for session in sessions {
        ok(&prefetch(
            &mock.url(),
            home.path(),
            &[
                "-E",
                session,
                "--session-resources",
                "--assessors",
                "--reconstructions",
                "--cache-dir",
                cache.path().to_str().unwrap(),
            ],
        ));
    }
    let gets = mock.state.file_gets();
    let m = MountBuilder::new(&mock.url())
        .cache_dir(cache.path())
        .mount();
    for (rel, _, md5) in &expected {
        assert_eq!(&md5_file(&m.mountpoint.join(rel)), md5, "{}", rel.display());
    }
    assert_eq!(
        mock.state.file_gets(),
        gets,
        "every read came from the prefetched cache"
    );
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
fn hostile_names_in_listings_and_zip_entries_never_escape() {
    let mut data = small_sample();
    add_hostile_files(
        &mut data,
        "DEMO/SUBJ01_MR1/scans/1/resources/DICOM",
        &[
            "../../../../escaped.dcm",
            "/tmp/xnatfs-absolute.dcm",
            "a/../../../b.dcm",
        ],
    );
    let mock = start_mock(data);
    let home = tempfile::tempdir().unwrap();
    let root = home.path().join("deep/er");
    let out = root.join("out");
    for method in ["zip", "files"] {
        let o = prefetch(
            &mock.url(),
            home.path(),
            &[
                "-E",
                "XNAT_E00001",
                "-s",
                "1",
                "--out",
                out.to_str().unwrap(),
                "--method",
                method,
            ],
        );
        // The listing parser already refuses them; nothing lands outside --out either way.
        ok(&o);
        assert_eq!(walk_files(&out).len(), 6, "{method}");
    }
    assert_eq!(walk_files(home.path()).len(), 6);
    assert!(!Path::new("/tmp/xnatfs-absolute.dcm").exists());
}

/// `--cache-dir CACHE` or `--out OUT`.
fn destination<'a>(to_cache: bool, out: &'a Path, cache: &'a Path) -> [&'a str; 2] {
    match to_cache {
        true => ["--cache-dir", cache.to_str().unwrap()],
        false => ["--out", out.to_str().unwrap()],
    }
}

/// Partial files left below `root`: anything in a `tmp` or `.xnatfs-tmp` folder, or named
/// like a partial file.
fn partial_files(root: &Path) -> Vec<PathBuf> {
    if !root.exists() {
        return Vec::new();
    }
    walk_files(root)
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| {
            p.components()
                .any(|c| c.as_os_str() == "tmp" || c.as_os_str() == ".xnatfs-tmp")
                || p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(".part-"))
        })
        .collect()
}

#[test]
fn sigint_and_sigterm_leave_no_partial_file_anywhere_exit_130_and_143_and_a_rerun_finishes() {
    let data = Dataset::sample(&SampleSpec {
        dicom_files: 4,
        dicom_size: 600 * 1024,
        nifti_size: 2_000_000,
        scans: 3,
    });
    let want = expected_out(&data, "XNAT_E00001", "XNAT_E00001", None, |_| true, false);
    let mock = start_mock(data);
    let c = &mock.state.controls;
    for (signal, code) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        for method in ["files", "zip"] {
            for to_cache in [false, true] {
                let case = format!("signal {signal}, --method {method}, cache {to_cache}");
                let home = tempfile::tempdir().unwrap();
                let out = home.path().join("out");
                let cache = home.path().join("cache-dir");
                let mut args = vec!["-E", "XNAT_E00001", "-w", "2", "--method", method];
                args.extend(destination(to_cache, &out, &cache));
                // Slow enough that transfers are under way, partial files and all, when the
                // signal comes.
                c.latency_ms.store(200, Ordering::SeqCst);
                c.chunk_delay_ms.store(50, Ordering::SeqCst);
                let gets = mock.state.file_gets();
                let child = spawn_prefetch(&mock.url(), home.path(), &args);
                wait_until(Duration::from_secs(30), "transfers start", || {
                    mock.state.file_gets() >= gets + 2
                });
                // SAFETY: kill(2) on our own child.
                unsafe { libc::kill(child.id() as i32, signal) };
                let o = finish(child, Duration::from_secs(30));
                let said = "xnatfs: prefetch interrupted; no partial file was left; run it again to finish";
                ended(&o, code, said);
                assert_eq!(partial_files(&out), Vec::<PathBuf>::new(), "{case}");
                assert_eq!(partial_files(&cache), Vec::<PathBuf>::new(), "{case}");
                assert!(!out.join(".xnatfs-tmp").exists(), "{case}");
                // Whatever is under a final name is complete and right.
                let got = if to_cache {
                    BTreeMap::new()
                } else {
                    actual_out(&out)
                };
                assert!(got.len() < want.len(), "{case}");
                for (p, md5) in &got {
                    assert_eq!(want.get(p), Some(md5), "{case}: {}", p.display());
                }
                c.latency_ms.store(0, Ordering::SeqCst);
                c.chunk_delay_ms.store(0, Ordering::SeqCst);
                ok(&prefetch(&mock.url(), home.path(), &args));
                if !to_cache {
                    assert_eq!(actual_out(&out), want, "{case}");
                }
                assert_eq!(partial_files(&cache), Vec::<PathBuf>::new(), "{case}");
            }
        }
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

#[test]
fn a_server_that_goes_away_mid_prefetch_stops_with_exit_5_and_a_rerun_resumes() {
    let data = Dataset::sample(&SampleSpec {
        dicom_files: 30,
        dicom_size: 4096,
        nifti_size: 300_000,
        scans: 3,
    });
    let want = expected_out(&data, "XNAT_E00001", "XNAT_E00001", None, |_| true, false);
    let mock = start_mock(data);
    mock.state.controls.latency_ms.store(100, Ordering::SeqCst);
    let home = tempfile::tempdir().unwrap();
    let out = home.path().join("out");
    let args = [
        "-E",
        "XNAT_E00001",
        "--out",
        out.to_str().unwrap(),
        "--method",
        "files",
        "-w",
        "5",
    ];
    let child = spawn_prefetch(&mock.url(), home.path(), &args);
    wait_until(Duration::from_secs(30), "transfers start", || {
        mock.state.file_gets() >= 5
    });
    // The server goes away: connections are refused from now on.
    let (addr, state) = (mock.addr, mock.state.clone());
    drop(mock);
    let started = Instant::now();
    // Without a limit, each of ~90 files would take its 5 attempts (~6 s) in turn.
    let o = finish(child, Duration::from_secs(60));
    let stderr = ended(&o, 5, "xnatfs: server unreachable; ");
    assert!(started.elapsed() < Duration::from_secs(45), "{stderr}");
    let got = actual_out(&out);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("xnatfs: server unreachable; "))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert_eq!(
        line,
        format!(
            "xnatfs: server unreachable; {} of {} files left; run again to resume",
            want.len() - got.len(),
            want.len()
        )
    );
    assert!(got.len() < want.len());
    assert_eq!(partial_files(&out), Vec::<PathBuf>::new());

    // Back on the same address: a re-run fetches only what is missing.
    let mock = xnatfs::mock::MockServer::start_with_state(addr, state).unwrap();
    mock.state.controls.latency_ms.store(0, Ordering::SeqCst);
    let gets = mock.state.file_gets();
    ok(&prefetch(&mock.url(), home.path(), &args));
    assert_eq!(actual_out(&out), want);
    assert_eq!(
        (mock.state.file_gets() - gets) as usize,
        want.len() - got.len()
    );
}

#[test]
fn retries_that_work_are_counted_not_warned_and_failures_are_listed_once_capped() {
    let mut data = Dataset::sample(&SampleSpec {
        dicom_files: 12,
        dicom_size: 4096,
        nifti_size: 300_000,
        scans: 3,
    });
    // Every DICOM file of scans 1 and 2 is gone from the server: 24 failures.
    let mut gone = Vec::new();
    for scan in ["1", "2"] {
        let dir = format!("DEMO/SUBJ01_MR1/scans/{scan}/resources/DICOM");
        for f in resource_files_mut(&mut data, &dir) {
            std::sync::Arc::get_mut(f).unwrap().body_gone = true;
            gone.push(f.path.clone());
        }
    }
    let mock = start_mock(data);
    let home = tempfile::tempdir().unwrap();

    // Three bodies cut short, each fetched again: counted, not warned.
    let ok_out = home.path().join("ok");
    mock.state.controls.truncate_next.store(3, Ordering::SeqCst);
    let stderr = ok(&prefetch(
        &mock.url(),
        home.path(),
        &[
            "-E",
            "XNAT_E00001",
            "-s",
            "3",
            "--method",
            "files",
            "--out",
            ok_out.to_str().unwrap(),
        ],
    ));
    assert!(stderr.contains(" 3 retried, "), "{stderr}");
    assert!(!stderr.contains("WARN"), "{stderr}");

    let out = home.path().join("out");
    let cache = home.path().join("cache-dir");
    for to_cache in [false, true] {
        let mut args = vec!["-E", "XNAT_E00001", "--method", "files"];
        args.extend(destination(to_cache, &out, &cache));
        let o = prefetch(&mock.url(), home.path(), &args);
        let stderr = ended(&o, 4, "\n... and 4 more\n");
        let failed: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("failed: "))
            .collect();
        assert_eq!(failed.len(), 20, "{stderr}");
        for line in &failed {
            // By XNAT path, and by --out path; never by a cache path.
            assert!(
                line.starts_with("failed: /data/experiments/XNAT_E00001/scans/"),
                "{line}"
            );
            if to_cache {
                assert!(!line.contains(" -> "), "{line}");
            } else {
                assert!(
                    line.contains(&format!(" -> {}/XNAT_E00001/scans/", out.display())),
                    "{line}"
                );
            }
        }
        assert!(!stderr.contains(cache.to_str().unwrap()), "{stderr}");
        // Each failure on one line at most: the log does not repeat them.
        for name in &gone {
            let lines = stderr.lines().filter(|l| l.contains(name.as_str())).count();
            assert!(lines <= 1, "{name}: {stderr}");
        }
        assert!(
            !stderr.contains("ERROR") && !stderr.contains("WARN"),
            "{stderr}"
        );
        assert!(stderr.contains(" 24 failed, "), "{stderr}");
    }
}

#[test]
fn an_unsafe_session_resource_is_skipped_the_rest_is_fetched_and_the_exit_is_4() {
    let mut data = small_sample();
    add_hostile_session_resource(&mut data, "DEMO/SUBJ01_MR1", "../UP");
    add_hostile_session_resource(&mut data, "DEMO/SUBJ01_MR1", "..");
    let want = expected_out(
        &data,
        "XNAT_E00001",
        "XNAT_E00001",
        None,
        |l| !l.contains(".."),
        true,
    );
    let mock = start_mock(data);
    let home = tempfile::tempdir().unwrap();
    let out = home.path().join("out");
    for method in ["files", "zip"] {
        let o = prefetch(
            &mock.url(),
            home.path(),
            &[
                "-E",
                "XNAT_E00001",
                "--session-resources",
                "--out",
                out.to_str().unwrap(),
                "--method",
                method,
            ],
        );
        let stderr = ended(
            &o,
            4,
            "skipped /data/experiments/XNAT_E00001/resources/../UP: resource label \"../UP\" is not a usable folder name",
        );
        assert!(stderr.contains(" 2 skipped, "), "{stderr}");
        assert_eq!(actual_out(&out), want, "{method}");
    }
    assert_eq!(walk_files(home.path()).len(), want.len());
    // The dry run tells the same, with the same exit status.
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
    assert_eq!(o.status.code(), Some(4));
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .contains("skipped /data/experiments/XNAT_E00001/resources/../UP")
    );
}

#[test]
fn prefetch_help_and_the_readme_document_every_exit_status() {
    let home = tempfile::tempdir().unwrap();
    let o = xnatfs("http://127.0.0.1:9", home.path())
        .args(["prefetch", "--help"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for (code, what) in [
        (0, "every planned file is present and verified"),
        (1, "failed"),
        (2, "usage"),
        (4, "partial"),
        (5, "server unreachable"),
        (130, "interrupted (SIGINT"),
        (143, "terminated (SIGTERM"),
    ] {
        assert!(
            help.contains(&format!("{code:>5}  {what}")),
            "{code}: {help}"
        );
        assert!(
            readme.contains(&format!("| {code} | {what}")),
            "README: {code}"
        );
    }
    // Usage errors are clap's.
    let o = xnatfs("http://127.0.0.1:9", home.path())
        .args(["prefetch", "--workers", "0"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn out_files_follow_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let mock = start_mock(small_sample());
    for (umask, file_mode, dir_mode) in [(0o027, 0o640, 0o750), (0o002, 0o664, 0o775)] {
        let home = tempfile::tempdir().unwrap();
        let out = home.path().join("out");
        let mut cmd = xnatfs(&mock.url(), home.path());
        cmd.args(["prefetch", "-E", "XNAT_E00001", "-s", "2", "--out"])
            .arg(&out);
        // SAFETY: umask(2) only, between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                libc::umask(umask);
                Ok(())
            });
        }
        let o = cmd.output().unwrap();
        ok(&o);
        let files = walk_files(&out);
        assert_eq!(files.len(), 9);
        for (p, _) in &files {
            let mode = std::fs::metadata(out.join(p)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, file_mode, "umask {umask:o}: {}", p.display());
            let dir = out.join(p).parent().unwrap().to_path_buf();
            let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, dir_mode, "umask {umask:o}: {}", dir.display());
        }
    }
}

#[test]
fn a_symlinked_session_or_temporary_folder_inside_out_is_never_followed() {
    let data = small_sample();
    let want2 = expected_out(&data, "XNAT_E00002", "SUBJ02_MR1", None, |_| true, false);
    let mock = start_mock(data);
    let home = tempfile::tempdir().unwrap();
    let out = home.path().join("out");
    let elsewhere = home.path().join("elsewhere");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, out.join("SUBJ01_MR1")).unwrap();
    let args = [
        "-P",
        "DEMO",
        "-E",
        "SUBJ01_MR1",
        "-E",
        "SUBJ02_MR1",
        "--out",
        out.to_str().unwrap(),
    ];
    let said = format!(
        "skipped session SUBJ01_MR1 (/data/experiments/XNAT_E00001): {}/SUBJ01_MR1 is a symlink; refusing to follow it out of --out",
        out.display()
    );
    ended(&prefetch(&mock.url(), home.path(), &args), 4, &said);
    assert_eq!(walk_files(&elsewhere), Vec::new());
    std::fs::remove_file(out.join("SUBJ01_MR1")).unwrap();
    assert_eq!(actual_out(&out), want2);

    // A deeper folder too.
    std::fs::create_dir_all(out.join("SUBJ01_MR1/scans")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, out.join("SUBJ01_MR1/scans/2")).unwrap();
    let said = "SUBJ01_MR1/scans/2 is a symlink; refusing";
    ended(&prefetch(&mock.url(), home.path(), &args), 4, said);
    assert_eq!(walk_files(&elsewhere), Vec::new());
    assert!(
        out.join("SUBJ01_MR1/scans/1/resources/DICOM/files")
            .is_dir()
    );

    // The temporary folder: nothing is transferred through it.
    std::fs::remove_file(out.join("SUBJ01_MR1/scans/2")).unwrap();
    std::fs::remove_dir_all(out.join("SUBJ02_MR1")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, out.join(".xnatfs-tmp")).unwrap();
    let gets = mock.state.file_gets();
    let said = format!(
        "{}/.xnatfs-tmp is a symlink; refusing to follow it out of --out",
        out.display()
    );
    ended(&prefetch(&mock.url(), home.path(), &args), 1, &said);
    assert_eq!(mock.state.file_gets(), gets);
    assert_eq!(walk_files(&elsewhere), Vec::new());
}

#[test]
fn durations_take_units_and_absurd_ones_are_usage_errors() {
    let mock = start_mock(small_sample());
    let home = tempfile::tempdir().unwrap();
    for (value, want) in [
        ("18446744073709551615", "too long"),
        ("soon", "not a duration"),
        // Not raised to a second without a word.
        ("0", "at least 1s"),
        ("500ms", "at least 1s"),
    ] {
        let out = prefetch(
            &mock.url(),
            home.path(),
            &["-E", "XNAT_E00001", "--io-timeout", value],
        );
        ended(&out, 2, want);
    }
    let out = prefetch(
        &mock.url(),
        home.path(),
        &["-E", "XNAT_E00001", "--io-timeout", "5s", "--dry-run"],
    );
    ok(&out);
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

#[test]
fn verify_size_fetches_right_bytes_unhashed_both_ways_and_a_short_body_still_fails() {
    let mut data = small_sample();
    // A wrong listed digest (notes) and a stale listed size (scan protocol).
    wrong_digest_and_stale_size(&mut data);
    let want = expected_out(&data, "XNAT_E00001", "XNAT_E00001", None, |_| true, true);
    let mock = start_mock(data);
    let home = tempfile::tempdir().unwrap();
    let args = [
        "-E",
        "XNAT_E00001",
        "--session-resources",
        "--verify",
        "size",
    ];
    for method in ["files", "zip"] {
        let out = home.path().join(method);
        let more = ["--method", method, "--out", out.to_str().unwrap()];
        let stderr = ok(&prefetch(
            &mock.url(),
            home.path(),
            &[&args[..], &more[..]].concat(),
        ));
        assert!(!stderr.contains("notes+v2.txt"), "{method}: {stderr}");
        assert_eq!(actual_out(&out), want, "{method}");
    }
    // Bodies cut short by the server every time: failed, nothing under a final name.
    mock.state
        .controls
        .truncate_next
        .store(10_000, Ordering::SeqCst);
    let out = home.path().join("short");
    let more = ["--method", "files", "--out", out.to_str().unwrap()];
    let o = prefetch(&mock.url(), home.path(), &[&args[..], &more[..]].concat());
    assert!(!o.status.success(), "{}", stderr_of(&o));
    assert!(walk_files(&out).is_empty(), "{:?}", walk_files(&out));
    mock.state.controls.truncate_next.store(0, Ordering::SeqCst);
    // By MD5 (the default), the wrong digest is seen too.
    let out = home.path().join("md5");
    let args = ["-E", "XNAT_E00001", "--session-resources", "--out"];
    let stderr = ended(
        &prefetch(
            &mock.url(),
            home.path(),
            &[&args[..], &[out.to_str().unwrap()]].concat(),
        ),
        4,
        "notes+v2.txt",
    );
    assert!(!stderr.contains("scan protocol.txt"), "{stderr}");
    assert!(
        !out.join("XNAT_E00001/resources/PROTOCOLS/files/notes+v2.txt")
            .exists()
    );
}

/// A session of a cohort whose files cannot be had is reported (each file named) and the
/// rest of the cohort completes: exit 4, and a re-run fetches only what was missing.
#[test]
fn a_failing_session_in_a_cohort_is_reported_and_the_rest_complete() {
    let mut data = small_sample().with_cohort(12);
    for scan in ["1", "2"] {
        let dir = format!("COHORT/C0005_MR1/scans/{scan}/resources/DICOM");
        for f in resource_files_mut(&mut data, &dir) {
            std::sync::Arc::get_mut(f).unwrap().body_gone = true;
        }
    }
    let mock = start_mock(data);
    let home = tempfile::tempdir().unwrap();
    let out = home.path().join("out");
    let args = ["-P", "COHORT", "-w", "8", "--out", out.to_str().unwrap()];
    let o = prefetch(&mock.url(), home.path(), &args);
    let stderr = ended(&o, 4, "12 sessions: 66 files (");
    let failed: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("failed: "))
        .collect();
    assert_eq!(failed.len(), 6, "{stderr}");
    assert!(
        failed.iter().all(|l| l.contains("/XNAT_E100005/")),
        "{stderr}"
    );
    assert!(stderr.contains("6 of 72 files left"), "{stderr}");
    assert_eq!(walk_files(&out).len(), 66);
    assert_eq!(dir_names(&out).len(), 11);
    let gets = mock.state.file_gets();
    let o = prefetch(&mock.url(), home.path(), &args);
    ended(&o, 4, "66 files (");
    assert_eq!(
        mock.state.file_gets() - gets,
        0,
        "nothing present is fetched again"
    );
}

/// The assessor files of session `session_id` under `--out` as `dir/assessors/...`, with their
/// MD5s, of the resources `keep` takes.
fn expected_assessor_out(
    data: &Dataset,
    session_id: &str,
    dir: &str,
    keep: impl Fn(&str) -> bool,
) -> BTreeMap<PathBuf, String> {
    expected_derived_out(data, session_id, dir, Derived::Assessor, keep)
}

/// The files of session `session_id`'s derived data of `kind` under `--out`, with their MD5s,
/// of the resources `keep` takes.
fn expected_derived_out(
    data: &Dataset,
    session_id: &str,
    dir: &str,
    kind: Derived,
    keep: impl Fn(&str) -> bool,
) -> BTreeMap<PathBuf, String> {
    data.assessor_files()
        .into_iter()
        .filter(|(s, a, r, _)| s.id == session_id && a.kind == kind && keep(&r.label))
        .map(|(_, a, r, f)| {
            let p = format!("{dir}/{}", derived_path(a, &r.label, &f.path));
            (PathBuf::from(p), f.md5().to_string())
        })
        .collect()
}

fn out_md5s(out: &Path) -> BTreeMap<PathBuf, String> {
    walk_files(out)
        .into_iter()
        .map(|(p, _)| {
            let md5 = md5_file(&out.join(&p));
            (p, md5)
        })
        .collect()
}

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

/// Small ZIP entries are hashed in batches: a series of 40 files, one of them (in the middle
/// of a batch) listed with a wrong digest. Every other file is written and right; that one is
/// fetched again on its own, refused, and reported, with nothing under its name.
#[test]
fn a_wrong_digest_inside_a_hashed_batch_fails_that_file_alone() {
    let mut data = Dataset::sample(&SampleSpec {
        dicom_files: 40,
        dicom_size: 5000,
        nifti_size: 300_000,
        scans: 2,
    });
    let (session, dicom, name) = {
        let s = &data.projects[0].sessions[0];
        let scan = &s.scans[0];
        let r = scan.resources.iter().find(|r| r.label == "DICOM").unwrap();
        let dir = format!("{}/{}/{}", s.project, s.label, resource_dir(Some(scan), r));
        (s.id.clone(), dir, r.files[21].path.clone())
    };
    mock_file_mut(&mut data, &format!("{dicom}/files/{name}")).listed_digest_override =
        Some("0123456789abcdef0123456789abcdef".into());
    let mut want = expected_out(&data, &session, &session, None, |_| true, false);
    let mock = start_mock(data);
    let home = tempfile::tempdir().unwrap();
    let out = home.path().join("out");
    let stderr = ended(
        &prefetch(
            &mock.url(),
            home.path(),
            &[
                "-E",
                &session,
                "--method",
                "zip",
                "--out",
                out.to_str().unwrap(),
            ],
        ),
        4,
        &name,
    );
    let bad: Vec<PathBuf> = want
        .keys()
        .filter(|p| p.to_string_lossy().ends_with(&name))
        .cloned()
        .collect();
    assert_eq!(bad.len(), 1, "{bad:?}");
    want.remove(&bad[0]);
    assert_eq!(actual_out(&out), want, "{stderr}");
    assert!(partial_files(&out).is_empty(), "{:?}", partial_files(&out));
}

#[test]
fn a_full_disk_stops_the_run_at_once_and_says_how_to_resume() {
    // `--out` on a 1 MiB disk, for 4 MiB of files: the first file that does not fit stops
    // the run (the others would fail alike), with every file written whole and verified.
    let Some(disk) = Tmpfs::mount("1m") else {
        return;
    };
    let data = Dataset::sample(&SampleSpec {
        dicom_files: 32,
        dicom_size: 64 << 10,
        nifti_size: 4096,
        scans: 2,
    });
    let want = expected_out(&data, "XNAT_E00001", "XNAT_E00001", None, |_| true, false);
    let mock = start_mock(data);
    let home = tempfile::tempdir().unwrap();
    let out = disk.path.join("out");
    let out_arg = out.to_str().unwrap();
    for method in ["files", "zip"] {
        let gets = mock.state.file_gets();
        let args = [
            "-E",
            "XNAT_E00001",
            "--out",
            out_arg,
            "-w",
            "2",
            "--method",
            method,
        ];
        let stderr = ended(
            &prefetch(&mock.url(), home.path(), &args),
            4,
            "free some space and run again to resume",
        );
        assert!(stderr.contains("local disk full ("), "{stderr}");
        assert!(
            mock.state.file_gets() - gets < want.len() as u64 / 2,
            "{method}: the run went on after the disk was full: {stderr}"
        );
        // What is there is whole and verified; no partial file is left.
        let have = actual_out(&out);
        assert!(!have.is_empty() && have.len() < want.len());
        for (path, md5) in &have {
            assert_eq!(want.get(path), Some(md5), "{method}: {}", path.display());
        }
        std::fs::remove_dir_all(&out).unwrap();
    }
}

/// Resource stats that disagree with the files listings (stale `file_count`/`file_size`) are
/// hints: the session is fetched whole and right, and the run exits 0.
#[test]
fn stale_resource_stats_are_hints_and_the_session_is_fetched() {
    let data = small_sample();
    let want = expected_out(&data, "XNAT_E00001", "XNAT_E00001", None, |_| true, true);
    let mock = start_mock(data);
    mock.state
        .controls
        .stale_file_stats
        .store(true, Ordering::SeqCst);
    let home = tempfile::tempdir().unwrap();
    let out = home.path().join("out");
    let args = [
        "-E",
        "XNAT_E00001",
        "--session-resources",
        "--out",
        out.to_str().unwrap(),
    ];
    ok(&prefetch(&mock.url(), home.path(), &args));
    assert_eq!(actual_out(&out), want);
}

/// A resource whose catalog XNAT cannot read (404 for its files, and for `files?all=true`
/// and its ZIP) is reported and skipped; the rest of the session is fetched, both methods,
/// and the run exits 4. The same for an assessor's resource and a reconstruction's.
#[test]
fn an_unreadable_catalog_is_reported_and_the_rest_is_fetched() {
    let data = small_sample();
    let nifti = data.resource_ref("XNAT_E00001", Some("2"), "NIFTI");
    let want = expected_out(&data, "XNAT_E00001", "XNAT_E00001", None, |_| true, true);
    let want: BTreeMap<PathBuf, String> = want
        .into_iter()
        .filter(|(p, _)| !p.starts_with("XNAT_E00001/scans/2/resources/NIFTI"))
        .filter(|(p, _)| !p.starts_with("XNAT_E00001/resources/QC"))
        .collect();
    let qc = data.resource_ref("XNAT_E00001", None, "QC");
    let petmr = data.session("XNAT_E00005").unwrap();
    let freesurfer = petmr.assessors[0].resources[0].id;
    let pet_ac = petmr.assessors.iter().find(|a| a.id == "PET_AC").unwrap();
    let pet_ac = pet_ac.resources[0].id;
    let mock = start_mock(data);
    mock.state
        .controls
        .make_catalog_unreadable(nifti.id.parse().unwrap());
    mock.state
        .controls
        .make_catalog_unreadable(qc.id.parse().unwrap());
    mock.state.controls.make_catalog_unreadable(freesurfer);
    mock.state.controls.make_catalog_unreadable(pet_ac);
    for method in ["files", "zip"] {
        let home = tempfile::tempdir().unwrap();
        let out = home.path().join("out");
        let args = [
            "-E",
            "XNAT_E00001",
            "--session-resources",
            "--out",
            out.to_str().unwrap(),
            "--method",
            method,
        ];
        let said = "/data/experiments/XNAT_E00001/scans/2/resources/NIFTI/files: XNAT answered 404";
        let stderr = ended(&prefetch(&mock.url(), home.path(), &args), 4, said);
        assert!(
            stderr.contains("cannot read the resource's catalog"),
            "{stderr}"
        );
        // A session-level resource the same way.
        let said = "/data/experiments/XNAT_E00001/resources/QC/files: XNAT answered 404";
        assert!(stderr.contains(said), "{stderr}");
        assert_eq!(actual_out(&out), want, "{method}");
    }
    // An assessor's resource, a reconstruction's: the rest of the session is fetched.
    let home = tempfile::tempdir().unwrap();
    let fetched = |flag: &str, failed: &str| -> Vec<String> {
        let out = home.path().join(flag.trim_start_matches('-'));
        let args = ["-E", "XNAT_E00005", flag, "--out", out.to_str().unwrap()];
        let said = format!("/data/experiments/XNAT_E00005/{failed}: XNAT answered 404");
        ended(&prefetch(&mock.url(), home.path(), &args), 4, &said);
        actual_out(&out)
            .into_keys()
            .map(|p| p.to_string_lossy().into_owned())
            .collect()
    };
    let got = fetched(
        "--assessors",
        "assessors/XNAT_E00008/out/resources/DATA/files",
    );
    assert!(
        got.iter()
            .any(|p| p.contains("/assessors/SUBJ03_PETMR1_qc/")),
        "{got:?}"
    );
    assert!(got.iter().any(|p| p.contains("/scans/")), "{got:?}");
    assert!(!got.iter().any(|p| p.contains("freesurfer")), "{got:?}");
    let got = fetched(
        "--reconstructions",
        "reconstructions/PET_AC/out/resources/NIFTI/files",
    );
    assert!(got.iter().any(|p| p.contains("/scans/")), "{got:?}");
    assert!(
        !got.iter().any(|p| p.contains("reconstructions")),
        "{got:?}"
    );
}

/// A reverse proxy in front of XNAT: its 504s while XNAT is slow are tried again and the
/// session is fetched right; when it answers every request with its 504 or its 200
/// maintenance page, the run fails naming the proxy, and no page is saved as a file.
#[test]
fn a_front_proxys_pages_are_errors_naming_it_never_data() {
    let mock = start_mock(small_sample());
    let home = tempfile::tempdir().unwrap();
    let out = home.path().join("out");
    let c = &mock.state.controls;
    let args = ["-E", "XNAT_E00001", "--out", out.to_str().unwrap()];
    c.gateway_timeout_next.store(3, Ordering::SeqCst);
    ok(&prefetch(&mock.url(), home.path(), &args));
    assert!(!walk_files(&out).is_empty(), "no file fetched");
    for (file, _) in walk_files(&out) {
        assert!(
            !std::fs::read(out.join(&file))
                .unwrap()
                .starts_with(b"<html><head><title>Status page"),
            "{file:?} holds a proxy's page"
        );
    }
    for (control, said) in [
        (
            &c.gateway_timeout_next,
            "answered by nginx/1.24.0, in front of XNAT",
        ),
        (
            &c.proxy_page_next,
            "served by nginx/1.24.0 in front of XNAT",
        ),
    ] {
        let fresh = home.path().join("fresh");
        control.store(1_000_000, Ordering::SeqCst);
        let o = prefetch(
            &mock.url(),
            home.path(),
            &["-E", "XNAT_E00001", "--out", fresh.to_str().unwrap()],
        );
        control.store(0, Ordering::SeqCst);
        let stderr = stderr_of(&o);
        assert!(!o.status.success(), "{stderr}");
        assert!(stderr.contains(said), "{stderr}");
        assert!(walk_files(&fresh).is_empty(), "{:?}", walk_files(&fresh));
    }
}
