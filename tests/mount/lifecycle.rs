//! A mount's life: mounting in the background, unmounting, signals (SIGTERM, Ctrl-C on a
//! waiting process), stale mounts left by a killed process, and the demo command.

use crate::common::*;
use std::sync::atomic::Ordering;
use std::time::Duration;

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
    unmount_background(&mock.url(), home.path(), &mp);
    drop(guard);
}

#[test]
fn the_background_mount_holds_no_secret_in_its_environment_or_arguments() {
    let mock = start_mock(small_sample());
    let home = tempfile::tempdir().unwrap();
    let mp = home.path().join("mnt");
    std::fs::create_dir(&mp).unwrap();
    // The password both in XNAT_PASS and in the URL.
    let url_with_password = mock.url().replacen("://", "://demo:demo@", 1);
    let out = xnatfs(&mock.url(), home.path())
        .env_remove("XNAT_URL")
        .env_remove("XNAT_USER")
        .env("XNAT_TOKEN", "not-a-session")
        .arg("mount")
        .arg(&mp)
        .arg("--url")
        .arg(&url_with_password)
        .output()
        .unwrap();
    let _guard = scopeguard(mp.clone());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("demo@"), "{stderr}");
    assert!(mp.join("DEMO/SUBJ01_MR1").is_dir());
    let procs = mount_processes(&mp);
    assert_eq!(procs.len(), 1, "one background mount: {procs:?}");
    let environ = nul_separated(&std::fs::read(procs[0].join("environ")).unwrap());
    assert!(
        environ
            .iter()
            .any(|v| v.starts_with("XNATFS_DAEMON_CHILD=")),
        "{environ:?}"
    );
    for secret in ["XNAT_PASS=", "XNAT_TOKEN=", "XNAT_URL="] {
        assert!(
            !environ.iter().any(|v| v.starts_with(secret)),
            "{secret} in {environ:?}"
        );
    }
    let cmdline = nul_separated(&std::fs::read(procs[0].join("cmdline")).unwrap());
    assert!(!cmdline.iter().any(|a| a.contains("demo@")), "{cmdline:?}");
    unmount_background(&mock.url(), home.path(), &mp);
}

