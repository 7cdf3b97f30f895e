//! The built-in sample data set (the demo's, and most tests'), and a tiny one for core tests.

use super::data::{
    Body, Dataset, MockAssessor, MockFile, MockProject, MockResource, MockScan, MockSession,
};
use crate::xnat::Derived;
use bytes::Bytes;
use std::sync::Arc;

/// The shape of the generated sample data set.
#[derive(Debug, Clone)]
pub struct SampleSpec {
    /// DICOM files in each DICOM resource.
    pub dicom_files: usize,
    /// Size of each DICOM file.
    pub dicom_size: u64,
    /// Size of the NIfTI image of the T1w scans.
    pub nifti_size: u64,
    /// Scans per MR session: 1 Localizer, 2 T1w (DICOM, NIFTI, SNAPSHOTS), 3 rsfMRI (DICOM in
    /// two subfolders), then fMRI runs (DICOM).
    pub scans: usize,
}

impl Default for SampleSpec {
    fn default() -> Self {
        SampleSpec {
            dicom_files: 24,
            dicom_size: 48 * 1024,
            nifti_size: 6 * 1024 * 1024,
            scans: 3,
        }
    }
}

fn dicom_prefix() -> Bytes {
    let mut p = vec![0u8; 128];
    p.extend_from_slice(b"DICM");
    Bytes::from(p)
}

struct Builder {
    next_resource: u64,
    next_seed: u64,
    spec: SampleSpec,
}

impl Builder {
    fn generated(&mut self, path: &str, size: u64, prefix: Bytes) -> Arc<MockFile> {
        self.next_seed += 1;
        MockFile::new(
            path,
            Body::Generated {
                seed: self.next_seed,
                size,
                prefix,
            },
        )
    }

    fn resource(&mut self, label: &str, format: &str, files: Vec<Arc<MockFile>>) -> MockResource {
        self.next_resource += 1;
        MockResource {
            id: self.next_resource,
            label: label.into(),
            format: format.into(),
            content: String::new(),
            files,
        }
    }

    fn dicom(&mut self, scan: &str, folders: &[&str]) -> MockResource {
        let mut files = Vec::new();
        for i in 0..self.spec.dicom_files {
            let folder = folders[i % folders.len()];
            let name = format!("1.3.12.2.1107.5.2.{scan}.{:05}.dcm", i + 1);
            let path = if folder.is_empty() {
                name
            } else {
                format!("{folder}/{name}")
            };
            let size = self.spec.dicom_size + (i as u64 % 7) * 17;
            files.push(self.generated(&path, size, dicom_prefix()));
        }
        self.resource("DICOM", "DICOM", files)
    }

    fn mr_session(&mut self, id: &str, label: &str, project: &str, date: &str) -> MockSession {
        let mut scans = Vec::new();
        let mut scan_specs: Vec<(String, String, &[&str])> = vec![
            ("1".into(), "Localizer".into(), &[""]),
            ("2".into(), "T1w".into(), &[""]),
            ("3".into(), "rsfMRI".into(), &["echo1", "echo2"]),
        ];
        for n in 4..=self.spec.scans {
            scan_specs.push((n.to_string(), format!("fMRI_run{}", n - 3), &[""]));
        }
        scan_specs.truncate(self.spec.scans.max(1));
        for (sid, ty, folders) in scan_specs {
            let (sid, ty) = (sid.as_str(), ty.as_str());
            let mut resources = vec![self.dicom(sid, folders)];
            if ty == "T1w" {
                let nifti = self.generated("T1w.nii.gz", self.spec.nifti_size, Bytes::new());
                resources.push(self.resource("NIFTI", "NIFTI", vec![nifti]));
                let snaps = vec![
                    self.generated("T1w_qc.gif", 20_000, Bytes::from_static(b"GIF89a")),
                    self.generated("T1w_qc_t.gif", 3_000, Bytes::from_static(b"GIF89a")),
                ];
                resources.push(self.resource("SNAPSHOTS", "GIF", snaps));
            }
            scans.push(scan(sid, ty, "xnat:mrScanData", resources));
        }
        let report = MockFile::new(
            "qc_report.html",
            Body::Memory(Bytes::from(format!(
                "<!DOCTYPE html><html><body><h1>QC for {label}</h1><p>pass</p></body></html>\n"
            ))),
        );
        let motion = self.generated("figs/motion.png", 12_345, Bytes::from_static(b"\x89PNG"));
        let protocol = MockFile::new(
            "scan protocol.txt",
            Body::Memory(Bytes::from(format!("protocol for {label}\nTR=2000\n"))),
        );
        let notes = MockFile::new(
            "notes+v2.txt",
            Body::Memory(Bytes::from_static(b"version 2 notes\n")),
        );
        let resources = vec![
            self.resource("QC", "HTML", vec![report, motion]),
            self.resource("PROTOCOLS", "TXT", vec![protocol, notes]),
        ];
        let at = (id, label, project, date);
        session(at, "xnat:mrSessionData", scans, resources)
    }

