//! Reading files: concurrent readers, large files read at random, reads beside a stalled
//! download, reads across an expired session, and opens of one file of both kinds.

use crate::common::*;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[test]
fn concurrent_readers_share_one_download() {
    let data = small_sample();
    let mock = start_mock(data);
    mock.state.controls.latency_ms.store(200, Ordering::SeqCst);
    let m = MountBuilder::new(&mock.url()).mount();
    let file = m.path(SUBJ02_T1W);
    assert!(file.is_file());
    let before = mock.state.file_gets();
    let sums: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6).map(|_| s.spawn(|| md5_file(&file))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(sums.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(mock.state.file_gets() - before, 1);
}

#[test]
fn expired_session_is_renewed_mid_mount() {
    for login_page in [false, true] {
        let mock = start_mock_with(
            small_sample(),
            xnatfs::mock::MockOptions {
                login_page_on_expiry: login_page,
                ..Default::default()
            },
        );
        // No crawl-ahead: SUBJ02_MR1's listings are asked after the session expired.
        let m = MountBuilder::new(&mock.url())
            .args(&["--crawl-ahead", "0"])
            .mount();
        let a = m.path("DEMO/SUBJ01_MR1/resources/PROTOCOLS/files/scan protocol.txt");
        assert!(
            std::fs::read_to_string(&a)
                .unwrap()
                .starts_with("protocol for SUBJ01_MR1")
        );
        let logins = mock.state.controls.logins.load(Ordering::SeqCst);
        mock.state.expire_sessions();
        // Both a listing and a file body need the session; both must renew it.
        let b = m.path("DEMO/SUBJ02_MR1/resources/QC/files/qc_report.html");
        assert!(
            std::fs::read_to_string(&b)
                .unwrap()
                .contains("QC for SUBJ02_MR1"),
            "login page mode {login_page}"
        );
        assert_eq!(
            mock.state.controls.logins.load(Ordering::SeqCst),
            logins + 1
        );
    }
}

#[test]
fn an_html_file_read_after_the_session_expired_is_the_file_not_the_login_page() {
    // Sites that answer a dead session with their login page (200, HTML): for an `.html` file
    // the answer's type cannot tell the page from the file, so the session is checked.
    let mock = start_mock_with(
        small_sample(),
        xnatfs::mock::MockOptions {
            login_page_on_expiry: true,
            ..Default::default()
        },
    );
    let m = MountBuilder::new(&mock.url()).mount();
    let folder = m.path("DEMO/SUBJ02_MR1/resources/QC/files");
    // Listed while the session lived: the read after expiry asks for the body alone.
    assert!(std::fs::read_dir(&folder).unwrap().count() > 0);
    let logins = mock.state.controls.logins.load(Ordering::SeqCst);
    mock.state.expire_sessions();
    let text = std::fs::read_to_string(folder.join("qc_report.html")).unwrap();
    assert!(text.contains("QC for SUBJ02_MR1"), "{text:.200}");
    assert_eq!(
        mock.state.controls.logins.load(Ordering::SeqCst),
        logins + 1,
        "logged in again once"
    );
}

#[test]
fn random_ranges_of_a_large_file_read_right_with_and_without_range() {
    use std::io::{Read, Seek, SeekFrom};
    let big = 12 << 20;
    use xnatfs::mock::RangeMode;
    for mode in [RangeMode::Restlet, RangeMode::Ignore, RangeMode::Honour] {
        let data = xnatfs::mock::data::Dataset::sample(&xnatfs::mock::data::SampleSpec {
            dicom_files: 1,
            dicom_size: 100,
            nifti_size: big,
            scans: 2,
        });
        let source = mock_file(&data, SUBJ01_T1W);
        let mock = start_mock(data);
        mock.state.controls.set_range(mode);
        let m = MountBuilder::new(&mock.url())
            .args(&["--max-memory", "1M"])
            .mount();
        let mut f = std::fs::File::open(m.path(SUBJ01_T1W)).unwrap();
        let mut seed = 7u64;
        for _ in 0..60 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            let off = (seed >> 20) % big;
            let len = ((seed >> 8) % 200_000) as usize + 1;
            f.seek(SeekFrom::Start(off)).unwrap();
            let mut got = Vec::new();
            (&mut f).take(len as u64).read_to_end(&mut got).unwrap();
            assert_eq!(
                got,
                source.read_at(off, len).unwrap(),
                "{off}+{len} (range {mode:?})"
            );
        }
    }
}

