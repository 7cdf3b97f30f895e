//! MD5 of a body on its own thread, read back from its partial file as the download writes it
//! (the costliest step of a download, kept off the path that serves readers), and the memory
//! budget that bounds what a mount's downloads hold in memory.

use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The memory budget is counted in units of this many bytes.
pub const MEMORY_UNIT: usize = 1024;

/// The smallest memory budget: a smaller `--max-memory` is raised to this.
pub const MIN_MEMORY: u64 = 16 << 20;

/// The memory budget for data held in memory by downloads (chunks waiting to be hashed),
/// shared by a whole mount.
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    units: Arc<Semaphore>,
    total: u32,
}

impl MemoryBudget {
    /// A budget of `bytes`, at least [`MIN_MEMORY`].
    pub fn new(bytes: u64) -> MemoryBudget {
        let units = (bytes.max(MIN_MEMORY) / MEMORY_UNIT as u64)
            .min(Semaphore::MAX_PERMITS as u64)
            .min(u64::from(u32::MAX)) as u32;
        MemoryBudget {
            units: Arc::new(Semaphore::new(units as usize)),
            total: units,
        }
    }

    /// Whether at least half of the budget is free: background work (the series read-ahead)
    /// starts only then, leaving the rest to readers.
    pub fn half_free(&self) -> bool {
        self.units.available_permits() as u64 * 2 >= u64::from(self.total)
    }

    /// Holds `units` of the budget until the permit is dropped; a request for more than the
    /// whole budget holds all of it (so it waits for the others, and never for ever).
    async fn hold(&self, units: u32) -> Option<OwnedSemaphorePermit> {
        let units = units.min(self.total);
        self.units.clone().acquire_many_owned(units).await.ok()
    }
}

/// How much of the file the hashing thread reads at a time (its buffer, held from the
/// memory budget while it runs).
pub const HASH_BLOCK: usize = 1 << 20;

/// MD5 of a body as it is written to its partial file: a blocking thread reads back, in
/// order, what the download has written (from the page cache, where it was just written) and
/// hashes it, trailing the download by as much as it must.
///
/// The download never waits for it: bytes go to the file at the link's speed and are served
/// to readers from there, while MD5 (the costliest step, about one core's worth at a disk's
/// speed) runs on the other core. Nothing is held in memory but the thread's buffer. The file
/// is given its final name only once the digest is known and matches (the read that reaches
/// the end waits for that), so a reader is told of a wrong body whatever it read before.
pub struct Hasher {
    /// Bytes `0..upto` are in the file, in order.
    upto: u64,
    written: Arc<Written>,
    done: Option<tokio::task::JoinHandle<Option<(u64, String)>>>,
}

/// How far the file has been written in order, and whether the download is done with it.
#[derive(Default)]
struct Written {
    state: std::sync::Mutex<(u64, bool)>,
    more: std::sync::Condvar,
}

impl Written {
    fn tell(&self, upto: u64, closed: bool) {
        let mut st = self.state.lock().unwrap();
        *st = (upto.max(st.0), closed || st.1);
        self.more.notify_one();
    }

    /// Waits until the file holds more than `n` bytes in order, or the download is done:
    /// how far it is written then.
    fn wait_past(&self, n: u64) -> (u64, bool) {
        let mut st = self.state.lock().unwrap();
        while st.0 <= n && !st.1 {
            st = self.more.wait(st).unwrap();
        }
        *st
    }
}

impl Hasher {
    /// Starts hashing what is written to `file` from byte 0 (`file`: a handle of its own on
    /// the partial file).
    pub fn start(memory: MemoryBudget, file: std::fs::File) -> Hasher {
        let written = Arc::new(Written::default());
        let w = written.clone();
        let done = tokio::spawn(async move {
            let _buffer = memory.hold((HASH_BLOCK / MEMORY_UNIT) as u32).await;
            tokio::task::spawn_blocking(move || hash_as_written(&file, &w))
                .await
                .ok()
        });
        Hasher {
            upto: 0,
            written,
            done: Some(done),
        }
    }

    /// Says that a chunk received at `at` is now in the file (a retry that starts over from 0
    /// resends what was written before: only what is new counts; a chunk past a gap, none).
    pub fn feed(&mut self, at: u64, chunk: &bytes::Bytes) {
        let end = at + chunk.len() as u64;
        if at > self.upto || end <= self.upto {
            return;
        }
        self.upto = end;
        self.written.tell(end, false);
    }

