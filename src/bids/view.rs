//! A project's sessions as one BIDS dataset: each session's placed files (see
//! [`super::sources`]) under `sub-*/`, and the files xnatfs writes itself at the top:
//! `dataset_description.json`, `participants.tsv` and `.json`, `README`, `.bidsignore`, and
//! `code/xnatfs/unmapped.tsv` naming every session left out and why (BIDS apps ignore
//! `code/`).
//!
//! Two XNAT subjects with one `sub-` label, two sessions with one `sub-`/`ses-` pair, or two
//! sessions placing a file at one path (sessions of a subject without a `ses-` level), are
//! all left out and named in the log and in `unmapped.tsv`: numbering them by order, or
//! taking the first, would give a session another's label (or file) the day a listing's
//! order changes. A session shown without some of its scans has a row there too.

use super::labels::FileName;
use super::sources::{Placed, Placement};
use crate::names::is_safe_component;
use crate::xnat::{RemoteFile, ResourceRef, Session};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The BIDS version the view's `dataset_description.json` says.
pub const BIDS_VERSION: &str = "1.10.0";

/// An entry of a folder of the view.
#[derive(Debug, Clone)]
pub enum Entry {
    /// A folder, by its path in the view (`""` for the top).
    Dir(Arc<str>),
    /// A file XNAT has.
    Remote(Arc<ResourceRef>, Arc<RemoteFile>),
    /// A file xnatfs writes.
    Made(Bytes),
}

/// The project the view is of.
#[derive(Debug, Clone)]
pub struct ProjectInfo {
    pub id: String,
    pub name: String,
    /// Its address on the server (`https://xnat.example.org/data/projects/P`).
    pub url: String,
}

/// The whole view: each folder's entries by name.
#[derive(Debug, Default)]
pub struct View {
    dirs: BTreeMap<String, BTreeMap<String, Entry>>,
    /// Sessions shown, and left out.
    pub shown: usize,
    pub unmapped: usize,
    /// Some session was left out for a reason that may pass (its listing failed): the view
    /// is worth building again sooner than a complete one.
    pub incomplete: bool,
}

impl View {
    /// The entries of folder `path` (`""`: the top), in name order; `None` when the view has
    /// no such folder.
    pub fn entries(&self, path: &str) -> Option<impl Iterator<Item = (&String, &Entry)>> {
        self.dirs.get(path).map(|d| d.iter())
    }

    /// Every file of the view, with its path, in path order of its folders.
    pub fn files(&self) -> impl Iterator<Item = (String, &Entry)> {
        self.dirs.iter().flat_map(|(dir, entries)| {
            let files = entries.iter().filter(|(_, e)| !matches!(e, Entry::Dir(_)));
            files.map(move |(name, e)| match dir.is_empty() {
                true => (name.clone(), e),
                false => (format!("{dir}/{name}"), e),
            })
        })
    }

    /// Puts `entry` at `path`, making the folders above it; a path taken already, or with a
    /// component that is no safe name, is left out (`false`).
    fn put(&mut self, path: &str, entry: Entry) -> bool {
        let parts: Vec<&str> = path.split('/').collect();
        if !parts.iter().all(|p| is_safe_component(p)) {
            return false;
        }
        let mut dir = String::new();
        for part in &parts[..parts.len() - 1] {
            let child = match dir.is_empty() {
                true => part.to_string(),
                false => format!("{dir}/{part}"),
            };
            let entries = self.dirs.entry(dir).or_default();
            match entries.get(*part) {
                Some(Entry::Dir(_)) => {}
                Some(_) => return false,
                None => {
                    entries.insert(part.to_string(), Entry::Dir(child.as_str().into()));
                }
            }
            dir = child;
        }
        let name = parts[parts.len() - 1];
        let entries = self.dirs.entry(dir.clone()).or_default();
        if entries.contains_key(name) {
            return false;
        }
        if let Entry::Dir(_) = entry {
            let child = match dir.is_empty() {
                true => name.to_string(),
                false => format!("{dir}/{name}"),
            };
            self.dirs.entry(child).or_default();
        }
        self.dirs.entry(dir).or_default().insert(name.into(), entry);
        true
    }
}

