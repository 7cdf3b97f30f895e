//! The one retry policy of xnatfs, and which layer retries what.
//!
//! Attempts never multiply across layers: each kind of request is retried in exactly one
//! place, and nothing above that place retries it again.
//!
//! - **Listings and documents** (JSON): the client ([`super::http::HttpXnat`]) retries the
//!   whole request, body included, up to [`LISTING_ATTEMPTS`] attempts in all.
//! - **File bodies and ZIPs**: the client makes exactly one attempt per call. The layer that
//!   reads the body retries it, because only it knows where to resume and what it has
//!   verified: a mount's download of a file ([`crate::fetch`]) up to [`BODY_ATTEMPTS`]
//!   attempts, a prefetch transfer ([`crate::prefetch`]) up to [`PREFETCH_BODY_ATTEMPTS`].
//!   Either gives up sooner when nothing has arrived for its stall timeout.
//! - **Logging in** is one attempt inside the request that needed it, which retries as a whole
//!   (a listing, a body); the check at mount time tries a login the server could not answer
//!   (5xx, no connection) again like a listing. A refused login (wrong password) is never tried
//!   again (XNAT locks an account after repeated failed logins). A session the server refused
//!   is renewed once and the request sent again: that renews the session, not an attempt.
//! - Listings kept on disk ([`super::remembering`]) may answer instead of a server that does
//!   not; they never ask again.
//!
//! Only transient failures are tried again ([`super::XnatError::is_transient`]: 5xx, 429,
//! connection failures, timeouts; and, for bodies, a short or corrupt body).

use std::time::Duration;

/// Attempts at a JSON listing or document, in all.
pub const LISTING_ATTEMPTS: u32 = 4;
/// Attempts at a file body read through a mount, in all.
pub const BODY_ATTEMPTS: u32 = 4;
/// Attempts at a file body or ZIP in a prefetch (a batch job: more patient), in all.
pub const PREFETCH_BODY_ATTEMPTS: u32 = 5;

/// A short pause before retry `attempt` (1, 2, ...): exponential, with jitter so that many
/// readers do not retry in step.
pub fn backoff(attempt: u32) -> Duration {
    let base = 200u64 << attempt.min(6);
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()) % (base / 2 + 1))
        .unwrap_or(0);
    Duration::from_millis(base + jitter)
}

/// The attempts of one operation, counted against what it is allowed.
#[derive(Debug)]
pub struct Attempts {
    made: u32,
    allowed: u32,
}

impl Attempts {
    /// The first of at most `allowed` attempts is under way.
    pub fn new(allowed: u32) -> Attempts {
        Attempts {
            made: 1,
            allowed: allowed.max(1),
        }
    }

    /// After a failed attempt: whether to make another. `worth_it` says whether the failure
    /// can go away on its own (and progress is still being made). When it returns true, the
    /// backoff has been waited.
    pub async fn again(&mut self, worth_it: bool) -> bool {
        if !worth_it || self.made >= self.allowed {
            return false;
        }
        tokio::time::sleep(backoff(self.made)).await;
        self.made += 1;
        true
    }

    /// Attempts made so far (the current one included).
    pub fn made(&self) -> u32 {
        self.made
    }

    pub fn allowed(&self) -> u32 {
        self.allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        for attempt in 1..20 {
            let base = 200u64 << attempt.min(6);
            let ms = backoff(attempt).as_millis() as u64;
            assert!((base..=base + base / 2).contains(&ms), "{attempt}: {ms}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_stop_at_the_allowance_or_at_a_lasting_failure() {
        let mut a = Attempts::new(3);
        assert!(a.again(true).await && a.again(true).await);
        assert_eq!(a.made(), 3);
        assert!(!a.again(true).await, "no fourth attempt");
        let mut b = Attempts::new(3);
        assert!(
            !b.again(false).await,
            "a lasting failure is not tried again"
        );
        assert_eq!(b.made(), 1);
    }
}
