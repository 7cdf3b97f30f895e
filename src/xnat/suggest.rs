//! "Did you mean ...?" for a project or session the server does not know: the same name in
//! another case, or the session found in another project. Asked only after a lookup failed,
//! and bounded in time: on a big server the hint is left out rather than waited for.

use super::{Session, XnatApi, XnatError};
use std::time::Duration;

/// How long looking for a suggestion may take, in all.
const LOOK_FOR: Duration = Duration::from_secs(10);
/// Projects searched for a session given under the wrong project.
const MAX_PROJECTS: usize = 200;

/// A project that `name` may have meant: one of another case.
pub async fn project(api: &dyn XnatApi, name: &str) -> Option<String> {
    let found = tokio::time::timeout(LOOK_FOR, api.projects())
        .await
        .ok()?
        .ok()?;
    found
        .into_iter()
        .find(|p| p.id != name && p.id.eq_ignore_ascii_case(name))
        .map(|p| format!("did you mean {}?", p.id))
}

/// A session that `name` may have meant: a label of another case in `project`, or the label
/// (in any case) in another project.
pub async fn session(api: &dyn XnatApi, project: Option<&str>, name: &str) -> Option<String> {
    tokio::time::timeout(LOOK_FOR, look_for_session(api, project, name))
        .await
        .ok()
        .flatten()
}

async fn look_for_session(api: &dyn XnatApi, project: Option<&str>, name: &str) -> Option<String> {
    let same = |s: &Session| s.label.eq_ignore_ascii_case(name) || s.id.eq_ignore_ascii_case(name);
    if let Some(p) = project {
        if let Ok(sessions) = api.sessions(p).await
            && let Some(s) = sessions.iter().find(|s| same(s))
        {
            return Some(format!("did you mean {}?", s.label));
        }
        if let Some(hint) = project_hint(api, p).await {
            return Some(hint);
        }
    }
    let projects = api.projects().await.ok()?;
    for p in projects.iter().take(MAX_PROJECTS) {
        if Some(p.id.as_str()) == project {
            continue;
        }
        if let Ok(sessions) = api.sessions(&p.id).await
            && let Some(s) = sessions.iter().find(|s| same(s))
        {
            return Some(format!(
                "did you mean {} in project {}? (-P {} -E {})",
                s.label, p.id, p.id, s.label
            ));
        }
    }
    None
}

/// The project hint for a `-P` that does not exist.
async fn project_hint(api: &dyn XnatApi, p: &str) -> Option<String> {
    match api.sessions(p).await {
        Err(XnatError::NotFound(_)) => project(api, p)
            .await
            .map(|hint| format!("there is no project {p}; {hint}")),
        _ => None,
    }
}
