//! What the cache holds (`xnatfs cache stats`), and emptying it (`xnatfs cache clear`).

use super::{Area, area_name};
use std::io;
use std::path::Path;

/// What one server's area of the cache holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AreaStats {
    pub area: String,
    pub files: u64,
    pub bytes: u64,
    pub listings: u64,
    /// Partial files (downloads under way, or left by a crash).
    pub partial: u64,
}

/// Counts the files below `dir` whose names `wanted` takes, and their bytes.
fn count(dir: &Path, wanted: fn(&str) -> bool, files: &mut u64, bytes: &mut u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(meta) = e.metadata() else { continue };
        if meta.is_dir() {
            count(&e.path(), wanted, files, bytes);
        } else if meta.is_file() && wanted(&e.file_name().to_string_lossy()) {
            *files += 1;
            *bytes += meta.len();
        }
    }
}

fn any(_: &str) -> bool {
    true
}

fn partial(name: &str) -> bool {
    name.starts_with(super::partial::PARTIAL_PREFIX)
}

/// The areas under `cache_dir`, by name: only folders xnatfs made ([`Area::exists`]); nothing
/// else in the cache dir is counted or cleared.
fn areas(cache_dir: &Path) -> io::Result<Vec<(String, Area)>> {
    let mut found: Vec<(String, Area)> = match std::fs::read_dir(cache_dir) {
        Ok(r) => r
            .flatten()
            .map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                (name, Area::at(e.path()))
            })
            .filter(|(_, a)| a.exists())
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found)
}

fn area_stats(name: String, area: &Area) -> AreaStats {
    let mut st = AreaStats {
        area: name,
        ..Default::default()
    };
    count(&area.data(), any, &mut st.files, &mut st.bytes);
    let mut bytes = 0;
    count(&area.listings(), any, &mut st.listings, &mut bytes);
    count(&area.tmp(), partial, &mut st.partial, &mut bytes);
    st
}

/// What each server area under `cache_dir` holds.
pub fn stats(cache_dir: &Path) -> io::Result<Vec<AreaStats>> {
    Ok(areas(cache_dir)?
        .into_iter()
        .map(|(name, area)| area_stats(name, &area))
        .collect())
}

/// Empties the areas under `cache_dir` (only the one of `server_url`, when given): their
/// files, partial files, kept listings and index. Files open in a running mount stay readable
/// until closed; what it reads next is fetched again. Returns what each area held.
/// What `clear` did: the areas emptied, and the areas left because a live process uses them.
#[derive(Debug, Default)]
pub struct Cleared {
    pub emptied: Vec<AreaStats>,
    pub in_use: Vec<String>,
}

pub fn clear(cache_dir: &Path, server_url: Option<&str>) -> io::Result<Cleared> {
    let wanted = server_url.map(area_name);
    let mut cleared = Cleared::default();
    for (name, area) in areas(cache_dir)? {
        if wanted.as_ref().is_some_and(|w| *w != name) {
            continue;
        }
        // Emptying an area under a mount or a prefetch would pull its partial files and its
        // lease from under it.
        if area.in_use() {
            cleared.in_use.push(name);
            continue;
        }
        let st = area_stats(name, &area);
        area.empty()?;
        cleared.emptied.push(st);
    }
    Ok(cleared)
}
