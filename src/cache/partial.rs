//! A file on its way into the cache (or into `--out`): written under a temporary name, checked
//! against the listed size and MD5, and only then renamed into place, so a file under its
//! final name is always complete and verified.

use super::mkdir_private;
use crate::xnat::RemoteFile;
use md5::{Digest, Md5};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Why a downloaded body was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum VerifyError {
    #[error("{path}: got {got} bytes, expected {want}")]
    Size { path: String, got: u64, want: u64 },
    #[error("{path}: MD5 {got} does not match the listed digest {want}")]
    Digest {
        path: String,
        got: String,
        want: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error("cannot write the cache: {0}")]
    Io(#[from] io::Error),
}

/// How a downloaded body is checked before it takes its final name (`--verify`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Verify {
    /// Its size, and its MD5 where the listing gives one (one core hashes the body).
    #[default]
    Md5,
    /// Its size only (the listing's size, and the body's own length): no MD5 is computed, so
    /// reads are not bound by hashing, trusting TCP (and TLS) for the bytes.
    Size,
}

/// How the names of partial files begin.
pub const PARTIAL_PREFIX: &str = ".part-";

/// A file being written into the cache. Dropped without [`PartialFile::commit`], it leaves
/// nothing behind.
pub struct PartialFile {
    tmp: tempfile::NamedTempFile,
    hasher: Md5,
    written: u64,
    /// The size the server's answer gave (`Content-Length`), when known: it, not the listed
    /// size, is what the body must have (see [`PartialFile::expect_size`]).
    expected: Option<u64>,
    /// Cache files and folders are private to the user (0600/0700); plain `--out` copies get
    /// ordinary permissions (those the umask leaves).
    private: bool,
    verify: Verify,
    /// Whether [`Self::write`] hashes what it writes (see [`Self::hashed_elsewhere`]).
    hash_writes: bool,
    /// The cache's size cap, which counts the file once it is in place (none: a copy outside
    /// the cache).
    budget: Option<std::sync::Arc<super::budget::Budget>>,
}

impl PartialFile {
    /// A new partial file in `tmp_dir`, which must be on the file system of its destination
    /// so that the final rename is atomic.
    /// The file is held (see [`super::lease`]) while it is written: one that nobody holds
    /// belongs to a process that is gone, and is swept.
    pub fn new_in(tmp_dir: &Path, private: bool) -> io::Result<PartialFile> {
        let mut builder = tempfile::Builder::new();
        builder.prefix(PARTIAL_PREFIX);
        if !private {
            // Created as any new file is: 0666 less the umask.
            builder.permissions(std::fs::Permissions::from_mode(0o666));
        }
        let tmp = builder.tempfile_in(tmp_dir)?;
        super::lease::hold(tmp.as_file());
        Ok(PartialFile {
            tmp,
            hasher: Md5::new(),
            written: 0,
            expected: None,
            private,
            verify: Verify::Md5,
            hash_writes: true,
            budget: None,
        })
    }

    /// Counted by `budget` once committed.
    pub(super) fn counted_by(
        mut self,
        budget: Option<std::sync::Arc<super::budget::Budget>>,
    ) -> PartialFile {
        self.budget = budget;
        self
    }

    /// Checked as `verify` says when committed (by size alone: no MD5 is computed).
    pub fn verifying(mut self, verify: Verify) -> PartialFile {
        self.verify = verify;
        self
    }

    /// The caller hashes the body itself (several files at once: [`super::md5_lanes`]) and
    /// commits with [`Self::commit_hashed`]; writes are not hashed here.
    pub fn hashed_elsewhere(mut self) -> PartialFile {
        self.hash_writes = false;
        self
    }

    /// The body's size as the server's answer gives it (a 200's `Content-Length`): the file
    /// must have this size rather than the listed one. A listing's `Size` comes from XNAT's
    /// catalog, which can be stale: XNAT takes an entry's size from its catalog metafield and
    /// stats the file only when that is empty (xnat-web `org/nrg/xnat/utils/CatalogUtils.java`
    /// `getEntryDetails`, called by `restlet/resources/files/FileList.java`). The listed digest,
    /// when there is one, still decides integrity.
    pub fn expect_size(&mut self, size: u64) {
        self.expected = Some(size);
    }

    /// Gives the file its full length up front (a sparse file filled out of order).
    pub fn set_len(&self, len: u64) -> io::Result<()> {
        self.tmp.as_file().set_len(len)
    }

    /// Sets its length to `len` with the disk space for it reserved at once (`fallocate`),
    /// where the file system can and the space is there; a plain length (a sparse file)
    /// otherwise, as before: a reader of a few bytes of a huge file on a small disk still gets
    /// them. Writing into reserved space costs the file system less per page than writing into
    /// a hole (ext4's delayed allocation books every page as it is written, about a quarter of
    /// the daemon's CPU in a cold read with `--verify size`; `scripts/bench-read`: 0.39-0.45 s
    /// against 0.43-0.55 s for 512 MiB).
    pub fn reserve(&self, len: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        if let Ok(n) = libc::off_t::try_from(len)
            && n > 0
            // SAFETY: fallocate(2) on this file's open descriptor; no memory is passed.
            && unsafe { libc::fallocate(self.tmp.as_file().as_raw_fd(), 0, 0, n) } == 0
        {
            return Ok(());
        }
        self.set_len(len)
    }

