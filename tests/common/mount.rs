//! A real mount of the mock by the `xnatfs` binary, unmounted when dropped, with a watchdog.

use super::{force_unmount, is_mounted, xnatfs_via};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long any one mount may live before the watchdog pulls it down.
pub const TEST_DEADLINE: Duration = Duration::from_secs(150);

/// A real mount of the mock by `xnatfs mount --foreground`, running as a child process.
pub struct Mount {
    pub dir: tempfile::TempDir,
    pub mountpoint: PathBuf,
    pub log_path: PathBuf,
    pub home: PathBuf,
    pub cache_dir: PathBuf,
    pub child: Option<Child>,
    done: Arc<AtomicBool>,
}

pub struct MountBuilder {
    url: String,
    args: Vec<String>,
    cache_dir: Option<PathBuf>,
    env: Vec<(String, String)>,
    wrapper: Vec<String>,
    log_path: Option<PathBuf>,
}

impl MountBuilder {
    pub fn new(url: &str) -> Self {
        MountBuilder {
            url: url.into(),
            args: vec![],
            cache_dir: None,
            env: vec![],
            wrapper: vec![],
            log_path: None,
        }
    }
    /// Runs the daemon through this command (like `unshare --pid --fork --kill-child`).
    pub fn via(mut self, wrapper: &[&str]) -> Self {
        self.wrapper = wrapper.iter().map(|a| a.to_string()).collect();
        self
    }
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }
    /// The daemon's stderr (its log) goes to `path` instead of the mount's own folder.
    pub fn log_at(mut self, path: &Path) -> Self {
        self.log_path = Some(path.to_path_buf());
        self
    }
    pub fn cache_dir(mut self, dir: &Path) -> Self {
        self.cache_dir = Some(dir.to_path_buf());
        self
    }
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Mounts and waits until the mount answers; panics with the process's output if not.
    pub fn mount(self) -> Mount {
        let dir = tempfile::tempdir().unwrap();
        let mountpoint = dir.path().join("mnt");
        let home = dir.path().join("home");
        std::fs::create_dir_all(&mountpoint).unwrap();
        std::fs::create_dir_all(&home).unwrap();
        let cache_dir = self
            .cache_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("cache"));
        let mut cmd = xnatfs_via(&self.wrapper, &self.url, &home);
        // The log goes to a file: a pipe nobody reads would fill and stall the daemon.
        let log_path = (self.log_path.clone()).unwrap_or_else(|| dir.path().join("xnatfs.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        cmd.arg("mount")
            .arg(&mountpoint)
            .arg("--foreground")
            .arg("--cache-dir")
            .arg(&cache_dir)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("xnatfs starts");
        let done = Arc::new(AtomicBool::new(false));
        let mut m = Mount {
            dir,
            mountpoint: mountpoint.clone(),
            log_path,
            home,
            cache_dir,
            child: Some(child),
            done: done.clone(),
        };
        let started = Instant::now();
        while !is_mounted(&mountpoint) {
            if let Some(status) = m.child.as_mut().unwrap().try_wait().unwrap() {
                m.child.take();
                panic!(
                    "xnatfs mount exited ({status}) before mounting: {}",
                    std::fs::read_to_string(&m.log_path).unwrap_or_default()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the mount did not come up in 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // Watchdog: a test that runs past its deadline loses its mount. Killing the daemon
        // aborts its FUSE connection, which fails every request still waiting on it (an
        // unmount alone, even lazy, would leave them waiting).
        let mp = mountpoint.clone();
        let pid = m.child.as_ref().unwrap().id() as i32;
        std::thread::spawn(move || {
            let start = Instant::now();
            while start.elapsed() < TEST_DEADLINE {
                if done.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            eprintln!(
                "watchdog: test deadline passed; killing xnatfs, unmounting {}",
                mp.display()
            );
            // SAFETY: kill(2) on our own child, not yet waited for (`done` is unset).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            force_unmount(&mp);
        });
        m
    }
}

impl Mount {
    pub fn path(&self, rel: &str) -> PathBuf {
        self.mountpoint.join(rel)
    }

    /// Unmounts and waits for the process; returns its exit status and stderr.
    pub fn unmount(&mut self) -> (Option<std::process::ExitStatus>, String) {
        force_unmount(&self.mountpoint);
        let Some(mut child) = self.child.take() else {
            return (None, String::new());
        };
        let start = Instant::now();
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if start.elapsed() > Duration::from_secs(15) {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let status = child.wait().unwrap();
        self.done.store(true, Ordering::SeqCst);
        (
            Some(status),
            std::fs::read_to_string(&self.log_path).unwrap_or_default(),
        )
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let (_, stderr) = self.unmount();
        if std::thread::panicking() {
            eprintln!("--- xnatfs mount log ---\n{stderr}--- end of log ---");
        }
        self.done.store(true, Ordering::SeqCst);
    }
}
