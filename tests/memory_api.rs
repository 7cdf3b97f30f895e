//! The in-memory XNAT of the core tests (`xnatfs::mock::MemoryXnat`) answers as the HTTP
//! client does against the mock server: the same listings, bodies, ranges and ZIPs.

use bytes::Bytes;
use futures::TryStreamExt;
use std::sync::atomic::Ordering;
use xnatfs::mock::MemoryXnat;
use xnatfs::mock::data::Dataset;
use xnatfs::mock::data::SampleSpec;
use xnatfs::mock::{MockOptions, MockServer};
use xnatfs::xnat::http::{ClientOptions, Credentials, HttpXnat};
use xnatfs::xnat::{Download, ResourceRef, Result, XnatApi, XnatError};

fn small() -> Dataset {
    Dataset::sample(&SampleSpec {
        dicom_files: 3,
        dicom_size: 1000,
        nifti_size: 200_000,
        scans: 3,
    })
}

async fn bytes_of(d: Download) -> (usize, Vec<u8>) {
    let chunks: Vec<Bytes> = d.body.try_collect().await.unwrap();
    (chunks.len(), chunks.concat())
}

/// What matters of a download: where it starts, whether partial, its length and bytes.
async fn body(d: Result<Download>) -> (u64, bool, Option<u64>, Vec<u8>) {
    let d = d.unwrap();
    let head = (d.start, d.partial, d.content_length);
    (head.0, head.1, head.2, bytes_of(d).await.1)
}

fn nifti() -> ResourceRef {
    small().resource_ref("XNAT_E00001", Some("2"), "NIFTI")
}

#[tokio::test]
async fn sessions_are_listed_and_unknown_ones_not_found() {
    let api = MemoryXnat::new(small());
    let sessions = api.sessions("PILOT").await.unwrap();
    let labels: Vec<_> = sessions.iter().map(|s| s.label.as_str()).collect();
    assert_eq!(labels, ["SUBJ01_MR1", "SUBJ01_EEG1"]);
    let by_label = api.session(Some("PILOT"), "SUBJ01_MR1").await.unwrap();
    assert_eq!(by_label.id, "XNAT_E00003");
    let eeg = api.session(None, "XNAT_E00004").await.unwrap();
    assert_eq!(api.scans(&eeg).await.unwrap().len(), 1);
    let err = |r: Result<_>| matches!(r, Err(XnatError::NotFound(_)));
    assert!(err(api.sessions("NOPE").await.map(drop)));
    assert!(err(api
        .session(Some("DEMO"), "XNAT_E00004")
        .await
        .map(drop)));
    assert!(err(api.session(None, "SUBJ01_MR1").await.map(drop)));
    assert!(err(api.resources("XNAT_E09999", None).await.map(drop)));
    assert_eq!((api.calls("sessions"), api.calls("session")), (2, 4));
    assert_eq!((api.listing_calls(), api.body_calls()), (8, 0));
}

/// A shared session is listed in the project it is shared into under its label there, its
/// `project` still the one that owns it (xnat-web `ProjSubExptList.java`), and is found there
/// by that label; found by it, it keeps that label.
#[tokio::test]
async fn a_shared_session_is_listed_and_found_under_its_label_in_that_project() {
    let mut data = small();
    data.share("XNAT_E00001", "PILOT", "PILOT_SUBJ01");
    let api = MemoryXnat::new(data);
    let sessions = api.sessions("PILOT").await.unwrap();
    let shared = sessions.iter().find(|s| s.id == "XNAT_E00001").unwrap();
    assert_eq!(
        (shared.label.as_str(), shared.project.as_str()),
        ("PILOT_SUBJ01", "DEMO")
    );
    let found = xnatfs::xnat::find_session(&api, Some("PILOT"), "PILOT_SUBJ01")
        .await
        .unwrap();
    assert_eq!(
        (found.id.as_str(), found.label.as_str()),
        ("XNAT_E00001", "PILOT_SUBJ01")
    );
    let by_id = xnatfs::xnat::find_session(&api, Some("PILOT"), "XNAT_E00001")
        .await
        .unwrap();
    assert_eq!(by_id.label, "SUBJ01_MR1");
    assert!(matches!(
        api.session(Some("PILOT"), "SUBJ02_MR1").await,
        Err(XnatError::NotFound(_))
    ));
}

