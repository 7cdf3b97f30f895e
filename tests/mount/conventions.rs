//! A mount as the rest of the system sees it: its mount table entry (`fuse.xnatfs`, the server
//! URL), the mount(8) helper form (fstab options, `mount -t fuse.xnatfs`), systemd's readiness
//! message, the folders the daemon keeps, `status`, `unmount --all` and `--lazy`, and a
//! machine without a FUSE device.
//!
//! Tests that mount with mount(8), or unmount every mount, do so in a mount namespace of
//! their own (`unshare --mount`): what they mount is gone with it, and other tests' mounts
//! are not touched.

use crate::common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

const T1W_IN_DEMO: &str = "SUBJ01_MR1/scans/2/resources/NIFTI/files/T1w.nii.gz";

/// The source and type of the topmost mount on `mp`, from this process's mount table.
fn table_entry(mp: &Path) -> Option<(String, String)> {
    let table = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let want = mp.to_string_lossy().replace(' ', "\\040");
    table.lines().rev().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.get(1) == Some(&want.as_str())).then(|| (f[0].to_string(), f[2].to_string()))
    })
}

/// The folders `names` in `home`, made.
fn make_dirs<const N: usize>(home: &Path, names: [&str; N]) -> [PathBuf; N] {
    names.map(|name| {
        let dir = home.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[track_caller]
fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// `xnatfs mount <mp> <args>` in the background, from the folder `cwd`.
fn mount_in_background(url: &str, home: &Path, cwd: &Path, mp: &str, args: &[&str]) -> Output {
    xnatfs(url, home)
        .current_dir(cwd)
        .arg("mount")
        .arg(mp)
        .args(args)
        .output()
        .unwrap()
}

/// `xnatfs status --json`, parsed.
fn status_json(url: &str, home: &Path) -> Vec<Value> {
    let out = xnatfs(url, home)
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert_ok(&out);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)))
}

/// The entry of `status --json` for the mount on `mp`.
fn status_of(url: &str, home: &Path, mp: &Path) -> Value {
    let all = status_json(url, home);
    all.iter()
        .find(|m| m["mountpoint"] == mp.to_str().unwrap())
        .unwrap_or_else(|| panic!("{} is not in {all:#?}", mp.display()))
        .clone()
}

