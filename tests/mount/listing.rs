//! Listings: the tree, its sizes and modes, roots chosen by -P and -E, large folders.

use crate::common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

#[test]
fn tree_sizes_and_no_downloads_for_listing() {
    let data = small_sample();
    let expected = expected_files(&data);
    let mock = start_mock(data);
    let m = MountBuilder::new(&mock.url()).mount();
    let got = walk_files(&m.mountpoint);
    let want: Vec<(PathBuf, u64)> = expected.iter().map(|(p, s, _)| (p.clone(), *s)).collect();
    assert_eq!(got, want);
    // ls -lR, stat and find never download file contents.
    assert_eq!(mock.state.file_gets(), 0);
    let meta = std::fs::metadata(m.path(SUBJ01_T1W)).unwrap();
    assert_eq!(meta.len(), 300_000);
    assert_eq!(meta.permissions().mode() & 0o777, 0o444);
    let dir = std::fs::metadata(m.path("DEMO")).unwrap();
    assert_eq!(dir.permissions().mode() & 0o777, 0o555);
    // Nested paths inside a resource become folders.
    assert!(
        m.path("DEMO/SUBJ01_MR1/scans/3/resources/DICOM/files/echo1")
            .is_dir()
    );
    // Labels repeat across projects and stay apart.
    assert!(m.path("PILOT/SUBJ01_MR1/scans/2").is_dir());
    // Scans under a label are never asked for by label (XNAT has no such route).
    assert!(
        !mock
            .state
            .request_log()
            .iter()
            .any(|r| r.contains("/experiments/SUBJ01_MR1/scans")),
        "{:?}",
        mock.state.request_log()
    );
    // An EEG session's scans are listed as any other session's.
    assert!(
        m.path("PILOT/SUBJ01_EEG1/scans/1/resources/EDF/files/SUBJ01_EEG1.edf")
            .is_file()
    );
}

#[test]
fn project_and_session_roots() {
    let mock = start_mock(small_sample());
    let m = MountBuilder::new(&mock.url())
        .args(&["-P", "PILOT"])
        .mount();
    assert_eq!(dir_names(&m.mountpoint), ["SUBJ01_EEG1", "SUBJ01_MR1"]);
    drop(m);

    let m = MountBuilder::new(&mock.url())
        .args(&["-E", "XNAT_E00002", "-P", "PILOT", "-E", "SUBJ01_MR1"])
        .mount();
    assert_eq!(dir_names(&m.mountpoint), ["SUBJ01_MR1", "XNAT_E00002"]);
    // The label resolved within PILOT, not DEMO: PILOT's session is XNAT_E00003.
    assert!(m.path("SUBJ01_MR1/scans/2").is_dir());
    let log = mock.state.request_log();
    assert!(
        log.iter()
            .any(|r| r.starts_with("GET /data/experiments/XNAT_E00003/")),
        "{log:?}"
    );
}

#[test]
fn thousands_of_files_list_fully() {
    use xnatfs::mock::data::{Body, MockFile};
    let mut data = small_sample();
    let files = resource_files_mut(&mut data, "DEMO/SUBJ01_MR1/resources/PROTOCOLS");
    for i in 0..3000 {
        files.push(MockFile::new(
            format!("many/file_{i:05}_with_a_fairly_long_name.txt"),
            Body::Memory(bytes::Bytes::from(format!("{i}\n"))),
        ));
    }
    let mock = start_mock(data);
    let m = MountBuilder::new(&mock.url()).mount();
    let dir = m.path("DEMO/SUBJ01_MR1/resources/PROTOCOLS/files/many");
    let names: std::collections::BTreeSet<String> = dir_names(&dir).into_iter().collect();
    assert_eq!(names.len(), 3000);
    assert!(names.contains("file_02999_with_a_fairly_long_name.txt"));
    assert_eq!(
        std::fs::read_to_string(dir.join("file_01234_with_a_fairly_long_name.txt")).unwrap(),
        "1234\n"
    );
}

/// Times are XNAT's: everything in a session shows the session's date, the same on every
/// mount (rsync, make and `find -newer` rely on it).
#[test]
fn files_and_folders_show_their_session_date_on_every_mount() {
    let mock = start_mock(small_sample());
    let cache = tempfile::tempdir().unwrap();
    let march_first_2024 = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_709_251_200);
    for _ in 0..2 {
        let m = MountBuilder::new(&mock.url())
            .cache_dir(cache.path())
            .mount();
        for path in [SUBJ01_T1W, "DEMO/SUBJ01_MR1/scans", "DEMO/SUBJ01_MR1"] {
            let meta = std::fs::metadata(m.path(path)).unwrap();
            assert_eq!(meta.modified().unwrap(), march_first_2024, "{path}");
        }
    }
}

/// The kernel forgets inodes when it drops its caches, and xnatfs forgets them too: every path
/// still lists and reads right afterwards (see also `forget.rs`).
#[test]
fn everything_reads_right_after_the_kernel_forgot_its_inodes() {
    let data = small_sample();
    let expected = expected_files(&data);
    let mock = start_mock(data);
    let m = MountBuilder::new(&mock.url()).mount();
    for round in 0..2 {
        let files = walk_files(&m.mountpoint);
        assert_eq!(files.len(), expected.len(), "round {round}");
        for (path, size, md5) in &expected {
            assert_eq!(
                md5_file(&m.mountpoint.join(path)),
                *md5,
                "{}",
                path.display()
            );
            assert_eq!(
                std::fs::metadata(m.mountpoint.join(path)).unwrap().len(),
                *size
            );
        }
        // Dentries and inodes (root only; elsewhere the second round just repeats).
        let _ = std::fs::write("/proc/sys/vm/drop_caches", "2");
    }
}
