//! Real FUSE mounts of the mock XNAT server.

mod common;

use common::*;
use std::io::ErrorKind;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[test]
fn tree_sizes_and_no_downloads_for_listing() {
    let data = small_sample();
    let expected = expected_files(&data);
    let mock = start_mock(data);
    let m = MountBuilder::new(&mock.url()).mount();
    let got = walk_files(&m.mountpoint);
    let want: Vec<(PathBuf, u64)> = expected.iter().map(|(p, s, _)| (p.clone(), *s)).collect();
    assert_eq!(got, want);
    // ls -lR, stat and find never download file contents.
    assert_eq!(mock.state.file_gets(), 0);
    let meta =
        std::fs::metadata(m.path("DEMO/SUBJ01_MR1/scans/2/resources/NIFTI/files/T1w.nii.gz"))
            .unwrap();
    assert_eq!(meta.len(), 300_000);
    assert_eq!(meta.permissions().mode() & 0o777, 0o444);
    let dir = std::fs::metadata(m.path("DEMO")).unwrap();
    assert_eq!(dir.permissions().mode() & 0o777, 0o555);
    // Nested paths inside a resource become folders.
    assert!(
        m.path("DEMO/SUBJ01_MR1/scans/3/resources/DICOM/files/echo1")
            .is_dir()
    );
    // Labels repeat across projects and stay apart.
    assert!(m.path("PILOT/SUBJ01_MR1/scans/2").is_dir());
    // Scans under a label are never asked for by label (XNAT has no such route).
    assert!(
        !mock
            .state
            .request_log()
            .iter()
            .any(|r| r.contains("/experiments/SUBJ01_MR1/scans")),
        "{:?}",
        mock.state.request_log()
    );
    // The EEG session's scans need xsiType on the listing.
    assert!(
        m.path("PILOT/SUBJ01_EEG1/scans/1/resources/EDF/files/SUBJ01_EEG1.edf")
            .is_file()
    );
}

use std::os::unix::fs::PermissionsExt;

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
    let tmp: Vec<_> = std::fs::read_dir(
        cache
            .path()
            .join(xnatfs::cache::area_name(&mock.url()))
            .join("tmp"),
    )
    .unwrap()
    .collect();
    assert!(tmp.is_empty());
}

