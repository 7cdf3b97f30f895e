//! Errors and timeouts: writes refused, unknown names, bad bodies, a server that goes away,
//! files gone from the server, bad input on the command line, and hostile names.

use crate::common::*;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[test]
fn writes_are_refused_with_erofs() {
    let mock = start_mock(small_sample());
    let m = MountBuilder::new(&mock.url()).mount();
    let dir = m.path("DEMO/SUBJ01_MR1/resources/QC/files");
    let file = dir.join("qc_report.html");
    let erofs = |r: std::io::Result<()>, what: &str| {
        assert_errno(r, &[libc::EROFS], what);
    };
    erofs(std::fs::write(dir.join("new.txt"), b"x"), "create");
    erofs(
        std::fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .map(drop),
        "open for writing",
    );
    erofs(std::fs::create_dir(dir.join("d")), "mkdir");
    erofs(std::fs::remove_file(&file), "unlink");
    erofs(std::fs::rename(&file, dir.join("moved.html")), "rename");
    erofs(
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o777)),
        "chmod",
    );
    erofs(
        std::fs::remove_dir(m.path("DEMO/SUBJ01_MR1/scans/1")),
        "rmdir",
    );
    // Reading still works after all that.
    assert!(
        std::fs::read_to_string(&file)
            .unwrap()
            .contains("QC for SUBJ01_MR1")
    );
}

#[test]
fn unknown_names_are_enoent_fast() {
    let mock = start_mock(small_sample());
    let m = MountBuilder::new(&mock.url()).mount();
    for rel in [
        "NOPE",
        "DEMO/NOPE",
        "DEMO/SUBJ01_MR1/nope",
        "DEMO/SUBJ01_MR1/scans/99",
        "DEMO/SUBJ01_MR1/scans/1/resources/NOPE/files",
        "DEMO/SUBJ01_MR1/scans/1/resources/DICOM/files/nope.dcm",
    ] {
        let path = m.path(rel);
        // Milliseconds here; the limit leaves room for a loaded machine.
        assert_fails_within(rel, &[libc::ENOENT], Duration::from_secs(6), move || {
            std::fs::metadata(path)
        });
    }
    // Fast because nothing was tried again: no request was made twice.
    let log = mock.state.request_log();
    let mut seen = std::collections::HashSet::new();
    let again: Vec<&String> = log.iter().filter(|r| !seen.insert(*r)).collect();
    assert!(again.is_empty(), "asked again: {again:?} in {log:?}");
}

#[test]
fn bad_bodies_give_eio_and_cache_nothing() {
    let mut data = small_sample();
    // A file whose listed digest is wrong. (A wrong listed size alone is a stale catalog,
    // not a bad body: see `catalog.rs`.)
    let protocols = "DEMO/SUBJ01_MR1/resources/PROTOCOLS/files";
    let g = mock_file_mut(&mut data, &format!("{protocols}/notes+v2.txt"));
    g.listed_digest_override = Some("0123456789abcdef0123456789abcdef".into());
    let mock = start_mock(data);
    let m = MountBuilder::new(&mock.url()).mount();
    let dir = m.path(protocols);
    assert_errno(
        std::fs::read(dir.join("notes+v2.txt")),
        &[libc::EIO],
        "digest",
    );
    // A body cut short by the server: retried, then served right.
    mock.state.controls.truncate_next.store(1, Ordering::SeqCst);
    let nifti = m.path(SUBJ01_T1W);
    let want = mock_file(&small_sample(), SUBJ01_T1W);
    assert_eq!(md5_file(&nifti), want.md5());
    // Always cut short: EIO, and nothing under a final name in the cache.
    mock.state
        .controls
        .truncate_next
        .store(100, Ordering::SeqCst);
    let other = m.path(SUBJ02_T1W);
    assert_errno(std::fs::read(&other), &[libc::EIO], "truncated every time");
    mock.state.controls.truncate_next.store(0, Ordering::SeqCst);
    let cached = walk_files(&m.cache_dir);
    assert!(
        !cached.iter().any(|(p, _)| p
            .to_string_lossy()
            .contains("XNAT_E00002/scans/2/resources/NIFTI")
            || p.to_string_lossy().contains("PROTOCOLS")),
        "{cached:?}"
    );
    // The next read tries again and succeeds.
    assert_eq!(std::fs::metadata(&other).unwrap().len(), 300_000);
    assert_eq!(std::fs::read(&other).unwrap().len(), 300_000);
}

