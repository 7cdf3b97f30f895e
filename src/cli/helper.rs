//! xnatfs as a mount(8) helper, so `/etc/fstab` lines, systemd `.mount` units and
//! `mount -t fuse.xnatfs` mount with it, and `xnatfs install-helper`.
//!
//! mount(8) runs `/sbin/mount.fuse.xnatfs URL MOUNTPOINT [-f] [-s] [-n] [-v] -o OPTIONS`
//! where that exists (the link `install-helper` makes to this program); otherwise it runs
//! mount.fuse3, which runs `xnatfs URL MOUNTPOINT -o OPTIONS` (found on a plain PATH:
//! `/usr/local/bin`, `/usr/bin`, ...). mount.fuse3 also takes the fstab form `xnatfs#URL`
//! with the type `fuse`. Either way the helper form becomes the `xnatfs mount` command line
//! it stands for: each `-o` option is a `xnatfs mount` flag (`cache_dir=D` is `--cache-dir D`,
//! `allow_other` is `--allow-other`, `session=` may repeat), read from the command's own
//! definition, so a new mount flag is an option here too. mount(8)'s own options (`_netdev`,
//! `nofail`, `noauto`, `rw`, `x-systemd.*`, ...) are accepted and ignored; any other is an
//! error that lists the valid ones.

use anyhow::{Context, Result, bail};
use clap::Args;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The name mount(8) looks for to mount the type `fuse.xnatfs`.
pub const HELPER_NAME: &str = "mount.fuse.xnatfs";

/// mount(8)'s own options, and those mount.fuse3 adds: accepted, and ignored (the mount is
/// always read-only, nodev and nosuid).
const IGNORED: [&str; 35] = [
    "defaults",
    "ro",
    "rw",
    "auto",
    "noauto",
    "user",
    "nouser",
    "users",
    "owner",
    "group",
    "_netdev",
    "nofail",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "exec",
    "noexec",
    "atime",
    "noatime",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "lazytime",
    "nolazytime",
    "diratime",
    "nodiratime",
    "iversion",
    "noiversion",
    "sync",
    "async",
    "dirsync",
    "silent",
    "loud",
];

/// Ignored options with a value: `x-systemd.automount`, `comment=...`, `user=NAME` (which
/// mount(8) may add for a user mount; the XNAT user goes in the URL or the profile).
const IGNORED_PREFIXES: [&str; 3] = ["x-", "comment=", "user="];

/// `xnatfs mount` flags that are no `-o` option: the URL is the source; the user name is
/// mount(8)'s `user`; a helper must return once mounted.
const NOT_OPTIONS: [&str; 4] = ["url", "user", "foreground", "help"];

/// What a helper command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Helper {
    /// Run this `xnatfs mount` command line.
    Mount(Vec<OsString>),
    /// `-f`: do everything but mount, which is nothing.
    Fake,
}

/// The helper form, if `argv` is one: this program called as `mount.fuse.xnatfs` (or any
/// `mount.*` name), or with a server URL (or `xnatfs#URL`) where the command goes.
pub fn helper_form(argv: &[OsString]) -> Option<Result<Helper>> {
    let called_as_helper = argv
        .first()
        .and_then(|a| Path::new(a).file_name())
        .is_some_and(|name| name.to_string_lossy().starts_with("mount."));
    let url_first = argv
        .get(1)
        .and_then(|a| a.to_str())
        .is_some_and(|a| a.contains("://") || a.starts_with("xnatfs#"));
    (called_as_helper || url_first).then(|| translate(argv))
}

/// A `-o` option of the helper form: its name, the `xnatfs mount` flag, and whether it takes
/// a value.
struct MountOption {
    name: String,
    flag: String,
    takes_value: bool,
}

