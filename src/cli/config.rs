//! `xnatfs config add-profile|list|show|use`: the profiles in `~/.config/xnatfs/config.toml`
//! (and, read-only, xnatctl's). Passwords are never printed.

use crate::profiles::{self, Active, Origin, Profile, UsageError, edit, xnatctl};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Add a profile (or replace the one of that name); the first becomes the default.
    #[command(
        name = "add-profile",
        after_help = "The password: typed at a prompt (on a terminal; leave it empty to store none and be\n\
        asked at each mount), or read from stdin with --password-stdin. The file is written\n\
        private to you (mode 0600).\n\n\
        Examples:\n  \
        xnatfs config add-profile work --url https://xnat.example.org --user alice --default-project MYPROJ\n  \
        printf '%s\\n' \"$PASS\" | xnatfs config add-profile ci --url https://xnat.example.org --user bot --password-stdin"
    )]
    AddProfile(AddProfileArgs),
    /// List the profiles (xnatfs's, then xnatctl's); * marks the one in use.
    #[command(after_help = "Examples:\n  xnatfs config list\n  xnatfs config list --json")]
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show a profile (default: the one in use); the password is never shown.
    #[command(after_help = "Examples:\n  xnatfs config show\n  xnatfs config show work --json")]
    Show {
        /// The profile (default: --profile, $XNATFS_PROFILE, $XNAT_PROFILE, or the default).
        name: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Make a profile the default.
    #[command(after_help = "Examples:\n  xnatfs config use work")]
    Use {
        /// The profile.
        name: String,
    },
}

#[derive(Args, Debug)]
pub struct AddProfileArgs {
    /// The profile's name (letters, digits, '-', '_', '.').
    pub name: String,
    /// The XNAT server's URL.
    #[arg(long)]
    pub url: String,
    /// The user name.
    #[arg(long)]
    pub user: Option<String>,
    /// Where -E labels are looked up when -P is not given.
    #[arg(long)]
    pub default_project: Option<String>,
    /// Read the password from stdin (its first line).
    #[arg(long)]
    pub password_stdin: bool,
    /// Accept any TLS certificate from this server (test servers only).
    #[arg(long)]
    pub insecure: bool,
    /// Make it the default profile.
    #[arg(long = "default")]
    pub make_default: bool,
}

pub fn cmd_config(c: ConfigCommand) -> Result<()> {
    match c {
        ConfigCommand::AddProfile(args) => add_profile(args),
        ConfigCommand::List { json } => list(json),
        ConfigCommand::Show { name, json } => show(name, json),
        ConfigCommand::Use { name } => {
            let path = profiles::config_path();
            edit::use_profile(&path, &name)?;
            eprintln!(
                "xnatfs: the default profile is now {name} ({})",
                path.display()
            );
            Ok(())
        }
    }
}

/// The password for `add-profile`: from stdin, or asked on a terminal; none otherwise.
fn password(args: &AddProfileArgs) -> Result<Option<String>> {
    use std::io::{BufRead, IsTerminal};
    if args.password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from stdin")?;
        let pw = line.trim_end_matches(['\n', '\r']).to_string();
        if pw.is_empty() {
            return Err(UsageError("--password-stdin: stdin held no password".into()).into());
        }
        return Ok(Some(pw));
    }
    match &args.user {
        Some(user) if std::io::stdin().is_terminal() => {
            let pw = rpassword::prompt_password(format!(
                "XNAT password for {user} at {} (empty: store none, be asked at each mount): ",
                crate::names::without_userinfo(&args.url)
            ))
            .context("cannot read the password")?;
            Ok(Some(pw).filter(|p| !p.is_empty()))
        }
        _ => Ok(None),
    }
}

