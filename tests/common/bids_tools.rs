//! The real BIDS clients the BIDS view's tests run: the BIDS validator and pybids, in the venv
//! `scripts/setup --test-tools` installs.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The venv holding `bids-validator-deno` and pybids; `None` (the test says it skips) when it
/// is missing outside CI; under CI a missing tool fails the test.
pub fn bids_tools() -> Option<PathBuf> {
    let dir = match std::env::var_os("XNATFS_TEST_TOOLS") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/xnatfs-test-tools"),
    };
    if dir.join("bin/bids-validator-deno").exists() && dir.join("bin/python").exists() {
        return Some(dir);
    }
    let missing = format!(
        "the BIDS tools are not at {} (scripts/setup --test-tools installs them)",
        dir.display()
    );
    assert!(std::env::var_os("CI").is_none(), "{missing}");
    eprintln!("skipping: {missing}");
    None
}

/// The errors the BIDS validator finds in `dir` (warnings are fine), and its exit status.
pub fn validator_errors(tools: &Path, dir: &Path) -> (Vec<String>, std::process::ExitStatus) {
    let out = Command::new(tools.join("bin/bids-validator-deno"))
        .arg(dir)
        .args(["--format", "json"])
        .output()
        .expect("the validator runs");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "the validator's output is no JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let issues = report["issues"]["issues"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let errors = issues
        .iter()
        .filter(|i| i["severity"] == "error")
        .map(|i| format!("{} {}", i["code"], i["location"]))
        .collect();
    (errors, out.status)
}

/// What pybids' `BIDSLayout` finds in `dir`: subjects, sessions, tasks, and the images.
pub fn pybids_layout(tools: &Path, dir: &Path) -> serde_json::Value {
    let script = r#"
import json, sys, bids
layout = bids.BIDSLayout(sys.argv[1])
print(json.dumps({
    "subjects": sorted(layout.get_subjects()),
    "sessions": sorted(layout.get_sessions()),
    "tasks": sorted(layout.get_tasks()),
    "images": sorted(f.relpath for f in layout.get(extension=".nii.gz")),
}))
"#;
    let out = Command::new(tools.join("bin/python"))
        .args(["-c", script])
        .arg(dir)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "pybids failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
