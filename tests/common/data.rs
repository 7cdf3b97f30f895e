//! The mock's data set in tests: the small sample and where its files show in a mount.

use std::path::PathBuf;
use xnatfs::mock::data::{Dataset, SampleSpec};

pub fn small_sample() -> Dataset {
    Dataset::sample(&SampleSpec {
        dicom_files: 6,
        dicom_size: 4096,
        nifti_size: 300_000,
        scans: 3,
    })
}

/// The mount-relative path of each sample file under a `-P`-less mount, with its MD5.
pub fn expected_files(data: &Dataset) -> Vec<(PathBuf, u64, String)> {
    let mut out: Vec<_> = data
        .all_files()
        .into_iter()
        .map(|(s, scan, r, f)| {
            let path = match scan {
                Some(sc) => format!(
                    "{}/{}/scans/{}/resources/{}/files/{}",
                    s.project, s.label, sc.id, r.label, f.path
                ),
                None => format!(
                    "{}/{}/resources/{}/files/{}",
                    s.project, s.label, r.label, f.path
                ),
            };
            (PathBuf::from(path), f.size(), f.md5().to_string())
        })
        .collect();
    out.sort();
    out
}