    /// Scans (`(id, type, xsiType)`) each holding a DICOM resource.
    fn dicom_scans(&mut self, scans: &[(&str, &str, &str)]) -> Vec<MockScan> {
        scans
            .iter()
            .map(|&(id, ty, xsi)| scan(id, ty, xsi, vec![self.dicom(id, &[""])]))
            .collect()
    }
}

/// A session `(id, label, project, date)` of type `xsi_type`.
fn session(
    (id, label, project, date): (&str, &str, &str, &str),
    xsi_type: &str,
    scans: Vec<MockScan>,
    resources: Vec<MockResource>,
) -> MockSession {
    MockSession {
        id: id.into(),
        label: label.into(),
        project: project.into(),
        subject_id: String::new(),
        subject_label: label.split('_').next().unwrap_or(label).into(),
        xsi_type: xsi_type.into(),
        date: date.into(),
        scans,
        resources,
        assessors: Vec::new(),
    }
}

fn scan(id: &str, ty: &str, xsi_type: &str, resources: Vec<MockResource>) -> MockScan {
    MockScan {
        id: id.into(),
        scan_type: ty.into(),
        series_description: ty.into(),
        quality: "usable".into(),
        xsi_type: xsi_type.into(),
        resources,
    }
}

impl Dataset {
    /// The built-in sample: projects DEMO and PILOT (with a session label that repeats across
    /// them, and an EEG session whose files have no digest), and MULTI, whose sessions hold
    /// scans of more than one type: a PET/MR session (MR and PET scans) and a PET/CT session
    /// (CT and PET scans), beside a clinical form (an experiment that is no imaging session);
    /// the PET/MR session has resources labelled `T1 raw` and `QC,v2`, the PET/CT session
    /// files whose names hold brackets, braces, quotes, `+`, `%`, spaces and non-ASCII letters.
    pub fn sample(spec: &SampleSpec) -> Dataset {
        let mut b = Builder {
            next_resource: 1000,
            next_seed: 0,
            spec: spec.clone(),
        };
        let demo = vec![
            Arc::new(b.mr_session("XNAT_E00001", "SUBJ01_MR1", "DEMO", "2024-03-01")),
            Arc::new(b.mr_session("XNAT_E00002", "SUBJ02_MR1", "DEMO", "2024-03-08")),
        ];
        let mut edf = b.generated("SUBJ01_EEG1.edf", 100_000, Bytes::from_static(b"0       "));
        Arc::get_mut(&mut edf).expect("new file").listed_digest = false;
        let eeg = MockSession {
            id: "XNAT_E00004".into(),
            label: "SUBJ01_EEG1".into(),
            project: "PILOT".into(),
            subject_id: String::new(),
            subject_label: "SUBJ01".into(),
            xsi_type: "xnat:eegSessionData".into(),
            date: "2024-04-02".into(),
            scans: vec![MockScan {
                id: "1".into(),
                scan_type: "EEG".into(),
                series_description: "resting EEG".into(),
                quality: "usable".into(),
                xsi_type: "xnat:eegScanData".into(),
                resources: vec![b.resource("EDF", "EDF", vec![edf])],
            }],
            resources: vec![],
            assessors: Vec::new(),
        };
        let pilot = vec![
            Arc::new(b.mr_session("XNAT_E00003", "SUBJ01_MR1", "PILOT", "2023-11-20")),
            Arc::new(eeg),
        ];
        let mut petmr = session(
            ("XNAT_E00005", "SUBJ03_PETMR1", "MULTI", "2024-05-06"),
            "xnat:petmrSessionData",
            b.dicom_scans(&[
                ("1", "T1w", "xnat:mrScanData"),
                ("2", "FDG PET", "xnat:petScanData"),
            ]),
            Vec::new(),
        );
        // Labels XNAT cannot take in a path: a space, a comma.
        let raw = b.generated("T1w_raw.nii", 20_000, Bytes::new());
        petmr.scans[0]
            .resources
            .push(b.resource("T1 raw", "NIFTI", vec![raw]));
        let report = MockFile::new(
            "report.txt",
            Body::Memory(Bytes::from_static(b"PET/MR QC, second pass: pass\n")),
        );
        petmr
            .resources
            .push(b.resource("QC,v2", "TXT", vec![report]));
        // Names Tomcat refuses raw in a path, and names XNAT's decoded lookup would change.
        let names = [
            "run[1].nii",
            "echo{2}|x^y.json",
            "say \"hi\" <now>.txt",
            "a+b.txt",
            "100%.txt",
            "50% + résumé.txt",
            "données/T1 [v2].nii",
        ];
        let odd = names
            .iter()
            .map(|name| b.generated(name, 1_000 + name.len() as u64, Bytes::new()))
            .collect();
        let petct = session(
            ("XNAT_E00006", "SUBJ03_PETCT1", "MULTI", "2024-05-07"),
            "xnat:petSessionData",
            b.dicom_scans(&[
                ("1", "CT AC", "xnat:ctScanData"),
                ("2", "FDG PET", "xnat:petScanData"),
            ]),
            vec![b.resource("NOTES", "MISC", odd)],
        );
        // A clinical form: a subject assessor that is not an imaging session (no scans).
        let form = session(
            ("XNAT_E00007", "SUBJ03_VARS1", "MULTI", "2024-05-06"),
            "xnat:subjectVariablesData",
            Vec::new(),
            Vec::new(),
        );
        // Assessors of the PET/MR session (made last: the other files keep their seeds):
        // FreeSurfer's output in subfolders, and a QC report.
        let aseg = b.generated("stats/aseg.stats", 3_000, Bytes::from_static(b"# aseg\n"));
        let mgz = b.generated("mri/aseg.mgz", 50_000, Bytes::new());
        let freesurfer = b.resource("DATA", "MGZ", vec![aseg, mgz]);
        let qc = MockFile::new(
            "qc.html",
            Body::Memory(Bytes::from_static(b"<html>FreeSurfer QC: pass</html>\n")),
        );
        let qc = b.resource("QC", "HTML", vec![qc]);
        petmr.assessors = vec![
            MockAssessor {
                id: "XNAT_E00008".into(),
                label: "SUBJ03_PETMR1_freesurfer".into(),
                xsi_type: "fs:fsData".into(),
                kind: Derived::Assessor,
                resources: vec![freesurfer],
            },
            MockAssessor {
                id: "XNAT_E00009".into(),
                label: "SUBJ03_PETMR1_qc".into(),
                xsi_type: "xnat:qcManualAssessorData".into(),
                kind: Derived::Assessor,
                resources: vec![qc],
            },
        ];
        // A reconstruction of the PET/MR session (made after the assessors, for the same
        // reason): an attenuation-corrected PET, named by its ID (reconstructions have no
        // label).
        let pet_ac = b.generated("pet_ac.nii.gz", 20_000, Bytes::from_static(b"\x1f\x8b"));
        let pet_ac = b.resource("NIFTI", "NIFTI", vec![pet_ac]);
        petmr.assessors.push(MockAssessor {
            id: "PET_AC".into(),
            label: "PET_AC".into(),
            xsi_type: "xnat:reconstructedImageData".into(),
            kind: Derived::Reconstruction,
            resources: vec![pet_ac],
        });
        let multi = vec![Arc::new(petmr), Arc::new(form), Arc::new(petct)];
        let mut data = Dataset {
            projects: vec![
                MockProject {
                    id: "DEMO".into(),
                    name: "Demo project".into(),
                    sessions: demo,
                },
                MockProject {
                    id: "PILOT".into(),
                    name: "Pilot study".into(),
                    sessions: pilot,
                },
                MockProject {
                    id: "MULTI".into(),
                    name: "Multimodal study".into(),
                    sessions: multi,
                },
            ],
            shares: Vec::new(),
            configs: Vec::new(),
        };
        data.number_subjects();
        data
    }

