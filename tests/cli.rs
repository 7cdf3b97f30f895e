//! The commands that need no mount, run as the real binary: profiles (`xnatfs config`),
//! `auth test`/`whoami`, xnatctl's profiles, `--json` outputs, and the exit codes every
//! command shares (0 ok, 1 failed, 2 usage, 3 authentication, 4 partial, 5 unreachable).

mod common;

use common::*;
use serde_json::Value;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `cmd` with `stdin` fed in; panics past 60 s.
fn run_with(mut cmd: Command, stdin: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).unwrap();
    drop(input);
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("ran over 60 s: {cmd:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn run(cmd: Command) -> Output {
    run_with(cmd, "")
}

/// `xnatfs ARGS` with a private HOME and no server settings in the environment.
fn bare(home: &Path, args: &[&str]) -> Command {
    let mut cmd = xnatfs("", home);
    for var in ["XNAT_URL", "XNAT_USER", "XNAT_PASS"] {
        cmd.env_remove(var);
    }
    cmd.args(args);
    cmd
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Checks the exit status and that stderr says `want`; returns stdout.
#[track_caller]
fn exits(out: &Output, code: i32, want: &str) -> String {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(stderr.contains(want), "wanted {want:?} in: {stderr}");
    stdout
}

/// A port on 127.0.0.1 where nothing listens.
fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

#[test]
fn profiles_are_added_listed_shown_and_used_and_passwords_never_printed() {
    let mock = start_mock(small_sample());
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let url = mock.url();
    let out = run_with(
        bare(
            h,
            &[
                "config",
                "add-profile",
                "work",
                "--url",
                &url,
                "--user",
                "demo",
                "--password-stdin",
                "--default-project",
                "DEMO",
            ],
        ),
        "demo\n",
    );
    exits(&out, 0, "added profile work (the default)");
    let path = h.join("config/xnatfs/config.toml");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    exits(
        &run(bare(
            h,
            &[
                "config",
                "add-profile",
                "other",
                "--url",
                "http://127.0.0.1:9",
                "--user",
                "bob",
            ],
        )),
        0,
        "added profile other in",
    );
    let list = exits(&run(bare(h, &["config", "list"])), 0, "");
    assert!(
        list.contains("* work") && list.contains("  other"),
        "{list}"
    );
    let shown = exits(&run(bare(h, &["config", "show"])), 0, "");
    assert!(
        shown.contains("profile work (in use)") && shown.contains("set (not shown)"),
        "{shown}"
    );
    let json: Value =
        serde_json::from_str(&exits(&run(bare(h, &["config", "list", "--json"])), 0, "")).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2);
    assert_eq!(json[1]["name"], "work");
    assert_eq!(json[1]["password_set"], true);
    for args in [
        &["config", "list", "--json"][..],
        &["config", "show", "work", "--json"],
        &["config", "show"],
    ] {
        let out = run(bare(h, args));
        assert!(
            !text(&out.stdout).contains("\"demo\"\n") && !text(&out.stdout).contains("password = ")
        );
    }
    let show: Value = serde_json::from_str(&exits(
        &run(bare(h, &["config", "show", "work", "--json"])),
        0,
        "",
    ))
    .unwrap();
    assert_eq!(show["default_project"], "DEMO");
    assert!(show.get("password").is_none(), "{show}");

    // The profile logs in; --profile picks another; `use` changes the default.
    let ok = exits(&run(bare(h, &["auth", "test"])), 0, "");
    assert!(
        ok.contains(&format!("ok: logged in to {url} as demo (profile \"work\"")),
        "{ok}"
    );
    let ok = exits(&run(bare(h, &["whoami", "--profile", "work"])), 0, "");
    assert!(ok.starts_with("ok: logged in"), "{ok}");
    exits(
        &run(bare(h, &["config", "use", "other"])),
        0,
        "the default profile is now other",
    );
    let json: Value =
        serde_json::from_str(&exits(&run(bare(h, &["config", "show", "--json"])), 0, "")).unwrap();
    assert_eq!(json["name"], "other");

    // A typo: exit 2, the profiles there are, the closest.
    for args in [
        &["auth", "test", "--profile", "wrok"][..],
        &["config", "use", "wrok"],
        &["config", "show", "wrok"],
    ] {
        exits(&run(bare(h, args)), 2, "no profile \"wrok\"; profiles in");
        let stderr = text(&run(bare(h, args)).stderr);
        assert!(
            stderr.contains("other, work") && stderr.contains("did you mean \"work\"?"),
            "{stderr}"
        );
    }
    let mut cmd = bare(h, &["prefetch", "-E", "XNAT_E00001", "--dry-run"]);
    cmd.env("XNATFS_PROFILE", "wrk");
    exits(&run(cmd), 2, "did you mean \"work\"?");
    // add-profile refuses what it cannot use.
    exits(
        &run(bare(h, &["config", "add-profile", "a b", "--url", &url])),
        2,
        "not a usable profile name",
    );
    exits(
        &run(bare(
            h,
            &["config", "add-profile", "x", "--url", "xnat.org"],
        )),
        2,
        "not an http(s) URL",
    );
}

