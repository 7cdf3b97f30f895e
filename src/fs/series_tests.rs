//! The series read-ahead through the core, without a mount: started only by a reader who
//! opens cold files of one resource one after another, widened while that reader waits on
//! it, within its windows and the cache's cap, paused when the reader stops, and joined
//! (right bytes, one request a file) by the reader.

use super::inodes::ROOT_INO;
use super::node::Root;
use super::tree::Tree;
use super::{Attr, FsOptions, XnatFs};
use crate::cache::Cache;
use crate::fetch::Fetcher;
use crate::fetch::series::SeriesConfig;
use crate::mock::MemoryXnat;
use crate::mock::data::MockSession;
use crate::mock::data::{Body, Dataset, MockFile, MockProject, MockResource, MockScan};
use crate::xnat::XnatApi;
use crate::xnat::{Download, Project, RemoteFile, Resource, ResourceRef, Result, Scan, Session};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const FILES: usize = 40;
const SIZE: usize = 1000;

/// One session `E1` whose scan `1` holds a DICOM resource of [`FILES`] files of [`SIZE`]
/// bytes, `f00.dcm`, `f01.dcm`, ..., each filled with its own number.
fn series() -> Dataset {
    let files = (0..FILES)
        .map(|i| {
            MockFile::new(
                format!("f{i:02}.dcm"),
                Body::Memory(vec![i as u8; SIZE].into()),
            )
        })
        .collect();
    let session = MockSession {
        id: "E1".into(),
        label: "S1".into(),
        project: "P".into(),
        subject_id: "XNAT_S1".into(),
        subject_label: "S".into(),
        xsi_type: "xnat:mrSessionData".into(),
        date: String::new(),
        scans: vec![MockScan {
            id: "1".into(),
            scan_type: "T1".into(),
            series_description: String::new(),
            quality: String::new(),
            xsi_type: "xnat:mrScanData".into(),
            resources: vec![MockResource {
                id: 11,
                label: "DICOM".into(),
                format: "DICOM".into(),
                content: String::new(),
                files,
            }],
        }],
        resources: vec![],
        assessors: Vec::new(),
    };
    Dataset {
        projects: vec![MockProject {
            id: "P".into(),
            name: "P".into(),
            sessions: vec![Arc::new(session)],
        }],
        shares: Vec::new(),
        configs: Vec::new(),
    }
}

/// [`MemoryXnat`] whose bodies answer after `delay` (a server's round trip).
struct Slow {
    inner: Arc<MemoryXnat>,
    delay: Duration,
    /// Bodies waiting for their answer now, and the most there were at once.
    waiting: AtomicUsize,
    most: AtomicUsize,
}

#[async_trait::async_trait]
impl XnatApi for Slow {
    async fn projects(&self) -> Result<Vec<Project>> {
        self.inner.projects().await
    }
    async fn sessions(&self, project: &str) -> Result<Vec<Session>> {
        self.inner.sessions(project).await
    }
    async fn session(&self, project: Option<&str>, id_or_label: &str) -> Result<Session> {
        self.inner.session(project, id_or_label).await
    }
    async fn scans(&self, session: &Session) -> Result<Vec<Scan>> {
        self.inner.scans(session).await
    }
    async fn resources(&self, session_id: &str, scan: Option<&str>) -> Result<Vec<Resource>> {
        self.inner.resources(session_id, scan).await
    }
    async fn files(&self, resource: &ResourceRef) -> Result<Vec<RemoteFile>> {
        self.inner.files(resource).await
    }
    async fn download_range(&self, uri: &str, start: u64, end: Option<u64>) -> Result<Download> {
        let now = self.waiting.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        self.inner.download_range(uri, start, end).await
    }
    async fn download_zip(&self, resource: &ResourceRef) -> Result<Download> {
        self.inner.download_zip(resource).await
    }
}

