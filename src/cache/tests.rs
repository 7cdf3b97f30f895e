//! Unit tests of the cache area: layout, verified writes, stats and clear, kept digests.

use super::*;
use md5::{Digest, Md5};
use std::os::unix::fs::PermissionsExt;

fn res(scan: Option<&str>, label: &str) -> ResourceRef {
    ResourceRef {
        session_id: "XNAT_E00001".into(),
        scan: scan.map(Into::into),
        assessor: None,
        label: label.into(),
        id: "1001".into(),
    }
}

fn remote(path: &str, body: &[u8], digest: bool) -> RemoteFile {
    RemoteFile::new(
        path.into(),
        body.len() as u64,
        digest.then(|| crate::xnat::Md5::of(Md5::digest(body).into())),
        &format!("/data/x/{path}"),
    )
}

#[test]
fn layout_and_hostile_parts() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), "http://127.0.0.1:8080/").unwrap();
    assert!(cache.area().root().ends_with("http_127.0.0.1_8080"));
    let p = cache
        .file_path(&res(Some("2"), "DICOM"), "a/b.dcm")
        .unwrap();
    assert!(p.ends_with("data/XNAT_E00001/scans/2/resources/DICOM/files/a/b.dcm"));
    let s = cache.file_path(&res(None, "QC"), "r.html").unwrap();
    assert!(s.ends_with("data/XNAT_E00001/resources/QC/files/r.html"));
    assert!(cache.file_path(&res(Some(".."), "DICOM"), "x").is_none());
    assert!(cache.file_path(&res(None, "../.."), "x").is_none());
    assert!(cache.file_path(&res(None, "QC"), "../../x").is_none());
    assert!(cache.file_path(&res(None, "QC"), "/etc/passwd").is_none());
    // An assessor's resources are kept apart from the session's own, under its label.
    let fs = |label: &str| ResourceRef {
        assessor: Some(std::sync::Arc::new(crate::xnat::Assessor {
            id: "XNAT_E00009".into(),
            label: label.into(),
            xsi_type: "fs:fsData".into(),
            kind: Default::default(),
        })),
        ..res(None, "DATA")
    };
    let a = cache
        .file_path(&fs("S1_freesurfer"), "stats/aseg.stats")
        .unwrap();
    assert!(a.ends_with(
        "data/XNAT_E00001/assessors/S1_freesurfer/resources/DATA/files/stats/aseg.stats"
    ));
    assert!(cache.file_path(&fs("../x"), "y").is_none());
}

#[test]
fn stats_and_clear() {
    let dir = tempfile::tempdir().unwrap();
    let a = Cache::open(dir.path(), "http://a").unwrap();
    let b = Cache::open(dir.path(), "http://b").unwrap();
    for (cache, body) in [(&a, &b"12345"[..]), (&b, &b"123"[..])] {
        let f = remote("x.dcm", body, true);
        let r = res(Some("1"), "DICOM");
        let mut part = cache.begin().unwrap();
        part.write(body).unwrap();
        part.commit(&f, &cache.file_path(&r, "x.dcm").unwrap())
            .unwrap();
    }
    let st = stats(dir.path()).unwrap();
    assert_eq!(st.len(), 2);
    assert_eq!(
        (st[0].area.as_str(), st[0].files, st[0].bytes),
        ("http_a", 1, 5)
    );
    a.save_index().unwrap();
    assert!(a.area().index().exists());
    // In use (this process holds its lease, as a mount would): left as it is.
    let cleared = clear(dir.path(), Some("http://a")).unwrap();
    assert!(cleared.emptied.is_empty());
    assert_eq!(cleared.in_use, ["http_a"]);
    assert_eq!(stats(dir.path()).unwrap()[0].files, 1);
    let area = a.area().clone();
    drop(a);
    let cleared = clear(dir.path(), Some("http://a")).unwrap();
    assert_eq!(cleared.emptied.len(), 1);
    let st = stats(dir.path()).unwrap();
    assert_eq!((st[0].files, st[1].files), (0, 1));
    // Everything the area held goes, the index too: the next mount counts nothing.
    assert!(!area.index().exists());
    let reopened = Cache::open(dir.path(), "http://a").unwrap();
    assert_eq!(reopened.used(), 0);
    assert!(reopened.area().tmp().is_dir() && reopened.area().listings().is_dir());
    assert!(stats(&dir.path().join("none")).unwrap().is_empty());
}

