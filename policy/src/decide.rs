//! Decisions: (catalog, grants, request, peer, now) in; allow with obligations, or deny with a reason.
//!
//! [`Policy`] is an immutable snapshot built from a [`GrantSet`]. casbin does the final matching
//! of subject, dataset, action and purpose. Because its `enforce` scans every rule (about 1 µs
//! each) and each enforcer costs hundreds of kilobytes, fedgate does not hand casbin all grants:
//! the snapshot files grants by the subject key they name (exact node, or department × region
//! × level), dataset, purpose and action ([`crate::index`]); a request gathers the candidates
//! filed under its peer's keys, best first, and a pooled enforcer matches the best one (the next
//! ones only if it refuses), so its first match is the best grant.
//! Time windows, clearance and quotas are typed Rust. Decisions are cached per snapshot until the
//! next moment a grant starts or ends. Reloading builds a new snapshot; requests in flight keep
//! the one they started with.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use casbin::function_map::OperatorFunction;
use casbin::rhai::Dynamic;
use casbin::{CoreApi, DefaultModel, Enforcer, MemoryAdapter};
use fedgate_catalog::{Catalog, Dataset, Grade, NodeId, Purpose, Region, Rule, Sharing};
use serde::Serialize;

use crate::grant::{Action, Grant, GrantSet, Rows, Subject};
use crate::index::GrantIndex;

pub(crate) const MODEL: &str = r#"
[request_definition]
r = sub, obj, act, pur

[policy_definition]
p = sub, obj, act, pur, gid

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = subjectMatch(r.sub, p.sub) && (p.obj == "*" || r.obj == p.obj) && r.act == p.act && r.pur == p.pur
"#;

/// Cached decisions per snapshot before the cache is cleared.
const CACHE_LIMIT: usize = 65_536;

/// casbin custom function: does the node id `sub` fall under the grant's subject pattern?
fn subject_match(sub: Dynamic, pattern: Dynamic) -> Dynamic {
    let (Ok(node), Ok(pattern)) = (sub.into_string(), pattern.into_string()) else {
        return Dynamic::from(false);
    };
    let ok =
        node.parse::<NodeId>().is_ok_and(|n| Subject::from_pattern(&pattern).is_some_and(|s| s.matches(&n)));
    Dynamic::from(ok)
}

/// What a consumer asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Request {
    /// The dataset.
    pub dataset: String,
    /// The purpose.
    pub purpose: String,
    /// Read or subscribe.
    pub action: Action,
}

/// What happens to one field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Obligation {
    /// Sent as is.
    Clear,
    /// Desensitized by the rule.
    Apply(Rule),
    /// Not sent.
    Drop,
}

impl Obligation {
    /// The name `policy explain` prints: `clear`, `drop` or the operator's name.
    pub fn name(&self) -> &'static str {
        match self {
            Obligation::Clear => "clear",
            Obligation::Drop | Obligation::Apply(Rule::Drop) => "drop",
            Obligation::Apply(r) => r.name(),
        }
    }
}

/// The rows an allowed request may see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RowScope {
    /// Records whose jurisdiction lies in this region's subtree.
    Within(Region),
    /// Every record.
    All,
}

/// Why a request was allowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Allowed {
    /// The grant that matched; `None` for an unconditional dataset read without one.
    pub grant: Option<String>,
    /// Highest grade seen in clear.
    pub clearance: Grade,
    /// Row scope.
    pub rows: RowScope,
    /// Per field, in the dataset's order.
    pub fields: Vec<(String, Obligation)>,
    /// Records per day, if limited.
    pub quota: Option<u64>,
}

/// Why a request was denied. The display form is what the consumer sees: it names the request,
/// never other grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum DenyReason {
    /// No such dataset (or not shown to peers).
    UnknownDataset,
    /// Sharing type `none`.
    NotShared,
    /// The purpose is not in the federation's vocabulary.
    UnknownPurpose,
    /// No grant covers (peer, dataset, action, purpose) now.
    NoGrant,
}

/// A decision. Always act on it: allow carries obligations that must be applied.
#[must_use = "a decision carries obligations; apply or refuse"]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "decision")]
pub enum Decision {
    /// Allowed, with obligations.
    Allow(Allowed),
    /// Denied.
    Deny {
        /// Why.
        reason: DenyReason,
        /// One line for the consumer.
        message: String,
    },
}