/// Runs `script` with `sh` in a mount namespace and pid namespace of its own (everything it
/// mounts, and every process it starts, ends with it); `$0` is the xnatfs binary and `$1...`
/// are `args`.
fn in_own_namespace(url: &str, home: &Path, script: &str, args: &[&Path]) -> Output {
    let wrapper: Vec<String> = [
        "unshare",
        "--mount",
        "--pid",
        "--fork",
        "--kill-child",
        "sh",
        "-c",
        script,
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    xnatfs_via(&wrapper, url, home)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn the_mount_shows_as_fuse_xnatfs_with_the_server_url_as_its_source() {
    let mock = start_mock(small_sample());
    let with_password = mock.url().replacen("://", "://demo:demo@", 1);
    let m = MountBuilder::new(&mock.url())
        .args(&["--url", &with_password])
        .mount();
    assert!(m.path("DEMO").is_dir());
    assert_eq!(
        table_entry(&m.mountpoint),
        Some((mock.url(), "fuse.xnatfs".to_string())),
        "the URL without the password"
    );
    let findmnt = Command::new("findmnt")
        .args(["-n", "-t", "fuse.xnatfs", "-o", "SOURCE", "--mountpoint"])
        .arg(&m.mountpoint)
        .output()
        .unwrap();
    assert_eq!(text(&findmnt.stdout).trim(), mock.url());
    let df = Command::new("df")
        .arg("--output=source")
        .arg(&m.mountpoint)
        .output()
        .unwrap();
    let df = text(&df.stdout);
    assert!(df.lines().any(|l| l.trim() == mock.url()), "{df}");
    // xnatfs unmount knows it for its own.
    let un = xnatfs(&mock.url(), &m.home)
        .arg("unmount")
        .arg(&m.mountpoint)
        .output()
        .unwrap();
    assert_ok(&un);
    assert!(!is_mounted(&m.mountpoint));
}

#[test]
fn the_fstab_form_mounts_reads_and_unmounts() {
    let data = small_sample();
    let t1w = mock_file(&data, SUBJ01_T1W);
    let mock = start_mock(data);
    let home = tempfile::tempdir().unwrap();
    let [mp] = make_dirs(home.path(), ["mnt"]);
    let cache = home.path().join("fstab-cache");
    // As mount(8) and mount.fuse3 pass them: rw, dev and suid added, the fstab's own kept.
    let options = format!(
        "rw,project=DEMO,cache_dir={},_netdev,nofail,noauto,users,x-systemd.automount,dev,suid",
        cache.display()
    );
    let out = xnatfs(&mock.url(), home.path())
        .arg(mock.url())
        .arg(&mp)
        .args(["-o", &options])
        .output()
        .unwrap();
    let _guard = scopeguard(mp.clone());
    assert_ok(&out);
    assert_eq!(md5_file(&mp.join(T1W_IN_DEMO)), t1w.md5());
    let status = status_of(&mock.url(), home.path(), &mp);
    assert_eq!(status["project"], "DEMO");
    assert_eq!(status["cache_dir"], cache.to_str().unwrap());
    unmount_background(&mock.url(), home.path(), &mp);

    // A typo is refused before anything is mounted, with the valid options.
    let typo = xnatfs(&mock.url(), home.path())
        .arg(mock.url())
        .arg(&mp)
        .args(["-o", "projet=DEMO,_netdev"])
        .output()
        .unwrap();
    let stderr = text(&typo.stderr);
    assert_eq!(typo.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("unknown mount option projet=DEMO; valid options: project=, session="),
        "{stderr}"
    );
    assert!(!is_mounted(&mp));
}

#[test]
fn mount_t_fuse_xnatfs_runs_the_installed_helper() {
    let data = small_sample();
    let t1w = mock_file(&data, SUBJ01_T1W);
    let mock = start_mock(data);
    let home = tempfile::tempdir().unwrap();
    let [mp, up, work] = make_dirs(home.path(), ["mnt", "up", "work"]);
    // /sbin is made writable in the namespace only (an overlay), for install-helper's link;
    // mount(8) then finds /sbin/mount.fuse.xnatfs, as on a machine where it was installed.
    // HOME is unset, as where systemd runs mount(8): the helper takes root's.
    let script = r#"
        set -e
        url=$1 mp=$2 up=$3 work=$4
        mount -t overlay overlay -o "lowerdir=/usr/sbin,upperdir=$up,workdir=$work" /usr/sbin || exit 77
        "$0" install-helper
        trap 'umount -l "$mp" 2>/dev/null || true' EXIT
        env -u HOME mount -t fuse.xnatfs "$url" "$mp" -o project=DEMO,_netdev,nofail
        findmnt -n -o SOURCE,FSTYPE --mountpoint "$mp"
        # Anchored: pgrep in a pid namespace cannot tell itself from the rest.
        daemon=$(pgrep -n -f "^[^ ]*xnatfs mount $mp ")
        tr '\0' '\n' < "/proc/$daemon/environ" | grep '^HOME='
        md5sum "$mp/SUBJ01_MR1/scans/2/resources/NIFTI/files/T1w.nii.gz"
        umount "$mp"
        echo unmounted
    "#;
    let url = PathBuf::from(mock.url());
    let out = in_own_namespace(&mock.url(), home.path(), script, &[&url, &mp, &up, &work]);
    if out.status.code() == Some(77) {
        eprintln!("no overlay file system here: skipping this test");
        return;
    }
    assert_ok(&out);
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let shown: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(shown, [mock.url().as_str(), "fuse.xnatfs"], "{stdout}");
    assert_eq!(lines[1], "HOME=/root", "{stdout}");
    assert!(lines[2].starts_with(&t1w.md5()), "{stdout}");
    assert_eq!(lines[3], "unmounted", "{stdout}");
    assert!(
        std::fs::read_link(up.join("mount.fuse.xnatfs")).is_ok(),
        "install-helper made the link"
    );
}

#[test]
fn the_background_mount_takes_relative_paths_and_keeps_no_folder_busy() {
    let mock = start_mock(small_sample());
    let home = tempfile::tempdir().unwrap();
    let [cwd, mp] = make_dirs(home.path(), ["started-here", "started-here/mnt"]);
    let out = mount_in_background(
        &mock.url(),
        home.path(),
        &cwd,
        "mnt",
        &["--cache-dir", "cache", "-P", "DEMO"],
    );
    let _guard = scopeguard(mp.clone());
    assert_ok(&out);
    assert!(mp.join("SUBJ01_MR1").is_dir());
    let status = status_of(&mock.url(), home.path(), &mp);
    assert_eq!(status["cache_dir"], cwd.join("cache").to_str().unwrap());
    let pid = status["pid"].as_u64().expect("a pid");
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap(),
        Path::new("/"),
        "the daemon left the folder it was started from"
    );
    let un = xnatfs(&mock.url(), home.path())
        .arg("unmount")
        .arg(&mp)
        .output()
        .unwrap();
    assert_ok(&un);
    wait_until(
        Duration::from_secs(10),
        "the background mount did not exit",
        || !Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid),
    );
}

