//! The kernel side of mounting: the FUSE device, the mount(2) call that root makes itself, and
//! what to say when either cannot be had.
//!
//! Every xnatfs mount shows in the mount table as type `fuse.xnatfs` with the server URL as
//! its source (`findmnt -t fuse.xnatfs`, `df`). fuser alone does not give that as root: it
//! calls mount(2) with the type `fuse` and drops the subtype (only fusermount3 is told
//! `subtype=`). So root mounts here, with the type `fuse.xnatfs`, and hands the device to
//! fuser; other users (and root without `CAP_SYS_ADMIN`, in a container) go through fuser and
//! fusermount3 with `fsname=<URL>,subtype=xnatfs`, which gives the same entry.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The file system type of xnatfs mounts in the mount table.
pub const FS_TYPE: &str = "fuse.xnatfs";
/// The subtype, as fusermount3 is told.
pub const SUBTYPE: &str = "xnatfs";
/// The source that mounts made before the source was the server URL show (the type was then
/// plain `fuse` when mounted by root).
pub const OLD_SOURCE: &str = "xnatfs";

const DEVICE: &str = "/dev/fuse";

/// What a container needs to mount FUSE file systems.
const CONTAINER_FIX: &str = "in a container, start it with --device /dev/fuse --cap-add SYS_ADMIN";

