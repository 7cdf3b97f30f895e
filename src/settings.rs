//! Which server and which credentials: flags, then the environment variables xnatctl reads
//! (`XNAT_URL`, `XNAT_USER`, `XNAT_PASS`, `XNAT_TOKEN`), then a profile in
//! `~/.config/xnatfs/config.toml` (or xnatctl's `~/.config/xnatctl/config.yaml`: see
//! [`crate::profiles`]), then `~/.netrc`, then a prompt on a terminal. A profile's user and
//! password go only to the profile's own server.
//!
//! ```toml
//! default_profile = "work"
//! [profiles.work]
//! url = "https://xnat.example.org"
//! user = "alice"
//! password = "..."          # allowed only when the file is private (chmod 600)
//! default_project = "DEMO"
//! ```

use crate::profiles::Profile;
pub use crate::profiles::config_path;
use crate::xnat::XnatError;
use crate::xnat::http::Credentials;
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::sync::OnceLock;

/// What the command line says about the server.
#[derive(Debug, Clone, Default)]
pub struct ServerArgs {
    pub url: Option<String>,
    pub user: Option<String>,
    pub profile: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub url: String,
    pub credentials: Credentials,
    pub default_project: Option<String>,
    /// Accept any TLS certificate: the profile (for its own server) says so.
    pub insecure: bool,
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The variables that hold secrets: read once, then taken out of the environment.
const SECRET_VARS: [&str; 2] = ["XNAT_PASS", "XNAT_TOKEN"];

/// [`SECRET_VARS`]' values as this process started with them, once
/// [`take_secrets_from_env`] has run.
static SECRET_ENV: OnceLock<[Option<String>; 2]> = OnceLock::new();

/// Reads `XNAT_PASS` and `XNAT_TOKEN` and removes them from this process's environment, so
/// that nothing it starts (the background mount, fusermount3) inherits them; [`resolve`]
/// reads them from here afterwards. (What `/proc/<pid>/environ` shows is the environment the
/// process started with: only a process started without them, like the background mount,
/// never shows them there.)
///
/// # Safety
///
/// It changes the process environment: no other thread may be running (call it first thing
/// in `main`).
pub unsafe fn take_secrets_from_env() {
    let _ = SECRET_ENV.set(SECRET_VARS.map(env));
    for name in SECRET_VARS {
        // SAFETY: the caller guarantees that no other thread runs.
        unsafe { std::env::remove_var(name) };
    }
}

/// A secret variable's value: as taken by [`take_secrets_from_env`], else from the
/// environment.
fn secret_env(name: &str) -> Option<String> {
    match (
        SECRET_ENV.get(),
        SECRET_VARS.iter().position(|v| *v == name),
    ) {
        (Some(values), Some(i)) => values[i].clone(),
        _ => env(name),
    }
}

/// A `.netrc` entry: login and password for a host.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NetrcEntry {
    pub login: Option<String>,
    pub password: Option<String>,
}

/// The words of a `.netrc` text, without macro bodies: a `macdef NAME` line starts a macro
/// that runs to the next empty line, and nothing in it is an entry (it stays as one `macdef`
/// word, which ends the entry being read).
fn netrc_tokens(text: &str) -> Vec<&str> {
    let mut tokens = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        for word in line.split_whitespace() {
            if word == "macdef" {
                tokens.push(word);
                // The macro's name and the rest of its line, then its body.
                lines.by_ref().find(|body| body.is_empty());
                break;
            }
            tokens.push(word);
        }
    }
    tokens
}

/// The entry for `host` in a `.netrc` text (or its `default` entry).
pub fn netrc_lookup(text: &str, host: &str) -> Option<NetrcEntry> {
    let mut tokens = netrc_tokens(text).into_iter();
    let mut found: Option<NetrcEntry> = None;
    let mut default: Option<NetrcEntry> = None;
    let mut current: Option<(bool, NetrcEntry)> = None; // (is_default, entry) being read
    let mut finish = |cur: Option<(bool, NetrcEntry)>, found: &mut Option<NetrcEntry>| {
        if let Some((is_default, e)) = cur {
            if is_default {
                default.get_or_insert(e);
            } else {
                found.get_or_insert(e);
            }
        }
    };
    while let Some(tok) = tokens.next() {
        match tok {
            "machine" => {
                let m = tokens.next().unwrap_or_default();
                finish(current.take(), &mut found);
                if m == host {
                    current = Some((false, NetrcEntry::default()));
                }
            }
            "default" => {
                finish(current.take(), &mut found);
                current = Some((true, NetrcEntry::default()));
            }
            "login" | "password" | "account" => {
                let value = tokens.next().map(str::to_string);
                if let Some((_, e)) = current.as_mut() {
                    match tok {
                        "login" => e.login = value,
                        "password" => e.password = value,
                        _ => {}
                    }
                }
            }
            "macdef" => finish(current.take(), &mut found),
            _ => {}
        }
    }
    finish(current.take(), &mut found);
    found.or(default)
}

