//! The listed digest kept with each cache file, as an extended attribute
//! (`user.xnatfs.md5`): set on the partial file before its rename, so the name and the digest
//! it was verified against arrive together. A cache file counts only while its digest is the
//! one the current listing gives (a file changed on the server with the same size must not
//! be served from an old copy).
//!
//! A file whose listed size was stale (XNAT's catalog can be: its body, whose length the answer's
//! `Content-Length` gives, is the truth) also keeps the size the listing gave when it was
//! verified (`user.xnatfs.listed-size`): a file listed with no digest counts while the listing
//! still gives that size.
//!
//! Where the cache's file system keeps no user extended attributes (some NFS and Lustre
//! setups), a copy is taken on its size alone; `cache` logs this once.

use std::os::fd::AsRawFd;

const NAME: &[u8] = b"user.xnatfs.md5\0";
/// The digest a copy checked by size only (`--verify size`) was listed with: not verified, so
/// no [`Kept::Digest`], but a listing that gives another digest shows the file changed.
const LISTED: &[u8] = b"user.xnatfs.listed-md5\0";
/// The size a copy was listed with, when its body (the answer's `Content-Length`) had another.
const LISTED_SIZE: &[u8] = b"user.xnatfs.listed-size\0";

/// What a cache file says of its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kept {
    /// The MD5 (hex) it was verified against.
    Digest(String),
    /// None kept (written before digests were kept, or by hand).
    Missing,
    /// The file system keeps no extended attributes.
    Unsupported,
}

/// Keeps `md5` with the open file `f` (best effort: see [`Kept::Unsupported`]).
pub fn write(f: &std::fs::File, md5: &str) {
    set(f, NAME, md5)
}

/// Keeps the digest `md5` that the open file `f` was listed with, though not verified against.
pub fn write_listed(f: &std::fs::File, md5: &str) {
    set(f, LISTED, md5)
}

/// The listed digest kept with a copy checked by size only (see [`write_listed`]).
pub fn read_listed(f: &std::fs::File) -> Option<String> {
    match get(f, LISTED) {
        Kept::Digest(d) => Some(d),
        _ => None,
    }
}

fn set(f: &std::fs::File, name: &[u8], value: &str) {
    // SAFETY: the fd is open; NAME is NUL-terminated; the value is a valid buffer.
    let rc = unsafe {
        libc::fsetxattr(
            f.as_raw_fd(),
            name.as_ptr().cast(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc != 0 {
        tracing::debug!(
            "cannot keep an attribute with a cache file: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Keeps the size the listing gave with the open file `f`, whose length differs (best effort).
pub fn write_listed_size(f: &std::fs::File, listed: u64) {
    set(f, LISTED_SIZE, &listed.to_string())
}

/// The listed size kept with the open file `f` (see [`write_listed_size`]).
pub fn read_listed_size(f: &std::fs::File) -> Option<u64> {
    match get(f, LISTED_SIZE) {
        Kept::Digest(size) => size.parse().ok(),
        _ => None,
    }
}

/// The digest kept with the open file `f`.
pub fn read_open(f: &std::fs::File) -> Kept {
    get(f, NAME)
}

fn get(f: &std::fs::File, name: &[u8]) -> Kept {
    let mut buf = [0u8; 64];
    // SAFETY: the fd is open; NAME is NUL-terminated; buf is writable for its length.
    let n = unsafe {
        libc::fgetxattr(
            f.as_raw_fd(),
            name.as_ptr().cast(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    kept(n, &buf)
}

fn kept(n: isize, buf: &[u8]) -> Kept {
    if n >= 0 {
        return match std::str::from_utf8(&buf[..n as usize]) {
            Ok(s) => Kept::Digest(s.to_string()),
            Err(_) => Kept::Missing,
        };
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::ENOTSUP) => Kept::Unsupported,
        _ => Kept::Missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_travels_with_the_file_through_a_rename() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let f = std::fs::File::create(&a).unwrap();
        match read_open(&f) {
            Kept::Unsupported => return, // this file system keeps none: nothing to test
            kept => assert_eq!(kept, Kept::Missing),
        }
        write(&f, "0123456789abcdef0123456789abcdef");
        let b = dir.path().join("b");
        std::fs::rename(&a, &b).unwrap();
        assert_eq!(
            read_open(&std::fs::File::open(&b).unwrap()),
            Kept::Digest("0123456789abcdef0123456789abcdef".into())
        );
    }
}
