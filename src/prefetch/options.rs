//! What a prefetch run is asked to do: `xnatfs prefetch`'s flags, parsed.

use super::destination::Destination;
use super::select::Selection;
use super::shard::Shard;
use super::transfer::Method;
use std::time::Duration;

pub struct PrefetchOptions {
    /// `-E`: accession IDs, or labels in `project`.
    pub sessions: Vec<String>,
    /// `-P`.
    pub project: Option<String>,
    /// The profile's default project, for labels when `-P` is not given.
    pub default_project: Option<String>,
    pub selection: Selection,
    pub destination: Destination,
    pub workers: usize,
    pub method: Method,
    pub dry_run: bool,
    pub io_timeout: Duration,
    /// No progress output (summary and failures are still printed).
    pub quiet: bool,
    /// `--shard I/N`: only this part of the sessions.
    pub shard: Option<Shard>,
    /// How each file is checked (`--verify`).
    pub verify: crate::cache::Verify,
    /// `--json`: stdout holds only the JSON summary (the caller prints it); no progress.
    pub json: bool,
    /// `--bids`: the files of the project's BIDS view instead of the selection's.
    pub bids: Option<super::bids::BidsPrefetch>,
}
