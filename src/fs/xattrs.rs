//! XNAT's metadata as extended attributes (`user.xnat.*`, read with `getfattr -d`), taken from
//! what the listings already gave each folder and file: reading one never costs a request.
//!
//! | folder or file | attributes |
//! |---|---|
//! | project | `id` |
//! | session | `id` (accession ID), `label`, `project`, `subject_label` (when the listing gave it), `date`, `xsi_type` |
//! | scan | `id`, `type`, `series_description`, `quality`, `xsi_type` |
//! | resource | `id` (numeric), `label`, `format`, `content` |
//! | file | `md5` (when XNAT lists one), `uri`, `size` (as listed) |
//!
//! A value XNAT left empty is no attribute (ENODATA), as is any other name, except in the two
//! namespaces xnatfs has nothing of: `security.*` (SELinux and other security labels) and
//! `system.*` (POSIX ACLs), which are EOPNOTSUPP, as on a file system mounted without ACL
//! support. The mount is read-only: setting or removing one is EROFS.
//!
//! Why EOPNOTSUPP there: `ls -l` (GNU coreutils) asks every file it lists for
//! `security.selinux` and `system.posix_acl_access`, and the kernel caches neither answer for
//! a FUSE file system, so each is a round trip to the daemon (15–25 µs here; 200,000 files
//! took 11–20 s instead of 2–4 s). When the answer is EOPNOTSUPP, `ls` takes it that the
//! whole file system has no such attributes and asks no more for the rest of its run (its
//! `getfilecon_cache` and `file_has_acl_cache` remember the device). ENODATA would be asked
//! again for every file. On a host with SELinux enforcing, the kernel answers
//! `security.selinux` itself and never asks the daemon.

use super::errno::Errno;
use super::node::Node;

/// The namespace of every attribute shown.
pub const PREFIX: &str = "user.xnat.";

/// The attributes of `node`: names (after [`PREFIX`]) and values, in a fixed order; empty
/// values left out.
pub fn attributes(node: &Node) -> Vec<(&'static str, String)> {
    let all: Vec<(&'static str, &str)> = match node {
        Node::Project(id) => vec![("id", id)],
        Node::Session(s) => vec![
            ("id", &s.id),
            ("label", &s.label),
            ("project", &s.project),
            ("subject_label", &s.subject_label),
            ("date", &s.date),
            ("xsi_type", &s.xsi_type),
        ],
        Node::Scan(_, scan) => vec![
            ("id", &scan.id),
            ("type", &scan.scan_type),
            ("series_description", &scan.series_description),
            ("quality", &scan.quality),
            ("xsi_type", &scan.xsi_type),
        ],
        Node::Resource(res, r) => vec![
            ("id", &res.id),
            ("label", &res.label),
            ("format", &r.format),
            ("content", &r.content),
        ],
        Node::File(_, f) => {
            let md5 = f.digest.map(|d| d.hex());
            let uri = f.uri();
            let mut all = vec![];
            if let Some(md5) = &md5 {
                all.push(("md5", md5.as_str()));
            }
            all.push(("uri", &*uri));
            return with_size(all, f.size);
        }
        Node::Assessor(_, a) => vec![
            ("id", &a.id),
            ("label", &a.label),
            ("xsi_type", &a.xsi_type),
        ],
        Node::Root
        | Node::ScansDir(_)
        | Node::AssessorsDir(..)
        | Node::AssessorResources(..)
        | Node::ScanResources(..)
        | Node::SessionResources(_)
        | Node::FilesDir(..)
        | Node::BidsDir(_)
        | Node::Made(_) => vec![],
    };
    owned(all)
}

fn owned(all: Vec<(&'static str, &str)>) -> Vec<(&'static str, String)> {
    all.into_iter()
        .filter(|(_, v)| !v.trim().is_empty())
        .map(|(k, v)| (k, v.to_string()))
        .collect()
}

fn with_size(all: Vec<(&'static str, &str)>, size: u64) -> Vec<(&'static str, String)> {
    let mut all = owned(all);
    all.push(("size", size.to_string()));
    all
}

/// Whether xnatfs has attributes in `name`'s namespace: EOPNOTSUPP for `security.*` and
/// `system.*`, which it has none of (see the module's text for why this is not ENODATA).
pub fn namespace_supported(name: &[u8]) -> Result<(), Errno> {
    if name.starts_with(b"security.") || name.starts_with(b"system.") {
        Err(Errno::OPNOTSUPP)
    } else {
        Ok(())
    }
}

/// The value of attribute `name` (the full name, `user.xnat.md5`) of `node`; ENODATA when it
/// has none of that name.
pub fn value(node: &Node, name: &[u8]) -> Result<Vec<u8>, Errno> {
    let short = name.strip_prefix(PREFIX.as_bytes()).ok_or(Errno::NODATA)?;
    attributes(node)
        .into_iter()
        .find(|(k, _)| k.as_bytes() == short)
        .map(|(_, v)| v.into_bytes())
        .ok_or(Errno::NODATA)
}

/// The names of `node`'s attributes as `listxattr` gives them: full names, each ending in NUL.
pub fn names(node: &Node) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, _) in attributes(node) {
        out.extend_from_slice(PREFIX.as_bytes());
        out.extend_from_slice(k.as_bytes());
        out.push(0);
    }
    out
}

/// What `getxattr` and `listxattr` answer for a buffer of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Sized {
    /// `size` was 0: the caller asks how large a buffer it needs.
    Size(u32),
    /// The bytes, which fit.
    Data(Vec<u8>),
}

