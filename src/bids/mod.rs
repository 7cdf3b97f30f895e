//! The BIDS view of a project (`xnatfs mount --bids`): which files of each session are BIDS
//! data and where they go ([`sources`], with the names of [`labels`]), and the whole project
//! as one dataset ([`view`]). Nothing here knows FUSE or the mount's folders: the mount shows
//! a view as one more layout (`crate::fs::bids_layout`).

pub mod bidsmap;
pub mod labels;
pub mod sources;
pub mod view;

#[cfg(test)]
mod tests;

use crate::xnat::{RemoteFile, ResourceRef};

/// Reads a small file of XNAT's whole (a session's `*_scans.tsv`): through the cache, so
/// that the view is the same offline.
#[async_trait::async_trait]
pub trait ReadFile: Send + Sync {
    async fn read_whole(&self, res: &ResourceRef, file: &RemoteFile) -> Result<Vec<u8>, String>;
    /// Fetches the file into the cache (if it is not there), reading nothing back.
    async fn fill(&self, res: &ResourceRef, file: &RemoteFile) -> Result<(), String> {
        self.read_whole(res, file).await.map(drop)
    }
}

/// Whether a file of this name is one BIDS indexers read (pybids, the validator, a BIDS
/// app's first step): a JSON sidecar, a TSV table, bval/bvec.
pub fn is_metadata(name: &str) -> bool {
    [".json", ".tsv", ".bval", ".bvec"]
        .iter()
        .any(|e| name.ends_with(e))
}

#[async_trait::async_trait]
impl ReadFile for crate::fetch::Fetcher {
    async fn read_whole(&self, res: &ResourceRef, file: &RemoteFile) -> Result<Vec<u8>, String> {
        let path = self.fetch(res, file).await.map_err(|e| e.to_string())?;
        std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    }

    async fn fill(&self, res: &ResourceRef, file: &RemoteFile) -> Result<(), String> {
        crate::fetch::Fetcher::fill(self, res, file)
            .await
            .map_err(|e| e.to_string())
    }
}
