//! Every wait for the server is bounded: a server that sends a byte now and then (it never
//! quite stalls) fails a listing, a mount's read and a prefetch's transfer in bounded time.

mod common;

use common::{demo_client, small_sample, start_mock, transfer_one};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use xnatfs::cache::Cache;
use xnatfs::fetch::Fetcher;
use xnatfs::mock::MockServer;
use xnatfs::xnat::http::{ClientOptions, Credentials, HttpXnat};
use xnatfs::xnat::{RemoteFile, ResourceRef, XnatApi, XnatError};

const STALL: Duration = Duration::from_secs(2);

/// How long a failure may take: the stall timeout, and as much again twice for a loaded
/// machine. Far below the 20 s the whole drip would take, which is what the bound guards.
const LIMIT: Duration = STALL.saturating_mul(3);

fn dicom() -> ResourceRef {
    small_sample().resource_ref("XNAT_E00001", Some("2"), "DICOM")
}

/// A mock that drips every answer at 50 bytes a second from now on, and a file of it.
fn dripping(rt: &tokio::runtime::Runtime) -> (MockServer, Arc<HttpXnat>, RemoteFile) {
    let mock = start_mock(small_sample());
    let api = demo_client(&mock.url());
    let file = rt.block_on(api.files(&dicom())).unwrap().remove(0);
    assert!(file.size > 1000, "dripping it whole would take over 20 s");
    mock.state.controls.drip_ms.store(20, Ordering::SeqCst);
    (mock, api, file)
}

#[test]
fn a_dripping_listing_ends_at_its_deadline() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mock = start_mock(small_sample());
    let options = ClientOptions {
        listing_attempts: 1,
        listing_deadline: STALL,
        ..Default::default()
    };
    let creds = Credentials {
        user: Some("demo".into()),
        password: Some("demo".into()),
        token: None,
    };
    let api = HttpXnat::new(&mock.url(), creds, options).unwrap();
    rt.block_on(api.projects()).unwrap();
    mock.state.controls.drip_ms.store(20, Ordering::SeqCst);
    let started = Instant::now();
    let listed = rt.block_on(api.sessions("DEMO"));
    assert!(matches!(listed, Err(XnatError::Timeout(_))), "{listed:?}");
    let took = started.elapsed();
    assert!(took < LIMIT, "took {took:?}");
}

#[test]
fn a_dripping_body_fails_a_mount_read_within_the_stall_timeout() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (mock, api, file) = dripping(&rt);
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), &mock.url()).unwrap();
    let fetcher = Fetcher::new(api, rt.handle().clone(), cache, STALL);
    let started = Instant::now();
    let read = rt.block_on(fetcher.read(&dicom(), &file, 0, 4096));
    assert!(read.is_err(), "{read:?}");
    let took = started.elapsed();
    assert!(took < LIMIT, "took {took:?}");
}

#[test]
fn a_dripping_body_fails_a_prefetch_transfer_within_the_stall_timeout() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (_mock, api, file) = dripping(&rt);
    let started = Instant::now();
    assert!(!transfer_one(&rt, api.as_ref(), &file, 5, STALL));
    let took = started.elapsed();
    assert!(took < LIMIT, "took {took:?}");
}
