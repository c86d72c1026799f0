//! Decisions: (catalog, grants, request, peer, now) in; allow with obligations, or deny with a reason.
//!
//! [`Policy`] is an immutable snapshot built from a [`GrantSet`]. casbin matches subject, dataset,
//! action and purpose; because its `enforce` scans every rule, grants are sharded by their
//! subject key (the exact node, department, region subtree and level they name), so a request
//! only consults the few shards its own keys select, and decisions are cached per snapshot.
//! Time windows, clearance and quotas are typed Rust. Reloading builds a new snapshot; requests
//! in flight keep the one they started with.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};

use casbin::{CoreApi, DefaultModel, Enforcer, MemoryAdapter, MgmtApi};
use fedgate_catalog::{Catalog, Dataset, Grade, NodeId, Purpose, Region, Rule, Sharing};
use serde::Serialize;

use crate::grant::{Action, Grant, GrantSet, Rows, Subject};

const MODEL: &str = r#"
[request_definition]
r = sub, obj, act, pur

[policy_definition]
p = sub, obj, act, pur, gid

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = r.sub == p.sub && (p.obj == "*" || r.obj == p.obj) && r.act == p.act && r.pur == p.pur
"#;

/// Subject keys per casbin shard; small shards keep `enforce` in the microseconds.
const KEYS_PER_SHARD: usize = 8;
/// Cached decisions per snapshot before the cache is cleared.
const CACHE_LIMIT: usize = 65_536;

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
    /// End of the grant's validity (Unix seconds), for cache checks.
    pub until: Option<i64>,
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

/// The subject keys a grant is filed under; a node asks with all keys that could name it.
fn grant_keys(s: &Subject) -> Vec<String> {
    if let Some(n) = &s.node {
        return vec![format!("n:{n}")];
    }
    let base = format!(
        "d:{}|r:{}",
        s.department.as_deref().unwrap_or("*"),
        s.region.as_ref().map_or("*", Region::as_str)
    );
    match s.levels {
        None => vec![format!("{base}|l:*")],
        Some((lo, hi)) => (lo.get()..=hi.get()).map(|l| format!("{base}|l:{l}")).collect(),
    }
}

fn node_keys(n: &NodeId) -> Vec<String> {
    let mut regions = vec!["*".to_owned()];
    let mut r = Some(n.region().clone());
    while let Some(reg) = r {
        regions.push(reg.to_string());
        r = reg.parent();
    }
    let mut keys = vec![format!("n:{n}")];
    for d in ["*", n.department()] {
        for r in &regions {
            for l in ["*".to_owned(), n.level().get().to_string()] {
                keys.push(format!("d:{d}|r:{r}|l:{l}"));
            }
        }
    }
    keys
}

struct Shard {
    enforcer: Enforcer,
}

/// An immutable policy snapshot.
pub struct Policy {
    set: GrantSet,
    digest: String,
    /// subject key -> shard index.
    key_shard: HashMap<String, usize>,
    shards: Vec<Shard>,
    cache: Mutex<HashMap<(NodeId, Request), Arc<Decision>>>,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Policy({} grants, {} shards)", self.set.grants.len(), self.shards.len())
    }
}

/// casbin could not be set up (a bug, never bad input: grants are validated before).
#[derive(Debug, thiserror::Error)]
#[error("policy engine: {0}")]
pub struct EngineError(String);

impl Policy {
    /// Builds a snapshot. Grants are filed most-permissive first, so casbin's first match in a
    /// shard is the best grant there.
    pub fn new(set: GrantSet) -> Result<Policy, EngineError> {
        let mut order: Vec<usize> = (0..set.grants.len()).collect();
        order.sort_by_key(|&i| priority(&set.grants[i]));
        let mut rules_by_key: HashMap<String, Vec<Vec<String>>> = HashMap::new();
        for &i in &order {
            let g = &set.grants[i];
            for key in grant_keys(&g.to) {
                let objs: Vec<String> = match &g.datasets {
                    None => vec!["*".into()],
                    Some(ds) => ds.iter().map(|d| d.to_string()).collect(),
                };
                for obj in &objs {
                    for act in &g.actions {
                        for pur in &g.purposes {
                            let rule = vec![
                                key.clone(),
                                obj.clone(),
                                act.to_string(),
                                pur.to_string(),
                                i.to_string(),
                            ];
                            rules_by_key.entry(key.clone()).or_default().push(rule);
                        }
                    }
                }
            }
        }
        let mut keys: Vec<String> = rules_by_key.keys().cloned().collect();
        keys.sort();
        let mut key_shard = HashMap::new();
        let mut shards = Vec::new();
        for chunk in keys.chunks(KEYS_PER_SHARD) {
            let rules: Vec<Vec<String>> = chunk.iter().flat_map(|k| rules_by_key[k].clone()).collect();
            for k in chunk {
                key_shard.insert(k.clone(), shards.len());
            }
            shards.push(Shard { enforcer: build_enforcer(rules)? });
        }
        let digest = set.digest();
        Ok(Policy { set, digest, key_shard, shards, cache: Mutex::new(HashMap::new()) })
    }

