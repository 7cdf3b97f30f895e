//! The mount point: checking it before a mount, finding mounts, and unmounting (lazily, with a
//! message, when busy).

use anyhow::{Context, Result, bail};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cstring(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes()).context("the path holds a NUL byte")
}

/// Whether `path` is a mount point, from the kernel's mount table.
pub fn is_mounted(path: &Path) -> bool {
    let Ok(canon) = std::fs::canonicalize(path).or_else(|_| std::path::absolute(path)) else {
        return false;
    };
    let Ok(table) = std::fs::read_to_string("/proc/self/mounts") else {
        return false;
    };
    table.lines().any(|line| {
        line.split_whitespace()
            .nth(1)
            .map(|m| m.replace("\\040", " "))
            .is_some_and(|m| Path::new(&m) == canon)
    })
}

/// Checks the mount point before mounting: it must be an empty folder that is not mounted.
/// A mount left stale by a killed process ("Transport endpoint is not connected") is
/// cleaned up, with a message.
pub fn prepare_mountpoint(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            eprintln!(
                "xnatfs: {} is a stale mount left by a process that died; unmounting it",
                path.display()
            );
            lazy_unmount(path)?;
        }
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
            eprintln!(
                "xnatfs: {} is a stale mount left by a process that died; unmounting it",
                path.display()
            );
            lazy_unmount(path)?;
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

/// Unmounts `path`; when it is busy, detaches it lazily instead.
pub fn unmount(path: &Path) -> Result<Unmounted> {
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
