//! Near misses: for a steward's dry run (`fedgate policy explain`), the grants that almost allowed
//! a denied request and what each lacks.
//!
//! This is for the provider's own steward only. A consumer that is refused learns the request's
//! denial and nothing about other grants; nothing here is ever sent to a peer.

use std::fmt;

use fedgate_catalog::{Catalog, NodeId, Sharing};
use serde::Serialize;

use crate::decide::Request;
use crate::grant::{Action, Grant, GrantSet};
use crate::time::{civil_from_days, CST_OFFSET_SECS};

/// At most this many parts of a grant may fail for it to count as a near miss: a grant that is
/// wrong in more ways than that was not meant for this request.
pub const MAX_MISSES: usize = 2;

/// One reason a grant does not allow a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Miss {
    /// The grant ended before now (Unix seconds).
    Expired {
        /// End of validity (exclusive).
        until: i64,
    },
    /// The grant starts after now (Unix seconds).
    NotYetValid {
        /// Start of validity.
        from: i64,
    },
    /// The grant names other purposes.
    OtherPurpose {
        /// The purposes it names.
        purposes: Vec<String>,
    },
    /// The grant names other actions.
    OtherAction {
        /// The actions it names.
        actions: Vec<Action>,
    },
    /// The grant names other datasets.
    OtherDataset {
        /// The datasets it names.
        datasets: Vec<String>,
    },
    /// The peer is not among the grant's subjects.
    OtherSubject {
        /// The grant's subject, as written for people.
        subject: String,
        /// Which part of the subject the peer fails.
        why: String,
    },
    /// The dataset's sharing type is `none`: no grant can open it.
    NotShared,
}

impl fmt::Display for Miss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Miss::Expired { until } => write!(f, "expired at {}", cst_text(*until)),
            Miss::NotYetValid { from } => write!(f, "not yet valid: starts at {}", cst_text(*from)),
            Miss::OtherPurpose { purposes } => {
                write!(f, "other purpose: grants only {}", purposes.join(", "))
            }
            Miss::OtherAction { actions } => {
                let a: Vec<&str> = actions.iter().map(|a| a.as_str()).collect();
                write!(f, "other action: grants only {}", a.join(", "))
            }
            Miss::OtherDataset { datasets } => {
                write!(f, "other dataset: covers only {}", datasets.join(", "))
            }
            Miss::OtherSubject { subject, why } => write!(f, "subject is {subject}: {why}"),
            Miss::NotShared => f.write_str("the dataset's sharing type is none, which no grant can open"),
        }
    }
}

/// A grant that almost allowed the request, and every part of it that did not fit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NearMiss {
    /// The grant's id.
    pub grant: String,
    /// Where it is written, `FILE:LINE:COL`.
    pub source: String,
    /// Why it does not apply, most telling first.
    pub misses: Vec<Miss>,
}

/// A Unix time as `YYYY-MM-DD HH:MM UTC+8`, the zone grant dates are written in.
fn cst_text(t: i64) -> String {
    let local = t + CST_OFFSET_SECS;
    let (y, m, d) = civil_from_days(local.div_euclid(86_400));
    let secs = local.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02} UTC+8", secs / 3600, secs % 3600 / 60)
}

/// Which part of `grant`'s subject `peer` fails, if any.
fn subject_miss(grant: &Grant, peer: &NodeId) -> Option<Miss> {
    let s = &grant.to;
    let why = if let Some(n) = s.node.as_ref().filter(|n| *n != peer) {
        format!("the grant is for {n} only, not {peer}")
    } else if let Some(d) = s.department.as_deref().filter(|d| *d != peer.department()) {
        format!("{peer} is in department {}, not {d}", peer.department())
    } else if let Some(r) = s.region.as_ref().filter(|r| !r.covers(peer.region())) {
        format!("{peer} is outside region {r}")
    } else if let Some((lo, hi)) = s.levels.filter(|(lo, hi)| !(*lo..=*hi).contains(&peer.level())) {
        format!(
            "{peer} is at level {}, the grant covers levels {}-{}",
            peer.level().get(),
            lo.get(),
            hi.get()
        )
    } else {
        return None;
    };
    Some(Miss::OtherSubject { subject: s.to_string(), why })
}

/// Every part of `grant` that keeps it from allowing `req` by `peer` at `now`.
pub fn misses(grant: &Grant, peer: &NodeId, req: &Request, now: i64) -> Vec<Miss> {
    let mut out = Vec::new();
    out.extend(subject_miss(grant, peer));
    if !grant.covers_dataset(&req.dataset) {
        let datasets = grant.datasets.iter().flatten().map(|d| d.as_str().to_owned()).collect();
        out.push(Miss::OtherDataset { datasets });
    }
    if !grant.actions.contains(&req.action) {
        out.push(Miss::OtherAction { actions: grant.actions.clone() });
    }
    if !grant.purposes.iter().any(|p| p.as_str() == req.purpose) {
        let purposes = grant.purposes.iter().map(|p| p.as_str().to_owned()).collect();
        out.push(Miss::OtherPurpose { purposes });
    }
    match (grant.valid_from, grant.valid_until) {
        (Some(from), _) if now < from => out.push(Miss::NotYetValid { from }),
        (_, Some(until)) if now >= until => out.push(Miss::Expired { until }),
        _ => {}
    }
    out
}

/// The grants that fail `req` by `peer` at `now` in at most [`MAX_MISSES`] ways, closest first
/// (then in file order). A dataset whose sharing type is `none` turns every grant naming it
/// into a near miss with [`Miss::NotShared`]: the grant fits, the dataset never leaves.
pub fn near_misses(
    grants: &GrantSet,
    catalog: &Catalog,
    peer: &NodeId,
    req: &Request,
    now: i64,
) -> Vec<NearMiss> {
    let not_shared = catalog.get(&req.dataset).is_some_and(|d| d.sharing == Sharing::None);
    let mut out: Vec<NearMiss> = grants
        .grants
        .iter()
        .filter_map(|g| {
            let mut m = misses(g, peer, req, now);
            if m.is_empty() && not_shared {
                m.push(Miss::NotShared);
            }
            (!m.is_empty() && m.len() <= MAX_MISSES).then(|| NearMiss {
                grant: g.id.clone(),
                source: g.source.clone(),
                misses: m,
            })
        })
        .collect();
    // Stable: equally close grants keep their file order.
    out.sort_by_key(|n| n.misses.len());
    out
}
