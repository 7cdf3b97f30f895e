//! The filesystem core without a mount: lookups and listings over the in-memory XNAT, opens
//! (passthrough or served, pinned in the cache or not), reads and releases, and the errno of
//! each failure.

use super::inodes::ROOT_INO;
use super::node::Root;
use super::tree::Tree;
use super::{Attr, Errno, FsOptions, Opened, XnatFs};
use crate::cache::Cache;
use crate::fetch::Fetcher;
use crate::mock::MemoryXnat;
use crate::mock::data::Dataset;
use crate::xnat::XnatError;
use std::sync::Arc;
use std::time::Duration;

pub(super) struct Setup {
    pub fs: Arc<XnatFs>,
    pub(super) api: Arc<MemoryXnat>,
    cache: Cache,
    _dir: tempfile::TempDir,
}

/// The core over [`Dataset::tiny`] with its own cache; listings kept for `ttl`.
pub(super) fn setup(ttl: Duration) -> Setup {
    setup_with(Dataset::tiny(), ttl)
}

/// The core over `data`.
fn setup_with(data: Dataset, ttl: Duration) -> Setup {
    setup_rooted(data, Root::Server, ttl, None)
}

/// The core over `data`, its root showing `root` (a BIDS view naming scans by `map`).
pub(super) fn setup_rooted(
    data: Dataset,
    root: Root,
    ttl: Duration,
    map: Option<crate::bids::bidsmap::BidsMap>,
) -> Setup {
    let api = Arc::new(MemoryXnat::new(data));
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), "http://memory").unwrap();
    let rt = tokio::runtime::Handle::current();
    let fetcher = Fetcher::new(api.clone(), rt, cache.clone(), Duration::from_secs(5));
    let tree = Tree::new(api.clone(), root, ttl).with_bids("http://memory", fetcher.clone(), map);
    let tree = Arc::new(tree);
    let opts = FsOptions {
        attr_ttl: ttl,
        io_timeout: Duration::from_secs(5),
        uid: 1234,
        gid: 5678,
        xattrs: true,
        series: Default::default(),
    };
    Setup {
        fs: XnatFs::new(tree, fetcher, opts),
        api,
        cache,
        _dir: dir,
    }
}

pub(super) const FILE: &str = "P/S1/scans/2/resources/DICOM/files/sub/deep/c.dcm";

pub(super) async fn walk(fs: &XnatFs, path: &str) -> Result<Attr, Errno> {
    let mut attr = fs.getattr(ROOT_INO)?;
    for name in path.split('/') {
        attr = fs.lookup(attr.ino, name).await?;
    }
    Ok(attr)
}

