//! XNAT's data model as real servers answer it: sessions of every modality, experiments that
//! are not imaging sessions, resource labels XNAT cannot take in a path, file names Tomcat
//! refuses raw.

use crate::common::*;
use crate::metadata::getxattr;

/// The files of project `project` in a mount with no -P or -E, relative to its folder, with
/// their MD5s.
fn files_of_project(data: &xnatfs::mock::data::Dataset, project: &str) -> Vec<(String, String)> {
    let prefix = format!("{project}/");
    expected_files(data)
        .into_iter()
        .filter_map(|(path, _, md5)| {
            let rel = path.to_str()?.strip_prefix(&prefix)?.to_string();
            Some((rel, md5))
        })
        .collect()
}

/// A PET/MR session shows its MR and PET scans, a PET/CT session its CT and PET scans: the
/// scans listing is asked with no `xsiType` (the mock fails a made-up one, as XNAT does).
#[test]
fn sessions_of_every_modality_show_all_their_scans() {
    let data = small_sample();
    let want = files_of_project(&data, "MULTI");
    let mock = start_mock(data);
    let m = MountBuilder::new(&mock.url())
        .args(&["-P", "MULTI"])
        .mount();
    for session in ["SUBJ03_PETMR1", "SUBJ03_PETCT1"] {
        assert_eq!(dir_names(&m.path(&format!("{session}/scans"))), ["1", "2"]);
    }
    assert!(
        want.iter()
            .any(|(p, _)| p.starts_with("SUBJ03_PETCT1/scans/1/"))
    );
    for (rel, md5) in &want {
        assert_eq!(&md5_file(&m.path(rel)), md5, "{rel}");
    }
    let log = mock.state.request_log();
    assert_eq!(scans_listed_with_a_type(&log), Vec::<&String>::new());
}

/// A project lists every subject assessor, clinical forms included; the mount shows its
/// imaging sessions only, and a crawl of the whole server meets no experiment without scans.
#[test]
fn a_clinical_form_in_a_project_is_not_shown_and_breaks_no_crawl() {
    let data = small_sample();
    let want = files_of_project(&data, "MULTI");
    let mock = start_mock(data);
    let m = MountBuilder::new(&mock.url()).mount();
    let multi = m.path("MULTI");
    assert_eq!(dir_names(&multi), ["SUBJ03_PETCT1", "SUBJ03_PETMR1"]);
    let got: Vec<String> = walk_files(&multi)
        .into_iter()
        .map(|(p, _)| p.to_string_lossy().into_owned())
        .collect();
    assert_eq!(got, want.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>());
    let log = mock.state.request_log();
    let listing = format!(
        "GET /data/projects/MULTI/experiments?format=json&xsiType=xnat:imageSessionData&columns={}",
        xnatfs::xnat::http::SESSION_COLUMNS
    );
    assert!(log.contains(&listing), "{log:?}");
    assert!(!log.iter().any(|r| r.contains("XNAT_E00007")), "{log:?}");
}

/// Resources labelled `T1 raw` (a space) and `QC,v2` (a comma) show their files: requests
/// name resources by numeric ID (XNAT takes a label in a path undecoded and split on commas,
/// and lists no files for `T1%20raw`), folders by label.
#[test]
fn resource_labels_with_a_space_or_a_comma_show_their_files() {
    let data = small_sample();
    let raw = "MULTI/SUBJ03_PETMR1/scans/1/resources/T1 raw/files/T1w_raw.nii";
    let raw_md5 = mock_file(&data, raw).md5();
    let mock = start_mock(data);
    let m = MountBuilder::new(&mock.url())
        .args(&["-P", "MULTI"])
        .mount();
    let scan = m.path("SUBJ03_PETMR1/scans/1/resources");
    assert_eq!(dir_names(&scan), ["DICOM", "T1 raw"]);
    assert_eq!(dir_names(&scan.join("T1 raw/files")), ["T1w_raw.nii"]);
    assert_eq!(md5_file(&scan.join("T1 raw/files/T1w_raw.nii")), raw_md5);
    let qc = m.path("SUBJ03_PETMR1/resources/QC,v2/files/report.txt");
    let report = std::fs::read_to_string(qc).unwrap();
    assert!(report.starts_with("PET/MR QC"), "{report}");
    let log = mock.state.request_log();
    assert_eq!(resources_named_by_label(&log), Vec::<&String>::new());
}

/// File names with brackets, braces, quotes, `+`, `%`, spaces and non-ASCII letters read
/// right: paths are percent-encoded as Tomcat takes them (it refuses raw `[ ] { } | ^ " < >`)
/// and XNAT decodes them.
#[test]
fn file_names_tomcat_refuses_raw_read_right() {
    let data = small_sample();
    let dir = "SUBJ03_PETCT1/resources/NOTES/files";
    let want: Vec<(String, String)> = files_of_project(&data, "MULTI")
        .into_iter()
        .filter(|(p, _)| p.starts_with(dir))
        .collect();
    assert_eq!(want.len(), 7);
    let mock = start_mock(data);
    let m = MountBuilder::new(&mock.url())
        .args(&["-P", "MULTI"])
        .mount();
    let names = dir_names(&m.path(dir));
    assert!(names.contains(&"run[1].nii".to_string()), "{names:?}");
    assert!(names.contains(&"50% + résumé.txt".to_string()), "{names:?}");
    for (rel, md5) in &want {
        assert_eq!(&md5_file(&m.path(rel)), md5, "{rel}");
    }
    let log = mock.state.request_log();
    for sent in [
        "/run%5B1%5D.nii",
        "/50%25%20%2B%20r%C3%A9sum%C3%A9.txt",
        "/a+b.txt",
    ] {
        assert!(log.iter().any(|r| r.ends_with(sent)), "{sent}: {log:?}");
    }
}