/// The mount's source in the mount table: the server URL without any user name or password,
/// with what mount options cannot hold (`,`, which fusermount3 splits options on) and
/// whitespace percent-encoded.
pub fn mount_source(server_url: &str) -> String {
    let url = crate::names::without_userinfo(server_url);
    let mut out = String::with_capacity(url.len());
    for c in url.chars() {
        if c == ',' || c == '\\' || c.is_whitespace() {
            for b in c.to_string().bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Opens the FUSE device (what every way of mounting needs first), or says why it cannot be
/// and what fixes it.
pub fn open_device() -> anyhow::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(DEVICE)
        .map_err(|e| anyhow::anyhow!(device_error(&e)))
}

/// What works where FUSE does not (a compute node, a locked-down container).
const WITHOUT_FUSE: &str =
    "without FUSE, `xnatfs prefetch --out DIR` downloads the same layout into a folder";

/// What to say when the FUSE device cannot be opened.
pub fn device_error(e: &io::Error) -> String {
    let hint = match e.raw_os_error() {
        Some(libc::ENOENT) => format!(
            "this machine or container has no FUSE device: {CONTAINER_FIX}; on a host, load the \
             module (modprobe fuse) and install fuse3"
        ),
        // EPERM: a container's device rules refuse it; EACCES: its mode does.
        Some(libc::EPERM) | Some(libc::EACCES) => format!(
            "you may not use the FUSE device: {CONTAINER_FIX}; on a host, /dev/fuse should be \
             crw-rw-rw- (an administrator can run chmod 0666 /dev/fuse, or install fuse3)"
        ),
        Some(libc::ENODEV) | Some(libc::ENXIO) => {
            "the kernel has no FUSE support loaded (modprobe fuse)".to_string()
        }
        _ => format!("FUSE cannot be used here ({CONTAINER_FIX})"),
    };
    format!("cannot open {DEVICE}: {e}: {hint}; {WITHOUT_FUSE}")
}

/// What to say when mounting failed (by mount(2) or fusermount3), with the fix where it is
/// known.
pub fn mount_error(e: &io::Error, mountpoint: &Path) -> String {
    let text = e.to_string();
    let hint = if e.kind() == io::ErrorKind::NotFound && e.raw_os_error() == Some(libc::ENOENT) {
        // fuser could not start fusermount3.
        Some(format!(
            "fusermount3 was not found: install fuse3 (apt-get install fuse3, dnf install fuse3), \
             which lets users who are not root mount; or {CONTAINER_FIX} and run as root; \
             {WITHOUT_FUSE}"
        ))
    } else if text.contains("user_allow_other") {
        Some("--allow-other needs the line user_allow_other in /etc/fuse.conf".to_string())
    } else if e.raw_os_error() == Some(libc::EPERM) || text.contains("Operation not permitted") {
        Some(format!(
            "mounting is not permitted here: {CONTAINER_FIX} (where AppArmor blocks mounts, add \
             --security-opt apparmor:unconfined); on a host, fusermount3 must be installed setuid \
             root (install fuse3)"
        ))
    } else {
        None
    };
    let text = text.trim_end();
    match hint {
        Some(hint) => format!("cannot mount on {}: {text}: {hint}", mountpoint.display()),
        None => format!("cannot mount on {}: {text}", mountpoint.display()),
    }
}

fn cstring(s: &[u8]) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte"))
}

fn mount(
    source: &str,
    target: &Path,
    fs_type: &str,
    flags: libc::c_ulong,
    data: &str,
) -> io::Result<()> {
    let (source, target) = (
        cstring(source.as_bytes())?,
        cstring(target.as_os_str().as_bytes())?,
    );
    let (fs_type, data) = (cstring(fs_type.as_bytes())?, cstring(data.as_bytes())?);
    // SAFETY: every pointer is a NUL-terminated string that lives across the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fs_type.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Mounts the FUSE device `device` on `mountpoint` read-only, as type `fuse.xnatfs` with
/// `source`, as libfuse does for root. `Ok(false)`: the kernel refused (EPERM: no
/// `CAP_SYS_ADMIN`, as in most containers), and fusermount3 may do it instead.
pub fn mount_directly(
    device: &File,
    mountpoint: &Path,
    source: &str,
    allow_other: bool,
) -> io::Result<bool> {
    let root_mode = std::fs::metadata(mountpoint)?.mode() & libc::S_IFMT;
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let mut data = format!(
        "fd={},rootmode={root_mode:o},user_id={uid},group_id={gid}",
        device.as_raw_fd()
    );
    if allow_other {
        data.push_str(",allow_other");
    }
    let flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOATIME;
    let mounted = mount(source, mountpoint, FS_TYPE, flags, &data).or_else(|e| {
        match e.raw_os_error() {
            // A kernel that takes no subtype in the type's name takes it as an option.
            Some(libc::ENODEV) => mount(
                source,
                mountpoint,
                "fuse",
                flags,
                &format!("{data},subtype={SUBTYPE}"),
            ),
            _ => Err(e),
        }
    });
    match mounted {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_is_the_url_without_credentials_or_commas() {
        assert_eq!(
            mount_source("https://alice:secret@xnat.example.org/xnat"),
            "https://xnat.example.org/xnat"
        );
        assert_eq!(
            mount_source("http://127.0.0.1:8080/a,b c"),
            "http://127.0.0.1:8080/a%2Cb%20c"
        );
    }

    #[test]
    fn a_missing_or_forbidden_fuse_device_names_the_fix() {
        let missing = device_error(&io::Error::from_raw_os_error(libc::ENOENT));
        assert!(missing.starts_with("cannot open /dev/fuse: "), "{missing}");
        assert!(
            missing.contains("--device /dev/fuse --cap-add SYS_ADMIN"),
            "{missing}"
        );
        assert!(missing.contains("modprobe fuse"), "{missing}");
        assert!(missing.contains("prefetch --out"), "{missing}");
        for errno in [libc::EPERM, libc::EACCES] {
            let refused = device_error(&io::Error::from_raw_os_error(errno));
            assert!(refused.contains("--device /dev/fuse"), "{refused}");
            assert!(refused.contains("chmod 0666 /dev/fuse"), "{refused}");
        }
    }

    #[test]
    fn mount_failures_name_the_fix() {
        let mp = Path::new("/mnt/x");
        let no_helper = mount_error(&io::Error::from_raw_os_error(libc::ENOENT), mp);
        assert!(no_helper.contains("install fuse3"), "{no_helper}");
        assert!(no_helper.contains("prefetch --out"), "{no_helper}");
        let refused = mount_error(
            &io::Error::other("fusermount3: mount failed: Operation not permitted\n"),
            mp,
        );
        assert!(refused.contains("--cap-add SYS_ADMIN"), "{refused}");
        assert!(!refused.contains('\n'), "{refused}");
        let other = mount_error(
            &io::Error::other(
                "fusermount3: option allow_other only allowed if 'user_allow_other' is set in /etc/fuse.conf",
            ),
            mp,
        );
        assert!(
            other.contains("user_allow_other in /etc/fuse.conf"),
            "{other}"
        );
    }
}

/// The kernel's read-ahead for this mount, in KiB: reads of a file not yet in the page cache
/// reach the daemon in requests of this size (the kernel's default, 128 KiB, makes a cold
/// `dd bs=1M` eight requests a MiB; 1 MiB, the most one FUSE request carries with
/// `max_pages`, makes it one). Measured with `scripts/bench-read`: a cold 512 MiB read 10-15%
/// faster, `--verify md5` and `--verify size` alike; 4 MiB was slower again.
pub const READ_AHEAD_KIB: u32 = 1024;

/// Raises the read-ahead of the mount on `mountpoint` to [`READ_AHEAD_KIB`]. A FUSE server
/// cannot ask for more than the kernel's default at `init` (the kernel takes the smaller of
/// the two), but its backing device's `read_ahead_kb` can be raised after mounting, by root
/// only: for others this does nothing. The device is found in `/proc/self/mountinfo`, so the
/// mount itself is not touched (a `stat` of it would wait for this very daemon).
pub fn raise_read_ahead(mountpoint: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let Some(device) = mount_device(&info, mountpoint) else {
        return;
    };
    let knob = format!("/sys/class/bdi/{device}/read_ahead_kb");
    match std::fs::write(&knob, READ_AHEAD_KIB.to_string()) {
        Ok(()) => tracing::debug!(
            "read-ahead of {} set to {READ_AHEAD_KIB} KiB",
            mountpoint.display()
        ),
        Err(e) => tracing::debug!("read-ahead left as it is ({knob}: {e})"),
    }
}

/// The `major:minor` of the last `fuse.xnatfs` mount on `mountpoint` in a mountinfo text.
fn mount_device(info: &str, mountpoint: &Path) -> Option<String> {
    let want = mountpoint.as_os_str().as_bytes();
    info.lines()
        .filter(|line| {
            let fstype = line.split(" - ").nth(1).and_then(|r| r.split(' ').next());
            fstype == Some(FS_TYPE)
        })
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let (device, point) = (fields.get(2)?, fields.get(4)?);
            (unescape_mountinfo(point) == want).then(|| device.to_string())
        })
        .next_back()
}

/// A mountinfo field with its octal escapes (`\040` for a space, ...) undone.
fn unescape_mountinfo(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) if b[i] == b'\\' => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod read_ahead_tests {
    use super::*;

    #[test]
    fn the_mounts_device_is_found_by_its_escaped_mount_point() {
        let info = "\
36 25 0:31 / /tmp/a\\040b rw,nosuid - fuse.xnatfs http://x rw,user_id=0\n\
37 25 0:32 / /tmp/other rw - fuse.xnatfs http://y rw\n\
38 25 0:33 / /tmp/a\\040b rw - fuse.sshfs h:/ rw\n";
        assert_eq!(
            mount_device(info, Path::new("/tmp/a b")).as_deref(),
            Some("0:31")
        );
        assert_eq!(mount_device(info, Path::new("/tmp/none")), None);
    }
}
