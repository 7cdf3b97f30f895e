//! One file of a resource as its files listing describes it, kept small: a mount holds one
//! per file of every resource it shows, and a resource may hold 200,000 files. The digest is
//! kept as its 16 bytes, and the URI, which XNAT nearly always makes of a prefix common to the
//! whole resource and the file's path, as that prefix (shared by the files that have it) with
//! the path the file keeps anyway. A URI of any other shape is kept whole, as listed.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

/// An MD5 digest, as its 16 bytes; shown (and compared with text) as 32 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Md5([u8; 16]);

impl Md5 {
    /// The digest written as 32 hex digits, in either case; `None` for anything else.
    pub fn parse(hex: &str) -> Option<Md5> {
        let mut bytes = [0; 16];
        hex::decode_to_slice(hex, &mut bytes).ok()?;
        Some(Md5(bytes))
    }

    /// The digest of these bytes.
    pub fn of(bytes: [u8; 16]) -> Md5 {
        Md5(bytes)
    }

    /// 32 lower-case hex digits.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Md5 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Md5 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// Text is the same digest when it is its hex, in either case.
impl PartialEq<str> for Md5 {
    fn eq(&self, other: &str) -> bool {
        Md5::parse(other) == Some(*self)
    }
}

impl PartialEq<String> for Md5 {
    fn eq(&self, other: &String) -> bool {
        *self == **other
    }
}

impl PartialEq<Md5> for String {
    fn eq(&self, other: &Md5) -> bool {
        *other == **self
    }
}

impl PartialEq<Md5> for str {
    fn eq(&self, other: &Md5) -> bool {
        *other == *self
    }
}

/// Where a file is fetched from.
#[derive(Clone)]
enum Uri {
    /// This prefix, then the file's path.
    Before(Arc<str>),
    /// Any other URI, whole.
    Whole(Box<str>),
}

thread_local! {
    /// The last URI prefix made: the files of one listing, made one after another, share it.
    static LAST_PREFIX: RefCell<Option<Arc<str>>> = const { RefCell::new(None) };
}

/// `prefix` as an `Arc`, the one the last file made on this thread has if it is the same.
fn shared_prefix(prefix: &str) -> Arc<str> {
    LAST_PREFIX.with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some(p) if **p == *prefix => p.clone(),
            _ => last.insert(Arc::from(prefix)).clone(),
        }
    })
}

/// One file of a resource, as the files listing describes it.
#[derive(Clone)]
pub struct RemoteFile {
    /// The path inside the resource, subfolders included, already checked to be safe.
    pub path: String,
    pub size: u64,
    /// The MD5 the listing gives, when the server keeps checksums.
    pub digest: Option<Md5>,
    /// The listing gave no size (`Size: ""`: a catalog entry without one, whose file XNAT
    /// could not stat, so likely gone): `size` is 0, and only the body can tell.
    pub size_unknown: bool,
    uri: Uri,
}

impl RemoteFile {
    /// The file at `path` in its resource, fetched from `uri` (the server path to GET,
    /// `/data/experiments/.../files/...`, not URL-encoded).
    pub fn new(path: String, size: u64, digest: Option<Md5>, uri: &str) -> RemoteFile {
        let uri = match uri.strip_suffix(path.as_str()) {
            Some(prefix) => Uri::Before(shared_prefix(prefix)),
            None => Uri::Whole(uri.into()),
        };
        RemoteFile {
            path,
            size,
            digest,
            size_unknown: false,
            uri,
        }
    }

    /// A file the listing gives no size for (see [`RemoteFile::size_unknown`]).
    pub fn of_unknown_size(path: String, digest: Option<Md5>, uri: &str) -> RemoteFile {
        RemoteFile {
            size_unknown: true,
            ..RemoteFile::new(path, 0, digest, uri)
        }
    }

