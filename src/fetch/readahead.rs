//! The readahead window of ranged requests (where the server honours `Range`): it starts
//! small, doubles while a reader goes on in order, and shrinks back on a jump.

/// The smallest and largest window of one ranged request.
pub const MIN_WINDOW: u64 = 1 << 20;
pub const MAX_WINDOW: u64 = 64 << 20;

/// Where the last read of a file ended, and the window that read earned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readahead {
    last_end: u64,
    window: u64,
}

impl Default for Readahead {
    fn default() -> Self {
        Readahead {
            last_end: 0,
            window: MIN_WINDOW,
        }
    }
}

impl Readahead {
    /// The window to ask for now.
    pub fn window(&self) -> u64 {
        self.window
    }

    /// A read of `offset..end` came (`covered`: its bytes were already there). Returns
    /// whether it goes on where the last one ended (a sequential reader): then the window
    /// doubles, up to [`MAX_WINDOW`]; a jump to bytes that are not there resets it to
    /// [`MIN_WINDOW`]; a jump to bytes that are there leaves it as it was.
    pub fn on_read(&mut self, offset: u64, end: u64, covered: bool) -> bool {
        let sequential = offset == self.last_end || (offset < self.last_end && end > self.last_end);
        self.window = if sequential {
            (self.window * 2).min(MAX_WINDOW)
        } else if covered {
            self.window
        } else {
            MIN_WINDOW
        };
        self.last_end = end;
        sequential
    }

    /// A read of `..end` came while the server's handling of ranges is not known or not
    /// honoured: only where it ended is noted.
    pub fn moved_to(&mut self, end: u64) {
        self.last_end = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_while_sequential_up_to_the_cap() {
        let mut r = Readahead::default();
        let mut at = 0;
        for i in 1..=10 {
            assert!(r.on_read(at, at + 4096, false));
            at += 4096;
            assert_eq!(r.window(), (MIN_WINDOW << i).min(MAX_WINDOW));
        }
        assert_eq!(r.window(), MAX_WINDOW);
    }

    #[test]
    fn a_jump_resets_unless_its_bytes_are_there() {
        let mut r = Readahead::default();
        r.on_read(0, 4096, false);
        r.on_read(4096, 8192, false);
        assert_eq!(r.window(), 4 * MIN_WINDOW);
        assert!(!r.on_read(1 << 30, (1 << 30) + 4096, true));
        assert_eq!(
            r.window(),
            4 * MIN_WINDOW,
            "a covered jump keeps the window"
        );
        assert!(!r.on_read(0, 4096, false));
        assert_eq!(r.window(), MIN_WINDOW, "an uncovered jump resets it");
        // A read that overlaps the end of the last one counts as sequential.
        assert!(r.on_read(2048, 8192, false));
        r.moved_to(100);
        assert!(r.on_read(100, 200, false));
    }
}
