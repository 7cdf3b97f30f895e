//! The command line: help, exit statuses, durations.

use crate::common::*;

#[test]
fn prefetch_help_and_the_readme_document_every_exit_status() {
    let home = tempfile::tempdir().unwrap();
    let o = xnatfs("http://127.0.0.1:9", home.path())
        .args(["prefetch", "--help"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for (code, what) in [
        (0, "every planned file is present and verified"),
        (1, "failed"),
        (2, "usage"),
        (4, "partial"),
        (5, "server unreachable"),
        (130, "interrupted (SIGINT"),
        (143, "terminated (SIGTERM"),
    ] {
        assert!(
            help.contains(&format!("{code:>5}  {what}")),
            "{code}: {help}"
        );
        assert!(
            readme.contains(&format!("| {code} | {what}")),
            "README: {code}"
        );
    }
    // Usage errors are clap's.
    let o = xnatfs("http://127.0.0.1:9", home.path())
        .args(["prefetch", "--workers", "0"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn durations_take_units_and_absurd_ones_are_usage_errors() {
    let mock = start_mock(small_sample());
    let home = tempfile::tempdir().unwrap();
    for (value, want) in [
        ("18446744073709551615", "too long"),
        ("soon", "not a duration"),
        // Not raised to a second without a word.
        ("0", "at least 1s"),
        ("500ms", "at least 1s"),
    ] {
        let out = prefetch(
            &mock.url(),
            home.path(),
            &["-E", "XNAT_E00001", "--io-timeout", value],
        );
        ended(&out, 2, want);
    }
    let out = prefetch(
        &mock.url(),
        home.path(),
        &["-E", "XNAT_E00001", "--io-timeout", "5s", "--dry-run"],
    );
    ok(&out);
}
