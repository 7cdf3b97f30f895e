//! What the flags choose: scans (`-s 1,2,3`, `-s 1-3`, `-s '*'`) and resource labels (`-r`,
//! `--exclude-resource`), and what to say when a filter matches nothing: the IDs and labels
//! that do exist.

use crate::xnat::Derived;
use anyhow::{Result, bail};

/// `-s 1,2,3`, `-s 1-3,7` or `-s '*'`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanSelector {
    All,
    Ids(Vec<ScanSpec>),
}

/// One item of `-s`: a scan ID, or a range `from-to` of numeric IDs (`1-3`: every scan whose
/// ID is a number from 1 to 3; a scan whose ID is literally `1-3` matches too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanSpec {
    /// As given.
    pub raw: String,
    pub range: Option<(u64, u64)>,
}

impl ScanSpec {
    fn parse(raw: &str) -> Result<ScanSpec> {
        let range = match raw.split_once('-') {
            Some((a, b)) => match (a.trim().parse::<u64>(), b.trim().parse::<u64>()) {
                (Ok(a), Ok(b)) if a <= b => Some((a, b)),
                (Ok(a), Ok(b)) => bail!("-s {raw}: a range goes from low to high ({b}-{a})"),
                _ => None,
            },
            None => None,
        };
        Ok(ScanSpec {
            raw: raw.to_string(),
            range,
        })
    }

    pub fn matches(&self, id: &str) -> bool {
        id == self.raw
            || self
                .range
                .is_some_and(|(a, b)| id.parse::<u64>().is_ok_and(|n| (a..=b).contains(&n)))
    }
}

impl ScanSelector {
    pub fn parse(spec: &str) -> Result<Self> {
        let spec = spec.trim();
        if spec == "*" || spec.eq_ignore_ascii_case("all") {
            return Ok(ScanSelector::All);
        }
        let items: Vec<&str> = spec
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if items.is_empty() {
            bail!("-s needs scan IDs like 1,2,3 (or a range 1-3), or '*' for all scans");
        }
        if items.contains(&"*") {
            return Ok(ScanSelector::All);
        }
        Ok(ScanSelector::Ids(
            items
                .into_iter()
                .map(ScanSpec::parse)
                .collect::<Result<_>>()?,
        ))
    }

    pub fn matches(&self, id: &str) -> bool {
        match self {
            ScanSelector::All => true,
            ScanSelector::Ids(specs) => specs.iter().any(|s| s.matches(id)),
        }
    }

    /// The items of `-s` that match none of `ids`.
    pub fn unmatched<'a>(&'a self, ids: &[String]) -> Vec<&'a str> {
        match self {
            ScanSelector::All => Vec::new(),
            ScanSelector::Ids(specs) => specs
                .iter()
                .filter(|s| !ids.iter().any(|id| s.matches(id)))
                .map(|s| s.raw.as_str())
                .collect(),
        }
    }
}

/// Which scans and resources to take.
#[derive(Debug, Clone)]
pub struct Selection {
    pub scans: ScanSelector,
    /// `-r`: only these resource labels (empty: all).
    pub include: Vec<String>,
    /// `--exclude-resource`: not these.
    pub exclude: Vec<String>,
    /// `--session-resources`: the session-level resources too.
    pub session_resources: bool,
    /// `--assessors`: the resources of the session's assessors too (FreeSurfer, QC, ...).
    pub assessors: bool,
    /// `--reconstructions`: the resources of the session's reconstructions too.
    pub reconstructions: bool,
}

impl Selection {
    /// Which of a session's derived data are asked for (`--assessors`, `--reconstructions`).
    pub fn derived(&self) -> Vec<Derived> {
        let asked = [self.assessors, self.reconstructions];
        (Derived::ALL.into_iter().zip(asked))
            .filter_map(|(kind, asked)| asked.then_some(kind))
            .collect()
    }

    pub fn wants_resource(&self, label: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|l| l == label))
            && !self.exclude.iter().any(|l| l == label)
    }
}

/// What one session turned out to hold, for the filters' messages.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// The session's label.
    pub session: String,
    /// Its scan IDs (all of them, chosen or not).
    pub scans: Vec<String>,
    /// The labels of the resources the chosen scans (and, with `--session-resources`, the
    /// session) have.
    pub labels: Vec<String>,
}

/// Whether every item of `-s` and `-r` has matched in some session planned so far. Until
/// then a run holds its transfers back: a filter that matches in no session at all is an
/// error before anything is transferred (see [`check_filters`]), even when sessions are
/// planned while others transfer. Without `-s`/`-r` items it is open from the start.
#[derive(Debug, Clone)]
pub struct FilterGate {
    /// Items of `-s` not matched yet (as given).
    scans: Vec<String>,
    /// Labels of `-r` not seen yet.
    labels: Vec<String>,
}