#[test]
fn concurrent_readers_share_one_download() {
    let data = small_sample();
    let mock = start_mock(data);
    mock.state.controls.latency_ms.store(200, Ordering::SeqCst);
    let m = MountBuilder::new(&mock.url()).mount();
    let file = m.path("DEMO/SUBJ02_MR1/scans/2/resources/NIFTI/files/T1w.nii.gz");
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
fn writes_are_refused_with_erofs() {
    let mock = start_mock(small_sample());
    let m = MountBuilder::new(&mock.url()).mount();
    let dir = m.path("DEMO/SUBJ01_MR1/resources/QC/files");
    let file = dir.join("qc_report.html");
    let erofs = |r: std::io::Result<()>, what: &str| {
        let e = r.expect_err(what);
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{what}: {e}");
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
        let start = Instant::now();
        let e = std::fs::metadata(m.path(rel)).expect_err(rel);
        assert_eq!(e.kind(), ErrorKind::NotFound, "{rel}: {e}");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{rel} took {:?}",
            start.elapsed()
        );
    }
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
        let m = MountBuilder::new(&mock.url()).mount();
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
fn bad_bodies_give_eio_and_cache_nothing() {
    let mut data = small_sample();
    // A file whose listed digest is wrong, one whose listed size is wrong.
    {
        let session = std::sync::Arc::get_mut(&mut data.projects[0].sessions[0]).unwrap();
        let files = &mut session.resources[1].files; // PROTOCOLS
        let f = std::sync::Arc::get_mut(&mut files[0]).unwrap();
        f.listed_size = Some(f.size() + 5);
        let g = std::sync::Arc::get_mut(&mut files[1]).unwrap();
        g.listed_digest_override = Some("0123456789abcdef0123456789abcdef".into());
    }
    let mock = start_mock(data);
    let m = MountBuilder::new(&mock.url()).mount();
    let dir = m.path("DEMO/SUBJ01_MR1/resources/PROTOCOLS/files");
    for name in ["scan protocol.txt", "notes+v2.txt"] {
        let e = std::fs::read(dir.join(name)).expect_err(name);
        assert_eq!(e.raw_os_error(), Some(libc::EIO), "{name}: {e}");
    }
    // A body cut short by the server: retried, then served right.
    mock.state.controls.truncate_next.store(1, Ordering::SeqCst);
    let nifti = m.path("DEMO/SUBJ01_MR1/scans/2/resources/NIFTI/files/T1w.nii.gz");
    let want = expected_files(&small_sample())
        .into_iter()
        .find(|(p, _, _)| p.ends_with("SUBJ01_MR1/scans/2/resources/NIFTI/files/T1w.nii.gz"))
        .unwrap()
        .2;
    assert_eq!(md5_file(&nifti), want);
    // Always cut short: EIO, and nothing under a final name in the cache.
    mock.state
        .controls
        .truncate_next
        .store(100, Ordering::SeqCst);
    let other = m.path("DEMO/SUBJ02_MR1/scans/2/resources/NIFTI/files/T1w.nii.gz");
    let e = std::fs::read(&other).expect_err("truncated every time");
    assert_eq!(e.raw_os_error(), Some(libc::EIO));
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
        .args(&["--io-timeout", "5"])
        .mount();
    let cached = m.path("DEMO/SUBJ01_MR1/resources/QC/files/qc_report.html");
    let report = std::fs::read(&cached).unwrap();
    let uncached = m.path("DEMO/SUBJ01_MR1/resources/QC/files/figs/motion.png");
    assert!(uncached.is_file());
    drop(mock);
    let start = Instant::now();
    let e = std::fs::read(&uncached).expect_err("server down");
    assert!(
        matches!(e.raw_os_error(), Some(libc::EIO) | Some(libc::ETIMEDOUT)),
        "{e}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "took {:?}",
        start.elapsed()
    );
    // What is cached is still served.
    assert_eq!(std::fs::read(&cached).unwrap(), report);
    // A hung server (it accepts but never answers) also fails in bounded time.
    let hung = std::net::TcpListener::bind(addr).unwrap();
    let start = Instant::now();
    let e = std::fs::read(&uncached).expect_err("server hung");
    assert!(
        matches!(e.raw_os_error(), Some(libc::EIO) | Some(libc::ETIMEDOUT)),
        "{e}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "took {:?}",
        start.elapsed()
    );
    drop(hung);
    // The server comes back on the same address: reads work again.
    let _back = xnatfs::mock::MockServer::start_with_state(addr, state).unwrap();
    assert_eq!(std::fs::read(&uncached).unwrap().len(), 12_345);
}

#[test]
fn project_and_session_roots() {
    let mock = start_mock(small_sample());
    let m = MountBuilder::new(&mock.url())
        .args(&["-P", "PILOT"])
        .mount();
    let mut names: Vec<String> = std::fs::read_dir(&m.mountpoint)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["SUBJ01_EEG1", "SUBJ01_MR1"]);
    drop(m);

    let m = MountBuilder::new(&mock.url())
        .args(&["-E", "XNAT_E00002", "-P", "PILOT", "-E", "SUBJ01_MR1"])
        .mount();
    let mut names: Vec<String> = std::fs::read_dir(&m.mountpoint)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["SUBJ01_MR1", "XNAT_E00002"]);
    // The label resolved within PILOT, not DEMO: PILOT's session is XNAT_E00003.
    assert!(m.path("SUBJ01_MR1/scans/2").is_dir());
    let log = mock.state.request_log();
    assert!(
        log.iter()
            .any(|r| r.starts_with("GET /data/experiments/XNAT_E00003/")),
        "{log:?}"
    );
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
fn background_mount_returns_when_ready_and_unmounts() {
    let mock = start_mock(small_sample());
    let home = tempfile::tempdir().unwrap();
    let mp = home.path().join("mnt");
    std::fs::create_dir(&mp).unwrap();
    let out = xnatfs(&mock.url(), home.path())
        .arg("mount")
        .arg(&mp)
        .args(["-P", "DEMO"])
        .output()
        .unwrap();
    let guard = scopeguard(mp.clone());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Ready means ready: no polling needed.
    assert!(mp.join("SUBJ01_MR1/scans/1/resources/DICOM/files").is_dir());
    // A second mount on the same folder is refused.
    let again = xnatfs(&mock.url(), home.path())
        .arg("mount")
        .arg(&mp)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("busy"));
    let un = xnatfs(&mock.url(), home.path())
        .arg("unmount")
        .arg(&mp)
        .output()
        .unwrap();
    assert!(
        un.status.success(),
        "{}",
        String::from_utf8_lossy(&un.stderr)
    );
    assert!(!is_mounted(&mp));
    // The background process ends by itself once unmounted.
    let start = Instant::now();
    while daemon_running(&mp) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the background mount did not exit"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(guard);
}

