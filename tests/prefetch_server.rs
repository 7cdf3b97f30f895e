//! `xnatfs prefetch` against what real XNAT servers send: files whose listed size is stale,
//! ZIPs as XNAT writes them (STORED by default, DEFLATED with data descriptors when asked),
//! and sessions shared into another project.

mod common;

use common::*;
use std::path::Path;
use std::process::Output;
use xnatfs::mock::data::Dataset;

const PROTOCOLS: &str = "DEMO/SUBJ01_MR1/resources/PROTOCOLS/files";

fn prefetch(url: &str, home: &Path, args: &[&str]) -> Output {
    let mut child = xnatfs(url, home)
        .arg("prefetch")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > std::time::Duration::from_secs(120) {
            let _ = child.kill();
            panic!("prefetch {args:?} ran over 120 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[track_caller]
fn ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "prefetch failed: {stderr}");
    stderr
}

/// Makes the listed sizes of SUBJ01_MR1's protocol files and T1w image stale (longer, shorter;
/// with and without a digest); returns their mount paths with their true MD5s.
fn stale_sizes(data: &mut Dataset) -> Vec<(String, String)> {
    let protocol = format!("{PROTOCOLS}/scan protocol.txt");
    let notes = format!("{PROTOCOLS}/notes+v2.txt");
    let f = mock_file_mut(data, &protocol);
    f.listed_size = Some(f.size() + 5);
    let f = mock_file_mut(data, &notes);
    f.listed_size = Some(f.size() - 3);
    f.listed_digest = false;
    let f = mock_file_mut(data, SUBJ01_T1W);
    f.listed_size = Some(200_000);
    f.listed_digest = false;
    [protocol, notes, SUBJ01_T1W.to_string()]
        .into_iter()
        .map(|p| {
            let md5 = mock_file(data, &p).md5();
            (p, md5)
        })
        .collect()
}

/// A stale listed size is no reason to refuse a file: per file and by ZIP, into `--out` and
/// into the cache, it is kept whole (the answer's size, the digest when listed), a re-run
/// finds it present, and a mount reads it from the cache.
#[test]
fn files_with_a_stale_listed_size_are_kept_both_ways_and_found_present_again() {
    let mut data = small_sample();
    let files = stale_sizes(&mut data);
    let mock = start_mock(data);
    for method in ["files", "zip"] {
        let home = tempfile::tempdir().unwrap();
        let out = home.path().join("out");
        let args = [
            "-E",
            "XNAT_E00001",
            "--session-resources",
            "--method",
            method,
            "--out",
            out.to_str().unwrap(),
        ];
        ok(&prefetch(&mock.url(), home.path(), &args));
        for (rel, md5) in &files {
            let local = rel.replacen("DEMO/SUBJ01_MR1", "XNAT_E00001", 1);
            assert_eq!(&md5_file(&out.join(&local)), md5, "{method}: {rel}");
        }
        // Into the cache, then again: nothing is fetched the second time.
        let cache = home.path().join("cache");
        let args = [
            "-E",
            "XNAT_E00001",
            "--session-resources",
            "--method",
            method,
        ];
        prefetch_into_cache(&mock.url(), home.path(), &cache, &args);
        let gets = mock.state.file_gets();
        let said = prefetch_into_cache(&mock.url(), home.path(), &cache, &args);
        assert_eq!(mock.state.file_gets(), gets, "{method}: re-run: {said}");
        let m = MountBuilder::new(&mock.url()).cache_dir(&cache).mount();
        for (rel, md5) in &files {
            assert_eq!(&md5_file(&m.path(rel)), md5, "{method}: mount of {rel}");
        }
        assert_eq!(
            mock.state.file_gets(),
            gets,
            "{method}: read from the cache"
        );
    }
}
