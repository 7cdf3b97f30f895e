//! Which bytes of a file being filled are there, and what the server does with `Range`.

use std::sync::atomic::{AtomicU8, Ordering};

/// Byte ranges that are present, kept sorted and merged.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ranges(Vec<(u64, u64)>);

impl Ranges {
    pub fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let (mut s, mut e) = (start, end);
        let mut kept = Vec::with_capacity(self.0.len() + 1);
        for &(a, b) in &self.0 {
            if b < s || a > e {
                kept.push((a, b));
            } else {
                s = s.min(a);
                e = e.max(b);
            }
        }
        kept.push((s, e));
        kept.sort_unstable();
        self.0 = kept;
    }

    /// Whether all of `start..end` is present.
    pub fn contains(&self, start: u64, end: u64) -> bool {
        start >= end || self.0.iter().any(|&(a, b)| a <= start && end <= b)
    }

    /// The end of the present run that holds `pos`, if any.
    pub fn run_end(&self, pos: u64) -> Option<u64> {
        self.0
            .iter()
            .find(|&&(a, b)| a <= pos && pos < b)
            .map(|&(_, b)| b)
    }

    /// The first absent byte at or after `pos`.
    pub fn next_gap(&self, pos: u64) -> u64 {
        self.run_end(pos).unwrap_or(pos)
    }

    /// Where the next present run after `pos` starts (`u64::MAX`: none).
    pub fn next_run_start(&self, pos: u64) -> u64 {
        self.0
            .iter()
            .map(|&(a, _)| a)
            .find(|&a| a > pos)
            .unwrap_or(u64::MAX)
    }

    pub fn total(&self) -> u64 {
        self.0.iter().map(|(a, b)| b - a).sum()
    }
}

/// What the server does with `Range`, learnt from its answers (unknown until then).
#[derive(Debug, Default)]
pub struct RangeSupport(AtomicU8);

const HONOURED: u8 = 1;
const IGNORED: u8 = 2;

impl RangeSupport {
    pub fn honoured(&self) -> Option<bool> {
        match self.0.load(Ordering::Relaxed) {
            HONOURED => Some(true),
            IGNORED => Some(false),
            _ => None,
        }
    }

    pub fn learn(&self, honoured: bool) {
        let now = if honoured { HONOURED } else { IGNORED };
        if self.0.swap(now, Ordering::Relaxed) != now {
            if honoured {
                tracing::info!(
                    "the server answers Range with the bytes asked for: reads far into a file fetch a window around them"
                );
            } else {
                tracing::info!(
                    "the server does not answer Range with the bytes asked for (XNAT's Restlet sends the whole file): files are read from their start"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_answer() {
        let mut r = Ranges::default();
        r.insert(10, 20);
        r.insert(30, 40);
        assert!(r.contains(12, 18) && !r.contains(15, 25) && r.contains(5, 5));
        assert_eq!(r.next_run_start(12), 30);
        r.insert(20, 30);
        assert_eq!(r.0, vec![(10, 40)]);
        r.insert(0, 5);
        r.insert(5, 10);
        assert_eq!(r.0, vec![(0, 40)]);
        assert_eq!(r.next_gap(7), 40);
        assert_eq!(r.next_gap(45), 45);
        assert_eq!(r.next_run_start(45), u64::MAX);
        assert_eq!(r.total(), 40);
    }

    #[test]
    fn range_support_is_learnt() {
        let r = RangeSupport::default();
        assert_eq!(r.honoured(), None);
        r.learn(false);
        assert_eq!(r.honoured(), Some(false));
        r.learn(true);
        assert_eq!(r.honoured(), Some(true));
    }
}
