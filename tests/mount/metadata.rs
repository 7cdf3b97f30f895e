//! XNAT's metadata where tools read it: `user.xnat.*` extended attributes (read through the
//! system calls `getfattr` makes: a size probe, then the value), and scan folders named
//! `<ID>-<type>` with `--scan-names id-type`.

use crate::common::*;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

/// `getxattr` as `getfattr` calls it: the size first (a null buffer), then the value.
pub(crate) fn getxattr(path: &Path, name: &str) -> io::Result<String> {
    let (p, n) = (c_path(path), CString::new(name).unwrap());
    // SAFETY: valid C strings; a null buffer of size 0 asks for the size.
    let size = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) };
    if size < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; size as usize];
    // SAFETY: `buf` holds `buf.len()` bytes.
    let got = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(got as usize);
    Ok(String::from_utf8(buf).unwrap())
}

/// `getxattr` into a buffer of `size` bytes.
fn getxattr_into(path: &Path, name: &str, size: usize) -> io::Result<usize> {
    let (p, n) = (c_path(path), CString::new(name).unwrap());
    let mut buf = vec![0u8; size];
    // SAFETY: `buf` holds `size` bytes.
    let got = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), size) };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(got as usize)
}

/// `listxattr` as `getfattr -d` calls it: the size first, then the names.
fn listxattr(path: &Path) -> io::Result<Vec<String>> {
    let p = c_path(path);
    // SAFETY: a null buffer of size 0 asks for the size.
    let size = unsafe { libc::listxattr(p.as_ptr(), std::ptr::null_mut(), 0) };
    if size < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; size as usize];
    // SAFETY: `buf` holds `buf.len()` bytes.
    let got = unsafe { libc::listxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(got as usize);
    let mut names = nul_separated(&buf);
    // Each name ends in a NUL: nothing follows the last one.
    assert_eq!(names.pop().as_deref(), Some(""), "{buf:?}");
    Ok(names)
}

