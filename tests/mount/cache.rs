//! The cache: files served from it (also after a remount), its size cap, a full cache disk,
//! and kept listings on a remount.

use crate::common::*;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[test]
fn every_file_reads_right_then_comes_from_cache_and_survives_a_remount() {
    let data = small_sample();
    let expected = expected_files(&data);
    let mock = start_mock(data);
    let cache = tempfile::tempdir().unwrap();
    let start = Instant::now();
    {
        let m = MountBuilder::new(&mock.url())
            .cache_dir(cache.path())
            .mount();
        for (rel, _, md5) in &expected {
            assert_eq!(&md5_file(&m.mountpoint.join(rel)), md5, "{}", rel.display());
        }
        let cold = start.elapsed();
        assert_eq!(
            mock.state.file_gets(),
            expected.len() as u64,
            "one GET per file"
        );
        let warm_start = Instant::now();
        for (rel, _, md5) in &expected {
            assert_eq!(&md5_file(&m.mountpoint.join(rel)), md5);
        }
        eprintln!(
            "md5sum of {} files: cold {:?}, warm {:?}",
            expected.len(),
            cold,
            warm_start.elapsed()
        );
        assert_eq!(
            mock.state.file_gets(),
            expected.len() as u64,
            "second read from cache"
        );
    }
    // A new mount on the same cache reads everything with no file request.
    let m = MountBuilder::new(&mock.url())
        .cache_dir(cache.path())
        .mount();
    for (rel, _, md5) in &expected {
        assert_eq!(&md5_file(&m.mountpoint.join(rel)), md5);
    }
    assert_eq!(
        mock.state.file_gets(),
        expected.len() as u64,
        "remount served from cache"
    );
    // Nothing half-written is left in the cache.
    let area = cache.path().join(xnatfs::cache::area_name(&mock.url()));
    assert!(partial_files(&area.join("tmp")).is_empty());
}

#[test]
fn the_cache_stays_under_its_cap() {
    let data = small_sample();
    let expected = expected_files(&data);
    let mock = start_mock(data);
    let m = MountBuilder::new(&mock.url())
        .args(&["--cache-size", "700K"])
        .mount();
    // Keep one file open: it is never evicted.
    let kept = m.path(SUBJ01_T1W);
    let want_kept = md5_file(&kept);
    let held = std::fs::File::open(&kept).unwrap();
    for (rel, _, md5) in &expected {
        assert_eq!(&md5_file(&m.mountpoint.join(rel)), md5, "{}", rel.display());
    }
    let area = m
        .cache_dir
        .join(xnatfs::cache::area_name(&mock.url()))
        .join("data");
    let cached: u64 = walk_files(&area).iter().map(|(_, s)| s).sum();
    assert!(
        cached <= 700 * 1024,
        "{cached} bytes cached over a 700K cap"
    );
    assert!(
        area.join("XNAT_E00001/scans/2/resources/NIFTI/files/T1w.nii.gz")
            .exists()
    );
    drop(held);
    // Evicted files are fetched again, right.
    for (rel, _, md5) in expected.iter().take(5) {
        assert_eq!(&md5_file(&m.mountpoint.join(rel)), md5);
    }
    assert_eq!(md5_file(&kept), want_kept);
}

#[test]
fn a_remount_lists_a_session_browsed_a_moment_ago_with_no_request() {
    let mock = start_mock(small_sample());
    let cache = tempfile::tempdir().unwrap();
    let first = walk_files(
        &MountBuilder::new(&mock.url())
            .cache_dir(cache.path())
            .args(&["-E", "XNAT_E00001"])
            .mount()
            .mountpoint,
    );
    let m = MountBuilder::new(&mock.url())
        .cache_dir(cache.path())
        .args(&["-E", "XNAT_E00001"])
        .mount();
    let listings = mock.state.controls.listings.load(Ordering::SeqCst);
    assert_eq!(walk_files(&m.mountpoint), first);
    assert_eq!(
        mock.state.controls.listings.load(Ordering::SeqCst),
        listings,
        "no listing asked again"
    );
}