/// A session's assessors show under `<session>/assessors/<label>/resources/<label>/files`,
/// listed from the session's assessors, and read with the right bytes; a session without
/// assessors shows an empty `assessors/`.
#[test]
fn assessors_show_with_their_resources_and_read_right() {
    let data = small_sample();
    let want: Vec<_> = files_of_project(&data, "MULTI")
        .into_iter()
        .filter(|(p, _)| p.contains("/assessors/"))
        .collect();
    assert_eq!(want.len(), 3, "{want:?}");
    let mock = start_mock(data);
    let m = MountBuilder::new(&mock.url())
        .args(&["-P", "MULTI"])
        .mount();
    assert_eq!(
        dir_names(&m.path("SUBJ03_PETMR1")),
        ["assessors", "reconstructions", "resources", "scans"]
    );
    assert_eq!(
        dir_names(&m.path("SUBJ03_PETMR1/assessors")),
        ["SUBJ03_PETMR1_freesurfer", "SUBJ03_PETMR1_qc"]
    );
    assert_eq!(
        dir_names(&m.path("SUBJ03_PETMR1/assessors/SUBJ03_PETMR1_freesurfer/resources/DATA/files")),
        ["mri", "stats"]
    );
    for (rel, md5) in &want {
        assert_eq!(&md5_file(&m.path(rel)), md5, "{rel}");
    }
    let qc = std::fs::read_to_string(
        m.path("SUBJ03_PETMR1/assessors/SUBJ03_PETMR1_qc/resources/QC/files/qc.html"),
    )
    .unwrap();
    assert!(qc.contains("FreeSurfer QC: pass"), "{qc}");
    assert!(dir_names(&m.path("SUBJ03_PETCT1/assessors")).is_empty());
    let log = mock.state.request_log();
    assert!(
        !log.iter().any(|l| l.contains("XNAT_E00006/assessors")),
        "a session without assessors is not asked for them: {log:?}"
    );
}

/// A session's reconstructions show under `<session>/reconstructions/<ID>/resources/<label>/
/// files` (named by ID: XNAT gives them no label), with XNAT's attributes, and read right; a
/// session without any shows an empty `reconstructions/`.
#[test]
fn reconstructions_show_with_their_resources_and_read_right() {
    let data = small_sample();
    let want: Vec<_> = files_of_project(&data, "MULTI")
        .into_iter()
        .filter(|(p, _)| p.contains("/reconstructions/"))
        .collect();
    assert_eq!(want.len(), 1, "{want:?}");
    let mock = start_mock(data);
    let m = MountBuilder::new(&mock.url())
        .args(&["-P", "MULTI"])
        .mount();
    assert_eq!(
        dir_names(&m.path("SUBJ03_PETMR1/reconstructions")),
        ["PET_AC"]
    );
    let files = "SUBJ03_PETMR1/reconstructions/PET_AC/resources/NIFTI/files";
    assert_eq!(dir_names(&m.path(files)), ["pet_ac.nii.gz"]);
    for (rel, md5) in &want {
        assert_eq!(&md5_file(&m.path(rel)), md5, "{rel}");
    }
    let recon = m.path("SUBJ03_PETMR1/reconstructions/PET_AC");
    let xsi = getxattr(&recon, "user.xnat.xsi_type").unwrap();
    assert_eq!(xsi, "xnat:reconstructedImageData");
    let file = m.path(&format!("{files}/pet_ac.nii.gz"));
    let uri = getxattr(&file, "user.xnat.uri").unwrap();
    assert!(
        uri.contains("/data/experiments/XNAT_E00005/reconstructions/PET_AC/out/resources/"),
        "{uri}"
    );
    assert!(dir_names(&m.path("SUBJ03_PETCT1/reconstructions")).is_empty());
}

/// An assessor whose label cannot be a folder name is left out; the others show.
#[test]
fn an_assessor_with_an_unsafe_label_is_left_out() {
    let mut data = small_sample();
    let petmr = data.projects[2]
        .sessions
        .iter_mut()
        .find(|s| s.id == "XNAT_E00005")
        .unwrap();
    let petmr = std::sync::Arc::get_mut(petmr).unwrap();
    let mut evil = petmr.assessors[1].clone();
    evil.id = "XNAT_E00010".into();
    evil.label = "..".into();
    petmr.assessors.push(evil);
    let mock = start_mock(data);
    let m = MountBuilder::new(&mock.url())
        .args(&["-P", "MULTI"])
        .mount();
    assert_eq!(
        dir_names(&m.path("SUBJ03_PETMR1/assessors")),
        ["SUBJ03_PETMR1_freesurfer", "SUBJ03_PETMR1_qc"]
    );
}
