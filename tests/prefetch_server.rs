//! `xnatfs prefetch` against what real XNAT servers send: files whose listed size is stale,
//! ZIPs as XNAT writes them (STORED by default, DEFLATED with data descriptors when asked),
//! and sessions shared into another project.

mod common;

use common::*;
use std::path::Path;
use xnatfs::mock::data::Dataset;

/// Makes the listed sizes of SUBJ01_MR1's protocol files and T1w image stale (see
/// [`make_sizes_stale`]); returns their mount paths with their true MD5s.
fn stale_sizes(data: &mut Dataset) -> Vec<(String, String)> {
    make_sizes_stale(data)
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

/// The whole first session's files under `--out`: relative path -> MD5.
fn session_files(data: &Dataset) -> std::collections::BTreeMap<String, String> {
    data.all_files()
        .into_iter()
        .filter(|(s, ..)| s.id == "XNAT_E00001")
        .map(|(_, scan, r, f)| {
            (
                format!("XNAT_E00001/{}", path_in_session(scan, r, f)),
                f.md5(),
            )
        })
        .collect()
}

fn out_files(root: &Path) -> std::collections::BTreeMap<String, String> {
    walk_files(root)
        .into_iter()
        .map(|(p, _)| (p.to_string_lossy().into_owned(), md5_file(&root.join(&p))))
        .collect()
}

/// ZIPs are asked STORED (XNAT's default anyway), and a server that sends DEFLATED entries
/// with their sizes in data descriptors (as Java writes them) is read as a stream all the
/// same: one request per resource, never a fall-back to one request per file.
#[test]
fn zips_are_unpacked_as_they_stream_in_stored_or_deflated() {
    let mut data = small_sample();
    stale_sizes(&mut data);
    let want = session_files(&data);
    let mock = start_mock(data);
    for deflated in [false, true] {
        mock.state
            .controls
            .zip_deflated
            .store(deflated, std::sync::atomic::Ordering::SeqCst);
        let home = tempfile::tempdir().unwrap();
        let out = home.path().join("out");
        let before = mock.state.file_gets();
        let said = ok(&prefetch(
            &mock.url(),
            home.path(),
            &[
                "-E",
                "XNAT_E00001",
                "--session-resources",
                "--method",
                "zip",
                "--out",
                out.to_str().unwrap(),
            ],
        ));
        assert_eq!(out_files(&out), want, "deflated {deflated}: {said}");
        // One ZIP per resource (7), no file fetched on its own.
        assert_eq!(mock.state.file_gets() - before, 7, "deflated {deflated}");
    }
    let log = mock.state.request_log();
    let zips: Vec<_> = log.iter().filter(|l| l.contains("format=zip")).collect();
    assert!(!zips.is_empty());
    assert!(zips.iter().all(|l| l.contains("compression=0")), "{zips:?}");
}

/// The mock answers `compression` as XNAT does: STORED by default (sizes in the local
/// headers), DEFLATED with data descriptors for `8`, 400 for what is not a number.
#[test]
fn the_mock_writes_zips_as_xnat_does() {
    let mock = start_mock(small_sample());
    let path = "/data/experiments/XNAT_E00001/resources/1007/files?format=zip";
    // (query, status, method and flags of the first local header)
    for (query, status, first) in [
        ("", 200, Some((0u16, 0u16))),
        ("&compression=0", 200, Some((0, 0))),
        ("&compression=8", 200, Some((8, 8))),
        ("&compression=fast", 400, None),
        ("&compression=3", 500, None),
    ] {
        let (code, body) = get_with_basic_auth(mock.addr, &format!("{path}{query}"));
        assert_eq!(code, status, "{query}");
        if let Some((method, flag)) = first {
            assert_eq!(&body[..4], b"PK\x03\x04", "{query}");
            let flags = u16::from_le_bytes([body[6], body[7]]);
            let got = u16::from_le_bytes([body[8], body[9]]);
            assert_eq!((got, flags & 8), (method, flag), "{query}");
            let size = u32::from_le_bytes(body[22..26].try_into().unwrap());
            assert_eq!(
                size == 0,
                flag == 8,
                "{query}: sizes in the header or after the data"
            );
        }
    }
}

/// A GET as user `demo` with Basic auth on the request (XNAT takes it on any request): the
/// status and body.
fn get_with_basic_auth(addr: std::net::SocketAddr, path: &str) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    // demo:demo
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Basic ZGVtbzpkZW1v\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let head_end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    let head = String::from_utf8_lossy(&answer[..head_end]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut body = answer[head_end + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = unchunk(&body);
    }
    (status, body)
}

fn unchunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let len =
            usize::from_str_radix(std::str::from_utf8(&b[..line_end]).unwrap().trim(), 16).unwrap();
        if len == 0 {
            return out;
        }
        out.extend_from_slice(&b[line_end + 2..line_end + 2 + len]);
        b = &b[line_end + 2 + len + 2..];
    }
}

/// `prefetch -P OTHER -E LABEL` finds a session shared into OTHER by its label there, and
/// `prefetch -P OTHER` takes it with OTHER's own; the cache holds one copy, by accession ID.
#[test]
fn a_session_shared_into_another_project_is_prefetched_by_its_label_there() {
    let mut data = small_sample();
    data.share("XNAT_E00001", "PILOT", "PILOT_SUBJ01");
    let want: std::collections::BTreeMap<String, String> = session_files(&data)
        .into_iter()
        .map(|(p, md5)| (p.replacen("XNAT_E00001", "PILOT_SUBJ01", 1), md5))
        .collect();
    let mock = start_mock(data);
    let home = tempfile::tempdir().unwrap();
    let out = home.path().join("out");
    ok(&prefetch(
        &mock.url(),
        home.path(),
        &[
            "-P",
            "PILOT",
            "-E",
            "PILOT_SUBJ01",
            "--session-resources",
            "--out",
            out.to_str().unwrap(),
        ],
    ));
    assert_eq!(out_files(&out), want);
    // Every session of PILOT, the shared one included, then it by its accession ID: one copy.
    let cache = home.path().join("cache");
    prefetch_into_cache(&mock.url(), home.path(), &cache, &["-P", "PILOT"]);
    let gets = mock.state.file_gets();
    prefetch_into_cache(&mock.url(), home.path(), &cache, &["-E", "XNAT_E00001"]);
    assert_eq!(
        mock.state.file_gets(),
        gets,
        "already there by accession ID"
    );
    let t1w: Vec<_> = walk_files(&cache)
        .into_iter()
        .filter(|(p, _)| {
            p.to_string_lossy()
                .contains("XNAT_E00001/scans/2/resources/NIFTI")
        })
        .collect();
    assert_eq!(t1w.len(), 1, "{t1w:?}");
}