fn netrc_for(url: &str) -> Option<NetrcEntry> {
    let host = reqwest::Url::parse(url).ok()?.host_str()?.to_string();
    let path = env("NETRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".netrc"));
    let text = std::fs::read_to_string(path).ok()?;
    netrc_lookup(&text, &host)
}

/// Whether `a` and `b` name the same server: the same scheme, host, port (the scheme's
/// default when none is written) and path, a trailing slash aside.
pub fn same_server(a: &str, b: &str) -> bool {
    match (reqwest::Url::parse(a), reqwest::Url::parse(b)) {
        (Ok(a), Ok(b)) => {
            a.scheme() == b.scheme()
                && a.host_str() == b.host_str()
                && a.port_or_known_default() == b.port_or_known_default()
                && a.path().trim_end_matches('/') == b.path().trim_end_matches('/')
        }
        _ => false,
    }
}

/// The user name and password written in `url` (`https://alice:secret@host/`), decoded.
fn url_userinfo(url: &str) -> (Option<String>, Option<String>) {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return (None, None);
    };
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let user = Some(parsed.username())
        .filter(|u| !u.is_empty())
        .map(decode);
    (user, parsed.password().map(decode))
}

/// The environment variables xnatctl reads.
#[derive(Debug, Default, Clone)]
struct Env {
    url: Option<String>,
    user: Option<String>,
    pass: Option<String>,
    token: Option<String>,
}

impl Env {
    fn read() -> Env {
        Env {
            url: env("XNAT_URL"),
            user: env("XNAT_USER"),
            pass: secret_env("XNAT_PASS"),
            token: secret_env("XNAT_TOKEN"),
        }
    }
}

