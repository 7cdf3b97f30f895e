//! Exit codes, all in one place: what each means, which error gives which, and the table
//! `xnatfs --help` and `xnatfs prefetch --help` show. They are a contract with scripts: a
//! code never changes its meaning.

use crate::prefetch::breaker::Unreachable;
use crate::prefetch::ledger::Ending;
pub use crate::profiles::UsageError;
use crate::xnat::XnatError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok,
    Failed,
    Usage,
    Auth,
    Partial,
    Unreachable,
    Interrupted,
    Terminated,
}

/// An error whose exit status was decided elsewhere (by the background mount, which reports
/// its failure to the `xnatfs mount` waiting for it as text and code).
#[derive(Debug, thiserror::Error)]
#[error("{1}")]
pub struct WithExit(pub Exit, pub String);

impl Exit {
    pub const ALL: [Exit; 8] = [
        Exit::Ok,
        Exit::Failed,
        Exit::Usage,
        Exit::Auth,
        Exit::Partial,
        Exit::Unreachable,
        Exit::Interrupted,
        Exit::Terminated,
    ];

    pub fn code(self) -> i32 {
        match self {
            Exit::Ok => 0,
            Exit::Failed => 1,
            // Also what clap gives when it refuses the arguments.
            Exit::Usage => 2,
            Exit::Auth => 3,
            Exit::Partial => 4,
            Exit::Unreachable => 5,
            Exit::Interrupted => 128 + libc::SIGINT,
            Exit::Terminated => 128 + libc::SIGTERM,
        }
    }

    /// The exit status with this code, if it is one of ours.
    pub fn from_code(code: i32) -> Option<Exit> {
        Exit::ALL.into_iter().find(|e| e.code() == code)
    }

    /// What the code means, for every command.
    pub fn meaning(self) -> &'static str {
        match self {
            Exit::Ok => "ok",
            Exit::Failed => "failed (the message says why)",
            Exit::Usage => "usage: the arguments were refused (an unknown flag, profile or value)",
            Exit::Auth => "authentication: no user name or password, or the server refused them",
            Exit::Partial => "partial: some items failed or were skipped (each named)",
            Exit::Unreachable => "server unreachable (connection refused, reset, timed out)",
            Exit::Interrupted => "interrupted (SIGINT, Ctrl-C)",
            Exit::Terminated => "terminated (SIGTERM)",
        }
    }

    /// What the code means for a prefetch.
    pub fn prefetch_meaning(self) -> &'static str {
        match self {
            Exit::Ok => "every planned file is present and verified",
            Exit::Failed => {
                "failed: an error before transferring (unknown session, a filter that matches nothing, ...), or nothing could be fetched"
            }
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
            Exit::Usage | Exit::Auth => self.meaning(),
        }
    }

    /// The exit status an error that ends a command gives: authentication failures 3, a
    /// server that cannot be reached 5, a usage error 2, anything else 1.
    pub fn for_error(e: &anyhow::Error) -> Exit {
        for cause in e.chain() {
            if let Some(WithExit(exit, _)) = cause.downcast_ref::<WithExit>() {
                return *exit;
            }
            if cause.is::<UsageError>() {
                return Exit::Usage;
            }
            if cause.is::<Unreachable>() {
                return Exit::Unreachable;
            }
            match cause.downcast_ref::<XnatError>() {
                Some(XnatError::Auth(_)) => return Exit::Auth,
                Some(XnatError::Network { .. } | XnatError::Timeout(_)) => {
                    return Exit::Unreachable;
                }
                _ => {}
            }
        }
        Exit::Failed
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

/// The exit status table every command shares, for `xnatfs --help`.
pub fn table() -> String {
    let mut out = String::from("Exit status (every command):\n");
    for e in Exit::ALL {
        out.push_str(&format!("  {:>3}  {}\n", e.code(), e.meaning()));
    }
    out
}

/// The exit status table of `xnatfs prefetch --help`.
pub fn prefetch_table() -> String {
    let mut out = String::from("Exit status:\n");
    for e in Exit::ALL {
        out.push_str(&format!("  {:>3}  {}\n", e.code(), e.prefetch_meaning()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_signals_follow_the_shell_convention() {
        let mut codes: Vec<i32> = Exit::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(codes, [0, 1, 2, 3, 4, 5, 130, 143]);
        codes.dedup();
        assert_eq!(codes.len(), Exit::ALL.len());
        assert!(prefetch_table().contains("    5  server unreachable"));
        assert!(table().contains("    3  authentication"));
        for e in Exit::ALL {
            assert_eq!(Exit::from_code(e.code()), Some(e));
        }
    }

    #[test]
    fn errors_map_to_their_codes() {
        let auth =
            anyhow::Error::new(XnatError::Auth("wrong password".into())).context("cannot log in");
        assert_eq!(Exit::for_error(&auth), Exit::Auth);
        let net = anyhow::Error::new(XnatError::Network {
            path: "/data/JSESSION".into(),
            msg: "connection refused".into(),
        });
        assert_eq!(Exit::for_error(&net), Exit::Unreachable);
        let usage = anyhow::Error::new(UsageError("no profile".into()));
        assert_eq!(Exit::for_error(&usage), Exit::Usage);
        let not_found = anyhow::Error::new(XnatError::NotFound("DEMO".into()));
        assert_eq!(Exit::for_error(&not_found), Exit::Failed);
        assert_eq!(Exit::for_error(&anyhow::anyhow!("other")), Exit::Failed);
    }
}
