//! When to read a resource's files ahead of a sequential reader (a pure policy; the tasks that
//! fetch are in [`super::series_ahead`]).
//!
//! A sequential tool (`dcm2niix`, `md5sum`, `cp -r`) over a cold DICOM series pays one round
//! trip per file. When a reader opens cold files of one resource one after another, the files
//! after the one it opened are fetched ahead of it, a few at a time, into the cache:
//!
//! - **Started** by the second distinct cold open in a resource within [`SeriesConfig::gap`]
//!   of the open before it: never by a single open (a one-off `head` downloads one file), nor
//!   by listing (`ls`, `find`, `stat` open nothing).
//! - **Widened** while the reader keeps waiting for it: a series fetches
//!   [`SeriesConfig::in_flight`] files at once at first; when its reader opens a file the
//!   read-ahead took but has not finished (the reader caught up and waits on a round trip),
//!   and a whole width of opens has passed since the series started or last widened, the
//!   width doubles, up to [`SeriesConfig::widest`]. A reader slower than the read-ahead
//!   finds its files done and never widens it. (`md5sum` of 200 cold files of 256 KiB at
//!   20 ms per request: 0.65 s at 8 at once, the reader waiting on every round; 0.35 s
//!   widened, about the time of `prefetch` of the series as one ZIP.)
//! - **Bounded**: at most [`SeriesConfig::widest`] files at once over all series, none
//!   while less than half the memory budget (`--max-memory`) is free, and at most
//!   [`SeriesConfig::ahead_files`] files (and [`SeriesConfig::ahead_bytes`] bytes, and a
//!   quarter of the cache's cap) fetched that the reader has not opened yet; a file larger
//!   than the byte window is left to the reader (its transfer, not its round trip, is what it
//!   costs).
//! - **Paused** when the reader stops: no open in the resource for [`SeriesConfig::idle`], or
//!   more than [`SeriesConfig::running_at_most`] series run (the one opened least recently
//!   pauses: its reader moved on). A paused series runs again when its reader opens a file it
//!   fetched ahead; it is forgotten after [`SeriesConfig::forget_after`].
//!
//! Files are taken in the order of the series' listing (path order, see
//! [`super::series_ahead`]) from the one the reader opened last, wrapping round, each at most
//! once (a file that failed is left to the reader). A reader going backwards gains nothing,
//! and its series holds its window until it pauses.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// The tunables of the series read-ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesConfig {
    /// Files fetched at once per series at first (0: no series read-ahead).
    pub in_flight: usize,
    /// Files fetched at once per series once widened as far as it goes, and over all series.
    pub widest: usize,
    /// Files fetched ahead that the reader has not opened yet, per series.
    pub ahead_files: usize,
    /// Bytes of those.
    pub ahead_bytes: u64,
    /// A second cold open this soon after the open before it starts a series.
    pub gap: Duration,
    /// A series pauses after this long without an open in it.
    pub idle: Duration,
    /// Series running at once.
    pub running_at_most: usize,
    /// A series is forgotten after this long without an open in it.
    pub forget_after: Duration,
    /// Series kept at most (running, paused or watched).
    pub kept_at_most: usize,
}

/// A series holds at most this share of the cache's cap ahead of its reader.
pub const CACHE_SHARE: u64 = 4;

/// Default files in flight at first (`--series-readahead`).
pub const DEFAULT_IN_FLIGHT: usize = 8;

/// A series widens to at most this many times its first width.
pub const WIDEN_AT_MOST: usize = 4;

impl Default for SeriesConfig {
    fn default() -> Self {
        SeriesConfig::with_in_flight(DEFAULT_IN_FLIGHT)
    }
}

