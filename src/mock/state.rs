//! What the mock server knows and can be told while it runs: its fixed options, the
//! controls tests flip (faults, latency, quirks), its counters and request log.

use super::data::Dataset;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Settings fixed when the server starts.
#[derive(Debug, Clone)]
pub struct MockOptions {
    pub user: String,
    pub password: String,
    /// Idle time after which a JSESSION expires (XNAT: 15 minutes).
    pub token_ttl: Duration,
    /// Answer an expired session with 200 and the HTML login page instead of 401.
    pub login_page_on_expiry: bool,
    /// The path XNAT is served under (`/xnat`; empty: the root). Outside it, Tomcat's 404;
    /// the root redirects into it, and the context's root to the login page.
    pub context_path: String,
    /// The site allows guest access: a request with no live session is served as the guest
    /// user, who sees no (private) data, instead of being refused with 401.
    pub guest: bool,
    /// Failed logins in a row that lock the account (XNAT: `maxFailedLogins`, 20; 0: never).
    pub max_failed_logins: u32,
    /// How long a locked account stays locked (XNAT: `maxFailedLoginsLockoutDuration`, 1 hour).
    pub lockout: Duration,
}

impl Default for MockOptions {
    fn default() -> Self {
        MockOptions {
            user: "demo".into(),
            password: "demo".into(),
            token_ttl: Duration::from_secs(15 * 60),
            login_page_on_expiry: false,
            context_path: String::new(),
            guest: false,
            max_failed_logins: 20,
            lockout: Duration::from_secs(3600),
        }
    }
}

/// Knobs tests turn while the server runs, and what it counted.
#[derive(Debug, Default)]
pub struct Controls {
    /// Added before every answer.
    pub latency_ms: AtomicU64,
    /// How file bodies answer `Range` (see [`RangeMode`]; set with [`Controls::set_range`]).
    range: AtomicU8,
    /// The next N requests fail with 500.
    pub fail_next: AtomicU32,
    /// The next N requests are answered 504 by a reverse proxy in front (its HTML page, with
    /// `Server: nginx/...`), as when XNAT is too slow for the proxy's timeout.
    pub gateway_timeout_next: AtomicU32,
    /// The next N requests are answered 200 with a front's own web page (a maintenance page
    /// of nginx in front of XNAT, `Server: nginx/...`), not XNAT's answer.
    pub proxy_page_next: AtomicU32,
    /// The next N file bodies stop halfway (the connection closes early).
    pub truncate_next: AtomicU32,
    /// File bodies never start (the server stalls) while set.
    pub stall_files: AtomicBool,
    /// Pause between chunks (256 KiB) of a file body, in milliseconds: a slow link.
    pub chunk_delay_ms: AtomicU64,
    /// Every answer after the login (listings and bodies) is sent one byte at a time, one
    /// byte every this many milliseconds, while set (0: off): a server that never quite stalls.
    pub drip_ms: AtomicU64,
    /// File body bytes sent.
    pub bytes_sent: Arc<AtomicU64>,
    /// Every request: 503 while set.
    pub down: AtomicBool,
    /// File bodies (and ZIPs): 503 while set; listings still answer.
    pub files_down: AtomicBool,
    /// ZIPs come DEFLATED, with sizes in data descriptors, whatever `compression` asks (a
    /// server that ignores it: not XNAT's default, see `zip_download`).
    pub zip_deflated: AtomicBool,
    /// The next N requests are refused with 429 and `Retry-After: retry_after_secs`, as a
    /// rate-limiting proxy in front of XNAT does.
    pub throttle_next: AtomicU32,
    pub retry_after_secs: AtomicU64,
    /// A keep-alive connection idle this long (milliseconds; 0: never) is closed by the
    /// server when the next request comes over it, unanswered (see `connections`).
    pub close_idle_ms: AtomicU64,
    /// Connections closed so.
    pub idle_closes: AtomicU64,
    /// Such closes are resets (RST), not an orderly end (FIN).
    pub close_with_reset: AtomicBool,
    /// Answers on one connection after which the server closes it, saying `Connection:
    /// close` on the last (Tomcat's `maxKeepAliveRequests`, 100; 0: never): see
    /// `connections::answered`.
    pub max_keepalive_requests: AtomicU64,
    /// Connections ended so.
    pub keepalive_closes: AtomicU64,
    /// The user's local password has expired (XNAT: `passwordExpirationInterval`, a year by
    /// default): see `auth::expired_login`.
    pub password_expired: AtomicBool,
    /// Login attempts refused (a wrong password, or a locked account).
    pub failed_logins: AtomicU64,
    /// Logins tried with a user name and password (Basic auth at `/data/JSESSION`), whatever
    /// came of them.
    pub login_attempts: AtomicU64,
    /// Percentage of requests (chosen pseudo-randomly, but the same each run) that go wrong:
    /// a third stall 2 s, the rest fail with a 500 or (file bodies, half the time) stop short.
    pub fault_percent: AtomicU32,
    pub requests: AtomicU64,
    pub logins: AtomicU64,
    /// File bodies sent (GET of a file URI with status 200 or 206).
    pub file_gets: AtomicU64,
    /// Of them, NIfTI images (`.nii`, `.nii.gz`): what a BIDS index must not fetch.
    pub image_gets: AtomicU64,
    /// JSON listings and documents answered.
    pub listings: AtomicU64,
    /// A session's files listing ignores `all=true` while set, listing only the session's own
    /// resources' files (as a server whose `all` does not reach there would).
    pub files_all_ignored: AtomicBool,
    /// Each resource's `file_count` and `file_size` (in resources listings and the session
    /// document) are off while set: XNAT lists the stats it keeps for a catalog, refreshed
    /// only when asked (`cache_file_stats=true`), so files changed behind its back leave them
    /// stale. xnat-web `org/nrg/xnat/restlet/resources/files/CatalogResourceList.java`
    /// (`represent`: the table from `CatalogUtils.populateTable`).
    pub stale_file_stats: AtomicBool,
    /// Resources (by numeric ID) whose catalog XNAT cannot read: see
    /// [`Controls::make_catalog_unreadable`].
    unreadable_catalogs: Mutex<std::collections::HashSet<u64>>,
    /// JSON listings and documents being answered now (latency included).
    pub listings_in_flight: AtomicU64,
    /// The most JSON listings and documents that were in flight at once.
    pub listings_max_in_flight: AtomicU64,
}

