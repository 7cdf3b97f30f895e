//! The series read-ahead at work: told of every open of a file, it fetches the files of a
//! resource ahead of a sequential reader as [`super::series`] decides, through the registry of
//! downloads ([`Fetcher::download`]), so that a reader who opens a file being fetched ahead
//! joins that very download, and into the cache's verified files like any read.
//!
//! One task hands out the fetches; it ends when the mount's core is dropped.

use super::Fetcher;
use super::series::{Opened, SeriesConfig, SeriesPolicy};
use crate::xnat::{FileList, RemoteFile, ResourceRef};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// How often the task looks again when nothing woke it (idle series pause on this tick).
const TICK: Duration = Duration::from_millis(250);

pub struct SeriesAhead {
    fetcher: Arc<Fetcher>,
    state: Mutex<State>,
    wake: tokio::sync::Notify,
}

struct State {
    policy: SeriesPolicy<ResourceRef>,
    /// The listing each series was started from, in path order (indices are into it).
    lists: HashMap<ResourceRef, FileList>,
    /// The fetches started and not over (for tests and `status`).
    started: u64,
}

impl SeriesAhead {
    /// The read-ahead over `fetcher`'s downloads; `None` when `config` turns it off.
    pub fn start(fetcher: Arc<Fetcher>, config: SeriesConfig) -> Option<Arc<SeriesAhead>> {
        if config.in_flight == 0 {
            return None;
        }
        let this = Arc::new(SeriesAhead {
            state: Mutex::new(State {
                policy: SeriesPolicy::new(config),
                lists: HashMap::new(),
                started: 0,
            }),
            wake: tokio::sync::Notify::new(),
            fetcher: fetcher.clone(),
        });
        let weak = Arc::downgrade(&this);
        fetcher.ctx.rt.spawn(pump(weak));
        Some(this)
    }

    /// How many files the read-ahead has started fetching.
    pub fn started(&self) -> u64 {
        self.state.lock().unwrap().started
    }

    /// A reader opened `file` of `res` (`cold`: it was not complete in the cache); `files`
    /// gives the resource's listing as known now, without asking the server.
    pub fn opened(
        &self,
        res: &ResourceRef,
        file: &Arc<RemoteFile>,
        cold: bool,
        files: impl FnOnce() -> Option<FileList>,
    ) {
        let mut st = self.state.lock().unwrap();
        let st = &mut *st;
        if !cold && !st.policy.knows(res) {
            return; // a warm file where no series is watched: nothing to note
        }
        let list = match st.lists.get(res) {
            Some(list) => list.clone(),
            None => match files() {
                Some(list) => in_path_order(&list),
                None => return,
            },
        };
        let Some(index) = index_of(&list, file, st.policy.position(res)) else {
            return;
        };
        let sizes = || list.iter().map(|f| f.size).collect();
        let outcome = st.policy.opened(res, index, cold, Instant::now(), sizes);
        st.lists.entry(res.clone()).or_insert_with(|| list.clone());
        if outcome == Opened::Run {
            self.wake.notify_one();
        }
    }

    /// Starts every fetch the policy allows now.
    fn hand_out(self: &Arc<Self>) {
        loop {
            let next = {
                let mut st = self.state.lock().unwrap();
                let room = self.fetcher.memory_room();
                let cap = self.fetcher.cache().limit();
                let Some((res, index)) = st.policy.next(Instant::now(), room, cap) else {
                    // Forget the listings of series the policy forgot.
                    let st = &mut *st;
                    st.lists.retain(|k, _| st.policy.knows(k));
                    return;
                };
                st.started += 1;
                let file = st.lists.get(&res).and_then(|l| l.get(index).cloned());
                (res, index, file)
            };
            let (res, index, file) = next;
            let this = self.clone();
            self.fetcher.ctx.rt.spawn(async move {
                let fetched = match &file {
                    Some(file) => this.fetch(&res, file).await,
                    None => false,
                };
                this.state
                    .lock()
                    .unwrap()
                    .policy
                    .finished(&res, index, fetched);
                this.wake.notify_one();
            });
        }
    }

    /// Fetches one file into the cache; whether it is there now.
    async fn fetch(&self, res: &ResourceRef, file: &RemoteFile) -> bool {
        // Off the runtime's threads: a copy that keeps no verified digest is hashed here.
        let (cache, r, f) = (self.fetcher.cache().clone(), res.clone(), file.clone());
        let there = tokio::task::spawn_blocking(move || cache.lookup(&r, &f).is_some());
        if there.await.unwrap_or(false) {
            return false; // there already: nothing was fetched ahead
        }
        match self.fetcher.fill(res, file).await {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!("series read-ahead of {} failed: {e}", file.uri());
                false
            }
        }
    }
}

/// The files sorted by path: the order a reader walks them in (a folder's files together,
/// by name), where a listing may interleave subfolders (`echo1/1.dcm`, `echo2/2.dcm`, ...).
fn in_path_order(list: &FileList) -> FileList {
    if list.windows(2).all(|w| w[0].path <= w[1].path) {
        return list.clone();
    }
    let mut sorted = list.to_vec();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    Arc::new(sorted)
}

/// Where `file` is in `list`: just after the reader's last file (`after`) for a sequential
/// reader, else looked for by identity, then by path.
fn index_of(
    list: &[Arc<RemoteFile>],
    file: &Arc<RemoteFile>,
    after: Option<usize>,
) -> Option<usize> {
    let mut near = after.into_iter().flat_map(|p| [p + 1, p]);
    near.find(|&i| list.get(i).is_some_and(|f| Arc::ptr_eq(f, file)))
        .or_else(|| list.iter().position(|f| Arc::ptr_eq(f, file)))
        .or_else(|| list.iter().position(|f| f.path == file.path))
}

/// Hands out fetches when woken (an open, a fetch over) and on every tick, until the
/// read-ahead is dropped.
async fn pump(this: Weak<SeriesAhead>) {
    loop {
        let Some(strong) = this.upgrade() else { return };
        strong.hand_out();
        let woken = async {
            let _ = tokio::time::timeout(TICK, strong.wake.notified()).await;
        };
        woken.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str) -> Arc<RemoteFile> {
        Arc::new(RemoteFile::new(
            path.into(),
            1,
            None,
            &format!("/data/{path}"),
        ))
    }

    #[test]
    fn a_listing_that_interleaves_subfolders_is_walked_folder_by_folder() {
        let list: FileList = Arc::new(["e1/1", "e2/2", "e1/3", "e2/4"].map(file).to_vec());
        let sorted = in_path_order(&list);
        let paths: Vec<&str> = sorted.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["e1/1", "e1/3", "e2/2", "e2/4"]);
        // A sequential reader's next file is found next to the last one, by identity.
        assert_eq!(index_of(&sorted, &list[2], Some(0)), Some(1));
        assert_eq!(index_of(&sorted, &list[3], None), Some(3));
        let in_order: FileList = Arc::new(["a", "b"].map(file).to_vec());
        assert!(Arc::ptr_eq(&in_path_order(&in_order), &in_order));
    }
}