    /// Gives each (project, subject label) an accession ID, `XNAT_S00001` on.
    pub(super) fn number_subjects(&mut self) {
        let mut ids: Vec<(String, String)> = Vec::new();
        for p in &mut self.projects {
            for s in &mut p.sessions {
                let key = (s.project.clone(), s.subject_label.clone());
                let n = match ids.iter().position(|k| *k == key) {
                    Some(i) => i + 1,
                    None => {
                        ids.push(key);
                        ids.len()
                    }
                };
                Arc::make_mut(s).subject_id = format!("XNAT_S{n:05}");
            }
        }
    }

    /// Adds project `COHORT` of `sessions` small MR sessions, as a cohort of thousands is
    /// shaped for benchmarks of crawling and prefetching: each has 2 scans (1 T1w, 2 rsfMRI)
    /// of one DICOM resource of 3 small files, and one session resource (QC, one file).
    /// Accession IDs `XNAT_E100001` on, labels `C0001_MR1` on.
    pub fn with_cohort(mut self, sessions: usize) -> Dataset {
        if sessions == 0 {
            return self;
        }
        let mut b = Builder {
            next_resource: 1_000_000,
            next_seed: 1_000_000,
            spec: SampleSpec::default(),
        };
        let mut cohort = Vec::with_capacity(sessions);
        for n in 1..=sessions {
            let small = |b: &mut Builder, scan: &str| {
                let files = (1..=3)
                    .map(|i| {
                        let name = format!("1.3.12.2.1107.5.2.{scan}.{i:05}.dcm");
                        b.generated(&name, 2_000 + 100 * i, dicom_prefix())
                    })
                    .collect();
                b.resource("DICOM", "DICOM", files)
            };
            let scans = vec![
                scan("1", "T1w", "xnat:mrScanData", vec![small(&mut b, "1")]),
                scan("2", "rsfMRI", "xnat:mrScanData", vec![small(&mut b, "2")]),
            ];
            let qc = b.generated("qc.png", 3_000, Bytes::from_static(b"\x89PNG"));
            let resources = vec![b.resource("QC", "PNG", vec![qc])];
            let id = format!("XNAT_E{:06}", 100_000 + n);
            let label = format!("C{n:04}_MR1");
            let at = (id.as_str(), label.as_str(), "COHORT", "2025-01-01");
            cohort.push(Arc::new(session(
                at,
                "xnat:mrSessionData",
                scans,
                resources,
            )));
        }
        self.projects.push(MockProject {
            id: "COHORT".into(),
            name: format!("A cohort of {sessions} sessions"),
            sessions: cohort,
        });
        self.number_subjects();
        self
    }

