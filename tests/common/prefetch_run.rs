//! Running `xnatfs prefetch` from tests: bounded in time, its output captured, and the checks
//! of how it ended.

use super::xnatfs;
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `xnatfs prefetch ARGS` with a private HOME; panics if it runs over 120 s.
pub fn prefetch(url: &str, home: &Path, args: &[&str]) -> Output {
    finish(spawn_prefetch(url, home, args), Duration::from_secs(120))
}

/// Starts `xnatfs prefetch ARGS` with a private HOME, its output captured.
pub fn spawn_prefetch(url: &str, home: &Path, args: &[&str]) -> Child {
    xnatfs(url, home)
        .arg("prefetch")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `child` and returns its output; kills it and panics if it runs over `limit`.
pub fn finish(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "prefetch ran over {limit:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

pub fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Checks that a run ended with exit status `code` and said `want` on stderr; returns stderr.
#[track_caller]
pub fn ended(out: &Output, code: i32, want: &str) -> String {
    let stderr = stderr_of(out);
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    assert!(stderr.contains(want), "wanted {want:?} in: {stderr}");
    stderr
}

pub fn ok(out: &Output) -> String {
    let stderr = stderr_of(out);
    assert!(out.status.success(), "prefetch failed: {stderr}");
    stderr
}
