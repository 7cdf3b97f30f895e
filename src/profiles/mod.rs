//! Profiles: named servers with their user, password and default project, in xnatfs's
//! `~/.config/xnatfs/config.toml` (or xnatctl's `~/.config/xnatctl/config.yaml`, read when
//! no xnatfs profile is set: [`xnatctl`]). Which one is used ([`active`]), and what
//! `xnatfs config` lists, shows and changes ([`edit`]).
//!
//! The TOML file is read strictly: a key xnatfs does not know is an error that names the
//! valid ones (a misspelt `pasword` would otherwise be ignored, and the mount ask for a
//! password with no hint why).
//!
//! ```toml
//! default_profile = "work"
//! [profiles.work]
//! url = "https://xnat.example.org"
//! user = "alice"
//! password = "..."          # allowed only when the file is private (chmod 600)
//! default_project = "DEMO"
//! insecure = false          # true: accept any TLS certificate (test servers only)
//! ```

pub mod edit;
mod profile;
pub mod xnatctl;

pub use profile::Profile;
use profile::{home, is_private};

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// An error in what the user asked for (an unknown profile): the command exits 2, as for
/// arguments the parser refuses.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// xnatfs's config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub default_profile: Option<String>,
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

/// Where a profile was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Xnatfs,
    Xnatctl,
}

/// The profile in use: its name, the file it is in, and its fields.
#[derive(Debug, Clone)]
pub struct Active {
    pub name: String,
    pub path: PathBuf,
    pub origin: Origin,
    pub profile: Profile,
}

impl std::fmt::Display for Active {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "profile {:?} in {}", self.name, self.path.display())
    }
}

/// xnatfs's config file: `$XDG_CONFIG_HOME/xnatfs/config.toml`, else
/// `~/.config/xnatfs/config.toml`.
pub fn config_path() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".config"));
    base.join("xnatfs").join("config.toml")
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Parses xnatfs's config text; unknown keys are errors naming the valid ones.
pub fn parse(text: &str, path: &Path) -> Result<ConfigFile> {
    toml::from_str(text).map_err(|e| {
        // toml's message names the line and, for an unknown key, the valid ones.
        anyhow::anyhow!("{} is not a valid xnatfs config: {e}", path.display())
    })
}

/// Reads xnatfs's config file; `None` when there is none. A file that holds a password
/// must be private.
pub fn load(path: &Path) -> Result<Option<ConfigFile>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let file = parse(&text, path)?;
    if file.profiles.values().any(|p| p.password.is_some()) && !is_private(path)? {
        bail!(
            "{} holds a password but others can read it; run: chmod 600 {}",
            path.display(),
            path.display()
        );
    }
    Ok(Some(file))
}

/// The profile name asked for: `--profile`, else `$XNATFS_PROFILE`, else xnatctl's
/// `$XNAT_PROFILE`.
pub fn wanted_name(flag: Option<&str>) -> Option<String> {
    flag.map(str::to_string)
        .or_else(|| env("XNATFS_PROFILE"))
        .or_else(|| env("XNAT_PROFILE"))
}

/// The profile to use. `wanted` (see [`wanted_name`]) is looked up in xnatfs's file, then
/// in xnatctl's; without it, xnatfs's `default_profile` (or a profile named `default`),
/// else xnatctl's default profile. A name found nowhere is a usage error that lists the
/// profiles there are.
pub fn active(wanted: Option<&str>) -> Result<Option<Active>> {
    active_in(&config_path(), &xnatctl::config_path(), wanted)
}

/// [`active`], with the two files' paths given.
pub fn active_in(ours: &Path, theirs: &Path, wanted: Option<&str>) -> Result<Option<Active>> {
    let file = load(ours)?;
    let found = |name: &str, file: &ConfigFile| {
        file.profiles.get(name).map(|p| Active {
            name: name.to_string(),
            path: ours.to_path_buf(),
            origin: Origin::Xnatfs,
            profile: p.clone(),
        })
    };
    if let Some(file) = &file {
        let name = wanted
            .or(file.default_profile.as_deref())
            .unwrap_or("default");
        if let Some(a) = found(name, file) {
            return Ok(Some(a));
        }
        if wanted.is_none()
            && let Some(name) = &file.default_profile
        {
            return Err(UsageError(format!(
                "default_profile {name:?} in {} names no profile there; {}",
                ours.display(),
                existing(file)
            ))
            .into());
        }
    }
    let xnatctl = xnatctl::load(theirs)?;
    if let Some(c) = &xnatctl {
        let name = wanted.unwrap_or(&c.default_profile);
        if let Some(p) = c.get(name) {
            return Ok(Some(Active {
                name: name.to_string(),
                path: theirs.to_path_buf(),
                origin: Origin::Xnatctl,
                profile: p.clone(),
            }));
        }
    }
    match wanted {
        Some(name) => Err(UsageError(unknown_profile(
            name,
            ours,
            file.as_ref(),
            theirs,
            xnatctl.as_ref(),
        ))
        .into()),
        None => Ok(None),
    }
}

/// "its profiles: a, b" (or that it has none).
fn existing(file: &ConfigFile) -> String {
    match file.profiles.is_empty() {
        true => "it has no profiles".into(),
        false => format!(
            "its profiles: {}",
            file.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
    }
}

/// The message for a profile name found nowhere: the profiles there are, and the closest.
pub fn unknown_profile(
    name: &str,
    ours: &Path,
    file: Option<&ConfigFile>,
    theirs: &Path,
    xnatctl: Option<&xnatctl::XnatctlConfig>,
) -> String {
    let our_names: Vec<String> = file
        .map(|f| f.profiles.keys().cloned().collect())
        .unwrap_or_default();
    let their_names = xnatctl.map(|c| c.names()).unwrap_or_default();
    let mut msg = format!("no profile {name:?}");
    let mut lists = Vec::new();
    if !our_names.is_empty() {
        lists.push(format!("in {}: {}", ours.display(), our_names.join(", ")));
    }
    if !their_names.is_empty() {
        lists.push(format!(
            "in {}: {}",
            theirs.display(),
            their_names.join(", ")
        ));
    }
    match lists.is_empty() {
        true => msg.push_str(&format!(
            "; there are no profiles (add one: xnatfs config add-profile {name} --url URL --user USER)"
        )),
        false => msg.push_str(&format!("; profiles {}", lists.join("; "))),
    }
    let all = our_names.iter().chain(&their_names);
    if let Some(close) = closest(name, all) {
        msg.push_str(&format!(" (did you mean {close:?}?)"));
    }
    msg
}

/// The name in `names` closest to `name` (by case, or at most two edits away).
fn closest<'a>(name: &str, names: impl Iterator<Item = &'a String>) -> Option<&'a String> {
    names
        .map(|n| {
            let d = match n.eq_ignore_ascii_case(name) {
                true => 0,
                false => edit_distance(&n.to_lowercase(), &name.to_lowercase()),
            };
            (d, n)
        })
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

/// Levenshtein distance (names are short).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (prev + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests;