    /// A tiny data set for core tests: project `P` with one session (`S1`, accession ID
    /// `E1`), whose scan `2` and the session itself each hold a resource `DICOM` of files
    /// 10, 20, 30 and 40 bytes long (three of them in subfolders); and a project whose name
    /// (`..`) is unsafe.
    pub fn tiny() -> Dataset {
        let files = || {
            [
                ("a.dcm", 10),
                ("sub/b.dcm", 20),
                ("sub/deep/c.dcm", 30),
                ("sub/d.dcm", 40),
            ]
            .into_iter()
            .map(|(path, n)| MockFile::new(path, Body::Memory(vec![b'x'; n].into())))
            .collect()
        };
        let dicom = |id| MockResource {
            id,
            label: "DICOM".into(),
            format: "DICOM".into(),
            content: String::new(),
            files: files(),
        };
        let session = MockSession {
            id: "E1".into(),
            label: "S1".into(),
            project: "P".into(),
            subject_id: "XNAT_S1".into(),
            subject_label: "S".into(),
            xsi_type: "xnat:mrSessionData".into(),
            date: String::new(),
            scans: vec![MockScan {
                id: "2".into(),
                scan_type: "T1".into(),
                series_description: String::new(),
                quality: String::new(),
                xsi_type: "xnat:mrScanData".into(),
                resources: vec![dicom(11)],
            }],
            resources: vec![dicom(12)],
            assessors: Vec::new(),
        };
        let project = |id: &str, sessions| MockProject {
            id: id.into(),
            name: id.into(),
            sessions,
        };
        Dataset {
            projects: vec![project("P", vec![Arc::new(session)]), project("..", vec![])],
            shares: Vec::new(),
            configs: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cohort_is_sessions_of_two_scans_of_three_files_and_a_session_resource() {
        let data = Dataset::sample(&SampleSpec::default()).with_cohort(20);
        let cohort = data.projects.iter().find(|p| p.id == "COHORT").unwrap();
        assert_eq!(cohort.sessions.len(), 20);
        for s in &cohort.sessions {
            assert_eq!(s.scans.len(), 2);
            assert!(s.scans.iter().all(|sc| sc.resources[0].files.len() == 3));
            assert_eq!(s.resources.len(), 1);
        }
        assert_eq!(cohort.sessions[0].id, "XNAT_E100001");
        assert_eq!(cohort.sessions[19].label, "C0020_MR1");
        let ids: std::collections::HashSet<u64> =
            data.all_files().iter().map(|(_, _, r, _)| r.id).collect();
        // Every resource ID is its own (the sample's and the cohort's).
        let resources = data.projects.iter().flat_map(|p| &p.sessions).map(|s| {
            s.resources.len() + s.scans.iter().map(|sc| sc.resources.len()).sum::<usize>()
        });
        assert_eq!(ids.len(), resources.sum::<usize>());
    }

    #[test]
    fn sample_is_deterministic_and_has_the_quirks() {
        let a = Dataset::sample(&SampleSpec::default());
        let b = Dataset::sample(&SampleSpec::default());
        let (fa, fb) = (a.all_files(), b.all_files());
        assert_eq!(fa.len(), fb.len());
        assert_eq!(fa[5].3.md5(), fb[5].3.md5());
        let labels: Vec<_> = a
            .projects
            .iter()
            .flat_map(|p| &p.sessions)
            .map(|s| s.label.as_str())
            .collect();
        assert_eq!(labels.iter().filter(|l| **l == "SUBJ01_MR1").count(), 2);
        assert!(fa.iter().any(|f| f.3.path.contains('/')));
        assert!(fa.iter().any(|f| f.3.path.contains(' ')));
        let dcm = fa.iter().find(|f| f.3.path.ends_with(".dcm")).unwrap().3;
        assert_eq!(&dcm.read_at(128, 4).unwrap(), b"DICM");
    }
}
