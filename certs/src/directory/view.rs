//! The combined view of a gateway's verified directories: merging newer ones in, looking nodes
//! up, and resolving "department D for region R".

use std::collections::BTreeMap;

use fedgate_catalog::{NodeId, Region};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

use super::{verify, Bundle, DirectoryError, Entry, Revocations, Verified};

/// Verified directories, at most one per scope.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct View {
    docs: BTreeMap<Region, Verified>,
    // Every node from the narrowest scope that lists it: derived from `docs` whenever they
    // change, so looking a peer up on every query costs one map lookup.
    combined: BTreeMap<NodeId, Entry>,
}

/// What merging an offered view into the current one did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Merge {
    /// The view after the merge (the current one if nothing was accepted).
    pub view: View,
    /// The directories taken in, as `scope vN`.
    pub accepted: Vec<String>,
    /// The directories refused (older, or same version with other contents), each with why.
    pub refused: Vec<DirectoryError>,
}

impl View {
    /// Verifies every directory of `bundle` against `root` and its `revocations` at `now`; any
    /// failure refuses the whole bundle (a file or an offer is used whole or not at all).
    pub fn verify(
        bundle: &Bundle,
        root: &CertificateDer<'_>,
        revocations: &Revocations,
        now: OffsetDateTime,
    ) -> Result<View, DirectoryError> {
        let mut docs = BTreeMap::new();
        for signed in &bundle.docs {
            let v = verify(signed, root, revocations, now)?;
            let scope = v.directory().scope.clone();
            if docs.insert(scope.clone(), v).is_some() {
                return Err(DirectoryError::DuplicateScope(scope.to_string()));
            }
        }
        Ok(View::indexed(docs))
    }

    /// The held directories that still verify (after new revocation lists, or as time passes),
    /// and why each of the others no longer does.
    pub fn reverify(
        &self,
        root: &CertificateDer<'_>,
        revocations: &Revocations,
        now: OffsetDateTime,
    ) -> (View, Vec<DirectoryError>) {
        let mut kept = BTreeMap::new();
        let mut dropped = Vec::new();
        for (scope, held) in &self.docs {
            match verify(held.signed(), root, revocations, now) {
                Ok(v) => {
                    kept.insert(scope.clone(), v);
                }
                Err(e) => dropped.push(e),
            }
        }
        (View::indexed(kept), dropped)
    }

    fn indexed(docs: BTreeMap<Region, Verified>) -> View {
        let mut sorted: Vec<&Verified> = docs.values().collect();
        sorted.sort_by_key(|d| d.directory().scope.level());
        let mut combined = BTreeMap::new();
        for v in sorted {
            for e in v.directory().nodes() {
                combined.insert(e.node.clone(), e.clone());
            }
        }
        View { docs, combined }
    }

    /// True if and only if no directory is held.
    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// The directories held, broadest scope first.
    pub fn directories(&self) -> impl Iterator<Item = &Verified> {
        let mut v: Vec<&Verified> = self.docs.values().collect();
        v.sort_by_key(|d| (d.directory().scope.level(), d.directory().scope.clone()));
        v.into_iter()
    }

    /// The bundle to persist or send.
    pub fn bundle(&self) -> Bundle {
        Bundle { docs: self.directories().map(|v| v.signed().clone()).collect() }
    }

    /// `(scope, version)` of every directory held: what a gateway tells a peer it has.
    pub fn summary(&self) -> Vec<(String, u64)> {
        self.directories().map(|v| (v.directory().scope.to_string(), v.directory().version)).collect()
    }

    /// True if and only if this view holds a directory newer than `have` says the peer holds
    /// (or of a scope the peer lacks).
    pub fn newer_than(&self, have: &[(String, u64)]) -> bool {
        self.docs.iter().any(|(scope, v)| {
            let theirs = have.iter().filter(|(s, _)| s == scope.as_str()).map(|(_, n)| *n).max();
            !matches!(theirs, Some(n) if n >= v.directory().version)
        })
    }

    /// True if and only if `have` (a peer's summary) lists a scope this view lacks or a version
    /// higher than the one held: the peer has something to fetch.
    pub fn behind(&self, have: &[(String, u64)]) -> bool {
        have.iter().any(|(scope, n)| {
            let held =
                self.docs.iter().find(|(s, _)| s.as_str() == scope).map(|(_, v)| v.directory().version);
            !matches!(held, Some(h) if h >= *n)
        })
    }

    /// Takes each directory of `offered` whose scope is new or whose version is higher than the
    /// one held; an older one, or the same version with other contents, is refused and the one
    /// held kept. Never goes back.
    pub fn merge(&self, offered: &View) -> Merge {
        let mut docs = self.docs.clone();
        let (mut accepted, mut refused) = (Vec::new(), Vec::new());
        for (scope, incoming) in &offered.docs {
            let dir = incoming.directory();
            match self.docs.get(scope) {
                Some(held) if held.directory().version > dir.version => refused.push(DirectoryError::Older {
                    dir: dir.label(),
                    scope: scope.to_string(),
                    have: held.directory().version,
                }),
                Some(held) if held.directory().version == dir.version => {
                    if held.signed().body() != incoming.signed().body() {
                        refused.push(DirectoryError::Conflict { dir: dir.label(), scope: scope.to_string() });
                    }
                }
                _ => {
                    accepted.push(dir.label());
                    docs.insert(scope.clone(), incoming.clone());
                }
            }
        }
        let view = if accepted.is_empty() { self.clone() } else { View::indexed(docs) };
        Merge { view, accepted, refused }
    }

    /// Every node, each from the narrowest scope that lists it (a region's own directory speaks
    /// for its subtree over the root's), sorted by id.
    pub fn entries(&self) -> Vec<&Entry> {
        self.combined.values().collect()
    }

    /// The entry for `node`, if listed.
    pub fn entry(&self, node: &NodeId) -> Option<&Entry> {
        self.combined.get(node)
    }

    /// The node of `department` responsible for `region` (see [`resolve`]).
    pub fn resolve(&self, department: &str, region: &Region) -> Option<&Entry> {
        resolve(self.entries(), department, region)
    }
}

/// The node of `department` responsible for `region`: the nearest one whose region covers it,
/// found by walking from `region` up towards the top (the street's office before the
/// district's before the city's). `None` if the department has no node on that path.
pub fn resolve<'a>(
    entries: impl IntoIterator<Item = &'a Entry>,
    department: &str,
    region: &Region,
) -> Option<&'a Entry> {
    let mine: Vec<&Entry> = entries.into_iter().filter(|e| e.node.department() == department).collect();
    let mut at = Some(region.clone());
    while let Some(r) = at {
        if let Some(e) = mine.iter().find(|e| e.node.region() == &r) {
            return Some(e);
        }
        at = r.parent();
    }
    None
}