#[test]
fn unknown_keys_in_the_config_are_errors_that_list_the_valid_ones() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let path = h.join("config/xnatfs/config.toml");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(
        &path,
        "[profiles.work]\nurl = \"http://127.0.0.1:9\"\nusername = \"alice\"\n",
    )
    .unwrap();
    for args in [&["config", "list"][..], &["auth", "test"]] {
        let out = run(bare(h, args));
        exits(&out, 1, "unknown field `username`");
        let stderr = text(&out.stderr);
        for valid in ["url", "user", "password", "default_project", "insecure"] {
            assert!(stderr.contains(&format!("`{valid}`")), "{valid}: {stderr}");
        }
        assert!(stderr.contains("config.toml"), "{stderr}");
    }
}

#[test]
fn auth_test_exit_codes_ok_refused_missing_and_unreachable() {
    let mock = start_mock(small_sample());
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let mut ok = xnatfs(&mock.url(), h);
    ok.args(["auth", "test"]);
    exits(&run(ok), 0, "");
    let mut wrong = xnatfs(&mock.url(), h);
    wrong.env("XNAT_PASS", "nope").args(["auth", "test"]);
    exits(&run(wrong), 3, "wrong user name or password");
    let mut no_pass = bare(h, &["auth", "test", "--url", &mock.url(), "--user", "demo"]);
    no_pass.stdin(Stdio::null());
    exits(&run(no_pass), 3, "no password for demo");
    exits(
        &run(bare(h, &["whoami", "--url", &mock.url()])),
        3,
        "no user name",
    );
    let mut dead = xnatfs(&dead_url(), h);
    dead.args(["auth", "test", "--io-timeout", "2s"]);
    exits(&run(dead), 5, "cannot reach the server");
    // Usage errors are 2, as clap gives.
    exits(
        &run(bare(h, &["auth", "test", "--no-such-flag"])),
        2,
        "unexpected argument",
    );
}

/// An expired password and an expired alias token each say so, exit 3, and are never taken
/// for a wrong password (XNAT answers both with 403 before checking the password).
#[test]
fn an_expired_password_or_alias_token_says_so_with_exit_3() {
    let mock = start_mock(small_sample());
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    mock.state
        .controls
        .password_expired
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let mut expired = xnatfs(&mock.url(), h);
    expired.args(["auth", "test"]);
    exits(&run(expired), 3, "password expired: the password of demo");
    let logins = mock
        .state
        .controls
        .failed_logins
        .load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(logins, 0, "an expired password is no failed login");
    let mut alias = xnatfs(&mock.url(), h);
    alias
        .env("XNAT_USER", "0b6f6a0e-5f43-4d9e-9c3b-6f8e0f8e2a11")
        .env("XNAT_PASS", "secret")
        .args(["auth", "test"]);
    exits(&run(alias), 3, "token expired: the alias token");
}