#[test]
fn server_going_away_gives_eio_in_bounded_time_and_recovers() {
    let data = small_sample();
    let mock = start_mock(data);
    let addr = mock.addr;
    let state = mock.state.clone();
    let m = MountBuilder::new(&mock.url())
        .args(&["--io-timeout", "5s"])
        .mount();
    let cached = m.path("DEMO/SUBJ01_MR1/resources/QC/files/qc_report.html");
    let report = std::fs::read(&cached).unwrap();
    let uncached = m.path("DEMO/SUBJ01_MR1/resources/QC/files/figs/motion.png");
    assert!(uncached.is_file());
    drop(mock);
    // `--io-timeout` bounds one operation: retries and their pauses included. The limit
    // leaves a loaded machine twice the timeout again, and is still below the 20 s and more
    // that the attempts would take one after another (4, each up to the 5 s timeout, with
    // pauses between them) against a hung server if only each attempt were bounded.
    let limit = Duration::from_secs(3 * 5);
    let path = uncached.clone();
    assert_fails_within(
        "server down",
        &[libc::EIO, libc::ETIMEDOUT],
        limit,
        move || std::fs::read(path),
    );
    // What is cached is still served.
    assert_eq!(std::fs::read(&cached).unwrap(), report);
    // A hung server (it accepts but never answers) also fails in bounded time.
    let hung = std::net::TcpListener::bind(addr).unwrap();
    let path = uncached.clone();
    assert_fails_within(
        "server hung",
        &[libc::EIO, libc::ETIMEDOUT],
        limit,
        move || std::fs::read(path),
    );
    drop(hung);
    // The server comes back on the same address: reads work again.
    let _back = xnatfs::mock::MockServer::start_with_state(addr, state).unwrap();
    assert_eq!(std::fs::read(&uncached).unwrap().len(), 12_345);
}

fn mount_fails(url: &str, args: &[&str], env: &[(&str, &str)], want: &str) {
    let home = tempfile::tempdir().unwrap();
    let mp = home.path().join("mnt");
    std::fs::create_dir(&mp).unwrap();
    let mut cmd = xnatfs(url, home.path());
    cmd.arg("mount").arg(&mp).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} should fail");
    assert!(
        stderr.contains(want),
        "{args:?}: expected {want:?} in {stderr:?}"
    );
    assert!(!is_mounted(&mp));
    force_unmount(&mp);
}

