//! When things go wrong: faults, a server down or going away, signals, a full disk, bad items skipped.

use super::helpers::{actual_out, destination, expected_out, partial_files};
use crate::common::*;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;
use xnatfs::mock::data::Dataset;
use xnatfs::mock::data::SampleSpec;

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
