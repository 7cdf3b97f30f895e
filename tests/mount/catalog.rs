//! Files and sessions as XNAT's catalog and projects list them: listed sizes that are stale
//! (the body's `Content-Length` is the truth, the digest decides), and sessions shared into
//! another project under that project's label.

use crate::common::*;
use bytes::Bytes;
use xnatfs::mock::data::{Body, Dataset};

/// Files whose listing gives a wrong size, each as (mount path, true size, listed size, MD5):
/// longer and shorter than listed, small (checked before served) and large (served as it
/// arrives), with and without a listed digest.
fn stale_sizes(data: &mut Dataset) -> Vec<(String, u64, u64, String)> {
    // The protocol listed long (digest), the notes short and the T1w image at 200,000 (no
    // digests): see `make_sizes_stale`.
    let mut paths = make_sizes_stale(data);
    // A large file (served as it arrives) listed 1 MiB short, with its digest.
    let f = mock_file_mut(data, SUBJ02_T1W);
    f.body = Body::Generated {
        seed: 77,
        size: 6 << 20,
        prefix: Bytes::new(),
    };
    f.listed_size = Some(5 << 20);
    paths.push(SUBJ02_T1W.into());
    paths
        .into_iter()
        .map(|p| {
            let f = mock_file(data, &p);
            (p, f.size(), f.listed_size(), f.md5())
        })
        .collect()
}

#[test]
fn files_with_a_stale_listed_size_read_whole_and_right_the_first_time() {
    let mut data = small_sample();
    let files = stale_sizes(&mut data);
    let mock = start_mock(data);
    let cache = tempfile::tempdir().unwrap();
    let m = MountBuilder::new(&mock.url())
        .cache_dir(cache.path())
        .mount();
    for (rel, size, listed, md5) in &files {
        let path = m.path(rel);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            *listed,
            "{rel}: listed"
        );
        // As `cat` reads: until a read gives nothing.
        let body = std::fs::read(&path).unwrap();
        assert_eq!(body.len() as u64, *size, "{rel}: read whole");
        assert_eq!(md5_hex(&body), *md5, "{rel}: read right");
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            *size,
            "{rel}: size told"
        );
        assert_eq!(&md5_file(&path), md5, "{rel}: again");
    }
    // Kept in the cache: a new mount of it reads every one with no request for a body.
    let gets = mock.state.file_gets();
    drop(m);
    let m = MountBuilder::new(&mock.url())
        .cache_dir(cache.path())
        .mount();
    for (rel, size, _, md5) in &files {
        let path = m.path(rel);
        let body = std::fs::read(&path).unwrap();
        assert_eq!(body.len() as u64, *size, "{rel}: read whole from the cache");
        assert_eq!(md5_hex(&body), *md5, "{rel}: from the cache");
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            *size,
            "{rel}: size told"
        );
    }
    assert_eq!(mock.state.file_gets(), gets, "all from the cache");
}

#[test]
fn a_listed_size_that_goes_stale_while_mounted_is_read_right() {
    let mock = start_mock(small_sample());
    let m = MountBuilder::new(&mock.url())
        .args(&["--dir-ttl", "1"])
        .mount();
    let rel = format!("{SUBJ01_PROTOCOLS}/scan protocol.txt");
    let want = mock_file(&mock.state.data, &rel);
    let id = mock
        .state
        .data
        .all_files()
        .into_iter()
        .find(|(s, scan, r, _)| s.label == "SUBJ01_MR1" && scan.is_none() && r.label == "PROTOCOLS")
        .map(|(_, _, r, _)| r.id)
        .unwrap();
    // The listed URI, percent-encoded as a query value.
    let uri = format!("/data/experiments/XNAT_E00001/resources/{id}/files/scan%20protocol.txt");
    let said = http_get(
        mock.addr,
        &format!("/mock/change?uri={uri}&listed_size={}", want.size() + 1000),
    );
    assert!(said.contains("listed size changed"), "{said}");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let path = m.path(&rel);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), want.size() + 1000);
    let body = std::fs::read(&path).unwrap();
    assert_eq!(md5_hex(&body), want.md5());
}

/// A digest that does not match still fails, whatever the size says.
#[test]
fn a_stale_size_with_a_wrong_digest_is_eio() {
    let mut data = small_sample();
    let f = mock_file_mut(&mut data, &format!("{SUBJ01_PROTOCOLS}/notes+v2.txt"));
    f.listed_size = Some(f.size() + 7);
    f.listed_digest_override = Some("0123456789abcdef0123456789abcdef".into());
    let mock = start_mock(data);
    let m = MountBuilder::new(&mock.url()).mount();
    let path = m.path(&format!("{SUBJ01_PROTOCOLS}/notes+v2.txt"));
    assert_errno(std::fs::read(path), &[libc::EIO], "wrong digest");
}

/// A plain HTTP GET of `path` on the mock (its own routes, no login); the whole answer.
fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
}

fn md5_hex(bytes: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(bytes))
}

/// A session shared into another project shows there under its label in that project, with
/// `-P` of that project and by that label with `-E`; its files are one copy in the cache, read
/// through either project.
#[test]
fn a_session_shared_into_another_project_shows_there_under_its_label_there() {
    let mut data = small_sample();
    data.share("XNAT_E00001", "PILOT", "PILOT_SUBJ01");
    let want = mock_file(&data, SUBJ01_T1W);
    let mock = start_mock(data);
    let cache = tempfile::tempdir().unwrap();
    let in_pilot = SUBJ01_T1W.replacen("DEMO/SUBJ01_MR1", "PILOT_SUBJ01", 1);
    {
        let m = MountBuilder::new(&mock.url())
            .cache_dir(cache.path())
            .args(&["-P", "PILOT"])
            .mount();
        let mut names = dir_names(&m.mountpoint);
        names.sort();
        assert_eq!(names, ["PILOT_SUBJ01", "SUBJ01_EEG1", "SUBJ01_MR1"]);
        assert_eq!(md5_file(&m.path(&in_pilot)), want.md5());
    }
    {
        let m = MountBuilder::new(&mock.url())
            .cache_dir(cache.path())
            .args(&["-P", "PILOT", "-E", "PILOT_SUBJ01"])
            .mount();
        assert_eq!(dir_names(&m.mountpoint), ["PILOT_SUBJ01"]);
        assert_eq!(md5_file(&m.path(&in_pilot)), want.md5());
    }
    // The whole server: in both projects, one copy in the cache, read with no request.
    let gets = mock.state.file_gets();
    let m = MountBuilder::new(&mock.url())
        .cache_dir(cache.path())
        .mount();
    assert_eq!(md5_file(&m.path(SUBJ01_T1W)), want.md5());
    assert_eq!(md5_file(&m.path(&format!("PILOT/{in_pilot}"))), want.md5());
    assert_eq!(mock.state.file_gets(), gets, "one copy in the cache");
    let copies = walk_files(cache.path())
        .into_iter()
        .filter(|(p, _)| p.ends_with("NIFTI/files/T1w.nii.gz"))
        .count();
    assert_eq!(copies, 1);
}