/// Chooses the server and credentials from the flags, the environment, the profile and
/// `.netrc` (looked up by `netrc` for the chosen URL). A profile's user and password go only
/// to the profile's own server ([`same_server`]), and its password only with its own user.
/// A user name and password written in the URL are used (as xnatctl and curl do) unless
/// `--user` names another user; the URL kept in the settings never holds them.
fn choose(
    args: &ServerArgs,
    env: &Env,
    profile: &Profile,
    netrc: impl FnOnce(&str) -> Option<NetrcEntry>,
) -> Result<Settings> {
    let given = args
        .url
        .clone()
        .or(env.url.clone())
        .or(profile.url.clone())
        .context(
            "no XNAT server given: set XNAT_URL, pass --url, or add a profile to ~/.config/xnatfs/config.toml \
             (try `xnatfs demo` to see xnatfs work with no server)",
        )?;
    let url = crate::names::without_userinfo(&given);
    let (url_user, url_password) = url_userinfo(&given);
    let own_server = profile.url.as_deref().is_some_and(|p| same_server(p, &url));
    if profile.password.is_some() && !own_server {
        tracing::warn!(
            "the profile's password is not sent to {url}: the profile is for {}",
            profile.url.as_deref().map_or(
                "no server (it has no url)".into(),
                crate::names::without_userinfo
            )
        );
    }
    let (profile_user, profile_password) = match own_server {
        true => (profile.user.clone(), profile.password.clone()),
        false => (None, None),
    };
    let netrc = netrc(&url).unwrap_or_default();
    let user = args
        .user
        .clone()
        .or(url_user.clone())
        .or(env.user.clone())
        .or(profile_user.clone())
        .or(netrc.login.clone());
    let url_password = url_password.filter(|_| url_user.is_some() && url_user == user);
    let profile_password =
        profile_password.filter(|_| profile_user.is_none() || profile_user == user);
    let netrc_password = netrc
        .password
        .filter(|_| netrc.login.is_some() && netrc.login == user);
    // With -v: where each came from (never the secrets themselves).
    let user_from = [
        (args.user.is_some(), "--user"),
        (url_user.is_some(), "the URL"),
        (env.user.is_some(), "XNAT_USER"),
        (profile_user.is_some(), "the profile"),
        (netrc.login.is_some(), "~/.netrc"),
    ];
    let password_from = [
        (url_password.is_some(), "the URL"),
        (env.pass.is_some(), "XNAT_PASS"),
        (profile_password.is_some(), "the profile"),
        (netrc_password.is_some(), "~/.netrc"),
    ];
    let first =
        |from: &[(bool, &'static str)]| from.iter().find(|f| f.0).map_or("nowhere", |f| f.1);
    tracing::info!(
        "credentials for {url}: user {} from {}, password from {}{}",
        user.as_deref().unwrap_or("(none)"),
        first(&user_from),
        first(&password_from),
        if env.token.is_some() {
            ", session token from XNAT_TOKEN"
        } else {
            ""
        }
    );
    let password = url_password
        .or(env.pass.clone())
        .or(profile_password)
        .or(netrc_password);
    Ok(Settings {
        url,
        credentials: Credentials {
            user,
            password,
            token: env.token.clone(),
        },
        default_project: profile.default_project.clone(),
        insecure: own_server && profile.insecure == Some(true),
    })
}

/// The profile in use: named by `--profile`, `XNATFS_PROFILE` or `XNAT_PROFILE`, in
/// xnatfs's config or xnatctl's (see [`crate::profiles::active`]).
fn chosen_profile(args: &ServerArgs) -> Result<Profile> {
    let wanted = crate::profiles::wanted_name(args.profile.as_deref());
    let active = crate::profiles::active(wanted.as_deref())?;
    if let Some(a) = &active {
        tracing::debug!("using {a}");
    }
    Ok(active.map(|a| a.profile).unwrap_or_default())
}

/// Resolves the server and credentials. Prompts for a password only when `may_prompt` and
/// standard input is a terminal. Without `need_credentials` (an offline mount), a missing
/// password is no error.
pub fn resolve(args: &ServerArgs, may_prompt: bool, need_credentials: bool) -> Result<Settings> {
    let profile = chosen_profile(args)?;
    let mut settings = choose(args, &Env::read(), &profile, netrc_for)?;
    let creds = &mut settings.credentials;
    if need_credentials && creds.user.is_none() && creds.token.is_none() && creds.password.is_some()
    {
        return Err(XnatError::Auth(
            "no user name: a password is set, but not whose; set XNAT_USER or pass --user".into(),
        )
        .into());
    }
    if creds.password.is_none() && creds.token.is_none() && need_credentials {
        use std::io::IsTerminal;
        match &creds.user {
            Some(u) if may_prompt && std::io::stdin().is_terminal() => {
                creds.password = Some(
                    rpassword::prompt_password(format!(
                        "XNAT password for {u} at {}: ",
                        settings.url
                    ))
                    .context("cannot read the password")?,
                );
            }
            // Authentication errors (exit 3), though nothing was asked of the server yet.
            Some(u) => {
                return Err(XnatError::Auth(format!(
                    "no password for {u}: set XNAT_PASS (or XNAT_TOKEN), add it to ~/.netrc, or run on a terminal to be asked"
                ))
                .into());
            }
            None => {
                return Err(XnatError::Auth(
                    "no user name: set XNAT_USER (and XNAT_PASS), pass --user, or use XNAT_TOKEN"
                        .into(),
                )
                .into());
            }
        }
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netrc_entries() {
        let text = "machine other.org login bob password b0b\n\
                    machine xnat.example.org\n  login alice\n  password s3cret\n\
                    default login anon password anon\n";
        assert_eq!(
            netrc_lookup(text, "xnat.example.org"),
            Some(NetrcEntry {
                login: Some("alice".into()),
                password: Some("s3cret".into())
            })
        );
        assert_eq!(
            netrc_lookup(text, "unknown.org").and_then(|e| e.login),
            Some("anon".into())
        );
        assert_eq!(netrc_lookup("machine a login x", "b"), None);
    }

    #[test]
    fn netrc_macro_bodies_hold_no_entries() {
        let alice = Some(NetrcEntry {
            login: Some("alice".into()),
            password: Some("s3cret".into()),
        });
        let text = "machine other.org login bob password b0b\n\
                    macdef init machine xnat.example.org login evil password y\n\
                    machine xnat.example.org login evil password stolen\n\
                    \x20\n\
                    default login evil password stolen\n\
                    \n\
                    machine xnat.example.org login alice password s3cret\n";
        assert_eq!(netrc_lookup(text, "xnat.example.org"), alice);
        assert_eq!(
            netrc_lookup(text, "unknown.org"),
            None,
            "no default outside it"
        );
        // Windows line ends; a macro running to the end of the file.
        let crlf = text.replace('\n', "\r\n");
        assert_eq!(netrc_lookup(&crlf, "xnat.example.org"), alice);
        let unended = "macdef m\nmachine xnat.example.org login evil password y\n";
        assert_eq!(netrc_lookup(unended, "xnat.example.org"), None);
    }

    fn profile(url: Option<&str>) -> Profile {
        Profile {
            url: url.map(Into::into),
            user: Some("alice".into()),
            password: Some("pw".into()),
            ..Profile::default()
        }
    }

    /// The user and password chosen for `url` (None: the profile's own URL).
    fn chosen(
        url: Option<&str>,
        user: Option<&str>,
        p: &Profile,
    ) -> (Option<String>, Option<String>) {
        let args = ServerArgs {
            url: url.map(Into::into),
            user: user.map(Into::into),
            profile: None,
        };
        let s = choose(&args, &Env::default(), p, |_| None).unwrap();
        (s.credentials.user, s.credentials.password)
    }

    #[test]
    fn a_profiles_password_goes_only_to_its_own_server() {
        let p = profile(Some("https://xnat.example.org/"));
        let alice = (Some("alice".to_string()), Some("pw".to_string()));
        for same in [
            None,
            Some("https://xnat.example.org"),
            Some("https://XNAT.example.org:443/"),
        ] {
            assert_eq!(chosen(same, None, &p), alice, "{same:?}");
        }
        for other in [
            "https://evil.example.org",
            "http://xnat.example.org",
            "https://xnat.example.org:8443",
            "https://xnat.example.org/other",
            "https://xnat.example.org.evil.org",
        ] {
            assert_eq!(chosen(Some(other), None, &p), (None, None), "{other}");
        }
        // Through XNAT_URL just the same.
        let env = Env {
            url: Some("https://evil.example.org".into()),
            ..Env::default()
        };
        let s = choose(&ServerArgs::default(), &env, &p, |_| None).unwrap();
        assert_eq!(s.credentials.password, None);
        // A profile with no URL belongs to no server; another user never gets its password.
        let url = Some("https://xnat.example.org");
        assert_eq!(chosen(url, None, &profile(None)), (None, None));
        assert_eq!(chosen(url, Some("bob"), &p), (Some("bob".into()), None));
    }

    #[test]
    fn credentials_in_the_url_are_used_and_never_shown() {
        let raw = "https://alice:s%40cret@xnat.example.org:8443/xnat/";
        for url in [raw, "https://alice:s%40cret@xnat.example.org:8443/xnat"] {
            let args = ServerArgs {
                url: Some(url.into()),
                ..ServerArgs::default()
            };
            let s = choose(&args, &Env::default(), &Profile::default(), |_| None).unwrap();
            assert_eq!(
                (
                    s.credentials.user.as_deref(),
                    s.credentials.password.as_deref()
                ),
                (Some("alice"), Some("s@cret"))
            );
            assert!(!format!("{s:?}").contains("cret"), "{s:?}");
            let shown = format!("{} {}", s.url, crate::cache::area_name(&s.url));
            assert!(
                !shown.contains("cret") && !shown.contains("alice"),
                "{shown}"
            );
            assert!(
                s.url.starts_with("https://xnat.example.org:8443/xnat"),
                "{shown}"
            );
        }
        let area = crate::cache::area_name(raw);
        assert_eq!(area, "https_xnat.example.org_8443_xnat");
        // Even where it is no URL at all.
        assert_eq!(
            crate::names::without_userinfo("alice:secret@host/x@y"),
            "host/x@y"
        );
        assert_eq!(
            crate::names::without_userinfo("https://host/a@b"),
            "https://host/a@b"
        );
        // --user names another user: the URL's password is not theirs.
        let args = ServerArgs {
            url: Some(raw.into()),
            user: Some("bob".into()),
            profile: None,
        };
        let s = choose(&args, &Env::default(), &Profile::default(), |_| None).unwrap();
        assert_eq!(s.credentials.password, None);
    }
}
