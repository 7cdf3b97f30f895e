//! Background mounts made by `xnatfs mount` (no `--foreground`): their processes, found by
//! their command lines, and a guard that unmounts when dropped.

use super::{force_unmount, is_mounted, wait_until, xnatfs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `xnatfs unmount mp`; checks that it succeeds and that the background process ends by
/// itself.
pub fn unmount_background(url: &str, home: &Path, mp: &Path) {
    let un = xnatfs(url, home).arg("unmount").arg(mp).output().unwrap();
    assert!(
        un.status.success(),
        "{}",
        String::from_utf8_lossy(&un.stderr)
    );
    assert!(!is_mounted(mp));
    wait_until(
        Duration::from_secs(10),
        "the background mount did not exit",
        || !daemon_running(mp),
    );
}

/// Whether an `xnatfs mount` process for `mp` is still alive.
pub fn daemon_running(mp: &Path) -> bool {
    !mount_processes(mp).is_empty()
}

/// The `xnatfs mount` processes for `mp`: their /proc folders.
pub fn mount_processes(mp: &Path) -> Vec<PathBuf> {
    let want = mp.to_string_lossy().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            std::fs::read(p.join("cmdline"))
                .map(|c| {
                    let args = nul_separated(&c);
                    args.first().is_some_and(|a| a.ends_with("xnatfs")) && args.contains(&want)
                })
                .unwrap_or(false)
        })
        .collect()
}

pub fn nul_separated(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Unmounts its folder when dropped (if a test failed before it did).
pub struct Unmounter(pub PathBuf);

pub fn scopeguard(p: PathBuf) -> Unmounter {
    Unmounter(p)
}

impl Drop for Unmounter {
    fn drop(&mut self) {
        force_unmount(&self.0);
    }
}
