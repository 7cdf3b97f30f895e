//! xnatfs: an XNAT server mounted read-only as folders, and parallel prefetch of sessions.
//!
//! The layout of the crate follows its layers: [`xnat`] talks to the server behind a small
//! trait; [`mock`] is a stand-in server for tests and the demo; [`tree`], [`cache`] and
//! [`fetcher`] are the core of the mount, testable without FUSE; [`fuse`] is the thin adapter
//! to the kernel; [`mount`] runs a mount's life; [`cli`] only parses and wires.

pub mod budget;
pub mod cache;
pub mod caller;
pub mod cli;
pub mod download;
pub mod fetcher;
pub mod fuse;
pub mod listings;
pub mod mock;
pub mod mount;
pub mod names;
pub mod prefetch;
pub mod settings;
pub mod tree;
pub mod xnat;