    /// The server path to GET, exactly as the listing gave it.
    pub fn uri(&self) -> Cow<'_, str> {
        match &self.uri {
            Uri::Before(prefix) => Cow::Owned(format!("{prefix}{}", self.path)),
            Uri::Whole(uri) => Cow::Borrowed(uri),
        }
    }

    /// The URI as two pieces that follow each other, with no copy.
    fn uri_parts(&self) -> (&str, &str) {
        match &self.uri {
            Uri::Before(prefix) => (prefix, &self.path),
            Uri::Whole(uri) => (uri, ""),
        }
    }

    /// Whether the URI is `uri`.
    pub fn uri_is(&self, uri: &str) -> bool {
        let (a, b) = self.uri_parts();
        uri.len() == a.len() + b.len() && uri.starts_with(a) && uri.ends_with(b)
    }
}

/// Files are the same when their path, size, digest and URI are (however the URI is kept).
/// Cheap: a listing fetched again is compared file by file with the one held.
impl PartialEq for RemoteFile {
    fn eq(&self, other: &RemoteFile) -> bool {
        let same_uri = match (&self.uri, &other.uri) {
            // The paths are the same (compared first).
            (Uri::Before(a), Uri::Before(b)) => Arc::ptr_eq(a, b) || a == b,
            (Uri::Whole(a), Uri::Whole(b)) => a == b,
            (_, Uri::Whole(b)) => self.uri_is(b),
            (Uri::Whole(a), _) => other.uri_is(a),
        };
        self.path == other.path
            && self.size == other.size
            && self.digest == other.digest
            && self.size_unknown == other.size_unknown
            && same_uri
    }
}

impl Eq for RemoteFile {}

impl fmt::Debug for RemoteFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteFile")
            .field("path", &self.path)
            .field("size", &self.size)
            .field("digest", &self.digest)
            .field("size_unknown", &self.size_unknown)
            .field("uri", &self.uri())
            .finish()
    }
}

/// Kept listings (`xnat::remembering`) write a file as its four fields, all text but the
/// size, as they always did.
#[derive(Serialize)]
struct Written<'a> {
    path: &'a str,
    size: u64,
    digest: Option<String>,
    uri: Cow<'a, str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    size_unknown: bool,
}

#[derive(Deserialize)]
struct Read {
    path: String,
    size: u64,
    digest: Option<String>,
    uri: String,
    #[serde(default)]
    size_unknown: bool,
}

