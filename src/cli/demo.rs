//! `xnatfs demo`: the built-in mock server, mounted and shown.

use super::shared::{client, runtime};
use crate::mock::data::{Dataset, SampleSpec};
use crate::mock::{MockOptions, MockServer};
use crate::mount::{self, MountOptions, MountPlan};
use crate::settings::Settings;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Subjects of the demo's BIDS project (beside its special cases).
const BIDS_SUBJECTS: usize = 3;

pub fn cmd_demo(mountpoint: &Path, once: bool, bids: bool) -> Result<()> {
    std::fs::create_dir_all(mountpoint)
        .with_context(|| format!("cannot create {}", mountpoint.display()))?;
    mount::prepare_mountpoint(mountpoint)?;
    let server = MockServer::start(
        "127.0.0.1:0".parse().expect("a valid address"),
        Dataset::sample(&SampleSpec::default()).with_bids(BIDS_SUBJECTS),
        MockOptions::default(),
    )
    .context("cannot start the demo server")?;
    let url = server.url();
    eprintln!("xnatfs demo: mock XNAT server at {url} (user demo, password demo)");
    let cache = tempfile::Builder::new()
        .prefix("xnatfs-demo-cache-")
        .tempdir()
        .context("cannot create a cache dir")?;
    let settings = Settings {
        url: url.clone(),
        credentials: crate::xnat::http::Credentials {
            user: Some("demo".into()),
            password: Some("demo".into()),
            token: None,
        },
        default_project: None,
        insecure: false,
    };
    let rt = runtime()?;
    let timeout = Duration::from_secs(30);
    let plan = MountPlan {
        client: client(
            &settings,
            timeout,
            &super::shared::ServerFlags {
                url: None,
                user: None,
                profile: None,
                insecure: false,
                ca_bundle: None,
            },
        )?,
        cache_dir: cache.path().to_path_buf(),
        offline: false,
        project: bids.then(|| crate::mock::bids::PROJECT.to_string()),
        default_project: None,
        sessions: Vec::new(),
        cache_size: None,
        log_file: None,
        options: MountOptions {
            mountpoint: mountpoint.to_path_buf(),
            dir_ttl: Duration::from_secs(60),
            io_timeout: timeout,
            threads: 4,
            allow_other: false,
            max_memory: crate::fetch::DEFAULT_MAX_MEMORY,
            crawl_ahead: mount::DEFAULT_CRAWL_AHEAD,
            scan_names: Default::default(),
            xattrs: true,
            series_readahead: crate::fetch::series::DEFAULT_IN_FLIGHT,
            verify: crate::cache::Verify::Md5,
            bids,
            bids_map: None,
        },
    };
    let mut lister = None;
    let served = mount::run(&rt, plan, || {
        eprintln!("xnatfs demo: mounted on {}", mountpoint.display());
        let shown = mountpoint.to_path_buf();
        lister = Some(std::thread::spawn(move || {
            let result = match bids {
                true => show_bids_demo(&shown),
                false => show_demo(&shown),
            };
            if once {
                let _ = mount::unmount(&shown, false);
            }
            result
        }));
    });
    let shown = match lister {
        Some(l) => l
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the listing thread panicked"))),
        None => Ok(()),
    };
    served.and(shown)
}

/// Prints the demo's BIDS view, through the mount itself.
fn show_bids_demo(root: &Path) -> Result<()> {
    println!("$ find {} | sort | head -30", root.display());
    let mut paths = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in
            std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?
        {
            let e = e?;
            if e.file_type()?.is_dir() {
                stack.push(e.path());
            }
            paths.push(e.path());
        }
    }
    paths.sort();
    for p in paths.iter().take(30) {
        println!("{}", p.display());
    }
    println!("... {} files and folders in all", paths.len());
    let description = root.join("dataset_description.json");
    let text = std::fs::read_to_string(&description)
        .with_context(|| format!("cannot read {}", description.display()))?;
    println!("\n$ cat {}\n{text}", description.display());
    println!(
        "xnatfs demo: try `bids-validator-deno {}` or `python -c 'import bids; print(bids.BIDSLayout(\"{}\"))'` in another shell",
        root.display(),
        root.display()
    );
    Ok(())
}

/// Prints what the demo mount holds, through the mount itself.
fn show_demo(root: &Path) -> Result<()> {
    let ls = |p: &Path| -> Result<Vec<String>> {
        let mut names: Vec<String> = std::fs::read_dir(p)
            .with_context(|| format!("cannot list {}", p.display()))?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<std::io::Result<_>>()?;
        names.sort();
        Ok(names)
    };
    println!("$ ls {}", root.display());
    for project in ls(root)? {
        println!("{project}/");
        for session in ls(&root.join(&project))? {
            println!("  {session}/");
        }
    }
    let session = root.join("DEMO").join("SUBJ01_MR1");
    println!(
        "\n$ find {} -type f | head -12   (sizes from the listings; nothing downloaded)",
        session.display()
    );
    fn walk(dir: &Path, out: &mut Vec<(u64, PathBuf)>) -> Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<std::io::Result<_>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let meta = e.metadata()?;
            if meta.is_dir() {
                walk(&e.path(), out)?;
            } else {
                out.push((meta.len(), e.path()));
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(&session, &mut files)?;
    for (size, path) in files.iter().take(12) {
        println!("{size:>10}  {}", path.display());
    }
    println!("... {} files in all", files.len());
    let report = session.join("resources/QC/files/qc_report.html");
    let text = std::fs::read_to_string(&report)
        .with_context(|| format!("cannot read {}", report.display()))?;
    println!(
        "\n$ head -c 80 {}\n{}",
        report.display(),
        &text[..text.len().min(80)]
    );
    println!(
        "\nxnatfs demo: try `ls -lR {}` or `md5sum {}/DEMO/SUBJ01_MR1/scans/2/resources/NIFTI/files/*` in another shell",
        root.display(),
        root.display()
    );
    Ok(())
}
