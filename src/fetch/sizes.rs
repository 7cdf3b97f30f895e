//! True sizes of files whose listed size was stale.
//!
//! A files listing's `Size` comes from XNAT's catalog, which can be wrong (XNAT stats the file
//! only when the catalog has no size: xnat-web `org/nrg/xnat/utils/CatalogUtils.java`,
//! `getEntryDetails`). An answer's `Content-Length` is the truth: a download that learns it, or
//! a cache file verified against the same listing, records it here, and the mount shows that
//! size for the file as long as the listing still gives the same size and digest.

use crate::xnat::RemoteFile;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// What a file was listed as, and its true size.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Learnt {
    listed: u64,
    digest: Option<crate::xnat::Md5>,
    size: u64,
}

#[derive(Debug, Default)]
pub struct Sizes {
    /// By the file's URI on the server.
    by_uri: Mutex<HashMap<String, Learnt>>,
    /// Whether anything was learnt at all (most mounts never see a stale size, and ask often).
    any: AtomicBool,
}

impl Sizes {
    /// `file`, as listed, really has `size` bytes. Returns whether that is news.
    pub fn learn(&self, file: &RemoteFile, size: u64) -> bool {
        if size == file.size {
            return false;
        }
        let learnt = Learnt {
            listed: file.size,
            digest: file.digest,
            size,
        };
        self.any.store(true, Ordering::Release);
        let old = self
            .by_uri
            .lock()
            .unwrap()
            .insert(file.uri().into_owned(), learnt.clone());
        old != Some(learnt)
    }

    /// The true size of `file` as listed now, when it differs from the listed one.
    pub fn of(&self, file: &RemoteFile) -> Option<u64> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let map = self.by_uri.lock().unwrap();
        let l = map.get(&*file.uri())?;
        (l.listed == file.size && l.digest == file.digest).then_some(l.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(size: u64, digest: Option<&str>) -> RemoteFile {
        RemoteFile::new(
            "a.dcm".into(),
            size,
            // "d": the digest dddd...
            digest.map(|d| crate::xnat::Md5::parse(&d.repeat(32)).unwrap()),
            "/data/experiments/E1/resources/1/files/a.dcm",
        )
    }

    #[test]
    fn a_true_size_holds_while_the_listing_is_the_same() {
        let sizes = Sizes::default();
        assert_eq!(sizes.of(&file(10, Some("d"))), None);
        assert!(
            !sizes.learn(&file(10, Some("d")), 10),
            "the same size is no news"
        );
        assert!(sizes.learn(&file(10, Some("d")), 15));
        assert!(!sizes.learn(&file(10, Some("d")), 15));
        assert_eq!(sizes.of(&file(10, Some("d"))), Some(15));
        // Another listing of it (changed on the server): the learnt size is not its size.
        assert_eq!(sizes.of(&file(12, Some("d"))), None);
        assert_eq!(sizes.of(&file(10, Some("e"))), None);
        assert_eq!(sizes.of(&file(10, None)), None);
    }
}