/// The `sub-` and `sub-`/`ses-` folders a session's files are in.
fn labels_of(placed: &[Placed]) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut subs = BTreeSet::new();
    let mut sessions = BTreeSet::new();
    for p in placed {
        let mut parts = p.path.split('/');
        let sub = parts.next().unwrap_or_default();
        subs.insert(sub.to_string());
        if let Some(ses) = parts.next().filter(|s| s.starts_with("ses-")) {
            sessions.insert(format!("{sub}/{ses}"));
        }
    }
    (subs, sessions)
}

/// A session left out of the view, and why.
struct Unmapped<'a> {
    session: &'a Session,
    reason: String,
}

/// Leaves session `s` out of the view for `reason`, said in the log and in `unmapped.tsv`.
fn leave_out<'a>(unmapped: &mut Vec<Unmapped<'a>>, s: &'a Session, reason: String) {
    tracing::warn!(
        "BIDS view: session {} ({}) left out: {reason}",
        s.label,
        s.id
    );
    unmapped.push(Unmapped { session: s, reason });
}

/// The view of `project` whose sessions place their files as `placed` says.
pub fn build(project: &ProjectInfo, placed: &[(Session, Placement)]) -> View {
    // Which XNAT subjects and sessions each label stands for.
    let mut subjects: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    let mut sessions: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    // Which sessions place a file at each path.
    let mut paths: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (s, p) in placed {
        if let Placement::Placed(_, files, _) = p {
            for f in files {
                paths.entry(&f.path).or_default().insert(&s.id);
            }
            let (subs, sess) = labels_of(files);
            let subject = if s.subject_label.is_empty() {
                &s.id
            } else {
                &s.subject_label
            };
            for sub in subs {
                subjects.entry(sub).or_default().insert(subject);
            }
            for ses in sess {
                sessions.entry(ses).or_default().insert(&s.id);
            }
        }
    }
    let mut view = View::default();
    let mut unmapped = Vec::new();
    // Files shown whose names are no BIDS names (a whole tree's stray files): the validator
    // is told to ignore them, so that one stray file does not make the dataset invalid.
    let mut ignored = BTreeSet::new();
    // Sessions shown without some of their scans: rows of `unmapped.tsv` too.
    let mut partly = Vec::new();
    let mut participants: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for (s, p) in placed {
        let (files, left_out) = match p {
            Placement::Placed(_, files, left_out) => (files, left_out),
            Placement::Unmapped(reason) => {
                unmapped.push(Unmapped {
                    session: s,
                    reason: reason.clone(),
                });
                continue;
            }
        };
        let (subs, sess) = labels_of(files);
        let clash = subs
            .iter()
            .find(|sub| subjects[*sub].len() > 1)
            .map(|sub| {
                let all: Vec<&str> = subjects[sub].iter().copied().collect();
                format!(
                    "{sub} is the label of more than one XNAT subject ({})",
                    all.join(", ")
                )
            })
            .or_else(|| {
                sess.iter().find(|ses| sessions[*ses].len() > 1).map(|ses| {
                    let all: Vec<&str> = sessions[ses].iter().copied().collect();
                    format!(
                        "{ses} is the label of more than one XNAT session ({})",
                        all.join(", ")
                    )
                })
            })
            .or_else(|| {
                let shared = files.iter().find(|f| paths[f.path.as_str()].len() > 1)?;
                let all: Vec<&str> = paths[shared.path.as_str()].iter().copied().collect();
                Some(format!(
                    "{} is a file of more than one XNAT session ({})",
                    shared.path,
                    all.join(", ")
                ))
            });
        if let Some(reason) = clash {
            leave_out(&mut unmapped, s, reason);
            continue;
        }
        let mut shown = false;
        for f in files {
            let entry = Entry::Remote(f.res.clone(), f.file.clone());
            if view.put(&f.path, entry) {
                shown = true;
                let name = f.path.rsplit('/').next().unwrap_or_default();
                if FileName::parse(name).is_none() {
                    ignored.insert(f.path.as_str());
                }
            } else {
                tracing::warn!(
                    "BIDS view: {} of session {} left out (its path is taken, or no safe name)",
                    f.path,
                    s.id
                );
            }
        }
        if !shown {
            let reason = "none of its files has a usable path in the view".to_string();
            leave_out(&mut unmapped, s, reason);
            continue;
        }
        view.shown += 1;
        for sub in subs {
            participants
                .entry(sub)
                .or_default()
                .insert(&s.subject_label);
        }
        for what in left_out {
            tracing::warn!(
                "BIDS view: session {} ({}) shown without {what}",
                s.label,
                s.id
            );
            partly.push(Unmapped {
                session: s,
                reason: format!("shown without {what}"),
            });
        }
    }
    view.unmapped = unmapped.len();
    unmapped.extend(partly);
    let made = |text: String| Entry::Made(Bytes::from(text));
    view.put("dataset_description.json", made(description(project)));
    view.put("participants.tsv", made(participants_tsv(&participants)));
    view.put("participants.json", made(PARTICIPANTS_JSON.into()));
    view.put("README", made(readme(project)));
    view.put(".bidsignore", made(bidsignore(&ignored)));
    view.put("code/xnatfs/unmapped.tsv", made(unmapped_tsv(&unmapped)));
    view
}

