//! Many processes on one cache: two mounts and a prefetch share it under a small cap, one of
//! them killed mid-download; two prefetches write into one `--out` at once.

use crate::common::*;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The sample with 2 MiB images: two of them pass a 3 MiB cap.
fn images_of_2_mib() -> xnatfs::mock::data::Dataset {
    xnatfs::mock::data::Dataset::sample(&xnatfs::mock::data::SampleSpec {
        dicom_files: 3,
        dicom_size: 4096,
        nifti_size: 2 << 20,
        scans: 2,
    })
}

/// A mount on cache `cache` under a 3 MiB cap.
fn mount_capped(url: &str, cache: &std::path::Path) -> Mount {
    MountBuilder::new(url)
        .cache_dir(cache)
        .args(&["--cache-size", "3M"])
        .mount()
}

#[test]
fn two_mounts_and_a_prefetch_share_one_cache_one_killed_mid_download() {
    let data = images_of_2_mib();
    let (one, two) = (mock_file(&data, SUBJ01_T1W), mock_file(&data, SUBJ02_T1W));
    let pilot = "PILOT/SUBJ01_MR1/scans/2/resources/NIFTI/files/T1w.nii.gz";
    let three = mock_file(&data, pilot);
    let mock = start_mock(data);
    let cache = tempfile::tempdir().unwrap();
    let area = cache.path().join(xnatfs::cache::area_name(&mock.url()));
    let mount = || mount_capped(&mock.url(), cache.path());
    // A reads a file and keeps it open.
    let a = mount();
    assert_eq!(md5_file(&a.path(SUBJ01_T1W)), one.md5());
    let kept = std::fs::File::open(a.path(SUBJ01_T1W)).unwrap();
    let kept_copy = area.join("data/XNAT_E00001/scans/2/resources/NIFTI/files/T1w.nii.gz");
    // B reads another: over its 3 MiB cap, it evicts, but never the file A holds open.
    let mut b = mount();
    assert_eq!(md5_file(&b.path(SUBJ02_T1W)), two.md5());
    assert!(
        kept_copy.exists(),
        "a file open in another mount is never evicted"
    );
    // B is killed in the middle of a download.
    mock.state
        .controls
        .chunk_delay_ms
        .store(500, Ordering::SeqCst);
    let slow = b.path(pilot);
    let reader = std::thread::spawn(move || std::fs::read(slow));
    wait_until(Duration::from_secs(10), "a partial file", || {
        !partial_files(&area.join("tmp")).is_empty()
    });
    let pid = b.child.as_ref().unwrap().id() as i32;
    // SAFETY: kill(2) of our own child process.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let _ = reader.join();
    b.unmount();
    mock.state
        .controls
        .chunk_delay_ms
        .store(0, Ordering::SeqCst);
    std::thread::sleep(xnatfs::cache::lease::SWEEP_MIN_AGE);
    // A prefetch on the same cache sweeps what B left, and completes.
    prefetch_into_cache(
        &mock.url(),
        cache.path(),
        cache.path(),
        &["-E", "XNAT_E00002", "-q"],
    );
    assert_eq!(partial_files(&area.join("tmp")), Vec::<String>::new());
    // A still reads its open file, and reads again; the file B did not finish reads whole.
    drop(kept);
    assert_eq!(md5_file(&a.path(SUBJ01_T1W)), one.md5());
    assert_eq!(md5_file(&a.path(pilot)), three.md5());
}

#[test]
fn two_prefetches_into_one_out_at_once_both_complete() {
    let data = small_sample();
    let expected = expected_files(&data);
    let mock = start_mock(data);
    mock.state.controls.latency_ms.store(20, Ordering::SeqCst);
    let home = tempfile::tempdir().unwrap();
    let out = home.path().join("out");
    let run = |session: &str| {
        xnatfs(&mock.url(), home.path())
            .args([
                "prefetch",
                "-P",
                "DEMO",
                "-E",
                session,
                "-q",
                "--session-resources",
            ])
            .arg("--out")
            .arg(&out)
            .spawn()
            .unwrap()
    };
    let (mut first, mut second) = (run("SUBJ01_MR1"), run("SUBJ02_MR1"));
    assert!(first.wait().unwrap().success());
    assert!(second.wait().unwrap().success());
    for (path, _, md5) in expected.iter().filter(|(p, _, _)| p.starts_with("DEMO")) {
        let got = out.join(path.strip_prefix("DEMO").unwrap());
        assert_eq!(&md5_file(&got), md5, "{}", got.display());
    }
    assert!(
        !out.join(".xnatfs-tmp").exists(),
        "the last one out tidies up"
    );
}

/// A mount killed with files it downloaded and never saved in the index: the mount that goes
/// on counts them within one index sync (30 s) and holds the cap, without waiting for the
/// next process to start.
#[test]
fn what_a_killed_mount_downloaded_is_capped_by_the_one_that_goes_on() {
    let data = images_of_2_mib();
    let (one, two) = (mock_file(&data, SUBJ01_T1W), mock_file(&data, SUBJ02_T1W));
    let mock = start_mock(data);
    let cache = tempfile::tempdir().unwrap();
    let area = cache.path().join(xnatfs::cache::area_name(&mock.url()));
    let mount = || mount_capped(&mock.url(), cache.path());
    let a = mount();
    let mut b = mount();
    // Each holds one 2 MiB file, under its cap as it knows the cache; together they are over.
    assert_eq!(md5_file(&a.path(SUBJ01_T1W)), one.md5());
    assert_eq!(md5_file(&b.path(SUBJ02_T1W)), two.md5());
    let du = || {
        walk_files(&area.join("data"))
            .iter()
            .map(|(_, size)| size)
            .sum::<u64>()
    };
    assert!(du() > 3 << 20, "{}", du());
    let pid = b.child.as_ref().unwrap().id() as i32;
    // SAFETY: kill(2) of our own child process.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    b.unmount();
    wait_until(Duration::from_secs(50), "the cap held by A", || {
        du() <= 3 << 20
    });
    // The file B left went (least recently used); A's stays and reads.
    assert_eq!(md5_file(&a.path(SUBJ01_T1W)), one.md5());
}
