//! Planning the resources of a session's assessors and reconstructions (`prefetch
//! --assessors`, `--reconstructions`): each one whose label can be a folder, each of its
//! resources the filters take (`-r`, `--exclude-resource`), from the session's tree or listing
//! by listing.

use super::{Breaker, Planner, Problem, heard};
use crate::names::is_safe_component;
use crate::prefetch::select::Seen;
use crate::xnat::{self, Derived, Resource, ResourceRef, XnatApi};
use anyhow::Result;

impl Planner<'_> {
    /// Whether assessor `a` can be a folder (else it is a problem).
    pub(super) fn usable_assessor(&mut self, a: &xnat::Assessor) -> bool {
        if is_safe_component(&a.label) {
            return true;
        }
        let why = format!(
            "{} label {:?} is not a usable folder name",
            a.kind.noun(),
            a.label
        );
        let item = format!("{}/{}/{}", self.at(), a.kind.folder(), a.id);
        self.plan.problems.push(Problem::new(item, why));
        false
    }

    /// The resource `r` of assessor `a` when the filters take it (as [`Planner::wanted`]).
    pub(super) fn wanted_of_assessor(
        &mut self,
        a: &xnat::Assessor,
        r: &Resource,
        seen: &mut Seen,
    ) -> Option<ResourceRef> {
        let res = self.wanted(None, r, seen)?;
        Some(ResourceRef {
            assessor: Some(std::sync::Arc::new(a.clone())),
            ..res
        })
    }

    /// The resources of a session's assessors (or reconstructions: `kind`) and their files,
    /// listing by listing (folder by folder). A listing that fails leaves out its item.
    pub(super) async fn assessors_by_listings(
        &mut self,
        api: &dyn XnatApi,
        breaker: &Breaker,
        kind: Derived,
    ) -> Result<()> {
        let at = self.at();
        let folder = kind.folder();
        let listed = xnat::derived(api, &self.session.id, kind).await;
        let assessors = match heard(breaker, listed)? {
            Ok(a) => a,
            Err(e) => {
                let item = format!("{at}/{folder}");
                self.plan.problems.push(Problem::new(item, e));
                return Ok(());
            }
        };
        let mut seen = self.plan.seen.take().unwrap_or_else(|| self.seen(&[]));
        for a in &assessors {
            if !self.usable_assessor(a) {
                continue;
            }
            let listed = api.assessor_resources(&self.session.id, a).await;
            let resources = match heard(breaker, listed)? {
                Ok(r) => r,
                Err(e) => {
                    self.plan.labels_known = false;
                    let item = format!("{at}/{folder}/{}/out/resources", a.id);
                    self.plan.problems.push(Problem::new(item, e));
                    continue;
                }
            };
            for r in &resources {
                let Some(res) = self.wanted_of_assessor(a, r, &mut seen) else {
                    continue;
                };
                match heard(breaker, api.files(&res).await)? {
                    Ok(files) => self.add(None, res, files),
                    Err(e) => {
                        let item = format!("{}/files", res.label_path());
                        let why = xnat::unreadable_files(&e);
                        self.plan.problems.push(Problem::new(item, why));
                    }
                }
            }
        }
        self.plan.seen = Some(seen);
        Ok(())
    }
}