#[tokio::test]
async fn bodies_match_the_data_set_whole_and_in_ranges() {
    let api = MemoryXnat::new(small());
    let files = api.files(&nifti()).await.unwrap();
    let mock = &api.data().session("XNAT_E00001").unwrap().scans[1].resources[1].files[0];
    assert_eq!(
        files[0].digest.map(|d| d.hex()),
        Some(mock.md5().to_string())
    );
    assert_eq!(files[0].size, 200_000);
    let whole = api.download(&files[0].uri()).await.unwrap();
    assert_eq!(
        (whole.partial, whole.content_length),
        (false, Some(200_000))
    );
    let (chunks, bytes) = bytes_of(whole).await;
    assert_eq!(chunks, 4);
    assert_eq!(bytes, mock.read_at(0, 200_000).unwrap());
    use md5::Digest;
    assert_eq!(hex::encode(md5::Md5::digest(&bytes)), mock.md5());
    let part = api
        .download_range(&files[0].uri(), 70_000, Some(70_100))
        .await
        .unwrap();
    assert_eq!((part.partial, part.start), (true, 70_000));
    assert_eq!(bytes_of(part).await.1, mock.read_at(70_000, 100).unwrap());
    let zip = bytes_of(api.download_zip(&nifti()).await.unwrap()).await.1;
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).unwrap();
    let entry = archive.by_index(0).unwrap();
    assert_eq!(
        entry.name().unwrap(),
        "SUBJ01_MR1/scans/2-T1w/resources/NIFTI/files/T1w.nii.gz"
    );
    assert_eq!(entry.size(), 200_000);
    let gone = api
        .download("/data/experiments/XNAT_E00001/resources/QC/files/x")
        .await;
    assert!(matches!(gone, Err(XnatError::NotFound(_))));
    assert_eq!(
        (api.calls("download_range"), api.calls("download_zip")),
        (3, 1)
    );
}

#[tokio::test]
async fn failures_on_request_and_every_call_counted() {
    let api = MemoryXnat::new(small());
    let uri = api.files(&nifti()).await.unwrap()[0].uri().into_owned();
    let down = XnatError::Status {
        status: 503,
        path: uri.clone(),
        retry_after: None,
        by: None,
    };
    api.fail_bodies(Some(down));
    assert!(matches!(
        api.download(&uri).await,
        Err(XnatError::Status { status: 503, .. })
    ));
    assert!(api.files(&nifti()).await.is_ok());
    api.fail_listings(Some(XnatError::Timeout("listing".into())));
    assert!(matches!(api.projects().await, Err(XnatError::Timeout(_))));
    api.fail_bodies(None);
    api.fail_listings(None);
    assert!(api.download(&uri).await.is_ok());
    api.forget_files(&nifti());
    assert_eq!((api.listing_calls(), api.body_calls()), (3, 2));
    assert_eq!(api.calls("forget_files"), 1);
}

