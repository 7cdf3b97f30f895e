//! A session's tree walked listing by listing (folder by folder, one request each): its scans,
//! each scan's resources, each resource's files, the session's own resources, then its
//! assessors and reconstructions. One walk serves every caller; the caller chooses what is
//! listed and what a failed listing does ([`WalkPolicy`]): end the walk, or leave out its
//! item (a resource whose files cannot be listed is kept, marked unreadable) and go on.
//!
//! - [`session_tree_by_listings`] takes everything, and fails as one where the server cannot
//!   be reached, keeping unreadable resources and leaving out derived data the server refuses
//!   ([`Whole`]): the mount's tree when XNAT's few-request answer cannot be had.
//! - `prefetch`'s planner takes what its filters choose and turns every failed listing into a
//!   problem of its own item, ending only when the server is taken for gone.

use super::error::never_listed_offline;
use super::model::*;
use super::{Result, XnatApi, XnatError};

/// One listing of a walk, as its outcome is told to the [`WalkPolicy`].
#[derive(Debug, Clone, Copy)]
pub enum Listing<'a> {
    /// The session's scans.
    Scans,
    /// The resources of a scan, or the session's own (`None`).
    Resources(Option<&'a Scan>),
    /// The files of a resource.
    Files(&'a ResourceRef),
    /// The session's assessors or reconstructions.
    Derived(Derived),
    /// The output resources of one of them.
    DerivedResources(&'a Assessor),
}

/// What a walk lists, and what it makes of each listing's outcome.
pub trait WalkPolicy: Send {
    type Error: Send;
    /// Whether the resources of `scan` are listed (else it is kept without any).
    fn lists_resources_of(&mut self, _scan: &Scan) -> bool {
        true
    }
    /// Whether the session's own resources are listed.
    fn lists_session_resources(&self) -> bool {
        true
    }
    /// Whether the files of resource `res` are listed (else it is kept without any).
    fn lists_files_of(&mut self, _res: &ResourceRef) -> bool {
        true
    }
    /// Whether the resources of assessor (or reconstruction) `a` are listed (else it is
    /// left out).
    fn lists_derived(&mut self, _a: &Assessor) -> bool {
        true
    }
    /// Every listing's outcome, as it comes. An `Err` returned ends the walk with it; after
    /// an `Ok`, a listing that failed leaves out its item (a resource whose files were not
    /// listed is kept, unreadable).
    fn heard(
        &mut self,
        listing: Listing<'_>,
        outcome: std::result::Result<(), &XnatError>,
    ) -> std::result::Result<(), Self::Error>;
}

/// Session `session`'s tree, listing by listing, as `policy` chooses; the derived data of the
/// `derived` kinds asked.
pub async fn walk_session<A: XnatApi + ?Sized, P: WalkPolicy>(
    api: &A,
    session: &Session,
    derived: &[Derived],
    policy: &mut P,
) -> std::result::Result<SessionTree, P::Error> {
    let mut tree = SessionTree::default();
    let scans = api.scans(session).await;
    policy.heard(Listing::Scans, scans.as_ref().map(drop))?;
    for scan in scans.unwrap_or_default() {
        let mut resources = Vec::new();
        if policy.lists_resources_of(&scan) {
            let listed = api.resources(&session.id, Some(&scan.id)).await;
            policy.heard(Listing::Resources(Some(&scan)), listed.as_ref().map(drop))?;
            for resource in listed.unwrap_or_default() {
                let res = ResourceRef::of(&session.id, Some(&scan.id), &resource);
                resources.push(resource_tree(api, &res, resource, policy).await?);
            }
        }
        tree.scans.push(ScanTree { scan, resources });
    }
    if policy.lists_session_resources() {
        let listed = api.resources(&session.id, None).await;
        policy.heard(Listing::Resources(None), listed.as_ref().map(drop))?;
        for resource in listed.unwrap_or_default() {
            let res = ResourceRef::of(&session.id, None, &resource);
            tree.resources
                .push(resource_tree(api, &res, resource, policy).await?);
        }
    }
    tree.assessors = walk_derived(api, &session.id, derived, policy).await?;
    Ok(tree)
}

/// A session's derived data of the `kinds` asked (assessors, reconstructions), each with its
/// resources and their files, listing by listing, as `policy` chooses.
pub async fn walk_derived<A: XnatApi + ?Sized, P: WalkPolicy>(
    api: &A,
    session_id: &str,
    kinds: &[Derived],
    policy: &mut P,
) -> std::result::Result<Vec<AssessorTree>, P::Error> {
    let mut out = Vec::new();
    for &kind in kinds {
        let listed = derived(api, session_id, kind).await;
        policy.heard(Listing::Derived(kind), listed.as_ref().map(drop))?;
        for assessor in listed.unwrap_or_default() {
            if !policy.lists_derived(&assessor) {
                continue;
            }
            let listed = api.assessor_resources(session_id, &assessor).await;
            let heard = policy.heard(
                Listing::DerivedResources(&assessor),
                listed.as_ref().map(drop),
            );
            heard?;
            let Ok(listed) = listed else { continue };
            let mut resources = Vec::new();
            for resource in listed {
                let res = ResourceRef::of_assessor(session_id, &assessor, &resource);
                resources.push(resource_tree(api, &res, resource, policy).await?);
            }
            out.push(AssessorTree {
                assessor,
                resources,
            });
        }
    }
    Ok(out)
}

/// One resource of a session's tree with its files (none when `policy` does not list them).
/// A resource whose files the server will not list is kept, marked unreadable, when `policy`
/// goes on: XNAT answers 404 with an empty body for the files of a resource whose catalog it
/// cannot read (corrupt, or locked for more than 2 minutes: xnat-web
/// `org/nrg/xnat/utils/CatalogUtils.java`; `FileList.java`, `handleSingleCatalog`, catching
/// the `ServerException`), and so does every session-wide listing that includes it, which is
/// why the tree is then asked folder by folder.
async fn resource_tree<A: XnatApi + ?Sized, P: WalkPolicy>(
    api: &A,
    res: &ResourceRef,
    resource: Resource,
    policy: &mut P,
) -> std::result::Result<ResourceTree, P::Error> {
    if !policy.lists_files_of(res) {
        return Ok(ResourceTree::listed(resource, Vec::new()));
    }
    let listed = api.files(res).await;
    policy.heard(Listing::Files(res), listed.as_ref().map(drop))?;
    Ok(match listed {
        Ok(files) => ResourceTree::listed(resource, files),
        Err(e) => ResourceTree {
            resource,
            files: Vec::new(),
            unreadable: Some(unreadable_files(&e)),
        },
    })
}

/// Why the files of a resource the session has cannot be listed, in words a user can act on.
pub fn unreadable_files(e: &XnatError) -> String {
    match e {
        XnatError::NotFound(path) if !never_listed_offline(path) => format!(
            "XNAT answered 404 for {path}, a resource the session lists: it cannot read the \
             resource's catalog (ask the site's admin to check it)"
        ),
        e => e.to_string(),
    }
}

/// The listing of a session's derived data of one kind.
pub async fn derived<A: XnatApi + ?Sized>(
    api: &A,
    session_id: &str,
    kind: Derived,
) -> Result<Vec<Assessor>> {
    match kind {
        Derived::Assessor => api.assessors(session_id).await,
        Derived::Reconstruction => api.reconstructions(session_id).await,
    }
}

/// The walk of a whole tree: everything listed; a server that cannot be reached (or a login
/// refused) fails the whole, as for any other listing, and so does a scans or resources
/// listing that fails (listings kept on disk may stand in for it: `remembering`). A resource
/// whose files the server will not list for good is kept, unreadable (a 5xx or a server away
/// still fails the whole: a prefetch counts it); derived data the server refuses to list (an
/// assessor type the user may not read, a listing that makes no sense) is reported and left
/// out, and never sinks the session's scans.
pub struct Whole<'a> {
    /// The session walked (for the log).
    pub session_id: &'a str,
}

impl WalkPolicy for Whole<'_> {
    type Error = XnatError;

    fn heard(
        &mut self,
        listing: Listing<'_>,
        outcome: std::result::Result<(), &XnatError>,
    ) -> Result<()> {
        let Err(e) = outcome else { return Ok(()) };
        match listing {
            Listing::Scans | Listing::Resources(_) => Err(e.clone()),
            Listing::Files(_) if e.is_transient() || matches!(e, XnatError::Auth(_)) => {
                Err(e.clone())
            }
            Listing::Files(res) => {
                let why = unreadable_files(e);
                tracing::warn!("cannot list the files of {}: {why}", res.label_path());
                Ok(())
            }
            Listing::Derived(_) | Listing::DerivedResources(_)
                if matches!(
                    e,
                    XnatError::Auth(_) | XnatError::Network { .. } | XnatError::Timeout(_)
                ) =>
            {
                Err(e.clone())
            }
            Listing::Derived(kind) => {
                let (folder, id) = (kind.folder(), self.session_id);
                tracing::warn!("leaving out the {folder} of {id}: {e}");
                Ok(())
            }
            Listing::DerivedResources(a) => {
                tracing::warn!("leaving out {} {}: {e}", a.kind.noun(), a.label);
                Ok(())
            }
        }
    }
}

/// A session's whole tree asked listing by listing (see [`Whole`]).
pub async fn session_tree_by_listings<A: XnatApi + ?Sized>(
    api: &A,
    session: &Session,
) -> Result<SessionTree> {
    let mut whole = Whole {
        session_id: &session.id,
    };
    walk_session(api, session, &Derived::ALL, &mut whole).await
}

/// A session's derived data of the `kinds` asked, listing by listing (see [`Whole`]).
pub async fn assessor_trees<A: XnatApi + ?Sized>(
    api: &A,
    session_id: &str,
    kinds: &[Derived],
) -> Result<Vec<AssessorTree>> {
    walk_derived(api, session_id, kinds, &mut Whole { session_id }).await
}
