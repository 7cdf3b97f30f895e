//! Inodes the kernel forgot leave the table (FUSE `forget`), without a mount: the counting,
//! open handles that keep an inode, listings that stay right, and lookups racing forgets.

use super::inodes::ROOT_INO;
use super::node::Root;
use super::tests::{FILE, read_all, setup, walk};
use super::tree::Tree;
use super::{Errno, Opened};
use crate::mock::MemoryXnat;
use crate::mock::data::Dataset;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SUB: &str = "P/S1/scans/2/resources/DICOM/files/sub";

/// The inodes of each component of `path`, looked up from the root (each counted once).
async fn walk_inos(tree: &Tree, path: &[&str]) -> Result<Vec<u64>, super::node::TreeError> {
    let mut cur = ROOT_INO;
    let mut out = Vec::new();
    for name in path {
        cur = tree.lookup(cur, name).await?.0;
        out.push(cur);
    }
    Ok(out)
}

/// Forgets what [`walk_inos`] handed out, deepest first (as the kernel does).
fn forget_all(tree: &Tree, inos: &[u64]) {
    for ino in inos.iter().rev() {
        tree.forget(*ino, 1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_inode_leaves_the_table_when_forgotten_as_often_as_handed_out() {
    let s = setup(Duration::from_secs(60));
    let file = walk(&s.fs, FILE).await.unwrap();
    // Given twice (two walks): one forget of one is not enough.
    walk(&s.fs, FILE).await.unwrap();
    s.fs.forget(file.ino, 1);
    assert_eq!(s.fs.getattr(file.ino).map(|a| a.ino), Ok(file.ino));
    s.fs.forget(file.ino, 1);
    assert_eq!(s.fs.getattr(file.ino), Err(Errno::NOENT), "forgotten");
    // More forgets than lookups, or of unknown inodes, change nothing.
    s.fs.forget(file.ino, 3);
    s.fs.forget(999_999, 1);
    // The root never goes.
    s.fs.forget(ROOT_INO, 10);
    assert!(s.fs.getattr(ROOT_INO).is_ok());
    // Looked up again: the name is still listed, under its number, and reads right.
    let again = walk(&s.fs, FILE).await.unwrap();
    assert_eq!(again.ino, file.ino);
    let Ok(Opened::Served { fh, .. }) = s.fs.open(again.ino, false, false) else {
        panic!()
    };
    assert_eq!(read_all(&s.fs, fh, 30).await.unwrap(), vec![b'x'; 30]);
    s.fs.release(fh);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forgotten_folder_drops_its_listing_and_lists_the_same_names_again() {
    let s = setup(Duration::from_secs(60));
    let tree = &s.fs.tree;
    let path: Vec<&str> = SUB.split('/').collect();
    let inos = walk_inos(tree, &path).await.unwrap();
    let sub = *inos.last().unwrap();
    let names = |kids: &super::node::Children| -> Vec<String> {
        kids.iter().map(|(n, _)| n.to_string()).collect()
    };
    let before = names(&tree.children(sub).await.unwrap());
    assert_eq!(before, ["b.dcm", "deep", "d.dcm"]);
    let (tables, listings) = (tree.inode_count(), tree.listing_count());
    forget_all(tree, &inos);
    assert_eq!(tree.inode_count(), 1, "only the root is left");
    assert_eq!(tree.listing_count(), 1, "only the root's listing is left");
    assert!(tables > 1 && listings > 1);
    // Looked up again: listed anew, the same names, and the files read right.
    let inos = walk_inos(tree, &path).await.unwrap();
    let sub = *inos.last().unwrap();
    assert_eq!(names(&tree.children(sub).await.unwrap()), before);
    let file = walk(&s.fs, FILE).await.unwrap();
    let Ok(Opened::Served { fh, .. }) = s.fs.open(file.ino, false, false) else {
        panic!()
    };
    assert_eq!(read_all(&s.fs, fh, 30).await.unwrap(), vec![b'x'; 30]);
    s.fs.release(fh);
}

#[tokio::test(flavor = "multi_thread")]
async fn open_file_and_folder_handles_keep_their_inodes() {
    let s = setup(Duration::from_secs(60));
    let file = walk(&s.fs, FILE).await.unwrap();
    let Ok(Opened::Served { fh, .. }) = s.fs.open(file.ino, false, false) else {
        panic!()
    };
    s.fs.forget(file.ino, 1);
    assert!(s.fs.getattr(file.ino).is_ok(), "open: kept");
    assert_eq!(read_all(&s.fs, fh, 30).await.unwrap(), vec![b'x'; 30]);
    s.fs.release(fh);
    assert_eq!(s.fs.getattr(file.ino), Err(Errno::NOENT), "closed: gone");

    // A folder open for reading keeps its inode and listing; every entry still reads out.
    let sub = walk(&s.fs, SUB).await.unwrap();
    let dh = s.fs.opendir(sub.ino).unwrap();
    let kids = s.fs.list(dh, sub.ino).await.unwrap();
    let listings = s.fs.tree.listing_count();
    // Handed out by both walks (the file's and its own).
    s.fs.forget(sub.ino, 2);
    assert!(s.fs.getattr(sub.ino).is_ok());
    assert_eq!(s.fs.tree.listing_count(), listings);
    let names: Vec<String> =
        s.fs.entries(sub.ino, &kids, 0)
            .map(|(_, n, _, _)| n.into())
            .collect();
    assert_eq!(names, [".", "..", "b.dcm", "deep", "d.dcm"]);
    // Entries handed out with their attributes (readdirplus) count as lookups.
    let b = kids.get("b.dcm").unwrap();
    s.fs.handed_out(b, &kids.entry("b.dcm").unwrap().1.clone());
    s.fs.releasedir(dh);
    assert_eq!(s.fs.getattr(sub.ino), Err(Errno::NOENT), "released: gone");
    assert_eq!(s.fs.tree.listing_count(), listings - 1, "with its listing");
    assert!(s.fs.getattr(b).is_ok(), "the kernel still holds b.dcm");
    s.fs.forget(b, 1);
    assert_eq!(s.fs.getattr(b), Err(Errno::NOENT));
}

/// Many tasks look names up and forget them again, as the kernel does (a path's folders are
/// held while their entries are), while listings expire at once: a listed name never
/// answers ENOENT, one name never has two inodes while held, and once all is forgotten only
/// the root is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lookups_racing_forgets_never_lose_a_name() {
    let api = Arc::new(MemoryXnat::new(Dataset::tiny()));
    let tree = Arc::new(Tree::new(api, Root::Server, Duration::ZERO));
    let paths: Vec<Vec<&'static str>> = [
        FILE,
        "P/S1/scans/2/resources/DICOM/files/sub/b.dcm",
        "P/S1/scans/2/resources/DICOM/files/sub/d.dcm",
        "P/S1/resources/DICOM/files/a.dcm",
        SUB,
    ]
    .iter()
    .map(|p| p.split('/').collect())
    .collect();
    // Each held path prefix: its inode and how many tasks hold it.
    let held: Arc<Mutex<HashMap<String, (u64, u32)>>> = Arc::default();
    let until = Instant::now() + Duration::from_secs(2);
    let mut tasks = Vec::new();
    for t in 0..8usize {
        let (tree, paths, held) = (tree.clone(), paths.clone(), held.clone());
        tasks.push(tokio::spawn(async move {
            let mut rounds = 0u64;
            while Instant::now() < until {
                let path = &paths[(t + rounds as usize) % paths.len()];
                let inos = walk_inos(&tree, path)
                    .await
                    .unwrap_or_else(|e| panic!("{}: {e}", path.join("/")));
                for (i, ino) in inos.iter().enumerate() {
                    let key = path[..=i].join("/");
                    let mut held = held.lock().unwrap();
                    let h = held.entry(key.clone()).or_insert((*ino, 0));
                    assert!(h.1 == 0 || h.0 == *ino, "{key}: two inodes at once");
                    *h = (*ino, h.1 + 1);
                }
                // Readdirplus of the last folder of the path, every other round.
                let dir = inos[inos.len() - 2];
                let listed = if rounds.is_multiple_of(2) {
                    Some(tree.children(dir).await.unwrap())
                } else {
                    None
                };
                if let Some(kids) = &listed {
                    for (name, _) in kids.iter() {
                        tree.hand_out_entry(kids, name);
                    }
                }
                tokio::task::yield_now().await;
                if let Some(kids) = &listed {
                    for (_, ino) in kids.iter() {
                        tree.forget(ino, 1);
                    }
                }
                for (i, ino) in inos.iter().enumerate().rev() {
                    let key = path[..=i].join("/");
                    held.lock().unwrap().get_mut(&key).unwrap().1 -= 1;
                    tree.forget(*ino, 1);
                }
                rounds += 1;
            }
            rounds
        }));
    }
    let mut rounds = 0;
    for t in tasks {
        rounds += t.await.unwrap();
    }
    assert!(rounds > 100, "{rounds} rounds");
    assert_eq!(
        tree.inode_count(),
        1,
        "all forgotten: only the root is left"
    );
    assert!(tree.node(ROOT_INO).is_some());
}