/// Every listing, and the bodies, as the HTTP client gets them from the mock server.
#[test]
fn answers_as_the_http_client_does_against_the_mock_server() {
    let localhost = "127.0.0.1:0".parse().unwrap();
    let server = MockServer::start(localhost, small(), MockOptions::default()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // As a caching proxy would, like MemoryXnat.
    server
        .state
        .controls
        .set_range(xnatfs::mock::RangeMode::Honour);
    rt.block_on(same_answers(&server.url()));
}

async fn same_answers(url: &str) {
    let creds = Credentials {
        user: Some("demo".into()),
        password: Some("demo".into()),
        token: None,
    };
    let http = HttpXnat::new(url, creds, ClientOptions::default()).unwrap();
    let mem = MemoryXnat::new(small());
    assert_eq!(
        http.projects().await.unwrap(),
        mem.projects().await.unwrap()
    );
    for p in mem.projects().await.unwrap() {
        let sessions = mem.sessions(&p.id).await.unwrap();
        assert_eq!(http.sessions(&p.id).await.unwrap(), sessions);
        for s in sessions {
            let (a, b) = (
                http.session(Some(&p.id), &s.label),
                mem.session(Some(&p.id), &s.label),
            );
            assert_eq!(a.await.unwrap(), b.await.unwrap());
            let (a, b) = (http.session(None, &s.id), mem.session(None, &s.id));
            assert_eq!(a.await.unwrap(), b.await.unwrap());
            let scans = mem.scans(&s).await.unwrap();
            assert_eq!(http.scans(&s).await.unwrap(), scans);
            let mut scan_ids: Vec<Option<String>> =
                scans.into_iter().map(|sc| Some(sc.id)).collect();
            scan_ids.push(None);
            for scan in scan_ids {
                let resources = mem.resources(&s.id, scan.as_deref()).await.unwrap();
                assert_eq!(
                    http.resources(&s.id, scan.as_deref()).await.unwrap(),
                    resources
                );
                for r in resources {
                    let rr = ResourceRef::of(&s.id, scan.as_deref(), &r);
                    let files = mem.files(&rr).await.unwrap();
                    assert_eq!(http.files(&rr).await.unwrap(), files);
                    let uri = &*files[0].uri();
                    let (a, b) = (http.download(uri), mem.download(uri));
                    assert_eq!(body(a.await).await, body(b.await).await);
                    let (a, b) = (
                        http.download_range(uri, 3, None),
                        mem.download_range(uri, 3, None),
                    );
                    assert_eq!(body(a.await).await, body(b.await).await);
                    let (a, b) = (http.download_zip(&rr), mem.download_zip(&rr));
                    assert_eq!(body(a.await).await, body(b.await).await);
                }
            }
        }
    }
}

/// A session's whole tree from the HTTP client (the session document and `files?all=true`,
/// two requests) is the tree the in-memory XNAT gives listing by listing, for every session
/// of the sample: hostile names left out, empty resources kept.
#[test]
fn whole_session_trees_match_listing_by_listing() {
    let data = small();
    let localhost = "127.0.0.1:0".parse().unwrap();
    let server = MockServer::start(localhost, data.clone(), MockOptions::default()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(same_trees(&server, data));
}

async fn same_trees(server: &MockServer, data: Dataset) {
    let creds = Credentials {
        user: Some("demo".into()),
        password: Some("demo".into()),
        token: None,
    };
    let http = HttpXnat::new(&server.url(), creds, ClientOptions::default()).unwrap();
    let memory = MemoryXnat::new(data.clone());
    for project in &data.projects {
        for s in http.sessions(&project.id).await.unwrap() {
            let before = server.state.controls.listings.load(Ordering::SeqCst);
            let whole = http.session_tree(&s).await.unwrap();
            let asked = server.state.controls.listings.load(Ordering::SeqCst) - before;
            // A session with assessors or reconstructions: their listings, then each one's
            // resources and their files, listing by listing.
            let session = data.session(&s.id).unwrap();
            let assessors: usize = session
                .assessors
                .iter()
                .map(|a| 1 + a.resources.len())
                .sum();
            // One listing for each kind of derived data the session has (assessors,
            // reconstructions).
            let mut kinds: Vec<_> = session.assessors.iter().map(|a| a.kind).collect();
            kinds.dedup();
            let extra = kinds.len() + assessors;
            assert_eq!(asked, 2 + extra as u64, "{}", s.id);
            assert_eq!(whole, memory.session_tree(&s).await.unwrap(), "{}", s.id);
        }
    }
}
