//! xnatfs: an XNAT server mounted read-only as folders, and parallel prefetch of sessions.
//!
//! The crate follows its layers, one job to a module:
//! - [`xnat`]: the server, behind the small [`xnat::XnatApi`] trait: the HTTP client, JSON
//!   parsing, the one retry policy ([`xnat::retry`]), listings kept for offline use.
//! - [`fs`]: the filesystem core (inode tree, lookup/read/readdir answering errnos, testable
//!   without a mount) and the thin FUSE adapter ([`fs::fuse`]).
//! - [`fetch`]: file bodies into the cache for a mount: one shared download per file,
//!   readahead, hashing.
//! - [`cache`]: the on-disk cache: every path in it, partial files, the size cap, stats.
//! - [`prefetch`]: `xnatfs prefetch`: plan, parallel verified transfers, ZIPs, progress.
//! - [`mount`]: a mount's life: mount, serve, unmount.
//! - [`mock`]: a stand-in XNAT server for tests and the demo.
//! - [`cli`]: the command line, only parsing and wiring; [`settings`]: server and credentials;
//!   [`profiles`]: named servers in xnatfs's config file (and xnatctl's);
//!   [`names`]: which names are safe as paths; [`units`]: sizes and durations.

pub mod bids;
pub mod cache;
pub mod cli;
pub mod fetch;
pub mod fs;
pub mod mock;
pub mod mount;
pub mod names;
pub mod prefetch;
pub mod profiles;
pub mod settings;
pub mod units;
pub mod xnat;
