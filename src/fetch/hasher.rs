//! MD5 of a body on its own thread (the costliest step of a download), and the memory budget
//! that bounds how much of a mount's downloads waits in memory to be hashed.

use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How far one download may run ahead of its hashing, in bytes.
pub const HASH_AHEAD: usize = 32 << 20;

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

/// MD5 of a body, computed on a blocking thread from the chunks a request receives in order.
pub struct Hasher {
    /// Bytes `0..upto` have been sent to the thread.
    upto: u64,
    /// The mount's memory budget: every chunk waiting to be hashed holds its share.
    memory: MemoryBudget,
    /// This download's own share: it may run at most [`HASH_AHEAD`] ahead of its hashing.
    own: Arc<Semaphore>,
    tx: Option<tokio::sync::mpsc::UnboundedSender<HashItem>>,
    done: tokio::task::JoinHandle<(u64, String)>,
}

/// A chunk to hash, with the memory it holds until it is hashed.
type HashItem = (bytes::Bytes, [OwnedSemaphorePermit; 2]);

impl Hasher {
    pub fn start(memory: MemoryBudget) -> Hasher {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<HashItem>();
        let done = tokio::task::spawn_blocking(move || {
            let mut h = <md5::Md5 as md5::Digest>::new();
            let mut n = 0u64;
            while let Some((chunk, _held)) = rx.blocking_recv() {
                md5::Digest::update(&mut h, &chunk);
                n += chunk.len() as u64;
            }
            (n, hex::encode(md5::Digest::finalize(h)))
        });
        Hasher {
            upto: 0,
            memory,
            own: Arc::new(Semaphore::new(HASH_AHEAD / MEMORY_UNIT)),
            tx: Some(tx),
            done,
        }
    }

    /// Hands over the part of a chunk received at `at` not hashed yet (a retry that starts
    /// over from 0 resends what was hashed before). Waits while this download is too far
    /// ahead of its hashing, or the mount's budget is spent: the download then slows to the
    /// hashing speed instead of piling chunks up in memory.
    pub async fn feed(&mut self, at: u64, chunk: &bytes::Bytes) {
        let end = at + chunk.len() as u64;
        if at > self.upto || end <= self.upto {
            return;
        }
        let part = chunk.slice((self.upto - at) as usize..);
        self.upto = end;
        let units =
            (part.len().div_ceil(MEMORY_UNIT) as u32).clamp(1, (HASH_AHEAD / MEMORY_UNIT) as u32);
        let own = self.own.clone().acquire_many_owned(units).await.ok();
        let global = self.memory.hold(units).await;
        let (Some(own), Some(global)) = (own, global) else {
            self.tx = None;
            return;
        };
        if let Some(tx) = &self.tx
            && tx.send((part, [own, global])).is_err()
        {
            self.tx = None;
        }
    }

    /// The digest, if every byte of a `size`-byte file went through.
    pub async fn finish(mut self, size: u64) -> Option<String> {
        self.tx = None;
        match self.done.await {
            Ok((n, digest)) if n == size && self.upto == size => Some(digest),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use md5::Digest;

    #[tokio::test]
    async fn hashes_in_order_skipping_what_was_sent_before() {
        let body = bytes::Bytes::from(vec![7u8; 300_000]);
        let mut h = Hasher::start(MemoryBudget::new(1 << 20));
        h.feed(0, &body.slice(..100_000)).await;
        // A retry from the start resends bytes already hashed: only the new part counts.
        h.feed(0, &body.slice(..200_000)).await;
        h.feed(200_000, &body.slice(200_000..)).await;
        assert_eq!(
            h.finish(300_000).await,
            Some(hex::encode(md5::Md5::digest(&body)))
        );
        let mut gap = Hasher::start(MemoryBudget::new(1 << 20));
        gap.feed(1000, &body.slice(..10)).await;
        assert_eq!(gap.finish(1010).await, None, "a gap means no digest");
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
    async fn a_chunk_larger_than_the_whole_budget_still_goes_through() {
        let budget = MemoryBudget::new(1); // raised to the floor
        assert_eq!(u64::from(budget.total), MIN_MEMORY / MEMORY_UNIT as u64);
        let mut h = Hasher::start(budget.clone());
        let big = bytes::Bytes::from(vec![1u8; HASH_AHEAD]);
        // A chunk of 32 MiB is twice the whole budget. (The limit only tells a hang from
        // hashing 32 MiB, which takes a second or so in a debug build, more when loaded.)
        let fed = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            h.feed(0, &big).await;
            h.feed(big.len() as u64, &big).await;
        });
        assert!(
            fed.await.is_ok(),
            "never waits for more than the budget holds"
        );
        assert!(h.finish(2 * HASH_AHEAD as u64).await.is_some());
    }
}
