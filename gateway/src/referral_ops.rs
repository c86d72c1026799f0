//! What a node does when its operator or application takes a referral step: find the receiver
//! (a node, or "department D for region R" through the directory), decide and read the case for
//! it, store the step, audit it; the outbox ([`crate::quic::referral`]) then delivers it.

use fedgate_catalog::{NodeId, Region};
use thiserror::Error;

use crate::api_code::ApiCode;
use crate::exchange::referral::{decide_case, CaseGrant};
use crate::quic::referral::audit_step;
use crate::referrals::{Referral, ReferralError, StoredStep};
use crate::state::Shared;
use crate::wire::referral::{Case, Step};
use fedgate_audit::Kind;

/// Why a referral operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum OpError {
    /// The store failed or refused the step.
    #[error(transparent)]
    Store(#[from] ReferralError),
    /// The receiver named is not known here.
    #[error("{0}")]
    UnknownReceiver(String),
    /// The case may not be given to the receiver (recorded as a denial), or cannot be read.
    #[error("case refused for {receiver}: {message}")]
    Case {
        /// The receiver.
        receiver: String,
        /// The code, as a query's refusal would have it.
        code: ApiCode,
        /// Why.
        message: String,
    },
    /// Recording the step in the audit log failed; it is stored and is audited and delivered
    /// after the node restarts.
    #[error("the step is stored but recording it in the audit log failed: {0}")]
    Audit(String),
    /// Internal failure (a task that died, no randomness).
    #[error("{0}")]
    Internal(String),
}

impl From<&OpError> for ApiCode {
    fn from(e: &OpError) -> ApiCode {
        match e {
            OpError::Store(ReferralError::Unknown(_)) => ApiCode::NotFound,
            OpError::Store(ReferralError::Refused { .. }) => ApiCode::Conflict,
            OpError::UnknownReceiver(_) => ApiCode::UnknownPeer,
            OpError::Case { code, .. } => *code,
            _ => ApiCode::Internal,
        }
    }
}

/// Who a referral goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Receiver {
    /// This node.
    Node(NodeId),
    /// The node of this department responsible for this region, from the directory.
    Responsible {
        /// The department.
        department: String,
        /// The region.
        region: Region,
    },
}

/// The record of one of this node's datasets a referral carries as its case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseSpec {
    /// The dataset.
    pub dataset: String,
    /// The purpose the receiver's grant must list.
    pub purpose: String,
    /// Equality filters selecting exactly one record.
    pub filters: Vec<(String, String)>,
}

/// A new referral (or a forwarded one) as asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewReferral {
    /// Its receiver.
    pub to: Receiver,
    /// The sender's reference.
    pub reference: String,
    /// What it is about.
    pub subject: String,
    /// What the receiver is asked to do.
    pub instructions: String,
    /// Unix seconds by which it must be resolved.
    pub deadline: i64,
    /// The case, if it carries one.
    pub case: Option<CaseSpec>,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ReferralError> + Send + 'static,
) -> Result<T, OpError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| OpError::Internal(e.to_string()))?
        .map_err(OpError::Store)
}

/// The node `to` names: itself, or the one the directory says is responsible. Known peers only.
pub fn resolve(shared: &Shared, to: &Receiver) -> Result<NodeId, OpError> {
    let node = match to {
        Receiver::Node(n) => n.clone(),
        Receiver::Responsible { department, region } => {
            let view = shared.directory.view();
            let found = view.resolve(department, region).map(|e| e.node.clone());
            found.ok_or_else(|| {
                OpError::UnknownReceiver(format!(
                    "the federation directory names no `{department}` node responsible for {region}"
                ))
            })?
        }
    };
    if &node == shared.link.local() {
        return Err(OpError::UnknownReceiver(format!("{node} is this node; refer to another one")));
    }
    shared.address_of(&node).map_err(|e| OpError::UnknownReceiver(e.to_string()))?;
    Ok(node)
}

/// Sends a new referral; returns it as stored.
pub async fn send(shared: &Shared, r: NewReferral) -> Result<Referral, OpError> {
    let to = resolve(shared, &r.to)?;
    let exchange =
        crate::exchange::new_exchange_id().ok_or_else(|| OpError::Internal("no system randomness".into()))?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let (step, decided) = send_step(shared, &to, &exchange, &r, None, now).await?;
    let (store, x, node) = (shared.referrals.clone(), exchange.clone(), to.clone());
    let s = blocking(move || store.send(&x, &node, step, now)).await?;
    audit(shared, &[s], decided.as_ref()).await?;
    let store = shared.referrals.clone();
    blocking(move || store.get(&exchange)).await
}

