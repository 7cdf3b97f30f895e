//! Unit tests of planning: what a session's tree becomes, and what is left out.

use super::*;
use crate::mock::MemoryXnat;
use crate::mock::data::{Dataset, SampleSpec};
use crate::mock::failing::FailingXnat;
use crate::prefetch::select::ScanSelector;
use crate::xnat::XnatError;

fn sample() -> Dataset {
    Dataset::sample(&SampleSpec {
        dicom_files: 2,
        dicom_size: 100,
        nifti_size: 100,
        scans: 3,
    })
}

fn everything() -> Selection {
    Selection {
        scans: ScanSelector::All,
        include: Vec::new(),
        exclude: Vec::new(),
        session_resources: true,
        assessors: false,
        reconstructions: false,
    }
}

async fn sessions(api: &dyn XnatApi, ids: &[&str]) -> Vec<(String, Session)> {
    let mut out = Vec::new();
    for id in ids {
        out.push((id.to_string(), api.session(None, id).await.unwrap()));
    }
    out
}

#[tokio::test]
async fn a_failing_listing_leaves_out_its_item_and_the_rest_is_planned() {
    let fail = [
        "/data/experiments/XNAT_E00001/scans",
        "/data/experiments/XNAT_E00002/scans/2/resources",
        "/data/experiments/XNAT_E00002/resources/QC/files",
    ];
    let api = FailingXnat {
        inner: MemoryXnat::new(sample()),
        fail: fail.iter().map(|s| s.to_string()).collect(),
        err: XnatError::Status {
            status: 500,
            path: "/x".into(),
            retry_after: None,
            by: None,
        },
    };
    let dir = tempfile::tempdir().unwrap();
    let dest = Destination::Out {
        root: dir.path().to_path_buf(),
        name: None,
    };
    let sessions = sessions(&api, &["XNAT_E00001", "XNAT_E00002"]).await;
    let breaker = Breaker::default();
    let plan = build(&api, &sessions, &everything(), &dest, 4, &breaker)
        .await
        .unwrap();
    let items: Vec<&str> = plan.problems.iter().map(|p| p.item.as_str()).collect();
    assert_eq!(items, fail);
    assert!(plan.problems[0].why.contains("HTTP 500"));
    // The rest of XNAT_E00002: scans 1 and 3 (DICOM), its session resources but QC.
    let mut planned: Vec<String> = plan.resources.iter().map(|r| r.res.label_path()).collect();
    planned.sort();
    let mut want: Vec<String> = [
        "/data/experiments/XNAT_E00002/scans/1/resources/DICOM",
        "/data/experiments/XNAT_E00002/scans/3/resources/DICOM",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let session_res = api.inner.resources("XNAT_E00002", None).await.unwrap();
    want.extend(
        session_res
            .iter()
            .filter(|r| r.label != "QC")
            .map(|r| format!("/data/experiments/XNAT_E00002/resources/{}", r.label)),
    );
    want.sort();
    assert_eq!(planned, want);
    assert!(!breaker.tripped());
}

#[tokio::test]
async fn listings_that_cannot_reach_the_server_stop_the_plan() {
    let api = FailingXnat {
        inner: MemoryXnat::new(sample()),
        fail: ["XNAT_E00001", "XNAT_E00002", "XNAT_E00003", "XNAT_E00004"]
            .iter()
            .map(|id| format!("/data/experiments/{id}/scans"))
            .collect(),
        err: XnatError::Network {
            path: "/x".into(),
            msg: "Connection refused".into(),
        },
    };
    let dest = Destination::Out {
        root: PathBuf::from("/nonexistent"),
        name: None,
    };
    let ids = ["XNAT_E00001", "XNAT_E00002", "XNAT_E00003", "XNAT_E00004"];
    let sessions = sessions(&api, &ids).await;
    let breaker = Breaker::new(3);
    let e = build(&api, &sessions, &everything(), &dest, 4, &breaker)
        .await
        .unwrap_err();
    assert!(e.downcast_ref::<Unreachable>().is_some(), "{e}");
    assert!(breaker.tripped());
    // Fewer in a row than the limit: each is a problem, the plan goes on.
    let breaker = Breaker::new(5);
    let plan = build(&api, &sessions, &everything(), &dest, 4, &breaker)
        .await
        .unwrap();
    assert_eq!(plan.problems.len(), 4);
}