/// Whether process `pid` has exited and waits to be reaped (by whoever adopted it).
fn is_zombie(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')))
        .unwrap_or(true)
}

#[test]
fn systemd_is_told_when_the_mount_is_ready() {
    use std::os::unix::net::UnixDatagram;
    let mock = start_mock(small_sample());
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut m = MountBuilder::new(&mock.url())
        .env("NOTIFY_SOCKET", socket_path.to_str().unwrap())
        .mount();
    let mut buf = [0u8; 1024];
    let n = socket.recv(&mut buf).expect("a message from the mount");
    let message = text(&buf[..n]);
    assert!(message.lines().any(|l| l == "READY=1"), "{message}");
    assert!(
        message.contains(&format!(
            "STATUS=mounted {} on {}",
            mock.url(),
            m.mountpoint.display()
        )),
        "{message}"
    );
    assert!(m.path("DEMO").is_dir(), "ready means ready");
    m.unmount();
    let n = socket.recv(&mut buf).expect("a message as it stops");
    assert_eq!(text(&buf[..n]), "STOPPING=1");
}

#[test]
fn status_lists_each_mount_with_its_server_root_cache_and_downloads() {
    let mock = start_mock(small_sample());
    let url = mock.url();
    let home = tempfile::tempdir().unwrap();
    let [a, b] = make_dirs(home.path(), ["a", "b"]);
    let cache_b = home.path().join("cache-b");
    let _guards = (scopeguard(a.clone()), scopeguard(b.clone()));
    assert_ok(&mount_in_background(
        &url,
        home.path(),
        home.path(),
        "a",
        &["-P", "DEMO"],
    ));
    let args_b = [
        "-P",
        "DEMO",
        "-E",
        "SUBJ01_MR1",
        "-E",
        "SUBJ02_MR1",
        "--cache-dir",
        cache_b.to_str().unwrap(),
    ];
    assert_ok(&mount_in_background(
        &url,
        home.path(),
        home.path(),
        "b",
        &args_b,
    ));

    // A download under way in the first: the server sends nothing.
    mock.state
        .controls
        .stall_files
        .store(true, Ordering::SeqCst);
    let mut reader = Command::new("cat")
        .arg(a.join(T1W_IN_DEMO))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(20), "no download in flight", || {
        status_of(&url, home.path(), &a)["downloads"] == 1
    });

    let json_a = status_of(&url, home.path(), &a);
    assert_eq!(json_a["server"], url.as_str());
    assert_eq!(json_a["project"], "DEMO");
    assert_eq!(json_a["sessions"], serde_json::json!([]));
    let pid_a = json_a["pid"].as_u64().unwrap();
    assert!(Path::new(&format!("/proc/{pid_a}")).exists());
    let json_b = status_of(&url, home.path(), &b);
    assert_eq!(
        json_b["sessions"],
        serde_json::json!(["SUBJ01_MR1", "SUBJ02_MR1"])
    );
    assert_eq!(json_b["cache_dir"], cache_b.to_str().unwrap());
    assert_eq!(json_b["downloads"], 0);
    assert!(json_b["cache_limit"].as_u64().unwrap() > 0);
    assert_ne!(json_b["pid"], json_a["pid"]);

    let out = xnatfs(&url, home.path()).arg("status").output().unwrap();
    assert_ok(&out);
    let shown = text(&out.stdout);
    for want in [
        format!(
            "{}\n  server     {url}\n  root       project DEMO\n",
            a.display()
        ),
        format!(
            "{}\n  server     {url}\n  root       sessions SUBJ01_MR1, SUBJ02_MR1 in project DEMO\n  cache      {} (",
            b.display(),
            cache_b.display()
        ),
        format!("  pid        {pid_a}\n  downloads  1 in flight\n"),
    ] {
        assert!(shown.contains(&want), "{want:?} not in\n{shown}");
    }

    // Ctrl-C ends the reader's wait at once.
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(reader.id() as i32, libc::SIGINT) };
    reader.wait().unwrap();
    mock.state
        .controls
        .stall_files
        .store(false, Ordering::SeqCst);
    unmount_background(&url, home.path(), &a);
    unmount_background(&url, home.path(), &b);
    let after = status_json(&url, home.path());
    assert!(
        !after
            .iter()
            .any(|m| m["mountpoint"] == a.to_str().unwrap()
                || m["mountpoint"] == b.to_str().unwrap()),
        "{after:#?}"
    );
    let state_files = std::fs::read_dir(home.path().join("run/xnatfs"))
        .unwrap()
        .count();
    assert_eq!(state_files, 0, "each mount removed its state file");
}