fn setxattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let (p, n) = (c_path(path), CString::new(name).unwrap());
    // SAFETY: `value` holds `value.len()` bytes.
    let r = unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn removexattr(path: &Path, name: &str) -> io::Result<()> {
    let (p, n) = (c_path(path), CString::new(name).unwrap());
    // SAFETY: valid C strings.
    if unsafe { libc::removexattr(p.as_ptr(), n.as_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Every attribute of `path`, as `getfattr -d` shows them.
fn all(path: &Path) -> Vec<(String, String)> {
    let names = listxattr(path).unwrap();
    names
        .into_iter()
        .map(|n| {
            let v = getxattr(path, &n).unwrap();
            (n, v)
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (format!("user.xnat.{k}"), v.to_string()))
        .collect()
}

#[test]
fn xattrs_show_xnat_metadata_with_no_request() {
    let data = small_sample();
    let t1w = mock_file(&data, SUBJ01_T1W);
    let mock = start_mock(data);
    let m = MountBuilder::new(&mock.url()).mount();
    // Listing first (as `ls` or `find` would), so what follows may be counted.
    walk_files(&m.mountpoint);
    let (requests, gets) = (mock.state.request_log().len(), mock.state.file_gets());

    let session = m.path("DEMO/SUBJ01_MR1");
    assert_eq!(
        all(&session),
        pairs(&[
            ("id", "XNAT_E00001"),
            ("label", "SUBJ01_MR1"),
            ("project", "DEMO"),
            ("subject_label", "SUBJ01"),
            ("date", "2024-03-01"),
            ("xsi_type", "xnat:mrSessionData"),
        ])
    );
    assert_eq!(
        all(&m.path("DEMO/SUBJ01_MR1/scans/2")),
        pairs(&[
            ("id", "2"),
            ("type", "T1w"),
            ("series_description", "T1w"),
            ("quality", "usable"),
            ("xsi_type", "xnat:mrScanData"),
        ])
    );
    let nifti = m.path("DEMO/SUBJ01_MR1/scans/2/resources/NIFTI");
    let attrs = all(&nifti);
    let names: Vec<&str> = attrs.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        ["user.xnat.id", "user.xnat.label", "user.xnat.format"]
    );
    assert!(attrs[0].1.parse::<u64>().is_ok(), "numeric: {attrs:?}");
    assert_eq!(getxattr(&nifti, "user.xnat.format").unwrap(), "NIFTI");
    let file = m.path(SUBJ01_T1W);
    assert_eq!(
        listxattr(&file).unwrap(),
        ["user.xnat.md5", "user.xnat.uri", "user.xnat.size"]
    );
    assert_eq!(getxattr(&file, "user.xnat.md5").unwrap(), t1w.md5());
    assert_eq!(getxattr(&file, "user.xnat.size").unwrap(), "300000");
    let uri = getxattr(&file, "user.xnat.uri").unwrap();
    assert!(
        uri.starts_with("/data/experiments/XNAT_E00001/scans/2/resources/")
            && uri.ends_with("/files/T1w.nii.gz"),
        "{uri}"
    );
    assert_eq!(getxattr(&m.path("DEMO"), "user.xnat.id").unwrap(), "DEMO");
    // Folders of the layout itself, and the root, have none.
    assert!(
        listxattr(&m.path("DEMO/SUBJ01_MR1/scans"))
            .unwrap()
            .is_empty()
    );
    assert!(listxattr(&m.mountpoint).unwrap().is_empty());

    // Unknown names are ENODATA; a buffer too small is ERANGE. Security labels and ACLs,
    // which xnatfs has none of, are EOPNOTSUPP (see src/fs/xattrs.rs: `ls -l` then stops
    // asking every file).
    for name in ["user.xnat.nope", "user.xnat.", "user.other", "trusted.x"] {
        assert_errno(getxattr(&file, name), &[libc::ENODATA], name);
    }
    for name in ["security.selinux", "system.posix_acl_access"] {
        assert_errno(getxattr(&file, name), &[libc::EOPNOTSUPP], name);
    }
    assert_eq!(getxattr_into(&file, "user.xnat.md5", 32).unwrap(), 32);
    assert_errno(
        getxattr_into(&file, "user.xnat.md5", 31),
        &[libc::ERANGE],
        "a 31-byte buffer",
    );
    // Read-only, like everything in the mount.
    assert_errno(
        setxattr(&file, "user.xnat.md5", b"0"),
        &[libc::EROFS],
        "setxattr",
    );
    assert_errno(setxattr(&session, "user.mine", b"1"), &[libc::EROFS], "new");
    assert_errno(
        removexattr(&file, "user.xnat.md5"),
        &[libc::EROFS],
        "removexattr",
    );
    assert_eq!(getxattr(&file, "user.xnat.size").unwrap(), "300000");

    // None of it asked anything of the server, let alone a body.
    assert_eq!(mock.state.file_gets(), gets);
    let log = mock.state.request_log();
    assert_eq!(log.len(), requests, "{:?}", &log[requests..]);
    // An open file (its body fetched) keeps its attributes.
    assert_eq!(md5_file(&file), t1w.md5());
    assert_eq!(getxattr(&file, "user.xnat.md5").unwrap(), t1w.md5());
}

#[test]
fn subject_label_comes_from_the_sessions_listing_and_only_there() {
    let mock = start_mock(small_sample());
    let m = MountBuilder::new(&mock.url())
        .args(&["-P", "DEMO", "-E", "SUBJ02_MR1"])
        .mount();
    // A session named by -E comes from its own document, which names the subject by ID only.
    let s = m.path("SUBJ02_MR1");
    assert_eq!(getxattr(&s, "user.xnat.id").unwrap(), "XNAT_E00002");
    assert_errno(
        getxattr(&s, "user.xnat.subject_label"),
        &[libc::ENODATA],
        "-E session",
    );
    drop(m);
    let m = MountBuilder::new(&mock.url()).args(&["-P", "DEMO"]).mount();
    assert_eq!(
        getxattr(&m.path("SUBJ02_MR1"), "user.xnat.subject_label").unwrap(),
        "SUBJ02"
    );
    // One listing request gave it: the project's sessions, with the column asked for.
    let log = mock.state.request_log();
    let listings: Vec<_> = log
        .iter()
        .filter(|r| r.starts_with("GET /data/projects/DEMO/experiments?"))
        .collect();
    assert!(
        listings.iter().all(|r| r.contains("subject_label")),
        "{listings:?}"
    );
}

#[test]
fn scan_names_id_type_show_xnat_zip_names_and_keep_the_cache_by_id() {
    let mut data = small_sample();
    let session = data.projects[0]
        .sessions
        .iter_mut()
        .find(|s| s.label == "SUBJ01_MR1")
        .unwrap();
    Arc::make_mut(session).scans[2].scan_type = "rs fMRI (AP)".into();
    let mock = start_mock(data.clone());
    let cache = tempfile::tempdir().unwrap();
    let m = MountBuilder::new(&mock.url())
        .cache_dir(cache.path())
        .args(&["--scan-names", "id-type"])
        .mount();
    let scans = m.path("DEMO/SUBJ01_MR1/scans");
    assert_eq!(
        dir_names(&scans),
        ["1-Localizer", "2-T1w", "3-rs_fMRI__AP_"]
    );
    // Looked up by the name shown, not by the bare ID.
    let shown = "DEMO/SUBJ01_MR1/scans/2-T1w/resources/NIFTI/files/T1w.nii.gz";
    assert!(
        m.path("DEMO/SUBJ01_MR1/scans/3-rs_fMRI__AP_/resources")
            .is_dir()
    );
    assert_errno(
        std::fs::metadata(m.path("DEMO/SUBJ01_MR1/scans/2")),
        &[libc::ENOENT],
        "the bare ID",
    );
    assert_eq!(
        getxattr(
            &m.path("DEMO/SUBJ01_MR1/scans/3-rs_fMRI__AP_"),
            "user.xnat.type"
        )
        .unwrap(),
        "rs fMRI (AP)"
    );
    let want = mock_file(&data, SUBJ01_T1W);
    assert_eq!(md5_file(&m.path(shown)), want.md5());
    // The cache knows the scan by its ID: a mount with the default names reads it from there.
    drop(m);
    let gets = mock.state.file_gets();
    let m = MountBuilder::new(&mock.url())
        .cache_dir(cache.path())
        .mount();
    assert_eq!(dir_names(&m.path("DEMO/SUBJ01_MR1/scans")), ["1", "2", "3"]);
    assert_eq!(md5_file(&m.path(SUBJ01_T1W)), want.md5());
    assert_eq!(mock.state.file_gets(), gets, "served from the cache");
}

#[test]
fn no_xattrs_shows_none_as_before() {
    let mock = start_mock(small_sample());
    let m = MountBuilder::new(&mock.url())
        .args(&["--no-xattrs"])
        .mount();
    // ENOSYS to the kernel, which tells the caller the file system keeps no attributes (and
    // asks no more).
    let s = m.path("DEMO/SUBJ01_MR1");
    for _ in 0..2 {
        assert_errno(
            getxattr(&s, "user.xnat.id"),
            &[libc::EOPNOTSUPP],
            "getxattr",
        );
        assert_errno(listxattr(&s), &[libc::EOPNOTSUPP], "listxattr");
    }
    assert!(m.path("DEMO/SUBJ01_MR1/scans/2").is_dir());
}
