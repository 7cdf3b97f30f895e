//! A cache file being filled while readers read it.
//!
//! The first read of an uncached file starts one download into a temporary file, and every
//! read is answered as soon as the bytes it needs have arrived, not when the whole file has.
//! XNAT's Restlet answers `Range` with the whole body (under a 206: the client reads such an
//! answer as the whole file, see `crate::xnat::ranged`): then one stream fills the file from
//! the start and readers of later offsets wait for it. Where the server honours `Range` (a
//! caching proxy in front of XNAT), a read far from what is arriving starts a ranged request
//! of its own, whose window doubles while the reader goes on sequentially and shrinks again on
//! a jump. Which server this is, is learnt from its first answer to a range request (the
//! asked range, checked, or the whole file), never configured.
//!
//! The file's size is the one the first answer gives (a 200's `Content-Length`, a 206's
//! `Content-Range` total), not the listed one: a listing's `Size` comes from XNAT's catalog,
//! which can be stale (see [`super::sizes`]). Until an answer has come, reads wait for it; the
//! listed size only says where to ask first. The MD5, when listed, decides integrity.
//!
//! When every byte is there the file is checked (size, and MD5 when listed) and renamed to its
//! final name in the cache. Readers keep reading the same open file throughout.
//!
//! # Where a cold read's time goes
//!
//! Measured with `scripts/bench-read` and `perf` on 2 cores, the mock on the same machine, a
//! cold `dd bs=1M` of 512 MiB (2026-12-04, and as dated):
//! - With `--verify md5`, MD5 is the path's limit: one thread (see [`super::hasher`]) hashes
//!   every byte, 57% of the daemon's CPU samples; the download, the partial file's write,
//!   FUSE's copies and `dd` share the other core, and preempt it. The `md-5` crate's portable
//!   code hashed at 600-650 MB/s here, no faster than coreutils' `md5sum` (655 MB/s), so the
//!   read could not reach it: 0.71x of `md5sum`'s time. With the crate's `asm` feature (its
//!   x86-64 assembly, `md5-asm`) it hashes at 760 MB/s, and a cold read takes 0.90-0.94x of
//!   `md5sum`'s time (2026-12-07, two runs of `scripts/bench-read 512`; 877-895 ms against
//!   1171 ms the same hour without it). Hashing in step with the download (at most
//!   [`super::hasher::HASH_AHEAD`] behind) beat reading the bytes back from the partial file
//!   after them: a download running free took CPU from MD5 (1.28-1.44 s against 1.17-1.27 s).
//! - Per byte, the path copies: socket to buffer, buffer to the partial file, file to the
//!   reply, reply to the kernel; per chunk (about 400 KiB from hyper) one `pwrite`, one wake
//!   of waiting readers; per FUSE read one `pread` and one `writev`. Not zeroing the reply
//!   buffer, or waking readers less often, made no measurable difference.
//! - FUSE reads come as big as the kernel's read-ahead: 128 KiB by default, which a FUSE
//!   server cannot raise at `init`; as root the mount raises it to 1 MiB
//!   (`crate::mount::kernel::raise_read_ahead`), 10-15% faster.
//! - With `--verify size`, the partial file's writes were the daemon's largest cost: ext4's
//!   delayed allocation books each page written into a hole. The file's space is reserved
//!   with `fallocate` when the download starts (`PartialFile::reserve`): 0.39-0.48 s against
//!   0.43-0.59 s, nine runs each side by side.
//! - The mock's own cost counted: generating bodies made it half as costly as the client, on
//!   the same cores; a cheaper generator cut curl's baseline from 0.55-0.96 s to 0.2 s.
//! - With `--verify size` (2026-12-07, `perf` of the mock and the daemon during a 0.44 s read):
//!   0.64 s of CPU, both cores busy four fifths of the read. The mock took a quarter; the
//!   daemon's download threads 43% (the socket's copy 7.5%, the page-cache write of the
//!   partial file 10%, scheduling and wake-ups); the FUSE threads 31% (the `pread` copy 8%,
//!   the kernel's FUSE locks 8.5%, the reply's copy 4%, zeroing buffers 3%); `dd` itself is
//!   not counted. Two FUSE threads instead of four: no difference, in runs taken in turn.
//! - The floor, measured (2026-12-07, `scripts/bench-read` prints it in every run): a cold
//!   read is two stages, each CPU-bound, that can be timed alone: the download into a file
//!   (`prefetch --out` of the same file, less its start-up: 0.20 s, 0.39-0.40 s of busy
//!   CPU, the mock's included) and the serving of a complete cache file through FUSE
//!   (passthrough kept off: 0.23-0.24 s, 0.35-0.37 s of CPU; a local `dd` of the same file
//!   takes 0.07 s, the rest is the kernel's FUSE path, per page, and one `pread` per
//!   request). Together they need 0.74-0.77 s of CPU; over 2 cores, no cold read can take
//!   less than 0.37-0.39 s, which is 0.40-0.52x of curl's 0.15-0.19 s, below the 0.7x
//!   asked. The cold read takes 0.41-0.42 s with 0.74-0.77 s of busy CPU: 0.89-0.93 of its
//!   floor. Tried and left, as they gained nothing in runs taken in turn: waking only the
//!   readers whose bytes a chunk completes instead of all waiting readers per chunk, FUSE
//!   requests of 4 MiB (`/proc/sys/fs/fuse/max_pages_limit` raised, read-ahead 4 MiB:
//!   reads of a cached file 10-20% faster, cold reads 5-10% slower). Opening cold files
//!   with `FOPEN_DIRECT_IO` (no page cache of the kernel's: one copy, into the reader's
//!   buffer, instead of two): `dd bs=1M` 0.35-0.37 s against 0.41-0.46 s, the serving of a
//!   cached file at half the CPU; but every `read` becomes a request, without read-ahead:
//!   `bs=128K` no faster, `bs=32K` (`md5sum`'s size, zlib's is smaller) 0.62 s against
//!   0.41 s, and `mmap` (nibabel's default for `.nii`) needs the kernel to allow it. Left:
//!   most readers read in small pieces.