#[test]
fn unmount_refuses_what_xnatfs_did_not_mount() {
    let tmpfs = Tmpfs::mount("1m").expect("mount -t tmpfs (the tests run as root)");
    std::fs::write(tmpfs.path.join("kept"), b"kept").unwrap();
    let home = tempfile::tempdir().unwrap();
    let out = xnatfs("http://127.0.0.1:9", home.path())
        .arg("unmount")
        .arg(&tmpfs.path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("not an xnatfs mount"), "{stderr}");
    assert!(is_mounted(&tmpfs.path), "the tmpfs stays mounted");
    assert_eq!(std::fs::read(tmpfs.path.join("kept")).unwrap(), b"kept");
    // A folder with nothing mounted on it is said to be so.
    let out = xnatfs("http://127.0.0.1:9", home.path())
        .arg("unmount")
        .arg(home.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("is not mounted"),
        "{stderr}"
    );
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
fn a_stale_mount_left_by_a_killed_process_is_cleaned_up() {
    let mock = start_mock(small_sample());
    let mut m = MountBuilder::new(&mock.url()).mount();
    assert!(m.path("DEMO").is_dir());
    let mut child = m.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_errno(std::fs::read_dir(&m.mountpoint), &[libc::ENOTCONN], "stale");
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

/// A mount with a long I/O timeout (a reader must not have to sit it out) of a server whose
/// file bodies now stall: the server, the mount, a cold file, and the bodies asked for so far.
fn mounted_with_bodies_stalled() -> (xnatfs::mock::MockServer, Mount, std::path::PathBuf, u64) {
    let mock = start_mock(small_sample());
    let m = MountBuilder::new(&mock.url())
        .args(&["--io-timeout", "60"])
        .mount();
    let file = m.path(SUBJ01_T1W);
    assert!(file.is_file());
    mock.state
        .controls
        .stall_files
        .store(true, Ordering::SeqCst);
    let gets = mock.state.file_gets();
    (mock, m, file, gets)
}

#[test]
fn ctrl_c_on_a_waiting_reader_ends_its_wait_at_once() {
    let (mock, _m, file, gets) = mounted_with_bodies_stalled();
    ctrl_c_ends_it_at_once(std::process::Command::new("cat").arg(&file), "cat", || {
        mock.state.file_gets() > gets
    });
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
        || {
            mock.state
                .controls
                .listings_in_flight
                .load(Ordering::SeqCst)
                > 0
        },
    );
    mock.state.controls.latency_ms.store(0, Ordering::SeqCst);
}

/// In a container the daemon has its own PID namespace and the kernel names every caller
/// pid 0: a wait for a slow server must go on (it once ended with EINTR after 100 ms).
#[test]
fn in_its_own_pid_namespace_slow_answers_still_arrive() {
    let data = small_sample();
    let t1w = mock_file(&data, SUBJ01_T1W);
    let mock = start_mock(data);
    let m = MountBuilder::new(&mock.url())
        .via(&["unshare", "--pid", "--fork", "--kill-child"])
        .args(&["--io-timeout", "30"])
        .mount();
    mock.state.controls.latency_ms.store(400, Ordering::SeqCst);
    assert_eq!(
        dir_names(&m.path("DEMO/SUBJ02_MR1/scans")),
        ["1", "2", "3"],
        "a listing that takes 400 ms"
    );
    assert_eq!(
        md5_file(&m.path(SUBJ01_T1W)),
        t1w.md5(),
        "reads that wait too"
    );
    mock.state.controls.latency_ms.store(0, Ordering::SeqCst);
}

/// SIGTERM while a reader waits for a server that stopped answering (files stall, every
/// other answer takes 20 s): the reader gets an error within seconds (a 3 s grace), not after
/// the 60 s I/O timeout, and the process ends soon after (its logout waits 3 s at most). A
/// field test measured twice the I/O timeout. (A server that answers keeps serving the files
/// still open: `sigterm_on_a_busy_mount_detaches_it_and_says_so`.)
#[test]
fn sigterm_while_the_server_is_silent_ends_its_readers_and_the_process_at_once() {
    let (mock, mut m, file, gets) = mounted_with_bodies_stalled();
    let mut cat = spawn_waiting(std::process::Command::new("cat").arg(&file), "cat", || {
        mock.state.file_gets() > gets
    });
    mock.state
        .controls
        .latency_ms
        .store(20_000, Ordering::SeqCst);
    let pid = m.child.as_ref().unwrap().id() as i32;
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let read = wait_exit(
        &mut cat,
        Duration::from_secs(10),
        "cat still waits after SIGTERM",
    );
    assert!(!read.success(), "the read ended with an error: {read}");
    let status = wait_exit(
        m.child.as_mut().unwrap(),
        Duration::from_secs(15),
        "the mount's process still runs 15 s after SIGTERM",
    );
    assert!(status.success(), "{status}");
    mock.state.controls.latency_ms.store(0, Ordering::SeqCst);
    mock.state
        .controls
        .stall_files
        .store(false, Ordering::SeqCst);
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
    wait_until(
        Duration::from_secs(10),
        "still mounted after SIGTERM",
        || !is_mounted(&m.mountpoint),
    );
    // It says so once it has detached: a moment after the mount table shows it.
    let said = || {
        std::fs::read_to_string(&m.log_path)
            .unwrap()
            .contains("is busy; detached")
    };
    wait_until(Duration::from_secs(10), "no \"is busy; detached\"", said);
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
    let mut status = None;
    wait_until(limit, what, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    status.unwrap()
}

/// Starts `cmd` and returns once it has asked the server (`asked`): it then waits inside the
/// mount, not somewhere in its start-up, however slow the machine.
fn spawn_waiting(
    cmd: &mut std::process::Command,
    name: &str,
    asked: impl FnMut() -> bool,
) -> std::process::Child {
    let child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(
        Duration::from_secs(30),
        &format!("{name} asked nothing of the server"),
        asked,
    );
    child
}

/// Runs `cmd` until the server is asked (`asked`: then `cmd` waits inside the mount, not
/// somewhere in its start-up, however slow the machine), checks that it is still waiting,
/// sends it SIGINT (Ctrl-C) and checks that it ends within 5 s.
fn ctrl_c_ends_it_at_once(
    cmd: &mut std::process::Command,
    name: &str,
    asked: impl FnMut() -> bool,
) {
    let mut child = spawn_waiting(cmd, name, asked);
    std::thread::sleep(Duration::from_millis(100));
    assert!(child.try_wait().unwrap().is_none(), "{name} is waiting");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    wait_exit(
        &mut child,
        Duration::from_secs(5),
        &format!("{name} still waits after Ctrl-C"),
    );
}

#[test]
fn each_background_mount_logs_to_its_own_file() {
    let mock = start_mock(small_sample());
    let home = tempfile::tempdir().unwrap();
    let (a, b) = (home.path().join("a"), home.path().join("b"));
    let mut guards = Vec::new();
    for mp in [&a, &b] {
        std::fs::create_dir(mp).unwrap();
        let out = xnatfs(&mock.url(), home.path())
            .arg("mount")
            .arg(mp)
            .output()
            .unwrap();
        guards.push(scopeguard(mp.clone()));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        let log = xnatfs::cache::default_log_file(&home.path().join("cache/xnatfs"), mp);
        assert!(
            stderr.contains(&format!("log: {}", log.display())),
            "{stderr}"
        );
        assert!(log.is_file(), "{}", log.display());
    }
    let status = xnatfs(&mock.url(), home.path())
        .args(["status", "--json"])
        .output()
        .unwrap();
    let mounts: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let logs: Vec<&str> = mounts
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["log_file"].as_str())
        .collect();
    assert_eq!(logs.len(), 2, "{mounts}");
    assert_ne!(logs[0], logs[1]);
    for mp in [&a, &b] {
        unmount_background(&mock.url(), home.path(), mp);
    }
    drop(guards);
}

/// `unmount` returns once the mount's process has saved and ended: a script that then removes
/// the cache and mounts it again (or starts a job on it) races nothing.
#[test]
fn unmount_returns_when_the_daemon_has_ended_so_the_cache_can_go() {
    let mock = start_mock(small_sample());
    let home = tempfile::tempdir().unwrap();
    let mp = home.path().join("mnt");
    let cache = home.path().join("cache");
    std::fs::create_dir(&mp).unwrap();
    for round in 0..3 {
        let out = xnatfs(&mock.url(), home.path())
            .arg("mount")
            .arg(&mp)
            .arg("--cache-dir")
            .arg(&cache)
            .args(["-P", "DEMO"])
            .output()
            .unwrap();
        let guard = scopeguard(mp.clone());
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "round {round}: {said}");
        // Something to save at the end.
        let _ = std::fs::read(mp.join("SUBJ01_MR1/resources/PROTOCOLS/files/scan protocol.txt"));
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
        assert!(
            !daemon_running(&mp),
            "round {round}: the daemon outlived unmount"
        );
        std::fs::remove_dir_all(&cache).unwrap();
        drop(guard);
    }
}