impl SeriesConfig {
    /// The defaults, with `n` files in flight at first (0: off).
    pub fn with_in_flight(n: usize) -> SeriesConfig {
        SeriesConfig {
            in_flight: n,
            widest: WIDEN_AT_MOST * n,
            ahead_files: (4 * n).max(16),
            ahead_bytes: 256 << 20,
            gap: Duration::from_secs(3),
            idle: Duration::from_secs(3),
            running_at_most: 2,
            forget_after: Duration::from_secs(60),
            kept_at_most: 64,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// One cold open seen: waiting for a second.
    Watching,
    Running,
    Paused,
}

#[derive(Debug)]
struct Series {
    phase: Phase,
    last_open: Instant,
    /// The listing's sizes, in listing order (known once running).
    sizes: Vec<u64>,
    /// Opened by the reader, or taken by the read-ahead (each file is fetched at most once).
    handled: Vec<bool>,
    /// The file the reader opened last.
    position: usize,
    /// Files taken by the read-ahead that the reader has not opened, and their sizes.
    ahead: HashMap<usize, u64>,
    in_flight: usize,
    /// Files this series fetches at once now (see [`SeriesConfig::widest`]).
    width: usize,
    /// Opens in this series, and their count when it started or last widened.
    opens: usize,
    widened_at: usize,
}

impl Series {
    fn watching(now: Instant, index: usize) -> Series {
        Series {
            phase: Phase::Watching,
            last_open: now,
            sizes: Vec::new(),
            handled: Vec::new(),
            position: index,
            ahead: HashMap::new(),
            in_flight: 0,
            width: 0,
            opens: 0,
            widened_at: 0,
        }
    }

    /// The reader opened a file the read-ahead took but has not finished: it waits on a
    /// round trip. Doubles the width if a whole width of opens went by since it last changed.
    fn caught_up(&mut self, widest: usize) {
        if self.opens >= self.widened_at + self.width && self.width < widest {
            self.width = (2 * self.width).min(widest);
            self.widened_at = self.opens;
        }
    }

    fn ahead_bytes(&self) -> u64 {
        self.ahead.values().sum()
    }
}

/// What an open did to its series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// Nothing to fetch because of it.
    Nothing,
    /// The series runs (started, resumed, or the reader moved on): fetch what [`SeriesPolicy::next`] gives.
    Run,
}

/// The series read-ahead's decisions, per resource `K`.
#[derive(Debug)]
pub struct SeriesPolicy<K> {
    config: SeriesConfig,
    series: HashMap<K, Series>,
    in_flight: usize,
}

impl<K: Clone + Eq + Hash> SeriesPolicy<K> {
    pub fn new(config: SeriesConfig) -> Self {
        SeriesPolicy {
            config,
            series: HashMap::new(),
            in_flight: 0,
        }
    }

    pub fn config(&self) -> &SeriesConfig {
        &self.config
    }

    /// The reader opened file `index` of resource `key` (`cold`: it is not in the cache);
    /// `sizes`: the resource's file sizes in listing order, asked for only when a series
    /// starts.
    pub fn opened(
        &mut self,
        key: &K,
        index: usize,
        cold: bool,
        now: Instant,
        sizes: impl FnOnce() -> Vec<u64>,
    ) -> Opened {
        if self.config.in_flight == 0 {
            return Opened::Nothing;
        }
        self.tick(now);
        let gap = self.config.gap;
        let Some(s) = self.series.get_mut(key) else {
            if cold {
                self.keep_at_most(self.config.kept_at_most.saturating_sub(1));
                self.series
                    .insert(key.clone(), Series::watching(now, index));
            }
            return Opened::Nothing;
        };
        let since = now.saturating_duration_since(s.last_open);
        s.last_open = now;
        s.opens += 1;
        let was_ahead = s.ahead.remove(&index).is_some();
        let outcome = match s.phase {
            Phase::Watching => {
                if cold && index != s.position && since <= gap {
                    let sizes = sizes();
                    s.handled = vec![false; sizes.len()];
                    s.sizes = sizes;
                    if let Some(h) = s.handled.get_mut(s.position) {
                        *h = true;
                    }
                    s.phase = Phase::Running;
                    s.width = self.config.in_flight;
                    s.widened_at = s.opens;
                    Opened::Run
                } else {
                    Opened::Nothing
                }
            }
            Phase::Running => Opened::Run,
            Phase::Paused if was_ahead => {
                s.phase = Phase::Running;
                Opened::Run
            }
            Phase::Paused => Opened::Nothing,
        };
        if outcome == Opened::Run && was_ahead && cold {
            s.caught_up(self.config.widest);
        }
        if let Some(h) = s.handled.get_mut(index) {
            *h = true;
        }
        s.position = index;
        if outcome == Opened::Run {
            self.keep_running_at_most(key);
        }
        outcome
    }