struct Setup {
    fs: Arc<XnatFs>,
    api: Arc<MemoryXnat>,
    slow: Arc<Slow>,
    cache: Cache,
    _dir: tempfile::TempDir,
}

fn setup(series: SeriesConfig, delay: Duration, cache_cap: Option<u64>) -> Setup {
    let api = Arc::new(MemoryXnat::new(self::series()));
    let slow = Arc::new(Slow {
        inner: api.clone(),
        delay,
        waiting: AtomicUsize::new(0),
        most: AtomicUsize::new(0),
    });
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), "http://memory").unwrap();
    if let Some(cap) = cache_cap {
        cache.set_limit(cap);
    }
    let tree = Arc::new(Tree::new(
        slow.clone(),
        Root::Server,
        Duration::from_secs(60),
    ));
    let rt = tokio::runtime::Handle::current();
    let fetcher = Fetcher::new(slow.clone(), rt, cache.clone(), Duration::from_secs(5));
    let opts = FsOptions {
        attr_ttl: Duration::from_secs(60),
        io_timeout: Duration::from_secs(5),
        uid: 1,
        gid: 1,
        xattrs: true,
        series,
    };
    Setup {
        fs: XnatFs::new(tree, fetcher, opts),
        api,
        slow,
        cache,
        _dir: dir,
    }
}

/// How long a series waits for its reader before it pauses: shorter than the default, so
/// that a test sees a reader stop, yet long enough that a reader who keeps reading never
/// pauses, nor a read-ahead that is still filling its window, on a loaded machine.
const IDLE: Duration = Duration::from_secs(2);

fn config(in_flight: usize, ahead_files: usize) -> SeriesConfig {
    SeriesConfig {
        ahead_files,
        idle: IDLE,
        ..SeriesConfig::with_in_flight(in_flight)
    }
}

async fn file(fs: &XnatFs, i: usize) -> Attr {
    let mut attr = fs.getattr(ROOT_INO).unwrap();
    let name = format!("f{i:02}.dcm");
    for part in [
        "P",
        "S1",
        "scans",
        "1",
        "resources",
        "DICOM",
        "files",
        &name,
    ] {
        attr = fs.lookup(attr.ino, part).await.unwrap();
    }
    attr
}

/// Opens file `i` as `cat` does, reads it whole and closes it; checks its bytes.
async fn cat(fs: &XnatFs, i: usize) {
    let attr = file(fs, i).await;
    let fh = match fs.open(attr.ino, false, false).unwrap() {
        super::Opened::Served { fh, .. } | super::Opened::Passthrough { fh, .. } => fh,
    };
    let mut got = Vec::new();
    while got.len() < SIZE {
        let at = got.len() as u64;
        let part = match fs.read_now(fh, at, 4096) {
            Some(now) => now.unwrap(),
            None => fs.read(fh, at, 4096).await.unwrap(),
        };
        got.extend(part);
    }
    fs.release(fh);
    assert_eq!(got, vec![i as u8; SIZE], "file {i} has its own bytes");
}

/// Waits until the body requests stop coming (none for 300 ms), and returns their count.
/// For counts the reader's own reads reach; see [`settled_at`] for the read-ahead's.
async fn settled(api: &MemoryXnat) -> usize {
    let mut last = api.body_calls();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = api.body_calls();
        if now == last {
            return now;
        }
        last = now;
    }
}

