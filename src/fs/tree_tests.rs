//! Unit tests of the directory model and inode table, over the in-memory XNAT.

use super::*;
use crate::fs::inodes::ROOT_INO;
use crate::fs::layout::{ScanNames, session_date};
use crate::mock::MemoryXnat;
use crate::mock::data::Dataset;
use crate::xnat::{RemoteFile, Resource, Scan, file_list, same_or_new};

/// A file three folders down inside a resource.
const DEEP: [&str; 10] = [
    "P",
    "S1",
    "scans",
    "2",
    "resources",
    "DICOM",
    "files",
    "sub",
    "deep",
    "c.dcm",
];

async fn walk(tree: &Tree, path: &[&str]) -> Result<(u64, Node), TreeError> {
    let mut cur = (ROOT_INO, Node::Root);
    for name in path {
        cur = tree.lookup(cur.0, name).await?;
    }
    Ok(cur)
}

async fn names(tree: &Tree, ino: u64) -> Vec<String> {
    let kids = tree.children(ino).await.unwrap();
    kids.iter().map(|(name, _)| name.to_string()).collect()
}

#[tokio::test]
async fn layout_sizes_and_stable_inodes() {
    let fake = Arc::new(MemoryXnat::new(Dataset::tiny()));
    let tree = Tree::new(fake.clone(), Root::Server, Duration::from_secs(60));
    assert_eq!(
        names(&tree, ROOT_INO).await,
        ["P"],
        "the unsafe project name is skipped"
    );
    let (ino, node) = walk(&tree, &DEEP).await.unwrap();
    assert_eq!(node.size(), 30);
    assert!(!node.is_dir());
    let (sub, _) = walk(&tree, &DEEP[..8]).await.unwrap();
    assert_eq!(names(&tree, sub).await, ["b.dcm", "deep", "d.dcm"]);
    let calls = fake.listing_calls();
    // Looking the same path up again hits the listing cache and gives the same inode.
    let again = walk(&tree, &DEEP).await.unwrap();
    assert_eq!(again.0, ino);
    assert_eq!(fake.listing_calls(), calls);
    let session_level = walk(&tree, &["P", "S1", "resources", "DICOM", "files", "a.dcm"])
        .await
        .unwrap();
    assert_eq!(session_level.1.size(), 10);
    assert_ne!(session_level.0, ino);
}

#[tokio::test]
async fn unknown_names_and_files_as_folders() {
    let tree = Tree::new(
        Arc::new(MemoryXnat::new(Dataset::tiny())),
        Root::Project("P".into()),
        Duration::ZERO,
    );
    assert!(matches!(
        walk(&tree, &["nope"]).await,
        Err(TreeError::NotFound)
    ));
    assert!(matches!(
        walk(&tree, &[".."]).await,
        Err(TreeError::NotFound)
    ));
    let (file, _) = walk(&tree, &["S1", "resources", "DICOM", "files", "a.dcm"])
        .await
        .unwrap();
    assert!(matches!(tree.children(file).await, Err(TreeError::NotDir)));
    // With a zero TTL, listings are fetched again, and inodes still do not change.
    let (again, _) = walk(&tree, &["S1", "resources", "DICOM", "files", "a.dcm"])
        .await
        .unwrap();
    assert_eq!(file, again);
}

#[tokio::test]
async fn a_file_that_changed_in_a_fresh_listing_is_told() {
    let api = Arc::new(MemoryXnat::new(Dataset::tiny()));
    let tree = Tree::new(api.clone(), Root::Server, Duration::ZERO);
    let told = Arc::new(Mutex::new(Vec::new()));
    let seen = told.clone();
    tree.on_change(Box::new(move |parent, name, old| {
        seen.lock().unwrap().push((parent, name.to_string(), old))
    }));
    let (ino, _) = walk(&tree, &DEEP).await.unwrap();
    walk(&tree, &DEEP).await.unwrap();
    assert!(told.lock().unwrap().is_empty(), "listed again, unchanged");
    let file = &api.data().projects[0].sessions[0].scans[0].resources[0].files[2];
    assert_eq!(file.path, "sub/deep/c.dcm");
    file.change(crate::mock::data::Body::Memory(vec![b'y'; 30].into()));
    let (again, node) = walk(&tree, &DEEP).await.unwrap();
    assert_eq!(node.size(), 30);
    assert_ne!(again, ino, "another file: another inode");
    let (folder, _) = walk(&tree, &DEEP[..9]).await.unwrap();
    assert_eq!(
        *told.lock().unwrap(),
        [(folder, "c.dcm".to_string(), ino)],
        "the same size, another digest"
    );
    assert!(
        tree.node(ino).is_some(),
        "the old inode stays for its open handles"
    );
}