    /// Another handle on the same file, for reading and for writing at offsets.
    pub fn reopen(&self) -> io::Result<std::fs::File> {
        self.tmp.reopen()
    }

    /// Commits a file that was filled through [`Self::reopen`] handles rather than
    /// [`Self::write`]: `md5` is its digest when the filler could hash it in order; otherwise
    /// it is computed here when the listing has one to check.
    pub fn commit_filled(
        mut self,
        file: &RemoteFile,
        dest: &Path,
        len: u64,
        md5: Option<String>,
    ) -> Result<(), CommitError> {
        self.written = len;
        self.expected = Some(len);
        let got = match (md5, &file.digest) {
            (Some(d), _) => Some(d),
            (None, Some(_)) if self.verify == Verify::Md5 => Some(hash_file(self.tmp.path())?),
            (None, _) => None,
        };
        self.check_and_persist(file, dest, got)
    }

    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.tmp.write_all(bytes)?;
        if self.verify == Verify::Md5 && self.hash_writes {
            self.hasher.update(bytes);
        }
        self.written += bytes.len() as u64;
        Ok(())
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Checks size (the answer's, else the listed one) and digest against the listing, then
    /// renames the file to `dest` and, for a cache file, counts it under the cache's cap.
    pub fn commit(self, file: &RemoteFile, dest: &Path) -> Result<(), CommitError> {
        let md5 = match (self.verify, self.hash_writes) {
            (Verify::Md5, true) => Some(hex::encode(self.hasher.clone().finalize())),
            // Meant for `commit_hashed`: hashed here rather than committed unchecked.
            (Verify::Md5, false) => Some(hash_file(self.tmp.path())?),
            (Verify::Size, _) => None,
        };
        self.check_and_persist(file, dest, md5)
    }

    /// Commits a file written [`Self::hashed_elsewhere`]: `md5` is the digest of what was
    /// written (checked as [`Self::commit`] checks its own).
    pub fn commit_hashed(
        self,
        file: &RemoteFile,
        dest: &Path,
        md5: [u8; 16],
    ) -> Result<(), CommitError> {
        let md5 = (self.verify == Verify::Md5).then(|| hex::encode(md5));
        self.check_and_persist(file, dest, md5)
    }

    fn check_and_persist(
        self,
        file: &RemoteFile,
        dest: &Path,
        md5: Option<String>,
    ) -> Result<(), CommitError> {
        let got = self.written;
        let want = self.expected.unwrap_or(file.size);
        if got != want {
            return Err(VerifyError::Size {
                path: file.path.clone(),
                got,
                want,
            }
            .into());
        }
        if got != file.size {
            tracing::info!(
                "{}: {got} bytes where the listing says {} (a stale catalog size); kept",
                file.path,
                file.size
            );
        }
        if let (Some(want), Some(got)) = (&file.digest, &md5)
            && got != want
        {
            return Err(VerifyError::Digest {
                path: file.path.clone(),
                got: got.clone(),
                want: want.hex(),
            }
            .into());
        }
        // Its temporary file gone means its folder was removed while in use (`rm -rf` of
        // the cache area, or of `--out`, under a running mount or prefetch): the file is not
        // kept, and the folders are not made again.
        if std::fs::symlink_metadata(self.tmp.path()).is_err() {
            return Err(CommitError::Io(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{} was removed while in use; {} is not kept",
                    self.tmp.path().parent().unwrap_or(Path::new("")).display(),
                    file.path
                ),
            )));
        }
        if let Some(parent) = dest.parent() {
            if self.private {
                mkdir_private(parent)?;
            } else {
                std::fs::create_dir_all(parent)?;
            }
        }
        let mut tmp = self.tmp;
        tmp.flush()?;
        if self.private
            && let Some(listed) = &file.digest
        {
            match md5 {
                // Verified against the listed digest: kept as the file's digest.
                Some(_) => super::digest_attr::write(tmp.as_file(), &listed.hex()),
                // Checked by size only: the listed digest is kept apart, so that a change on
                // the server is still seen, and an `md5` mount hashes this copy once.
                None => super::digest_attr::write_listed(tmp.as_file(), &listed.hex()),
            }
        }
        if self.private && got != file.size {
            super::digest_attr::write_listed_size(tmp.as_file(), file.size);
        }
        if self.private {
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        tmp.persist(dest).map_err(|e| e.error)?;
        if let Some(budget) = &self.budget {
            budget.added(dest, got);
        }
        Ok(())
    }
}

/// Reads up to `size` bytes at `offset` of an open file (fewer only at its end).
pub fn read_at(file: &std::fs::File, offset: u64, size: u32) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; size as usize];
    let mut filled = 0;
    while filled < buf.len() {
        let n = file.read_at(&mut buf[filled..], offset + filled as u64)?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    buf.truncate(filled);
    Ok(buf)
}

/// MD5 hex of a file's contents.
pub fn hash_file(path: &Path) -> io::Result<String> {
    hash_open(&std::fs::File::open(path)?)
}

/// MD5 hex of an open file's contents (from its start, whatever its position).
pub fn hash_open(f: &std::fs::File) -> io::Result<String> {
    use std::io::Read;
    let mut f = std::io::BufReader::new(f);
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(0))?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}