fn add_profile(args: AddProfileArgs) -> Result<()> {
    let url = reqwest::Url::parse(&args.url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .map(|_| args.url.trim_end_matches('/').to_string())
        .ok_or_else(|| {
            UsageError(format!(
                "--url {:?} is not an http(s) URL (like https://xnat.example.org)",
                args.url
            ))
        })?;
    if args.password_stdin && args.user.is_none() {
        return Err(UsageError("--password-stdin needs --user".into()).into());
    }
    let profile = Profile {
        url: Some(url),
        user: args.user.clone(),
        password: password(&args)?,
        default_project: args.default_project.clone(),
        insecure: args.insecure.then_some(true),
    };
    let path = profiles::config_path();
    let replaced = edit::add_profile(&path, &args.name, &profile, args.make_default)?;
    let file = profiles::load(&path)?.unwrap_or_default();
    let default = file.default_profile.as_deref() == Some(args.name.as_str());
    eprintln!(
        "xnatfs: {} profile {}{} in {}{}; check it with: xnatfs auth test --profile {}",
        if replaced { "replaced" } else { "added" },
        args.name,
        if default { " (the default)" } else { "" },
        path.display(),
        if profile.password.is_some() {
            ", with its password (the file is private: mode 0600)"
        } else {
            ""
        },
        args.name
    );
    Ok(())
}

/// A profile as `list` and `show` print it: never its password.
#[derive(Debug, Serialize)]
struct Shown {
    name: String,
    /// "xnatfs" or "xnatctl".
    from: &'static str,
    file: PathBuf,
    url: Option<String>,
    user: Option<String>,
    /// Whether the profile holds a password (never shown).
    password_set: bool,
    default_project: Option<String>,
    insecure: bool,
    /// The profile used when none is named.
    in_use: bool,
}

impl Shown {
    fn new(name: &str, origin: Origin, file: &Path, p: &Profile, in_use: bool) -> Shown {
        Shown {
            name: name.to_string(),
            from: match origin {
                Origin::Xnatfs => "xnatfs",
                Origin::Xnatctl => "xnatctl",
            },
            file: file.to_path_buf(),
            url: p.url.as_deref().map(crate::names::without_userinfo),
            user: p.user.clone(),
            password_set: p.password.is_some(),
            default_project: p.default_project.clone(),
            insecure: p.insecure == Some(true),
            in_use,
        }
    }

    fn text(&self) -> String {
        let none = || "-".to_string();
        let mut lines = vec![
            format!(
                "profile {}{} ({}: {})",
                self.name,
                if self.in_use { " (in use)" } else { "" },
                self.from,
                self.file.display()
            ),
            format!(
                "  url              {}",
                self.url.clone().unwrap_or_else(none)
            ),
            format!(
                "  user             {}",
                self.user.clone().unwrap_or_else(none)
            ),
            format!(
                "  password         {}",
                match self.password_set {
                    true => "set (not shown)",
                    false => "not set (from XNAT_PASS, ~/.netrc, or asked)",
                }
            ),
            format!(
                "  default_project  {}",
                self.default_project.clone().unwrap_or_else(none)
            ),
        ];
        if self.insecure {
            lines.push("  insecure         true (TLS certificates are not checked)".into());
        }
        lines.join("\n")
    }
}

/// Every profile, xnatfs's then xnatctl's, with the one in use marked.
fn all_profiles() -> Result<Vec<Shown>> {
    let ours = profiles::config_path();
    let theirs = xnatctl::config_path();
    let in_use = profiles::active(profiles::wanted_name(None).as_deref())
        .ok()
        .flatten();
    let is_in_use = |name: &str, origin| {
        in_use
            .as_ref()
            .is_some_and(|a: &Active| a.name == name && a.origin == origin)
    };
    let mut out = Vec::new();
    if let Some(file) = profiles::load(&ours)? {
        for (name, p) in &file.profiles {
            let used = is_in_use(name, Origin::Xnatfs);
            out.push(Shown::new(name, Origin::Xnatfs, &ours, p, used));
        }
    }
    if let Some(c) = xnatctl::load(&theirs)? {
        for (name, p) in &c.profiles {
            let used = is_in_use(name, Origin::Xnatctl);
            out.push(Shown::new(name, Origin::Xnatctl, &theirs, p, used));
        }
    }
    Ok(out)
}

fn list(json: bool) -> Result<()> {
    let all = all_profiles()?;
    if json {
        return super::shared::print(
            format!("{}\n", serde_json::to_string_pretty(&all)?).as_bytes(),
        );
    }
    let mut text = String::new();
    if all.is_empty() {
        text.push_str(&format!(
            "no profiles (in {} or {}); add one: xnatfs config add-profile NAME --url URL --user USER\n",
            profiles::config_path().display(),
            xnatctl::config_path().display()
        ));
    }
    let mut last_file = None;
    for s in &all {
        if last_file != Some(&s.file) {
            let note = match s.from {
                "xnatctl" => " (xnatctl's; used when no xnatfs profile is set)",
                _ => "",
            };
            text.push_str(&format!("{}{note}:\n", s.file.display()));
            last_file = Some(&s.file);
        }
        text.push_str(&format!(
            "{} {:<16} {:<40} {:<12} {}\n",
            if s.in_use { "*" } else { " " },
            s.name,
            s.url.as_deref().unwrap_or("-"),
            s.user.as_deref().unwrap_or("-"),
            s.default_project.as_deref().unwrap_or("-"),
        ));
    }
    super::shared::print(text.as_bytes())
}

fn show(name: Option<String>, json: bool) -> Result<()> {
    let wanted = profiles::wanted_name(name.as_deref());
    let active = profiles::active(wanted.as_deref())?.ok_or_else(|| {
        UsageError(format!(
            "no profile is set (none in {}, nor in {}); add one: xnatfs config add-profile NAME --url URL --user USER",
            profiles::config_path().display(),
            xnatctl::config_path().display()
        ))
    })?;
    let in_use = profiles::active(profiles::wanted_name(None).as_deref())
        .ok()
        .flatten()
        .is_some_and(|a| a.name == active.name && a.origin == active.origin);
    let shown = Shown::new(
        &active.name,
        active.origin,
        &active.path,
        &active.profile,
        in_use,
    );
    let text = match json {
        true => serde_json::to_string_pretty(&shown)?,
        false => shown.text(),
    };
    super::shared::print(format!("{text}\n").as_bytes())
}