#[test]
fn bad_input_fails_before_mounting_with_a_clear_message() {
    let mock = start_mock(small_sample());
    let url = mock.url();
    mount_fails(
        &url,
        &["-E", "XNAT_E99999"],
        &[],
        "unknown session XNAT_E99999",
    );
    mount_fails(
        &url,
        &["-P", "DEMO", "-E", "NOPE"],
        &[],
        "unknown session NOPE in project DEMO",
    );
    mount_fails(&url, &["-P", "NOPE"], &[], "unknown project NOPE");
    mount_fails(
        &url,
        &[],
        &[("XNAT_PASS", "wrong")],
        "wrong user name or password",
    );
    mount_fails("http://127.0.0.1:9", &[], &[], "cannot reach the server");
    mount_fails("not a url", &[], &[], "not a valid server URL");
    // Durations: absurd or unreadable values are usage errors (exit 2), never a panic.
    for (args, want) in [
        (&["--io-timeout", "18446744073709551615"][..], "too long"),
        (&["--dir-ttl", "soon"][..], "not a duration"),
        (&["--io-timeout", "5d"][..], "unknown unit"),
    ] {
        mount_fails(&url, args, &[], want);
        let home = tempfile::tempdir().unwrap();
        let out = xnatfs(&url, home.path())
            .args(["mount", "/tmp"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    // A mount point that does not exist, and one that is a file.
    let home = tempfile::tempdir().unwrap();
    let out = xnatfs(&url, home.path())
        .args(["mount", "/nonexistent/xnatfs-mnt"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    let file = home.path().join("f");
    std::fs::write(&file, b"").unwrap();
    let out = xnatfs(&url, home.path())
        .arg("mount")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a folder"));
}

#[test]
fn hostile_names_never_escape() {
    let mut data = small_sample();
    add_hostile_files(
        &mut data,
        "DEMO/SUBJ01_MR1/resources/QC",
        &[
            "../../../../escaped.txt",
            "/tmp/absolute.txt",
            "a/../../b.txt",
            "..",
            "ok/./x",
        ],
    );
    let mock = start_mock(data);
    let m = MountBuilder::new(&mock.url()).mount();
    let dir = m.path("DEMO/SUBJ01_MR1/resources/QC/files");
    assert_eq!(dir_names(&dir), ["figs", "qc_report.html"]);
    for (p, _) in walk_files(&m.mountpoint) {
        assert!(!p.to_string_lossy().contains("escaped"));
    }
    assert!(!m.dir.path().join("escaped.txt").exists());
    assert!(!std::path::Path::new("/tmp/absolute.txt").exists());
}

#[test]
fn a_file_gone_from_the_server_is_enoent_and_its_listing_is_asked_again() {
    let mut data = small_sample();
    let motion = "DEMO/SUBJ01_MR1/resources/QC/files/figs/motion.png";
    mock_file_mut(&mut data, motion).body_gone = true;
    let mock = start_mock(data);
    let m = MountBuilder::new(&mock.url()).mount();
    let gone = m.path(motion);
    assert!(gone.is_file());
    let listings = mock.state.controls.listings.load(Ordering::SeqCst);
    assert_errno(std::fs::read(&gone), &[libc::ENOENT], "gone");
    // The next look at the folder asks XNAT again.
    let _ = std::fs::read_dir(m.path("DEMO/SUBJ01_MR1/resources/QC/files/figs"))
        .unwrap()
        .count();
    assert!(mock.state.controls.listings.load(Ordering::SeqCst) > listings);
}

/// XNAT answers 404 with an empty body for the files of a resource whose catalog it cannot
/// read, and for every session-wide listing that includes it (`files?all=true`,
/// `scans/ALL/files`): that resource's `files/` alone fails, with EIO and a log line naming
/// it; the session's other scans, resources and assessors list and read. The same for an
/// assessor's resource and a reconstruction's.
#[test]
fn an_unreadable_catalog_fails_only_its_own_resource() {
    let data = small_sample();
    let id = |session: &str, scan: Option<&str>, label: &str| -> u64 {
        data.resource_ref(session, scan, label).id.parse().unwrap()
    };
    let nifti = id("XNAT_E00001", Some("2"), "NIFTI");
    let qc = id("XNAT_E00001", None, "QC");
    let petmr = data.session("XNAT_E00005").unwrap();
    let freesurfer = petmr.assessors[0].resources[0].id;
    let pet_ac = petmr.assessors.iter().find(|a| a.id == "PET_AC").unwrap();
    let pet_ac = pet_ac.resources[0].id;
    let mock = start_mock(data);
    mock.state.controls.make_catalog_unreadable(nifti);
    mock.state.controls.make_catalog_unreadable(qc);
    mock.state.controls.make_catalog_unreadable(freesurfer);
    mock.state.controls.make_catalog_unreadable(pet_ac);
    let log = tempfile::tempdir().unwrap();
    let log_file = log.path().join("xnatfs.log");
    let m = MountBuilder::new(&mock.url()).log_at(&log_file).mount();
    let files = m.path("DEMO/SUBJ01_MR1/scans/2/resources/NIFTI/files");
    let list = |dir: &std::path::Path| {
        std::fs::read_dir(dir).and_then(|d| d.collect::<std::io::Result<Vec<_>>>())
    };
    assert_errno(list(&files), &[libc::EIO], "NIFTI/files");
    // Everything else of the session lists and reads.
    let dicom = m.path("DEMO/SUBJ01_MR1/scans/1/resources/DICOM/files");
    assert!(std::fs::read_dir(&dicom).unwrap().count() > 0);
    let protocols = m.path(SUBJ01_PROTOCOLS);
    assert!(dir_names(&protocols).contains(&"scan protocol.txt".to_string()));
    // A session-level resource: it alone fails, beside its readable sibling (above).
    let qc_files = m.path("DEMO/SUBJ01_MR1/resources/QC/files");
    assert_errno(list(&qc_files), &[libc::EIO], "QC/files");
    let resources = dir_names(&m.path("DEMO/SUBJ01_MR1/resources"));
    assert!(resources.contains(&"QC".to_string()), "{resources:?}");
    let scan2 = dir_names(&m.path("DEMO/SUBJ01_MR1/scans/2/resources"));
    assert!(
        scan2.contains(&"NIFTI".to_string()),
        "still a folder: {scan2:?}"
    );
    // An assessor's resource the same way, beside its readable sibling.
    let session = "MULTI/SUBJ03_PETMR1";
    let fs_files = m.path(&format!(
        "{session}/{}",
        assessor_path("SUBJ03_PETMR1_freesurfer", "DATA", "")
    ));
    assert_errno(list(&fs_files), &[libc::EIO], "DATA/files");
    let qc = m.path(&format!(
        "{session}/{}",
        assessor_path("SUBJ03_PETMR1_qc", "QC", "qc.html")
    ));
    assert!(
        std::fs::read_to_string(qc)
            .unwrap()
            .contains("FreeSurfer QC")
    );
    assert!(
        std::fs::read_dir(m.path(&format!("{session}/scans")))
            .unwrap()
            .count()
            > 0
    );
    // A reconstruction's resource too.
    let recon = m.path(&format!(
        "{session}/reconstructions/PET_AC/resources/NIFTI/files"
    ));
    assert_errno(list(&recon), &[libc::EIO], "PET_AC NIFTI/files");
    let logged = std::fs::read_to_string(&log_file).unwrap();
    assert!(
        logged.contains(
            "cannot list the files of /data/experiments/XNAT_E00001/scans/2/resources/NIFTI"
        ),
        "{logged}"
    );
    assert!(
        logged.contains("cannot list the files of /data/experiments/XNAT_E00001/resources/QC"),
        "{logged}"
    );
}

/// Resource stats that disagree with the files listings (the `file_count` and `file_size` XNAT
/// keeps for a catalog, stale once files change behind its back) are hints, never a reason to
/// refuse a session: every file shows at its listed size and reads right.
#[test]
fn stale_resource_stats_are_hints_and_every_file_reads_right() {
    let data = small_sample();
    let want = expected_files(&data);
    let mock = start_mock(data);
    mock.state
        .controls
        .stale_file_stats
        .store(true, Ordering::SeqCst);
    let m = MountBuilder::new(&mock.url()).mount();
    let mut shown = walk_files(&m.mountpoint);
    shown.sort();
    let listed: Vec<_> = want.iter().map(|(p, size, _)| (p.clone(), *size)).collect();
    assert_eq!(shown, listed);
    for (rel, _, md5) in &want {
        assert_eq!(&md5_file(&m.mountpoint.join(rel)), md5, "{}", rel.display());
    }
}

/// A file listed with `Size: ""` (a catalog entry without size, whose file XNAT could not
/// stat) is shown, and its body decides: gone, its read fails (and nothing of the session
/// else does); there after all, its read gives its bytes. Never an empty file for it.
#[test]
fn a_file_listed_without_size_is_shown_and_its_body_decides() {
    let mut data = small_sample();
    let gone = format!("{SUBJ01_PROTOCOLS}/scan protocol.txt");
    let there = format!("{SUBJ01_PROTOCOLS}/notes+v2.txt");
    let f = mock_file_mut(&mut data, &gone);
    f.listed_without_size = true;
    f.body_gone = true;
    mock_file_mut(&mut data, &there).listed_without_size = true;
    let want = mock_file(&data, &there);
    let mock = start_mock(data);
    let m = MountBuilder::new(&mock.url()).mount();
    let names = dir_names(&m.path(SUBJ01_PROTOCOLS));
    assert!(
        names.contains(&"scan protocol.txt".to_string()),
        "{names:?}"
    );
    let r = std::fs::read(m.path(&gone));
    assert_errno(r, &[libc::ENOENT, libc::EIO], "a file gone");
    let got = std::fs::read(m.path(&there)).unwrap();
    assert_eq!(
        got,
        want.read_at(0, want.size() as usize).unwrap(),
        "the body decides"
    );
    // The rest of the session is there.
    assert!(std::fs::read(m.path(SUBJ01_T1W)).unwrap().len() > 1000);
}

/// A reverse proxy in front of XNAT: its 504 page (XNAT too slow for the proxy's timeout) is
/// an error, tried again like any 5xx, and the read comes out right; its 200 maintenance page
/// is never taken for data: the read fails (EIO), and the log names the proxy.
#[test]
fn a_front_proxys_pages_are_errors_naming_it_never_data() {
    let data = small_sample();
    let t1w = mock_file(&data, SUBJ01_T1W);
    let t2 = mock_file(&data, SUBJ02_T1W);
    let mock = start_mock(data);
    let log = tempfile::tempdir().unwrap();
    let log_file = log.path().join("xnatfs.log");
    let m = MountBuilder::new(&mock.url())
        .args(&["-vv"])
        .log_at(&log_file)
        .mount();
    assert!(m.path("DEMO/SUBJ01_MR1/scans").is_dir());
    let c = &mock.state.controls;
    c.gateway_timeout_next.store(2, Ordering::SeqCst);
    assert_eq!(md5_file(&m.path(SUBJ01_T1W)), t1w.md5());
    let logged = std::fs::read_to_string(&log_file).unwrap();
    assert!(
        logged.contains("HTTP 504") && logged.contains("answered by nginx/1.24.0"),
        "{logged}"
    );
    // A maintenance page for every request, for a while: no byte of it is a file's.
    c.proxy_page_next.store(1000, Ordering::SeqCst);
    let path = m.path(SUBJ02_T1W);
    assert_fails_within(
        "a read answered by a maintenance page",
        &[libc::EIO, libc::EACCES],
        Duration::from_secs(60),
        move || std::fs::read(path),
    );
    let logged = std::fs::read_to_string(&log_file).unwrap();
    assert!(
        logged.contains("served by nginx/1.24.0 in front of XNAT"),
        "{logged}"
    );
    c.proxy_page_next.store(0, Ordering::SeqCst);
    assert_eq!(
        md5_file(&m.path(SUBJ02_T1W)),
        t2.md5(),
        "right once it is gone"
    );
}

/// A catalog that becomes unreadable while mounted: once the folder's listing is old
/// (`--dir-ttl`), its `files/` gives EIO (never an empty folder, never ENOENT), whether
/// opened anew or read from a handle opened before; the session's other folders still list,
/// and the files already read still read.
#[test]
fn a_catalog_that_becomes_unreadable_while_mounted_fails_its_folder_with_eio() {
    let data = small_sample();
    let qc = data
        .resource_ref("XNAT_E00001", None, "QC")
        .id
        .parse()
        .unwrap();
    let mock = start_mock(data);
    let m = MountBuilder::new(&mock.url())
        .args(&["--dir-ttl", "1s"])
        .mount();
    let files = m.path("DEMO/SUBJ01_MR1/resources/QC/files");
    let report = files.join("qc_report.html");
    assert!(std::fs::read_to_string(&report).unwrap().contains("QC for"));
    let mut open = std::fs::read_dir(&files).unwrap();
    mock.state.controls.make_catalog_unreadable(qc);
    std::thread::sleep(Duration::from_millis(1500));
    let list = |dir: &std::path::Path| {
        std::fs::read_dir(dir).and_then(|d| d.collect::<std::io::Result<Vec<_>>>())
    };
    assert_errno(list(&files), &[libc::EIO], "QC/files opened anew");
    let rest: std::io::Result<Vec<_>> = open.by_ref().collect();
    if let Err(e) = rest {
        assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    }
    assert!(dir_names(&m.path(SUBJ01_PROTOCOLS)).contains(&"scan protocol.txt".to_string()));
    assert!(
        std::fs::read_dir(m.path("DEMO/SUBJ01_MR1/scans"))
            .unwrap()
            .count()
            > 0
    );
}
