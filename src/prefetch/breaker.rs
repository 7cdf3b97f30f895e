//! When to stop: a server that has gone away (so many requests in a row failing to reach it,
//! with no success between), a local disk that is full (no other file would fit either), or
//! a run that was told to stop. Either way the jobs still waiting are not started and those
//! under way are dropped, partial files and all.

use crate::fetch::FetchError;
use crate::xnat::XnatError;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio_util::sync::CancellationToken;

/// Transfers (or listings) in a row that must fail to reach the server before it is taken
/// for gone.
pub const UNREACHABLE_AFTER: u32 = 5;

/// Whether a failure says the server is not there (rather than that it answered no): the
/// connection was refused, reset or timed out, or a proxy in front says XNAT is unavailable
/// (502, 503, 504).
pub fn is_unreachable(e: &XnatError) -> bool {
    match e {
        XnatError::Network { .. } | XnatError::Timeout(_) => true,
        XnatError::Status { status, .. } => matches!(status, 502..=504),
        _ => false,
    }
}

/// The same for a transfer's failure.
pub fn fetch_unreachable(e: &FetchError) -> bool {
    matches!(e, FetchError::Xnat(x) if is_unreachable(x))
}

/// The server was taken for gone; the last failure to reach it.
#[derive(Debug, thiserror::Error)]
#[error("server unreachable ({0})")]
pub struct Unreachable(pub String);

/// Counts consecutive failures to reach the server; trips after [`UNREACHABLE_AFTER`] of
/// them. Also the run's stop signal: [`Breaker::stop`] ends it without tripping.
#[derive(Debug)]
pub struct Breaker {
    limit: u32,
    in_a_row: Mutex<u32>,
    tripped: AtomicBool,
    /// The local disk filled up: why.
    disk_full: Mutex<Option<String>>,
    stop: CancellationToken,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker::new(UNREACHABLE_AFTER)
    }
}

impl Breaker {
    pub fn new(limit: u32) -> Breaker {
        Breaker {
            limit: limit.max(1),
            in_a_row: Mutex::new(0),
            tripped: Default::default(),
            disk_full: Mutex::new(None),
            stop: CancellationToken::new(),
        }
    }

    /// Hears how one transfer or listing ended: `Ok(())`, or `Err(unreachable)`. Any success,
    /// or an answer from the server (even a refusal), starts the count again.
    pub fn record(&self, outcome: Result<(), bool>) {
        let mut n = self.in_a_row.lock().unwrap();
        match outcome {
            Err(true) => {
                *n += 1;
                if *n >= self.limit {
                    self.tripped.store(true, Ordering::SeqCst);
                    self.stop.cancel();
                }
            }
            _ => *n = 0,
        }
    }

    /// The local disk is full (`why`): the run stops, as every file left would fail alike.
    pub fn stop_for_full_disk(&self, why: &str) {
        self.disk_full
            .lock()
            .unwrap()
            .get_or_insert_with(|| why.to_string());
        self.stop.cancel();
    }

    /// Why the run stopped for a full disk, if it did.
    pub fn full_disk(&self) -> Option<String> {
        self.disk_full.lock().unwrap().clone()
    }

    /// The server was taken for gone.
    pub fn tripped(&self) -> bool {
        self.tripped.load(Ordering::SeqCst)
    }

    /// Stops the run (no more jobs start; those under way end).
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Whether the run is to stop (tripped or stopped).
    pub fn stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// The stop signal, for threads (they look at it between chunks) and for [`super::destination::RunTmp`].
    pub fn token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Resolves once the run is to stop.
    pub async fn stopped(&self) {
        self.stop.cancelled().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> XnatError {
        XnatError::Network {
            path: "/x".into(),
            msg: "Connection refused".into(),
        }
    }

    #[test]
    fn trips_after_so_many_in_a_row_and_a_success_starts_again() {
        let b = Breaker::new(3);
        b.record(Err(true));
        b.record(Err(true));
        b.record(Ok(()));
        b.record(Err(true));
        b.record(Err(false));
        b.record(Err(true));
        b.record(Err(true));
        assert!(!b.tripped() && !b.stopping());
        b.record(Err(true));
        assert!(b.tripped() && b.stopping());
    }

    #[test]
    fn what_counts_as_unreachable() {
        assert!(is_unreachable(&net()));
        assert!(is_unreachable(&XnatError::Timeout("x".into())));
        for status in [502, 503, 504] {
            assert!(is_unreachable(&XnatError::Status {
                status,
                path: "/x".into(),
                retry_after: None,
                by: None,
            }));
        }
        for answered in [
            XnatError::Status {
                status: 500,
                path: "/x".into(),
                retry_after: None,
                by: None,
            },
            XnatError::NotFound("/x".into()),
            XnatError::Auth("no".into()),
        ] {
            assert!(!is_unreachable(&answered), "{answered}");
        }
        assert!(fetch_unreachable(&FetchError::Xnat(net())));
        assert!(!fetch_unreachable(&FetchError::Verify("short".into())));
    }

    #[tokio::test]
    async fn a_full_disk_stops_the_run_and_says_why_once() {
        let b = Breaker::default();
        b.stop_for_full_disk("No space left on device (os error 28)");
        b.stop_for_full_disk("later");
        b.stopped().await;
        assert!(b.stopping() && !b.tripped());
        assert_eq!(
            b.full_disk().as_deref(),
            Some("No space left on device (os error 28)")
        );
    }

    #[tokio::test]
    async fn stop_without_tripping() {
        let b = Breaker::default();
        b.stop();
        b.stopped().await;
        assert!(b.stopping() && !b.tripped());
    }
}