/// Whether an `xnatfs mount` process for `mp` is still alive.
fn daemon_running(mp: &std::path::Path) -> bool {
    let want = mp.to_string_lossy().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| {
                    let args: Vec<String> = c
                        .split(|b| *b == 0)
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                        .collect();
                    args.first().is_some_and(|a| a.ends_with("xnatfs")) && args.contains(&want)
                })
                .unwrap_or(false)
        })
}

struct Unmounter(PathBuf);
fn scopeguard(p: PathBuf) -> Unmounter {
    Unmounter(p)
}
impl Drop for Unmounter {
    fn drop(&mut self) {
        force_unmount(&self.0);
    }
}

#[test]
fn sigterm_unmounts_cleanly() {
    let mock = start_mock(small_sample());
    let mut m = MountBuilder::new(&mock.url()).mount();
    let pid = m.child.as_ref().unwrap().id() as i32;
    assert!(m.path("DEMO").is_dir());
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = wait_exit(
        m.child.as_mut().unwrap(),
        Duration::from_secs(10),
        "no exit after SIGTERM",
    );
    assert!(status.success(), "{status}");
    assert!(!is_mounted(&m.mountpoint));
}

#[test]
fn hostile_names_never_escape() {
    use xnatfs::mock::data::{Body, MockFile};
    let mut data = small_sample();
    {
        let session = std::sync::Arc::get_mut(&mut data.projects[0].sessions[0]).unwrap();
        let files = &mut session.resources[0].files; // QC
        for evil in [
            "../../../../escaped.txt",
            "/tmp/absolute.txt",
            "a/../../b.txt",
            "..",
            "ok/./x",
        ] {
            files.push(MockFile::new(
                evil,
                Body::Memory(bytes::Bytes::from_static(b"evil")),
            ));
        }
    }
    let mock = start_mock(data);
    let m = MountBuilder::new(&mock.url()).mount();
    let dir = m.path("DEMO/SUBJ01_MR1/resources/QC/files");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["figs", "qc_report.html"]);
    for (p, _) in walk_files(&m.mountpoint) {
        assert!(!p.to_string_lossy().contains("escaped"));
    }
    assert!(!m.dir.path().join("escaped.txt").exists());
    assert!(!std::path::Path::new("/tmp/absolute.txt").exists());
}

#[test]
fn thousands_of_files_list_fully() {
    use xnatfs::mock::data::{Body, MockFile};
    let mut data = small_sample();
    {
        let session = std::sync::Arc::get_mut(&mut data.projects[0].sessions[0]).unwrap();
        let files = &mut session.resources[1].files; // PROTOCOLS
        for i in 0..3000 {
            files.push(MockFile::new(
                format!("many/file_{i:05}_with_a_fairly_long_name.txt"),
                Body::Memory(bytes::Bytes::from(format!("{i}\n"))),
            ));
        }
    }
    let mock = start_mock(data);
    let m = MountBuilder::new(&mock.url()).mount();
    let dir = m.path("DEMO/SUBJ01_MR1/resources/PROTOCOLS/files/many");
    let names: std::collections::BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 3000);
    assert!(names.contains("file_02999_with_a_fairly_long_name.txt"));
    assert_eq!(
        std::fs::read_to_string(dir.join("file_01234_with_a_fairly_long_name.txt")).unwrap(),
        "1234\n"
    );
}