#[test]
fn session_dates_are_midnight_utc() {
    let day = |d: &str| {
        session_date(d).map(|t| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs())
    };
    assert_eq!(day("1970-01-01"), Some(0));
    assert_eq!(day("2024-03-01"), Some(1_709_251_200));
    assert_eq!(day("2000-02-29"), Some(951_782_400));
    for bad in ["", "2024-13-01", "yesterday", "1969-12-31", "2024-03"] {
        assert_eq!(day(bad), None, "{bad:?}");
    }
}

/// Project `P` of ten sessions `E0`..`E9`, listed in that order, labelled in the reverse
/// order of names (`S9`..`S0`).
fn ten_sessions() -> Dataset {
    let mut data = Dataset::tiny();
    let one = data.projects[0].sessions[0].clone();
    data.projects[0].sessions = (0..10)
        .map(|i| {
            let mut s = (*one).clone();
            s.id = format!("E{i}");
            s.label = format!("S{}", 9 - i);
            Arc::new(s)
        })
        .collect();
    data
}

/// How many session trees were asked for (the in-memory XNAT lists each one's scans once).
fn trees_asked(api: &MemoryXnat) -> usize {
    api.calls("scans")
}

/// Waits (20 s at most: the crawl-ahead works in the background, and a loaded machine may
/// hold it up) until `want` session trees were asked for, then 100 ms more in case more come;
/// returns how many were.
async fn trees_settled(api: &MemoryXnat, want: usize) -> usize {
    let start = std::time::Instant::now();
    while trees_asked(api) < want && start.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    trees_asked(api)
}

#[tokio::test]
async fn crawl_ahead_starts_with_a_walk_and_follows_listing_and_name_order() {
    let api = Arc::new(MemoryXnat::new(ten_sessions()));
    let tree = Tree::new(
        api.clone(),
        Root::Project("P".into()),
        Duration::from_secs(60),
    )
    .with_crawl_ahead(1);
    // One session entered: its tree only (a `cat` deep into one session crawls nothing).
    walk(&tree, &["S9", "scans"]).await.unwrap();
    assert_eq!(trees_settled(&api, 1).await, 1);
    // A second one: a walk. Two ahead in listing order (E2, E3) and in name order (after
    // S8 comes S9, which is E0, fetched already).
    walk(&tree, &["S8", "scans"]).await.unwrap();
    assert_eq!(trees_settled(&api, 4).await, 4);
    // S0 is E9: itself; nothing follows it in listing order; in name order S1 (E8) and S2
    // (E7).
    walk(&tree, &["S0", "scans"]).await.unwrap();
    assert_eq!(trees_settled(&api, 7).await, 7);
    // The folders inside come from the trees, with no more listings.
    let calls = api.listing_calls();
    let scans = walk(&tree, &["S8", "scans"]).await.unwrap().0;
    assert_eq!(names(&tree, scans).await, ["2"]);
    assert_eq!(api.listing_calls(), calls);
}