#[test]
fn only_what_xnatfs_made_is_an_area() {
    let dir = tempfile::tempdir().unwrap();
    let mkfile = |rel: &str| {
        let p = dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"precious").unwrap();
        p
    };
    let a = Cache::open(dir.path(), "http://a").unwrap();
    let mut part = a.begin().unwrap();
    part.write(b"12345").unwrap();
    let dest = a.file_path(&res(Some("1"), "DICOM"), "x.dcm").unwrap();
    part.commit(&remote("x.dcm", b"12345", true), &dest)
        .unwrap();
    // A folder with what an area made before the marker holds: data/, tmp/, listings/.
    let area_shaped = |name: &str| {
        for sub in ["tmp", "listings"] {
            std::fs::create_dir_all(dir.path().join(name).join(sub)).unwrap();
        }
        mkfile(&format!("{name}/data/s/f"))
    };
    // The user's own folders beside the areas (--cache-dir ~).
    let user_data = mkfile("myproject/data/file");
    let user_all = area_shaped("lookalike");
    mkfile("lookalike/notes.txt");
    // An area made before the marker (its index at most beside): adopted.
    let old = area_shaped("http_old");
    mkfile("http_old/index.json");

    let names = |st: Vec<AreaStats>| st.into_iter().map(|s| s.area).collect::<Vec<_>>();
    assert_eq!(names(stats(dir.path()).unwrap()), ["http_a", "http_old"]);
    drop(a);
    assert_eq!(
        names(clear(dir.path(), None).unwrap().emptied),
        ["http_a", "http_old"]
    );
    assert!(!dest.exists() && !old.exists());
    assert_eq!(std::fs::read(&user_data).unwrap(), b"precious");
    assert_eq!(std::fs::read(&user_all).unwrap(), b"precious");
    // A folder by an area's name that xnatfs did not make is refused, left as it was.
    mkfile("http_mine/data/file");
    let err = Cache::open(dir.path(), "http://mine").map(|_| ());
    assert_eq!(err.unwrap_err().kind(), io::ErrorKind::AlreadyExists);
    assert!(!dir.path().join("http_mine/tmp").exists());
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn an_existing_cache_dir_keeps_its_mode() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let cache = Cache::open(&shared, "http://h").unwrap();
    assert_eq!(mode(&shared), 0o1777, "a shared folder is left as it was");
    assert_eq!(mode(cache.area().root()) & 0o077, 0, "the area is private");
    // A cache dir xnatfs makes itself (parents too) is private.
    let made = dir.path().join("new/cache");
    Cache::open(&made, "http://h").unwrap();
    assert_eq!((mode(&made), mode(&dir.path().join("new"))), (0o700, 0o700));
}

#[test]
fn only_verified_files_become_visible() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), "http://h").unwrap();
    let r = res(Some("1"), "DICOM");
    let good = remote("x.dcm", b"hello world", true);
    let dest = cache.file_path(&r, &good.path).unwrap();

    // Short body: refused, nothing visible.
    let mut part = cache.begin().unwrap();
    part.write(b"hello").unwrap();
    assert!(matches!(
        part.commit(&good, &dest),
        Err(CommitError::Verify(VerifyError::Size { .. }))
    ));
    assert!(cache.lookup(&r, &good).is_none());

    // Right size, wrong bytes: refused by the digest.
    let mut part = cache.begin().unwrap();
    part.write(b"hello WORLD").unwrap();
    assert!(matches!(
        part.commit(&good, &dest),
        Err(CommitError::Verify(VerifyError::Digest { .. }))
    ));
    assert!(cache.lookup(&r, &good).is_none());

    let mut part = cache.begin().unwrap();
    part.write(b"hello ").unwrap();
    part.write(b"world").unwrap();
    part.commit(&good, &dest).unwrap();
    assert_eq!(cache.lookup(&r, &good), Some(dest.clone()));
    assert_eq!(std::fs::read(&dest).unwrap(), b"hello world");
    // No temporary files are left behind.
    let partial = std::fs::read_dir(cache.area().tmp()).unwrap().flatten();
    let partial = partial.filter(|e| e.file_name().to_string_lossy().starts_with(PARTIAL_PREFIX));
    assert_eq!(partial.count(), 0);
}

#[test]
fn a_copy_counts_only_while_its_digest_is_the_listed_one() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), "http://h").unwrap();
    let r = res(Some("1"), "DICOM");
    let old = remote("x.dcm", b"hello world", true);
    let dest = cache.file_path(&r, &old.path).unwrap();
    let mut part = cache.begin().unwrap();
    part.write(b"hello world").unwrap();
    part.commit(&old, &dest).unwrap();
    assert_eq!(cache.lookup(&r, &old), Some(dest.clone()));
    // Changed on the server, same size: the copy is not that file.
    let new = remote("x.dcm", b"HELLO WORLD", true);
    assert_eq!(cache.lookup(&r, &new), None);
    // A copy that keeps no digest (from before digests were kept) is hashed once.
    std::fs::remove_file(&dest).unwrap();
    std::fs::write(&dest, b"hello world").unwrap();
    let kept = digest_attr::read_open(&std::fs::File::open(&dest).unwrap());
    assert_eq!(cache.lookup(&r, &old), Some(dest.clone()));
    assert_eq!(cache.lookup(&r, &new), None);
    if kept != digest_attr::Kept::Unsupported {
        assert_eq!(
            digest_attr::read_open(&std::fs::File::open(&dest).unwrap()),
            digest_attr::Kept::Digest(old.digest.unwrap().hex())
        );
    }
}

