//! The mount point: checking it before a mount, finding mounts, and unmounting (lazily, with a
//! message, when busy).

use anyhow::{Context, Result, bail};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cstring(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes()).context("the path holds a NUL byte")
}

/// Undoes the octal escapes of the kernel's mount table (`\040` for a space, `\011` for a
/// tab, `\012` for a newline, `\134` for a backslash).
fn unescape_mount_field(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                out.push(d.iter().fold(0u8, |n, b| n.wrapping_mul(8) + (b - b'0')));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What is mounted on a mount point: the source and the file system type, as the mount table
/// says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MountEntry {
    source: String,
    fs_type: String,
}

impl MountEntry {
    /// Whether xnatfs mounted it: `fuse.xnatfs` when mounted through fusermount3, and plain
    /// `fuse` with the source `xnatfs` when mounted by root (its FSName and Subtype).
    fn is_xnatfs(&self) -> bool {
        self.fs_type == "fuse.xnatfs" || (self.fs_type == "fuse" && self.source == "xnatfs")
    }
}

/// The topmost mount on `target` in the mount table `table` (mounts stack: the last line wins).
fn mount_entry_in(table: &str, target: &Path) -> Option<MountEntry> {
    table.lines().rev().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (source, mount_point, fs_type) = (fields.next()?, fields.next()?, fields.next()?);
        (Path::new(&unescape_mount_field(mount_point)) == target).then(|| MountEntry {
            source: unescape_mount_field(source),
            fs_type: fs_type.to_string(),
        })
    })
}

/// What is mounted on `path`, from the kernel's mount table.
fn mount_entry(path: &Path) -> Option<MountEntry> {
    let canon = std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .ok()?;
    let table = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mount_entry_in(&table, &canon)
}

/// Whether `path` is a mount point, from the kernel's mount table.
pub fn is_mounted(path: &Path) -> bool {
    mount_entry(path).is_some()
}

/// Fails unless `path` is an xnatfs mount: xnatfs never unmounts anything else.
fn check_xnatfs_mount(path: &Path) -> Result<()> {
    match mount_entry(path) {
        None => bail!("{} is not mounted", path.display()),
        Some(m) if !m.is_xnatfs() => bail!(
            "{} is not an xnatfs mount (it is a {} mount of {}); xnatfs unmounts only its own mounts",
            path.display(),
            m.fs_type,
            m.source
        ),
        Some(_) => Ok(()),
    }
}

/// Checks the mount point before mounting: it must be an empty folder that is not mounted.
/// A mount left stale by a killed process ("Transport endpoint is not connected") is
/// cleaned up, with a message.
pub fn prepare_mountpoint(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => clean_up_stale(path)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!(
                "mount point {} does not exist (create it with mkdir)",
                path.display()
            )
        }
        Err(e) => bail!("cannot use mount point {}: {e}", path.display()),
        Ok(meta) if !meta.is_dir() => bail!("mount point {} is not a folder", path.display()),
        Ok(_) => {}
    }
    if is_mounted(path) {
        // The kernel may still answer stat from its cache; a listing reaches the daemon.
        if let Err(e) = std::fs::read_dir(path)
            && e.raw_os_error() == Some(libc::ENOTCONN)
        {
            clean_up_stale(path)?;
            return prepare_mountpoint(path);
        }
        bail!(
            "{} is busy: something is already mounted there (xnatfs unmount {} first)",
            path.display(),
            path.display()
        );
    }
    if std::fs::read_dir(path)?.next().is_some() {
        bail!(
            "mount point {} is not empty; xnatfs mounts only on an empty folder",
            path.display()
        );
    }
    Ok(())
}

/// Detaches the stale xnatfs mount on `path` ("Transport endpoint is not connected"), with a
/// message; a stale mount of another program is left to its owner.
fn clean_up_stale(path: &Path) -> Result<()> {
    check_xnatfs_mount(path)?;
    eprintln!(
        "xnatfs: {} is a stale mount left by a process that died; unmounting it",
        path.display()
    );
    lazy_unmount(path)
}

fn lazy_unmount(path: &Path) -> Result<()> {
    let c = cstring(path)?;
    // SAFETY: `c` is a valid NUL-terminated path that lives across the call.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        let e = std::io::Error::last_os_error();
        bail!("cannot unmount {}: {e}", path.display());
    }
    Ok(())
}

/// How an unmount went.
#[derive(Debug, PartialEq, Eq)]
pub enum Unmounted {
    Clean,
    /// The mount was busy: it is detached now and goes away when its last user closes it.
    Lazy,
}

/// Unmounts the xnatfs mount on `path`; when it is busy, detaches it lazily instead. Refuses
/// anything that is not an xnatfs mount.
pub fn unmount(path: &Path) -> Result<Unmounted> {
    check_xnatfs_mount(path)?;
    let c = cstring(path)?;
    // SAFETY: as above.
    if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
        return Ok(Unmounted::Clean);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EBUSY) => {
            lazy_unmount(path)?;
            Ok(Unmounted::Lazy)
        }
        Some(libc::EPERM) => {
            // Not root: the setuid helper may do it for us.
            let status = std::process::Command::new("fusermount3")
                .arg("-u")
                .arg(path)
                .status()
                .with_context(|| format!("cannot unmount {}: {e}", path.display()))?;
            if !status.success() {
                bail!("fusermount3 -u {} failed", path.display());
            }
            Ok(Unmounted::Clean)
        }
        Some(libc::EINVAL) => bail!("{} is not mounted", path.display()),
        _ => bail!("cannot unmount {}: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "/dev/sda1 / ext4 rw,relatime 0 0\n\
        tmpfs /tmp/with\\040space tmpfs rw 0 0\n\
        xnatfs /home/u/xnat fuse ro,nosuid,nodev 0 0\n\
        xnatfs /home/u/user\\040mount fuse.xnatfs ro,nosuid,nodev 0 0\n\
        sshfs#h: /home/u/ssh fuse.sshfs rw 0 0\n\
        xnatfs /home/u/stacked fuse ro 0 0\n\
        tmpfs /home/u/stacked tmpfs rw 0 0\n";

    fn entry(path: &str) -> Option<MountEntry> {
        mount_entry_in(TABLE, Path::new(path))
    }

    #[test]
    fn only_xnatfs_mounts_are_ours() {
        assert!(
            entry("/home/u/xnat").unwrap().is_xnatfs(),
            "mounted by root"
        );
        assert!(
            entry("/home/u/user mount").unwrap().is_xnatfs(),
            "by fusermount3"
        );
        for other in ["/", "/tmp/with space", "/home/u/ssh", "/home/u/stacked"] {
            let e = entry(other).unwrap_or_else(|| panic!("{other} is in the table"));
            assert!(!e.is_xnatfs(), "{other}: {e:?}");
        }
        assert_eq!(entry("/home/u"), None);
    }

    #[test]
    fn mount_table_escapes() {
        assert_eq!(unescape_mount_field("a\\040b\\011c\\134d"), "a b\tc\\d");
        assert_eq!(unescape_mount_field("a\\0x\\"), "a\\0x\\");
    }
}
