//! Real FUSE mounts of the mock XNAT server, one module a topic.

#[path = "../common/mod.rs"]
mod common;

mod bids;
mod cache;
mod catalog;
mod changes;
mod conventions;
mod crawl;
mod errors;
mod forget;
mod lifecycle;
mod listing;
mod login;
mod metadata;
mod model;
mod offline;
mod reading;
mod series;
mod shared;
