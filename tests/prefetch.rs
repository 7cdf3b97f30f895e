//! `xnatfs prefetch` against the mock XNAT server, run as the real binary.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use xnatfs::mock::data::Dataset;

/// Runs `xnatfs prefetch ARGS` with a private HOME; panics if it runs over 120 s.
fn prefetch(url: &str, home: &Path, args: &[&str]) -> Output {
    let mut child = xnatfs(url, home)
        .arg("prefetch")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("prefetch {args:?} ran over 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Checks that a run ended with exit status `code` and said `want` on stderr; returns stderr.
#[track_caller]
fn ended(out: &Output, code: i32, want: &str) -> String {
    let stderr = stderr_of(out);
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    assert!(stderr.contains(want), "wanted {want:?} in: {stderr}");
    stderr
}

fn ok(out: &Output) -> String {
    let stderr = stderr_of(out);
    assert!(out.status.success(), "prefetch failed: {stderr}");
    stderr
}

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
    let expected = expected_files(&data);
    let mock = start_mock(data);
    let cache = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    for session in ["XNAT_E00001", "XNAT_E00002", "XNAT_E00003", "XNAT_E00004"] {
        ok(&prefetch(
            &mock.url(),
            home.path(),
            &[
                "-E",
                session,
                "--session-resources",
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

#[test]
fn ctrl_c_leaves_no_partial_file_and_a_rerun_finishes() {
    let data = small_sample();
    let want = expected_out(&data, "XNAT_E00001", "XNAT_E00001", None, |_| true, false);
    let mock = start_mock(data);
    mock.state.controls.latency_ms.store(100, Ordering::SeqCst);
    let home = tempfile::tempdir().unwrap();
    let out = home.path().join("out");
    let mut child = xnatfs(&mock.url(), home.path())
        .args([
            "prefetch",
            "-E",
            "XNAT_E00001",
            "--method",
            "files",
            "-w",
            "2",
            "--out",
            out.to_str().unwrap(),
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(
        Duration::from_secs(30),
        "3 files fetched within 30 s",
        || mock.state.file_gets() >= 3,
    );
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    // Whatever is under a final name is complete and right.
    let got = actual_out(&out);
    assert!(got.len() < want.len());
    for (p, md5) in &got {
        assert!(
            !p.starts_with(".xnatfs-tmp"),
            "partial file left: {}",
            p.display()
        );
        assert_eq!(want.get(p), Some(md5), "{}", p.display());
    }
    mock.state.controls.latency_ms.store(0, Ordering::SeqCst);
    ok(&prefetch(
        &mock.url(),
        home.path(),
        &["-E", "XNAT_E00001", "--out", out.to_str().unwrap()],
    ));
    assert_eq!(actual_out(&out), want);
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
        (
            vec!["-E", "XNAT_E00001", "-s", "3-1"],
            "a range goes from low to high (1-3)",
        ),
    ] {
        let mut all = args.clone();
        all.extend(["--out", out_arg]);
        ended(&prefetch(&mock.url(), home.path(), &all), 1, want);
        assert_eq!(mock.state.file_gets(), 0, "{args:?}");
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
fn an_unsafe_session_resource_is_skipped_and_the_rest_is_fetched() {
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
            1,
            "skipped /data/experiments/XNAT_E00001/resources/../UP: resource label \"../UP\" is not a usable folder name",
        );
        assert!(stderr.contains(" 2 failed, "), "{stderr}");
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
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .contains("skipped /data/experiments/XNAT_E00001/resources/../UP")
    );
}

#[test]
fn a_symlinked_folder_inside_out_is_never_followed() {
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
    ended(&prefetch(&mock.url(), home.path(), &args), 1, &said);
    assert_eq!(walk_files(&elsewhere), Vec::new());
    std::fs::remove_file(out.join("SUBJ01_MR1")).unwrap();
    assert_eq!(actual_out(&out), want2);

    // A deeper folder too.
    std::fs::create_dir_all(out.join("SUBJ01_MR1/scans")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, out.join("SUBJ01_MR1/scans/2")).unwrap();
    let said = "SUBJ01_MR1/scans/2 is a symlink; refusing";
    ended(&prefetch(&mock.url(), home.path(), &args), 1, said);
    assert_eq!(walk_files(&elsewhere), Vec::new());
    assert!(
        out.join("SUBJ01_MR1/scans/1/resources/DICOM/files")
            .is_dir()
    );
}
