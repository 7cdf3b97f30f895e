//! A project of BIDS data as XNAT sites store it, for the BIDS view (`xnatfs mount --bids`):
//! most sessions as NRG's `dcm2bids-session` container leaves them (NrgXnat/docker-images,
//! `dcm2bids-session/dcm2bids_wholeSession.py`): per scan a `NIFTI` resource with the
//! `.nii.gz` and a `BIDS` resource with the JSON sidecar (and bval/bvec), per session a `BIDS`
//! resource with `dataset_description.json`, `CHANGES` and `sub-X_ses-Y_scans.tsv` (columns
//! `filename`, `xnat_session_id`, `xnat_scan_id`). Files are named `sub-<subject label without
//! _ or ->_ses-<session label without _ or ->_<bidsname>`.
//!
//! Beside them, one of each other case the view must handle: a session whose `BIDS` resource
//! holds a whole `sub-*/ses-*` tree (xnatworks' `bids-materialize` and others), one whose scans
//! have BIDS-named NIfTI and sidecars but no session `BIDS` resource, one with NIfTI under
//! dcm2niix's default names only, two subjects whose labels are one after sanitising, and one
//! session of DICOM only.
//!
//! The NIfTI files are real gzipped NIfTI-1 images (small, with headers the BIDS validator
//! reads), so that the view validates.

use super::data::Dataset;
use super::data::{Body, MockFile, MockProject, MockResource, MockScan, MockSession};
use bytes::Bytes;
use std::io::Write;
use std::sync::Arc;

/// The project's ID.
pub const PROJECT: &str = "BIDSDEMO";

/// A BIDS map (as `dcm2bids-session` reads it) of two of the project's series.
pub const BIDS_MAP: &str = r#"[
  {"series_description": "T1_MPRAGE", "bidsname": "T1w"},
  {"series_description": "rsfmri", "bidsname": "task-rest_bold"}
]
"#;

/// A gzipped NIfTI-1 image of `dims` voxels (x, y, z[, t]) of one byte each, 1 mm voxels and
/// `tr` seconds between volumes.
pub fn nifti_gz(dims: &[u16], tr: f32, seed: u8) -> Bytes {
    let mut h = vec![0u8; 348];
    h[0..4].copy_from_slice(&348i32.to_le_bytes());
    let mut dim = [1i16; 8];
    dim[0] = dims.len() as i16;
    for (i, d) in dims.iter().enumerate() {
        dim[i + 1] = *d as i16;
    }
    for (i, d) in dim.iter().enumerate() {
        h[40 + 2 * i..42 + 2 * i].copy_from_slice(&d.to_le_bytes());
    }
    h[70..72].copy_from_slice(&2i16.to_le_bytes()); // datatype: unsigned char
    h[72..74].copy_from_slice(&8i16.to_le_bytes()); // bitpix
    let pixdim = [1.0f32, 1.0, 1.0, 1.0, tr, 0.0, 0.0, 0.0];
    for (i, p) in pixdim.iter().enumerate() {
        h[76 + 4 * i..80 + 4 * i].copy_from_slice(&p.to_le_bytes());
    }
    h[108..112].copy_from_slice(&352f32.to_le_bytes()); // vox_offset
    h[123] = 2 | 8; // xyzt_units: mm, s
    h[252..254].copy_from_slice(&1i16.to_le_bytes()); // qform_code
    h[254..256].copy_from_slice(&1i16.to_le_bytes()); // sform_code
    for (row, at) in [280, 296, 312].into_iter().enumerate() {
        for col in 0..4 {
            let v: f32 = if col == row { 1.0 } else { 0.0 };
            h[at + 4 * col..at + 4 * col + 4].copy_from_slice(&v.to_le_bytes());
        }
    }
    h[344..348].copy_from_slice(b"n+1\0");
    h.extend_from_slice(&[0; 4]); // no extensions
    let voxels: usize = dims.iter().map(|&d| d as usize).product();
    h.extend((0..voxels).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)));
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::fast());
    gz.write_all(&h).expect("in memory");
    Bytes::from(gz.finish().expect("in memory"))
}

/// A label as `dcm2bids-session` puts it in a file name: without `_` and `-`.
fn dcm2bids_label(label: &str) -> String {
    label.chars().filter(|c| *c != '_' && *c != '-').collect()
}

struct Builder {
    next_resource: u64,
    next_session: u64,
}

