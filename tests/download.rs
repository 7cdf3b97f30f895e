//! The streaming download core against the mock server, without a mount: random reads
//! always give the source's bytes, whatever the server does with Range (answers it as XNAT's
//! Restlet does, honours it, or ignores it), with a listed digest or without.

mod common;

use common::{SUBJ01_T1W, Tmpfs, demo_client, mock_file, mock_file_mut, start_mock};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use xnatfs::cache::Cache;
use xnatfs::fetch::Fetcher;
use xnatfs::mock::data::{Body, Dataset, MockFile, SampleSpec};
use xnatfs::mock::{MockServer, MockState, RangeMode};
use xnatfs::xnat::{RemoteFile, ResourceRef, XnatApi};

const BIG: u64 = 24 << 20;

struct Setup {
    mock: MockServer,
    fetcher: Arc<Fetcher>,
    res: ResourceRef,
    file: RemoteFile,
    source: Arc<MockFile>,
    _cache: tempfile::TempDir,
}

fn setup(rt: &tokio::runtime::Runtime, range: RangeMode) -> Setup {
    setup_with(rt, range, true)
}

fn setup_with(rt: &tokio::runtime::Runtime, range: RangeMode, listed_digest: bool) -> Setup {
    let mut data = Dataset::sample(&SampleSpec {
        dicom_files: 2,
        dicom_size: 1000,
        nifti_size: BIG,
        scans: 2,
    });
    mock_file_mut(&mut data, SUBJ01_T1W).listed_digest = listed_digest;
    let source = mock_file(&data, SUBJ01_T1W);
    let res = data.resource_ref("XNAT_E00001", Some("2"), "NIFTI");
    let mock = start_mock(data);
    mock.state.controls.set_range(range);
    let api = demo_client(&mock.url());
    let file = rt
        .block_on(api.files(&res))
        .unwrap()
        .into_iter()
        .next()
        .unwrap();
    assert_eq!(file.size, BIG);
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), &mock.url()).unwrap();
    let fetcher = Fetcher::new(api, rt.handle().clone(), cache, Duration::from_secs(10));
    Setup {
        mock,
        fetcher,
        res,
        file,
        source,
        _cache: dir,
    }
}

