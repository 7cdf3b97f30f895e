//! The cohort pipeline against the in-memory XNAT: a slow session's planning holds up no
//! other session's transfers, a failing session is reported and the rest complete, and a
//! filter that matches nothing transfers nothing.

use super::*;
use crate::mock::MemoryXnat;
use crate::mock::data::{Dataset, SampleSpec};
use crate::prefetch::destination::Destination;
use crate::prefetch::select::{ScanSelector, Selection};
use crate::prefetch::transfer::Method;
use crate::xnat::{self, Download, Project, RemoteFile, Resource, ResourceRef, Scan, SessionTree};
use async_trait::async_trait;
use std::time::Duration;

/// The sample in memory, where one session's tree is only answered once a file of another
/// session has been downloaded, and another session's listings all fail.
struct Staged {
    inner: MemoryXnat,
    /// Its tree waits for `released`.
    slow: Option<String>,
    /// Its tree and scans fail with a 500.
    failing: Option<String>,
    released: tokio::sync::watch::Sender<bool>,
}

impl Staged {
    fn new(slow: Option<&str>, failing: Option<&str>) -> Staged {
        Staged {
            inner: MemoryXnat::new(Dataset::sample(&SampleSpec {
                dicom_files: 3,
                dicom_size: 1000,
                nifti_size: 2000,
                scans: 3,
            })),
            slow: slow.map(Into::into),
            failing: failing.map(Into::into),
            released: tokio::sync::watch::channel(false).0,
        }
    }

    fn fails(&self, session_id: &str) -> xnat::Result<()> {
        match self.failing.as_deref() == Some(session_id) {
            true => Err(xnat::XnatError::Status {
                status: 500,
                path: format!("/data/experiments/{session_id}"),
                retry_after: None,
                by: None,
            }),
            false => Ok(()),
        }
    }
}

#[async_trait]
impl XnatApi for Staged {
    async fn projects(&self) -> xnat::Result<Vec<Project>> {
        self.inner.projects().await
    }
    async fn sessions(&self, project: &str) -> xnat::Result<Vec<Session>> {
        self.inner.sessions(project).await
    }
    async fn session(&self, project: Option<&str>, name: &str) -> xnat::Result<Session> {
        self.inner.session(project, name).await
    }
    async fn scans(&self, session: &Session) -> xnat::Result<Vec<Scan>> {
        self.fails(&session.id)?;
        self.inner.scans(session).await
    }
    async fn resources(&self, id: &str, scan: Option<&str>) -> xnat::Result<Vec<Resource>> {
        self.inner.resources(id, scan).await
    }
    async fn files(&self, res: &ResourceRef) -> xnat::Result<Vec<RemoteFile>> {
        self.inner.files(res).await
    }
    async fn session_tree(&self, session: &Session) -> xnat::Result<SessionTree> {
        self.fails(&session.id)?;
        if self.slow.as_deref() == Some(session.id.as_str()) {
            let mut released = self.released.subscribe();
            let _ = released.wait_for(|r| *r).await;
        }
        self.inner.session_tree(session).await
    }
    async fn download_range(
        &self,
        uri: &str,
        start: u64,
        end: Option<u64>,
    ) -> xnat::Result<Download> {
        if let Some(slow) = &self.slow
            && !uri.contains(&format!("/{slow}/"))
        {
            self.released.send_replace(true);
        }
        self.inner.download_range(uri, start, end).await
    }
    async fn download_zip(&self, res: &ResourceRef) -> xnat::Result<Download> {
        self.inner.download_zip(res).await
    }
}

const SESSIONS: [&str; 3] = ["XNAT_E00001", "XNAT_E00002", "XNAT_E00003"];