/// Passes referral `parent` (received here) further down; returns the new child referral.
pub async fn forward(shared: &Shared, parent: &str, r: NewReferral) -> Result<Referral, OpError> {
    let to = resolve(shared, &r.to)?;
    let child =
        crate::exchange::new_exchange_id().ok_or_else(|| OpError::Internal("no system randomness".into()))?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let (step, decided) = send_step(shared, &to, &child, &r, Some(parent), now).await?;
    let (store, p, c, node) = (shared.referrals.clone(), parent.to_owned(), child.clone(), to.clone());
    let (sc, sp) = blocking(move || store.forward(&p, &c, &node, step, now)).await?;
    audit(shared, &[sp, sc], decided.as_ref()).await?;
    let store = shared.referrals.clone();
    blocking(move || store.get(&child)).await
}

/// Takes step `step` (accept, return, update, resolve, close, reopen) on referral `exchange`.
pub async fn take(shared: &Shared, exchange: &str, step: Step) -> Result<Referral, OpError> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let (store, x) = (shared.referrals.clone(), exchange.to_owned());
    let s = blocking(move || store.take(&x, step, now)).await?;
    audit(shared, &[s], None).await?;
    let (store, x) = (shared.referrals.clone(), exchange.to_owned());
    blocking(move || store.get(&x)).await
}

async fn audit(shared: &Shared, steps: &[StoredStep], decided: Option<&CaseGrant>) -> Result<(), OpError> {
    for s in steps {
        audit_step(shared, s, decided.filter(|_| matches!(s.step, Step::Send { .. })))
            .await
            .map_err(OpError::Audit)?;
    }
    Ok(())
}

/// The `send` step of a new referral to `to`, with its case decided and read for `to`.
async fn send_step(
    shared: &Shared,
    to: &NodeId,
    exchange: &str,
    r: &NewReferral,
    parent: Option<&str>,
    now: i64,
) -> Result<(Step, Option<CaseGrant>), OpError> {
    let (case, decided) = match &r.case {
        Some(spec) => {
            let (case, d) = read_case(shared, to, exchange, spec, now).await?;
            (Some(case), Some(d))
        }
        None => (None, None),
    };
    let step = Step::Send {
        reference: r.reference.clone(),
        subject: r.subject.clone(),
        instructions: r.instructions.clone(),
        deadline: r.deadline,
        case,
        parent: parent.map(str::to_owned),
    };
    Ok((step, decided))
}

/// Decides the case for `to` as a query for the action `refer` would be, and reads its one
/// record through the same desensitization. A refusal is audited as the denial it is.
async fn read_case(
    shared: &Shared,
    to: &NodeId,
    exchange: &str,
    spec: &CaseSpec,
    now: i64,
) -> Result<(Case, CaseGrant), OpError> {
    let (catalog, policy) = (shared.catalog(), shared.policy());
    let ctx = crate::quic::provider_context(shared, &catalog, &policy, Kind::Deny);
    let decided = decide_case(&ctx, to, &spec.dataset, &spec.purpose, spec.filters.clone(), exchange, now);
    drop((catalog, policy));
    let d = match decided {
        Ok(d) => d,
        Err(crate::exchange::provider::Refusal(code, message)) => {
            // The receiver never hears of it: the sender's word alone, so no step to pair.
            let mut e = shared.audit_entry(Kind::Referral);
            e.counterpart = Some(to.to_string());
            e.exchange = Some(exchange.to_owned());
            e.dataset = Some(spec.dataset.clone());
            e.purpose = Some(spec.purpose.clone());
            e.filters = spec.filters.clone();
            e.decision = Some("deny".into());
            e.code = Some(code.as_str().into());
            e.reason = Some(message.clone());
            e.detail = Some("the case of a referral (action refer)".into());
            e.records = Some(0);
            shared.audit.append(e).await.map_err(|e| OpError::Audit(e.to_string()))?;
            return Err(OpError::Case { receiver: to.to_string(), code: ApiCode::from(code), message });
        }
    };
    let transform = d.read.transform();
    let mut rx = crate::source::spawn(&d.read.kind, d.read.query, transform);
    let mut records = Vec::new();
    while let Some(batch) = rx.recv().await {
        match batch {
            Ok(b) => records.extend(b),
            Err(e) => {
                tracing::error!(error = %e, dataset = %spec.dataset, "reading a referral's case failed");
                let message = format!("the source of `{}` cannot be read right now", spec.dataset);
                return Err(OpError::Case {
                    receiver: to.to_string(),
                    code: ApiCode::SourceUnavailable,
                    message,
                });
            }
        }
    }
    let fail =
        |message: String| OpError::Case { receiver: to.to_string(), code: ApiCode::BadFilter, message };
    let record = match records.len() {
        1 => records.remove(0),
        0 => {
            return Err(fail(format!(
                "no record of `{}` matches the case's filters within what {to} may see",
                spec.dataset
            )))
        }
        _ => {
            return Err(fail(format!(
                "the case's filters match more than one record of `{}`; name exactly one",
                spec.dataset
            )))
        }
    };
    let g = d.grant;
    let case = Case {
        dataset: spec.dataset.clone(),
        purpose: spec.purpose.clone(),
        fields: g.fields.clone(),
        record,
    };
    Ok((case, g))
}
