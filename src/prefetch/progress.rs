//! Progress of a prefetch: a one-line bar (bytes, rate, time left, files, sessions done of
//! total) on a terminal, never wider than 80 columns (nor than the terminal), a plain line every
//! few seconds otherwise. Sessions are planned while others transfer, so what is to be
//! transferred grows as sessions are planned. Sizes and rates in the one unit system xnatfs
//! prints everywhere (MiB, MiB/s: [`crate::units`]).

use crate::units::{human_bytes, human_rate};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    counts: Arc<Counts>,
    started: Instant,
    last_line: Mutex<Instant>,
    quiet: bool,
}

/// What the bar and the plain line tell, shared with the bar's drawing.
#[derive(Default)]
struct Counts {
    total_sessions: u64,
    sessions_done: AtomicU64,
    /// What is to be transferred, of the sessions planned so far.
    planned_files: AtomicU64,
    planned_bytes: AtomicU64,
    files: AtomicU64,
    bytes: AtomicU64,
}

const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// The widest the bar's line gets.
pub const MAX_WIDTH: usize = 80;

/// The bar itself is at least this wide, at most [`MAX_WIDTH`] less the text beside it.
const MIN_BAR: usize = 10;

/// What one line of progress says.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    pub bytes: u64,
    pub total_bytes: u64,
    pub files: u64,
    pub total_files: u64,
    pub sessions: u64,
    pub total_sessions: u64,
    pub bytes_per_sec: f64,
    /// Time left, when it can be told.
    pub eta: Option<Duration>,
}

/// `1h02m`, `3m05s`, `42s`.
fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// The text beside the bar: `1.2 GiB/4.0 GiB 85.3 MiB/s 32s 12/40 files` (and `3/10 sess.`
/// when there is more than one session).
fn stats(s: &Snapshot) -> String {
    let eta = s.eta.map(short_duration).unwrap_or_else(|| "-".into());
    let sessions = match s.total_sessions {
        0 | 1 => String::new(),
        n => format!(" {}/{n} sess.", s.sessions),
    };
    format!(
        "{}/{} {} {eta} {}/{} files{sessions}",
        human_bytes(s.bytes),
        human_bytes(s.total_bytes),
        human_rate(s.bytes_per_sec),
        s.files,
        s.total_files
    )
}

/// The whole line, at most `width` columns: `[=====>    ] ` and [`stats`] (the bar goes
/// first when there is not room for both).
pub fn line(s: &Snapshot, width: usize) -> String {
    let text = stats(s);
    let room = width.saturating_sub(text.chars().count() + 3);
    if room < MIN_BAR {
        return text.chars().take(width).collect();
    }
    let fraction = match s.total_bytes {
        0 => 1.0,
        t => (s.bytes as f64 / t as f64).clamp(0.0, 1.0),
    };
    let filled = ((room as f64) * fraction) as usize;
    let mut bar = "=".repeat(filled);
    if filled < room {
        bar.push('>');
        bar.push_str(&" ".repeat(room - filled - 1));
    }
    format!("[{bar}] {text}")
}

/// The terminal's width on stderr, if it is one.
fn terminal_width() -> Option<usize> {
    // SAFETY: TIOCGWINSZ fills a winsize; fd 2 is ours to ask.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(2, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_col > 0).then_some(usize::from(ws.ws_col))
}