/// One scan's BIDS data: its datatype folder, the name after `sub-X_ses-Y_`, the NIfTI's
/// dimensions and TR, and its sidecars (extension, text).
struct ScanSpec {
    id: &'static str,
    series: &'static str,
    datatype: &'static str,
    name: &'static str,
    dims: &'static [u16],
    tr: f32,
    sidecars: Vec<(&'static str, String)>,
}

fn scan_specs() -> Vec<ScanSpec> {
    vec![
        ScanSpec {
            id: "2",
            series: "T1_MPRAGE",
            datatype: "anat",
            name: "T1w",
            dims: &[8, 8, 6],
            tr: 0.0,
            sidecars: vec![(
                ".json",
                r#"{"Modality": "MR", "MagneticFieldStrength": 3, "RepetitionTime": 2.3, "EchoTime": 0.00298}"#.into(),
            )],
        },
        ScanSpec {
            id: "3",
            series: "rsfMRI",
            datatype: "func",
            name: "task-rest_bold",
            dims: &[4, 4, 3, 5],
            tr: 2.0,
            sidecars: vec![(
                ".json",
                r#"{"TaskName": "rest", "RepetitionTime": 2.0, "EchoTime": 0.03, "SliceTiming": [0.0, 0.66, 1.33]}"#.into(),
            )],
        },
        ScanSpec {
            id: "4",
            series: "DTI_64dir",
            datatype: "dwi",
            name: "dwi",
            dims: &[4, 4, 3, 3],
            tr: 1.0,
            sidecars: vec![
                (".json", r#"{"RepetitionTime": 1.0, "EchoTime": 0.08}"#.into()),
                (".bval", "0 1000 1000\n".into()),
                (".bvec", "0 1 0\n0 0 1\n0 0 0\n".into()),
            ],
        },
    ]
}

impl Builder {
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

    fn session(
        &mut self,
        subject: &str,
        label: &str,
        scans: Vec<MockScan>,
        resources: Vec<MockResource>,
    ) -> MockSession {
        self.next_session += 1;
        MockSession {
            id: format!("XNAT_E{:06}", 200_000 + self.next_session),
            label: label.into(),
            project: PROJECT.into(),
            subject_id: String::new(),
            subject_label: subject.into(),
            xsi_type: "xnat:mrSessionData".into(),
            date: "2025-02-03".into(),
            scans,
            resources,
            assessors: Vec::new(),
        }
    }

    fn dicom(&mut self, scan: &str) -> MockResource {
        let files = (1..=2)
            .map(|i| {
                let mut body = vec![0u8; 128];
                body.extend_from_slice(b"DICM");
                body.extend(std::iter::repeat_n(i as u8, 900));
                MockFile::new(
                    format!("1.3.12.2.1107.5.2.{scan}.{i:05}.dcm"),
                    Body::Memory(body.into()),
                )
            })
            .collect();
        self.resource("DICOM", "DICOM", files)
    }

    /// The scans of a converted session: a localizer (DICOM only), then each of
    /// [`scan_specs`] with `NIFTI` and, when `bids_names`, `BIDS` resources named
    /// `<base>_<name>`; without `bids_names` the NIfTI and its JSON are named as dcm2niix
    /// names them by default (`<series>_<scan>`), in the `NIFTI` resource.
    fn converted_scans(&mut self, base: &str, bids_names: bool, seed: u8) -> Vec<MockScan> {
        let mut scans = vec![scan("1", "Localizer", vec![self.dicom("1")])];
        for spec in scan_specs() {
            let image = nifti_gz(spec.dims, spec.tr, seed);
            let mut resources = vec![self.dicom(spec.id)];
            if bids_names {
                let stem = format!("{base}_{}", spec.name);
                let nifti = MockFile::new(format!("{stem}.nii.gz"), Body::Memory(image));
                resources.push(self.resource("NIFTI", "NIFTI", vec![nifti]));
                let sidecars = (spec.sidecars.iter())
                    .map(|(ext, text)| {
                        MockFile::new(format!("{stem}{ext}"), Body::Memory(text.clone().into()))
                    })
                    .collect();
                resources.push(self.resource("BIDS", "BIDS", sidecars));
            } else {
                scans.push(self.dcm2niix_scan(&spec, spec.id, "usable", seed));
                continue;
            }
            scans.push(MockScan {
                series_description: spec.series.into(),
                ..scan(spec.id, spec.series, resources)
            });
        }
        scans
    }

    /// Scan `id` of `spec`'s series converted by dcm2niix alone: its DICOM, and a `NIFTI`
    /// resource with the image and its JSON under dcm2niix's default names
    /// (`<series>_<scan>.nii.gz`).
    fn dcm2niix_scan(&mut self, spec: &ScanSpec, id: &str, quality: &str, seed: u8) -> MockScan {
        let stem = format!("{}_{id}", spec.series);
        let image = nifti_gz(spec.dims, spec.tr, seed);
        let nifti = MockFile::new(format!("{stem}.nii.gz"), Body::Memory(image));
        let (_, json) = &spec.sidecars[0];
        let json = MockFile::new(format!("{stem}.json"), Body::Memory(json.clone().into()));
        let resources = vec![
            self.dicom(id),
            self.resource("NIFTI", "NIFTI", vec![nifti, json]),
        ];
        MockScan {
            series_description: spec.series.into(),
            quality: quality.into(),
            ..scan(id, spec.series, resources)
        }
    }

    /// A session as `dcm2bids-session` leaves it: scans with `NIFTI` and `BIDS` resources, and
    /// the session's `BIDS` resource with its `*_scans.tsv`.
    fn dcm2bids_session(&mut self, subject: &str, label: &str, seed: u8) -> MockSession {
        let base = format!(
            "sub-{}_ses-{}",
            dcm2bids_label(subject),
            dcm2bids_label(label)
        );
        let scans = self.converted_scans(&base, true, seed);
        let id = format!("XNAT_E{:06}", 200_000 + self.next_session + 1);
        let mut tsv = String::from("filename\txnat_session_id\txnat_scan_id\n");
        for spec in scan_specs() {
            let file = format!("{}/{base}_{}.nii.gz", spec.datatype, spec.name);
            tsv.push_str(&format!("{file}\t{id}\t{}\n", spec.id));
        }
        let description = format!(
            "{{\"Name\": \"{label}\", \"BIDSVersion\": \"1.0.1\", \"DatasetDOI\": \"/data/experiments/{id}\"}}\n"
        );
        let files = vec![
            MockFile::new("dataset_description.json", Body::Memory(description.into())),
            MockFile::new(
                "CHANGES",
                Body::Memory("1.0 converted by dcm2bids-session\n".into()),
            ),
            MockFile::new(format!("{base}_scans.tsv"), Body::Memory(tsv.into())),
        ];
        let bids = self.resource("BIDS", "BIDS", files);
        self.session(subject, label, scans, vec![bids])
    }

    /// A session whose `BIDS` resource holds a whole tree: `sub-*/ses-*/<datatype>/...`, with
    /// a `dataset_description.json` beside it.
    fn whole_tree_session(&mut self, subject: &str, label: &str) -> MockSession {
        let (sub, ses) = (dcm2bids_label(subject), "1");
        let mut files = vec![MockFile::new(
            "dataset_description.json",
            Body::Memory(r#"{"Name": "materialized", "BIDSVersion": "1.8.0"}"#.into()),
        )];
        for spec in scan_specs().into_iter().take(2) {
            let dir = format!("sub-{sub}/ses-{ses}/{}", spec.datatype);
            let stem = format!("{dir}/sub-{sub}_ses-{ses}_{}", spec.name);
            let image = nifti_gz(spec.dims, spec.tr, 7);
            files.push(MockFile::new(format!("{stem}.nii.gz"), Body::Memory(image)));
            for (ext, text) in &spec.sidecars {
                let body = Body::Memory(text.clone().into());
                files.push(MockFile::new(format!("{stem}{ext}"), body));
            }
        }
        // What such trees hold beside BIDS files: notes someone kept with the data.
        let notes = Body::Memory("motion in run 2\n".into());
        files.push(MockFile::new(
            format!("sub-{sub}/ses-{ses}/notes.txt"),
            notes,
        ));
        let bids = self.resource("BIDS", "BIDS", files);
        let scans = vec![scan("1", "T1_MPRAGE", vec![self.dicom("1")])];
        self.session(subject, label, scans, vec![bids])
    }
}

fn scan(id: &str, ty: &str, resources: Vec<MockResource>) -> MockScan {
    MockScan {
        id: id.into(),
        scan_type: ty.into(),
        series_description: ty.into(),
        quality: "usable".into(),
        xsi_type: "xnat:mrScanData".into(),
        resources,
    }
}

/// The labels of the BIDS project's regular subjects (`P_001` on) and their two sessions
/// each (`P_001_MR1`, `P_001_MR2`).
pub fn regular_subject(n: usize) -> String {
    format!("P_{n:03}")
}

impl Dataset {
    /// Adds project [`PROJECT`] of `subjects` subjects of two `dcm2bids-session` sessions
    /// each, and one session of each other case (see the module's doc): subject `TREE_01`
    /// (a whole tree), `NAMES_01` (BIDS names, no `*_scans.tsv`), `RAW_01` (NIfTI under
    /// dcm2niix's names: T1_MPRAGE scans 2 and 6, unusable, rsfMRI scans 3 and 5, DTI_64dir
    /// scan 4), `COL_01` and `COL-01` (one label once sanitised), `DICOM_01` (DICOM only).
    /// Accession IDs `XNAT_E200001` on. The project has no BIDS map: [`BIDS_MAP`] is one for
    /// its series.
    pub fn with_bids(mut self, subjects: usize) -> Dataset {
        if subjects == 0 {
            return self;
        }
        let mut b = Builder {
            next_resource: 2_000_000,
            next_session: 0,
        };
        let mut sessions = Vec::new();
        for n in 1..=subjects {
            let subject = regular_subject(n);
            for visit in 1..=2 {
                let label = format!("{subject}_MR{visit}");
                let seed = (n * 2 + visit) as u8;
                sessions.push(b.dcm2bids_session(&subject, &label, seed));
            }
        }
        sessions.push(b.whole_tree_session("TREE_01", "TREE_01_MR1"));
        let base = "sub-NAMES01_ses-NAMES01MR1";
        let scans = b.converted_scans(base, true, 3);
        sessions.push(b.session("NAMES_01", "NAMES_01_MR1", scans, Vec::new()));
        // Scans 2-4 as dcm2niix names them, then a second rest run (5) and an unusable T1 (6).
        let mut scans = b.converted_scans("", false, 4);
        let specs = scan_specs();
        scans.push(b.dcm2niix_scan(&specs[1], "5", "usable", 8));
        scans.push(b.dcm2niix_scan(&specs[0], "6", "unusable", 9));
        sessions.push(b.session("RAW_01", "RAW_01_MR1", scans, Vec::new()));
        sessions.push(b.dcm2bids_session("COL_01", "COL_01_MR1", 5));
        sessions.push(b.dcm2bids_session("COL-01", "COL-01_MR1", 6));
        let scans = vec![scan("1", "T1_MPRAGE", vec![b.dicom("1")])];
        sessions.push(b.session("DICOM_01", "DICOM_01_MR1", scans, Vec::new()));
        self.projects.push(MockProject {
            id: PROJECT.into(),
            name: "A BIDS project".into(),
            sessions: sessions.into_iter().map(Arc::new).collect(),
        });
        self.number_subjects();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn a_nifti_is_a_gzipped_nifti1_header_and_its_voxels() {
        let gz = nifti_gz(&[4, 4, 3, 5], 2.0, 0);
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut raw)
            .unwrap();
        assert_eq!(raw.len(), 352 + 4 * 4 * 3 * 5);
        assert_eq!(&raw[0..4], &348i32.to_le_bytes());
        assert_eq!(&raw[344..348], b"n+1\0");
        assert_eq!(&raw[40..42], &4i16.to_le_bytes());
        assert_eq!(&raw[92..96], &2.0f32.to_le_bytes()); // pixdim[4]: the TR
    }

    #[test]
    fn the_bids_project_has_every_case() {
        let data = Dataset::default().with_bids(2);
        let p = data.projects.iter().find(|p| p.id == PROJECT).unwrap();
        assert_eq!(p.sessions.len(), 2 * 2 + 6);
        let first = &p.sessions[0];
        assert_eq!(first.label, "P_001_MR1");
        let tsv = &first.resources[0].files[2];
        assert_eq!(tsv.path, "sub-P001_ses-P001MR1_scans.tsv");
        let nifti = &first.scans[1].resources[1].files[0];
        assert_eq!(nifti.path, "sub-P001_ses-P001MR1_T1w.nii.gz");
        // The two colliding subjects are two subjects in XNAT.
        let col: Vec<_> = p
            .sessions
            .iter()
            .filter(|s| s.label.starts_with("COL"))
            .collect();
        assert_ne!(col[0].subject_id, col[1].subject_id);
    }
}
