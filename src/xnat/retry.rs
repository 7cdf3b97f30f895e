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
//!   attempts, a prefetch transfer ([`crate::prefetch`]) up to [`PREFETCH_BODY_ATTEMPTS`],
//!   both through one rule ([`crate::fetch::BodyRetries`]). Either gives up sooner when
//!   nothing has arrived for its stall timeout.
//! - **Logging in** is one attempt inside the request that needed it, which retries as a whole
//!   (a listing, a body); the check at mount time tries a login the server could not answer
//!   (5xx, no connection) again like a listing. A refused login (wrong password) is never tried
//!   again (XNAT locks an account after repeated failed logins). A session the server refused
//!   is renewed once and the request sent again: that renews the session, not an attempt.
//! - Listings kept on disk ([`super::remembering`]) may answer instead of a server that does
//!   not; they never ask again.
//!
//! - **A request whose connection the server closed before answering** (a keep-alive
//!   connection Tomcat let go while it sat idle in the pool) is sent again at once on another
//!   connection by the client, up to 3 times, below every layer here: that is no attempt.
//! - **Rate limiters** (429, or 503 with `Retry-After`) are waited out as they ask
//!   ([`throttle_wait`]), apart from the attempts: on listings for as long as the listing's
//!   deadline allows, on bodies (a mount's and a prefetch's alike, [`crate::fetch::BodyRetries`])
//!   up to [`crate::fetch::body::THROTTLED_WAITS`] times, the stall clock starting anew after
//!   each wait.
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

/// The longest wait a `Retry-After` is taken for; a longer one is waited this long.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// How long to wait before asking again after `e`, when it is a rate limiter's answer: a
/// 429, or a 503 with `Retry-After` (what it asks, at most [`MAX_RETRY_AFTER`]; a 429 that
/// does not say waits 1, 2, 4, ... 30 s, long enough to outlast a proxy's one-minute
/// window). `waited` is how many such waits came before. `None` for any other failure
/// (retried by [`Attempts`]). The caller bounds the whole by its deadline.
pub fn throttle_wait(e: &super::XnatError, waited: u32) -> Option<Duration> {
    let super::XnatError::Status {
        status,
        retry_after,
        by: None,
        ..
    } = e
    else {
        return None;
    };
    match (status, retry_after) {
        (429 | 503, Some(secs)) => {
            Some(Duration::from_secs(*secs).clamp(Duration::from_millis(200), MAX_RETRY_AFTER))
        }
        (429, None) => Some(Duration::from_secs(1 << waited.min(5)).min(Duration::from_secs(30))),
        _ => None,
    }
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

    #[test]
    fn rate_limiters_are_waited_out_as_they_ask() {
        let status = |status, retry_after| super::super::XnatError::Status {
            status,
            path: "/x".into(),
            retry_after,
            by: None,
        };
        assert_eq!(
            throttle_wait(&status(429, Some(5)), 0),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            throttle_wait(&status(503, Some(600)), 0),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(
            throttle_wait(&status(429, None), 3),
            Some(Duration::from_secs(8))
        );
        assert_eq!(
            throttle_wait(&status(429, None), 9),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            throttle_wait(&status(503, None), 0),
            None,
            "a plain 503 is an attempt"
        );
        assert_eq!(throttle_wait(&status(500, Some(1)), 0), None);
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
