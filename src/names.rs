//! Which names from the server are safe to show as folder entries and to use as paths on disk.
//!
//! Everything that becomes a path component (project, session label, scan ID, resource label,
//! the path of a file inside its resource) passes through here. A name that is empty, `.`,
//! `..`, holds a `/` or a NUL, or is longer than a file name may be, is refused: such a name
//! could otherwise escape the mount, the cache or `--out`.

/// The longest name most Linux file systems accept, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// Whether `name` can be used as one path component.
pub fn is_safe_component(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\0')
        && name.len() <= MAX_NAME_BYTES
}

/// Splits a relative path (`sub/dir/x.dcm`) into components, refusing it if any component is
/// unsafe or if it is absolute. Repeated or trailing slashes are refused too: XNAT never
/// produces them, and accepting them would make two spellings of one file.
pub fn safe_relative_path(path: &str) -> Option<Vec<&str>> {
    if path.starts_with('/') {
        return None;
    }
    let parts: Vec<&str> = path.split('/').collect();
    parts.iter().all(|p| is_safe_component(p)).then_some(parts)
}

/// `url` without the user name and password it may hold (`https://alice:secret@host/` gives
/// `https://host/`): the form that is shown, logged, sent on, and named on disk.
pub fn without_userinfo(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    match authority.rfind('@') {
        Some(at) => format!("{scheme}{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components() {
        assert!(is_safe_component("scan_01.dcm"));
        assert!(is_safe_component("with space"));
        assert!(is_safe_component("..hidden"));
        for bad in ["", ".", "..", "a/b", "a\0b", &"x".repeat(256)] {
            assert!(!is_safe_component(bad), "{bad:?}");
        }
    }

    #[test]
    fn relative_paths() {
        assert_eq!(
            safe_relative_path("a/b/c.dcm"),
            Some(vec!["a", "b", "c.dcm"])
        );
        assert_eq!(safe_relative_path("x.nii.gz"), Some(vec!["x.nii.gz"]));
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "a/",
            "a/./b",
        ] {
            assert_eq!(safe_relative_path(bad), None, "{bad:?}");
        }
    }
}