/// The answer for `bytes` to a caller with a buffer of `size` bytes: their length when `size`
/// is 0 (the probe), the bytes when they fit, ERANGE when they do not.
pub fn sized(bytes: Vec<u8>, size: u32) -> Result<Sized, Errno> {
    let len = u32::try_from(bytes.len()).map_err(|_| Errno::RANGE)?;
    match size {
        0 => Ok(Sized::Size(len)),
        s if len <= s => Ok(Sized::Data(bytes)),
        _ => Err(Errno::RANGE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xnat::{Md5, RemoteFile, Resource, ResourceRef, Scan, Session};
    use std::sync::Arc;

    fn session(subject_label: &str) -> Arc<Session> {
        Arc::new(Session {
            id: "XNAT_E00001".into(),
            label: "SUBJ01_MR1".into(),
            project: "DEMO".into(),
            xsi_type: "xnat:mrSessionData".into(),
            date: "2024-03-01".into(),
            subject_label: subject_label.into(),
        })
    }

    fn resource() -> (Arc<ResourceRef>, Arc<Resource>) {
        let r = Resource {
            id: "1736".into(),
            label: "NIFTI".into(),
            format: "NIFTI".into(),
            content: "T1_RAW".into(),
            file_count: Some(1),
            file_size: None,
        };
        let res = ResourceRef::of("XNAT_E00001", Some("2"), &r);
        (Arc::new(res), Arc::new(r))
    }

    fn file(digest: Option<&str>) -> Node {
        let (res, _) = resource();
        Node::File(
            res,
            Arc::new(RemoteFile::new(
                "sub/t1.nii.gz".into(),
                1234,
                digest.map(|d| Md5::parse(d).unwrap()),
                "/data/experiments/XNAT_E00001/scans/2/resources/1736/files/sub/t1.nii.gz",
            )),
        )
    }

    fn text(node: &Node, name: &str) -> Result<String, Errno> {
        value(node, name.as_bytes()).map(|v| String::from_utf8(v).unwrap())
    }

    #[test]
    fn each_folder_and_file_shows_what_its_listing_gave() {
        let s = Node::Session(session("SUBJ01"));
        assert_eq!(
            attributes(&s),
            [
                ("id", "XNAT_E00001"),
                ("label", "SUBJ01_MR1"),
                ("project", "DEMO"),
                ("subject_label", "SUBJ01"),
                ("date", "2024-03-01"),
                ("xsi_type", "xnat:mrSessionData"),
            ]
            .map(|(k, v)| (k, v.to_string()))
        );
        let scan = Node::Scan(
            session(""),
            Arc::new(Scan {
                id: "2".into(),
                scan_type: "T1w".into(),
                series_description: "T1 MPRAGE".into(),
                quality: "usable".into(),
                xsi_type: "xnat:mrScanData".into(),
            }),
        );
        assert_eq!(text(&scan, "user.xnat.type"), Ok("T1w".into()));
        assert_eq!(
            text(&scan, "user.xnat.series_description"),
            Ok("T1 MPRAGE".into())
        );
        let (res, r) = resource();
        let res = Node::Resource(res, r);
        assert_eq!(text(&res, "user.xnat.id"), Ok("1736".into()));
        assert_eq!(text(&res, "user.xnat.content"), Ok("T1_RAW".into()));
        let f = file(Some("0123456789abcdef0123456789abcdef"));
        assert_eq!(
            names(&f),
            b"user.xnat.md5\0user.xnat.uri\0user.xnat.size\0".to_vec()
        );
        assert_eq!(text(&f, "user.xnat.size"), Ok("1234".into()));
        assert!(
            text(&f, "user.xnat.uri")
                .unwrap()
                .ends_with("/files/sub/t1.nii.gz")
        );
        assert_eq!(
            text(&Node::Project("DEMO".into()), "user.xnat.id"),
            Ok("DEMO".into())
        );
    }

    #[test]
    fn what_xnat_left_empty_and_other_names_are_enodata() {
        // A session named by -E: its document gives no subject label.
        let s = Node::Session(session(""));
        assert_eq!(text(&s, "user.xnat.subject_label"), Err(Errno::NODATA));
        assert!(!names(&s).windows(7).any(|w| w == b"subject"));
        // A file XNAT lists without a digest.
        assert_eq!(text(&file(None), "user.xnat.md5"), Err(Errno::NODATA));
        for other in [
            "user.xnat.",
            "user.xnat.nope",
            "user.xnatfs.md5",
            "trusted.x",
            "id",
        ] {
            assert_eq!(text(&s, other), Err(Errno::NODATA), "{other}");
        }
        assert!(attributes(&Node::Root).is_empty());
        assert_eq!(names(&Node::Root), b"");
    }

    #[test]
    fn security_labels_and_acls_are_not_supported_so_ls_asks_once() {
        for name in [
            "security.selinux",
            "security.capability",
            "system.posix_acl_access",
            "system.posix_acl_default",
        ] {
            assert_eq!(
                namespace_supported(name.as_bytes()),
                Err(Errno::OPNOTSUPP),
                "{name}"
            );
        }
        for name in [
            "user.xnat.md5",
            "user.other",
            "trusted.x",
            "securityx",
            "sys",
        ] {
            assert_eq!(namespace_supported(name.as_bytes()), Ok(()), "{name}");
        }
    }

    #[test]
    fn a_size_probe_then_the_bytes_or_erange() {
        let v = b"usable".to_vec();
        assert_eq!(sized(v.clone(), 0), Ok(Sized::Size(6)));
        assert_eq!(sized(v.clone(), 6), Ok(Sized::Data(v.clone())));
        assert_eq!(sized(v.clone(), 64), Ok(Sized::Data(v.clone())));
        assert_eq!(sized(v, 5), Err(Errno::RANGE));
        assert_eq!(sized(vec![], 0), Ok(Sized::Size(0)));
    }
}
