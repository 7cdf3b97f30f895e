//! Finding what the user named: sessions by accession ID or by label in a project, projects,
//! and the error (with a "did you mean") for one that is not there.

use super::api::XnatApi;
use super::model::Session;
use super::{Result, XnatError, suggest};

/// The sessions the user named (`-E`), each with the name it was given: labels are looked up
/// in `project` when given, accession IDs work from anywhere. An unknown one is an error that
/// names it.
pub async fn named_sessions(
    api: &dyn XnatApi,
    project: Option<&str>,
    names: &[String],
) -> anyhow::Result<Vec<(String, Session)>> {
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let session = match find_session(api, project, name).await {
            Ok(s) => s,
            Err(e @ XnatError::NotFound(_)) => {
                let hint = suggest::session(api, project, name).await;
                return Err(with_hint(unknown(e), hint));
            }
            Err(e) => return Err(e.into()),
        };
        out.push((name.clone(), session));
    }
    Ok(out)
}

/// A project named by the user (`-P`), checked: an unknown one is an error that suggests the
/// project meant, if one looks like it.
pub async fn check_project(api: &dyn XnatApi, project: &str) -> anyhow::Result<Vec<Session>> {
    match api.sessions(project).await {
        Ok(sessions) => Ok(sessions),
        Err(e @ XnatError::NotFound(_)) => {
            let hint = suggest::project(api, project).await;
            Err(with_hint(unknown(e), hint))
        }
        Err(e) => Err(e.into()),
    }
}

fn with_hint(e: anyhow::Error, hint: Option<String>) -> anyhow::Error {
    match hint {
        Some(h) => anyhow::anyhow!("{e}; {h}"),
        None => e,
    }
}

/// A `NotFound` as the user reads it ("unknown project X"); other errors as they are.
pub fn unknown(e: XnatError) -> anyhow::Error {
    match e {
        XnatError::NotFound(what) => anyhow::anyhow!("unknown {what}"),
        e => e.into(),
    }
}

/// A session named by the user: a label looked up in `project` (when given), or an accession
/// ID, which works from any project.
///
/// A session shared into `project` is found there by its label in that project (XNAT looks a
/// label up among the project's own sessions, then among those shared into it:
/// `XnatExperimentdata.GetExptByProjectIdentifier`); its document gives the label and project
/// it has where it is owned, so it keeps the label it was found by.
pub async fn find_session(api: &dyn XnatApi, project: Option<&str>, name: &str) -> Result<Session> {
    let found = api.session(project, name).await;
    if project.is_some()
        && matches!(found, Err(XnatError::NotFound(_)))
        && let Ok(session) = api.session(None, name).await
    {
        return Ok(session);
    }
    found.map(|mut session| {
        if project.is_some_and(|p| p != session.project) && session.id != name {
            session.label = name.to_string();
        }
        session
    })
}
