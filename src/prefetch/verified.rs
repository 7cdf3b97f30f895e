//! The verified whole-file download of a prefetch: one file, through a partial file, checked
//! (size, and MD5 when listed) before it takes its final name.

use crate::fetch::{BodyRetries, FetchError, ProgressMark, body};
use crate::xnat::{RemoteFile, XnatApi, XnatError};
use std::path::Path;
use std::time::Duration;

/// How hard to try a transfer, and how to keep the result.
#[derive(Debug, Clone)]
pub struct TransferPolicy {
    /// Attempts at one body in all (see [`crate::xnat::retry`]).
    pub attempts: u32,
    /// Give up after this long without receiving a byte.
    pub stall_timeout: Duration,
    /// How each file is written and checked (`--verify`), and counted when it goes into
    /// the cache.
    pub copies: crate::cache::NewCopies,
}

/// Downloads `file` to `dest` through a partial file in `tmp_dir`, checking size and MD5 before
/// it takes its final name; tried again after transient failures (5xx, resets, short bodies),
/// up to `policy.attempts`, or until no byte has arrived for `policy.stall_timeout`.
/// `on_bytes` hears of every chunk received (for progress), and `on_dropped` of the bytes of
/// each attempt that failed (they made no file). Returns the attempts it took.
/// Retries and the final failure are logged at debug level only: the caller counts the
/// first and reports the second.
pub async fn download_verified(
    api: &dyn XnatApi,
    file: &RemoteFile,
    dest: &Path,
    tmp_dir: &Path,
    policy: &TransferPolicy,
    on_bytes: &(dyn Fn(u64) + Sync),
    on_dropped: &(dyn Fn(u64) + Sync),
) -> Result<u32, FetchError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    let mut retries = BodyRetries::new(policy.attempts, policy.stall_timeout);
    let mut progress = ProgressMark::default();
    let attempt = AtomicU64::new(0);
    let counted = |n| {
        attempt.fetch_add(n, Ordering::Relaxed);
        on_bytes(n);
    };
    loop {
        let once = download_once(api, file, dest, tmp_dir, policy, &mut progress, &counted);
        match once.await {
            Ok(()) => {
                tracing::debug!("downloaded {}", dest.display());
                return Ok(retries.made());
            }
            Err(e) => {
                on_dropped(attempt.swap(0, Ordering::Relaxed));
                if !retries.again(&e, progress.at()).await {
                    tracing::debug!("download of {} failed: {e}; giving up", file.uri());
                    return Err(e);
                }
                tracing::debug!("download of {} failed: {e}; trying again", file.uri());
            }
        }
    }
}

async fn download_once(
    api: &dyn XnatApi,
    file: &RemoteFile,
    dest: &Path,
    tmp_dir: &Path,
    policy: &TransferPolicy,
    progress: &mut ProgressMark,
    on_bytes: &(dyn Fn(u64) + Sync),
) -> Result<(), FetchError> {
    let stall_timeout = policy.stall_timeout;
    let mut download = tokio::time::timeout(stall_timeout, api.download(&file.uri()))
        .await
        .map_err(|_| XnatError::Timeout(format!("no answer for {}", file.uri())))??;
    let mut part = policy.copies.begin_in(tmp_dir).map_err(FetchError::cache)?;
    // The answer's size, not the listed one, which can be stale (see `crate::fetch::sizes`).
    let size = download.total.unwrap_or(file.size);
    part.expect_size(size);
    let asked = std::time::Instant::now();
    loop {
        let since = progress.at().max(asked);
        let next = body::next_chunk(&mut download.body, since, stall_timeout, file);
        let Some(chunk) = next.await? else { break };
        body::within_size(file, part.written() + chunk.len() as u64, size)?;
        part.write(&chunk).map_err(FetchError::cache)?;
        progress.arrived(chunk.len() as u64, part.written() == size);
        on_bytes(chunk.len() as u64);
    }
    Ok(part.commit(file, dest)?)
}