/// The cache area removed under a running mount (`rm -rf` of the cache dir, as a user's
/// clean-up script does): a download on its way then is not kept, reads return the right
/// bytes or an error (never other bytes, never a hang), and the daemon makes neither the
/// area nor any of its folders again, to its exit.
#[test]
fn a_cache_area_removed_under_a_running_mount_is_not_made_again() {
    let data = xnatfs::mock::data::Dataset::sample(&xnatfs::mock::data::SampleSpec {
        nifti_size: 3 << 20,
        ..xnatfs::mock::data::SampleSpec::default()
    });
    let t1w = mock_file(&data, SUBJ01_T1W);
    let mock = start_mock(data);
    let home = tempfile::tempdir().unwrap();
    let cache = home.path().join("cache");
    let mut m = MountBuilder::new(&mock.url()).cache_dir(&cache).mount();
    assert!(
        !std::fs::read(m.path(&format!("{SUBJ01_PROTOCOLS}/scan protocol.txt")))
            .unwrap()
            .is_empty()
    );
    // A slow download on its way while the area goes.
    mock.state
        .controls
        .chunk_delay_ms
        .store(200, Ordering::SeqCst);
    let path = m.path(SUBJ01_T1W);
    let reader = std::thread::spawn(move || std::fs::read(path));
    std::thread::sleep(Duration::from_millis(600));
    std::fs::remove_dir_all(&cache).unwrap();
    mock.state
        .controls
        .chunk_delay_ms
        .store(0, Ordering::SeqCst);
    if let Ok(bytes) = reader.join().unwrap() {
        let want = t1w.read_at(0, t1w.size() as usize).unwrap();
        assert!(bytes == want, "other bytes");
    }
    let other = mock_file(&mock.state.data, SUBJ02_T1W);
    if let Ok(bytes) = read_within(&m.path(SUBJ02_T1W)) {
        assert!(
            bytes == other.read_at(0, other.size() as usize).unwrap(),
            "other bytes"
        );
    }
    assert!(!cache.exists(), "the area was made again while mounted");
    let (status, log) = m.unmount();
    assert!(status.is_some(), "{log}");
    assert!(!cache.exists(), "the area was made again at exit: {log}");
}