#[test]
fn xnatctl_profiles_and_xnat_profile_are_used_when_no_xnatfs_profile_is_set() {
    let mock = start_mock(small_sample());
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    // What xnatctl 0.6.0 writes (xnatctl/core/config.py, Config.save): always under
    // ~/.config/xnatctl, whatever XDG_CONFIG_HOME says.
    let yaml = h.join(".config/xnatctl/config.yaml");
    std::fs::create_dir_all(yaml.parent().unwrap()).unwrap();
    std::fs::write(
        &yaml,
        format!(
            "version: 1\ndefault_profile: broken\noutput_format: table\nprofiles:\n  broken:\n    url: {}\n    verify_ssl: true\n    timeout: 30\n    username: demo\n    password: demo\n  lab:\n    url: {}\n    verify_ssl: true\n    timeout: 30\n    default_project: DEMO\n    username: demo\n    password: demo\n",
            dead_url(),
            mock.url()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&yaml, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut cmd = bare(h, &["auth", "test"]);
    cmd.env("XNAT_PROFILE", "lab");
    let ok = exits(&run(cmd), 0, "");
    assert!(
        ok.contains("as demo (profile \"lab\" in") && ok.contains("xnatctl/config.yaml"),
        "{ok}"
    );
    // Its default project finds labels without -P.
    let mut cmd = bare(
        h,
        &[
            "prefetch",
            "-E",
            "SUBJ01_MR1",
            "--dry-run",
            "--json",
            "--profile",
            "lab",
        ],
    );
    cmd.arg("--out").arg(h.join("out"));
    let json: Value = serde_json::from_str(&exits(&run(cmd), 0, "")).unwrap();
    assert_eq!(json["sessions"][0]["id"], "XNAT_E00001");
    // Without XNAT_PROFILE, xnatctl's default_profile.
    exits(
        &run(bare(h, &["auth", "test", "--io-timeout", "2s"])),
        5,
        "cannot reach",
    );
    let list = exits(&run(bare(h, &["config", "list"])), 0, "");
    assert!(
        list.contains("xnatctl's; used when no xnatfs profile is set"),
        "{list}"
    );
    assert!(
        list.contains("* broken") && list.contains("  lab"),
        "{list}"
    );
}

#[test]
fn prefetch_json_gives_the_plan_then_the_result_and_cache_stats_json() {
    let mock = start_mock(small_sample());
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let url = mock.url();
    let prefetch = |extra: &[&str]| {
        let mut cmd = xnatfs(&url, h);
        cmd.args([
            "prefetch",
            "-E",
            "XNAT_E00001",
            "-s",
            "2",
            "-r",
            "NIFTI",
            "--json",
        ])
        .args(extra);
        run(cmd)
    };
    let plan: Value = serde_json::from_slice(&prefetch(&["--dry-run"]).stdout).unwrap();
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["status"], "complete");
    assert_eq!(plan["exit_code"], 0);
    let s = &plan["sessions"][0];
    assert_eq!(
        (s["id"].as_str(), s["label"].as_str()),
        (Some("XNAT_E00001"), Some("SUBJ01_MR1"))
    );
    assert_eq!(s["resources"][0]["scan"], "2");
    assert_eq!(s["resources"][0]["label"], "NIFTI");
    let files = plan["totals"]["files"].as_u64().unwrap();
    assert_eq!(files, 1, "scan 2's NIFTI holds one file: {plan}");
    assert!(
        files > 0 && plan["totals"]["bytes"].as_u64().unwrap() > 0,
        "{plan}"
    );
    assert_eq!(mock.state.file_gets(), 0);

    let out = prefetch(&[]);
    let done: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(done["dry_run"], false);
    assert_eq!(done["status"], "complete");
    assert_eq!(done["totals"]["downloaded_files"].as_u64(), Some(files));
    assert_eq!(done["totals"]["failed_files"], 0);
    assert_eq!(done["sessions"][0]["failed_files"], 0);
    // The summary line counts in the one unit system, "1 file" in the singular.
    let again = prefetch(&["-q"]);
    let v: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(v["totals"]["present_files"].as_u64(), Some(files));
    let stderr = text(&again.stderr);
    assert!(
        stderr.contains("0 files (0 B) downloaded")
            && stderr.contains("1 file (")
            && stderr.contains("B/s)"),
        "{stderr}"
    );
    assert!(!stderr.contains("MB/s"), "{stderr}");

    // Errors are JSON too, with their exit code.
    let mut cmd = xnatfs(&url, h);
    cmd.args(["prefetch", "-E", "NO_SUCH", "--json"]);
    let out = run(cmd);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (out.status.code(), v["exit_code"].as_i64()),
        (Some(1), Some(1))
    );
    assert_eq!(v["status"], "failed");
    assert!(v["error"].as_str().unwrap().contains("NO_SUCH"), "{v}");
    let mut cmd = xnatfs(&url, h);
    cmd.env("XNAT_PASS", "wrong")
        .args(["prefetch", "-E", "XNAT_E00001", "--json"]);
    let out = run(cmd);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (out.status.code(), v["exit_code"].as_i64()),
        (Some(3), Some(3))
    );
    assert_eq!(v["status"], "authentication");

    let out = run({
        let mut c = xnatfs(&url, h);
        c.args(["cache", "stats", "--json"]);
        c
    });
    let stats: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["total_files"].as_u64(), Some(files), "{stats}");
    assert_eq!(stats["areas"].as_array().unwrap().len(), 1);
    assert!(
        stats["areas"][0]["area"]
            .as_str()
            .unwrap()
            .starts_with("http_127.0.0.1_")
    );
    let text_stats = text(
        &run({
            let mut c = xnatfs(&url, h);
            c.args(["cache", "stats"]);
            c
        })
        .stdout,
    );
    assert!(text_stats.contains("total: 1 file, "), "{text_stats}");
}

#[test]
fn exit_codes_are_documented_in_help_and_the_readme() {
    let home = tempfile::tempdir().unwrap();
    let help = text(&run(bare(home.path(), &["--help"])).stdout);
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for (code, word) in [
        (0, "ok"),
        (1, "failed"),
        (2, "usage"),
        (3, "authentication"),
        (4, "partial"),
        (5, "server unreachable"),
        (130, "interrupted"),
        (143, "terminated"),
    ] {
        assert!(
            help.contains(&format!("{code:>5}  {word}")),
            "{code} {word}: {help}"
        );
        assert!(
            readme.contains(&format!("| {code} | {word}")),
            "README: {code} {word}"
        );
    }
}

#[test]
fn a_mount_refused_by_the_server_exits_3_and_an_unreachable_one_5() {
    let mock = start_mock(small_sample());
    let home = tempfile::tempdir().unwrap();
    let mnt = home.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mut cmd = xnatfs(&mock.url(), home.path());
    cmd.env("XNAT_PASS", "wrong").arg("mount").arg(&mnt);
    exits(&run(cmd), 3, "wrong user name or password");
    let mut cmd = xnatfs(&dead_url(), home.path());
    cmd.args(["mount", "--io-timeout", "2s"]).arg(&mnt);
    exits(&run(cmd), 5, "cannot reach the server");
    assert!(!is_mounted(&mnt));
}
