//! Assertions on how an operation fails (with which errno, within how long), and a wait for a
//! condition with a time limit.

use std::io;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

/// The wanted errnos as `Input/output error (os error 5) or ...`, for messages.
fn one_of(errnos: &[i32]) -> String {
    let names: Vec<String> = errnos
        .iter()
        .map(|&n| io::Error::from_raw_os_error(n).to_string())
        .collect();
    names.join(" or ")
}

/// Checks that `result` is an error with one of `errnos` and returns it; panics naming `what`
/// if it is a success or another error.
#[track_caller]
pub fn assert_errno<T>(result: io::Result<T>, errnos: &[i32], what: &str) -> io::Error {
    match result {
        Err(e) if e.raw_os_error().is_some_and(|n| errnos.contains(&n)) => e,
        Err(e) => panic!("{what}: failed with {e}, not with {}", one_of(errnos)),
        Ok(_) => panic!("{what}: succeeded, but should fail with {}", one_of(errnos)),
    }
}

/// Runs `op` on a thread and checks that it fails with one of `errnos` in less than `limit`;
/// returns the error. Panics naming `what` if `op` succeeds, fails with another error, or
/// takes `limit` or longer (a hung `op` is left running; the mount's watchdog ends it).
#[track_caller]
pub fn assert_fails_within<T: Send + 'static>(
    what: &str,
    errnos: &[i32],
    limit: Duration,
    op: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Error {
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    std::thread::spawn(move || {
        let result = op();
        let _ = tx.send((result, start.elapsed()));
    });
    let (result, took) = match rx.recv_timeout(limit) {
        Ok(done) => done,
        Err(RecvTimeoutError::Timeout) => panic!(
            "{what}: still running after {limit:?}; it should fail with {} before",
            one_of(errnos)
        ),
        Err(RecvTimeoutError::Disconnected) => panic!("{what}: the operation panicked"),
    };
    let e = assert_errno(result, errnos, what);
    assert!(
        took < limit,
        "{what}: failed with {e}, but took {took:?} (limit {limit:?})"
    );
    e
}

/// Checks `done` every 20 ms until it holds; panics with `what` once `limit` has passed.
#[track_caller]
pub fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