    /// The grants behind this snapshot.
    pub fn grants(&self) -> &GrantSet {
        &self.set
    }

    /// Digest of the grants, for audit entries.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The federation's purposes.
    pub fn knows_purpose(&self, p: &str) -> bool {
        p.parse::<Purpose>().is_ok_and(|p| self.set.purposes.contains(&p))
    }

    /// Decides `req` by `peer` at `now` (Unix seconds) against `catalog`.
    pub fn decide(&self, catalog: &Catalog, peer: &NodeId, req: &Request, now: i64) -> Arc<Decision> {
        let key = (peer.clone(), req.clone());
        if let Some(hit) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            if still_valid(hit, now) {
                return hit.clone();
            }
        }
        let d = Arc::new(self.decide_uncached(catalog, peer, req, now));
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        // Only allows are cached: a denial may turn into an allow when a grant starts.
        if d.is_allow() {
            cache.insert(key, d.clone());
        }
        d
    }

    fn decide_uncached(&self, catalog: &Catalog, peer: &NodeId, req: &Request, now: i64) -> Decision {
        let Some(ds) = catalog.get(&req.dataset) else {
            return deny(DenyReason::UnknownDataset, format!("no dataset `{}` here", req.dataset));
        };
        if ds.sharing == Sharing::None {
            // Same answer as for an unknown dataset: peers are not told it exists.
            return deny(DenyReason::UnknownDataset, format!("no dataset `{}` here", req.dataset));
        }
        if !self.knows_purpose(&req.purpose) {
            return deny(
                DenyReason::UnknownPurpose,
                format!("`{}` is not one of the federation's purposes", req.purpose),
            );
        }
        match self.best_grant(peer, req, now) {
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
        }
    }

    /// The most permissive grant in force for this request, matched by casbin.
    fn best_grant(&self, peer: &NodeId, req: &Request, now: i64) -> Option<&Grant> {
        let mut shards_seen = HashSet::new();
        let mut best: Option<&Grant> = None;
        for key in node_keys(peer) {
            let Some(&shard) = self.key_shard.get(&key) else { continue };
            shards_seen.insert(shard);
            let args = (key.as_str(), req.dataset.as_str(), req.action.as_str(), req.purpose.as_str());
            let Ok((true, matched)) = self.shards[shard].enforcer.enforce_ex(args) else { continue };
            let Some(g) = matched
                .first()
                .and_then(|rule| rule.get(4))
                .and_then(|i| i.parse::<usize>().ok())
                .and_then(|i| self.set.grants.get(i))
            else {
                continue;
            };
            let g = if g.in_force(now) {
                g
            } else {
                // The best filed grant is outside its window; fall back to a scan of this key's
                // grants (rare: only around a grant's start or end).
                match self.scan(peer, req, now, Some(&key)) {
                    Some(g) => g,
                    None => continue,
                }
            };
            if best.is_none_or(|b| priority(g) < priority(b)) {
                best = Some(g);
            }
        }
        best
    }

    /// The reference matcher: a plain scan over every grant. Used as a fallback around grant
    /// windows and to cross-check casbin in tests.
    pub fn scan(&self, peer: &NodeId, req: &Request, now: i64, only_key: Option<&str>) -> Option<&Grant> {
        self.set
            .grants
            .iter()
            .filter(|g| only_key.is_none_or(|k| grant_keys(&g.to).iter().any(|gk| gk == k)))
            .filter(|g| g.to.matches(peer) && g.covers_dataset(&req.dataset))
            .filter(|g| {
                g.actions.contains(&req.action) && g.purposes.iter().any(|p| p.as_str() == req.purpose)
            })
            .filter(|g| g.in_force(now))
            .min_by_key(|g| priority(g))
    }
}

fn still_valid(d: &Decision, now: i64) -> bool {
    match d {
        Decision::Allow(a) => a.until.is_none_or(|u| now < u),
        Decision::Deny { .. } => false,
    }
}

/// Lower sorts first: higher clearance, then wider rows, then grant id.
fn priority(g: &Grant) -> (std::cmp::Reverse<Grade>, u8, String) {
    let rows = match g.rows {
        Rows::All => 0,
        Rows::Within(_) => 1,
        Rows::Own => 2,
    };
    (std::cmp::Reverse(g.clearance), rows, g.id.clone())
}

fn deny(reason: DenyReason, message: String) -> Decision {
    Decision::Deny { reason, message }
}

fn build_enforcer(rules: Vec<Vec<String>>) -> Result<Enforcer, EngineError> {
    futures::executor::block_on(async {
        let model = DefaultModel::from_str(MODEL).await.map_err(|e| EngineError(e.to_string()))?;
        let mut e =
            Enforcer::new(model, MemoryAdapter::default()).await.map_err(|e| EngineError(e.to_string()))?;
        e.add_policies(rules).await.map_err(|e| EngineError(e.to_string()))?;
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
        until: grant.and_then(|g| g.valid_until),
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
