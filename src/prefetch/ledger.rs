//! The ledger of a prefetch run: what each file's transfer came to ([`Outcome`]), the run's
//! counts and failures ([`Report`], kept by the [`Ledger`] jobs write to as they end, so that
//! a stopped run still counts what it did), and how the run ended ([`Ending`]).

use super::destination::Destination;
use super::plan::PlannedFile;
use super::progress::Progress;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// What a transfer did.
#[derive(Debug, Default)]
pub struct Report {
    pub downloaded_files: u64,
    pub downloaded_bytes: u64,
    pub skipped_files: u64,
    pub skipped_bytes: u64,
    /// Files that arrived after more than one attempt.
    pub retried: u64,
    /// Each failed file, once.
    pub failed: Vec<Failure>,
    /// The server was taken for gone: the jobs left were not run.
    pub unreachable: bool,
    /// The local disk filled up (why): the jobs left were not run.
    pub disk_full: Option<String>,
}

/// A file that could not be transferred.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Its XNAT path (REST URI).
    pub uri: String,
    /// Where it was to go.
    pub dest: PathBuf,
    pub why: String,
}

/// What became of one file.
#[derive(Debug)]
pub struct Outcome {
    pub file: PlannedFile,
    /// It took more than one attempt (a retry, or a ZIP that did not deliver it).
    pub retried: bool,
    pub result: Result<(), String>,
}

/// Where jobs tell of bytes and of each file as it ends, so that a stopped run still counts
/// what it did.
pub struct Ledger {
    pub(super) progress: Arc<Progress>,
    pub(super) dest: Destination,
    pub(super) report: Mutex<Report>,
}

impl Ledger {
    pub fn new(progress: Arc<Progress>, dest: Destination) -> Ledger {
        Ledger {
            progress,
            dest,
            report: Mutex::new(Report::default()),
        }
    }

    pub fn bytes(&self, n: u64) {
        self.progress.add_bytes(n);
    }

    /// Bytes counted by [`Self::bytes`] that made no file (see [`Progress::take_back`]).
    pub fn bytes_back(&self, n: u64) {
        self.progress.take_back(n);
    }

    pub fn done(&self, o: Outcome) {
        let mut report = self.report.lock().unwrap();
        match o.result {
            Ok(()) => {
                self.progress.file_done();
                report.downloaded_files += 1;
                report.downloaded_bytes += o.file.file.size;
                report.retried += u64::from(o.retried);
            }
            Err(why) => {
                // The line names the file already: say why without naming it again.
                let uri = o.file.file.uri().into_owned();
                let why = why
                    .replace(&format!(" for {uri}"), "")
                    .replace(&format!(": {uri}"), "");
                report.failed.push(Failure {
                    uri,
                    dest: o.file.dest,
                    why,
                })
            }
        }
    }
}

/// How a prefetch ended (the command line makes an exit code of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Every planned file is present and verified; nothing was left out.
    Complete,
    /// Some sessions, resources or files failed or were left out (each named); what else
    /// was planned is present and verified.
    Partial,
    /// Items failed and no planned file is present.
    Failed,
    /// The server stopped answering part way; a re-run resumes.
    Unreachable,
}