/// Reads a whole open file through the core, waiting where needed.
pub(super) async fn read_all(fs: &XnatFs, fh: u64, size: u64) -> Result<Vec<u8>, Errno> {
    let mut out = Vec::new();
    while (out.len() as u64) < size {
        let at = out.len() as u64;
        let got = match fs.read_now(fh, at, 7) {
            Some(now) => now?,
            None => fs.read(fh, at, 7).await?,
        };
        assert!(!got.is_empty(), "a read before the end is never empty");
        out.extend(got);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread")]
async fn lookup_walks_the_layout_with_sizes_and_read_only_modes() {
    let s = setup(Duration::from_secs(60));
    let file = walk(&s.fs, FILE).await.unwrap();
    assert!(!file.is_dir);
    assert_eq!(
        (file.size, file.perm, file.uid, file.gid),
        (30, 0o444, 1234, 5678)
    );
    let folder = walk(&s.fs, "P/S1/resources/DICOM/files/sub").await.unwrap();
    assert!(folder.is_dir && folder.perm == 0o555);
    assert_eq!(s.fs.getattr(file.ino).unwrap(), file);
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_and_unsafe_names_are_enoent() {
    let s = setup(Duration::from_secs(60));
    for bad in ["nope", "..", ".", "a/b", "", "P/S1/nope"] {
        assert_eq!(walk(&s.fs, bad).await, Err(Errno::NOENT), "{bad:?}");
    }
    assert_eq!(s.fs.getattr(999_999), Err(Errno::NOENT));
    assert_eq!(s.fs.access(999_999, false), Err(Errno::NOENT));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_listing_gives_the_errno_of_its_failure() {
    let cases = [
        (XnatError::Timeout("slow".into()), Errno::TIMEDOUT),
        (XnatError::Forbidden("/data/projects".into()), Errno::ACCES),
        (XnatError::NotFound("/data/projects".into()), Errno::NOENT),
        (XnatError::Auth("refused".into()), Errno::ACCES),
    ];
    for (err, want) in cases {
        let s = setup(Duration::ZERO);
        s.api.fail_listings(Some(err));
        assert_eq!(walk(&s.fs, "P").await, Err(want));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn readdir_gives_dots_then_entries_listed_once_per_open() {
    let s = setup(Duration::ZERO);
    let sub = walk(&s.fs, "P/S1/scans/2/resources/DICOM/files/sub")
        .await
        .unwrap();
    let fh = s.fs.opendir(sub.ino).unwrap();
    assert_eq!(
        s.fs.listed(fh),
        Ok(None),
        "nothing listed before the first read"
    );
    let kids = s.fs.list(fh, sub.ino).await.unwrap();
    let calls = s.api.listing_calls();
    let names = |offset| -> Vec<(u64, String, bool)> {
        s.fs.entries(sub.ino, &kids, offset)
            .map(|(next, name, attr, _)| (next, name.to_string(), attr.is_dir))
            .collect()
    };
    let all = names(0);
    let want = [
        (1, ".", true),
        (2, "..", true),
        (3, "b.dcm", false),
        (4, "deep", true),
        (5, "d.dcm", false),
    ];
    assert_eq!(all.len(), want.len());
    for ((next, name, dir), (wn, wname, wdir)) in all.iter().zip(want) {
        assert_eq!((*next, name.as_str(), *dir), (wn, wname, wdir));
    }
    // A listing read in several calls resumes where it stopped, from the same snapshot.
    assert_eq!(names(3), all[3..].to_vec());
    // From any offset, within the dots, within the entries, and past the end.
    for offset in 0..=all.len() + 2 {
        let want = all.get(offset..).unwrap_or_default().to_vec();
        assert_eq!(names(offset as u64), want, "from offset {offset}");
    }
    assert!(s.fs.listed(fh).unwrap().is_some());
    s.fs.list(fh, sub.ino).await.unwrap();
    assert_eq!(
        s.api.listing_calls(),
        calls,
        "an open folder is listed once"
    );
    s.fs.releasedir(fh);
    assert_eq!(s.fs.listed(fh), Err(Errno::BADF));
}

#[tokio::test(flavor = "multi_thread")]
async fn files_and_folders_refuse_the_other_kinds_operations() {
    let s = setup(Duration::from_secs(60));
    let file = walk(&s.fs, FILE).await.unwrap();
    let folder = walk(&s.fs, "P/S1").await.unwrap();
    assert_eq!(s.fs.opendir(file.ino), Err(Errno::NOTDIR));
    assert_eq!(s.fs.open(folder.ino, false, true), Err(Errno::ISDIR));
    assert_eq!(
        s.fs.open(file.ino, true, true),
        Err(Errno::ROFS),
        "writes are refused"
    );
    assert_eq!(s.fs.access(file.ino, true), Err(Errno::ROFS));
    assert_eq!(s.fs.access(file.ino, false), Ok(()));
    assert_eq!(s.fs.read(777, 0, 10).await, Err(Errno::BADF));
    assert_eq!(s.fs.read_now(777, 0, 10), Some(Err(Errno::BADF)));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cold_open_is_served_reads_the_right_bytes_and_pins_the_copy_once_complete() {
    let s = setup(Duration::from_secs(60));
    let file = walk(&s.fs, FILE).await.unwrap();
    let Ok(Opened::Served { fh, keep_cache, .. }) = s.fs.open(file.ino, false, true) else {
        panic!("a file not in the cache is served by us, whatever passthrough allows");
    };
    assert!(
        !keep_cache,
        "pages of an unverified download are not kept past a close"
    );
    assert_eq!(read_all(&s.fs, fh, 30).await.unwrap(), vec![b'x'; 30]);
    assert_eq!(
        s.fs.read(fh, 30, 10).await.unwrap(),
        b"",
        "nothing past the end"
    );
    let cached = s
        .cache
        .area()
        .data()
        .join("E1/scans/2/resources/DICOM/files/sub/deep/c.dcm");
    assert!(cached.is_file(), "the whole file went into the cache");
    // Read from the cache once complete, and kept from eviction while open, as a file found
    // there at open is (an evicted copy's space stayed taken until the close).
    assert_eq!(s.fs.read_now(fh, 0, 4), Some(Ok(vec![b'x'; 4])));
    assert!(s.cache.is_pinned(&cached), "pinned while open");
    s.fs.release(fh);
    assert!(!s.cache.is_pinned(&cached), "and let go when released");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cached_file_opens_for_passthrough_pinned_until_released() {
    let s = setup(Duration::from_secs(60));
    let file = walk(&s.fs, FILE).await.unwrap();
    let Ok(Opened::Served { fh, .. }) = s.fs.open(file.ino, false, true) else {
        panic!()
    };
    read_all(&s.fs, fh, 30).await.unwrap();
    s.fs.release(fh);
    let bodies = s.api.body_calls();
    let Ok(Opened::Passthrough { fh, path }) = s.fs.open(file.ino, false, true) else {
        panic!("a complete cache file goes to the kernel when passthrough is allowed");
    };
    assert_eq!(std::fs::read(&path).unwrap(), vec![b'x'; 30]);
    assert!(s.cache.is_pinned(&path), "kept from eviction while open");
    s.fs.release(fh);
    assert!(!s.cache.is_pinned(&path), "and let go when released");
    assert_eq!(s.api.body_calls(), bodies);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_passthrough_a_cached_file_is_read_from_the_cache_at_once() {
    let s = setup(Duration::from_secs(60));
    let file = walk(&s.fs, FILE).await.unwrap();
    let Ok(Opened::Served { fh, .. }) = s.fs.open(file.ino, false, false) else {
        panic!()
    };
    read_all(&s.fs, fh, 30).await.unwrap();
    s.fs.release(fh);
    let bodies = s.api.body_calls();
    let Ok(Opened::Served { fh, keep_cache, .. }) = s.fs.open(file.ino, false, false) else {
        panic!("no passthrough asked for: served");
    };
    assert!(keep_cache, "a verified copy's pages may be kept");
    let path = s
        .cache
        .area()
        .data()
        .join("E1/scans/2/resources/DICOM/files/sub/deep/c.dcm");
    assert!(
        s.cache.is_pinned(&path),
        "the cache file is pinned while open"
    );
    assert_eq!(
        s.fs.read_now(fh, 5, 100),
        Some(Ok(vec![b'x'; 25])),
        "no wait"
    );
    s.fs.release(fh);
    assert!(!s.cache.is_pinned(&path));
    assert_eq!(s.api.body_calls(), bodies, "no request for a cached file");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_gone_from_the_server_is_enoent_and_its_listing_is_asked_again() {
    let s = setup(Duration::from_secs(60));
    let file = walk(&s.fs, FILE).await.unwrap();
    let Ok(Opened::Served { fh, .. }) = s.fs.open(file.ino, false, true) else {
        panic!()
    };
    s.api.fail_bodies(Some(XnatError::NotFound(FILE.into())));
    assert_eq!(s.fs.read(fh, 0, 10).await, Err(Errno::NOENT));
    let files_listed = s.api.calls("files");
    walk(&s.fs, FILE).await.unwrap();
    assert_eq!(
        s.api.calls("files"),
        files_listed + 1,
        "the resource is listed again"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_body_is_eacces_after_one_request() {
    let s = setup(Duration::from_secs(60));
    let file = walk(&s.fs, FILE).await.unwrap();
    let Ok(Opened::Served { fh, .. }) = s.fs.open(file.ino, false, true) else {
        panic!()
    };
    s.api.fail_bodies(Some(XnatError::Forbidden(FILE.into())));
    assert_eq!(s.fs.read(fh, 0, 10).await, Err(Errno::ACCES));
    assert_eq!(
        s.api.body_calls(),
        1,
        "a lasting failure is not tried again"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn opens_of_one_inode_never_mix_passthrough_and_page_cached_handles() {
    let s = setup(Duration::from_secs(60));
    let file = walk(&s.fs, FILE).await.unwrap();
    let Ok(Opened::Served { fh: first, .. }) = s.fs.open(file.ino, false, true) else {
        panic!()
    };
    read_all(&s.fs, first, 30).await.unwrap();
    // Complete in the cache now, but a page-cached handle is open: no passthrough beside it.
    let Ok(Opened::Served { fh: second, .. }) = s.fs.open(file.ino, false, true) else {
        panic!("a passthrough open beside a page-cached one fails with EIO in the kernel");
    };
    s.fs.release(first);
    s.fs.release(second);
    let Ok(Opened::Passthrough { fh: third, path }) = s.fs.open(file.ino, false, true) else {
        panic!("once nothing is open, a cached file goes to the kernel");
    };
    // The cache copy goes (evicted, cleared): opens beside the passthrough one stay
    // passthrough, sharing its backing file, and pin nothing.
    std::fs::remove_file(&path).unwrap();
    let Ok(Opened::Passthrough { fh: fourth, .. }) = s.fs.open(file.ino, false, true) else {
        panic!("a page-cached open beside a passthrough one fails with EIO in the kernel");
    };
    s.fs.release(third);
    s.fs.release(fourth);
    assert!(!s.cache.is_pinned(&path));
    let Ok(Opened::Served { fh, .. }) = s.fs.open(file.ino, false, true) else {
        panic!("nothing open and nothing cached: served");
    };
    assert_eq!(read_all(&s.fs, fh, 30).await.unwrap(), vec![b'x'; 30]);
    s.fs.release(fh);
}

#[tokio::test(flavor = "multi_thread")]
async fn times_are_the_session_date() {
    let mut data = Dataset::tiny();
    std::sync::Arc::make_mut(&mut data.projects[0].sessions[0]).date = "2024-03-01".into();
    let s = setup_with(data, Duration::from_secs(60));
    let day = std::time::UNIX_EPOCH + Duration::from_secs(1_709_251_200);
    assert_eq!(walk(&s.fs, FILE).await.unwrap().time, day);
    assert_eq!(walk(&s.fs, "P/S1").await.unwrap().time, day);
}

/// The core over [`Dataset::tiny`] with one more file, `big.bin`, of 5 MiB (over the size
/// verified before any byte is served), whose server now sends other bytes of the same size
/// than its listed MD5's: the setup, the file, its inode's attributes and its right body.
async fn with_a_bad_big_file() -> (
    Setup,
    Arc<crate::mock::data::MockFile>,
    Attr,
    crate::mock::data::Body,
) {
    use crate::mock::data::{Body, MockFile};
    let mut data = Dataset::tiny();
    let size = 5u64 << 20;
    let big = MockFile::new(
        "big.bin",
        Body::Generated {
            seed: 7,
            size,
            prefix: Default::default(),
        },
    );
    let session = std::sync::Arc::make_mut(&mut data.projects[0].sessions[0]);
    session.resources[0].files.push(big.clone());
    let s = setup_with(data, Duration::from_secs(60));
    let file = walk(&s.fs, "P/S1/resources/DICOM/files/big.bin")
        .await
        .unwrap();
    let good = big.body.clone();
    big.change(Body::Memory(vec![0u8; size as usize].into()));
    (s, big, file, good)
}

/// A body refused while no read waits for it (the download ran on to the end alone): the
/// handles it served bytes to fail from then on all the same, though a fresh download would
/// now give other bytes (the field test's file changed on the server mid-download).
#[tokio::test(flavor = "multi_thread")]
async fn a_body_refused_while_no_read_waits_still_fails_the_handles_open_on_it() {
    let (s, big, file, good) = with_a_bad_big_file().await;
    let Ok(Opened::Served { fh, .. }) = s.fs.open(file.ino, false, false) else {
        panic!()
    };
    let (res, remote) = match s.fs.handles.lock().unwrap().get(&fh) {
        Some(super::Handle::File(f)) => (f.res.clone(), f.file.clone()),
        _ => panic!("an open file"),
    };
    // The start is served as it arrives; the rest is fetched with no read of the mount's
    // waiting (as the series read-ahead, or a prefetch into the mount's cache, fetches).
    assert_eq!(s.fs.read(fh, 0, 4096).await.unwrap(), vec![0u8; 4096]);
    let whole = s.fs.fetcher.fetch(&res, &remote).await;
    assert!(matches!(whole, Err(crate::fetch::FetchError::Verify(_))));
    // It was refused (its MD5); the server has the right bytes again.
    big.change(good);
    assert_eq!(s.fs.read(fh, 2 << 20, 4096).await, Err(Errno::IO));
    assert_eq!(s.fs.read_now(fh, 0, 10), Some(Err(Errno::IO)));
    s.fs.release(fh);
    let Ok(Opened::Served { fh, .. }) = s.fs.open(file.ino, false, false) else {
        panic!()
    };
    let got = s.fs.read(fh, 2 << 20, 4096).await.unwrap();
    assert!(
        got == big.read_at(2 << 20, 4096).unwrap(),
        "a new open reads anew"
    );
    s.fs.release(fh);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_handle_open_when_a_bad_body_was_served_fails_every_later_read() {
    let (s, big, file, good) = with_a_bad_big_file().await;
    let size = big.size();
    let Ok(Opened::Served { fh, .. }) = s.fs.open(file.ino, false, false) else {
        panic!()
    };
    // Another handle of the same file, open throughout: it shares the kernel's pages.
    let Ok(Opened::Served { fh: other, .. }) = s.fs.open(file.ino, false, false) else {
        panic!()
    };
    // A whole-file reader: bytes before the end are served as they arrive (they cannot be
    // taken back); the read that reaches the end waits for the check, and fails.
    let step = 1u32 << 20;
    let mut at = 0;
    let mut failed_at = None;
    while at < size {
        match s.fs.read(fh, at, step).await {
            Ok(got) => at += got.len() as u64,
            Err(e) => {
                failed_at = Some((at, e));
                break;
            }
        }
    }
    assert_eq!(failed_at, Some((size - u64::from(step), Errno::IO)));
    // The server sends the right bytes again; a fresh download would verify: this handle
    // must still fail (the kernel retries a failed page), or the reader takes the bad start
    // for good.
    big.change(good);
    assert_eq!(s.fs.read(fh, size - 4096, 4096).await, Err(Errno::IO));
    assert_eq!(s.fs.read_now(fh, 0, 10), Some(Err(Errno::IO)));
    // So must every other handle open when it failed: the bad pages are theirs too, and a
    // fresh download of the right bytes beside them would mix two versions in one read.
    assert_eq!(s.fs.read(other, size - 4096, 4096).await, Err(Errno::IO));
    assert_eq!(s.fs.read_now(other, 0, 10), Some(Err(Errno::IO)));
    s.fs.release(fh);
    s.fs.release(other);
    // A new open reads the right file.
    let Ok(Opened::Served { fh, .. }) = s.fs.open(file.ino, false, false) else {
        panic!()
    };
    let last = s.fs.read(fh, size - 4096, 4096).await.unwrap();
    assert!(last == big.read_at(size - 4096, 4096).unwrap());
    s.fs.release(fh);
}

#[tokio::test]
async fn xattrs_come_from_the_listings_without_a_request() {
    let s = setup(Duration::from_secs(60));
    let file = walk(&s.fs, FILE).await.unwrap();
    let session = walk(&s.fs, "P/S1").await.unwrap();
    let calls = (s.api.listing_calls(), s.api.body_calls());
    let md5 = s.fs.getxattr(file.ino, b"user.xnat.md5").unwrap();
    assert_eq!(md5.len(), 32);
    assert_eq!(
        s.fs.getxattr(file.ino, b"user.xnat.size"),
        Ok(b"30".to_vec())
    );
    assert_eq!(
        s.fs.listxattr(file.ino),
        Ok(b"user.xnat.md5\0user.xnat.uri\0user.xnat.size\0".to_vec())
    );
    // The project's sessions listing asked for the subject's label.
    let label = s.fs.getxattr(session.ino, b"user.xnat.subject_label");
    assert_eq!(label, Ok(b"S".to_vec()));
    assert_eq!(
        s.fs.getxattr(file.ino, b"user.xnat.nope"),
        Err(Errno::NODATA)
    );
    assert_eq!(s.fs.change_xattr(file.ino), Err(Errno::ROFS));
    assert_eq!(s.fs.getxattr(999_999, b"user.xnat.id"), Err(Errno::NOENT));
    assert_eq!(s.fs.listxattr(999_999), Err(Errno::NOENT));
    assert_eq!((s.api.listing_calls(), s.api.body_calls()), calls);
}

/// An open folder's listing is a snapshot taken at its first readdir. When a
/// file in it changes on the server and the kernel is given its new inode (a `stat` after the
/// listing expired: the kernel drops the old name), the reader of the open folder goes on
/// (the next readdirplus chunk of a big folder, or `rewinddir`): the snapshot hands the kernel
/// the file's old inode under its name again, and the kernel swaps its entry back to it, so
/// `stat` shows the old size and a read of it is checked against the old digest (EIO) until
/// the entry expires.
#[tokio::test(flavor = "multi_thread")]
async fn readdirplus_of_an_open_folder_never_hands_back_a_changed_files_old_inode() {
    let s = setup(Duration::ZERO);
    let deep = walk(&s.fs, "P/S1/scans/2/resources/DICOM/files/sub/deep")
        .await
        .unwrap();
    let dh = s.fs.opendir(deep.ino).unwrap();
    let kids = s.fs.list(dh, deep.ino).await.unwrap();
    let old = kids.get("c.dcm").unwrap();
    let file = &s.api.data().projects[0].sessions[0].scans[0].resources[0].files[2];
    assert_eq!(file.path, "sub/deep/c.dcm");
    file.change(crate::mock::data::Body::Memory(vec![b'y'; 30].into()));
    let new = s.fs.lookup(deep.ino, "c.dcm").await.unwrap();
    assert_ne!(new.ino, old, "changed: a new inode");
    // The same open folder read on (readdirplus).
    let handed: Vec<u64> =
        s.fs.entries(deep.ino, &kids, 0)
            .filter(|(_, name, _, _)| *name == "c.dcm")
            .map(|(_, _, attr, _)| attr.ino)
            .collect();
    assert_eq!(
        handed,
        [new.ino],
        "readdirplus gives the kernel the replaced inode of c.dcm again"
    );
    s.fs.releasedir(dh);
}