/// Waits until `want` body requests were made (20 s at most: the read-ahead works in the
/// background, and a loaded machine may hold it up for a while), then as [`settled`]: returns
/// `want`, or more if more came.
async fn settled_at(api: &MemoryXnat, want: usize) -> usize {
    let start = std::time::Instant::now();
    while api.body_calls() < want && start.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    settled(api).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_single_read_or_a_listing_fetches_nothing_more() {
    let s = setup(config(8, 16), Duration::ZERO, None);
    // `ls -l` and `stat` of every file: no body.
    for i in 0..FILES {
        file(&s.fs, i).await;
    }
    assert_eq!(settled(&s.api).await, 0);
    // One `head`: one file.
    cat(&s.fs, 7).await;
    assert_eq!(settled(&s.api).await, 1);
    // The same file again (warm), and a warm open is no sign of a series either.
    cat(&s.fs, 7).await;
    assert_eq!(settled(&s.api).await, 1);
    assert_eq!(s.fs.series_started(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sequential_reader_gets_the_rest_ahead_joining_what_is_in_flight() {
    // Every body takes 50 ms: the reader reaches files still in flight and joins them.
    let s = setup(config(4, 16), Duration::from_millis(50), None);
    for i in 0..FILES {
        cat(&s.fs, i).await;
    }
    assert_eq!(
        settled(&s.api).await,
        FILES,
        "one request a file: reads join the read-ahead's downloads"
    );
    // The first two reads start it; after that the read-ahead fetches what it gets to
    // first. On a loaded machine the reader may overtake it now and then (CI once saw 37
    // of 38), so this asks for most of the files, not all.
    let ahead = s.fs.series_started() as usize;
    assert!(
        (FILES / 2..=FILES - 2).contains(&ahead),
        "{ahead} files came by read-ahead"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reader_waiting_on_the_read_ahead_widens_it_within_its_bound() {
    // Every body takes 100 ms and the reader takes what arrives at once: it keeps waiting on
    // files in flight, so the read-ahead widens from 2 at once, up to 8 (4 x 2).
    let s = setup(config(2, 16), Duration::from_millis(100), None);
    for i in 0..FILES {
        cat(&s.fs, i).await;
    }
    assert_eq!(settled(&s.api).await, FILES, "each file fetched once");
    // Bounds only: how far it widened depends on the machine's pace. The reader's own
    // download of a file the read-ahead did not take may come on top of the 8.
    let most = s.slow.most.load(Ordering::SeqCst);
    assert!((3..=8 + 1).contains(&most), "{most} bodies at once");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_read_ahead_stops_when_the_reader_stops() {
    let s = setup(config(2, 6), Duration::ZERO, None);
    cat(&s.fs, 0).await;
    cat(&s.fs, 1).await;
    // Two read, six ahead of them: then the window is full.
    assert_eq!(settled_at(&s.api, 2 + 6).await, 2 + 6);
    // The reader stops for longer than the idle time, then reads one file elsewhere.
    tokio::time::sleep(IDLE + Duration::from_millis(300)).await;
    cat(&s.fs, 30).await;
    assert_eq!(
        settled(&s.api).await,
        2 + 6 + 1,
        "a paused series stays paused"
    );
    // It comes back to where it was: the read-ahead goes on from there.
    cat(&s.fs, 2).await;
    cat(&s.fs, 3).await;
    assert_eq!(settled_at(&s.api, 2 + 6 + 1 + 2).await, 2 + 6 + 1 + 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_read_ahead_keeps_within_a_quarter_of_the_cache_cap() {
    // A cap of 12 files: 3 files ahead at most (a quarter).
    let s = setup(config(8, 16), Duration::ZERO, Some(12 * SIZE as u64));
    cat(&s.fs, 0).await;
    cat(&s.fs, 1).await;
    assert_eq!(settled_at(&s.api, 2 + 3).await, 2 + 3);
    for i in 2..FILES {
        cat(&s.fs, i).await;
    }
    assert_eq!(settled(&s.api).await, FILES, "nothing fetched twice");
    assert!(s.cache.used() <= 12 * SIZE as u64);
}

#[tokio::test(flavor = "multi_thread")]
async fn off_reads_file_by_file() {
    let s = setup(SeriesConfig::with_in_flight(0), Duration::ZERO, None);
    for i in 0..5 {
        cat(&s.fs, i).await;
    }
    assert_eq!(settled(&s.api).await, 5);
    assert_eq!(s.fs.series_started(), 0);
}