#[tokio::test]
async fn no_crawl_ahead_when_off() {
    let api = Arc::new(MemoryXnat::new(ten_sessions()));
    let tree = Tree::new(
        api.clone(),
        Root::Project("P".into()),
        Duration::from_secs(60),
    );
    for name in ["S9", "S8", "S7"] {
        walk(&tree, &[name, "scans"]).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(trees_asked(&api), 3);
}

#[tokio::test]
async fn scans_named_by_id_and_type_are_found_by_that_name_and_kept_by_id() {
    let mut data = Dataset::tiny();
    Arc::make_mut(&mut data.projects[0].sessions[0]).scans[0].scan_type = "T1 MPRAGE/sag".into();
    let api = Arc::new(MemoryXnat::new(data));
    let tree = Tree::new(api.clone(), Root::Server, Duration::from_secs(60))
        .with_scan_names(ScanNames::IdType);
    let (scans, _) = walk(&tree, &DEEP[..3]).await.unwrap();
    assert_eq!(names(&tree, scans).await, ["2-T1_MPRAGE_sag"]);
    assert!(matches!(
        walk(&tree, &DEEP[..4]).await,
        Err(TreeError::NotFound)
    ));
    let mut shown = DEEP;
    shown[3] = "2-T1_MPRAGE_sag";
    let (_, node) = walk(&tree, &shown).await.unwrap();
    let Node::File(res, _) = node else {
        panic!("not a file: {node:?}")
    };
    assert_eq!(
        res.scan.as_deref(),
        Some("2"),
        "requests and the cache use the ID"
    );
}

#[test]
fn a_scan_name_that_cannot_be_a_folder_name_falls_back_to_the_id() {
    let scan = |ty: &str| Scan {
        id: "7".into(),
        scan_type: ty.into(),
        series_description: String::new(),
        quality: String::new(),
        xsi_type: String::new(),
    };
    assert_eq!(ScanNames::Id.name(&scan("T1w")), "7");
    assert_eq!(ScanNames::IdType.name(&scan("T1w")), "7-T1w");
    assert_eq!(ScanNames::IdType.name(&scan("")), "7");
    assert_eq!(ScanNames::IdType.name(&scan(&"x".repeat(300))), "7");
}

// What a forgotten folder leaves behind: nothing.

/// Walks `path` from the root, then forgets each inode once, deepest first (as the kernel).
async fn walk_and_forget(tree: &Tree, path: &[&str]) -> Vec<u64> {
    let mut cur = ROOT_INO;
    let mut inos = Vec::new();
    for name in path {
        cur = tree.lookup(cur, name).await.unwrap().0;
        inos.push(cur);
    }
    // Listed, as `ls` would (enters a session: crawl-ahead).
    let _ = tree.children(cur).await;
    for ino in inos.iter().rev() {
        tree.forget(*ino, 1);
    }
    inos
}

/// A project folder the kernel forgot and looked up again five times (drop_caches, then `ls`)
/// is listed anew each time, its sessions under new numbers: what is kept per session
/// folder (its place in its folder's listing, for crawl-ahead) must leave with the listing,
/// not pile up by one listing's worth per cycle.
#[tokio::test]
async fn forgotten_session_folders_leave_no_places_behind() {
    let api = Arc::new(MemoryXnat::new(ten_sessions()));
    let tree = Tree::new(api, Root::Server, Duration::from_secs(60));
    for _ in 0..5 {
        walk_and_forget(&tree, &["P"]).await;
    }
    assert_eq!(tree.inode_count(), 1, "all forgotten");
    assert_eq!(tree.listing_count(), 1, "only the root's listing");
    let places = tree.places.lock().unwrap().len();
    assert!(
        places <= 10,
        "{places} session places kept for 10 sessions in no kept listing"
    );
}

/// Crawl-ahead's record of a walk keeps the listing it was made of: once the project folder
/// is forgotten (its listing dropped from the table), the walk must not keep that listing
/// alive.
#[tokio::test]
async fn a_forgotten_folders_listing_is_not_kept_by_crawl_ahead() {
    let api = Arc::new(MemoryXnat::new(ten_sessions()));
    let tree = Tree::new(api, Root::Server, Duration::from_secs(60)).with_crawl_ahead(1);
    let p = tree.lookup(ROOT_INO, "P").await.unwrap().0;
    let listing = Arc::downgrade(&tree.children(p).await.unwrap());
    // Two sessions entered: a walk of P.
    for s in ["S9", "S8"] {
        let ino = tree.lookup(p, s).await.unwrap().0;
        tree.children(ino).await.unwrap();
        tree.forget(ino, 1);
    }
    tree.forget(p, 1);
    assert_eq!(tree.inode_count(), 1, "all forgotten");
    assert!(
        listing.upgrade().is_none(),
        "the forgotten folder's listing is still alive"
    );
}

/// A session's whole tree (every file of every resource) outlives everything: its folders
/// forgotten by the kernel and listings dropped, and its TTL long past, the tree stays in
/// memory for good (kept until the same session is entered again). For a `find` over a
/// whole server that is every file listing of the server, whatever the kernel forgot.
#[tokio::test(flavor = "multi_thread")]
async fn a_forgotten_sessions_file_lists_are_dropped_once_expired() {
    let ttl = Duration::from_millis(200);
    let api = Arc::new(MemoryXnat::new(ten_sessions()));
    let tree = Tree::new(api, Root::Server, ttl);
    let mut cur = ROOT_INO;
    let mut inos = Vec::new();
    for name in ["P", "S9", "scans", "2", "resources", "DICOM", "files"] {
        cur = tree.lookup(cur, name).await.unwrap().0;
        inos.push(cur);
    }
    let _ = tree.children(cur).await.unwrap();
    let Some(Node::FilesDir(res, _)) = tree.node(cur) else {
        panic!("not a files folder")
    };
    let files = Arc::downgrade(&tree.known_files(&res).unwrap());
    for ino in inos.iter().rev() {
        tree.forget(*ino, 1);
    }
    assert_eq!(tree.inode_count(), 1, "all forgotten");
    tokio::time::sleep(ttl * 3).await;
    // Another session is entered and forgotten meanwhile.
    walk_and_forget(&tree, &["P", "S0", "scans"]).await;
    assert_eq!(tree.inode_count(), 1, "all forgotten");
    assert!(
        files.upgrade().is_none(),
        "the file list of a forgotten, expired session is still in memory"
    );
}

/// A tree over ten sessions with listings kept `ttl`, and a files folder in it listed once:
/// (the API, the tree, the folder's inode, its resource).
async fn a_files_folder_listed(ttl: Duration) -> (Arc<MemoryXnat>, Tree, u64, Arc<ResourceRef>) {
    let api = Arc::new(MemoryXnat::new(ten_sessions()));
    let tree = Tree::new(api.clone(), Root::Server, ttl);
    let (files_dir, node) = walk(&tree, &DEEP[..7]).await.unwrap();
    let _ = tree.children(files_dir).await.unwrap();
    let Node::FilesDir(res, _) = node else {
        panic!("not a files folder")
    };
    (api, tree, files_dir, res)
}

/// A resource's files listed again once the session's tree expired replace the tree's: the
/// expired tree goes at once (two copies of a changed 200,000-file listing otherwise, until
/// the next session is entered).
#[tokio::test(flavor = "multi_thread")]
async fn files_listed_again_leave_no_copy_in_the_expired_tree() {
    let ttl = Duration::from_millis(200);
    let (api, tree, files_dir, res) = a_files_folder_listed(ttl).await;
    let model = Arc::downgrade(&tree.layout.sessions.fresh(&res.session_id).await.unwrap().1);
    tokio::time::sleep(ttl * 2).await;
    let asked = api.calls("files");
    let _ = tree.children(files_dir).await.unwrap();
    assert_eq!(api.calls("files"), asked + 1, "not listed anew");
    assert!(
        model.upgrade().is_none(),
        "the expired tree is still in memory"
    );
}

/// A resource's file list holds its pointers, not the room of the files it was made from.
#[test]
fn a_file_list_is_no_bigger_than_its_pointers() {
    let files: Vec<RemoteFile> = (0..1000)
        .map(|i| RemoteFile::new(format!("f{i}"), 1, None, &format!("/x/f{i}")))
        .collect();
    let list = file_list(files);
    assert_eq!((list.len(), list.capacity()), (1000, 1000));
}

/// A listing fetched again reuses the files held when they are the same, in the same order;
/// anything else is a new list.
#[test]
fn an_unchanged_listing_reuses_the_files_held() {
    let file = |p: &str, size| RemoteFile::new(p.into(), size, None, &format!("/x/files/{p}"));
    let held = file_list(vec![file("a", 1), file("b", 2)]);
    let same = same_or_new(Some(held.clone()), vec![file("a", 1), file("b", 2)]);
    assert!(Arc::ptr_eq(&same, &held));
    for other in [
        vec![file("a", 1), file("b", 3)],
        vec![file("b", 2), file("a", 1)],
        vec![file("a", 1)],
        vec![file("a", 1), file("b", 2), file("c", 3)],
        vec![
            file("a", 1),
            RemoteFile::new("b".into(), 2, None, "/y/files/b"),
        ],
    ] {
        let new = same_or_new(Some(held.clone()), other.clone());
        assert!(!Arc::ptr_eq(&new, &held));
        assert_eq!(*new, other.into_iter().map(Arc::new).collect::<Vec<_>>());
    }
    assert_eq!(same_or_new(None, vec![file("a", 1)]).len(), 1);
}

/// A session's tree fetched again, unchanged, holds the file lists the mount holds already:
/// no second copy of a big resource each time the session folder is listed again.
#[tokio::test(flavor = "multi_thread")]
async fn a_tree_fetched_again_shares_the_files_held() {
    let ttl = Duration::from_millis(200);
    let (api, tree, files_dir, res) = a_files_folder_listed(ttl).await;
    let held = tree.known_files(&res).unwrap();
    let asked = trees_asked(&api);
    tokio::time::sleep(ttl * 2).await;
    // The session folder is listed again (its tree is fetched anew), then the files folder.
    walk(&tree, &DEEP[..7]).await.unwrap();
    let _ = tree.children(files_dir).await.unwrap();
    assert!(trees_asked(&api) > asked, "the tree was not fetched again");
    let now = tree.known_files(&res).unwrap();
    assert!(Arc::ptr_eq(&held, &now), "a second copy of the same files");
}

/// Projects listed by a server whose first answer is slow and old: it lists `OLD`, and comes
/// only once released; every later answer lists `NEW` at once.
struct Racing {
    inner: MemoryXnat,
    calls: std::sync::atomic::AtomicUsize,
    release: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl XnatApi for Racing {
    async fn projects(&self) -> crate::xnat::Result<Vec<crate::xnat::Project>> {
        let first = self.calls.fetch_add(1, Ordering::SeqCst) == 0;
        if first {
            self.release.notified().await;
        }
        let id = if first { "OLD" } else { "NEW" };
        Ok(vec![crate::xnat::Project {
            id: id.into(),
            name: id.into(),
        }])
    }
    async fn sessions(&self, project: &str) -> crate::xnat::Result<Vec<Session>> {
        self.inner.sessions(project).await
    }
    async fn session(&self, project: Option<&str>, id: &str) -> crate::xnat::Result<Session> {
        self.inner.session(project, id).await
    }
    async fn scans(&self, session: &Session) -> crate::xnat::Result<Vec<Scan>> {
        self.inner.scans(session).await
    }
    async fn resources(
        &self,
        session_id: &str,
        scan: Option<&str>,
    ) -> crate::xnat::Result<Vec<Resource>> {
        self.inner.resources(session_id, scan).await
    }
    async fn files(&self, resource: &ResourceRef) -> crate::xnat::Result<Vec<RemoteFile>> {
        self.inner.files(resource).await
    }
    async fn download_range(
        &self,
        uri: &str,
        start: u64,
        end: Option<u64>,
    ) -> crate::xnat::Result<crate::xnat::Download> {
        self.inner.download_range(uri, start, end).await
    }
    async fn download_zip(&self, res: &ResourceRef) -> crate::xnat::Result<crate::xnat::Download> {
        self.inner.download_zip(res).await
    }
}

#[tokio::test]
async fn an_older_listing_that_comes_last_does_not_undo_a_newer_one() {
    let api = Arc::new(Racing {
        inner: MemoryXnat::new(Dataset::tiny()),
        calls: Default::default(),
        release: tokio::sync::Notify::new(),
    });
    // A TTL of zero: every use of the root lists it again.
    let tree = Arc::new(Tree::new(api.clone(), Root::Server, Duration::ZERO));
    let slow = tokio::spawn({
        let tree = tree.clone();
        async move { names(&tree, ROOT_INO).await }
    });
    // The first listing has begun (and waits); a second begins after it and ends first.
    while api.calls.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    assert_eq!(names(&tree, ROOT_INO).await, ["NEW"]);
    let (new, _) = tree.lookup(ROOT_INO, "NEW").await.unwrap();
    api.release.notify_one();
    // The older listing, ending last, is not kept: its caller gets the newer one.
    assert_eq!(slow.await.unwrap(), ["NEW"]);
    let kept = tree.dirs.lock().unwrap()[&ROOT_INO].kids.clone();
    assert_eq!(kept.get("NEW"), Some(new));
    assert_eq!(kept.get("OLD"), None);
}