/// The `-o` options, from `xnatfs mount`'s flags.
fn mount_options() -> Vec<MountOption> {
    // `xnatfs mount`'s arguments, as its flags define them.
    let mount = super::mount::MountArgs::augment_args(clap::Command::new("mount"));
    mount
        .get_arguments()
        .filter(|a| !a.is_positional())
        .filter_map(|a| {
            let flag = a.get_long()?;
            (!NOT_OPTIONS.contains(&flag)).then(|| MountOption {
                name: flag.replace('-', "_"),
                flag: flag.to_string(),
                takes_value: a.get_action().takes_values(),
            })
        })
        .collect()
}

/// The valid `-o` options, for an error message.
fn valid_options(options: &[MountOption]) -> String {
    let ours: Vec<String> = options
        .iter()
        .map(|o| match o.takes_value {
            true => format!("{}=", o.name),
            false => o.name.clone(),
        })
        .collect();
    format!(
        "valid options: {}; and mount's own, accepted and ignored: {}, x-*, comment=*",
        ours.join(", "),
        IGNORED.join(", ")
    )
}

fn is_ignored(option: &str) -> bool {
    IGNORED.contains(&option) || IGNORED_PREFIXES.iter().any(|p| option.starts_with(p))
}

/// The `xnatfs mount` command line that a helper command line stands for.
fn translate(argv: &[OsString]) -> Result<Helper> {
    const USAGE: &str = "usage: xnatfs URL MOUNTPOINT [-o OPTION,...] (the form mount(8) and \
                         /etc/fstab use; xnatfs --help for the other commands)";
    let mut positional: Vec<&OsString> = Vec::new();
    let mut option_lists: Vec<&str> = Vec::new();
    let (mut verbose, mut sloppy, mut fake) = (0, false, false);
    let mut args = argv.iter().skip(1);
    while let Some(arg) = args.next() {
        let text = arg.to_str().unwrap_or_default();
        match text {
            "-o" => {
                let list = args.next().context("-o needs a list of options")?;
                option_lists.push(list.to_str().context("the options are not UTF-8")?);
            }
            o if o.starts_with("-o") => option_lists.push(&o[2..]),
            "-t" => {
                let fs_type = args.next().context("-t needs a type")?;
                let fs_type = fs_type.to_string_lossy();
                if !["fuse.xnatfs", "fuseblk.xnatfs", "xnatfs"].contains(&fs_type.as_ref()) {
                    bail!("xnatfs mounts the type fuse.xnatfs, not {fs_type}");
                }
            }
            "-N" => bail!("-N (mounting in another namespace) is not supported"),
            "-h" | "--help" => bail!("{USAGE}"),
            // mount(8)'s flags: sloppy, fake, no mtab, verbose (alone or together).
            f if f.len() > 1
                && f.starts_with('-')
                && f[1..].chars().all(|c| "sfnv".contains(c)) =>
            {
                for c in f[1..].chars() {
                    match c {
                        's' => sloppy = true,
                        'f' => fake = true,
                        'v' => verbose += 1,
                        _ => {}
                    }
                }
            }
            f if f.starts_with('-') && f.len() > 1 => bail!("unknown flag {f}; {USAGE}"),
            _ => positional.push(arg),
        }
    }
    let [source, mountpoint] = positional[..] else {
        bail!("{USAGE}");
    };
    let source = source.to_string_lossy();
    let url = source.strip_prefix("xnatfs#").unwrap_or(&source);
    if !url.contains("://") {
        bail!(
            "the source must be the server's URL (like https://xnat.example.org), not {}",
            crate::names::without_userinfo(url)
        );
    }
    let mut out: Vec<OsString> = vec!["xnatfs".into()];
    out.extend((0..verbose).map(|_| OsString::from("-v")));
    out.push("mount".into());
    out.push(mountpoint.clone());
    out.push(format!("--url={url}").into());
    let options = mount_options();
    for option in option_lists.iter().flat_map(|l| l.split(',')) {
        if option.is_empty() || is_ignored(option) {
            continue;
        }
        let (name, value) = match option.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (option, None),
        };
        let Some(known) = options.iter().find(|o| o.name == name) else {
            if sloppy {
                eprintln!("xnatfs: ignoring the unknown mount option {option} (-s)");
                continue;
            }
            bail!("unknown mount option {option}; {}", valid_options(&options));
        };
        match (known.takes_value, value) {
            (true, Some(v)) if !v.is_empty() => out.push(format!("--{}={v}", known.flag).into()),
            (true, _) => bail!("the mount option {name} needs a value ({name}=...)"),
            (false, None) => out.push(format!("--{}", known.flag).into()),
            (false, Some(_)) => bail!("the mount option {name} takes no value"),
        }
    }
    Ok(match fake {
        true => Helper::Fake,
        false => Helper::Mount(out),
    })
}

