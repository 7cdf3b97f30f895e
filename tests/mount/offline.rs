//! With the server away: kept listings and cached files, and --offline mounts of what was
//! prefetched.

use crate::common::*;
use std::path::PathBuf;

#[test]
fn listings_and_cached_files_stay_served_while_the_server_is_away() {
    let data = small_sample();
    let expected = expected_files(&data);
    let mock = start_mock(data);
    // A zero TTL: every listing is asked again, so these come from the kept copies.
    let m = MountBuilder::new(&mock.url())
        .args(&["--dir-ttl", "0", "--io-timeout", "3"])
        .mount();
    let before = walk_files(&m.mountpoint);
    let cached = m.path(SUBJ01_T1W);
    let want = std::fs::read(&cached).unwrap();
    drop(mock);
    assert_eq!(
        walk_files(&m.mountpoint),
        before,
        "listings served while offline"
    );
    assert_eq!(std::fs::read(&cached).unwrap(), want);
    let uncached =
        m.path("DEMO/SUBJ02_MR1/scans/1/resources/DICOM/files/1.3.12.2.1107.5.2.1.00001.dcm");
    assert_errno(
        std::fs::read(&uncached),
        &[libc::EIO, libc::ETIMEDOUT],
        "not cached, server away",
    );
    assert_eq!(before.len(), expected.len());
}

#[test]
fn offline_mount_serves_what_was_prefetched_with_no_server() {
    let data = small_sample();
    let expected: Vec<_> = expected_files(&data)
        .into_iter()
        .filter(|(p, _, _)| p.starts_with("DEMO/SUBJ01_MR1"))
        .collect();
    let mock = start_mock(data);
    let url = mock.url();
    let cache = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    prefetch_into_cache(
        &url,
        home.path(),
        cache.path(),
        &["-E", "XNAT_E00001", "--session-resources"],
    );
    drop(mock);
    // No server at all, and no password needed.
    for args in [vec!["--offline"], vec!["--offline", "-E", "XNAT_E00001"]] {
        let m = MountBuilder::new(&url)
            .cache_dir(cache.path())
            .args(&args)
            .env("XNAT_PASS", "")
            .mount();
        let prefix = if args.len() == 1 { "" } else { "XNAT_E00001/" };
        for (rel, _, md5) in &expected {
            let rel = if prefix.is_empty() {
                rel.clone()
            } else {
                PathBuf::from(prefix).join(rel.strip_prefix("DEMO/SUBJ01_MR1").unwrap())
            };
            assert_eq!(
                &md5_file(&m.mountpoint.join(&rel)),
                md5,
                "{}",
                rel.display()
            );
        }
    }
}