/// How the server answers a `Range` request for a file body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RangeMode {
    /// As production XNAT does: its `/data` runs on Restlet 1.1.10, whose `RangeFilter`
    /// answers 206 with the asked `Content-Range` but sends the whole file from byte 0, with
    /// the whole file's `Content-Length` (`com.noelios.restlet.application.RangeRepresentation`
    /// overrides only `getStream()`, and the connector calls the wrapped `write()`).
    #[default]
    Restlet,
    /// 206 and exactly the asked bytes, as a caching proxy in front of XNAT would.
    Honour,
    /// 200 and the whole body, as a proxy that strips `Range` would.
    Ignore,
    /// As [`RangeMode::Restlet`], sent chunked: no `Content-Length` (a front that re-chunks
    /// what it passes on), so only the body's length would tell it is the whole file.
    RestletChunked,
    /// 206 and honestly labelled bytes that start before the asked start (at the 64 KiB block
    /// below it), as a block-caching front may answer: another range than the one asked.
    Aligned,
}

impl Controls {
    /// The catalog of resource `id` can no longer be read (corrupt, or locked for more than
    /// 2 minutes): its files listing, its ZIP, its files' bodies and every listing or ZIP that
    /// includes it (`files?all=true`, `scans/ALL/files`) answer 404 with an empty body, as
    /// XNAT's do (xnat-web `org/nrg/xnat/utils/CatalogUtils.java`; `files/FileList.java`,
    /// `handleSingleCatalog`, catching the `ServerException`).
    pub fn make_catalog_unreadable(&self, id: u64) {
        self.unreadable_catalogs.lock().unwrap().insert(id);
    }

    /// Whether any of these resources has a catalog XNAT cannot read.
    pub fn catalog_unreadable<'a>(
        &self,
        mut resources: impl Iterator<Item = &'a super::data::MockResource>,
    ) -> bool {
        let unreadable = self.unreadable_catalogs.lock().unwrap();
        !unreadable.is_empty() && resources.any(|r| unreadable.contains(&r.id))
    }

    pub fn set_range(&self, mode: RangeMode) {
        self.range.store(mode as u8, Ordering::SeqCst);
    }

    pub fn range(&self) -> RangeMode {
        match self.range.load(Ordering::SeqCst) {
            1 => RangeMode::Honour,
            2 => RangeMode::Ignore,
            3 => RangeMode::RestletChunked,
            4 => RangeMode::Aligned,
            _ => RangeMode::Restlet,
        }
    }
}

pub struct MockState {
    pub data: Dataset,
    pub options: MockOptions,
    pub controls: Controls,
    pub(super) tokens: Mutex<HashMap<String, Instant>>,
    pub(super) log: Mutex<Vec<String>>,
    pub(super) next_token: AtomicU64,
    /// The password the server accepts now (it starts as `options.password`).
    pub(super) password: Mutex<String>,
    /// Failed logins in a row, and until when the account is locked.
    pub(super) lock: Mutex<(u32, Option<Instant>)>,
    /// Alias tokens issued and not expired: alias to secret (see `auth::issue_alias_token`).
    pub(super) alias_tokens: Mutex<HashMap<String, String>>,
}

impl MockState {
    pub fn new(data: Dataset, options: MockOptions) -> Arc<MockState> {
        Arc::new(MockState {
            data,
            controls: Controls::default(),
            tokens: Mutex::new(HashMap::new()),
            log: Mutex::new(Vec::new()),
            next_token: AtomicU64::new(1),
            password: Mutex::new(options.password.clone()),
            lock: Mutex::new((0, None)),
            alias_tokens: Mutex::new(HashMap::new()),
            options,
        })
    }

    /// Changes the user's password while the server runs (sessions already open stay open).
    pub fn set_password(&self, password: &str) {
        *self.password.lock().unwrap() = password.to_string();
    }

    /// Whether the account is locked now.
    pub fn locked(&self) -> bool {
        matches!(self.lock.lock().unwrap().1, Some(until) if Instant::now() < until)
    }

    /// Every request so far, as `METHOD /path?query`.
    pub fn request_log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Every alias token issued so far expires (XNAT: `aliasTokenTimeout`, 2 days).
    pub fn expire_alias_tokens(&self) {
        self.alias_tokens.lock().unwrap().clear();
    }

    /// Ends every JSESSION, as an idle timeout would.
    pub fn expire_sessions(&self) {
        self.tokens.lock().unwrap().clear();
    }

    pub fn file_gets(&self) -> u64 {
        self.controls.file_gets.load(Ordering::SeqCst)
    }
}

/// A number mixed from `n`, for faults and logins that must look random but repeat.
pub(super) fn data_seed(n: u64) -> u64 {
    n.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17)
}