#[test]
fn demo_command_mounts_lists_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let mp = dir.path().join("demo");
    let _guard = scopeguard(mp.clone());
    let out = std::process::Command::new(BIN)
        .arg("demo")
        .arg(&mp)
        .arg("--once")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("SUBJ01_MR1/"), "{stdout}");
    assert!(stdout.contains("QC for SUBJ01_MR1"), "{stdout}");
    assert!(!is_mounted(&mp));
}

#[test]
fn listings_and_cached_files_stay_served_while_the_server_is_away() {
    let data = small_sample();
    let expected = expected_files(&data);
    let mock = start_mock(data);
    // A zero TTL: every listing is asked again, so these come from the kept copies.
    let m = MountBuilder::new(&mock.url())
        .args(&["--dir-ttl", "0", "--io-timeout", "3"])
        .mount();
    let before = walk_files(&m.mountpoint);
    let cached = m.path("DEMO/SUBJ01_MR1/scans/2/resources/NIFTI/files/T1w.nii.gz");
    let want = std::fs::read(&cached).unwrap();
    drop(mock);
    assert_eq!(
        walk_files(&m.mountpoint),
        before,
        "listings served while offline"
    );
    assert_eq!(std::fs::read(&cached).unwrap(), want);
    let uncached =
        m.path("DEMO/SUBJ02_MR1/scans/1/resources/DICOM/files/1.3.12.2.1107.5.2.1.00001.dcm");
    let e = std::fs::read(&uncached).expect_err("not cached, server away");
    assert!(
        matches!(e.raw_os_error(), Some(libc::EIO) | Some(libc::ETIMEDOUT)),
        "{e}"
    );
    assert_eq!(before.len(), expected.len());
}

#[test]
fn offline_mount_serves_what_was_prefetched_with_no_server() {
    let data = small_sample();
    let expected: Vec<_> = expected_files(&data)
        .into_iter()
        .filter(|(p, _, _)| p.starts_with("DEMO/SUBJ01_MR1"))
        .collect();
    let mock = start_mock(data);
    let url = mock.url();
    let cache = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let out = xnatfs(&url, home.path())
        .args([
            "prefetch",
            "-E",
            "XNAT_E00001",
            "--session-resources",
            "--cache-dir",
        ])
        .arg(cache.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(mock);
    // No server at all, and no password needed.
    for args in [vec!["--offline"], vec!["--offline", "-E", "XNAT_E00001"]] {
        let m = MountBuilder::new(&url)
            .cache_dir(cache.path())
            .args(&args)
            .env("XNAT_PASS", "")
            .mount();
        let prefix = if args.len() == 1 { "" } else { "XNAT_E00001/" };
        for (rel, _, md5) in &expected {
            let rel = if prefix.is_empty() {
                rel.clone()
            } else {
                PathBuf::from(prefix).join(rel.strip_prefix("DEMO/SUBJ01_MR1").unwrap())
            };
            assert_eq!(
                &md5_file(&m.mountpoint.join(&rel)),
                md5,
                "{}",
                rel.display()
            );
        }
    }
}

#[test]
fn a_stale_mount_left_by_a_killed_process_is_cleaned_up() {
    let mock = start_mock(small_sample());
    let mut m = MountBuilder::new(&mock.url()).mount();
    assert!(m.path("DEMO").is_dir());
    let mut child = m.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let e = std::fs::read_dir(&m.mountpoint).expect_err("stale");
    assert_eq!(e.raw_os_error(), Some(libc::ENOTCONN), "{e}");
    // The next mount on it says so, cleans it up, and mounts.
    let home = m.home.clone();
    let out = xnatfs(&mock.url(), &home)
        .arg("mount")
        .arg(&m.mountpoint)
        .arg("--cache-dir")
        .arg(&m.cache_dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("stale mount"), "{stderr}");
    assert!(m.path("DEMO/SUBJ01_MR1").is_dir());
    let un = xnatfs(&mock.url(), &home)
        .arg("unmount")
        .arg(&m.mountpoint)
        .output()
        .unwrap();
    assert!(un.status.success());
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
    let kept = m.path("DEMO/SUBJ01_MR1/scans/2/resources/NIFTI/files/T1w.nii.gz");
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
fn random_ranges_of_a_large_file_read_right_with_and_without_range() {
    use std::io::{Read, Seek, SeekFrom};
    let big = 12 << 20;
    for honour in [false, true] {
        let data = xnatfs::mock::data::Dataset::sample(&xnatfs::mock::data::SampleSpec {
            dicom_files: 1,
            dicom_size: 100,
            nifti_size: big,
            scans: 2,
        });
        let source = data.projects[0].sessions[0].scans[1].resources[1].files[0].clone();
        let mock = start_mock(data);
        mock.state
            .controls
            .honour_range
            .store(honour, Ordering::SeqCst);
        let m = MountBuilder::new(&mock.url())
            .args(&["--max-memory", "1M"])
            .mount();
        let mut f =
            std::fs::File::open(m.path("DEMO/SUBJ01_MR1/scans/2/resources/NIFTI/files/T1w.nii.gz"))
                .unwrap();
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
                "{off}+{len} (range {honour})"
            );
        }
    }
}

