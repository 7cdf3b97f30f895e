//! Whether the process that asked for something still wants the answer.
//!
//! fuser 0.18 does not pass FUSE_INTERRUPT on to file systems, and once a request is with
//! us the kernel makes its caller wait for the answer even after Ctrl-C (buffered reads are
//! the exception: their page waits are killable). So a wait for the server (a lookup or a
//! listing, and reads) watches its caller: once it has a terminating signal pending (SIGINT,
//! SIGTERM, SIGKILL, SIGHUP, SIGQUIT), the wait ends with EINTR at once, instead of after the
//! I/O timeout.
//!
//! Once the mount is stopping ([`stop_waiting`], on SIGINT or SIGTERM) a wait lasts
//! [`STOP_GRACE`] more at most, then ends with EIO: files still open on the detached mount
//! keep reading from a server that answers, and readers of one that stopped answering learn
//! within seconds instead of after the I/O timeout, so the process can end (a field test: a
//! foreground mount of a silent server took twice the I/O timeout to exit).
//!
//! Only a definite answer ends a wait. A caller we cannot see is still waiting: in a container
//! the kernel reports callers from outside the daemon's PID namespace as pid 0, and `/proc`
//! mounted with `hidepid` hides other users' processes; a caller that is gone no longer needs
//! an answer, and its request ends with the I/O timeout.

use std::sync::LazyLock;
use std::time::Duration;

/// Whether the mount is stopping: set once, for the rest of the process.
static STOPPING: LazyLock<tokio::sync::watch::Sender<bool>> =
    LazyLock::new(|| tokio::sync::watch::channel(false).0);

/// How long a wait for the server may go on once the mount is stopping.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// The mount is stopping (a SIGINT or SIGTERM): every wait for the server, under way or to
/// come, ends within [`STOP_GRACE`].
pub fn stop_waiting() {
    STOPPING.send_replace(true);
}

/// Resolves [`STOP_GRACE`] after the mount began stopping (or after this call, if later).
async fn stopped() {
    let mut rx = STOPPING.subscribe();
    let _ = rx.wait_for(|s| *s).await;
    tokio::time::sleep(STOP_GRACE).await;
}

const TERMINATING: [u32; 5] = [
    libc::SIGHUP as u32,
    libc::SIGINT as u32,
    libc::SIGQUIT as u32,
    libc::SIGKILL as u32,
    libc::SIGTERM as u32,
];

/// Whether thread `tid` is known to have a terminating signal pending. Unknown (pid 0, or
/// no readable `/proc/<tid>/status`) is not giving up.
pub fn gave_up(tid: u32) -> bool {
    if tid == 0 {
        return false;
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{tid}/status")) else {
        return false;
    };
    status
        .lines()
        .filter_map(|l| {
            l.strip_prefix("SigPnd:")
                .or_else(|| l.strip_prefix("ShdPnd:"))
        })
        .filter_map(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .any(|mask| {
            TERMINATING
                .iter()
                .any(|sig| mask & (1u64 << (sig - 1)) != 0)
        })
}

/// Resolves when `tid` gives up (checked every 100 ms).
pub async fn wait_gave_up(tid: u32) {
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if gave_up(tid) {
            return;
        }
    }
}

/// How a bounded wait ended.
pub enum Waited<T> {
    Done(T),
    TimedOut,
    /// The caller was interrupted: nobody wants the answer.
    GaveUp,
    /// The mount is stopping ([`stop_waiting`]) and the grace is over.
    Stopped,
}

/// Waits for `fut`, at most `timeout` (when given), and no longer than thread `caller`
/// wants it.
pub async fn wait_for<T>(
    caller: u32,
    timeout: Option<Duration>,
    fut: impl std::future::Future<Output = T>,
) -> Waited<T> {
    let bounded = async {
        match timeout {
            Some(t) => tokio::time::timeout(t, fut).await.ok(),
            None => Some(fut.await),
        }
    };
    tokio::select! {
        r = bounded => match r {
            Some(v) => Waited::Done(v),
            None => Waited::TimedOut,
        },
        () = wait_gave_up(caller) => Waited::GaveUp,
        () = stopped() => Waited::Stopped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_known_pending_signal_is_giving_up() {
        assert!(
            !gave_up(std::process::id()),
            "a live thread without signals"
        );
        assert!(
            !gave_up(u32::MAX - 1),
            "a thread we cannot see is still waiting"
        );
        assert!(
            !gave_up(0),
            "a caller from another PID namespace is still waiting"
        );
    }
}
