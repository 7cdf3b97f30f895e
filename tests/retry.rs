//! Attempts never multiply across layers (the rule in `src/xnat/retry.rs`): against the mock
//! server, a listing or a body that always fails is asked for exactly the documented number of
//! times, however many layers sit between the caller and the server.

mod common;

use common::{demo_client, small_sample, start_mock, transfer_one};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use xnatfs::cache::Cache;
use xnatfs::fetch::Fetcher;
use xnatfs::mock::MockServer;
use xnatfs::xnat::retry::{BODY_ATTEMPTS, LISTING_ATTEMPTS, PREFETCH_BODY_ATTEMPTS};
use xnatfs::xnat::{RemoteFile, ResourceRef, XnatApi};

/// How many requests the mock has seen whose path and query contain `part`.
fn asked(mock: &MockServer, part: &str) -> usize {
    mock.state
        .request_log()
        .iter()
        .filter(|r| r.contains(part))
        .count()
}

fn scan_resource() -> ResourceRef {
    small_sample().resource_ref("XNAT_E00001", Some("2"), "DICOM")
}

/// A mock whose file bodies always fail (503) while listings answer, a logged-in client, and
/// the first DICOM file of a scan.
fn failing_bodies(
    rt: &tokio::runtime::Runtime,
) -> (MockServer, Arc<xnatfs::xnat::http::HttpXnat>, RemoteFile) {
    let mock = start_mock(small_sample());
    let api = demo_client(&mock.url());
    let file = rt.block_on(api.files(&scan_resource())).unwrap().remove(0);
    mock.state.controls.files_down.store(true, Ordering::SeqCst);
    (mock, api, file)
}

/// A mock whose next `n` answers are a rate limiter's, each asking for 1 s, a logged-in
/// client, and the first DICOM file of a scan.
fn throttled_bodies(
    rt: &tokio::runtime::Runtime,
    n: u32,
) -> (MockServer, Arc<xnatfs::xnat::http::HttpXnat>, RemoteFile) {
    let mock = start_mock(small_sample());
    let api = demo_client(&mock.url());
    let file = rt.block_on(api.files(&scan_resource())).unwrap().remove(0);
    let c = &mock.state.controls;
    c.retry_after_secs.store(1, Ordering::SeqCst);
    c.throttle_next.store(n, Ordering::SeqCst);
    (mock, api, file)
}

#[test]
fn a_listing_that_always_fails_is_asked_for_exactly_the_documented_times() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mock = start_mock(small_sample());
    let api = demo_client(&mock.url());
    rt.block_on(api.projects()).unwrap(); // logged in
    mock.state.controls.down.store(true, Ordering::SeqCst);
    assert!(rt.block_on(api.sessions("DEMO")).is_err());
    assert_eq!(
        asked(&mock, "/data/projects/DEMO/experiments"),
        LISTING_ATTEMPTS as usize
    );
}

#[test]
fn a_body_read_through_the_mount_core_is_asked_for_exactly_the_documented_times() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (mock, api, file) = failing_bodies(&rt);
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), &mock.url()).unwrap();
    let fetcher = Fetcher::new(api, rt.handle().clone(), cache, Duration::from_secs(30));
    let read = rt.block_on(fetcher.read(&scan_resource(), &file, 0, 4096));
    assert!(read.is_err(), "{read:?}");
    assert_eq!(asked(&mock, &file.uri()), BODY_ATTEMPTS as usize);
}

#[test]
fn a_body_in_a_prefetch_is_asked_for_exactly_the_documented_times() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (mock, api, file) = failing_bodies(&rt);
    let stall = Duration::from_secs(30);
    assert!(!transfer_one(
        &rt,
        api.as_ref(),
        &file,
        PREFETCH_BODY_ATTEMPTS,
        stall
    ));
    assert_eq!(asked(&mock, &file.uri()), PREFETCH_BODY_ATTEMPTS as usize);
}

#[test]
fn a_rate_limiter_is_waited_out_as_it_asks_and_not_counted_as_attempts() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mock = start_mock(small_sample());
    let api = demo_client(&mock.url());
    rt.block_on(api.projects()).unwrap(); // logged in
    let c = &mock.state.controls;
    // More throttled answers than there are attempts, each asking for 1 s.
    c.retry_after_secs.store(1, Ordering::SeqCst);
    c.throttle_next
        .store(LISTING_ATTEMPTS + 1, Ordering::SeqCst);
    let started = std::time::Instant::now();
    let sessions = rt.block_on(api.sessions("DEMO")).unwrap();
    assert!(!sessions.is_empty());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(u64::from(LISTING_ATTEMPTS + 1)),
        "each Retry-After waited: {took:?}"
    );
    assert_eq!(
        asked(&mock, "/data/projects/DEMO/experiments"),
        LISTING_ATTEMPTS as usize + 2
    );
}