#[test]
fn a_copy_checked_by_size_keeps_its_listed_digest_apart_and_is_hashed_once_by_md5() {
    let dir = tempfile::tempdir().unwrap();
    let sized = Cache::open(dir.path(), "http://h")
        .unwrap()
        .verifying(Verify::Size);
    let r = res(Some("1"), "DICOM");
    let file = remote("x.dcm", b"hello world", true);
    let dest = sized.file_path(&r, &file.path).unwrap();
    // Wrong bytes of the right size pass: nothing is hashed. A short body does not.
    let mut part = sized.begin().unwrap();
    part.write(b"hello").unwrap();
    assert!(matches!(
        part.commit(&file, &dest),
        Err(CommitError::Verify(VerifyError::Size { .. }))
    ));
    let mut part = sized.begin().unwrap();
    part.write(b"HELLO world").unwrap();
    part.commit(&file, &dest).unwrap();
    let f = std::fs::File::open(&dest).unwrap();
    if digest_attr::read_open(&f) == digest_attr::Kept::Unsupported {
        return; // no extended attributes here: copies are taken by size
    }
    assert_eq!(digest_attr::read_open(&f), digest_attr::Kept::Missing);
    assert_eq!(digest_attr::read_listed(&f), file.digest.map(|d| d.hex()));
    // By size, it is the listed file while its listed digest is the one listed now.
    assert_eq!(sized.lookup(&r, &file), Some(dest.clone()));
    let changed = remote("x.dcm", b"HELLO WORLD", true);
    assert_eq!(sized.lookup(&r, &changed), None);
    // By MD5, it is hashed once: these bytes are not the listed file.
    let md5 = Cache::open(dir.path(), "http://h").unwrap();
    assert_eq!(md5.lookup(&r, &file), None);
    // A right copy checked by size is hashed once, then keeps its digest.
    let mut part = sized.begin().unwrap();
    part.write(b"hello world").unwrap();
    part.commit(&file, &dest).unwrap();
    assert_eq!(md5.lookup(&r, &file), Some(dest.clone()));
    assert_eq!(
        digest_attr::read_open(&std::fs::File::open(&dest).unwrap()),
        digest_attr::Kept::Digest(file.digest.unwrap().hex())
    );
}

/// A listed size can be stale (XNAT's catalog): a body of the size the server's answer gave
/// is kept, and stays current while the listing is the same (by its digest, or with none, by
/// the listed size kept with it); a body of another size than the answer's is refused.
#[test]
fn a_body_whose_size_the_listing_got_wrong_is_kept_and_stays_current() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), "http://a").unwrap();
    let r = res(Some("1"), "DICOM");
    for digest in [true, false] {
        let body = b"0123456789";
        let mut listed = remote(&format!("x{digest}.dcm"), body, digest);
        listed.size = 7; // stale
        let dest = cache.file_path(&r, &listed.path).unwrap();
        let mut part = cache.begin().unwrap();
        part.expect_size(9);
        part.write(body).unwrap();
        assert!(
            matches!(part.commit(&listed, &dest), Err(CommitError::Verify(_))),
            "not the answer's size"
        );
        let mut part = cache.begin().unwrap();
        part.expect_size(10);
        part.write(body).unwrap();
        part.commit(&listed, &dest).unwrap();
        if digest_attr::read_open(&std::fs::File::open(&dest).unwrap())
            == digest_attr::Kept::Unsupported
        {
            return; // no extended attributes here: checked by size only
        }
        assert!(cache.is_current(&dest, &listed), "digest {digest}");
        assert!(cache.lookup(&r, &listed).is_some(), "digest {digest}");
        // Another listing of it is not this copy.
        let mut other = listed.clone();
        other.size = 8;
        if digest {
            other.digest = crate::xnat::Md5::parse(&"0".repeat(32));
        }
        assert!(!cache.is_current(&dest, &other), "digest {digest}");
    }
}