    /// The next file to fetch ahead, if any may start now (`memory_room`: the memory budget
    /// has room for one more download; `cache_cap`: the cache's cap, of which a series holds
    /// at most [`CACHE_SHARE`] ahead of its reader, so that it never evicts what it fetched
    /// before the reader gets to it): taken, and counted in flight until [`Self::finished`].
    pub fn next(
        &mut self,
        now: Instant,
        memory_room: bool,
        cache_cap: Option<u64>,
    ) -> Option<(K, usize)> {
        self.tick(now);
        if self.in_flight >= self.config.widest.max(self.config.in_flight) || !memory_room {
            return None;
        }
        let mut config = self.config;
        if let Some(cap) = cache_cap {
            config.ahead_bytes = config.ahead_bytes.min(cap / CACHE_SHARE);
        }
        let mut running: Vec<(&K, &mut Series)> = self
            .series
            .iter_mut()
            .filter(|(_, s)| s.phase == Phase::Running)
            .collect();
        // The series opened most recently first.
        running.sort_by_key(|(_, s)| std::cmp::Reverse(s.last_open));
        for (key, s) in running {
            if s.in_flight >= s.width {
                continue;
            }
            if let Some(index) = Self::candidate(&config, s) {
                s.handled[index] = true;
                s.ahead.insert(index, s.sizes[index]);
                s.in_flight += 1;
                self.in_flight += 1;
                return Some((key.clone(), index));
            }
        }
        None
    }

    /// The first file after the reader's position (wrapping round) not handled yet, if the
    /// series' windows let it start; files too large for the byte window are passed over.
    fn candidate(config: &SeriesConfig, s: &mut Series) -> Option<usize> {
        let n = s.sizes.len();
        if s.ahead.len() >= config.ahead_files {
            return None;
        }
        let ahead_bytes = s.ahead_bytes();
        for step in 1..=n {
            let i = (s.position + step) % n;
            if s.handled[i] {
                continue;
            }
            let size = s.sizes[i];
            if size > config.ahead_bytes {
                s.handled[i] = true; // left to the reader
                continue;
            }
            return (ahead_bytes + size <= config.ahead_bytes).then_some(i);
        }
        None
    }

    /// A fetch that [`Self::next`] gave is over (`fetched`: the file is in the cache now;
    /// otherwise it no longer counts as fetched ahead).
    pub fn finished(&mut self, key: &K, index: usize, fetched: bool) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if let Some(s) = self.series.get_mut(key) {
            s.in_flight = s.in_flight.saturating_sub(1);
            if !fetched {
                s.ahead.remove(&index);
            }
        }
    }

    /// Pauses series whose reader stopped, and forgets those long unused.
    pub fn tick(&mut self, now: Instant) {
        let (idle, forget) = (self.config.idle, self.config.forget_after);
        self.series.retain(|_, s| {
            let since = now.saturating_duration_since(s.last_open);
            if s.phase == Phase::Running && since > idle {
                s.phase = Phase::Paused;
            }
            since <= forget || s.in_flight > 0
        });
    }

    /// Whether resource `key` has a series (watched, running or paused).
    pub fn knows(&self, key: &K) -> bool {
        self.series.contains_key(key)
    }

    /// The file of `key` the reader opened last.
    pub fn position(&self, key: &K) -> Option<usize> {
        self.series.get(key).map(|s| s.position)
    }

    /// Whether any series runs (something may still be fetched ahead).
    pub fn any_running(&self) -> bool {
        self.series.values().any(|s| s.phase == Phase::Running)
    }

    /// Pauses the running series opened least recently while more than allowed run, never
    /// `keep`.
    fn keep_running_at_most(&mut self, keep: &K) {
        loop {
            let running: Vec<(&K, Instant)> = self
                .series
                .iter()
                .filter(|(k, s)| s.phase == Phase::Running && *k != keep)
                .map(|(k, s)| (k, s.last_open))
                .collect();
            if running.len() < self.config.running_at_most.max(1) {
                return;
            }
            let oldest = running.iter().min_by_key(|(_, at)| *at).unwrap().0.clone();
            self.series.get_mut(&oldest).unwrap().phase = Phase::Paused;
        }
    }

    /// Forgets the series opened least recently (with nothing in flight) while more than `n`
    /// are kept.
    fn keep_at_most(&mut self, n: usize) {
        while self.series.len() > n {
            let oldest = self
                .series
                .iter()
                .filter(|(_, s)| s.in_flight == 0)
                .min_by_key(|(_, s)| s.last_open)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => self.series.remove(&k),
                None => return,
            };
        }
    }
}

#[cfg(test)]
#[path = "series_tests.rs"]
mod tests;
