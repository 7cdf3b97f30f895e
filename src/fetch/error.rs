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

    pub fn cache(e: impl std::fmt::Display) -> FetchError {
        FetchError::Cache(e.to_string())
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