use super::error::FetchError;
use super::hasher::Hasher;
use super::ranges::Ranges;
use super::readahead::{MIN_WINDOW, Readahead};
use super::{BodyRetries, FetchContext, ProgressMark, body};
use crate::cache::PartialFile;
use crate::xnat::retry::BODY_ATTEMPTS;
use crate::xnat::{RemoteFile, XnatError};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Files up to this size are verified before any of their bytes is served.
pub const VERIFY_BEFORE_SERVING: u64 = 4 << 20;
/// A read this far past a running request's position waits for it instead of starting another.
pub const JOIN_DISTANCE: u64 = 8 << 20;

#[derive(Debug)]
struct Run {
    id: u64,
    /// Next byte this request will deliver.
    pos: u64,
    end: u64,
}

struct State {
    /// The file's size: the listed one until an answer gives it ([`State::size_known`]).
    size: u64,
    /// An answer came: [`State::size`] is the server's (or, if it gave none, the listed one).
    size_known: bool,
    present: Ranges,
    runs: Vec<Run>,
    next_run: u64,
    /// Where the last read ended, and the window of ranged requests it earned.
    readahead: Readahead,
    /// MD5 of the whole file, when one request delivered it all in order and hashed it.
    digest: Option<String>,
    part: Option<PartialFile>,
    /// The download failed for good: readers of missing bytes get this.
    failed: Option<FetchError>,
    /// Verified and renamed to its final name (or refused).
    finished: Option<Result<(), FetchError>>,
    /// When a byte of progress was last made (see [`ProgressMark`]).
    progress: ProgressMark,
}

