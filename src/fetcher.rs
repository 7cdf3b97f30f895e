//! Downloads into the cache: one download per file however many readers want it, retried
//! after transient failures, given up when it stops making progress.

use crate::cache::{Cache, CommitError, PartialFile};
use crate::download::{FileDownload, RangeSupport, Shared, memory_budget};

/// Default memory budget of a mount's downloads.
pub const DEFAULT_MAX_MEMORY: u64 = 512 << 20;
use crate::xnat::http::backoff;
use crate::xnat::{RemoteFile, ResourceRef, XnatApi, XnatError};
use futures::StreamExt;
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

pub struct Fetcher {
    shared: Arc<Shared>,
    active: Mutex<HashMap<PathBuf, Arc<FileDownload>>>,
}

impl Fetcher {
    /// `rt`: where downloads run; `stall_timeout`: how long a download may go without a byte.
    pub fn new(
        api: Arc<dyn XnatApi>,
        rt: tokio::runtime::Handle,
        cache: Cache,
        stall_timeout: Duration,
    ) -> Arc<Fetcher> {
        Self::with_max_memory(api, rt, cache, stall_timeout, DEFAULT_MAX_MEMORY)
    }

    /// As [`Fetcher::new`], with downloads holding at most `max_memory` bytes in memory at once.
    pub fn with_max_memory(
        api: Arc<dyn XnatApi>,
        rt: tokio::runtime::Handle,
        cache: Cache,
        stall_timeout: Duration,
        max_memory: u64,
    ) -> Arc<Fetcher> {
        Arc::new(Fetcher {
            shared: Arc::new(Shared {
                api,
                rt,
                cache,
                range: RangeSupport::default(),
                memory: memory_budget(max_memory),
                stall_timeout,
            }),
            active: Mutex::new(HashMap::new()),
        })
    }

    pub fn cache(&self) -> &Cache {
        &self.shared.cache
    }

    /// Whether the server was seen to honour `Range` (`None`: not known yet).
    pub fn range_honoured(&self) -> Option<bool> {
        self.shared.range.honoured()
    }

    /// The download of `file`, shared by all its readers; one that failed is replaced by a new
    /// one, so the next read tries again.
    pub fn download(
        &self,
        res: &ResourceRef,
        file: &RemoteFile,
    ) -> Result<Arc<FileDownload>, FetchError> {
        let dest = self
            .shared
            .cache
            .file_path(res, &file.path)
            .ok_or_else(|| FetchError::UnsafePath(file.path.clone()))?;
        let mut active = self.active.lock().unwrap();
        if let Some(d) = active.get(&dest)
            && !d.failed()
        {
            return Ok(d.clone());
        }
        // Forget downloads that are over (their readers hold their own handles).
        active.retain(|_, d| d.finished().is_none() && !d.failed());
        let d = FileDownload::new(self.shared.clone(), file.clone(), dest.clone())?;
        active.insert(dest, d.clone());
        Ok(d)
    }

    /// Reads `size` bytes at `offset` of `file`: from the cache when it is complete there, else
    /// as soon as they arrive.
    pub async fn read(
        &self,
        res: &ResourceRef,
        file: &RemoteFile,
        offset: u64,
        size: u32,
    ) -> Result<Vec<u8>, FetchError> {
        if let Some(path) = self.shared.cache.lookup(res, file) {
            return read_local(&path, offset, size).map_err(|e| FetchError::Cache(e.to_string()));
        }
        let d = self.download(res, file)?;
        match d.read(offset, size).await {
            // This read may have joined a download that was already failing (the server went
            // away and came back): it gets one fresh download before it fails.
            Err(e) if e.retryable() && !matches!(e, FetchError::Verify(_)) && d.failed() => {
                self.download(res, file)?.read(offset, size).await
            }
            other => other,
        }
    }

    /// Downloads the whole file into the cache (if needed) and returns its path.
    pub async fn fetch(&self, res: &ResourceRef, file: &RemoteFile) -> Result<PathBuf, FetchError> {
        if let Some(path) = self.shared.cache.lookup(res, file) {
            return Ok(path);
        }
        let dest = self
            .shared
            .cache
            .file_path(res, &file.path)
            .ok_or_else(|| FetchError::UnsafePath(file.path.clone()))?;
        if file.size == 0 {
            let part = self
                .shared
                .cache
                .begin()
                .map_err(|e| FetchError::Cache(e.to_string()))?;
            part.commit(file, &dest)
                .map_err(|e| FetchError::Verify(e.to_string()))?;
            return Ok(dest);
        }
        let d = self.download(res, file)?;
        // Ask for every byte, in order (what is there already is answered at once).
        const STEP: u32 = 16 << 20;
        let mut off = 0;
        while off < file.size {
            let got = d.read(off, STEP).await?;
            off += got.len().max(1) as u64;
        }
        d.wait_finished().await?;
        self.shared.cache.lookup(res, file).ok_or_else(|| {
            FetchError::Cache(format!(
                "{} is not in the cache after its download",
                file.path
            ))
        })
    }
}

/// Reads up to `size` bytes at `offset` of a local file.
pub fn read_local(path: &Path, offset: u64, size: u32) -> std::io::Result<Vec<u8>> {
    crate::cache::read_at(&std::fs::File::open(path)?, offset, size)
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
