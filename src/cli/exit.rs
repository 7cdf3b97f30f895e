//! Exit codes, all in one place: what each means, and the table `xnatfs prefetch --help`
//! shows. Commands other than prefetch exit 0 or 1.

use crate::prefetch::Ending;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok,
    Failed,
    Usage,
    Partial,
    Unreachable,
    Interrupted,
    Terminated,
}

impl Exit {
    pub const ALL: [Exit; 7] = [
        Exit::Ok,
        Exit::Failed,
        Exit::Usage,
        Exit::Partial,
        Exit::Unreachable,
        Exit::Interrupted,
        Exit::Terminated,
    ];

    pub fn code(self) -> i32 {
        match self {
            Exit::Ok => 0,
            Exit::Failed => 1,
            // Given by clap when it refuses the arguments.
            Exit::Usage => 2,
            Exit::Partial => 4,
            Exit::Unreachable => 5,
            Exit::Interrupted => 128 + libc::SIGINT,
            Exit::Terminated => 128 + libc::SIGTERM,
        }
    }

    /// What the code means for a prefetch.
    pub fn meaning(self) -> &'static str {
        match self {
            Exit::Ok => "every planned file is present and verified",
            Exit::Failed => {
                "failed: an error before transferring (unknown session, a filter that matches nothing, ...), or nothing could be fetched"
            }
            Exit::Usage => "usage: the arguments were refused",
            Exit::Partial => {
                "partial: some sessions, resources or files failed or were skipped (each named); the rest is present and verified"
            }
            Exit::Unreachable => {
                "server unreachable: several transfers in a row could not reach it; run again to resume"
            }
            Exit::Interrupted => "interrupted (SIGINT, Ctrl-C); no partial file is left",
            Exit::Terminated => {
                "terminated (SIGTERM, as batch schedulers send at a time limit); no partial file is left"
            }
        }
    }
}

impl From<Ending> for Exit {
    fn from(e: Ending) -> Exit {
        match e {
            Ending::Complete => Exit::Ok,
            Ending::Partial => Exit::Partial,
            Ending::Failed => Exit::Failed,
            Ending::Unreachable => Exit::Unreachable,
        }
    }
}

/// The exit status table, for `--help`.
pub fn table() -> String {
    let mut out = String::from("Exit status:\n");
    for e in Exit::ALL {
        out.push_str(&format!("  {:>3}  {}\n", e.code(), e.meaning()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_signals_follow_the_shell_convention() {
        let mut codes: Vec<i32> = Exit::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(codes, [0, 1, 2, 4, 5, 130, 143]);
        codes.dedup();
        assert_eq!(codes.len(), Exit::ALL.len());
        assert!(table().contains("    5  server unreachable"));
    }
}