impl FilterGate {
    pub fn new(selection: &Selection) -> FilterGate {
        let scans = match &selection.scans {
            ScanSelector::All => Vec::new(),
            ScanSelector::Ids(specs) => specs.iter().map(|s| s.raw.clone()).collect(),
        };
        FilterGate {
            scans,
            labels: selection.include.clone(),
        }
    }

    /// Hears what one more session holds; returns whether the gate is open now.
    pub fn saw(&mut self, selection: &Selection, seen: Option<&Seen>) -> bool {
        if let Some(seen) = seen {
            let unmatched = selection.scans.unmatched(&seen.scans);
            self.scans.retain(|raw| unmatched.contains(&raw.as_str()));
            self.labels.retain(|l| !seen.labels.contains(l));
        }
        self.is_open()
    }

    pub fn is_open(&self) -> bool {
        self.scans.is_empty() && self.labels.is_empty()
    }
}

/// What the filters say of the sessions that were listed: an error when an item of `-s` or
/// `-r` matches in none of them (naming what exists), and notes for those missing in only
/// some sessions or for an `--exclude-resource` that matches nothing. `labels_known` is false
/// when some resource listing failed (then a label may exist unseen: no error for `-r`).
pub fn check_filters(
    selection: &Selection,
    seen: &[Seen],
    labels_known: bool,
) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    if seen.is_empty() {
        return Ok(notes);
    }
    let all_scans = sorted_ids(seen.iter().flat_map(|s| &s.scans));
    let missing = selection.scans.unmatched(&all_scans);
    if !missing.is_empty() {
        let subject = match seen {
            [s] => format!("session {} has no scan", s.session),
            _ => format!("none of the {} has scan", n(seen)),
        };
        bail!(
            "{subject} {}; {}: {}",
            missing.join(", "),
            they(seen),
            listed(&all_scans)
        );
    }
    if seen.len() > 1 {
        for s in seen {
            let here = selection.scans.unmatched(&s.scans);
            if !here.is_empty() {
                notes.push(format!(
                    "session {} has no scan {} (it has: {})",
                    s.session,
                    here.join(", "),
                    listed(&s.scans)
                ));
            }
        }
    }
    let all_labels = sorted_ids(seen.iter().flat_map(|s| &s.labels));
    let absent = |wanted: &[String], labels: &[String]| -> Vec<String> {
        wanted
            .iter()
            .filter(|w| !labels.contains(w))
            .cloned()
            .collect()
    };
    let missing = absent(&selection.include, &all_labels);
    if !missing.is_empty() && labels_known {
        let hint = if selection.session_resources {
            ""
        } else {
            " (the session's own resources are looked at with --session-resources)"
        };
        bail!(
            "no resource {} in {}; {}: {}{hint}",
            missing.join(", "),
            place(seen),
            they(seen),
            listed(&all_labels)
        );
    }
    if seen.len() > 1 && !selection.include.is_empty() {
        for s in seen {
            let here = absent(&selection.include, &s.labels);
            if !here.is_empty() {
                notes.push(format!(
                    "session {} has no resource {} (it has: {})",
                    s.session,
                    here.join(", "),
                    listed(&s.labels)
                ));
            }
        }
    }
    let unused = absent(&selection.exclude, &all_labels);
    if !unused.is_empty() && labels_known {
        notes.push(format!(
            "--exclude-resource {} matches no resource in {} (there are: {})",
            unused.join(", "),
            place(seen),
            listed(&all_labels)
        ));
    }
    Ok(notes)
}

fn place(seen: &[Seen]) -> String {
    match seen {
        [s] => format!("session {}", s.session),
        _ => format!("any of the {}", n(seen)),
    }
}

fn they(seen: &[Seen]) -> &'static str {
    if seen.len() == 1 {
        "it has"
    } else {
        "they have"
    }
}

fn n(seen: &[Seen]) -> String {
    format!("{} sessions", seen.len())
}

