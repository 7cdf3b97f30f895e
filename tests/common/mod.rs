//! Test harness: a mock XNAT server in this process on 127.0.0.1, and real FUSE mounts made
//! by the `xnatfs` binary. Every mount is unmounted in `Drop` (`fusermount3 -u`, then
//! `umount -l`), its process waited for (killed if need be), and a watchdog unmounts it if a
//! test runs past its deadline, so no test leaves a mount or a process behind or hangs.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use xnatfs::mock::data::{Dataset, SampleSpec};
use xnatfs::mock::{MockOptions, MockServer};

pub const BIN: &str = env!("CARGO_BIN_EXE_xnatfs");

/// How long any one mount may live before the watchdog pulls it down.
pub const TEST_DEADLINE: Duration = Duration::from_secs(150);

pub fn small_sample() -> Dataset {
    Dataset::sample(&SampleSpec {
        dicom_files: 6,
        dicom_size: 4096,
        nifti_size: 300_000,
        scans: 3,
    })
}

pub fn start_mock(data: Dataset) -> MockServer {
    start_mock_with(data, MockOptions::default())
}

pub fn start_mock_with(data: Dataset, options: MockOptions) -> MockServer {
    MockServer::start("127.0.0.1:0".parse().unwrap(), data, options).expect("mock server starts")
}

/// A `Command` for the binary with a clean environment: the mock's URL and the demo
/// credentials, and a private HOME so no profile or netrc of the machine is read.
pub fn xnatfs(url: &str, home: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XNAT_URL", url)
        .env("XNAT_USER", "demo")
        .env("XNAT_PASS", "demo");
    cmd
}

pub fn is_mounted(path: &Path) -> bool {
    let table = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let want = path.to_string_lossy().replace(' ', "\\040");
    table
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(want.as_str()))
}

pub fn force_unmount(path: &Path) {
    if !is_mounted(path) {
        return;
    }
    let _ = Command::new("fusermount3")
        .arg("-u")
        .arg(path)
        .stderr(Stdio::null())
        .status();
    if is_mounted(path) {
        let _ = Command::new("umount").arg("-l").arg(path).status();
    }
}

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
}

impl MountBuilder {
    pub fn new(url: &str) -> Self {
        MountBuilder {
            url: url.into(),
            args: vec![],
            cache_dir: None,
            env: vec![],
        }
    }
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
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
        let mut cmd = xnatfs(&self.url, &home);
        // The log goes to a file: a pipe nobody reads would fill and stall the daemon.
        let log_path = dir.path().join("xnatfs.log");
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

/// Every regular file below `root`, relative, sorted.
pub fn walk_files(root: &Path) -> Vec<(PathBuf, u64)> {
    fn go(dir: &Path, root: &Path, out: &mut Vec<(PathBuf, u64)>) {
        for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("ls {}: {e}", dir.display())) {
            let e = e.unwrap();
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            if meta.is_dir() {
                go(&e.path(), root, out);
            } else {
                out.push((
                    e.path().strip_prefix(root).unwrap().to_path_buf(),
                    meta.len(),
                ));
            }
        }
    }
    let mut out = Vec::new();
    go(root, root, &mut out);
    out.sort();
    out
}

pub fn md5_file(path: &Path) -> String {
    use md5::{Digest, Md5};
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    hex::encode(Md5::digest(&bytes))
}

/// The mount-relative path of each sample file under a `-P`-less mount, with its MD5.
pub fn expected_files(data: &Dataset) -> Vec<(PathBuf, u64, String)> {
    let mut out: Vec<_> = data
        .all_files()
        .into_iter()
        .map(|(s, scan, r, f)| {
            let path = match scan {
                Some(sc) => format!(
                    "{}/{}/scans/{}/resources/{}/files/{}",
                    s.project, s.label, sc.id, r.label, f.path
                ),
                None => format!(
                    "{}/{}/resources/{}/files/{}",
                    s.project, s.label, r.label, f.path
                ),
            };
            (PathBuf::from(path), f.size(), f.md5().to_string())
        })
        .collect();
    out.sort();
    out
}