#[test]
fn a_cached_file_reads_while_another_download_is_stalled() {
    let mock = start_mock(small_sample());
    let m = MountBuilder::new(&mock.url())
        .args(&["--io-timeout", "4"])
        .mount();
    let cached = m.path("DEMO/SUBJ01_MR1/scans/2/resources/NIFTI/files/T1w.nii.gz");
    let want = std::fs::read(&cached).unwrap();
    mock.state
        .controls
        .stall_files
        .store(true, Ordering::SeqCst);
    let stalled = m.path("DEMO/SUBJ02_MR1/scans/2/resources/NIFTI/files/T1w.nii.gz");
    let blocked = std::thread::spawn(move || std::fs::read(stalled));
    std::thread::sleep(Duration::from_millis(300));
    assert!(!blocked.is_finished(), "the stalled read is waiting");
    // Served while the other is stuck: listings, stat, and the cached file.
    assert_eq!(std::fs::read(&cached).unwrap(), want);
    assert!(m.path("DEMO/SUBJ02_MR1/resources").is_dir());
    assert!(!blocked.is_finished());
    // The stalled read ends with an error within its I/O timeout, not never.
    let e = blocked.join().unwrap().expect_err("stalled");
    assert!(
        matches!(e.raw_os_error(), Some(libc::EIO) | Some(libc::ETIMEDOUT)),
        "{e}"
    );
    mock.state
        .controls
        .stall_files
        .store(false, Ordering::SeqCst);
}

#[test]
fn a_full_cache_disk_fails_reads_cleanly_and_corrupts_nothing() {
    // A 1 MiB tmpfs as the cache dir (CI runs as root; elsewhere this test says so and stops).
    let disk = tempfile::tempdir().unwrap();
    let mounted = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=1m",
            "xnatfs-test",
            disk.path().to_str().unwrap(),
        ])
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("cannot mount a tmpfs here (not root?): skipping the ENOSPC test");
        return;
    }
    struct Umount(PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _disk_guard = Umount(disk.path().to_path_buf());
    let data = xnatfs::mock::data::Dataset::sample(&xnatfs::mock::data::SampleSpec {
        dicom_files: 3,
        dicom_size: 4096,
        nifti_size: 3 << 20,
        scans: 2,
    });
    let dcm = data.projects[0].sessions[0].scans[0].resources[0].files[0].clone();
    let mock = start_mock(data);
    let m = MountBuilder::new(&mock.url())
        .cache_dir(disk.path())
        .args(&["-E", "XNAT_E00001", "--io-timeout", "5"])
        .mount();
    let big = m.path("XNAT_E00001/scans/2/resources/NIFTI/files/T1w.nii.gz");
    let e = std::fs::read(&big).expect_err("3 MiB cannot fit a 1 MiB cache");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    // Nothing half-written under a final name, no partial file left, and small files still work.
    let area = disk.path().join(xnatfs::cache::area_name(&mock.url()));
    assert!(
        !area
            .join("data/XNAT_E00001/scans/2/resources/NIFTI/files/T1w.nii.gz")
            .exists()
    );
    assert_eq!(std::fs::read_dir(area.join("tmp")).unwrap().count(), 0);
    let small = m.path(&format!(
        "XNAT_E00001/scans/1/resources/DICOM/files/{}",
        dcm.path
    ));
    assert_eq!(md5_file(&small), dcm.md5());
}

