//! The errno a caller gets for each kind of failure: written once, here.

use super::node::TreeError;
use crate::fetch::FetchError;
use crate::xnat::XnatError;

/// An error number as the kernel passes it to the caller (`libc::EIO`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    pub const NOENT: Errno = Errno(libc::ENOENT);
    pub const IO: Errno = Errno(libc::EIO);
    pub const ACCES: Errno = Errno(libc::EACCES);
    pub const TIMEDOUT: Errno = Errno(libc::ETIMEDOUT);
    pub const INTR: Errno = Errno(libc::EINTR);
    pub const NOTDIR: Errno = Errno(libc::ENOTDIR);
    pub const ISDIR: Errno = Errno(libc::EISDIR);
    pub const BADF: Errno = Errno(libc::EBADF);
    pub const ROFS: Errno = Errno(libc::EROFS);
    /// No extended attribute of that name.
    pub const NODATA: Errno = Errno(libc::ENODATA);
    /// The caller's buffer is too small for the value.
    pub const RANGE: Errno = Errno(libc::ERANGE);
    /// Not supported here (an extended-attribute namespace xnatfs has none of).
    pub const OPNOTSUPP: Errno = Errno(libc::EOPNOTSUPP);
    /// Not implemented: the kernel stops sending that kind of request.
    pub const NOSYS: Errno = Errno(libc::ENOSYS);

    /// The errno of an I/O error on the cache's own disk.
    pub fn of_io(e: &std::io::Error) -> Errno {
        Errno(e.raw_os_error().unwrap_or(libc::EIO))
    }
}

impl From<&XnatError> for Errno {
    fn from(e: &XnatError) -> Errno {
        match e {
            XnatError::NotFound(_) => Errno::NOENT,
            // Forbidden, or a login refused (remembered: see `crate::xnat::login::LoginGate`).
            XnatError::Forbidden(_) | XnatError::Auth(_) => Errno::ACCES,
            XnatError::Timeout(_) => Errno::TIMEDOUT,
            _ => Errno::IO,
        }
    }
}

impl From<&TreeError> for Errno {
    fn from(e: &TreeError) -> Errno {
        match e {
            TreeError::NotFound => Errno::NOENT,
            TreeError::NotDir => Errno::NOTDIR,
            TreeError::Xnat(x) => x.into(),
        }
    }
}

impl From<&FetchError> for Errno {
    fn from(e: &FetchError) -> Errno {
        match e {
            FetchError::Xnat(x) => x.into(),
            // A body that is not the listed file, a cache that cannot be written, an unsafe
            // path: the caller gets an I/O error, never wrong bytes.
            _ => Errno::IO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_has_its_errno() {
        let x = |e: XnatError| Errno::from(&e);
        assert_eq!(x(XnatError::NotFound("f".into())), Errno::NOENT);
        assert_eq!(x(XnatError::Forbidden("f".into())), Errno::ACCES);
        assert_eq!(x(XnatError::Timeout("f".into())), Errno::TIMEDOUT);
        assert_eq!(x(XnatError::Auth("no".into())), Errno::ACCES);
        let status = XnatError::Status {
            status: 500,
            path: "/data".into(),
            retry_after: None,
            by: None,
        };
        assert_eq!(x(status.clone()), Errno::IO);
        assert_eq!(Errno::from(&TreeError::NotFound), Errno::NOENT);
        assert_eq!(Errno::from(&TreeError::NotDir), Errno::NOTDIR);
        assert_eq!(
            Errno::from(&TreeError::Xnat(XnatError::Timeout("t".into()))),
            Errno::TIMEDOUT
        );
        // A fetch is mapped as the server's error it carries, else EIO.
        assert_eq!(
            Errno::from(&FetchError::Xnat(XnatError::NotFound("gone".into()))),
            Errno::NOENT
        );
        assert_eq!(Errno::from(&FetchError::Xnat(status)), Errno::IO);
        assert_eq!(Errno::from(&FetchError::Verify("short".into())), Errno::IO);
        assert_eq!(Errno::from(&FetchError::Cache("full".into())), Errno::IO);
        assert_eq!(
            Errno::from(&FetchError::UnsafePath("../x".into())),
            Errno::IO
        );
        let disk_full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert_eq!(Errno::of_io(&disk_full), Errno(libc::ENOSPC));
        assert_eq!(Errno::of_io(&std::io::Error::other("x")), Errno::IO);
    }
}