#[test]
fn a_full_cache_disk_fails_reads_cleanly_and_corrupts_nothing() {
    let Some(disk) = Tmpfs::mount("1m") else {
        return;
    };
    let data = xnatfs::mock::data::Dataset::sample(&xnatfs::mock::data::SampleSpec {
        dicom_files: 3,
        dicom_size: 4096,
        nifti_size: 3 << 20,
        scans: 2,
    });
    let dcm = mock_file(
        &data,
        "DEMO/SUBJ01_MR1/scans/1/resources/DICOM/files/1.3.12.2.1107.5.2.1.00001.dcm",
    );
    let mock = start_mock(data);
    let m = MountBuilder::new(&mock.url())
        .cache_dir(&disk.path)
        .args(&["-E", "XNAT_E00001", "--io-timeout", "5"])
        .mount();
    let big = m.path("XNAT_E00001/scans/2/resources/NIFTI/files/T1w.nii.gz");
    assert_errno(
        std::fs::read(&big),
        &[libc::EIO],
        "3 MiB cannot fit a 1 MiB cache",
    );
    // Nothing half-written under a final name, no partial file left, and small files still work.
    // The failed download's space is given back at once, though it was open.
    wait_until(Duration::from_secs(15), "the space given back", || {
        disk.free() > 900 << 10
    });
    let area = disk.path.join(xnatfs::cache::area_name(&mock.url()));
    assert!(
        !area
            .join("data/XNAT_E00001/scans/2/resources/NIFTI/files/T1w.nii.gz")
            .exists()
    );
    assert!(partial_files(&area.join("tmp")).is_empty());
    let small = m.path(&format!(
        "XNAT_E00001/scans/1/resources/DICOM/files/{}",
        dcm.path
    ));
    assert_eq!(md5_file(&small), dcm.md5());
}

/// A log on the full cache disk (where a background mount keeps it) loses lines, never the
/// mount: a log line that could not be written made tracing-subscriber `eprintln!` about it to
/// stderr, that same full file, and `eprintln!` panics when it cannot write. The panic came
/// with a download's lock held, poisoned it, and took the mount down ("Transport endpoint is
/// not connected").
#[test]
fn a_log_on_the_full_cache_disk_does_not_take_the_mount_down() {
    let Some(disk) = Tmpfs::mount("2m") else {
        return;
    };
    let data = xnatfs::mock::data::Dataset::sample(&xnatfs::mock::data::SampleSpec {
        dicom_files: 40,
        dicom_size: 200_000,
        nifti_size: 4096,
        scans: 2,
    });
    let small = mock_file(&data, SUBJ01_T1W);
    let mock = start_mock(data);
    let m = MountBuilder::new(&mock.url())
        .cache_dir(&disk.path)
        .log_at(&disk.path.join("xnatfs.log"))
        .args(&["--io-timeout", "5", "-vv"])
        .mount();
    // The log fills what the cache leaves (reads may fail for want of space; never wrongly).
    let filler = disk.path.join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 2 << 20]);
    let dicom = m.path("DEMO/SUBJ01_MR1/scans/1/resources/DICOM/files");
    for entry in std::fs::read_dir(&dicom).unwrap() {
        let _ = std::fs::read(entry.unwrap().path());
    }
    std::fs::remove_file(&filler).unwrap();
    assert!(is_mounted(&m.mountpoint), "the mount is still there");
    assert_eq!(md5_file(&m.path(SUBJ01_T1W)), small.md5());
}

/// A download makes room before it starts: on a full cache disk, files not open are evicted
/// first, instead of the download failing for want of space.
#[test]
fn a_download_evicts_to_make_room_on_a_small_disk() {
    let Some(disk) = Tmpfs::mount("1m") else {
        return;
    };
    let data = xnatfs::mock::data::Dataset::sample(&xnatfs::mock::data::SampleSpec {
        dicom_files: 3,
        dicom_size: 4096,
        nifti_size: 550_000,
        scans: 2,
    });
    let (one, two) = (mock_file(&data, SUBJ01_T1W), mock_file(&data, SUBJ02_T1W));
    let mock = start_mock(data);
    let m = MountBuilder::new(&mock.url())
        .cache_dir(&disk.path)
        .args(&["--io-timeout", "5"])
        .mount();
    assert_eq!(md5_file(&m.path(SUBJ01_T1W)), one.md5());
    // Two of them do not fit on the disk at once: the first (closed) makes way.
    assert_eq!(md5_file(&m.path(SUBJ02_T1W)), two.md5());
}
