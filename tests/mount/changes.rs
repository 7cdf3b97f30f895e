//! Files that change on the server: never served from an old copy, whether the change is seen
//! by a listing refreshed while mounted, after a remount, or by a prefetch run again.

use crate::common::*;
use std::time::Duration;
use xnatfs::mock::data::Body;

const DCM: &str = "DEMO/SUBJ01_MR1/scans/1/resources/DICOM/files/1.3.12.2.1107.5.2.1.00001.dcm";

/// New contents for a file: `len` bytes of `byte`.
fn contents(len: u64, byte: u8) -> Body {
    Body::Memory(vec![byte; len as usize].into())
}

fn md5_of(len: u64, byte: u8) -> String {
    use md5::{Digest, Md5};
    hex::encode(Md5::digest(vec![byte; len as usize]))
}

#[test]
fn a_file_changed_while_mounted_is_read_anew_once_its_listing_is_refreshed() {
    let data = small_sample();
    let file = mock_file(&data, DCM);
    let size = file.size();
    let mock = start_mock(data);
    let m = MountBuilder::new(&mock.url())
        .args(&["--dir-ttl", "1s"])
        .mount();
    assert_eq!(md5_file(&m.path(DCM)), file.md5());
    // The same size, other bytes: the kernel's page cache and our cache copy must both go.
    file.change(contents(size, b'a'));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(md5_file(&m.path(DCM)), md5_of(size, b'a'), "same size");
    // A new size: `stat` shows it, and every byte of the new file is read.
    file.change(contents(size + 1000, b'b'));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(std::fs::metadata(m.path(DCM)).unwrap().len(), size + 1000);
    assert_eq!(
        md5_file(&m.path(DCM)),
        md5_of(size + 1000, b'b'),
        "new size"
    );
}

#[test]
fn a_file_changed_while_unmounted_is_read_anew_after_a_remount() {
    let data = small_sample();
    let file = mock_file(&data, DCM);
    let size = file.size();
    let mock = start_mock(data);
    let cache = tempfile::tempdir().unwrap();
    let mount = || {
        MountBuilder::new(&mock.url())
            .cache_dir(cache.path())
            .args(&["--dir-ttl", "1s"])
            .mount()
    };
    let mut m = mount();
    assert_eq!(md5_file(&m.path(DCM)), file.md5());
    m.unmount();
    file.change(contents(size, b'c'));
    std::thread::sleep(Duration::from_millis(1500));
    let m = mount();
    assert_eq!(md5_file(&m.path(DCM)), md5_of(size, b'c'));
}

#[test]
fn a_prefetch_run_again_fetches_the_files_that_changed() {
    let data = small_sample();
    let file = mock_file(&data, DCM);
    let size = file.size();
    let mock = start_mock(data);
    let home = tempfile::tempdir().unwrap();
    let cache = home.path().join("cache");
    let prefetch = || {
        let args = ["-E", "XNAT_E00001", "-s", "1", "-q"];
        prefetch_into_cache(&mock.url(), home.path(), &cache, &args)
    };
    prefetch();
    file.change(contents(size, b'd'));
    let said = prefetch();
    assert!(
        said.contains("1 files") || said.contains("1 file "),
        "{said}"
    );
    let area = cache.join(xnatfs::cache::area_name(&mock.url()));
    let copy = area.join(format!(
        "data/XNAT_E00001/scans/1/resources/DICOM/files/{}",
        file.path
    ));
    assert_eq!(md5_file(&copy), md5_of(size, b'd'));
}
