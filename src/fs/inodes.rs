//! The inode table's entries: only the inodes the kernel holds (a lookup's answer, a
//! readdirplus entry, not yet forgotten as often as given) or that have open handles, and the
//! root. [`super::tree::Tree`] keeps the table under its lock and decides, under it, what
//! leaves.

use super::node::Node;
use std::collections::HashMap;

pub const ROOT_INO: u64 = 1;

/// The inodes the kernel holds or that have open handles (and the root).
pub(super) struct Inodes {
    pub(super) live: HashMap<u64, Live>,
    /// The next number to give a new entry.
    pub(super) next: u64,
}

pub(super) struct Live {
    pub(super) node: Node,
    /// How many times the kernel was given the inode and has not forgotten it yet.
    pub(super) lookups: u64,
    /// Open file and folder handles.
    pub(super) opens: u32,
}

impl Inodes {
    /// A table of the root alone.
    pub(super) fn new() -> Inodes {
        let root = Live {
            node: Node::Root,
            lookups: 0,
            opens: 0,
        };
        Inodes {
            live: HashMap::from([(ROOT_INO, root)]),
            next: ROOT_INO + 1,
        }
    }

    /// Counts one more handing of inode `ino` (node `node`) to the kernel, entering it in
    /// the table if it is not there.
    pub(super) fn count(&mut self, ino: u64, node: &Node) {
        let live = self.live.entry(ino).or_insert_with(|| Live {
            node: node.clone(),
            lookups: 0,
            opens: 0,
        });
        live.lookups += 1;
    }

    /// Whether `ino` may leave the table, and if so takes it out.
    pub(super) fn remove_if_unused(&mut self, ino: u64) -> Option<Node> {
        let live = self.live.get(&ino)?;
        if ino == ROOT_INO || live.lookups > 0 || live.opens > 0 {
            return None;
        }
        self.live.remove(&ino).map(|l| l.node)
    }
}
