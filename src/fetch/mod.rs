//! Getting file bodies into the cache for a mount: one download per file however many
//! readers want it ([`Fetcher`], the registry of active downloads), each answered as its bytes
//! arrive ([`file_download`]), ranged where the server allows ([`readahead`], [`ranges`]),
//! hashed on its own thread within a memory budget ([`hasher`]); the files of a resource are
//! fetched ahead of a reader who opens them one after another ([`series`], [`series_ahead`]).
//!
//! Which layer retries what is written down in [`crate::xnat::retry`].

pub mod body;
pub mod error;
pub mod file_download;
pub mod hasher;
pub mod ranges;
pub mod readahead;
pub mod series;
pub mod series_ahead;
pub mod sizes;

pub use body::{BodyRetries, PROGRESS_BYTES, ProgressMark};
pub use error::FetchError;
pub use file_download::FileDownload;

use crate::cache::Cache;
use crate::xnat::{RemoteFile, ResourceRef, XnatApi};
use ranges::RangeSupport;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Default memory budget of a mount's downloads.
pub const DEFAULT_MAX_MEMORY: u64 = 512 << 20;

/// What every download of a mount works with.
pub struct FetchContext {
    pub api: Arc<dyn XnatApi>,
    /// Requests run here (reads may come from threads outside the runtime).
    pub rt: tokio::runtime::Handle,
    pub cache: Cache,
    /// What the server does with `Range`, learnt once for the mount.
    pub range: RangeSupport,
    /// The memory budget of all downloads together.
    pub memory: hasher::MemoryBudget,
    /// Give up after this long without receiving a byte.
    pub stall_timeout: Duration,
    /// True sizes of files listed with a stale size.
    pub sizes: sizes::Sizes,
    /// Told of each file whose body a download refused (see [`Fetcher::on_refused`]).
    refused: Mutex<Option<RefusedHook>>,
}

/// What is told of a file whose body a download refused.
pub type RefusedHook = Box<dyn Fn(&RemoteFile) + Send + Sync>;

impl FetchContext {
    /// A download refused `file`'s body (a wrong MD5, other bytes for the same offset, a size
    /// that changed): whoever listens is told, whether or not a reader was waiting.
    pub fn refused(&self, file: &RemoteFile) {
        if let Some(tell) = self.refused.lock().unwrap().as_ref() {
            tell(file);
        }
    }
}

/// A download is of one version of a file: its cache path, listed size and digest (a file
/// that changes on the server is another download).
type DownloadKey = (PathBuf, u64, Option<crate::xnat::Md5>);

type Active = Arc<Mutex<HashMap<DownloadKey, Arc<FileDownload>>>>;