impl Progress {
    /// `total_sessions`: the sessions of the run. `quiet`: no progress output at all.
    pub fn new(total_sessions: u64, quiet: bool) -> Progress {
        use std::io::IsTerminal;
        let counts = Arc::new(Counts {
            total_sessions,
            ..Counts::default()
        });
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(0);
            let c = counts.clone();
            let width = terminal_width().unwrap_or(MAX_WIDTH).min(MAX_WIDTH);
            let style = indicatif::ProgressStyle::with_template("{line}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .with_key(
                    "line",
                    move |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let snapshot = Snapshot {
                            bytes: state.pos(),
                            total_bytes: state.len().unwrap_or(0),
                            files: c.files.load(Ordering::Relaxed),
                            total_files: c.planned_files.load(Ordering::Relaxed),
                            sessions: c.sessions_done.load(Ordering::Relaxed),
                            total_sessions: c.total_sessions,
                            bytes_per_sec: state.per_sec(),
                            eta: (state.pos() > 0).then(|| state.eta()),
                        };
                        let _ = w.write_str(&line(&snapshot, width));
                    },
                );
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress {
            bar,
            counts,
            started: Instant::now(),
            last_line: Mutex::new(Instant::now()),
            quiet,
        }
    }

    /// A session was planned: `files` of `bytes` are to be transferred for it.
    pub fn planned(&self, files: u64, bytes: u64) {
        self.counts
            .planned_files
            .fetch_add(files, Ordering::Relaxed);
        self.counts
            .planned_bytes
            .fetch_add(bytes, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.inc_length(bytes);
        }
    }

    pub fn add_bytes(&self, n: u64) {
        self.counts.bytes.fetch_add(n, Ordering::Relaxed);
        match &self.bar {
            Some(bar) => bar.inc(n),
            None => self.maybe_line(),
        }
    }

    /// `n` bytes counted by [`Self::add_bytes`] did not make a file (an attempt that failed
    /// and was tried again, or given up on): the bytes done stay within what was planned.
    pub fn take_back(&self, n: u64) {
        let _ = self
            .counts
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(n))
            });
        if let Some(bar) = &self.bar {
            bar.dec(n);
        }
    }

    pub fn file_done(&self) {
        self.counts.files.fetch_add(1, Ordering::Relaxed);
        if self.bar.is_none() {
            self.maybe_line();
        }
    }

    /// Every file of a session was transferred, found present or given up on.
    pub fn session_done(&self) {
        self.counts.sessions_done.fetch_add(1, Ordering::Relaxed);
        if self.bar.is_none() {
            self.maybe_line();
        }
    }

    /// Sessions done so far.
    pub fn sessions_done(&self) -> u64 {
        self.counts.sessions_done.load(Ordering::Relaxed)
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
        let c = &self.counts;
        let bytes = c.bytes.load(Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        format!(
            "prefetch: {}/{} sessions done, {}/{} files, {}/{}, {}",
            c.sessions_done.load(Ordering::Relaxed),
            c.total_sessions,
            c.files.load(Ordering::Relaxed),
            c.planned_files.load(Ordering::Relaxed),
            human_bytes(bytes),
            human_bytes(c.planned_bytes.load(Ordering::Relaxed)),
            human_rate(bytes as f64 / secs)
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
    fn the_line_fits_80_columns_whatever_the_numbers() {
        let big = Snapshot {
            bytes: 1023 << 40,
            total_bytes: u64::MAX,
            files: 9_999_999,
            total_files: 10_000_000,
            sessions: 99_999,
            total_sessions: 100_000,
            bytes_per_sec: 1023.9 * 1024.0 * 1024.0,
            eta: Some(Duration::from_secs(1_000_000)),
        };
        let small = Snapshot {
            bytes: 0,
            total_bytes: 0,
            files: 0,
            total_files: 1,
            sessions: 0,
            total_sessions: 1,
            bytes_per_sec: 0.0,
            eta: None,
        };
        let mid = Snapshot {
            bytes: 600 << 20,
            total_bytes: 1200 << 20,
            files: 3,
            total_files: 10,
            sessions: 0,
            total_sessions: 1,
            bytes_per_sec: 85.3 * 1024.0 * 1024.0,
            eta: Some(Duration::from_secs(65)),
        };
        for s in [big, small, mid] {
            for width in [80, 60, 40, 20] {
                let l = line(&s, width);
                assert!(l.chars().count() <= width, "{width}: {l:?}");
            }
        }
        let l = line(&mid, 80);
        assert_eq!(l.chars().count(), 80, "{l}");
        assert!(
            l.ends_with("] 600.0 MiB/1.2 GiB 85.3 MiB/s 1m05s 3/10 files"),
            "{l}"
        );
        assert!(l.starts_with("[=========="), "{l}");
        assert!(!l.contains("MB"), "one unit system: {l}");
    }

    #[test]
    fn the_line_tells_sessions_done_of_total_and_what_was_planned() {
        let p = Progress::new(3, true);
        p.planned(2, 2000);
        p.add_bytes(1500);
        p.take_back(500); // an attempt that failed
        p.file_done();
        p.session_done();
        let line = p.line();
        assert!(
            line.starts_with("prefetch: 1/3 sessions done, 1/2 files, "),
            "{line}"
        );
    }
}