    /// The digest, if every byte of a `size`-byte file went through.
    pub async fn finish(mut self, size: u64) -> Option<String> {
        self.written.tell(self.upto, true);
        match self.done.take()?.await {
            Ok(Some((n, digest))) if n == size && self.upto == size => Some(digest),
            _ => None,
        }
    }
}

impl Drop for Hasher {
    /// A download given up: its thread stops (no digest is wanted).
    fn drop(&mut self) {
        self.written.tell(self.upto, true);
    }
}

/// Hashes `file` from byte 0 as [`Written`] says it is written, until the download is done:
/// how many bytes, and their MD5 (hex). A read that fails (the file was cut back after a
/// failed download) ends it early.
fn hash_as_written(file: &std::fs::File, written: &Written) -> (u64, String) {
    use std::os::unix::fs::FileExt;
    let mut h = <md5::Md5 as md5::Digest>::new();
    let mut buf = vec![0u8; HASH_BLOCK];
    let mut n = 0u64;
    'reading: loop {
        let (upto, closed) = written.wait_past(n);
        while n < upto {
            let len = (upto - n).min(HASH_BLOCK as u64) as usize;
            if file.read_exact_at(&mut buf[..len], n).is_err() {
                break 'reading;
            }
            md5::Digest::update(&mut h, &buf[..len]);
            n += len as u64;
        }
        if closed {
            break;
        }
    }
    (n, hex::encode(md5::Digest::finalize(h)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use md5::Digest;
    use std::io::Write;

    /// A partial file holding `body`, and a handle of the hasher's own on it.
    fn file_with(body: &[u8]) -> (tempfile::NamedTempFile, std::fs::File) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(body).unwrap();
        let own = f.reopen().unwrap();
        (f, own)
    }

    #[tokio::test]
    async fn hashes_in_order_skipping_what_was_sent_before() {
        let body = bytes::Bytes::from((0..300_000u32).map(|i| i as u8).collect::<Vec<_>>());
        let (_f, own) = file_with(&body);
        let mut h = Hasher::start(MemoryBudget::new(1 << 20), own);
        h.feed(0, &body.slice(..100_000));
        // A retry from the start resends bytes already written: only the new part counts.
        h.feed(0, &body.slice(..200_000));
        h.feed(200_000, &body.slice(200_000..));
        assert_eq!(
            h.finish(300_000).await,
            Some(hex::encode(md5::Md5::digest(&body)))
        );
        let (_g, own) = file_with(&body);
        let mut gap = Hasher::start(MemoryBudget::new(1 << 20), own);
        gap.feed(1000, &body.slice(..10));
        assert_eq!(gap.finish(1010).await, None, "a gap means no digest");
    }

    #[tokio::test]
    async fn a_file_cut_back_under_the_hasher_gives_no_digest() {
        let body = vec![3u8; 3 * HASH_BLOCK];
        let (f, own) = file_with(&body);
        f.as_file().set_len(HASH_BLOCK as u64).unwrap();
        let mut h = Hasher::start(MemoryBudget::new(1 << 20), own);
        h.feed(0, &bytes::Bytes::from(body.clone()));
        assert_eq!(h.finish(body.len() as u64).await, None);
    }

    #[tokio::test]
    async fn background_work_waits_while_half_the_budget_is_held() {
        let budget = MemoryBudget::new(MIN_MEMORY);
        assert!(budget.half_free());
        let held = budget.hold(budget.total / 2 + 1).await;
        assert!(!budget.half_free());
        drop(held);
        assert!(budget.half_free());
    }

    #[tokio::test]
    async fn hashing_waits_for_its_buffer_and_never_holds_the_download() {
        let budget = MemoryBudget::new(1); // raised to the floor
        assert_eq!(u64::from(budget.total), MIN_MEMORY / MEMORY_UNIT as u64);
        let held = budget.hold(budget.total).await;
        let body = vec![1u8; 2 * HASH_BLOCK];
        let (_f, own) = file_with(&body);
        let mut h = Hasher::start(budget.clone(), own);
        // The whole budget is held elsewhere: feeding goes on at once all the same.
        h.feed(0, &bytes::Bytes::from(body.clone()));
        drop(held);
        let digest = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            h.finish(body.len() as u64),
        );
        assert_eq!(
            digest.await.unwrap(),
            Some(hex::encode(md5::Md5::digest(&body)))
        );
    }
}
