//! Progress of a prefetch: a bar (bytes, rate, ETA, sessions done of total, files) on a
//! terminal, a plain line every few seconds otherwise. Sessions are planned while others
//! transfer, so what is to be transferred grows as sessions are planned.

use crate::units::human_bytes;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total_sessions: u64,
    sessions_done: AtomicU64,
    /// What is to be transferred, of the sessions planned so far.
    planned_files: AtomicU64,
    planned_bytes: AtomicU64,
    files: AtomicU64,
    bytes: AtomicU64,
    started: Instant,
    last_line: Mutex<Instant>,
    quiet: bool,
}

const PLAIN_EVERY: Duration = Duration::from_secs(5);

impl Progress {
    /// `total_sessions`: the sessions of the run. `quiet`: no progress output at all.
    pub fn new(total_sessions: u64, quiet: bool) -> Progress {
        use std::io::IsTerminal;
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress {
            bar,
            total_sessions,
            sessions_done: AtomicU64::new(0),
            planned_files: AtomicU64::new(0),
            planned_bytes: AtomicU64::new(0),
            files: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            started: Instant::now(),
            last_line: Mutex::new(Instant::now()),
            quiet,
        }
    }

    /// A session was planned: `files` of `bytes` are to be transferred for it.
    pub fn planned(&self, files: u64, bytes: u64) {
        self.planned_files.fetch_add(files, Ordering::Relaxed);
        self.planned_bytes.fetch_add(bytes, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.inc_length(bytes);
            self.set_message(bar);
        }
    }

    pub fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
        match &self.bar {
            Some(bar) => bar.inc(n),
            None => self.maybe_line(),
        }
    }

    pub fn file_done(&self) {
        self.files.fetch_add(1, Ordering::Relaxed);
        match &self.bar {
            Some(bar) => self.set_message(bar),
            None => self.maybe_line(),
        }
    }

    /// Every file of a session was transferred, found present or given up on.
    pub fn session_done(&self) {
        self.sessions_done.fetch_add(1, Ordering::Relaxed);
        match &self.bar {
            Some(bar) => self.set_message(bar),
            None => self.maybe_line(),
        }
    }

    /// Sessions done so far.
    pub fn sessions_done(&self) -> u64 {
        self.sessions_done.load(Ordering::Relaxed)
    }

    fn set_message(&self, bar: &indicatif::ProgressBar) {
        bar.set_message(format!(
            "{}/{} sessions, {}/{} files",
            self.sessions_done.load(Ordering::Relaxed),
            self.total_sessions,
            self.files.load(Ordering::Relaxed),
            self.planned_files.load(Ordering::Relaxed),
        ));
    }

    /// Prints a message without breaking the bar.
    pub fn println(&self, msg: &str) {
        match &self.bar {
            Some(bar) => bar.println(msg),
            None => eprintln!("{msg}"),
        }
    }

    fn maybe_line(&self) {
        if self.quiet {
            return;
        }
        let mut last = self.last_line.lock().unwrap();
        if last.elapsed() < PLAIN_EVERY {
            return;
        }
        *last = Instant::now();
        eprintln!("{}", self.line());
    }

    /// The plain progress line.
    pub fn line(&self) -> String {
        let bytes = self.bytes.load(Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        format!(
            "prefetch: {}/{} sessions done, {}/{} files, {}/{}, {:.1} MB/s",
            self.sessions_done.load(Ordering::Relaxed),
            self.total_sessions,
            self.files.load(Ordering::Relaxed),
            self.planned_files.load(Ordering::Relaxed),
            human_bytes(bytes),
            human_bytes(self.planned_bytes.load(Ordering::Relaxed)),
            bytes as f64 / secs / 1e6
        )
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_tells_sessions_done_of_total_and_what_was_planned() {
        let p = Progress::new(3, true);
        p.planned(2, 2000);
        p.add_bytes(1000);
        p.file_done();
        p.session_done();
        let line = p.line();
        assert!(
            line.starts_with("prefetch: 1/3 sessions done, 1/2 files, "),
            "{line}"
        );
    }
}