/// Reads `path` within 30 s: the bytes or an error, never a hang.
fn read_within(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    let p = path.to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::read(p));
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("a read after the area was removed hung")
}

/// `unmount` waits for the mount's process for 10 s at most: one that cannot end then (here
/// stopped with SIGSTOP, as a debugger or a frozen cgroup would) is named with its pid, and
/// `unmount` returns; the process ends by itself once it can.
#[test]
fn unmount_says_so_when_the_daemon_is_still_there_after_10_s() {
    let mock = start_mock(small_sample());
    let home = tempfile::tempdir().unwrap();
    let mp = home.path().join("mnt");
    std::fs::create_dir(&mp).unwrap();
    let out = xnatfs(&mock.url(), home.path())
        .arg("mount")
        .arg(&mp)
        .arg("--cache-dir")
        .arg(home.path().join("cache"))
        .output()
        .unwrap();
    let guard = scopeguard(mp.clone());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let procs = mount_processes(&mp);
    assert_eq!(procs.len(), 1, "{procs:?}");
    let pid: i32 = procs[0]
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(dir_names(&mp).contains(&"DEMO".to_string()));
    // SAFETY: kill(2) on the mount's own process, found by its command line just now.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    // Whatever happens below, the process is let go on again (no stopped process is left).
    struct Continue(i32);
    impl Drop for Continue {
        fn drop(&mut self) {
            // SAFETY: as above.
            unsafe { libc::kill(self.0, libc::SIGCONT) };
        }
    }
    let stopped = Continue(pid);
    let began = std::time::Instant::now();
    let un = xnatfs(&mock.url(), home.path())
        .arg("unmount")
        .arg(&mp)
        .output()
        .unwrap();
    let took = began.elapsed();
    drop(stopped);
    let said = String::from_utf8_lossy(&un.stderr);
    assert!(un.status.success(), "{said}");
    assert!(
        said.contains(&format!("(pid {pid}) is still ending after 10 s")),
        "{said}"
    );
    assert!(
        took >= Duration::from_secs(10) && took < Duration::from_secs(30),
        "{took:?}"
    );
    assert!(!is_mounted(&mp));
    wait_until(Duration::from_secs(10), "the mount's process ended", || {
        !daemon_running(&mp)
    });
    drop(guard);
}