fn options(root: &Path, scans: &str) -> PrefetchOptions {
    PrefetchOptions {
        sessions: Vec::new(),
        project: None,
        default_project: None,
        selection: Selection {
            scans: ScanSelector::parse(scans).unwrap(),
            include: Vec::new(),
            exclude: Vec::new(),
            session_resources: true,
            assessors: false,
            reconstructions: false,
        },
        destination: Destination::Out {
            root: root.to_path_buf(),
            name: None,
        },
        workers: 2,
        method: Method::Files,
        dry_run: false,
        io_timeout: Duration::from_secs(5),
        quiet: true,
        verify: crate::cache::Verify::Md5,
        json: false,
        bids: None,
        shard: None,
    }
}

/// Runs the pipeline over [`SESSIONS`] (bounded in time: a pipeline that waits for every
/// session's plan before transferring never ends here). Returns the outcome and the
/// sessions done.
async fn run(api: Arc<Staged>, opts: &PrefetchOptions) -> (Result<Outcome>, u64) {
    let mut sessions = Vec::new();
    for id in SESSIONS {
        sessions.push((id.to_string(), api.inner.session(None, id).await.unwrap()));
    }
    let tmp = tempfile::tempdir().unwrap();
    let policy = TransferPolicy {
        attempts: 2,
        stall_timeout: opts.io_timeout,
        copies: crate::cache::NewCopies::plain(crate::cache::Verify::Md5),
    };
    let progress = Arc::new(Progress::new(sessions.len() as u64, true));
    let run = prefetch(
        api,
        sessions,
        None,
        opts,
        &policy,
        Arc::new(Breaker::default()),
        progress.clone(),
        tmp.path(),
    );
    let outcome = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("the pipeline finished");
    (outcome, progress.sessions_done())
}

fn files_of(api: &Staged, sessions: &[&str]) -> usize {
    api.inner
        .data()
        .all_files()
        .iter()
        .filter(|(s, ..)| sessions.contains(&s.id.as_str()))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_session_s_planning_holds_up_no_other_session_s_transfers() {
    let api = Arc::new(Staged::new(Some("XNAT_E00001"), None));
    let out = tempfile::tempdir().unwrap();
    let (outcome, done) = run(api.clone(), &options(out.path(), "*")).await;
    let outcome = outcome.unwrap();
    assert_eq!(outcome.planned, 3);
    assert!(outcome.problems.is_empty(), "{:?}", outcome.problems);
    let want = files_of(&api, &SESSIONS) as u64;
    assert_eq!(outcome.report.downloaded_files, want);
    assert_eq!(outcome.totals.files, want);
    assert_eq!(done, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_session_is_reported_and_the_rest_complete() {
    let api = Arc::new(Staged::new(None, Some("XNAT_E00002")));
    let out = tempfile::tempdir().unwrap();
    let (outcome, done) = run(api.clone(), &options(out.path(), "*")).await;
    let outcome = outcome.unwrap();
    let items: Vec<&str> = outcome.problems.iter().map(|p| p.item.as_str()).collect();
    assert_eq!(items, ["/data/experiments/XNAT_E00002/scans"]);
    assert!(outcome.problems[0].why.contains("HTTP 500"));
    let want = files_of(&api, &["XNAT_E00001", "XNAT_E00003"]) as u64;
    assert_eq!(outcome.report.downloaded_files, want);
    assert!(outcome.report.failed.is_empty());
    assert_eq!((outcome.planned, done), (3, 3));
    let dirs: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!dirs.contains(&"XNAT_E00002".to_string()), "{dirs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_that_matches_in_no_session_transfers_nothing() {
    let api = Arc::new(Staged::new(None, None));
    let out = tempfile::tempdir().unwrap();
    let (outcome, _) = run(api.clone(), &options(out.path(), "1,99")).await;
    let e = outcome.unwrap_err().to_string();
    assert!(e.contains("none of the 3 sessions has scan 99"), "{e}");
    assert_eq!(api.inner.body_calls(), 0);
    // Matched in some sessions only: a note, and the rest is fetched.
    let (outcome, _) = run(api.clone(), &options(out.path(), "1-2")).await;
    let outcome = outcome.unwrap();
    assert!(outcome.report.downloaded_files > 0);
    assert!(outcome.report.failed.is_empty());
}