impl Decision {
    /// True if and only if allowed.
    pub fn is_allow(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }

    /// One line saying why, for people and audit entries.
    pub fn reason(&self) -> String {
        match self {
            Decision::Allow(a) => match &a.grant {
                Some(g) => {
                    format!("allowed by grant {g} (clearance {}, rows {})", a.clearance, rows_text(&a.rows))
                }
                None => {
                    format!("unconditional dataset (clearance {}, rows {})", a.clearance, rows_text(&a.rows))
                }
            },
            Decision::Deny { message, .. } => message.clone(),
        }
    }
}

fn rows_text(r: &RowScope) -> String {
    match r {
        RowScope::All => "all".into(),
        RowScope::Within(r) => format!("within {r}"),
    }
}

/// casbin first sees only the best candidate: the index files grants exactly where they apply,
/// so it nearly always matches, and loading rules casbin never reaches would cost more than the
/// match. Should it refuse, the rest follow this many at a time.
const CASBIN_CHUNK: usize = 8;

/// A cached decision and the moment it stops being valid.
type Cached = (Arc<Decision>, Option<i64>);

/// An immutable policy snapshot.
pub struct Policy {
    set: GrantSet,
    digest: String,
    /// Where each grant applies.
    index: GrantIndex,
    /// Per grant, its place in priority order (0 = best): candidates sort by this integer.
    rank: Vec<u32>,
    /// Every valid_from and valid_until, sorted: the moments a decision can change.
    changes: Vec<i64>,
    /// Per grant, its casbin subject pattern and index as text, made once.
    rule_heads: Vec<(String, String)>,
    /// The casbin model every pooled enforcer is built from.
    model: &'static str,
    pool: Mutex<Vec<Enforcer>>,
    cache: Mutex<HashMap<(NodeId, Request), Cached>>,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Policy({} grants, {} shelves)", self.set.grants.len(), self.index.len())
    }
}

/// casbin could not be set up or failed while matching: a bug on the deciding side, never bad
/// input (grants are validated before) and never a denial. Whoever asked is told `internal`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy engine: {0}")]
pub struct EngineError(String);

impl Policy {
    /// Builds a snapshot.
    pub fn new(set: GrantSet) -> Result<Policy, EngineError> {
        Policy::with_model(set, MODEL)
    }

    /// Builds a snapshot whose enforcers use `model` (tests give a model that fails).
    pub(crate) fn with_model(set: GrantSet, model: &'static str) -> Result<Policy, EngineError> {
        let rank = priority_ranks(&set.grants);
        let index = GrantIndex::new(&set.grants, &rank);
        let mut changes: Vec<i64> =
            set.grants.iter().flat_map(|g| [g.valid_from, g.valid_until]).flatten().collect();
        changes.sort_unstable();
        changes.dedup();
        let rule_heads =
            set.grants.iter().enumerate().map(|(i, g)| (g.to.pattern(), i.to_string())).collect();
        let digest = set.digest();
        // One enforcer up front proves the model compiles; more are made as concurrency needs.
        let pool = Mutex::new(vec![new_enforcer(model)?]);
        let cache = Mutex::new(HashMap::new());
        Ok(Policy { set, digest, index, rank, changes, rule_heads, model, pool, cache })
    }

    /// The grants behind this snapshot.
    pub fn grants(&self) -> &GrantSet {
        &self.set
    }

    /// Digest of the grants, for audit entries.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// True if and only if `p` is one of the federation's purposes.
    pub fn knows_purpose(&self, p: &str) -> bool {
        p.parse::<Purpose>().is_ok_and(|p| self.set.purposes.contains(&p))
    }

    /// The first moment after `now` at which some grant starts or ends.
    fn next_change(&self, now: i64) -> Option<i64> {
        let i = self.changes.partition_point(|&t| t <= now);
        self.changes.get(i).copied()
    }

