//! One profile (what a config file says of a server), and what both config files (xnatfs's,
//! xnatctl's) need: where the home folder is, and whether a file is private to its owner.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// One profile. Every field may be missing.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub url: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub default_project: Option<String>,
    /// Accept any TLS certificate (xnatctl's `verify_ssl: false`).
    pub insecure: Option<bool>,
}

/// The user's home folder (`$HOME`; `/` without one).
pub fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// Whether only the file's owner may read it.
pub fn is_private(path: &Path) -> Result<bool> {
    let mode = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .permissions()
        .mode();
    Ok(mode & 0o077 == 0)
}
