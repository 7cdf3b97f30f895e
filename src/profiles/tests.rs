use super::*;
use std::os::unix::fs::PermissionsExt;

fn write(path: &Path, text: &str, mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn profiles_with_passwords_must_be_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let none = dir.path().join("none.yaml");
    write(
        &path,
        "default_profile = \"w\"\n[profiles.w]\nurl = \"http://h\"\nuser = \"u\"\npassword = \"p\"\ndefault_project = \"DEMO\"\n",
        0o644,
    );
    let err = active_in(&path, &none, None).unwrap_err().to_string();
    assert!(err.contains("chmod 600"), "{err}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let a = active_in(&path, &none, None).unwrap().unwrap();
    assert_eq!(a.profile.default_project.as_deref(), Some("DEMO"));
    assert_eq!((a.name.as_str(), a.origin), ("w", Origin::Xnatfs));
    assert!(active_in(&path, &none, Some("nope")).is_err());
}

#[test]
fn unknown_keys_are_errors_that_name_the_valid_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    write(
        &path,
        "[profiles.w]\nurl = \"http://h\"\npasword = \"p\"\n",
        0o600,
    );
    let err = format!("{:#}", load(&path).unwrap_err());
    for want in [
        "pasword",
        "url",
        "user",
        "password",
        "default_project",
        "insecure",
    ] {
        assert!(err.contains(want), "{want}: {err}");
    }
    write(&path, "default_profle = \"w\"\n", 0o600);
    let err = format!("{:#}", load(&path).unwrap_err());
    assert!(
        err.contains("default_profile") && err.contains("profiles"),
        "{err}"
    );
}

#[test]
fn a_typo_lists_the_profiles_there_are_and_the_closest() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("config.toml");
    let theirs = dir.path().join("config.yaml");
    write(
        &ours,
        "[profiles.work]\nurl = \"http://h\"\n[profiles.test]\n",
        0o600,
    );
    write(&theirs, "profiles:\n  prod:\n    url: http://p\n", 0o600);
    let err = active_in(&ours, &theirs, Some("wrok")).unwrap_err();
    assert!(err.is::<UsageError>());
    let msg = err.to_string();
    assert!(msg.contains("no profile \"wrok\""), "{msg}");
    assert!(msg.contains("test, work") && msg.contains("prod"), "{msg}");
    assert!(msg.contains("did you mean \"work\"?"), "{msg}");
    let err = active_in(&ours, &theirs, Some("zzzzzz"))
        .unwrap_err()
        .to_string();
    assert!(!err.contains("did you mean"), "{err}");
    // Nothing anywhere: say how to add one.
    let err = active_in(&dir.path().join("a"), &dir.path().join("b"), Some("x"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("xnatfs config add-profile x"), "{err}");
    assert_eq!(edit_distance("work", "wrok"), 2);
    assert_eq!(edit_distance("", "ab"), 2);
}

#[test]
fn xnatctls_profiles_are_used_when_no_xnatfs_profile_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("config.toml");
    let theirs = dir.path().join("config.yaml");
    write(
        &theirs,
        "default_profile: prod\nprofiles:\n  prod:\n    url: http://p\n    username: bob\n  dev:\n    url: http://d\n    verify_ssl: false\n",
        0o600,
    );
    let a = active_in(&ours, &theirs, None).unwrap().unwrap();
    assert_eq!((a.name.as_str(), a.origin), ("prod", Origin::Xnatctl));
    assert_eq!(a.profile.user.as_deref(), Some("bob"));
    let a = active_in(&ours, &theirs, Some("dev")).unwrap().unwrap();
    assert_eq!(a.profile.insecure, Some(true));
    // An xnatfs profile comes first; a name only xnatctl has is still found.
    write(&ours, "[profiles.default]\nurl = \"http://x\"\n", 0o600);
    let a = active_in(&ours, &theirs, None).unwrap().unwrap();
    assert_eq!((a.name.as_str(), a.origin), ("default", Origin::Xnatfs));
    let a = active_in(&ours, &theirs, Some("dev")).unwrap().unwrap();
    assert_eq!(a.origin, Origin::Xnatctl);
}

#[test]
fn add_and_use_keep_comments_and_write_a_private_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub").join("config.toml");
    let p = Profile {
        url: Some("https://xnat.example.org".into()),
        user: Some("alice".into()),
        password: Some("s3cret".into()),
        ..Profile::default()
    };
    assert!(!edit::add_profile(&path, "work", &p, false).unwrap());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let file = load(&path).unwrap().unwrap();
    assert_eq!(
        file.default_profile.as_deref(),
        Some("work"),
        "the first is the default"
    );
    assert_eq!(file.profiles["work"], p);
    // Comments stay; a second profile is not the default unless asked.
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("# my servers\n{text}")).unwrap();
    let q = Profile {
        url: Some("http://h".into()),
        insecure: Some(true),
        ..Profile::default()
    };
    edit::add_profile(&path, "test", &q, false).unwrap();
    assert!(
        edit::add_profile(&path, "test", &q, false).unwrap(),
        "replaced"
    );
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("# my servers\n"), "{text}");
    assert_eq!(
        load(&path).unwrap().unwrap().default_profile.as_deref(),
        Some("work")
    );
    edit::use_profile(&path, "test").unwrap();
    let file = load(&path).unwrap().unwrap();
    assert_eq!(file.default_profile.as_deref(), Some("test"));
    assert_eq!(file.profiles["test"], q);
    let err = edit::use_profile(&path, "tset").unwrap_err();
    assert!(err.is::<UsageError>() && err.to_string().contains("did you mean \"test\""));
    assert!(edit::add_profile(&path, "a b", &q, false).is_err());
    assert!(edit::add_profile(&path, "", &q, false).is_err());
}
