//! Series read-ahead and `--verify` through a real mount: a sequential reader over a cold
//! DICOM series gets the rest fetched ahead of it (each file once, counted by the mock as
//! `/mock/stats` shows it), a single `head` or a listing fetches nothing more; `--verify size`
//! reads right bytes without hashing, and a short body is still an error.

use crate::common::*;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;
use xnatfs::mock::data::{Dataset, SampleSpec};

const SERIES: &str = "DEMO/SUBJ01_MR1/scans/1/resources/DICOM/files";
const FILES: usize = 40;

fn series_sample() -> Dataset {
    Dataset::sample(&SampleSpec {
        dicom_files: FILES,
        dicom_size: 16 * 1024,
        nifti_size: 300_000,
        scans: 2,
    })
}

/// The series' files in the mount, in name order.
fn series_files(m: &Mount) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(m.path(SERIES))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), FILES);
    files
}

/// File bodies the mock was asked for since `before`, once `want` were (30 s at most: the
/// read-ahead works in the background, and a loaded machine may hold it up) and they stopped
/// coming (none for 300 ms): `want`, or more if more came.
fn gets_settled(mock: &xnatfs::mock::MockServer, before: u64, want: u64) -> u64 {
    let start = std::time::Instant::now();
    while mock.state.file_gets() - before < want && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut last = mock.state.file_gets();
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = mock.state.file_gets();
        if now == last {
            return now - before;
        }
        last = now;
    }
}

fn want_md5(rel: &Path) -> String {
    mock_file(&series_sample(), &rel.to_string_lossy()).md5()
}

#[test]
fn a_sequential_reader_gets_a_cold_series_fetched_ahead_each_file_once() {
    let mock = start_mock(series_sample());
    mock.state.controls.latency_ms.store(20, Ordering::SeqCst);
    let m = MountBuilder::new(&mock.url()).mount();
    let files = series_files(&m);
    let before = mock.state.file_gets();
    // md5sum, one file after another: two cold files start the read-ahead.
    for f in &files[..2] {
        md5_file(f);
    }
    wait_until(Duration::from_secs(30), "files fetched ahead", || {
        mock.state.file_gets() - before >= 2 + 8
    });
    for f in &files {
        let rel = f.strip_prefix(&m.mountpoint).unwrap();
        assert_eq!(md5_file(f), want_md5(rel), "{}", rel.display());
    }
    assert_eq!(
        gets_settled(&mock, before, FILES as u64),
        FILES as u64,
        "each file fetched once: reads join the read-ahead's downloads"
    );
}

#[test]
fn a_single_head_or_a_listing_fetches_one_file_at_most() {
    let mock = start_mock(series_sample());
    let m = MountBuilder::new(&mock.url()).mount();
    let files = series_files(&m);
    let before = mock.state.file_gets();
    // ls -l, stat: no body.
    for f in &files {
        std::fs::metadata(f).unwrap();
    }
    assert_eq!(gets_settled(&mock, before, 0), 0);
    // head -c 132 of one file (a DICOM preamble), twice.
    for _ in 0..2 {
        let mut head = [0u8; 132];
        std::fs::File::open(&files[5])
            .unwrap()
            .read_exact(&mut head)
            .unwrap();
    }
    assert_eq!(
        gets_settled(&mock, before, 1),
        1,
        "one head downloads one file"
    );
}

#[test]
fn the_read_ahead_holds_its_window_when_the_reader_stops_and_0_turns_it_off() {
    let mock = start_mock(series_sample());
    let m = MountBuilder::new(&mock.url())
        .args(&["--series-readahead", "2"])
        .mount();
    let files = series_files(&m);
    let before = mock.state.file_gets();
    md5_file(&files[0]);
    md5_file(&files[1]);
    // Two read, then 16 ahead of the reader at most (4 x 2, at least 16), and no more while
    // it reads nothing.
    assert_eq!(gets_settled(&mock, before, 2 + 16), 2 + 16);
    drop(m);

    let off = MountBuilder::new(&mock.url())
        .args(&["--series-readahead", "0"])
        .mount();
    let files = series_files(&off);
    let before = mock.state.file_gets();
    for f in &files[..4] {
        md5_file(f);
    }
    assert_eq!(gets_settled(&mock, before, 4), 4, "off: file by file");
}

/// The extended attribute `name` of the file at `path`, if it has one.
fn xattr(path: &Path, name: &str) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = [0u8; 64];
    // SAFETY: both strings are NUL-terminated; buf is writable for its length.
    let got = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (got >= 0).then(|| String::from_utf8_lossy(&buf[..got as usize]).into_owned())
}

#[test]
fn verify_size_reads_right_bytes_unhashed_and_a_short_body_is_still_an_error() {
    let mut data = series_sample();
    let (wrong_digest, stale) = wrong_digest_and_stale_size(&mut data);
    let mock = start_mock(data);
    let cache = tempfile::tempdir().unwrap();
    let m = MountBuilder::new(&mock.url())
        .cache_dir(cache.path())
        .args(&["--verify", "size"])
        .mount();
    let nifti = m.path(SUBJ01_T1W);
    let t1w = mock_file(&series_sample(), SUBJ01_T1W).md5();
    assert_eq!(md5_file(&nifti), t1w);
    // Not hashed: the copy keeps no verified digest, only the one it was listed with.
    let cached = walk_files(cache.path())
        .into_iter()
        .map(|(p, _)| cache.path().join(p))
        .find(|p| p.ends_with("scans/2/resources/NIFTI/files/T1w.nii.gz"))
        .expect("cached");
    if let Some(listed) = xattr(&cached, "user.xnatfs.listed-md5") {
        assert_eq!(listed, t1w);
        assert_eq!(xattr(&cached, "user.xnatfs.md5"), None);
    }
    // Unhashed, a wrong listed digest goes unseen; a stale listed size reads whole.
    assert!(std::fs::read(m.path(&wrong_digest)).is_ok());
    let want = mock_file(&series_sample(), &stale).md5();
    assert_eq!(md5_file(&m.path(&stale)), want);
    // A body cut short by the server every time: EIO.
    mock.state
        .controls
        .truncate_next
        .store(100, Ordering::SeqCst);
    let other = m.path(SUBJ02_T1W);
    assert_errno(std::fs::read(&other), &[libc::EIO], "truncated every time");
    mock.state.controls.truncate_next.store(0, Ordering::SeqCst);
    drop(m);

    // An md5 mount of the same cache hashes the size-checked copy once, then serves it.
    let gets = mock.state.file_gets();
    let again = MountBuilder::new(&mock.url())
        .cache_dir(cache.path())
        .mount();
    assert_eq!(md5_file(&again.path(SUBJ01_T1W)), t1w);
    assert_eq!(mock.state.file_gets(), gets, "served from the cache");
    if xattr(&cached, "user.xnatfs.listed-md5").is_some() {
        assert_eq!(xattr(&cached, "user.xnatfs.md5"), Some(t1w));
    }
    assert_errno(
        std::fs::read(again.path(&wrong_digest)),
        &[libc::EIO],
        "md5 sees the wrong digest",
    );
}