    /// Decides `req` by `peer` at `now` (Unix seconds) against `catalog`. An engine failure is an
    /// error, not a denial: the request is refused either way, but as the decider's fault, and
    /// it is not cached.
    pub fn decide(
        &self,
        catalog: &Catalog,
        peer: &NodeId,
        req: &Request,
        now: i64,
    ) -> Result<Arc<Decision>, EngineError> {
        let key = (peer.clone(), req.clone());
        if let Some((hit, expires)) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            if expires.is_none_or(|e| now < e) {
                return Ok(hit.clone());
            }
        }
        let d = Arc::new(self.decide_uncached(catalog, peer, req, now)?);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(key, (d.clone(), self.next_change(now)));
        Ok(d)
    }

    /// Decides without consulting or filling the cache (benchmarks measure both paths).
    pub fn decide_uncached(
        &self,
        catalog: &Catalog,
        peer: &NodeId,
        req: &Request,
        now: i64,
    ) -> Result<Decision, EngineError> {
        let Some(ds) = catalog.get(&req.dataset) else {
            return Ok(deny(DenyReason::UnknownDataset, format!("no dataset `{}` here", req.dataset)));
        };
        if ds.sharing == Sharing::None {
            // Same answer as for an unknown dataset: peers are not told it exists.
            return Ok(deny(DenyReason::UnknownDataset, format!("no dataset `{}` here", req.dataset)));
        }
        if !self.knows_purpose(&req.purpose) {
            return Ok(deny(
                DenyReason::UnknownPurpose,
                format!("`{}` is not one of the federation's purposes", req.purpose),
            ));
        }
        Ok(match self.best_grant(peer, req, now)? {
            Some(g) => Decision::Allow(allowed(ds, peer, Some(g))),
            None if ds.sharing == Sharing::Unconditional && req.action == Action::Read => {
                Decision::Allow(allowed(ds, peer, None))
            }
            None => deny(
                DenyReason::NoGrant,
                format!(
                    "no grant allows {peer} to {} `{}` for purpose `{}`",
                    req.action, req.dataset, req.purpose
                ),
            ),
        })
    }

    /// The shard a request falls into: grants filed under the peer's subject keys for this
    /// dataset (or all datasets), this purpose and this action, in force now, best first —
    /// usually a handful however many grants there are. With `top`, only the best `top` of them
    /// (each list is already best first, so its first `top` in force are enough); the flag says
    /// whether more were left out.
    fn candidates(&self, peer: &NodeId, req: &Request, now: i64, top: Option<usize>) -> (Vec<usize>, bool) {
        let per_list = top.unwrap_or(usize::MAX);
        let mut ids: Vec<usize> = Vec::new();
        let mut cut = false;
        self.index.for_each_list(peer, &req.dataset, &req.purpose, req.action, |list| {
            let before = ids.len();
            ids.extend(list.iter().copied().filter(|&i| self.set.grants[i].in_force(now)).take(per_list));
            cut |= ids.len() - before == per_list;
        });
        ids.sort_unstable_by_key(|&i| self.rank[i]);
        ids.dedup();
        if let Some(top) = top {
            cut |= ids.len() > top;
            ids.truncate(top);
        }
        (ids, cut)
    }

    /// The most permissive grant in force for this request, matched by casbin. `Ok(None)` only
    /// when casbin ran and matched nothing; any failure of the engine is an error.
    fn best_grant(&self, peer: &NodeId, req: &Request, now: i64) -> Result<Option<&Grant>, EngineError> {
        let (best, more) = self.candidates(peer, req, now, Some(1));
        if best.is_empty() {
            return Ok(None);
        }
        if let Some(i) = self.casbin_first_match(peer, req, &best)? {
            return Ok(self.set.grants.get(i));
        }
        if more {
            let (all, _) = self.candidates(peer, req, now, None);
            for chunk in all[best.len()..].chunks(CASBIN_CHUNK) {
                if let Some(i) = self.casbin_first_match(peer, req, chunk)? {
                    return Ok(self.set.grants.get(i));
                }
            }
        }
        Ok(None)
    }

    /// The first of `ids` (best first) that casbin matches; `Ok(None)` only when casbin ran and
    /// matched none of them.
    fn casbin_first_match(
        &self,
        peer: &NodeId,
        req: &Request,
        ids: &[usize],
    ) -> Result<Option<usize>, EngineError> {
        let mut rules = Vec::with_capacity(ids.len());
        for &i in ids {
            let g = &self.set.grants[i];
            let obj = if g.datasets.is_none() { "*".to_owned() } else { req.dataset.clone() };
            let (pattern, gid) = &self.rule_heads[i];
            rules.push(vec![pattern.clone(), obj, req.action.to_string(), req.purpose.clone(), gid.clone()]);
        }
        let pooled = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut e = match pooled {
            Some(e) => e,
            None => new_enforcer(self.model)?,
        };
        e.get_mut_model().clear_policy();
        e.get_mut_model().add_policies("p", "p", rules);
        let peer_s = peer.to_string();
        let matched =
            e.enforce_ex((peer_s.as_str(), req.dataset.as_str(), req.action.as_str(), req.purpose.as_str()));
        e.get_mut_model().clear_policy();
        self.pool.lock().unwrap_or_else(|p| p.into_inner()).push(e);
        let (allowed, explain) = matched.map_err(|e| EngineError(format!("matching failed: {e}")))?;
        if !allowed {
            return Ok(None);
        }
        // casbin said allow: the rule it names must be one of the candidates it was given.
        let gid = explain.first().and_then(|rule| rule.get(4));
        let grant = gid.and_then(|g| g.parse::<usize>().ok()).filter(|i| ids.contains(i));
        match grant {
            Some(i) => Ok(Some(i)),
            None => {
                Err(EngineError(format!("casbin allowed by a rule that is not a candidate: {explain:?}")))
            }
        }
    }

    /// The reference matcher: a plain scan over every grant, to cross-check casbin in tests.
    pub fn scan(&self, peer: &NodeId, req: &Request, now: i64) -> Option<&Grant> {
        self.set
            .grants
            .iter()
            .filter(|g| g.to.matches(peer) && g.covers_dataset(&req.dataset))
            .filter(|g| {
                g.actions.contains(&req.action) && g.purposes.iter().any(|p| p.as_str() == req.purpose)
            })
            .filter(|g| g.in_force(now))
            .min_by_key(|g| priority(g))
    }
}