/// Sets `HOME` from the user database where it is unset or `/`, as it is when systemd or the
/// boot environment runs mount(8): the profile (`~/.config/xnatfs`), `~/.netrc` and the
/// default cache dir are then the mounting user's (root's: `/root`), as mount.fuse3 does.
///
/// # Safety
/// Changes the environment: call it before any other thread starts.
pub unsafe fn ensure_home() {
    let home = std::env::var_os("HOME").unwrap_or_default();
    if !home.is_empty() && home != "/" {
        return;
    }
    // SAFETY: single-threaded (the caller's promise); the entry is read before any other call
    // to the user database.
    let dir = unsafe {
        let entry = libc::getpwuid(libc::getuid());
        if entry.is_null() || (*entry).pw_dir.is_null() {
            return;
        }
        std::ffi::CStr::from_ptr((*entry).pw_dir).to_owned()
    };
    use std::os::unix::ffi::OsStrExt;
    let dir = std::ffi::OsStr::from_bytes(dir.to_bytes());
    if !dir.is_empty() {
        // SAFETY: single-threaded, as above.
        unsafe { std::env::set_var("HOME", dir) };
    }
}

#[derive(Args, Debug)]
pub struct InstallHelperArgs {
    /// Where mount(8) looks for helpers.
    #[arg(long, default_value = "/sbin")]
    pub dir: PathBuf,
}