/// Production XNAT's Restlet 1.1 answers Range with 206 and the whole file from byte 0: `dd`
/// far into a cold file, `tail -c`, and a whole read after them give the file's bytes, with
/// a listed digest and without.
#[test]
fn dd_tail_and_a_whole_read_give_the_files_bytes_from_restlet() {
    let big: u64 = 12 << 20;
    use xnatfs::mock::RangeMode;
    // Restlet's answer as it is, with a listed digest and without; sent chunked (no
    // Content-Length); and a front answering honestly another range than the one asked.
    for (mode, listed_digest) in [
        (RangeMode::Restlet, true),
        (RangeMode::Restlet, false),
        (RangeMode::RestletChunked, false),
        (RangeMode::Aligned, false),
    ] {
        let mut data = xnatfs::mock::data::Dataset::sample(&xnatfs::mock::data::SampleSpec {
            dicom_files: 1,
            dicom_size: 100,
            nifti_size: big,
            scans: 2,
        });
        mock_file_mut(&mut data, SUBJ01_T1W).listed_digest = listed_digest;
        let source = mock_file(&data, SUBJ01_T1W);
        let mock = start_mock(data);
        mock.state.controls.set_range(mode);
        let m = MountBuilder::new(&mock.url()).mount();
        let file = m.path(SUBJ01_T1W);
        let run = |cmd: &mut std::process::Command| {
            let out = cmd.output().unwrap();
            assert!(
                out.status.success(),
                "{cmd:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        };
        // 64 KiB at 9 MiB, the first read of the file.
        let dd = run(std::process::Command::new("dd")
            .arg(format!("if={}", file.display()))
            .args(["bs=64K", "skip=144", "count=1", "status=none"]));
        let want = source.read_at(144 * 65536, 65536).unwrap();
        assert!(
            dd == want,
            "dd at 9 MiB ({mode:?}, digest listed: {listed_digest})"
        );
        let tail = run(std::process::Command::new("tail")
            .args(["-c", "1000"])
            .arg(&file));
        assert!(
            tail == source.read_at(big - 1000, 1000).unwrap(),
            "tail -c ({mode:?})"
        );
        assert_eq!(md5_file(&file), source.md5(), "the whole file ({mode:?})");
    }
}

#[test]
fn a_cached_file_reads_while_another_download_is_stalled() {
    let mock = start_mock(small_sample());
    let m = MountBuilder::new(&mock.url())
        // Long enough that the stalled read is surely still waiting while the rest is
        // served, on a loaded machine too.
        .args(&["--io-timeout", "8"])
        .mount();
    let cached = m.path(SUBJ01_T1W);
    let want = std::fs::read(&cached).unwrap();
    mock.state
        .controls
        .stall_files
        .store(true, Ordering::SeqCst);
    let stalled = m.path(SUBJ02_T1W);
    let blocked = std::thread::spawn(move || std::fs::read(stalled));
    std::thread::sleep(Duration::from_millis(300));
    assert!(!blocked.is_finished(), "the stalled read is waiting");
    // Served while the other is stuck: listings, stat, and the cached file.
    assert_eq!(std::fs::read(&cached).unwrap(), want);
    assert!(m.path("DEMO/SUBJ02_MR1/resources").is_dir());
    assert!(!blocked.is_finished());
    // The stalled read ends with an error within its I/O timeout, not never.
    assert_errno(
        blocked.join().unwrap(),
        &[libc::EIO, libc::ETIMEDOUT],
        "stalled",
    );
    mock.state
        .controls
        .stall_files
        .store(false, Ordering::SeqCst);
}

/// `md5sum` of a file in another process, checked against the source.
fn md5sum_in_another_process(path: &std::path::Path, want: &str) {
    let out = std::process::Command::new("md5sum")
        .arg(path)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "md5sum failed: {said}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(want));
}

/// Linux refuses a FUSE passthrough open beside a page-cached open of one inode and the
/// reverse (EIO): a second reader of a file that became cached while the first kept it open,
/// and a reader of a file whose cache copy went while another kept it open, both read.
#[test]
fn a_second_open_never_conflicts_with_an_open_of_another_kind() {
    use std::io::Read;
    let data = small_sample();
    let (t1w, t2w) = (mock_file(&data, SUBJ01_T1W), mock_file(&data, SUBJ02_T1W));
    let mock = start_mock(data);
    let m = MountBuilder::new(&mock.url()).mount();
    // A cold open, kept open while its download finishes, then a second reader.
    let mut first = std::fs::File::open(m.path(SUBJ01_T1W)).unwrap();
    let mut bytes = Vec::new();
    first.read_to_end(&mut bytes).unwrap();
    md5sum_in_another_process(&m.path(SUBJ01_T1W), &t1w.md5());
    drop(first);
    // A cached file kept open (by the kernel, passthrough), its cache copy cleared, then a
    // second reader.
    md5sum_in_another_process(&m.path(SUBJ02_T1W), &t2w.md5());
    let kept = std::fs::File::open(m.path(SUBJ02_T1W)).unwrap();
    // Removed by hand: `cache clear` leaves an area that a mount uses, and says so.
    let refused = xnatfs(&mock.url(), &m.home)
        .args(["cache", "clear", "--cache-dir"])
        .arg(&m.cache_dir)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains("in use"),
        "{said}"
    );
    let area = m.cache_dir.join(xnatfs::cache::area_name(&mock.url()));
    std::fs::remove_dir_all(area.join("data")).unwrap();
    md5sum_in_another_process(&m.path(SUBJ02_T1W), &t2w.md5());
    drop(kept);
}