pub struct FileDownload {
    ctx: Arc<FetchContext>,
    pub file: RemoteFile,
    dest: PathBuf,
    fd: std::fs::File,
    state: Mutex<State>,
    changed: tokio::sync::watch::Sender<u64>,
    /// Called once when the file is verified and renamed, or refused.
    on_end: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl FileDownload {
    pub fn new(
        ctx: Arc<FetchContext>,
        file: RemoteFile,
        dest: PathBuf,
    ) -> Result<Arc<FileDownload>, FetchError> {
        let listed = file.size;
        ctx.cache.make_room(listed);
        let part = ctx.cache.begin().map_err(FetchError::cache)?;
        part.reserve(file.size).map_err(FetchError::cache)?;
        let fd = part.reopen().map_err(FetchError::cache)?;
        Ok(Arc::new(FileDownload {
            ctx,
            file,
            dest,
            fd,
            state: Mutex::new(State {
                size: listed,
                size_known: false,
                present: Ranges::default(),
                runs: Vec::new(),
                next_run: 0,
                readahead: Readahead::default(),
                digest: None,
                part: Some(part),
                failed: None,
                finished: None,
                progress: ProgressMark::default(),
            }),
            changed: tokio::sync::watch::channel(0).0,
            on_end: Mutex::new(None),
        }))
    }

    /// `f` is called once the file is verified and under its final name, or refused.
    pub fn when_ended(&self, f: Box<dyn FnOnce() + Send>) {
        *self.on_end.lock().unwrap() = Some(f);
    }

    /// The file's size: the server's once an answer gave it, else the listed one.
    pub fn size(&self) -> u64 {
        self.state.lock().unwrap().size
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// Whether the file is complete, verified and under its final name.
    pub fn finished(&self) -> Option<Result<(), FetchError>> {
        self.state.lock().unwrap().finished.clone()
    }

    /// Waits until the file is verified and under its final name (all bytes must be asked
    /// for first).
    pub async fn wait_finished(&self) -> Result<(), FetchError> {
        let mut rx = self.changed.subscribe();
        loop {
            rx.borrow_and_update();
            {
                let st = self.state.lock().unwrap();
                if let Some(r) = &st.finished {
                    return r.clone();
                }
                if let Some(e) = &st.failed {
                    return Err(e.clone());
                }
            }
            if tokio::time::timeout(self.ctx.stall_timeout, rx.changed())
                .await
                .is_err()
            {
                return Err(
                    XnatError::Timeout(format!("{} did not finish", self.file.uri())).into(),
                );
            }
        }
    }

    /// Whether the download failed for good (a new one must be started).
    pub fn failed(&self) -> bool {
        let st = self.state.lock().unwrap();
        st.failed.is_some() || matches!(st.finished, Some(Err(_)))
    }

    /// Reads `offset..offset + size` at once if those bytes are there and need no wait for
    /// the file's check; `None` means call [`Self::read`].
    pub fn read_now(
        self: &Arc<Self>,
        offset: u64,
        size: u32,
    ) -> Option<Result<Vec<u8>, FetchError>> {
        let end = {
            let mut st = self.state.lock().unwrap();
            let fsize = st.size;
            let end = (offset + u64::from(size)).min(fsize);
            if !st.size_known || fsize <= VERIFY_BEFORE_SERVING || end >= fsize || offset >= end {
                return None;
            }
            if st.failed.is_some() || !st.present.contains(offset, end) {
                return None;
            }
            self.plan(&mut st, offset, end, true);
            end
        };
        let mut buf = vec![0u8; (end - offset) as usize];
        Some(
            self.fd
                .read_exact_at(&mut buf, offset)
                .map(|()| buf)
                .map_err(FetchError::cache),
        )
    }

    /// Reads up to `size` bytes at `offset`, waiting for them to arrive. Fails when the
    /// download fails, or when no byte has arrived for the stall timeout.
    ///
    /// Bytes are served as they arrive, before the file can be checked against its listed
    /// size and MD5, except where that would hide a bad file from a reader: small files, and
    /// the read that reaches the end of the file, wait for the check (and fail with it), so a
    /// whole-file reader (`cat`, `cp`, `md5sum`) always learns of a bad body.
    pub async fn read(self: &Arc<Self>, offset: u64, size: u32) -> Result<Vec<u8>, FetchError> {
        let mut rx = self.changed.subscribe();
        let asked = Instant::now();
        let mut planned = false;
        let (end, fsize) = loop {
            rx.borrow_and_update();
            let waited_since = {
                let mut st = self.state.lock().unwrap();
                if let Some(Err(e)) = &st.finished {
                    return Err(e.clone());
                }
                // The size is the server's once an answer came (see the module doc).
                let fsize = st.size;
                let end = (offset + u64::from(size)).min(fsize);
                // A small file is fetched and checked whole before any of it is served.
                let (want_off, want_end) = if fsize <= VERIFY_BEFORE_SERVING {
                    (0, fsize)
                } else {
                    (offset, end)
                };
                if st.size_known || (fsize == 0 && !self.file.size_unknown) {
                    if offset >= end {
                        return Ok(Vec::new());
                    }
                    if st.present.contains(want_off, want_end) {
                        if !planned {
                            self.plan(&mut st, want_off, want_end, true);
                        }
                        break (end, fsize);
                    }
                }
                if let Some(e) = &st.failed {
                    return Err(e.clone());
                }
                // Once per read, or again if every request ended without bringing these bytes.
                // Before any answer, a read past the listed end asks for the listed last byte:
                // the answer says where the end really is.
                if !planned || st.runs.is_empty() {
                    if fsize == 0 {
                        // Listed with no size: the whole body says what the file is.
                        if st.runs.is_empty() {
                            self.start(&mut st, 0, u64::MAX);
                        }
                    } else {
                        let (a, b) = if want_off < want_end {
                            (want_off, want_end)
                        } else {
                            (fsize - 1, fsize)
                        };
                        self.plan(&mut st, a, b, false);
                    }
                    planned = true;
                }
                st.progress.at().max(asked)
            };
            let left = self
                .ctx
                .stall_timeout
                .saturating_sub(waited_since.elapsed());
            match tokio::time::timeout(left.max(Duration::from_millis(10)), rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(FetchError::Cache("download dropped".into())),
                Err(_) => {
                    let st = self.state.lock().unwrap();
                    if st.progress.at().max(asked).elapsed() >= self.ctx.stall_timeout {
                        return Err(XnatError::Timeout(format!(
                            "no data for {} in {:?}",
                            self.file.uri(),
                            self.ctx.stall_timeout
                        ))
                        .into());
                    }
                }
            }
        };
        // The read that reaches the end of a file being read whole waits for the check (a
        // random read at the end of a file fetched by ranges cannot, and does not).
        let whole = fsize <= VERIFY_BEFORE_SERVING
            || (end == fsize && Self::frontier(&self.state.lock().unwrap(), 0) >= fsize);
        if whole {
            self.wait_finished().await?;
        }
        let mut buf = vec![0u8; (end - offset) as usize];
        self.fd
            .read_exact_at(&mut buf, offset)
            .map_err(FetchError::cache)?;
        Ok(buf)
    }

    /// The first byte at or after `from` that is neither present nor on its way.
    fn frontier(st: &State, from: u64) -> u64 {
        let mut f = st.present.next_gap(from);
        loop {
            let covering = st
                .runs
                .iter()
                .filter(|r| r.pos <= f && f < r.end)
                .map(|r| r.end)
                .max();
            match covering {
                Some(e) => f = st.present.next_gap(e),
                None => return f,
            }
        }
    }

    /// Starts a ranged request at `from` for up to `len` bytes, stopping where present
    /// bytes begin.
    fn start_window(self: &Arc<Self>, st: &mut State, from: u64, len: u64) {
        let to = (from + len)
            .min(st.size)
            .min(st.present.next_run_start(from));
        if from < to {
            self.start(st, from, to);
        }
    }

    /// Starts whatever request `offset..end` needs (`covered`: it is already there), and
    /// reads ahead of a sequential reader where the server honours ranges.
    fn plan(self: &Arc<Self>, st: &mut State, offset: u64, end: u64, covered: bool) {
        let size = st.size;
        match self.ctx.range.honoured() {
            // XNAT itself: one stream of the whole body serves every reader.
            Some(false) => {
                if !covered && st.runs.is_empty() {
                    self.start(st, 0, size);
                }
            }
            // The first request asks for a window at the first missing byte: a 206 says
            // ranges work; a 200 brings the whole body, which then fills the file.
            None => {
                if !covered && st.runs.is_empty() {
                    let gap = st.present.next_gap(offset);
                    self.start_window(st, gap, MIN_WINDOW.max(end - gap));
                }
            }
            Some(true) => {
                let sequential = st.readahead.on_read(offset, end, covered);
                let window = st.readahead.window();
                let gap = st.present.next_gap(offset);
                let joined = st
                    .runs
                    .iter()
                    .any(|r| r.pos <= gap && gap < r.end && gap - r.pos <= JOIN_DISTANCE);
                if !covered && !joined {
                    self.start_window(st, gap, window.max(end - gap));
                }
                // Read ahead: keep about one window on its way past this read.
                let frontier = Self::frontier(st, end);
                if (sequential || !covered) && frontier < size && frontier - end < window {
                    self.start_window(st, frontier, window);
                }
                return;
            }
        }
        st.readahead.moved_to(end);
    }

    fn start(self: &Arc<Self>, st: &mut State, start: u64, end: u64) {
        let id = st.next_run;
        st.next_run += 1;
        st.runs.push(Run {
            id,
            pos: start,
            end,
        });
        let this = self.clone();
        self.ctx
            .rt
            .spawn(async move { this.run(id, start, end).await });
    }

    /// One request (with its retries) filling `start..end`. A request from the start of the
    /// file hashes what it receives, in order, on another thread (MD5 is the costliest step
    /// of a download, and this keeps it off the path that serves readers).
    async fn run(self: Arc<Self>, id: u64, start: u64, end: u64) {
        let mut retries = BodyRetries::new(BODY_ATTEMPTS, self.ctx.stall_timeout);
        let (mut pos, mut end) = (start, end);
        let md5 = self.ctx.cache.verify() == crate::cache::Verify::Md5;
        let mut hashing = (start == 0 && md5 && self.file.digest.is_some())
            .then(|| Hasher::start(self.ctx.memory.clone()));
        let result = loop {
            match self.fetch(id, pos, end, hashing.as_mut()).await {
                Ok(()) => break Ok(()),
                Err(e) => {
                    // Where the run got to, and where it ends now: an answer that was the
                    // whole file made it the file's end (a retry must not ask for a range
                    // that ends before it starts).
                    (pos, end) = self.run_span(id).unwrap_or((pos, end));
                    let progress = self.state.lock().unwrap().progress.at();
                    tracing::warn!(
                        "download of {} failed (attempt {} of {}): {e}",
                        self.file.uri(),
                        retries.made(),
                        retries.allowed()
                    );
                    if pos >= end {
                        // Its span came (a connection lost past it, say): readers ask again for
                        // anything missing, and the file is verified whole. Bytes the server
                        // sent wrong fail the download, and so does the local disk: a run
                        // that ended Ok with bytes unwritten would be started again by its
                        // readers, forever (found on a full disk).
                        match e {
                            FetchError::Xnat(_) => break Ok(()),
                            _ => break Err(e),
                        }
                    }
                    if !retries.again(&e, progress).await {
                        break Err(e);
                    }
                }
            }
        };
        let size = self.size();
        let digest = match (hashing, &result) {
            (Some(h), Ok(())) => h.finish(size).await,
            _ => None,
        };
        let refused = {
            let mut st = self.state.lock().unwrap();
            st.runs.retain(|r| r.id != id);
            if digest.is_some() {
                st.digest = digest;
            }
            match result {
                Err(e) => {
                    tracing::error!("download of {} failed: {e}", self.file.uri());
                    let refused = matches!(e, FetchError::Verify(_));
                    st.failed.get_or_insert(e);
                    st.part = None; // the partial file's name goes now
                    // Its space too, though readers may still hold it open: they fail now.
                    let _ = self.fd.set_len(0);
                    refused
                }
                Ok(()) => false,
            }
        };
        if refused {
            self.ctx.refused(&self.file);
        }
        self.bump();
        self.maybe_finish().await;
    }

    fn run_span(&self, id: u64) -> Option<(u64, u64)> {
        let st = self.state.lock().unwrap();
        st.runs.iter().find(|r| r.id == id).map(|r| (r.pos, r.end))
    }

    /// Sends one request for `pos..end` and writes what arrives.
    async fn fetch(
        &self,
        id: u64,
        pos: u64,
        end: u64,
        mut hashing: Option<&mut Hasher>,
    ) -> Result<(), FetchError> {
        let (ask_end, size_known) = {
            let st = self.state.lock().unwrap();
            ((end < st.size).then_some(end), st.size_known)
        };
        let uri = self.file.uri();
        let ask = |pos, end| {
            tokio::time::timeout(
                self.ctx.stall_timeout,
                self.ctx.api.download_range(&uri, pos, end),
            )
        };
        let no_answer = |_| XnatError::Timeout(format!("no answer for {}", self.file.uri()));
        let mut ranged = pos > 0 || ask_end.is_some();
        let download = match ask(pos, ask_end).await.map_err(no_answer)? {
            // 416: the range starts past the end, which a proxy that honours ranges says of a
            // file shorter than its stale listed size. The whole body says how long it is.
            Err(XnatError::Status { status: 416, .. }) if !size_known && pos > 0 => {
                ranged = false;
                ask(0, None).await.map_err(no_answer)??
            }
            answer => answer?,
        };
        self.learn_size(&download)?;
        if ranged {
            // Only the answer to a real range request tells whether ranges work.
            self.ctx.range.learn(download.partial);
        }
        if download.partial && download.start != pos {
            return Err(FetchError::Verify(format!(
                "{}: asked for bytes from {pos}, got them from {}",
                self.file.path, download.start
            )));
        }
        // A whole body (200) fills the whole file, whatever this request was for.
        let size = self.size();
        let end = if download.partial {
            end.min(size)
        } else {
            size
        };
        if !download.partial {
            let mut st = self.state.lock().unwrap();
            if let Some(run) = st.runs.iter_mut().find(|r| r.id == id) {
                run.end = end;
            }
        }
        // A checked range is exactly its Content-Length long (`crate::xnat::Download::partial`);
        // a body that ran past it would be bytes of somewhere else.
        let range_end = download
            .partial
            .then(|| download.start + download.content_length.unwrap_or(0));
        let mut at = download.start;
        let mut body = download.body;
        let asked = Instant::now();
        loop {
            let since = self.state.lock().unwrap().progress.at().max(asked);
            let next = body::next_chunk(&mut body, since, self.ctx.stall_timeout, &self.file);
            let Some(chunk) = next.await? else { break };
            let chunk_end = at + chunk.len() as u64;
            body::within_size(&self.file, chunk_end, size)?;
            if range_end.is_some_and(|e| chunk_end > e) {
                return Err(FetchError::Verify(format!(
                    "{}: the answer to a range request runs past the range",
                    self.file.path
                )));
            }
            self.store(id, at, &chunk)?;
            if let Some(h) = hashing.as_deref_mut() {
                h.feed(at, &chunk).await;
            }
            at = chunk_end;
            if at >= end {
                break; // a server that ignored the range sends more than this run needs
            }
        }
        if at < end {
            return Err(FetchError::Verify(format!(
                "{}: the body ended at {at} of {size} bytes",
                self.file.path
            )));
        }
        Ok(())
    }

    /// Takes the file's size from the first answer that gives it (see the module doc). A later
    /// answer that gives another means the file changed on the server during the download.
    fn learn_size(&self, download: &crate::xnat::Download) -> Result<(), FetchError> {
        let mut st = self.state.lock().unwrap();
        match download.total {
            Some(total) if st.size_known && total != st.size => Err(FetchError::Verify(format!(
                "{}: the server gave its size as {} bytes, then as {total}: it changed",
                self.file.path, st.size
            ))),
            Some(total) if !st.size_known && total != st.size => {
                tracing::info!(
                    "{}: {total} bytes where the listing says {} (a stale catalog size)",
                    self.file.uri(),
                    self.file.size
                );
                self.fd.set_len(total).map_err(FetchError::cache)?;
                st.size = total;
                st.size_known = true;
                for run in &mut st.runs {
                    run.end = run.end.min(total);
                }
                self.ctx.sizes.learn(&self.file, total);
                Ok(())
            }
            // No size given: the listed one stands, and the body must end there.
            _ => {
                st.size_known = true;
                Ok(())
            }
        }
    }

    /// Writes a chunk that arrived at `at`: bytes already present are compared, not written
    /// again (a server that ignores Range resends the start on every retry).
    fn store(&self, id: u64, at: u64, chunk: &[u8]) -> Result<(), FetchError> {
        let end = at + chunk.len() as u64;
        let mut st = self.state.lock().unwrap();
        if let Some(e) = &st.failed {
            return Err(e.clone()); // the download failed for good: its file is given back
        }
        let mut off = at;
        while off < end {
            let i = (off - at) as usize;
            match st.present.run_end(off) {
                Some(have_to) => {
                    let n = (have_to.min(end) - off) as usize;
                    let mut old = vec![0u8; n];
                    self.fd
                        .read_exact_at(&mut old, off)
                        .map_err(FetchError::cache)?;
                    if old != chunk[i..i + n] {
                        return Err(FetchError::Verify(format!(
                            "{}: the server sent other bytes for the same offset",
                            self.file.path
                        )));
                    }
                    off += n as u64;
                }
                None => {
                    let n = (st.present.next_run_start(off).min(end) - off) as usize;
                    self.fd
                        .write_all_at(&chunk[i..i + n], off)
                        .map_err(FetchError::cache)?;
                    st.present.insert(off, off + n as u64);
                    off += n as u64;
                }
            }
        }
        // The run got this far only once the chunk is written: a write that failed (a full
        // disk) leaves the run short of its end, so it fails rather than passing for done.
        if let Some(run) = st.runs.iter_mut().find(|r| r.id == id) {
            run.pos = end;
        }
        let complete = st.present.contains(0, st.size);
        st.progress.arrived(chunk.len() as u64, complete);
        drop(st);
        self.bump();
        Ok(())
    }

    /// When every byte is there: verify and give the file its final name.
    async fn maybe_finish(self: &Arc<Self>) {
        let (part, hashed, size) = {
            let mut st = self.state.lock().unwrap();
            if st.finished.is_some()
                || st.failed.is_some()
                || !st.present.contains(0, st.size)
                || !st.runs.is_empty()
            {
                return;
            }
            (st.part.take(), st.digest.take(), st.size)
        };
        let Some(part) = part else { return };
        let this = self.clone();
        let result = tokio::task::spawn_blocking(move || {
            part.commit_filled(&this.file, &this.dest, size, hashed)
                .map_err(FetchError::from)
        })
        .await
        .unwrap_or_else(|e| Err(FetchError::cache(e)));
        if let Err(e) = &result {
            tracing::error!("{}: {e}", self.file.uri());
            let _ = self.fd.set_len(0); // its space, though readers may hold it open
            if matches!(e, FetchError::Verify(_)) {
                self.ctx.refused(&self.file);
            }
        } else {
            tracing::debug!("cached {}", self.dest.display());
        }
        self.state.lock().unwrap().finished = Some(result);
        // Before its waiters wake: whoever waited for the end finds it over everywhere.
        let ended = self.on_end.lock().unwrap().take();
        if let Some(f) = ended {
            f();
        }
        self.bump();
    }
}
