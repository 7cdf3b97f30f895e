//! What a prefetch should leave, and what it left: shared by the topics.

use crate::common::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::path::PathBuf;
use xnatfs::mock::data::Dataset;
use xnatfs::xnat::Derived;

/// What the session's files should be under `--out`: relative path -> MD5.
/// `dir` is the session's folder: the name given with -E, or the label.
pub fn expected_out(
    data: &Dataset,
    session_id: &str,
    dir: &str,
    scans: Option<&[&str]>,
    keep: impl Fn(&str) -> bool,
    session_res: bool,
) -> BTreeMap<PathBuf, String> {
    data.all_files()
        .into_iter()
        .filter(|(s, _, _, _)| s.id == session_id)
        .filter(|(_, scan, r, _)| {
            keep(&r.label)
                && match scan {
                    Some(sc) => scans.is_none_or(|ids| ids.contains(&sc.id.as_str())),
                    None => session_res,
                }
        })
        .map(|(_, scan, r, f)| {
            let p = format!("{dir}/{}", path_in_session(scan, r, f));
            (PathBuf::from(p), f.md5().to_string())
        })
        .collect()
}

/// Runs `xnatfs prefetch ARGS --out DIR` once file by file and once by ZIPs, each into a new
/// DIR, and checks that DIR then holds `want` (as [`expected_out`] gives it).
pub fn fetched_both_ways(url: &str, home: &Path, args: &[&str], want: &BTreeMap<PathBuf, String>) {
    for method in ["files", "zip"] {
        let out = home.join(method);
        let more = ["--method", method, "--out", out.to_str().unwrap()];
        ok(&prefetch(url, home, &[args, &more[..]].concat()));
        assert_eq!(&actual_out(&out), want, "{method}");
    }
}

pub fn actual_out(root: &Path) -> BTreeMap<PathBuf, String> {
    walk_files(root)
        .into_iter()
        .map(|(p, _)| {
            let md5 = md5_file(&root.join(&p));
            (p, md5)
        })
        .collect()
}

/// `--cache-dir CACHE` or `--out OUT`.
pub fn destination<'a>(to_cache: bool, out: &'a Path, cache: &'a Path) -> [&'a str; 2] {
    match to_cache {
        true => ["--cache-dir", cache.to_str().unwrap()],
        false => ["--out", out.to_str().unwrap()],
    }
}

/// Partial files left below `root`: anything in a `tmp` or `.xnatfs-tmp` folder, or named
/// like a partial file.
pub fn partial_files(root: &Path) -> Vec<PathBuf> {
    if !root.exists() {
        return Vec::new();
    }
    walk_files(root)
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| {
            p.components()
                .any(|c| c.as_os_str() == "tmp" || c.as_os_str() == ".xnatfs-tmp")
                || p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(".part-"))
        })
        .collect()
}

/// The assessor files of session `session_id` under `--out` as `dir/assessors/...`, with their
/// MD5s, of the resources `keep` takes.
pub fn expected_assessor_out(
    data: &Dataset,
    session_id: &str,
    dir: &str,
    keep: impl Fn(&str) -> bool,
) -> BTreeMap<PathBuf, String> {
    expected_derived_out(data, session_id, dir, Derived::Assessor, keep)
}

/// The files of session `session_id`'s derived data of `kind` under `--out`, with their MD5s,
/// of the resources `keep` takes.
pub fn expected_derived_out(
    data: &Dataset,
    session_id: &str,
    dir: &str,
    kind: Derived,
    keep: impl Fn(&str) -> bool,
) -> BTreeMap<PathBuf, String> {
    data.assessor_files()
        .into_iter()
        .filter(|(s, a, r, _)| s.id == session_id && a.kind == kind && keep(&r.label))
        .map(|(_, a, r, f)| {
            let p = format!("{dir}/{}", derived_path(a, &r.label, &f.path));
            (PathBuf::from(p), f.md5().to_string())
        })
        .collect()
}

pub fn out_md5s(out: &Path) -> BTreeMap<PathBuf, String> {
    walk_files(out)
        .into_iter()
        .map(|(p, _)| {
            let md5 = md5_file(&out.join(&p));
            (p, md5)
        })
        .collect()
}
