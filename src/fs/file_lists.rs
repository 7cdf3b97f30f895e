//! The file lists of resources the mount holds, shared by the tree (each resource's
//! `files/` folder) and the sessions' trees fetched again (which reuse a list where it is
//! unchanged), and giving the memory of big ones back to the system.

use crate::xnat::{FileList, ResourceRef};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The file lists of resources, by resource, with when each was listed: the ones the mount
/// holds (see [`super::tree::Tree`]), which a session's tree fetched again reuses where unchanged.
pub type KnownFiles = Arc<Mutex<HashMap<ResourceRef, (Instant, FileList)>>>;

/// Returns the memory freed while a big listing was built to the system (glibc keeps it
/// otherwise, and a daemon that listed a 200,000-file folder once would stay that large).
pub fn give_back_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory of the allocator.
    unsafe {
        libc::malloc_trim(0);
    }
}