/// What BIDS tools are to ignore: `code/` (the files xnatfs writes), and each file shown
/// whose name is no BIDS name.
fn bidsignore(ignored: &BTreeSet<&str>) -> String {
    let mut out = String::from("code/\n");
    for path in ignored {
        // A name, not a pattern: what `.gitignore` syntax would read as one is escaped.
        if path.starts_with(['!', '#']) {
            out.push('\\');
        }
        for c in path.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('\n');
    }
    out
}

fn description(project: &ProjectInfo) -> String {
    let name = if project.name.is_empty() {
        &project.id
    } else {
        &project.name
    };
    let value = serde_json::json!({
        "Name": name,
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "raw",
        "GeneratedBy": [{
            "Name": "xnatfs",
            "Version": env!("CARGO_PKG_VERSION"),
            "Description": format!("a read-only view of XNAT project {} ({})", project.id, project.url),
        }],
        "SourceDatasets": [{"URL": project.url}],
    });
    serde_json::to_string_pretty(&value).expect("JSON") + "\n"
}

fn participants_tsv(participants: &BTreeMap<String, BTreeSet<&str>>) -> String {
    let mut out = String::from("participant_id\txnat_subject_label\n");
    for (sub, labels) in participants {
        let labels: Vec<&str> = labels.iter().copied().collect();
        out.push_str(&format!("{sub}\t{}\n", tsv_cell(&labels.join(","))));
    }
    out
}

const PARTICIPANTS_JSON: &str = r#"{
  "participant_id": {"Description": "The BIDS label of the subject"},
  "xnat_subject_label": {"Description": "The subject's label in XNAT"}
}
"#;

fn readme(project: &ProjectInfo) -> String {
    format!(
        "This is a read-only BIDS view of the XNAT project {} ({}), shown by xnatfs {}.\n\n\
         Each subject's files are the ones XNAT stores: a whole BIDS tree kept in a session \
         resource, or each scan's NIFTI and BIDS resources placed by the session's \
         *_scans.tsv or by their own BIDS names, or named by a BIDS map. Bytes are XNAT's, fetched when first read.\n\n\
         Sessions without BIDS data, and sessions whose labels or files clash, are not \
         shown: code/xnatfs/unmapped.tsv lists them with the reason, and the scans left out of \
         sessions shown (XNAT would not list their files).\n",
        project.id,
        project.url,
        env!("CARGO_PKG_VERSION")
    )
}

/// A TSV cell: tabs and line ends would break the table.
fn tsv_cell(s: &str) -> String {
    s.replace(['\t', '\n', '\r'], " ")
}

fn unmapped_tsv(unmapped: &[Unmapped]) -> String {
    let mut out = String::from("xnat_session_id\txnat_session_label\txnat_subject_label\treason\n");
    for u in unmapped {
        let s = u.session;
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\n",
            tsv_cell(&s.id),
            tsv_cell(&s.label),
            tsv_cell(&s.subject_label),
            tsv_cell(&u.reason)
        ));
    }
    out
}
