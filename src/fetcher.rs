//! Downloads into the cache: one download per file however many readers want it, retried
//! after transient failures, given up when it stops making progress.

use crate::cache::{Cache, CommitError, PartialFile};
use crate::xnat::http::backoff;
use crate::xnat::{RemoteFile, ResourceRef, XnatApi, XnatError};
use futures::StreamExt;
use futures::future::{BoxFuture, FutureExt, Shared};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Xnat(#[from] XnatError),
    #[error("{0}")]
    Verify(String),
    #[error("cache: {0}")]
    Cache(String),
    #[error("refusing unsafe path {0:?}")]
    UnsafePath(String),
}

impl FetchError {
    pub fn retryable(&self) -> bool {
        match self {
            FetchError::Xnat(e) => e.is_transient(),
            // A short or corrupt body is most often a dropped connection: try again.
            FetchError::Verify(_) => true,
            _ => false,
        }
    }

    /// The errno a reader gets.
    pub fn errno(&self) -> i32 {
        match self {
            FetchError::Xnat(XnatError::NotFound(_)) => libc::ENOENT,
            FetchError::Xnat(XnatError::Forbidden(_)) => libc::EACCES,
            FetchError::Xnat(XnatError::Timeout(_)) => libc::ETIMEDOUT,
            _ => libc::EIO,
        }
    }
}

type SharedFetch = Shared<BoxFuture<'static, Result<PathBuf, FetchError>>>;

pub struct Fetcher {
    api: Arc<dyn XnatApi>,
    cache: Cache,
    /// Give up a download after this long without receiving a byte.
    stall_timeout: Duration,
    retries: u32,
    inflight: Mutex<HashMap<PathBuf, SharedFetch>>,
}

impl Fetcher {
    pub fn new(api: Arc<dyn XnatApi>, cache: Cache, stall_timeout: Duration) -> Arc<Fetcher> {
        Arc::new(Fetcher {
            api,
            cache,
            stall_timeout,
            retries: 3,
            inflight: Mutex::new(HashMap::new()),
        })
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The path of `file` in the cache, downloading it first if needed. Concurrent calls for
    /// one file share one download, which goes on even if its callers stop waiting.
    pub async fn fetch(
        self: &Arc<Self>,
        res: &ResourceRef,
        file: &RemoteFile,
    ) -> Result<PathBuf, FetchError> {
        if let Some(p) = self.cache.lookup(res, file) {
            return Ok(p);
        }
        let dest = self
            .cache
            .file_path(res, &file.path)
            .ok_or_else(|| FetchError::UnsafePath(file.path.clone()))?;
        let shared = {
            let mut inflight = self.inflight.lock().unwrap();
            match inflight.get(&dest) {
                Some(f) => f.clone(),
                None => {
                    let this = self.clone();
                    let (res, file, key) = (res.clone(), file.clone(), dest.clone());
                    let task = tokio::spawn(async move {
                        let result = this.download(&res, &file).await;
                        this.inflight.lock().unwrap().remove(&key);
                        result
                    });
                    let fut: BoxFuture<'static, Result<PathBuf, FetchError>> = async move {
                        task.await.unwrap_or_else(|e| {
                            Err(FetchError::Cache(format!("download task failed: {e}")))
                        })
                    }
                    .boxed();
                    let shared = fut.shared();
                    inflight.insert(dest.clone(), shared.clone());
                    shared
                }
            }
        };
        shared.await
    }

    /// Downloads with retries into the cache.
    async fn download(&self, res: &ResourceRef, file: &RemoteFile) -> Result<PathBuf, FetchError> {
        let dest = self
            .cache
            .file_path(res, &file.path)
            .ok_or_else(|| FetchError::UnsafePath(file.path.clone()))?;
        let policy = RetryPolicy {
            retries: self.retries,
            stall_timeout: self.stall_timeout,
            private: true,
        };
        download_verified(
            self.api.as_ref(),
            file,
            &dest,
            &self.cache.tmp_dir(),
            &policy,
            &|_| {},
        )
        .await?;
        Ok(dest)
    }
}

/// How hard to try a download, and how to keep the result.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub retries: u32,
    /// Give up after this long without receiving a byte.
    pub stall_timeout: Duration,
    /// Keep files private to the user (the cache), or with ordinary permissions (`--out`).
    pub private: bool,
}

/// Downloads `file` to `dest` through a partial file in `tmp_dir`, checking size and MD5 before
/// it takes its final name; tried again after transient failures (5xx, resets, short bodies),
/// until `policy.retries` or until no byte has arrived for `policy.stall_timeout`.
/// `on_bytes` hears of every chunk received (for progress).
pub async fn download_verified(
    api: &dyn XnatApi,
    file: &RemoteFile,
    dest: &Path,
    tmp_dir: &Path,
    policy: &RetryPolicy,
    on_bytes: &(dyn Fn(u64) + Sync),
) -> Result<(), FetchError> {
    let mut attempt = 0;
    let mut last_progress = Instant::now();
    loop {
        let once = download_once(
            api,
            file,
            dest,
            tmp_dir,
            policy,
            &mut last_progress,
            on_bytes,
        );
        match once.await {
            Ok(()) => {
                tracing::debug!("downloaded {}", dest.display());
                return Ok(());
            }
            Err(e)
                if e.retryable()
                    && attempt < policy.retries
                    && last_progress.elapsed() < policy.stall_timeout =>
            {
                attempt += 1;
                tracing::warn!("download of {} failed: {e}; trying again", file.uri);
                tokio::time::sleep(backoff(attempt)).await;
            }
            Err(e) => {
                tracing::error!("download of {} failed: {e}", file.uri);
                return Err(e);
            }
        }
    }
}

async fn download_once(
    api: &dyn XnatApi,
    file: &RemoteFile,
    dest: &Path,
    tmp_dir: &Path,
    policy: &RetryPolicy,
    last_progress: &mut Instant,
    on_bytes: &(dyn Fn(u64) + Sync),
) -> Result<(), FetchError> {
    let cache_err = |e: std::io::Error| FetchError::Cache(e.to_string());
    let stall_timeout = policy.stall_timeout;
    let mut download = tokio::time::timeout(stall_timeout, api.download(&file.uri))
        .await
        .map_err(|_| XnatError::Timeout(format!("no answer for {}", file.uri)))??;
    let mut part = PartialFile::new_in(tmp_dir, policy.private).map_err(cache_err)?;
    loop {
        let next = tokio::time::timeout(stall_timeout, download.body.next())
            .await
            .map_err(|_| XnatError::Timeout(format!("no data for {}", file.uri)))?;
        match next {
            Some(chunk) => {
                let chunk = chunk?;
                *last_progress = Instant::now();
                if part.written() + chunk.len() as u64 > file.size {
                    return Err(FetchError::Verify(format!(
                        "{}: the body is longer than the listed {} bytes",
                        file.path, file.size
                    )));
                }
                part.write(&chunk).map_err(cache_err)?;
                on_bytes(chunk.len() as u64);
            }
            None => break,
        }
    }
    part.commit(file, dest).map_err(|e| match e {
        CommitError::Verify(v) => FetchError::Verify(v.to_string()),
        CommitError::Io(io) => cache_err(io),
    })
}