#[test]
fn unmount_all_unmounts_every_xnatfs_mount_and_nothing_else() {
    let mock = start_mock(small_sample());
    let home = tempfile::tempdir().unwrap();
    let [a, b, kept] = make_dirs(home.path(), ["a", "b", "kept"]);
    // In a namespace of its own: --all there does not reach the mounts of tests running
    // beside this one (its copies of them go, the mounts stay).
    let script = r#"
        set -e
        a=$1 b=$2 kept=$3
        mount -t tmpfs xnatfs-test-kept "$kept"
        "$0" mount "$a" -P DEMO 2>/dev/null
        "$0" mount "$b" 2>/dev/null
        "$0" unmount --all 2>&1
        echo "--- mounts"
        cat /proc/self/mounts
    "#;
    let out = in_own_namespace(&mock.url(), home.path(), script, &[&a, &b, &kept]);
    assert_ok(&out);
    let stdout = text(&out.stdout);
    let (said, table) = stdout.split_once("--- mounts\n").unwrap();
    for mp in [&a, &b] {
        assert!(
            said.contains(&format!("xnatfs: unmounted {}\n", mp.display())),
            "{stdout}"
        );
        assert!(!table.contains(&format!(" {} ", mp.display())), "{stdout}");
    }
    assert!(
        table.contains(&format!("xnatfs-test-kept {} tmpfs", kept.display())),
        "the tmpfs stays: {stdout}"
    );
    assert!(!said.contains(&kept.display().to_string()), "{stdout}");
}

