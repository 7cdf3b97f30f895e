//! Planning the resources of a session's assessors and reconstructions (`prefetch
//! --assessors`, `--reconstructions`): each one whose label can be a folder, each of its
//! resources the filters take (`-r`, `--exclude-resource`).

use super::{Planner, Problem};
use crate::names::is_safe_component;
use crate::prefetch::select::Seen;
use crate::xnat::{self, Resource, ResourceRef};

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
}