#[test]
fn a_rate_limiter_on_file_bodies_is_waited_out_by_prefetch() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    // More throttled answers than a prefetch makes attempts.
    let (mock, api, file) = throttled_bodies(&rt, PREFETCH_BODY_ATTEMPTS + 1);
    let started = std::time::Instant::now();
    assert!(transfer_one(
        &rt,
        api.as_ref(),
        &file,
        PREFETCH_BODY_ATTEMPTS,
        Duration::from_secs(30)
    ));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(u64::from(PREFETCH_BODY_ATTEMPTS + 1)),
        "each Retry-After waited: {took:?}"
    );
    assert_eq!(
        asked(&mock, &file.uri()),
        PREFETCH_BODY_ATTEMPTS as usize + 2
    );
}

#[test]
fn a_rate_limiter_on_file_bodies_is_waited_out_by_a_mount_too() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    // More throttled answers than a mount's download makes attempts.
    let (mock, api, file) = throttled_bodies(&rt, BODY_ATTEMPTS + 1);
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), &mock.url()).unwrap();
    let fetcher = Fetcher::new(api, rt.handle().clone(), cache, Duration::from_secs(30));
    let started = std::time::Instant::now();
    let path = rt.block_on(fetcher.fetch(&scan_resource(), &file)).unwrap();
    let took = started.elapsed();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), file.size);
    assert!(
        took >= Duration::from_secs(u64::from(BODY_ATTEMPTS + 1)),
        "each Retry-After waited: {took:?}"
    );
    assert_eq!(asked(&mock, &file.uri()), BODY_ATTEMPTS as usize + 2);
}

/// A prefetch learns who its session is beside its first listings: when the session dies on a
/// site with guest access (its requests then served as the guest's, who sees nothing), the
/// next listing notices, logs in again once and answers.
#[test]
fn a_session_that_became_the_guests_is_replaced_once_who_it_was_is_known() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let options = xnatfs::mock::MockOptions {
        guest: true,
        ..Default::default()
    };
    let mock = common::start_mock_with(small_sample(), options);
    let api = demo_client(&mock.url());
    rt.block_on(api.learn_identity());
    mock.state.expire_sessions();
    let logins = mock.state.controls.logins.load(Ordering::SeqCst);
    let files = rt.block_on(api.files(&scan_resource())).unwrap();
    assert!(!files.is_empty());
    assert_eq!(
        mock.state.controls.logins.load(Ordering::SeqCst),
        logins + 1,
        "logged in again once"
    );
}

/// A 504 page from a reverse proxy in front of XNAT is an error that names the proxy, never
/// data; XNAT's own 500 names nobody.
#[test]
fn a_proxys_error_page_is_an_error_naming_the_proxy() {
    let mock = start_mock(small_sample());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = demo_client(&mock.url());
    rt.block_on(api.projects()).unwrap();
    let c = &mock.state.controls;
    c.gateway_timeout_next.store(100, Ordering::SeqCst);
    let e = rt.block_on(api.projects()).unwrap_err();
    let said = e.to_string();
    assert!(said.contains("HTTP 504"), "{said}");
    assert!(
        said.contains("answered by nginx/1.24.0, in front of XNAT"),
        "{said}"
    );
    c.gateway_timeout_next.store(0, Ordering::SeqCst);
    c.fail_next.store(100, Ordering::SeqCst);
    let said = rt.block_on(api.projects()).unwrap_err().to_string();
    assert!(
        said.contains("HTTP 500") && !said.contains("answered by"),
        "{said}"
    );
    c.fail_next.store(0, Ordering::SeqCst);
}

/// A wrong password is tried again once its refusal is old (it may have been put right on the
/// server); an expired password or alias token never is, however long the wait: it cannot
/// work again (`xnatfs::xnat::login::is_expiry`).
#[test]
fn an_expired_password_is_never_tried_again_a_wrong_one_is() {
    use xnatfs::xnat::http::{ClientOptions, Credentials, HttpXnat};
    let mock = start_mock(small_sample());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = |password: &str| {
        let creds = Credentials {
            user: Some("demo".into()),
            password: Some(password.into()),
            token: None,
        };
        let options = ClientOptions {
            timeout: Duration::from_secs(10),
            login_retry_after: Duration::from_millis(50),
            ..Default::default()
        };
        HttpXnat::new(&mock.url(), creds, options).unwrap()
    };
    let attempts = || mock.state.controls.login_attempts.load(Ordering::SeqCst);
    let tries = |api: &HttpXnat| {
        let before = attempts();
        for _ in 0..3 {
            assert!(rt.block_on(api.projects()).is_err());
            std::thread::sleep(Duration::from_millis(120));
        }
        attempts() - before
    };
    assert_eq!(
        tries(&client("wrong")),
        3,
        "a wrong password, once a window"
    );
    mock.state
        .controls
        .password_expired
        .store(true, Ordering::SeqCst);
    let expired = client("demo");
    assert_eq!(tries(&expired), 1, "an expired password, once");
    let said = rt.block_on(expired.projects()).unwrap_err().to_string();
    assert!(said.contains("password expired"), "{said}");
}
