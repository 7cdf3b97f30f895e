//! Whole session trees: a session's folders from two requests, the fallback to listing folder
//! by folder, crawl-ahead within its bound, and offline after a crawl.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use xnatfs::mock::data::MockSession;
use xnatfs::mock::data::{Body, Dataset, MockFile, MockProject, MockResource, MockScan};

/// A project `COHORT` of `n` small sessions: 2 scans of one DICOM resource with 3 files
/// each, and one session resource.
fn cohort(n: usize) -> Dataset {
    let mut next_id = 5000;
    let mut resource = |label: &str, files: usize, seed: usize| {
        next_id += 1;
        MockResource {
            id: next_id,
            label: label.into(),
            format: "DICOM".into(),
            content: "RAW".into(),
            files: (0..files)
                .map(|i| {
                    let body = Body::Memory(format!("file {seed} {next_id} {i}\n").into());
                    MockFile::new(format!("{i}.dcm"), body)
                })
                .collect(),
        }
    };
    let sessions = (0..n)
        .map(|i| {
            let scans = (1..=2)
                .map(|sc| MockScan {
                    id: sc.to_string(),
                    scan_type: "T1w".into(),
                    series_description: "T1w".into(),
                    quality: "usable".into(),
                    xsi_type: "xnat:mrScanData".into(),
                    resources: vec![resource("DICOM", 3, i)],
                })
                .collect();
            Arc::new(MockSession {
                id: format!("COH_E{i:05}"),
                label: format!("SUBJ{i:05}_MR1"),
                project: "COHORT".into(),
                subject_id: format!("COH_S{i:05}"),
                subject_label: format!("SUBJ{i:05}"),
                xsi_type: "xnat:mrSessionData".into(),
                date: "2024-03-01".into(),
                scans,
                resources: vec![resource("NOTES", 1, i)],
                assessors: Vec::new(),
            })
        })
        .collect();
    Dataset {
        projects: vec![MockProject {
            id: "COHORT".into(),
            name: "Cohort".into(),
            sessions,
        }],
        shares: Vec::new(),
        configs: Vec::new(),
    }
}

fn listings(mock: &xnatfs::mock::MockServer) -> u64 {
    mock.state.controls.listings.load(Ordering::SeqCst)
}

/// The files under `dir`, relative to `root`, with their sizes.
fn files_under(root: &Path, dir: &str) -> Vec<(PathBuf, u64)> {
    walk_files(&root.join(dir))
        .into_iter()
        .map(|(p, s)| (Path::new(dir).join(p), s))
        .collect()
}

fn expected_under(data: &Dataset, dir: &str) -> Vec<(PathBuf, u64)> {
    let mut want: Vec<_> = expected_files(data)
        .into_iter()
        .filter(|(p, _, _)| p.starts_with(dir))
        .map(|(p, s, _)| (p, s))
        .collect();
    want.sort();
    want
}

#[test]
fn a_sessions_folders_come_from_two_requests() {
    let data = small_sample();
    let mock = start_mock(data.clone());
    let m = MountBuilder::new(&mock.url())
        .args(&["--crawl-ahead", "0"])
        .mount();
    assert!(dir_names(&m.path("DEMO")).contains(&"SUBJ01_MR1".to_string()));
    let before = listings(&mock);
    // find inside one session: every folder and file of it.
    let mut got = files_under(&m.mountpoint, "DEMO/SUBJ01_MR1");
    got.sort();
    assert_eq!(got, expected_under(&data, "DEMO/SUBJ01_MR1"));
    assert_eq!(
        listings(&mock) - before,
        2,
        "{:?}",
        mock.state.request_log()
    );
    let log = mock.state.request_log();
    assert!(
        log.iter()
            .any(|r| r == "GET /data/experiments/XNAT_E00001?format=json")
    );
    assert!(
        log.iter()
            .any(|r| r == "GET /data/experiments/XNAT_E00001/files?format=json&all=true")
    );
    assert_eq!(mock.state.file_gets(), 0);
    // The files read right, found by the URIs of the whole listing.
    let t1w = mock_file(&data, SUBJ01_T1W);
    assert_eq!(md5_file(&m.path(SUBJ01_T1W)), t1w.md5());
}

#[test]
fn a_whole_tree_that_does_not_add_up_is_listed_folder_by_folder() {
    let data = small_sample();
    let mock = start_mock(data.clone());
    // As a server whose session files listing ignores all=true: the scans' files are
    // missing from it, and the mount must not show empty scan resources.
    mock.state
        .controls
        .files_all_ignored
        .store(true, Ordering::SeqCst);
    let m = MountBuilder::new(&mock.url())
        .args(&["--crawl-ahead", "0"])
        .mount();
    let mut got = files_under(&m.mountpoint, "DEMO/SUBJ02_MR1");
    got.sort();
    assert_eq!(got, expected_under(&data, "DEMO/SUBJ02_MR1"));
    let log = mock.state.request_log();
    assert!(
        log.iter()
            .any(|r| r.starts_with("GET /data/experiments/XNAT_E00002/scans?")),
        "{log:?}"
    );
    assert!(
        log.iter().any(
            |r| r.contains("/data/experiments/XNAT_E00002/scans/2/resources/")
                && r.contains("/files?")
        ),
        "{log:?}"
    );
}

#[test]
fn crawl_ahead_stays_within_its_bound_and_fetches_no_bodies() {
    let data = cohort(40);
    let mock = start_mock(data.clone());
    mock.state.controls.latency_ms.store(30, Ordering::SeqCst);
    let cache = tempfile::tempdir().unwrap();
    let m = MountBuilder::new(&mock.url())
        .cache_dir(cache.path())
        .args(&["-P", "COHORT", "--crawl-ahead", "3"])
        .mount();
    let before = listings(&mock);
    let mut got = walk_files(&m.mountpoint);
    got.sort();
    let want: Vec<_> = expected_under(&data, "COHORT")
        .into_iter()
        .map(|(p, s)| (p.strip_prefix("COHORT").unwrap().to_path_buf(), s))
        .collect();
    assert_eq!(got, want);
    // Two requests a session at most, crawl-ahead included.
    assert!(
        listings(&mock) - before <= 2 * 40,
        "{}",
        listings(&mock) - before
    );
    // 3 trees ahead (2 requests each), and the one the walker waits for.
    let most = mock
        .state
        .controls
        .listings_max_in_flight
        .load(Ordering::SeqCst);
    assert!(most <= 2 * (3 + 1), "{most} listings at once");
    assert!(most > 2, "crawl-ahead ran nothing in parallel ({most})");
    assert_eq!(mock.state.file_gets(), 0);
    drop(m);

    // Offline after the crawl: the same folders, from the listings kept on disk.
    let url = mock.url();
    drop(mock);
    let m = MountBuilder::new(&url)
        .cache_dir(cache.path())
        .args(&["-P", "COHORT", "--offline"])
        .env("XNAT_PASS", "")
        .mount();
    let mut offline = walk_files(&m.mountpoint);
    offline.sort();
    assert_eq!(offline, got);
}
