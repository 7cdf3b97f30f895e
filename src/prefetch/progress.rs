//! Progress of a prefetch: a bar (files, bytes, rate, ETA) on a terminal, a plain line every few
//! seconds otherwise.

use crate::units::human_bytes;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total_files: u64,
    total_bytes: u64,
    files: AtomicU64,
    bytes: AtomicU64,
    started: Instant,
    last_line: Mutex<Instant>,
    quiet: bool,
}

const PLAIN_EVERY: Duration = Duration::from_secs(5);

impl Progress {
    /// `total_*`: what is to be transferred. `quiet`: no progress output at all.
    pub fn new(total_files: u64, total_bytes: u64, quiet: bool) -> Progress {
        use std::io::IsTerminal;
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(total_bytes);
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
            total_files,
            total_bytes,
            files: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            started: Instant::now(),
            last_line: Mutex::new(Instant::now()),
            quiet,
        }
    }

    pub fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.inc(n);
        } else {
            self.maybe_line();
        }
    }

    pub fn file_done(&self) {
        let done = self.files.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{done}/{} files", self.total_files));
        } else {
            self.maybe_line();
        }
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
        let bytes = self.bytes.load(Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        eprintln!(
            "prefetch: {}/{} files, {}/{}, {:.1} MB/s",
            self.files.load(Ordering::Relaxed),
            self.total_files,
            human_bytes(bytes),
            human_bytes(self.total_bytes),
            bytes as f64 / secs / 1e6
        );
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
