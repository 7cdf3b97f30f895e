//! The kernel forgets inodes (here: `drop_caches`), and xnatfs forgets them too (FUSE
//! `forget`): every name still lists and every file still reads right, also while readers
//! are busy as the kernel forgets.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use xnatfs::mock::MockServer;

const FILES: usize = 5000;
const DIR: &str = "DEMO/SUBJ01_MR1/resources/PROTOCOLS/files/many";

fn name(i: usize) -> String {
    format!("file_{i:05}_with_a_fairly_long_name.txt")
}

/// A mount of the sample with `FILES` small files in one folder, whose log tells of the
/// listings it forgets.
fn mount_big_folder() -> (MockServer, Mount) {
    use xnatfs::mock::data::{Body, MockFile};
    let mut data = small_sample();
    let files = resource_files_mut(&mut data, "DEMO/SUBJ01_MR1/resources/PROTOCOLS");
    for i in 0..FILES {
        files.push(MockFile::new(
            format!("many/{}", name(i)),
            Body::Memory(bytes::Bytes::from(format!("{i}\n"))),
        ));
    }
    let mock = start_mock(data);
    let m = MountBuilder::new(&mock.url())
        .env("RUST_LOG", "warn,xnatfs::fs::tree=debug")
        .mount();
    (mock, m)
}

/// Tells the kernel to drop the dentries and inodes it may (root only); false when this
/// user may not.
fn drop_caches() -> bool {
    std::fs::write("/proc/sys/vm/drop_caches", "2").is_ok()
}

/// The names `ls -l` shows in `dir`.
fn ls_l(dir: &Path) -> Vec<String> {
    let out = Command::new("ls").arg("-l").arg(dir).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.rsplit(' ').next().unwrap().to_string())
        .collect()
}

fn check_file(dir: &Path, i: usize) {
    let path: PathBuf = dir.join(name(i));
    match std::fs::read_to_string(&path) {
        Ok(text) => assert_eq!(text, format!("{i}\n"), "{}", path.display()),
        Err(e) => panic!("{}: {e}", path.display()),
    }
}

#[test]
fn a_big_folder_lists_and_reads_right_after_the_kernel_forgot_it() {
    let (_mock, mut m) = mount_big_folder();
    let dir = m.path(DIR);
    let mut want: Vec<String> = (0..FILES).map(name).collect();
    want.sort();
    assert_eq!(ls_l(&dir), want);
    if !drop_caches() {
        eprintln!("not root: the kernel cannot be made to forget; skipped");
        return;
    }
    // The kernel forgot the folder: xnatfs dropped its listing.
    let log = m.log_path.clone();
    wait_until(
        Duration::from_secs(20),
        "the folder's listing forgotten",
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            // Asked again until it has (a moment's hold of the folder keeps it).
            text.contains(&format!("forgotten with its listing of {FILES} entries"))
                || !drop_caches()
        },
    );
    for i in 0..FILES {
        check_file(&dir, i);
    }
    assert_eq!(ls_l(&dir), want);
    drop_caches();
    assert_eq!(ls_l(&dir), want);
    let (_, stderr) = m.unmount();
    assert!(!stderr.contains("WARN"), "{stderr}");
}

#[test]
fn readers_see_no_error_while_the_kernel_forgets() {
    let (_mock, mut m) = mount_big_folder();
    let dir = m.path(DIR);
    assert_eq!(ls_l(&dir).len(), FILES);
    if !drop_caches() {
        eprintln!("not root: the kernel cannot be made to forget; skipped");
        return;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let forgetter = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                drop_caches();
                n += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            n
        })
    };
    let until = Instant::now() + Duration::from_secs(4);
    let readers: Vec<_> = (0..4)
        .map(|r| {
            let dir = dir.clone();
            std::thread::spawn(move || {
                let mut i = r * 1237;
                let mut done = 0u64;
                while Instant::now() < until {
                    i = (i + 7919) % FILES;
                    check_file(&dir, i);
                    if done.is_multiple_of(50) {
                        // A listing now and then, with attributes (readdirplus).
                        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), FILES);
                    }
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut reads = 0;
    for r in readers {
        reads += r.join().expect("a reader failed");
    }
    stop.store(true, Ordering::SeqCst);
    let drops = forgetter.join().unwrap();
    assert!(reads > 100 && drops > 10, "{reads} reads, {drops} drops");
    // The kernel forgets the folder when nothing holds it: during the run that depends on
    // the readers' timing, so once they have stopped it is asked until it has.
    wait_until(
        Duration::from_secs(20),
        "the kernel never forgot the folder",
        || {
            drop_caches();
            std::fs::read_to_string(&m.log_path)
                .unwrap_or_default()
                .contains("forgotten with its listing")
        },
    );
    let (_, stderr) = m.unmount();
    assert!(!stderr.contains("WARN"), "{stderr}");
}
