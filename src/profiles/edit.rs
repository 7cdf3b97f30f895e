//! Changing xnatfs's config file (`xnatfs config add-profile` and `use`). Edited with
//! `toml_edit`, so the user's comments and layout stay; the result is checked as the reader
//! will read it, written to a temporary file beside the config (mode 0600: it may hold a
//! password) and renamed over it, so a reader never sees half a file. A config that is a
//! symbolic link (dotfile managers) has its target replaced, the link kept.

use super::{Profile, UsageError, parse};
use anyhow::{Context, Result};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use toml_edit::{DocumentMut, Item, Table, value};

/// Whether `name` is usable as a profile name (in `--profile NAME` and `profile=NAME`).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn read_doc(path: &Path) -> Result<DocumentMut> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    // Refuse to build on a file the reader would refuse.
    parse(&text, path)?;
    text.parse::<DocumentMut>()
        .with_context(|| format!("{} is not valid TOML", path.display()))
}

/// The file to replace: the config, or what it links to.
fn target(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

fn write_doc(path: &Path, doc: &DocumentMut) -> Result<()> {
    let text = doc.to_string();
    parse(&text, path)?;
    let target = target(path);
    let dir = target.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".config.toml.")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    tmp.write_all(text.as_bytes())
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("cannot write {}", target.display()))?;
    tmp.persist(&target)
        .with_context(|| format!("cannot replace {}", target.display()))?;
    Ok(())
}

/// The `[profiles]` table, made if missing.
fn profiles_table(doc: &mut DocumentMut) -> Result<&mut Table> {
    let item = doc.entry("profiles").or_insert_with(|| {
        let mut t = Table::new();
        t.set_implicit(true);
        Item::Table(t)
    });
    item.as_table_mut()
        .context("`profiles` in the config is not a table")
}

/// Adds (or replaces) the profile `name`; with `make_default`, or when it is the only one,
/// it becomes the default. Returns whether a profile of that name was replaced.
pub fn add_profile(path: &Path, name: &str, profile: &Profile, make_default: bool) -> Result<bool> {
    if !valid_name(name) {
        return Err(UsageError(format!(
            "{name:?} is not a usable profile name: use letters, digits, '-', '_' and '.'"
        ))
        .into());
    }
    let mut doc = read_doc(path)?;
    let profiles = profiles_table(&mut doc)?;
    let replaced = profiles.contains_key(name);
    let mut t = Table::new();
    let fields = [
        ("url", &profile.url),
        ("user", &profile.user),
        ("password", &profile.password),
        ("default_project", &profile.default_project),
    ];
    for (key, v) in fields {
        if let Some(v) = v {
            t.insert(key, value(v.as_str()));
        }
    }
    if let Some(insecure) = profile.insecure {
        t.insert("insecure", value(insecure));
    }
    profiles.insert(name, Item::Table(t));
    let only_one = profiles.len() == 1;
    if make_default || (only_one && doc.get("default_profile").is_none()) {
        doc.insert("default_profile", value(name));
    }
    write_doc(path, &doc)?;
    Ok(replaced)
}

/// Makes `name` the default profile; it must exist in xnatfs's config.
pub fn use_profile(path: &Path, name: &str) -> Result<()> {
    let mut doc = read_doc(path)?;
    let exists = doc
        .get("profiles")
        .and_then(Item::as_table)
        .is_some_and(|t| t.contains_key(name));
    if !exists {
        let file = super::load(path)?;
        let xnatctl_path = super::xnatctl::config_path();
        let xnatctl = super::xnatctl::load(&xnatctl_path).ok().flatten();
        let mut msg =
            super::unknown_profile(name, path, file.as_ref(), &xnatctl_path, xnatctl.as_ref());
        if xnatctl.as_ref().is_some_and(|c| c.get(name).is_some()) {
            msg.push_str(&format!(
                "; {name:?} is xnatctl's: XNAT_PROFILE={name} selects it, or copy it with xnatfs config add-profile"
            ));
        }
        return Err(UsageError(msg).into());
    }
    doc.insert("default_profile", value(name));
    write_doc(path, &doc)
}