impl Serialize for RemoteFile {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Written {
            path: &self.path,
            size: self.size,
            digest: self.digest.map(|d| d.hex()),
            uri: self.uri(),
            size_unknown: self.size_unknown,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for RemoteFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RemoteFile, D::Error> {
        let r = Read::deserialize(d)?;
        let digest = r.digest.as_deref().and_then(Md5::parse);
        Ok(RemoteFile {
            size_unknown: r.size_unknown,
            ..RemoteFile::new(r.path, r.size, digest, &r.uri)
        })
    }
}

/// A resource's files, as one listing (in listing order), as a mount holds them.
pub type FileList = Arc<Vec<Arc<RemoteFile>>>;

/// The listing of `files`. Not `collect()`ed: that would keep the files' own vector's
/// allocation, ten times the size of the pointers it then holds (16 MB for 200,000 files).
pub fn file_list(files: Vec<RemoteFile>) -> FileList {
    let mut list = Vec::with_capacity(files.len());
    list.extend(files.into_iter().map(Arc::new));
    Arc::new(list)
}

/// `held` when `files` (the same resource listed again) are the same files in the same
/// order, else the listing of `files`: a listing fetched again unchanged, as most are, costs
/// no second copy of a resource's files (and changes none of their inodes).
pub fn same_or_new(held: Option<FileList>, files: Vec<RemoteFile>) -> FileList {
    match held {
        Some(held)
            if held.len() == files.len() && held.iter().zip(&files).all(|(h, f)| **h == *f) =>
        {
            held
        }
        _ => file_list(files),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_digest_reads_and_prints_as_its_hex() {
        let d = Md5::parse("0123456789ABCDEF0123456789abcdef").unwrap();
        assert_eq!(d.to_string(), HEX);
        assert_eq!(d.hex(), HEX);
        assert_eq!(d, *HEX);
        assert_eq!(HEX.to_string(), d);
        assert_ne!(d, *"0123456789abcdef0123456789abcde0");
        assert_eq!(format!("{d:?}"), format!("\"{HEX}\""));
        for bad in [
            "",
            "0123",
            &format!("{HEX}00"),
            "g123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(Md5::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_uri_is_kept_exactly_as_listed() {
        let usual = "/data/experiments/E1/scans/1/resources/7/files/sub/a.dcm";
        let odd = [
            // Not ending with the path: kept whole.
            ("a.dcm", "/data/experiments/E1/resources/7/files/a.dcm?x=1"),
            ("a.dcm", "/archive/somewhere/else"),
            ("sub/a.dcm", "/data/experiments/E1/resources/7/files/a.dcm"),
            // The path alone, or with odd characters.
            ("a b,c&d.dcm", "a b,c&d.dcm"),
            ("é/ü.dcm", "/data/x/files/é/ü.dcm"),
            ("a.dcm", ""),
        ];
        let mut files = vec![RemoteFile::new("sub/a.dcm".into(), 1, None, usual)];
        for (path, uri) in odd {
            files.push(RemoteFile::new(path.into(), 1, None, uri));
        }
        assert_eq!(files[0].uri(), usual);
        for (f, (_, uri)) in files[1..].iter().zip(odd) {
            assert_eq!(f.uri(), uri);
            assert!(f.uri_is(uri));
            assert!(!f.uri_is(&format!("{uri}x")));
        }
        assert!(matches!(files[0].uri, Uri::Before(_)));
        assert!(matches!(files[1].uri, Uri::Whole(_)));
    }

    #[test]
    fn the_files_of_a_listing_share_their_prefix() {
        let uri = |p: &str| format!("/data/experiments/E1/resources/7/files/{p}");
        let a = RemoteFile::new("a".into(), 1, None, &uri("a"));
        let b = RemoteFile::new("d/b".into(), 1, None, &uri("d/b"));
        let (Uri::Before(pa), Uri::Before(pb)) = (&a.uri, &b.uri) else {
            panic!("not kept as prefix and path");
        };
        assert!(Arc::ptr_eq(pa, pb));
        assert_eq!(b.uri(), uri("d/b"));
    }

    #[test]
    fn files_compare_by_what_they_say_and_are_kept_as_before() {
        let uri = "/data/experiments/E1/resources/7/files/a.dcm";
        let digest = Md5::parse(HEX);
        let a = RemoteFile::new("a.dcm".into(), 3, digest, uri);
        let whole = RemoteFile {
            uri: Uri::Whole(uri.into()),
            ..a.clone()
        };
        assert_eq!(a, whole, "the same URI, however kept");
        assert_ne!(
            a,
            RemoteFile::new("a.dcm".into(), 3, digest, "/other/a.dcm")
        );
        assert_ne!(a, RemoteFile::new("a.dcm".into(), 3, None, uri));
        // The text kept on disk is the one kept before digests were bytes.
        let text = serde_json::to_string(&a).unwrap();
        assert_eq!(
            text,
            format!(r#"{{"path":"a.dcm","size":3,"digest":"{HEX}","uri":"{uri}"}}"#)
        );
        assert_eq!(serde_json::from_str::<RemoteFile>(&text).unwrap(), a);
        let none = r#"{"path":"a","size":1,"digest":null,"uri":"/x/a"}"#;
        let f: RemoteFile = serde_json::from_str(none).unwrap();
        assert_eq!((f.digest, f.uri()), (None, "/x/a".into()));
        assert_eq!(serde_json::to_string(&f).unwrap(), none);
    }
}