#[test]
fn a_file_gone_from_the_server_is_enoent_and_its_listing_is_asked_again() {
    let mut data = small_sample();
    {
        let session = std::sync::Arc::get_mut(&mut data.projects[0].sessions[0]).unwrap();
        let f = std::sync::Arc::get_mut(&mut session.resources[0].files[1]).unwrap(); // QC figs/motion.png
        f.body_gone = true;
    }
    let mock = start_mock(data);
    let m = MountBuilder::new(&mock.url()).mount();
    let gone = m.path("DEMO/SUBJ01_MR1/resources/QC/files/figs/motion.png");
    assert!(gone.is_file());
    let listings = mock.state.controls.listings.load(Ordering::SeqCst);
    let e = std::fs::read(&gone).expect_err("gone");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    // The next look at the folder asks XNAT again.
    let _ = std::fs::read_dir(m.path("DEMO/SUBJ01_MR1/resources/QC/files/figs"))
        .unwrap()
        .count();
    assert!(mock.state.controls.listings.load(Ordering::SeqCst) > listings);
}

#[test]
fn ctrl_c_on_a_waiting_reader_ends_its_wait_at_once() {
    let mock = start_mock(small_sample());
    // A long I/O timeout: the reader must not have to sit it out.
    let m = MountBuilder::new(&mock.url())
        .args(&["--io-timeout", "60"])
        .mount();
    let file = m.path("DEMO/SUBJ01_MR1/scans/2/resources/NIFTI/files/T1w.nii.gz");
    assert!(file.is_file());
    mock.state
        .controls
        .stall_files
        .store(true, Ordering::SeqCst);
    ctrl_c_ends_it_at_once(std::process::Command::new("cat").arg(&file), "cat");
    mock.state
        .controls
        .stall_files
        .store(false, Ordering::SeqCst);
}

#[test]
fn ctrl_c_on_a_listing_that_waits_for_the_server_ends_at_once() {
    let mock = start_mock(small_sample());
    let m = MountBuilder::new(&mock.url())
        .args(&["--io-timeout", "60"])
        .mount();
    assert!(m.path("DEMO").is_dir());
    mock.state
        .controls
        .latency_ms
        .store(20_000, Ordering::SeqCst);
    ctrl_c_ends_it_at_once(
        std::process::Command::new("ls").arg(m.path("DEMO/SUBJ02_MR1/scans")),
        "ls",
    );
    mock.state.controls.latency_ms.store(0, Ordering::SeqCst);
}

#[test]
fn sigterm_on_a_busy_mount_detaches_it_and_says_so() {
    let mock = start_mock(small_sample());
    let mut m = MountBuilder::new(&mock.url()).mount();
    let held =
        std::fs::File::open(m.path("DEMO/SUBJ01_MR1/resources/QC/files/qc_report.html")).unwrap();
    let pid = m.child.as_ref().unwrap().id() as i32;
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let start = Instant::now();
    while is_mounted(&m.mountpoint) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still mounted after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = std::fs::read_to_string(&m.log_path).unwrap();
    assert!(log.contains("is busy; detached"), "{log}");
    // The open file still reads; once it is closed the process ends by itself.
    use std::io::Read;
    let mut text = String::new();
    (&held).read_to_string(&mut text).unwrap();
    assert!(text.contains("QC for SUBJ01_MR1"));
    drop(held);
    let status = wait_exit(
        m.child.as_mut().unwrap(),
        Duration::from_secs(10),
        "no exit after the last file closed",
    );
    assert!(status.success(), "{status}");
}

/// Waits for `child` to exit within `limit`, failing the test with `what` if it does not.
fn wait_exit(
    child: &mut std::process::Child,
    limit: Duration,
    what: &str,
) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < limit, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `cmd`, checks that it is still waiting after 500 ms, sends it SIGINT (Ctrl-C) and
/// checks that it ends within 5 s.
fn ctrl_c_ends_it_at_once(cmd: &mut std::process::Command, name: &str) {
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(child.try_wait().unwrap().is_none(), "{name} is waiting");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    wait_exit(
        &mut child,
        Duration::from_secs(5),
        &format!("{name} still waits after Ctrl-C"),
    );
}
