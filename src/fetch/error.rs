//! Why getting a file's bytes failed.

use crate::cache::CommitError;
use crate::xnat::XnatError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Xnat(#[from] XnatError),
    #[error("{0}")]
    Verify(String),
    /// Writing on the local disk failed: the cache's, or `prefetch --out`'s.
    #[error("local disk: {0}")]
    Cache(String),
    /// The local disk is full (or the user's quota used up): no other file will fit either.
    #[error("local disk full: {0}")]
    DiskFull(String),
    #[error("refusing unsafe path {0:?}")]
    UnsafePath(String),
}

impl FetchError {
    /// Worth another attempt: a transient server failure, or a short or corrupt body (most
    /// often a dropped connection).
    pub fn retryable(&self) -> bool {
        match self {
            FetchError::Xnat(e) => e.is_transient(),
            FetchError::Verify(_) => true,
            _ => false,
        }
    }

    /// A failure of the local disk; [`FetchError::DiskFull`] when it is an I/O error that
    /// says the disk or the quota is full.
    pub fn cache(e: impl std::fmt::Display + 'static) -> FetchError {
        let io = (&e as &dyn std::any::Any).downcast_ref::<std::io::Error>();
        match io.map(std::io::Error::kind) {
            Some(std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded) => {
                FetchError::DiskFull(e.to_string())
            }
            _ => FetchError::Cache(e.to_string()),
        }
    }
}

impl From<CommitError> for FetchError {
    fn from(e: CommitError) -> Self {
        match e {
            CommitError::Verify(v) => FetchError::Verify(v.to_string()),
            CommitError::Io(io) => FetchError::cache(io),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_told_from_other_failures_of_the_disk() {
        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert!(matches!(FetchError::cache(full), FetchError::DiskFull(_)));
        let quota = std::io::Error::from_raw_os_error(libc::EDQUOT);
        assert!(matches!(FetchError::cache(quota), FetchError::DiskFull(_)));
        let denied = std::io::Error::from_raw_os_error(libc::EACCES);
        assert!(matches!(FetchError::cache(denied), FetchError::Cache(_)));
        assert!(matches!(FetchError::cache("gone"), FetchError::Cache(_)));
        let e = FetchError::from(CommitError::Io(std::io::Error::from_raw_os_error(
            libc::ENOSPC,
        )));
        assert!(e.to_string().starts_with("local disk full: "), "{e}");
    }
}