#[test]
fn one_area_per_server_however_its_url_is_spelled() {
    let area = crate::cache::area_name("https://xnat.example.org/xnat");
    for same in [
        "https://xnat.example.org/xnat/",
        "HTTPS://XNAT.Example.org/xnat",
        "https://xnat.example.org:443/xnat",
        " https://xnat.example.org/xnat// ",
    ] {
        assert_eq!(crate::cache::area_name(same), area, "{same}");
    }
    assert_eq!(area, "https_xnat.example.org_xnat");
    // Paths keep their case (they are case-sensitive); other ports are other servers.
    assert_ne!(
        crate::cache::area_name("https://xnat.example.org/XNAT"),
        area
    );
    assert_eq!(
        crate::cache::area_name("http://127.0.0.1:8080"),
        "http_127.0.0.1_8080"
    );
}

#[test]
fn one_file_per_mount_point() {
    let c = Path::new("/c");
    assert_eq!(
        default_log_file(c, Path::new("/home/alice/xnat")),
        Path::new("/c/logs/home_alice_xnat.log")
    );
    assert_ne!(
        default_log_file(c, Path::new("/mnt/a")),
        default_log_file(c, Path::new("/mnt/b"))
    );
    assert_eq!(
        default_log_file(c, Path::new("/")),
        Path::new("/c/logs/root.log")
    );
    let odd = default_log_file(c, Path::new("/../.."));
    assert_eq!(
        odd.parent(),
        Some(Path::new("/c/logs")),
        "{}",
        odd.display()
    );
}

/// An area removed while a download is on its way (`rm -rf` of the cache under a running
/// mount): the download's commit fails, and the area is not made again, not even its folders.
#[test]
fn a_commit_after_the_area_was_removed_makes_nothing_again() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), "http://a").unwrap();
    let body = b"12345";
    let f = remote("x.dcm", body, true);
    let dest = cache.file_path(&res(Some("1"), "DICOM"), "x.dcm").unwrap();
    let mut part = cache.begin().unwrap();
    part.write(body).unwrap();
    std::fs::remove_dir_all(cache.area().root()).unwrap();
    let e = part.commit(&f, &dest).unwrap_err().to_string();
    assert!(e.contains("was removed while in use"), "{e}");
    assert!(!cache.area().root().exists(), "the area was made again");
}

#[test]
fn a_commit_counts_its_copy_and_a_pin_keeps_it_until_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), "http://a").unwrap();
    let r = res(Some("1"), "DICOM");
    let commit = |copies: &NewCopies, tmp: &Path, name: &str, body: &[u8]| {
        let f = remote(name, body, true);
        let dest = cache.file_path(&r, name).unwrap();
        let mut part = copies.begin_in(tmp).unwrap();
        part.write(body).unwrap();
        part.commit(&f, &dest).unwrap();
        (f, dest)
    };
    // Committed into the cache: counted under its cap, by the commit itself.
    let (old, old_path) = commit(&cache.new_copies(), &cache.tmp_dir(), "a.dcm", b"12345");
    assert_eq!(cache.used(), 5);
    // A plain copy (prefetch --out) is counted by nobody.
    let out = tempfile::tempdir().unwrap();
    let mut part = NewCopies::plain(Verify::Md5).begin_in(out.path()).unwrap();
    part.write(b"xyz").unwrap();
    part.commit(&remote("b", b"xyz", true), &out.path().join("b"))
        .unwrap();
    assert_eq!(cache.used(), 5);
    // Pinned, the copy outlives a cap that has no room for it; let go, it is evicted.
    let pin = cache.pin(&r, &old).unwrap();
    assert_eq!(pin.path(), old_path);
    assert!(cache.is_pinned(&old_path));
    cache.set_limit(1);
    assert!(old_path.exists());
    drop(pin);
    assert!(!cache.is_pinned(&old_path));
    cache.set_limit(1);
    assert!(!old_path.exists());
    assert_eq!(cache.used(), 0);
    // A copy that is not the listed file is not pinned.
    let (_, _) = commit(&cache.new_copies(), &cache.tmp_dir(), "c.dcm", b"1");
    assert!(cache.pin(&r, &remote("c.dcm", b"2", true)).is_none());
    assert!(cache.pin(&r, &remote("c.dcm", b"1", true)).is_some());
}

#[test]
fn a_file_just_committed_is_not_evicted_for_files_held_open() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), "http://a").unwrap();
    let r = res(Some("1"), "DICOM");
    let commit = |name: &str, body: &[u8]| {
        let f = remote(name, body, true);
        let dest = cache.file_path(&r, name).unwrap();
        let mut part = cache.begin().unwrap();
        part.write(body).unwrap();
        part.commit(&f, &dest).unwrap();
        (f, dest)
    };
    let (old, _) = commit("a.dcm", b"12345");
    let _held = cache.pin(&r, &old).unwrap();
    cache.set_limit(4);
    // Over the cap with the only other file held open: the new one stays, to be read.
    let (new, new_path) = commit("b.dcm", b"");
    assert!(new_path.exists());
    assert!(cache.lookup(&r, &new).is_some());
}