fn listed(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

/// Distinct, numbers in numeric order first, then the rest in text order.
fn sorted_ids<'a>(ids: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut v: Vec<String> = ids.cloned().collect();
    v.sort_by_key(|id| (id.parse::<u64>().unwrap_or(u64::MAX), id.clone()));
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn sel(scans: &str, inc: &[&str], exc: &[&str]) -> Selection {
        Selection {
            scans: ScanSelector::parse(scans).unwrap(),
            include: ids(inc),
            exclude: ids(exc),
            session_resources: false,
            assessors: false,
            reconstructions: false,
        }
    }

    fn seen(session: &str, scans: &[&str], labels: &[&str]) -> Seen {
        Seen {
            session: session.into(),
            scans: ids(scans),
            labels: ids(labels),
        }
    }

    #[test]
    fn scan_selectors() {
        assert_eq!(ScanSelector::parse("*").unwrap(), ScanSelector::All);
        assert_eq!(ScanSelector::parse("1,2,*").unwrap(), ScanSelector::All);
        let s = ScanSelector::parse(" 1, 3 ").unwrap();
        assert!(s.matches("1") && s.matches("3") && !s.matches("2"));
        assert!(ScanSelector::parse(",").is_err());
    }

    #[test]
    fn ranges_take_numeric_ids_between_their_ends() {
        let s = ScanSelector::parse("1-3,7").unwrap();
        for id in ["1", "2", "3", "7", "03"] {
            assert!(s.matches(id), "{id}");
        }
        for id in ["0", "4", "6", "8", "2a", "T1w", "10"] {
            assert!(!s.matches(id), "{id}");
        }
        // A scan whose ID is literally `1-3` matches too; `a-b` is an ordinary ID.
        assert!(s.matches("1-3"));
        let t = ScanSelector::parse("1-MR").unwrap();
        assert!(t.matches("1-MR") && !t.matches("1"));
        let e = ScanSelector::parse("3-1").unwrap_err().to_string();
        assert!(e.contains("from low to high (1-3)"), "{e}");
    }

    #[test]
    fn resource_filters() {
        assert!(sel("*", &[], &[]).wants_resource("DICOM"));
        assert!(sel("*", &["DICOM"], &[]).wants_resource("DICOM"));
        assert!(!sel("*", &["NIFTI"], &[]).wants_resource("DICOM"));
        assert!(!sel("*", &[], &["DICOM"]).wants_resource("DICOM"));
    }

    #[test]
    fn a_filter_that_matches_nothing_names_what_exists() {
        let one = [seen(
            "S1",
            &["1", "2", "10", "3"],
            &["NIFTI", "DICOM", "SNAPSHOTS"],
        )];
        let e = check_filters(&sel("*", &["DICMO"], &[]), &one, true).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no resource DICMO in session S1; it has: DICOM, NIFTI, SNAPSHOTS \
             (the session's own resources are looked at with --session-resources)"
        );
        let e = check_filters(&sel("99", &[], &[]), &one, true).unwrap_err();
        assert_eq!(
            e.to_string(),
            "session S1 has no scan 99; it has: 1, 2, 3, 10"
        );
        let e = check_filters(&sel("4-9", &[], &[]), &one, true).unwrap_err();
        assert!(e.to_string().contains("has no scan 4-9"), "{e}");
        assert!(check_filters(&sel("2-3", &["DICOM"], &[]), &one, true).is_ok());
        // A label may exist where a listing failed: no error then.
        assert!(check_filters(&sel("*", &["DICMO"], &[]), &one, false).is_ok());
    }

    #[test]
    fn the_gate_opens_once_every_item_matched_somewhere() {
        assert!(FilterGate::new(&sel("*", &[], &["QC"])).is_open());
        let s = sel("1,2-3", &["NIFTI"], &[]);
        let mut gate = FilterGate::new(&s);
        assert!(!gate.is_open());
        assert!(!gate.saw(&s, None));
        assert!(!gate.saw(&s, Some(&seen("S1", &["1"], &["DICOM"]))));
        assert!(!gate.saw(&s, Some(&seen("S2", &["7"], &["NIFTI"]))));
        assert!(gate.saw(&s, Some(&seen("S3", &["3"], &[]))));
        // A typo never opens it.
        let s = sel("99", &[], &[]);
        let mut gate = FilterGate::new(&s);
        assert!(!gate.saw(&s, Some(&seen("S1", &["1", "3"], &["DICOM"]))));
    }

    #[test]
    fn across_sessions_missing_somewhere_is_a_note_missing_everywhere_an_error() {
        let two = [
            seen("S1", &["1", "2"], &["DICOM", "NIFTI"]),
            seen("S2", &["1"], &["DICOM"]),
        ];
        let notes = check_filters(&sel("2", &["NIFTI"], &["QC"]), &two, true).unwrap();
        assert_eq!(
            notes,
            [
                "session S2 has no scan 2 (it has: 1)",
                "session S2 has no resource NIFTI (it has: DICOM)",
                "--exclude-resource QC matches no resource in any of the 2 sessions (there are: DICOM, NIFTI)",
            ]
        );
        let e = check_filters(&sel("5", &[], &[]), &two, true).unwrap_err();
        assert_eq!(
            e.to_string(),
            "none of the 2 sessions has scan 5; they have: 1, 2"
        );
        assert!(check_filters(&sel("*", &["X"], &[]), &[], true).is_ok());
    }
}
