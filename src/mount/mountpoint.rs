//! The mount point: checking it before a mount, finding mounts, and unmounting (lazily, with a
//! message, when busy).

use super::kernel;
use anyhow::{Context, Result, bail};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

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

/// What is mounted on a mount point: the source, the file system type and the options, as the
/// mount table says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MountEntry {
    source: String,
    mountpoint: PathBuf,
    fs_type: String,
    options: String,
}

impl MountEntry {
    /// Whether xnatfs mounted it: type `fuse.xnatfs` (with the server URL as its source), or,
    /// for mounts made by root before xnatfs set its type itself, plain `fuse` with the
    /// source `xnatfs`.
    fn is_xnatfs(&self) -> bool {
        self.fs_type == kernel::FS_TYPE
            || (self.fs_type == "fuse" && self.source == kernel::OLD_SOURCE)
    }

    /// Whether user `uid` mounted it (a FUSE mount's `user_id` option).
    fn is_owned_by(&self, uid: u32) -> bool {
        let want = format!("user_id={uid}");
        self.options.split(',').any(|o| o == want)
    }
}

/// Every mount in the mount table `table`, in its order.
fn mount_entries(table: &str) -> impl Iterator<Item = MountEntry> + '_ {
    table.lines().filter_map(|line| {
        let mut fields = line.split_whitespace();
        let (source, mount_point, fs_type) = (fields.next()?, fields.next()?, fields.next()?);
        Some(MountEntry {
            source: unescape_mount_field(source),
            mountpoint: PathBuf::from(unescape_mount_field(mount_point)),
            fs_type: fs_type.to_string(),
            options: fields.next().unwrap_or_default().to_string(),
        })
    })
}

/// The topmost mount on `target` in the mount table `table` (mounts stack: the last line wins).
fn mount_entry_in(table: &str, target: &Path) -> Option<MountEntry> {
    mount_entries(table)
        .filter(|m| m.mountpoint == target)
        .last()
}

/// An xnatfs mount in the mount table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XnatfsMount {
    pub mountpoint: PathBuf,
    /// The server URL (the source `xnatfs` for mounts made before it was).
    pub source: String,
}

/// The xnatfs mounts of user `uid` in the mount table `table` that are not covered by a later
/// mount on the same point.
fn xnatfs_mounts_in(table: &str, uid: u32) -> Vec<XnatfsMount> {
    let entries: Vec<MountEntry> = mount_entries(table).collect();
    entries
        .iter()
        .enumerate()
        .filter(|(i, m)| {
            m.is_xnatfs()
                && m.is_owned_by(uid)
                && !entries[i + 1..]
                    .iter()
                    .any(|l| l.mountpoint == m.mountpoint)
        })
        .map(|(_, m)| XnatfsMount {
            mountpoint: m.mountpoint.clone(),
            source: m.source.clone(),
        })
        .collect()
}

/// This user's xnatfs mounts, from the kernel's mount table, in the order they were mounted.
pub fn xnatfs_mounts() -> Vec<XnatfsMount> {
    let table = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    // SAFETY: getuid cannot fail.
    xnatfs_mounts_in(&table, unsafe { libc::getuid() })
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
    umount(path, libc::MNT_DETACH).with_context(|| format!("cannot unmount {}", path.display()))
}

/// umount2(2) with `flags` (0 or `MNT_DETACH`); where the kernel does not let this user
/// unmount, the setuid helper `fusermount3 -u` (`-z` to detach) does it instead.
fn umount(path: &Path, flags: libc::c_int) -> std::io::Result<()> {
    let c = cstring(path).map_err(std::io::Error::other)?;
    // SAFETY: `c` is a valid NUL-terminated path that lives across the call.
    if unsafe { libc::umount2(c.as_ptr(), flags) } == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EPERM) {
        return Err(e);
    }
    let mut helper = std::process::Command::new("fusermount3");
    helper.arg("-u");
    if flags & libc::MNT_DETACH != 0 {
        helper.arg("-z");
    }
    let out = helper
        .arg("--")
        .arg(path)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|spawn| std::io::Error::other(format!("{e}, and fusermount3: {spawn}")))?;
    if out.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if said.contains("busy") {
        return Err(std::io::Error::from_raw_os_error(libc::EBUSY));
    }
    Err(std::io::Error::other(said))
}

/// How an unmount went.
#[derive(Debug, PartialEq, Eq)]
pub enum Unmounted {
    Clean,
    /// Detached (asked for, or the mount was busy): it goes away when its last user closes it.
    Lazy,
}

/// Unmounts the xnatfs mount on `path`; when it is busy, or `lazy` asks for it, detaches it
/// instead. Refuses anything that is not an xnatfs mount.
pub fn unmount(path: &Path, lazy: bool) -> Result<Unmounted> {
    check_xnatfs_mount(path)?;
    if !lazy {
        match umount(path, 0) {
            Ok(()) => return Ok(Unmounted::Clean),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                bail!("{} is not mounted", path.display())
            }
            Err(e) => bail!("cannot unmount {}: {e}", path.display()),
        }
    }
    lazy_unmount(path)?;
    Ok(Unmounted::Lazy)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "/dev/sda1 / ext4 rw,relatime 0 0\n\
        tmpfs /tmp/with\\040space tmpfs rw 0 0\n\
        xnatfs /home/u/xnat fuse ro,nosuid,nodev,user_id=1000,group_id=1000 0 0\n\
        xnatfs /home/u/user\\040mount fuse.xnatfs ro,nosuid,nodev,user_id=1000 0 0\n\
        https://xnat.example.org /home/u/new fuse.xnatfs ro,user_id=1000,group_id=1000 0 0\n\
        http://127.0.0.1:8080 /mnt/root fuse.xnatfs ro,user_id=0,group_id=0 0 0\n\
        sshfs#h: /home/u/ssh fuse.sshfs rw,user_id=1000 0 0\n\
        xnatfs /home/u/stacked fuse ro,user_id=1000 0 0\n\
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
        assert!(
            entry("/home/u/new").unwrap().is_xnatfs(),
            "the URL as source"
        );
        assert!(entry("/mnt/root").unwrap().is_xnatfs());
        for other in ["/", "/tmp/with space", "/home/u/ssh", "/home/u/stacked"] {
            let e = entry(other).unwrap_or_else(|| panic!("{other} is in the table"));
            assert!(!e.is_xnatfs(), "{other}: {e:?}");
        }
        assert_eq!(entry("/home/u"), None);
    }

    #[test]
    fn a_users_mounts_are_the_xnatfs_ones_it_mounted_and_not_covered() {
        let mounts = xnatfs_mounts_in(TABLE, 1000);
        let points: Vec<&Path> = mounts.iter().map(|m| m.mountpoint.as_path()).collect();
        assert_eq!(
            points,
            [
                Path::new("/home/u/xnat"),
                Path::new("/home/u/user mount"),
                Path::new("/home/u/new")
            ]
        );
        assert_eq!(mounts[2].source, "https://xnat.example.org");
        assert_eq!(
            xnatfs_mounts_in(TABLE, 0),
            [XnatfsMount {
                mountpoint: "/mnt/root".into(),
                source: "http://127.0.0.1:8080".into()
            }]
        );
    }

    #[test]
    fn mount_table_escapes() {
        assert_eq!(unescape_mount_field("a\\040b\\011c\\134d"), "a b\tc\\d");
        assert_eq!(unescape_mount_field("a\\0x\\"), "a\\0x\\");
    }
}