pub struct Fetcher {
    pub(crate) ctx: Arc<FetchContext>,
    /// Downloads under way; one leaves when it has ended (see [`Fetcher::download`]).
    active: Active,
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
            ctx: Arc::new(FetchContext {
                api,
                rt,
                cache,
                range: RangeSupport::default(),
                memory: hasher::MemoryBudget::new(max_memory),
                stall_timeout,
                sizes: sizes::Sizes::default(),
                refused: Mutex::new(None),
            }),
            active: Active::default(),
        })
    }

    /// `tell` is told of each file whose body a download refuses once its bytes may have
    /// been served (the mount fails every handle open on it, see `crate::fs`).
    pub fn on_refused(&self, tell: RefusedHook) {
        *self.ctx.refused.lock().unwrap() = Some(tell);
    }

    pub fn cache(&self) -> &Cache {
        &self.ctx.cache
    }

    /// True sizes of files whose listed size was stale (see [`sizes`]).
    pub fn sizes(&self) -> &sizes::Sizes {
        &self.ctx.sizes
    }

    /// Whether the server was seen to honour `Range` (`None`: not known yet).
    pub fn range_honoured(&self) -> Option<bool> {
        self.ctx.range.honoured()
    }

    /// The download of `file`, shared by all its readers; one that failed is replaced by a new
    /// one, so the next read tries again.
    pub fn download(
        &self,
        res: &ResourceRef,
        file: &RemoteFile,
    ) -> Result<Arc<FileDownload>, FetchError> {
        let dest = self
            .ctx
            .cache
            .file_path(res, &file.path)
            .ok_or_else(|| FetchError::UnsafePath(file.path.clone()))?;
        let key = (dest, file.size, file.digest);
        let mut active = self.active.lock().unwrap();
        if let Some(d) = active.get(&key)
            && !d.failed()
        {
            return Ok(d.clone());
        }
        // Forget downloads that are over (their readers hold their own handles).
        active.retain(|_, d| d.finished().is_none() && !d.failed());
        let d = FileDownload::new(self.ctx.clone(), file.clone(), key.0.clone())?;
        // A download that has ended leaves at once: it holds its file open, and a copy
        // evicted from the cache kept its space while it stayed here (found in a field test
        // with a small --cache-size: 64 MiB of deleted files held until the next download).
        let registry = Arc::downgrade(&self.active);
        let this = Arc::downgrade(&d);
        d.when_ended(Box::new(move || {
            if let Some(active) = registry.upgrade() {
                active
                    .lock()
                    .unwrap()
                    .retain(|_, d| !std::ptr::eq(Arc::as_ptr(d), this.as_ptr()));
            }
        }));
        active.insert(key, d.clone());
        Ok(d)
    }

    /// The download of `file` under way, if there is one (none is started).
    pub fn running(&self, res: &ResourceRef, file: &RemoteFile) -> Option<Arc<FileDownload>> {
        let dest = self.ctx.cache.file_path(res, &file.path)?;
        let key = (dest, file.size, file.digest);
        let active = self.active.lock().unwrap();
        active.get(&key).filter(|d| !d.failed()).cloned()
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
        if let Some((_, f)) = self.ctx.cache.open_current(res, file) {
            if let Ok(meta) = f.metadata() {
                self.ctx.sizes.learn(file, meta.len());
            }
            return crate::cache::read_at(&f, offset, size).map_err(FetchError::cache);
        }
        // A read that joins a download already failing fails with it (attempts never
        // multiply, and `--io-timeout` bounds the read); the next read starts a new one.
        self.download(res, file)?.read(offset, size).await
    }

    /// Whether the memory budget has room for background downloads (half of it free).
    pub fn memory_room(&self) -> bool {
        self.ctx.memory.half_free()
    }

    /// Downloads the whole file into the cache (if needed), through the download its readers
    /// share (a reader joins it).
    pub async fn fill(&self, res: &ResourceRef, file: &RemoteFile) -> Result<(), FetchError> {
        if self.ctx.cache.lookup(res, file).is_some() {
            return Ok(());
        }
        if file.size == 0 && !file.size_unknown {
            let dest = self
                .ctx
                .cache
                .file_path(res, &file.path)
                .ok_or_else(|| FetchError::UnsafePath(file.path.clone()))?;
            let part = self.ctx.cache.begin().map_err(FetchError::cache)?;
            part.commit(file, &dest)?;
            return Ok(());
        }
        let d = self.download(res, file)?;
        // Ask for every byte, in order (what is there already is answered at once), to the
        // end the server gives (a listed size can be stale).
        const STEP: u32 = 16 << 20;
        let mut off = 0;
        loop {
            let got = d.read(off, STEP).await?;
            off += got.len() as u64;
            if got.is_empty() || off >= d.size() {
                break;
            }
        }
        d.wait_finished().await
    }

    /// Downloads the whole file into the cache (if needed) and returns its path.
    pub async fn fetch(&self, res: &ResourceRef, file: &RemoteFile) -> Result<PathBuf, FetchError> {
        self.fill(res, file).await?;
        self.ctx.cache.lookup(res, file).ok_or_else(|| {
            FetchError::Cache(format!(
                "{} is not in the cache after its download",
                file.path
            ))
        })
    }
}