/// A deterministic pseudo-random sequence.
fn lcg(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *seed >> 33
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn random_reads_always_give_the_source_bytes() {
    let modes = [
        (RangeMode::Restlet, true),
        (RangeMode::Restlet, false),
        (RangeMode::Ignore, true),
        (RangeMode::Honour, true),
        (RangeMode::Honour, false),
    ];
    for (i, (range, listed_digest)) in modes.into_iter().enumerate() {
        let rt = runtime();
        let s = setup_with(&rt, range, listed_digest);
        let mut seed = 42 + i as u64;
        let reads: Vec<(u64, u32)> = (0..150)
            .map(|_| {
                let off = lcg(&mut seed) % (BIG + 1000);
                let len = (lcg(&mut seed) % (300_000)) as u32 + 1;
                (off, len)
            })
            .collect();
        let how = format!("{range:?}, digest listed: {listed_digest}");
        assert_eq!(s.file.digest.is_some(), listed_digest, "{how}");
        rt.block_on(async {
            let tasks: Vec<_> = reads
                .iter()
                .map(|&(off, len)| {
                    let (f, res, file) = (s.fetcher.clone(), s.res.clone(), s.file.clone());
                    tokio::spawn(async move { (off, len, f.read(&res, &file, off, len).await) })
                })
                .collect();
            for t in tasks {
                let (off, len, got) = t.await.unwrap();
                let got = got.unwrap_or_else(|e| panic!("read {off}+{len} ({how}): {e}"));
                let want = s.source.read_at(off, len as usize).unwrap();
                assert_eq!(got, want, "bytes at {off}+{len} ({how})");
            }
        });
        // After all that, the whole file lands in the cache, verified.
        let path = rt.block_on(s.fetcher.fetch(&s.res, &s.file)).unwrap();
        assert_eq!(xnatfs::cache::hash_file(&path).unwrap(), s.source.md5());
        // The download that ended is let go, and with it its open file: a copy evicted later
        // gives its space back at once.
        assert!(s.fetcher.running(&s.res, &s.file).is_none(), "{how}");
        let honoured = range == RangeMode::Honour;
        assert_eq!(s.fetcher.range_honoured(), Some(honoured), "{how}");
    }
}

/// Production XNAT (Restlet 1.1) answers a range with 206 and the whole file from byte 0: a
/// read far into the file, and one of its last bytes (`tail -c`), first of all, get the
/// file's own bytes; the rest comes from the same whole body.
#[test]
fn far_and_tail_reads_get_the_right_bytes_from_restlet() {
    for listed_digest in [true, false] {
        for off in [20 << 20, BIG - 100] {
            let rt = runtime();
            let s = setup_with(&rt, RangeMode::Restlet, listed_digest);
            let got = rt
                .block_on(s.fetcher.read(&s.res, &s.file, off, 4096))
                .unwrap_or_else(|e| panic!("read at {off}: {e}"));
            let want = s.source.read_at(off, 4096).unwrap();
            assert_eq!(got, want, "read at {off} (digest listed: {listed_digest})");
            assert_eq!(s.fetcher.range_honoured(), Some(false));
            let path = rt.block_on(s.fetcher.fetch(&s.res, &s.file)).unwrap();
            assert_eq!(xnatfs::cache::hash_file(&path).unwrap(), s.source.md5());
            // One body was enough: the Restlet answer was used as the whole file.
            let sent = s.mock.state.controls.bytes_sent.load(Ordering::SeqCst);
            assert_eq!(sent, BIG, "read at {off} (digest listed: {listed_digest})");
        }
    }
}

#[test]
fn the_first_bytes_come_before_the_whole_file() {
    let rt = runtime();
    let s = setup(&rt, RangeMode::Ignore);
    // A slow link: 50 ms per 256 KiB, so the 24 MiB body takes about 5 s, and half of it
    // over 2 s (time for a loaded machine to hand the head to the reader; the rest is not
    // waited for).
    s.mock
        .state
        .controls
        .chunk_delay_ms
        .store(50, Ordering::SeqCst);
    let head = rt
        .block_on(s.fetcher.read(&s.res, &s.file, 0, 4096))
        .unwrap();
    assert_eq!(head, s.source.read_at(0, 4096).unwrap());
    let sent = s.mock.state.controls.bytes_sent.load(Ordering::SeqCst);
    assert!(sent < BIG / 2, "the head came after {sent} bytes");
    assert!(
        s.fetcher.cache().lookup(&s.res, &s.file).is_none(),
        "not complete yet"
    );
    s.mock
        .state
        .controls
        .chunk_delay_ms
        .store(0, Ordering::SeqCst);
}

#[test]
fn with_range_a_far_read_fetches_only_what_is_near_it() {
    let rt = runtime();
    let s = setup(&rt, RangeMode::Honour);
    let off = 20 << 20;
    let got = rt
        .block_on(s.fetcher.read(&s.res, &s.file, off, 4096))
        .unwrap();
    assert_eq!(got, s.source.read_at(off, 4096).unwrap());
    // Give any readahead a moment to finish, then count what came.
    std::thread::sleep(Duration::from_millis(300));
    let sent = s.mock.state.controls.bytes_sent.load(Ordering::SeqCst);
    assert!(sent <= 4 << 20, "{sent} bytes were sent for one 4 KiB read");
}

#[test]
fn a_body_that_disagrees_with_its_digest_is_an_error_at_the_end() {
    let mut data = Dataset::sample(&SampleSpec {
        dicom_files: 1,
        dicom_size: 100,
        nifti_size: 8 << 20,
        scans: 2,
    });
    mock_file_mut(&mut data, SUBJ01_T1W).listed_digest_override = Some("0".repeat(32));
    let res = data.resource_ref("XNAT_E00001", Some("2"), "NIFTI");
    let mock = start_mock(data);
    let rt = runtime();
    let api = demo_client(&mock.url());
    let file = rt.block_on(api.files(&res)).unwrap().remove(0);
    let dir = tempfile::tempdir().unwrap();
    let fetcher = Fetcher::new(
        api,
        rt.handle().clone(),
        Cache::open(dir.path(), &mock.url()).unwrap(),
        Duration::from_secs(10),
    );
    // The end of the file is only served once the whole file is checked: here, never.
    let e = rt
        .block_on(fetcher.read(&res, &file, file.size - 10, 10))
        .unwrap_err();
    assert!(e.to_string().contains("MD5"), "{e}");
    assert!(fetcher.cache().lookup(&res, &file).is_none());
    let _ = (MockState::new, Body::Memory);
}

/// A disk that fills up at a file's last bytes: the read fails with "local disk full" at once,
/// after one request. The run whose last chunk could not be written used to pass for done, so
/// its reader started it again, and again, without end (a field test on a full tmpfs: 392
/// whole-file requests in 20 s, the reader stuck in the kernel).
#[test]
fn a_disk_full_at_the_last_bytes_fails_the_read_instead_of_fetching_it_again_and_again() {
    let Some(disk) = Tmpfs::mount("8m") else {
        return;
    };
    let size: u64 = 6 << 20;
    let data = Dataset::sample(&SampleSpec {
        dicom_files: 1,
        dicom_size: 1000,
        nifti_size: size,
        scans: 2,
    });
    let res = data.resource_ref("XNAT_E00001", Some("2"), "NIFTI");
    let mock = start_mock(data);
    let rt = runtime();
    let api = demo_client(&mock.url());
    let file = rt.block_on(api.files(&res)).unwrap().remove(0);
    assert_eq!(file.size, size);
    let cache = Cache::open(&disk.path, &mock.url()).unwrap();
    // Room for all of the file but its last page (its space cannot be reserved then).
    let filler = disk.free() - (size - 4096);
    std::fs::write(disk.path.join("filler"), vec![1u8; filler as usize]).unwrap();
    assert_eq!(disk.free(), size - 4096);
    let fetcher = Fetcher::new(api, rt.handle().clone(), cache, Duration::from_secs(10));
    let got = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), fetcher.fetch(&res, &file)).await
    });
    let err = got
        .expect("the read ends (it fetched the file again and again)")
        .expect_err("the file cannot fit");
    assert!(
        matches!(err, xnatfs::fetch::error::FetchError::DiskFull(_)),
        "{err}"
    );
    assert_eq!(
        mock.state.file_gets(),
        1,
        "one request, not one per retry of a reader"
    );
    // The partial file is given back: the disk has its room again.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(disk.free(), size - 4096);
}
