//! A background mount's log: one file per mount (its name: [`crate::cache::default_log_file`],
//! `<cache dir>/logs/<mount point>.log`), rotated by size. Past [`LIMIT`] bytes the file is
//! renamed `.1` (the older `.1` to `.2`; [`KEEP`] old files are kept) and a new one started,
//! so a mount that runs for months holds its log to a few tens of MiB. The process's stderr
//! follows the new file too (`dup2`), so a panic's message lands where the log lines are.

use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// The size a log file grows to before it is rotated.
pub const LIMIT: u64 = 10 << 20;
/// Rotated files kept (`.1` ... `.KEEP`).
pub const KEEP: u32 = 2;

/// A log file that rotates itself by size.
pub struct Rotating {
    state: Mutex<State>,
}

struct State {
    path: PathBuf,
    file: std::fs::File,
    written: u64,
    limit: u64,
    keep: u32,
    /// A descriptor that follows the current file (the process's stderr), if any.
    follow_fd: Option<i32>,
}

fn open_append(path: &Path) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// `path` with `.N` after it.
fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

impl Rotating {
    /// Appends to `path` (made if missing), rotating past `limit` bytes and keeping `keep`
    /// old files; `follow_fd` (like 2, stderr) is pointed at each new file.
    pub fn open(
        path: &Path,
        limit: u64,
        keep: u32,
        follow_fd: Option<i32>,
    ) -> io::Result<Rotating> {
        let file = open_append(path)?;
        let written = file.metadata()?.len();
        Ok(Rotating {
            state: Mutex::new(State {
                path: path.to_path_buf(),
                file,
                written,
                limit,
                keep: keep.max(1),
                follow_fd,
            }),
        })
    }

    /// Writes one whole record (a log line), rotating first if it would pass the limit.
    pub fn write_record(&self, buf: &[u8]) -> io::Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.written > 0 && st.written + buf.len() as u64 > st.limit {
            // A log that cannot rotate goes on growing rather than losing lines.
            let _ = st.rotate();
        }
        st.file.write_all(buf)?;
        st.written += buf.len() as u64;
        Ok(())
    }
}

impl State {
    fn rotate(&mut self) -> io::Result<()> {
        for n in (1..self.keep).rev() {
            let _ = std::fs::rename(numbered(&self.path, n), numbered(&self.path, n + 1));
        }
        std::fs::rename(&self.path, numbered(&self.path, 1))?;
        self.file = open_append(&self.path)?;
        self.written = 0;
        if let Some(fd) = self.follow_fd {
            // SAFETY: both descriptors are open; dup2 replaces `fd` atomically.
            unsafe { libc::dup2(self.file.as_raw_fd(), fd) };
        }
        Ok(())
    }
}

/// The log of this process, once the background mount has named it ([`rotate_stderr_at`]).
static LOG: OnceLock<Rotating> = OnceLock::new();

/// In the background mount, whose stderr is the log file at `path`: log lines go there
/// through a [`Rotating`] log from now on.
pub fn rotate_stderr_at(path: &Path) -> io::Result<()> {
    let log = Rotating::open(path, LIMIT, KEEP, Some(2))?;
    let _ = LOG.set(log);
    Ok(())
}

/// Where log lines go: the rotating log once it is set, stderr before.
///
/// A line that cannot be written (the log's disk is full, as the cache's is when the log is
/// in the cache folder) is dropped, never reported as an error: tracing-subscriber would
/// report it with `eprintln!` to stderr, which is that same full file, and `eprintln!` panics
/// when it cannot write. The panic came while a download's lock was held, which poisoned it
/// and took the whole mount down.
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = match LOG.get() {
            Some(log) => log.write_record(buf),
            None => io::stderr().write_all(buf),
        };
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_keeping_whole_lines_and_a_few_old_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.log");
        let log = Rotating::open(&path, 100, 2, None).unwrap();
        let line = |i: usize| format!("line {i:03} {}\n", "x".repeat(20));
        for i in 0..40 {
            log.write_record(line(i).as_bytes()).unwrap();
        }
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        let now = read(path.clone());
        assert!(now.len() <= 100 && now.ends_with(&line(39)), "{now}");
        let one = read(numbered(&path, 1));
        let two = read(numbered(&path, 2));
        assert!(!one.is_empty() && !two.is_empty());
        assert!(!numbered(&path, 3).exists(), "only 2 kept");
        // Whole lines, in order, across the files.
        let all = format!("{two}{one}{now}");
        assert!(all.lines().all(|l| l.len() == 29), "{all}");
        let first: usize = all[5..8].parse().unwrap();
        let expected: String = (first..40).map(line).collect();
        assert_eq!(all, expected);
    }
}
