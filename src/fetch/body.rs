//! What every download of a file body shares, a mount's ([`super::file_download`]: ranged,
//! served to readers as it arrives) and a prefetch's (`crate::prefetch::verified`: whole, into
//! its destination): when it last made progress ([`ProgressMark`]), and when it is tried again
//! ([`BodyRetries`], as [`crate::xnat::retry`] says for bodies). The errors are
//! [`super::FetchError`]; a body's bytes are checked and given their final name by
//! [`crate::cache::PartialFile`].

use super::FetchError;
use crate::xnat::retry::{Attempts, throttle_wait};
use crate::xnat::{RemoteFile, XnatError};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use std::time::{Duration, Instant};

/// The next chunk of a body, waiting at most until `stall_timeout` after `since` (the body's
/// last progress, not merely its last byte: see [`ProgressMark`]); `None` at the body's end.
pub async fn next_chunk(
    body: &mut BoxStream<'static, Result<Bytes, XnatError>>,
    since: Instant,
    stall_timeout: Duration,
    file: &RemoteFile,
) -> Result<Option<Bytes>, FetchError> {
    let left = stall_timeout.saturating_sub(since.elapsed());
    let next = tokio::time::timeout(left, body.next())
        .await
        .map_err(|_| XnatError::Timeout(format!("no progress for {}", file.uri())))?;
    Ok(next.transpose()?)
}

/// A body of `size` bytes that reaches `end` now: an error past its size (bytes of something
/// else, never stored).
pub fn within_size(file: &RemoteFile, end: u64, size: u64) -> Result<(), FetchError> {
    match end > size {
        true => Err(FetchError::Verify(format!(
            "{}: the body is longer than its {size} bytes",
            file.path
        ))),
        false => Ok(()),
    }
}

/// A body makes progress while at least this many bytes arrive per stall timeout: a server
/// that sends a byte now and then never quite stalls, and must not hold a reader for ever.
pub const PROGRESS_BYTES: u64 = 64 << 10;

/// When a body last made progress ([`PROGRESS_BYTES`] since the mark before, or its end).
#[derive(Debug, Clone, Copy)]
pub struct ProgressMark {
    at: Instant,
    since: u64,
}

impl Default for ProgressMark {
    fn default() -> Self {
        ProgressMark {
            at: Instant::now(),
            since: 0,
        }
    }
}

impl ProgressMark {
    /// `n` more bytes arrived (`complete`: the body is all there now).
    pub fn arrived(&mut self, n: u64, complete: bool) {
        self.since += n;
        if self.since >= PROGRESS_BYTES || complete {
            self.at = Instant::now();
            self.since = 0;
        }
    }

    /// When progress was last made.
    pub fn at(&self) -> Instant {
        self.at
    }
}

/// How many rate limiter's answers one body's download waits out before they count as
/// failures.
pub const THROTTLED_WAITS: u32 = 10;

/// The retries of one file body: a failure that may pass (see [`FetchError::retryable`]) is
/// tried again after a backoff while attempts are left and the body has not stalled (no
/// progress for the stall timeout); a rate limiter's answer (429, or 503 with `Retry-After`)
/// is waited out as it asks, up to [`THROTTLED_WAITS`] times, and is no attempt (as for
/// listings), the stall clock starting anew after the wait.
#[derive(Debug)]
pub struct BodyRetries {
    attempts: Attempts,
    throttled: u32,
    stall_timeout: Duration,
    /// Since when a stall is counted: the download's start, or the end of the last wait a
    /// rate limiter asked for.
    clock: Instant,
}

impl BodyRetries {
    /// The retries of a body allowed `attempts` in all, stalled after `stall_timeout` without
    /// progress; its first attempt is under way.
    pub fn new(attempts: u32, stall_timeout: Duration) -> BodyRetries {
        BodyRetries {
            attempts: Attempts::new(attempts),
            throttled: 0,
            stall_timeout,
            clock: Instant::now(),
        }
    }

    /// After failure `e` of the body, whose last progress was at `progress`: whether to try
    /// again, having waited what was due (a backoff, or what a rate limiter asked).
    pub async fn again(&mut self, e: &FetchError, progress: Instant) -> bool {
        if let FetchError::Xnat(x) = e
            && self.throttled < THROTTLED_WAITS
            && let Some(wait) = throttle_wait(x, self.throttled)
        {
            self.throttled += 1;
            tracing::debug!("{e}: waiting {} s as asked", wait.as_secs_f32());
            tokio::time::sleep(wait).await;
            // The wait was asked for: no stall of the server's.
            self.clock = Instant::now();
            return true;
        }
        let stalled = progress.max(self.clock).elapsed() >= self.stall_timeout;
        self.attempts.again(e.retryable() && !stalled).await
    }

    /// Attempts made so far (the current one included).
    pub fn made(&self) -> u32 {
        self.attempts.made()
    }

    pub fn allowed(&self) -> u32 {
        self.attempts.allowed()
    }
}
