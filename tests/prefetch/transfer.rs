//! The bytes: verified copies, reruns, the cache and `--out`, umask, symlinks and hostile names.

use super::helpers::{actual_out, expected_out, partial_files};
use crate::common::*;
use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use xnatfs::mock::data::Dataset;
use xnatfs::mock::data::SampleSpec;

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
