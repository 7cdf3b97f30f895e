//! `xnatfs prefetch` against the mock XNAT server, run as the real binary: one module a topic.

#[path = "../common/mod.rs"]
mod common;

mod bids;
mod derived;
mod failures;
mod helpers;
mod selection;
mod transfer;
mod usage;
