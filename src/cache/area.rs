//! The cache dir and its areas: every path under the cache dir is built here and nowhere
//! else (see the layout in [`super`]).

use super::lease;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The default cache dir: `$XDG_CACHE_HOME/xnatfs`, else `~/.cache/xnatfs`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("xnatfs");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".cache").join("xnatfs")
}

/// The log file of the mount on `mountpoint` (absolute) in `cache_dir`:
/// `/home/alice/xnat` gives `<cache dir>/logs/home_alice_xnat.log`.
pub fn default_log_file(cache_dir: &Path, mountpoint: &Path) -> PathBuf {
    let name: String = mountpoint
        .to_string_lossy()
        .trim_matches('/')
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' => c,
            _ => '_',
        })
        .collect();
    let name = match name.trim_matches('.') {
        "" => "root".to_string(),
        n => n.chars().take(200).collect(),
    };
    cache_dir.join("logs").join(format!("{name}.log"))
}

/// The area name for a server URL: readable, one per URL (`https_xnat.example.org_8443`),
/// never with the user name or password the URL may hold.
/// Spellings of the same server share an area: the scheme and host in any case, the
/// scheme's own port written or not, a trailing slash or not (`HTTPS://XNAT.example.org:443/`
/// is `https_xnat.example.org`).
pub fn area_name(url: &str) -> String {
    let url = crate::names::without_userinfo(url);
    let url = match reqwest::Url::parse(url.trim()) {
        // The parser lowers the scheme and host and drops a default port.
        Ok(parsed) if parsed.has_host() => {
            let mut u = parsed;
            u.set_query(None);
            u.set_fragment(None);
            u.as_str().to_string()
        }
        _ => url,
    };
    let trimmed = url.trim_end_matches('/').replace("://", "_");
    trimmed
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

pub(crate) fn mkdir_private(path: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// Creates the cache dir `path` (and any missing parent) private to the user, 0700. A folder
/// that is already there is used as it is: its mode is the owner's business (it may be a
/// shared folder like a 1777 `/tmp`), and the areas xnatfs makes in it are private anyway.
pub fn create_cache_dir(path: &Path) -> io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        mkdir_private(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(path) {
        // The umask may have taken bits away; what xnatfs made is exactly 0700.
        Ok(()) => std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// One server's area of the cache: where each thing it holds lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Area {
    root: PathBuf,
}

impl Area {
    const DATA: &'static str = "data";
    const TMP: &'static str = "tmp";
    const LISTINGS: &'static str = "listings";
    const INDEX: &'static str = "index.json";
    /// The file that marks a folder as an area xnatfs made.
    const MARKER: &'static str = ".xnatfs-area";
    /// The folders an area holds (made when it is opened).
    const FOLDERS: [&'static str; 3] = [Self::DATA, Self::TMP, Self::LISTINGS];

    /// The area of `server_url` under `cache_dir`.
    pub fn of(cache_dir: &Path, server_url: &str) -> Area {
        Area::at(cache_dir.join(area_name(server_url)))
    }

    /// The area whose folder is `root`.
    pub fn at(root: PathBuf) -> Area {
        Area { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Complete, verified files in the mount's layout.
    pub fn data(&self) -> PathBuf {
        self.root.join(Self::DATA)
    }

    /// Partial files.
    pub fn tmp(&self) -> PathBuf {
        self.root.join(Self::TMP)
    }

    /// Listings kept for offline use.
    pub fn listings(&self) -> PathBuf {
        self.root.join(Self::LISTINGS)
    }

    /// The size cap's saved use order.
    pub fn index(&self) -> PathBuf {
        self.root.join(Self::INDEX)
    }

    /// The marker file.
    fn marker(&self) -> PathBuf {
        self.root.join(Self::MARKER)
    }

    /// Whether `root` is an area xnatfs made: it holds the marker, or it is an area made
    /// before the marker existed.
    pub fn exists(&self) -> bool {
        std::fs::symlink_metadata(self.marker()).is_ok_and(|m| m.is_file())
            || self.is_unmarked_area()
    }

    /// Whether `root` holds exactly what an area made before the marker held: its three
    /// folders (real folders, not links), an index at most, and nothing else.
    fn is_unmarked_area(&self) -> bool {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return false;
        };
        let mut folders = 0;
        for entry in entries {
            let Ok(entry) = entry else { return false };
            let Ok(kind) = entry.file_type() else {
                return false;
            };
            let name = entry.file_name();
            if Self::FOLDERS.iter().any(|f| name == *f) && kind.is_dir() {
                folders += 1;
            } else if !(name == Self::INDEX && kind.is_file()) {
                return false;
            }
        }
        folders == Self::FOLDERS.len()
    }

    /// Opens the area, creating it when its folder is not there. A folder by the area's name
    /// that xnatfs did not make (no marker, not an area made before the marker, not empty) is
    /// refused and left untouched.
    pub(super) fn open_or_create(&self) -> io::Result<()> {
        match std::fs::DirBuilder::new().mode(0o700).create(&self.root) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let empty = std::fs::read_dir(&self.root).is_ok_and(|mut d| d.next().is_none());
                if !(self.exists() || empty) {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!(
                            "{} is there but is not an xnatfs cache area (it has no {} file); \
                             move it away or choose another --cache-dir",
                            self.root.display(),
                            Self::MARKER
                        ),
                    ));
                }
            }
            Err(e) => return Err(e),
        }
        self.create()
    }

    /// Creates the area's folders, private to the user, and its marker.
    fn create(&self) -> io::Result<()> {
        for f in Self::FOLDERS {
            mkdir_private(&self.root.join(f))?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.marker())?;
        Ok(())
    }

    /// Whether a live process (a mount, a prefetch) uses the area: a lease, a partial file or
    /// a run's folder of partial files, in `tmp/`, that some process holds.
    pub fn in_use(&self) -> bool {
        let Ok(entries) = std::fs::read_dir(self.tmp()) else {
            return false;
        };
        entries
            .flatten()
            .any(|e| lease::is_alive(&e.path(), e.file_type().is_ok_and(|t| t.is_dir())))
    }

    /// Removes everything the area holds (its folders and its index), leaving it empty and
    /// usable. Nothing else in its folder is touched.
    pub fn empty(&self) -> io::Result<()> {
        for f in Self::FOLDERS {
            match std::fs::remove_dir_all(self.root.join(f)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        for file in [self.index(), self.index().with_extension("json.lock")] {
            match std::fs::remove_file(file) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        self.create()
    }
}