#[test]
fn unmount_lazy_detaches_a_mount_in_use() {
    let mock = start_mock(small_sample());
    let home = tempfile::tempdir().unwrap();
    let [mp] = make_dirs(home.path(), ["mnt"]);
    let _guard = scopeguard(mp.clone());
    assert_ok(&mount_in_background(
        &mock.url(),
        home.path(),
        home.path(),
        "mnt",
        &["-P", "DEMO"],
    ));
    let held =
        std::fs::File::open(mp.join("SUBJ01_MR1/resources/QC/files/qc_report.html")).unwrap();
    let out = xnatfs(&mock.url(), home.path())
        .args(["unmount", "--lazy"])
        .arg(&mp)
        .output()
        .unwrap();
    assert_ok(&out);
    assert!(
        text(&out.stderr).contains(&format!("detached {}", mp.display())),
        "{}",
        text(&out.stderr)
    );
    assert!(!is_mounted(&mp), "gone from the mount table at once");
    use std::io::Read;
    let mut report = String::new();
    (&held).read_to_string(&mut report).unwrap();
    assert!(
        report.contains("QC for SUBJ01_MR1"),
        "the open file still reads"
    );
    drop(held);
    wait_until(
        Duration::from_secs(10),
        "the background mount did not exit once its last file closed",
        || !daemon_running(&mp),
    );
}

#[test]
fn without_a_fuse_device_the_mount_says_how_to_get_one() {
    let mock = start_mock(small_sample());
    let home = tempfile::tempdir().unwrap();
    let [mp] = make_dirs(home.path(), ["mnt"]);
    // /dev hidden under an empty tmpfs, in a mount namespace of this test's own: a container
    // started without --device /dev/fuse.
    let script = r#"mount -t tmpfs none /dev && exec "$0" mount --foreground "$1""#;
    let out = in_own_namespace(&mock.url(), home.path(), script, &[&mp]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot open /dev/fuse"), "{stderr}");
    assert!(
        stderr.contains("--device /dev/fuse --cap-add SYS_ADMIN"),
        "{stderr}"
    );
    assert!(!is_mounted(&mp));
}

#[test]
fn as_a_user_the_mount_goes_through_fusermount3_and_shows_the_same() {
    const NOBODY: u32 = 65534;
    let mock = start_mock(small_sample());
    let home = tempfile::tempdir().unwrap();
    let [mp, user_home, dev] = make_dirs(home.path(), ["mnt", "user", "dev"]);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for dir in [&mp, &user_home] {
        std::os::unix::fs::chown(dir, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    // A /dev/fuse that every user may open, as on most machines (in this namespace only),
    // and then the user nobody mounts (fusermount3), lists and unmounts.
    let script = r#"
        set -e
        mp=$1 user_home=$2 dev=$3 url=$4
        mount -t tmpfs xnatfs-test-dev "$dev"
        mknod -m 666 "$dev/fuse" c 10 229
        mount --bind "$dev/fuse" /dev/fuse
        exec setpriv --reuid=65534 --regid=65534 --clear-groups env -i PATH="$PATH" \
            HOME="$user_home" XNAT_URL="$url" XNAT_USER=demo XNAT_PASS=demo sh -c '
            set -e
            "$0" mount "$1" -P DEMO 2>/dev/null
            grep " $1 " /proc/self/mounts
            ls "$1"
            "$0" unmount "$1"
            grep -c " $1 " /proc/self/mounts || true
        ' "$0" "$mp"
    "#;
    let url = PathBuf::from(mock.url());
    let out = in_own_namespace(
        &mock.url(),
        home.path(),
        script,
        &[&mp, &user_home, &dev, &url],
    );
    assert_ok(&out);
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let entry: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        entry[..3],
        [mock.url().as_str(), mp.to_str().unwrap(), "fuse.xnatfs"],
        "{stdout}"
    );
    assert!(entry[3].contains("user_id=65534"), "{stdout}");
    assert_eq!(lines[1..], ["SUBJ01_MR1", "SUBJ02_MR1", "0"], "{stdout}");
}
