//! BIDS names: labels made from XNAT's, and what a BIDS file name says (its subject, session,
//! suffix and so its datatype folder).
//!
//! Labels match `[0-9a-zA-Z]+` (bids-standard/bids-specification,
//! `src/schema/objects/formats.yaml`, `label`).

/// `label` with every character outside `[A-Za-z0-9]` removed (XNAT's `SUBJ_01` is BIDS's
/// `SUBJ01`); `None` when nothing is left.
pub fn sanitise(label: &str) -> Option<String> {
    let out: String = label.chars().filter(char::is_ascii_alphanumeric).collect();
    (!out.is_empty()).then_some(out)
}

/// The `ses-` label of session `session` of subject `subject`: the session label less a
/// leading subject label and one separator (`SUBJ_01_MR1` of `SUBJ_01` is `MR1`), sanitised;
/// the whole label sanitised when nothing else is left.
pub fn session_label(session: &str, subject: &str) -> Option<String> {
    let rest = session
        .strip_prefix(subject)
        .filter(|_| !subject.is_empty())
        .and_then(|r| r.strip_prefix(['_', '-', '.', ' ']))
        .and_then(sanitise);
    rest.or_else(|| sanitise(session))
}

/// A BIDS file name taken apart: `sub-01_ses-1_task-rest_bold.nii.gz` has subject `01`,
/// session `1`, suffix `bold` and extension `.nii.gz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileName<'a> {
    pub subject: &'a str,
    pub session: Option<&'a str>,
    /// Whether it names a task (`task-`): an `events` or `sbref` file is then functional.
    pub task: bool,
    pub suffix: &'a str,
    pub extension: &'a str,
}

impl<'a> FileName<'a> {
    /// `name` as BIDS names files (`sub-<label>[_<key>-<value>...]_<suffix><extension>`, the
    /// subject first), or `None`.
    pub fn parse(name: &'a str) -> Option<FileName<'a>> {
        let (stem, extension) = match name.find('.') {
            Some(i) => name.split_at(i),
            None => (name, ""),
        };
        let mut parts = stem.split('_');
        let subject = parts.next()?.strip_prefix("sub-").filter(|l| is_label(l))?;
        let mut rest: Vec<&str> = parts.collect();
        let suffix = rest.pop().filter(|s| is_label(s))?;
        let mut session = None;
        let mut task = false;
        for entity in rest {
            let (key, value) = entity.split_once('-')?;
            if !is_label(key) || !is_label(value) {
                return None;
            }
            match key {
                "ses" => session = Some(value),
                "task" => task = true,
                _ => {}
            }
        }
        Some(FileName {
            subject,
            session,
            task,
            suffix,
            extension,
        })
    }

    /// The datatype folder a file of this suffix goes in (BIDS's modality-specific files),
    /// `None` when the suffix is not one of them.
    pub fn datatype(&self) -> Option<&'static str> {
        const ANAT: &[&str] = &[
            "T1w",
            "T2w",
            "PDw",
            "T2starw",
            "FLAIR",
            "inplaneT1",
            "inplaneT2",
            "PDT2",
            "angio",
            "T1map",
            "T2map",
            "T2starmap",
            "R1map",
            "R2map",
            "R2starmap",
            "PDmap",
            "MTRmap",
            "MTsat",
            "UNIT1",
            "T1rho",
            "MWFmap",
            "MTVmap",
            "Chimap",
            "S0map",
            "M0map",
            "defacemask",
            "MESE",
            "MEGRE",
            "VFA",
            "IRT1",
            "MP2RAGE",
            "MPM",
            "MTS",
            "MTR",
        ];
        const FMAP: &[&str] = &[
            "phasediff",
            "phase1",
            "phase2",
            "magnitude",
            "magnitude1",
            "magnitude2",
            "fieldmap",
            "epi",
            "TB1map",
            "RB1map",
        ];
        Some(match self.suffix {
            s if ANAT.contains(&s) => "anat",
            s if FMAP.contains(&s) => "fmap",
            "bold" | "cbv" | "phase" => "func",
            "sbref" | "events" | "physio" | "stim" if self.task => "func",
            "dwi" | "sbref" => "dwi",
            "asl" | "m0scan" | "aslcontext" => "perf",
            "pet" => "pet",
            _ => return None,
        })
    }
}

/// A label or key as BIDS allows: `[0-9a-zA-Z]+`.
fn is_label(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_lose_every_character_but_letters_and_digits() {
        assert_eq!(sanitise("SUBJ_01").as_deref(), Some("SUBJ01"));
        assert_eq!(sanitise("a-b.c d").as_deref(), Some("abcd"));
        assert_eq!(sanitise("Müller").as_deref(), Some("Mller"));
        assert_eq!(sanitise("__"), None);
    }

    #[test]
    fn a_session_label_loses_its_subject_label_and_one_separator() {
        assert_eq!(
            session_label("SUBJ_01_MR1", "SUBJ_01").as_deref(),
            Some("MR1")
        );
        assert_eq!(
            session_label("SUBJ_01-v2_a", "SUBJ_01").as_deref(),
            Some("v2a")
        );
        // Not led by the subject's label, or nothing else: the whole label.
        assert_eq!(session_label("MR_1", "SUBJ_01").as_deref(), Some("MR1"));
        assert_eq!(
            session_label("SUBJ_01", "SUBJ_01").as_deref(),
            Some("SUBJ01")
        );
        assert_eq!(
            session_label("SUBJ_01x", "SUBJ_01").as_deref(),
            Some("SUBJ01x")
        );
        assert_eq!(session_label("E1", "").as_deref(), Some("E1"));
    }

    #[test]
    fn file_names_say_their_subject_session_and_datatype() {
        let n = FileName::parse("sub-01_ses-1_task-rest_run-2_bold.nii.gz").unwrap();
        assert_eq!((n.subject, n.session, n.suffix), ("01", Some("1"), "bold"));
        assert_eq!((n.extension, n.datatype()), (".nii.gz", Some("func")));
        let n = FileName::parse("sub-A_T1w.json").unwrap();
        assert_eq!((n.session, n.datatype()), (None, Some("anat")));
        let n = FileName::parse("sub-A_ses-B_dwi.bvec").unwrap();
        assert_eq!(n.datatype(), Some("dwi"));
        assert_eq!(
            FileName::parse("sub-A_ses-B_sbref.nii.gz")
                .unwrap()
                .datatype(),
            Some("dwi")
        );
        let sbref = FileName::parse("sub-A_task-x_sbref.nii.gz").unwrap();
        assert_eq!(sbref.datatype(), Some("func"));
        let scans = FileName::parse("sub-A_ses-B_scans.tsv").unwrap();
        assert_eq!(scans.datatype(), None);
        for not in [
            "T1_MPRAGE_2.nii.gz",
            "sub-A.nii.gz",
            "sub-_T1w.nii",
            "sub-A_ses_T1w.nii",
            "sub-A_ses-B_C_T1w.nii",
            "sub-a_b-c d_T1w.nii",
            "dataset_description.json",
        ] {
            assert_eq!(FileName::parse(not), None, "{not}");
        }
    }
}
