//! What a mount shows, as nodes: the root, XNAT's projects, sessions, scans, resources,
//! assessors and files, each a [`Node`]; a folder's entries as a [`Listing`]; the errors of
//! looking them up. How XNAT's answers become these nodes is [`super::layout`]; which of them
//! the kernel holds is [`super::inodes`].

use crate::xnat::{Assessor, Derived, RemoteFile, Resource, ResourceRef, Scan, Session, XnatError};
use std::collections::HashMap;
use std::sync::Arc;

/// What the root of the mount shows.
#[derive(Debug, Clone)]
pub enum Root {
    /// Every project the user can read, each a folder of its sessions.
    Server,
    /// One project's sessions, by label.
    Project(String),
    /// Just these sessions, each under the name the user gave.
    Sessions(Vec<(String, Session)>),
    /// One project as a BIDS dataset (see [`crate::bids`]).
    Bids(String),
}

#[derive(Debug, Clone)]
pub enum Node {
    Root,
    Project(Arc<str>),
    Session(Arc<Session>),
    ScansDir(Arc<Session>),
    /// A scan folder, with the scan as its listing gave it (for its attributes).
    Scan(Arc<Session>, Arc<Scan>),
    ScanResources(Arc<Session>, Arc<str>),
    SessionResources(Arc<Session>),
    /// `<session>/assessors` or `<session>/reconstructions`.
    AssessorsDir(Arc<Session>, Derived),
    /// An assessor (or reconstruction) folder, as its listing gave it.
    Assessor(Arc<Session>, Arc<Assessor>),
    /// `<session>/assessors/<label>/resources` (or `reconstructions/<ID>/resources`).
    AssessorResources(Arc<Session>, Arc<Assessor>),
    /// A resource folder, with the resource as its listing gave it (for its attributes).
    Resource(Arc<ResourceRef>, Arc<Resource>),
    /// A folder under `files/`: the resource and the path prefix inside it (`""` for
    /// `files/` itself).
    FilesDir(Arc<ResourceRef>, Arc<str>),
    File(Arc<ResourceRef>, Arc<RemoteFile>),
    /// A folder of a BIDS view, by its path in the view (`""`: the top).
    BidsDir(Arc<str>),
    /// A file xnatfs writes (a BIDS view's `dataset_description.json`), with its bytes.
    Made(bytes::Bytes),
}

impl Node {
    pub fn is_dir(&self) -> bool {
        !matches!(self, Node::File(..) | Node::Made(_))
    }

    /// The file's size; 0 for folders.
    pub fn size(&self) -> u64 {
        match self {
            Node::File(_, f) => f.size,
            Node::Made(bytes) => bytes.len() as u64,
            _ => 0,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum TreeError {
    #[error("no such file or folder")]
    NotFound,
    #[error("not a folder")]
    NotDir,
    #[error(transparent)]
    Xnat(#[from] XnatError),
}

/// A folder's entries, in listing order: name and inode.
pub type Children = Arc<Listing>;

/// A folder's entries in listing order, with their inodes and nodes, and found by name at
/// once (a resource may hold hundreds of thousands of files).
#[derive(Debug, Default)]
pub struct Listing {
    pub(super) entries: Vec<Entry>,
    /// Each name's place in `entries`.
    by_name: HashMap<Arc<str>, u32>,
}

/// Listings are the same when they have the same names and inodes, in the same order.
impl PartialEq for Listing {
    fn eq(&self, other: &Listing) -> bool {
        self.iter().eq(other.iter())
    }
}

#[derive(Debug)]
pub(super) struct Entry {
    pub(super) name: Arc<str>,
    /// 0 until the inode table numbers it.
    pub(super) ino: u64,
    pub(super) node: Node,
}

impl Listing {
    /// The listing of `listed`, in its order, not numbered yet.
    pub(super) fn unnumbered(listed: Vec<(String, Node)>) -> Listing {
        let mut out = Listing {
            entries: Vec::with_capacity(listed.len()),
            by_name: HashMap::with_capacity(listed.len()),
        };
        for (name, node) in listed {
            let name = Arc::<str>::from(name);
            out.by_name.insert(name.clone(), out.entries.len() as u32);
            out.entries.push(Entry { name, ino: 0, node });
        }
        out
    }

    /// Names and inodes, in listing order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.entries.iter().map(|e| (&*e.name, e.ino))
    }

    /// Names, inodes and nodes, in listing order.
    pub fn nodes(&self) -> impl Iterator<Item = (&str, u64, &Node)> {
        self.entries.iter().map(|e| (&*e.name, e.ino, &e.node))
    }

    /// Names, inodes and nodes from entry `start` on (none past the end), in listing order.
    pub fn nodes_from(&self, start: usize) -> impl Iterator<Item = (&str, u64, &Node)> {
        let rest = self.entries.get(start..).unwrap_or_default();
        rest.iter().map(|e| (&*e.name, e.ino, &e.node))
    }

    /// The inode of entry `name`.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.entry(name).map(|(ino, _)| ino)
    }

    /// The inode and node of entry `name`.
    pub fn entry(&self, name: &str) -> Option<(u64, &Node)> {
        let e = &self.entries[*self.by_name.get(name)? as usize];
        Some((e.ino, &e.node))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Whether `now` is another file than `was` (the same name in a fresh listing), or a file
/// where a folder was, or the other way round.
pub(super) fn another(was: &Node, now: &Node) -> bool {
    match (was, now) {
        (Node::File(_, was), Node::File(_, now)) => {
            was.size != now.size || was.digest != now.digest
        }
        (Node::Made(was), Node::Made(now)) => was != now,
        _ => was.is_dir() != now.is_dir(),
    }
}