/// Each grant's place in priority order.
fn priority_ranks(grants: &[Grant]) -> Vec<u32> {
    let mut order: Vec<usize> = (0..grants.len()).collect();
    order.sort_by(|&a, &b| priority(&grants[a]).cmp(&priority(&grants[b])));
    let mut rank = vec![0u32; grants.len()];
    for (place, i) in order.into_iter().enumerate() {
        rank[i] = u32::try_from(place).unwrap_or(u32::MAX);
    }
    rank
}

/// Lower sorts first: higher clearance, then wider rows, then grant id.
fn priority(g: &Grant) -> (std::cmp::Reverse<Grade>, u8, &str) {
    let rows = match g.rows {
        Rows::All => 0,
        Rows::Within(_) => 1,
        Rows::Own => 2,
    };
    (std::cmp::Reverse(g.clearance), rows, &g.id)
}

fn deny(reason: DenyReason, message: String) -> Decision {
    Decision::Deny { reason, message }
}

fn new_enforcer(model: &str) -> Result<Enforcer, EngineError> {
    futures::executor::block_on(async {
        let model = DefaultModel::from_str(model).await.map_err(|e| EngineError(e.to_string()))?;
        let mut e =
            Enforcer::new(model, MemoryAdapter::default()).await.map_err(|e| EngineError(e.to_string()))?;
        e.add_function("subjectMatch", OperatorFunction::Arg2(subject_match));
        Ok(e)
    })
}

/// Obligations for `ds` seen by `peer` through `grant` (or unconditionally, at clearance 1).
fn allowed(ds: &Dataset, peer: &NodeId, grant: Option<&Grant>) -> Allowed {
    let clearance = grant.map_or(Grade::PUBLIC, |g| g.clearance);
    let rows = match grant.map(|g| &g.rows) {
        Some(Rows::All) => RowScope::All,
        Some(Rows::Within(r)) => RowScope::Within(r.clone()),
        Some(Rows::Own) | None => RowScope::Within(peer.region().clone()),
    };
    let fields =
        ds.fields.iter().map(|f| (f.name.clone(), obligation(f.grade, &f.rule, clearance))).collect();
    Allowed {
        grant: grant.map(|g| g.id.clone()),
        clearance,
        rows,
        fields,
        quota: grant.and_then(|g| g.quota),
    }
}

/// Clear at or below the clearance; otherwise the field's rule. A grade-4 field is clear only at
/// clearance 4, which the comparison already guarantees.
pub fn obligation(grade: Grade, rule: &Rule, clearance: Grade) -> Obligation {
    if grade <= clearance {
        Obligation::Clear
    } else if *rule == Rule::Drop {
        Obligation::Drop
    } else {
        Obligation::Apply(rule.clone())
    }
}