/// Links `<dir>/mount.fuse.xnatfs` to this program (replacing an older link).
pub fn cmd_install_helper(args: InstallHelperArgs) -> Result<()> {
    let exe = std::env::current_exe()
        .and_then(std::fs::canonicalize)
        .context("cannot find this program's path")?;
    let link = args.dir.join(HELPER_NAME);
    match std::fs::symlink_metadata(&link) {
        Ok(meta) if meta.file_type().is_symlink() => {
            if std::fs::read_link(&link).is_ok_and(|to| to == exe) {
                eprintln!(
                    "xnatfs: {} already links to {}",
                    link.display(),
                    exe.display()
                );
                return Ok(());
            }
        }
        Ok(_) => bail!(
            "{} exists and is not a link; remove it first if it is an old xnatfs",
            link.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => bail!("cannot use {}: {e}", link.display()),
    }
    // Made under another name and renamed over: there is never a moment without a helper.
    let tmp = args
        .dir
        .join(format!(".{HELPER_NAME}.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&exe, &tmp)
        .and_then(|()| std::fs::rename(&tmp, &link))
        .with_context(|| format!("cannot create {} (run it as root)", link.display()))?;
    eprintln!(
        "xnatfs: linked {} to {}: mount -t fuse.xnatfs, /etc/fstab lines and systemd .mount units use it",
        link.display(),
        exe.display()
    );
    Ok(())
}

/// The helper form's command line as text, for tests and messages.
#[cfg(test)]
fn args_text(helper: Helper) -> Vec<String> {
    match helper {
        Helper::Mount(args) => args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        Helper::Fake => vec!["(fake)".into()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn translated(args: &[&str]) -> Result<Vec<String>> {
        helper_form(&argv(args))
            .expect("a helper form")
            .map(args_text)
    }

    #[test]
    fn commands_are_not_the_helper_form() {
        for args in [
            &["xnatfs", "mount", "/mnt/x"][..],
            &["/usr/bin/xnatfs", "status"],
            &["xnatfs"],
        ] {
            assert!(helper_form(&argv(args)).is_none(), "{args:?}");
        }
    }

    #[test]
    fn options_become_mount_flags() {
        let got = translated(&[
            "xnatfs",
            "https://xnat.example.org",
            "/mnt/xnat",
            "-o",
            "rw,project=P,session=E1,session=E2,profile=work,cache_dir=/var/cache/x,allow_other,_netdev,nofail,dev,suid,x-systemd.automount,dir_ttl=5m,crawl_ahead=2,scan_names=id-type,verify=size,series_readahead=0",
        ])
        .unwrap();
        assert_eq!(
            got,
            [
                "xnatfs",
                "mount",
                "/mnt/xnat",
                "--url=https://xnat.example.org",
                "--project=P",
                "--session=E1",
                "--session=E2",
                "--profile=work",
                "--cache-dir=/var/cache/x",
                "--allow-other",
                "--dir-ttl=5m",
                "--crawl-ahead=2",
                "--scan-names=id-type",
                "--verify=size",
                "--series-readahead=0",
            ]
        );
    }

    #[test]
    fn mount_8_and_mount_fuse3_forms() {
        // What mount(8) passes to /sbin/mount.fuse.xnatfs.
        let got = translated(&[
            "/sbin/mount.fuse.xnatfs",
            "http://127.0.0.1:8080",
            "/mnt/x",
            "-v",
            "-o",
            "rw,offline",
            "-t",
            "fuse.xnatfs",
        ])
        .unwrap();
        assert_eq!(
            got,
            [
                "xnatfs",
                "-v",
                "mount",
                "/mnt/x",
                "--url=http://127.0.0.1:8080",
                "--offline"
            ]
        );
        // An fstab source for mount.fuse3: xnatfs#URL.
        let got = translated(&["xnatfs", "xnatfs#https://h/xnat", "/m"]).unwrap();
        assert_eq!(got, ["xnatfs", "mount", "/m", "--url=https://h/xnat"]);
        // -f is a fake mount: nothing to do.
        assert_eq!(
            translated(&["mount.fuse.xnatfs", "https://h", "/m", "-fv"]).unwrap(),
            ["(fake)"]
        );
    }

    #[test]
    fn unknown_options_are_errors_listing_the_valid_ones() {
        let e = translated(&["xnatfs", "https://h", "/m", "-o", "projet=P"]).unwrap_err();
        let e = e.to_string();
        assert!(
            e.starts_with("unknown mount option projet=P; valid options: "),
            "{e}"
        );
        for valid in [
            "project=",
            "session=",
            "profile=",
            "cache_dir=",
            "allow_other",
            "_netdev",
        ] {
            assert!(e.contains(valid), "{valid}: {e}");
        }
        assert!(!e.contains("url="), "the URL is the source: {e}");
        // -s (sloppy) lets them pass.
        let got = translated(&["xnatfs", "https://h", "/m", "-s", "-o", "projet=P"]).unwrap();
        assert_eq!(got, ["xnatfs", "mount", "/m", "--url=https://h"]);
        for (bad, says) in [
            (
                &["xnatfs", "https://h", "/m", "-o", "project"][..],
                "needs a value",
            ),
            (
                &["xnatfs", "https://h", "/m", "-o", "offline=1"],
                "takes no value",
            ),
            (&["xnatfs", "https://h"], "usage: xnatfs URL MOUNTPOINT"),
            (
                &["mount.fuse.xnatfs", "xnat.example.org", "/m"],
                "must be the server's URL",
            ),
            (
                &["xnatfs", "https://h", "/m", "-t", "fuse.sshfs"],
                "type fuse.xnatfs",
            ),
        ] {
            let e = translated(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }
}
