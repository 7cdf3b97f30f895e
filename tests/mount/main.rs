//! Real FUSE mounts of the mock XNAT server, one module a topic.

#[path = "../common/mod.rs"]
mod common;

mod cache;
mod changes;
mod conventions;
mod errors;
mod lifecycle;
mod listing;
mod login;
mod model;
mod offline;
mod reading;
mod shared;
