//! xnatctl's profiles, for its users: `~/.config/xnatctl/config.yaml`, read when no xnatfs
//! profile is set, with the profile `XNAT_PROFILE` names (else the file's `default_profile`).
//!
//! The format, from xnatctl's own `xnatctl/core/config.py` (0.6.0: `Config.load`, `Profile`,
//! `ConfigFileModel`): the file is `Path.home() / ".config" / "xnatctl" / "config.yaml"`
//! (`XDG_CONFIG_HOME` is not read), written by `yaml.dump` as
//!
//! ```yaml
//! version: 1
//! default_profile: production        # "default" when absent
//! output_format: table
//! profiles:
//!   production:
//!     url: https://xnat.example.org
//!     verify_ssl: true               # true when absent
//!     timeout: 30
//!     default_project: MYPROJECT
//!     username: myuser
//!     password: mypassword           # or password_source: keyring (the OS keychain)
//! ```
//!
//! and `XNAT_PROFILE` replaces `default_profile`. Keys xnatfs has no use for (timeout,
//! workers, ...) are ignored, as xnatctl ignores keys it does not know. A profile whose
//! password is in the OS keychain gives no password here (xnatfs asks, or uses `.netrc`).
//!
//! It is parsed with `yaml-rust2` (a pure-Rust YAML 1.2 parser, well kept; `serde_yaml` is
//! deprecated), since hand-edited files use all of YAML (quotes, comments, flow maps).
//! PyYAML reads YAML 1.1, where `verify_ssl: no` (or `off`) is false: read those the same.

use super::profile::{Profile, home, is_private};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use yaml_rust2::{Yaml, YamlLoader};

/// xnatctl's config file (`~/.config/xnatctl/config.yaml`).
pub fn config_path() -> PathBuf {
    home().join(".config").join("xnatctl").join("config.yaml")
}

/// xnatctl's profiles, by name, and the one it uses by default.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct XnatctlConfig {
    pub default_profile: String,
    pub profiles: Vec<(String, Profile)>,
}

impl XnatctlConfig {
    pub fn get(&self, name: &str) -> Option<&Profile> {
        self.profiles
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p)
    }

    pub fn names(&self) -> Vec<String> {
        self.profiles.iter().map(|(n, _)| n.clone()).collect()
    }
}

/// A YAML scalar as the string PyYAML would make of it (numbers and booleans included).
fn scalar(y: &Yaml) -> Option<String> {
    match y {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `verify_ssl` as PyYAML (YAML 1.1) reads it: `yes/no/on/off` are booleans too.
fn boolean(y: &Yaml) -> Option<bool> {
    match y {
        Yaml::Boolean(b) => Some(*b),
        Yaml::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "y" => Some(true),
            "false" | "no" | "off" | "n" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// Parses xnatctl's config text. `private`: whether the file is readable by its owner
/// alone; a password in a file others can read is not used (with a warning).
pub fn parse(source: &str, private: bool, path: &Path) -> Result<XnatctlConfig> {
    let docs = YamlLoader::load_from_str(source)
        .with_context(|| format!("{} is not valid YAML", path.display()))?;
    let doc = docs.into_iter().next().unwrap_or(Yaml::Null);
    let mut config = XnatctlConfig {
        default_profile: "default".into(),
        profiles: Vec::new(),
    };
    let top = match &doc {
        Yaml::Hash(h) => h,
        Yaml::Null => return Ok(config),
        _ => bail!("{} must hold a YAML mapping", path.display()),
    };
    if let Some(name) = top.get(&Yaml::from_str("default_profile")).and_then(scalar) {
        config.default_profile = name;
    }
    let Some(Yaml::Hash(profiles)) = top.get(&Yaml::from_str("profiles")) else {
        return Ok(config);
    };
    for (name, fields) in profiles {
        let (Some(name), Yaml::Hash(fields)) = (scalar(name), fields) else {
            continue;
        };
        let field = |key: &str| fields.get(&Yaml::String(key.into()));
        let mut password = field("password").and_then(scalar);
        if password.is_some() && !private {
            tracing::warn!(
                "the password of xnatctl's profile {name:?} is not used: others can read {} (chmod 600 it)",
                path.display()
            );
            password = None;
        }
        let profile = Profile {
            url: field("url").and_then(scalar).filter(|u| !u.is_empty()),
            user: field("username").and_then(scalar),
            password,
            default_project: field("default_project").and_then(scalar),
            insecure: field("verify_ssl")
                .and_then(boolean)
                .map(|verify| !verify)
                .filter(|insecure| *insecure),
        };
        config.profiles.push((name, profile));
    }
    Ok(config)
}

/// Reads xnatctl's config file; `None` when there is none.
pub fn load(path: &Path) -> Result<Option<XnatctlConfig>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    Ok(Some(parse(&text, is_private(path)?, path)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What xnatctl 0.6.0's `Config.save` writes (`yaml.dump`, default_flow_style=False).
    const WRITTEN: &str = "version: 1
default_profile: production
output_format: table
profiles:
  production:
    url: https://xnat.example.org
    verify_ssl: true
    timeout: 30
    default_project: MYPROJECT
    username: myuser
    password: mypassword
  development:
    url: https://xnat-dev.example.org
    verify_ssl: false
    timeout: 60
    default_project: null
";

    #[test]
    fn reads_what_xnatctl_writes() {
        let c = parse(WRITTEN, true, Path::new("config.yaml")).unwrap();
        assert_eq!(c.default_profile, "production");
        assert_eq!(c.names(), ["production", "development"]);
        let p = c.get("production").unwrap();
        assert_eq!(p.url.as_deref(), Some("https://xnat.example.org"));
        assert_eq!(p.user.as_deref(), Some("myuser"));
        assert_eq!(p.password.as_deref(), Some("mypassword"));
        assert_eq!(p.default_project.as_deref(), Some("MYPROJECT"));
        assert_eq!(p.insecure, None);
        let d = c.get("development").unwrap();
        assert_eq!(
            (d.insecure, d.default_project.as_deref()),
            (Some(true), None)
        );
    }

    #[test]
    fn hand_written_yaml_and_pyyaml_booleans() {
        let text = "# mine\nprofiles: {lab: {url: 'http://h:8080', username: \"bob\", verify_ssl: no, default_project: 42}}\n";
        let c = parse(text, true, Path::new("c")).unwrap();
        assert_eq!(c.default_profile, "default");
        let p = c.get("lab").unwrap();
        assert_eq!(p.url.as_deref(), Some("http://h:8080"));
        assert_eq!(p.user.as_deref(), Some("bob"));
        assert_eq!(p.insecure, Some(true));
        assert_eq!(p.default_project.as_deref(), Some("42"));
        assert_eq!(parse("", true, Path::new("c")).unwrap().profiles.len(), 0);
        assert!(parse("- a list\n", true, Path::new("c")).is_err());
        assert!(parse("profiles: [\n", true, Path::new("c")).is_err());
    }

    #[test]
    fn a_password_others_can_read_is_not_used() {
        let c = parse(WRITTEN, false, Path::new("config.yaml")).unwrap();
        assert_eq!(c.get("production").unwrap().password, None);
        assert_eq!(c.get("production").unwrap().user.as_deref(), Some("myuser"));
    }
}
