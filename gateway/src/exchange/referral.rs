//! Referrals (交办 → 受理 → 办理 → 反馈 → 办结) as pure rules: which party may take which step
//! in which state, what each signed message covers, when a referral is overdue, whether a step
//! that arrives from the peer is new, a resend, or refused; and the decision that desensitizes
//! the case for the receiver (the same [`decide_for`] a query goes through, for the action
//! `refer`). No sockets, no disk, no clock: the store and the QUIC driver do the I/O.
//!
//! The states and who moves them:
//!
//! ```text
//! sent ─receive→ received ─accept→ accepted ─update/forward→ in-progress ─resolve→ resolved
//!                    └─return→ returned ─close→ closed        resolved ─close→ closed
//!                                                              resolved ─reopen→ reopened ─…→ resolved
//! ```
//!
//! In every state exactly one party may act (the sender only on `returned` and `resolved`), so
//! the two sides never number a step the same: seq is the referral's single history.

use fedgate_catalog::NodeId;
use fedgate_policy::Action;
use ring::digest::{digest, SHA256};
use serde::Serialize;
use thiserror::Error;

use super::provider::{decide_for, Refusal, SourceRead};
use super::Query;
use crate::wire::referral::Step;
use crate::wire::ErrorCode;

/// Where a referral stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Handed over, not yet stored by the receiver's gateway.
    Sent,
    /// Stored by the receiver's gateway; waiting for the receiver to accept or return it.
    Received,
    /// 受理: taken on.
    Accepted,
    /// 退回: sent back, with a reason.
    Returned,
    /// 办理: being handled (notes given, or passed further down).
    InProgress,
    /// 反馈: done, with a result and feedback.
    Resolved,
    /// 办结: closed by the sender.
    Closed,
    /// Reopened by the sender after a result it did not accept.
    Reopened,
}

impl State {
    /// Every state.
    pub const ALL: [State; 8] = [
        State::Sent,
        State::Received,
        State::Accepted,
        State::Returned,
        State::InProgress,
        State::Resolved,
        State::Closed,
        State::Reopened,
    ];

    /// As stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Sent => "sent",
            State::Received => "received",
            State::Accepted => "accepted",
            State::Returned => "returned",
            State::InProgress => "in-progress",
            State::Resolved => "resolved",
            State::Closed => "closed",
            State::Reopened => "reopened",
        }
    }

    /// The state named `s`, if any.
    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// True if and only if the receiver still owes the sender a result.
    pub fn is_open(self) -> bool {
        !matches!(self, State::Resolved | State::Closed)
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The two ends of a referral.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Party {
    /// The node that handed it over (交办).
    Sender,
    /// The node it was handed to.
    Receiver,
}

impl Party {
    /// As stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Party::Sender => "sender",
            Party::Receiver => "receiver",
        }
    }

    /// The other end.
    pub fn other(self) -> Party {
        match self {
            Party::Sender => Party::Receiver,
            Party::Receiver => Party::Sender,
        }
    }
}

/// Why a step is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum StepError {
    /// The step belongs to the other party.
    #[error("only the {owner} may {step} a referral; this node is its {party}", owner = owner.as_str(), party = party.as_str())]
    WrongParty {
        /// The step.
        step: &'static str,
        /// Who may take it.
        owner: Party,
        /// Who tried.
        party: Party,
    },
    /// The step does not follow from the referral's state.
    #[error("cannot {step} a referral that is {state}{hint}", hint = hint(*state))]
    NotNow {
        /// The step.
        step: &'static str,
        /// The state it is in.
        state: State,
    },
    /// A referral starts with `send` and with nothing else; `send` never comes twice.
    #[error("a referral begins with send, once")]
    NotFirst,
}

fn hint(state: State) -> &'static str {
    match state {
        State::Closed => " (closed referrals are final; send a new one)",
        State::Sent => " (the receiver's gateway has not stored it yet)",
        _ => "",
    }
}

/// Who may take `step`.
pub fn owner(step: &Step) -> Party {
    match step {
        Step::Send { .. } | Step::Close | Step::Reopen { .. } => Party::Sender,
        _ => Party::Receiver,
    }
}

/// The state after `party` takes `step` in `state` (`None`: the referral does not exist yet).
pub fn next(state: Option<State>, party: Party, step: &Step) -> Result<State, StepError> {
    let name = step.name();
    let want = owner(step);
    if want != party {
        return Err(StepError::WrongParty { step: name, owner: want, party });
    }
    let Some(state) = state else {
        return match step {
            Step::Send { .. } => Ok(State::Sent),
            _ => Err(StepError::NotFirst),
        };
    };
    use State as S;
    let to = match (state, step) {
        (_, Step::Send { .. }) => return Err(StepError::NotFirst),
        (S::Sent, Step::Receive) => S::Received,
        (S::Received, Step::Accept) => S::Accepted,
        (S::Received, Step::Return { .. }) => S::Returned,
        (S::Accepted | S::InProgress | S::Reopened, Step::Update { .. } | Step::Forward { .. }) => {
            S::InProgress
        }
        (S::Accepted | S::InProgress | S::Reopened, Step::Resolve { .. }) => S::Resolved,
        (S::Resolved | S::Returned, Step::Close) => S::Closed,
        (S::Resolved, Step::Reopen { .. }) => S::Reopened,
        _ => return Err(StepError::NotNow { step: name, state }),
    };
    Ok(to)
}

/// True if and only if a referral in `state` due at `deadline` is overdue at `now` (unix
/// seconds): past its deadline and still owing a result.
pub fn overdue(state: State, deadline: i64, now: i64) -> bool {
    state.is_open() && now > deadline
}

/// SHA-256 (hex) of a step's canonical encoding (CBOR, fields in declaration order): what the
/// signature covers, and what tells a resend from a different step under the same seq.
pub fn step_digest(step: &Step) -> String {
    let mut bytes = Vec::new();
    // Serializing a plain data enum into a Vec cannot fail; an empty digest input would still
    // differ from any real step's.
    let _ = ciborium::ser::into_writer(step, &mut bytes);
    fedgate_catalog::hex(digest(&SHA256, &bytes).as_ref())
}

/// What the author of a step signs: who took which step of which referral, addressed to whom,
/// when, which bytes. Distinct from transfer and event summaries, so no signature passes for
/// another kind.
pub fn signed_message(
    author: &NodeId,
    recipient: &NodeId,
    exchange: &str,
    seq: u64,
    at: i64,
    step: &Step,
) -> Vec<u8> {
    let d = step_digest(step);
    format!("fedgate referral v1\0{author}\0{recipient}\0{exchange}\0{seq}\0{at}\0{}\0{d}", step.name())
        .into_bytes()
}

/// What this node holds of a referral, as far as admitting a peer's step needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// This node's part in it.
    pub party: Party,
    /// The other end.
    pub peer: NodeId,
    /// Its state.
    pub state: State,
    /// The last step's seq.
    pub seq: u64,
}

/// What to do with a step that arrived from a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    /// A new step: store it (the referral is then in this state), audit it, acknowledge it.
    Apply(State),
    /// A step already stored (a resend after a lost acknowledgement): acknowledge it again.
    Duplicate,
    /// Refused with this code and message.
    Refuse(ErrorCode, String),
}

/// Decides on step `seq` from `peer` for referral `exchange`, given what is held of it here
/// (`None`: nothing) and the digest of the step already stored under `seq`, if one is.
pub fn admit(
    exchange: &str,
    held: Option<&Held>,
    peer: &NodeId,
    seq: u64,
    step: &Step,
    stored_digest: Option<&str>,
) -> Admit {
    if !super::valid_exchange_id(exchange) {
        return Admit::Refuse(ErrorCode::BadRequest, "`exchange` must be 32 lowercase hex digits".into());
    }
    if let Some(d) = stored_digest {
        return if d == step_digest(step) {
            Admit::Duplicate
        } else {
            Admit::Refuse(
                ErrorCode::BadRequest,
                format!("referral {exchange} already has a different step {seq}; steps are never rewritten"),
            )
        };
    }
    let (state, party) = match held {
        None => (None, Party::Sender),
        Some(h) if &h.peer != peer => {
            // Another node's referral under the same id: never let one party speak for another.
            return Admit::Refuse(
                ErrorCode::Denied,
                format!("referral {exchange} is not between you and this node"),
            );
        }
        Some(h) => (Some(h.state), h.party.other()),
    };
    let want = held.map_or(1, |h| h.seq + 1);
    if seq != want {
        return Admit::Refuse(
            ErrorCode::BadRequest,
            format!("referral {exchange}: step {seq} arrived, step {want} is next (send steps in order)"),
        );
    }
    match next(state, party, step) {
        Ok(s) => Admit::Apply(s),
        Err(e) => Admit::Refuse(ErrorCode::Denied, format!("referral {exchange}: {e}")),
    }
}

/// The case decided for `receiver`: the read to run (the source read with the receiver's
/// desensitization plan) and what the audit entry records of the decision.
pub struct CaseDecision {
    /// The read: at most two records (two mean the filters do not name one case).
    pub read: SourceRead,
    /// What was decided.
    pub grant: CaseGrant,
}

/// What the decision on a case allowed, for the step's audit entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseGrant {
    /// The fields each record carries, in order (the receiver's view).
    pub fields: Vec<String>,
    /// Why it was allowed (grant, clearance, rows).
    pub reason: String,
    /// The obligations applied, `field=obligation`.
    pub obligations: Vec<String>,
    /// The grant that allowed it.
    pub grant: Option<String>,
}

/// Decides whether `receiver` may receive the record of `dataset` selected by `filters` as a
/// referral's case, for `purpose`, at `now`: the query's decision, for the action `refer`.
pub fn decide_case(
    ctx: &super::ProviderContext<'_>,
    receiver: &NodeId,
    dataset: &str,
    purpose: &str,
    filters: Vec<(String, String)>,
    exchange: &str,
    now: i64,
) -> Result<CaseDecision, Refusal> {
    if filters.is_empty() {
        return Err(Refusal(
            ErrorCode::BadFilter,
            "a case is one record: name it with filters (--case field=value)".into(),
        ));
    }
    let q = Query {
        dataset: dataset.into(),
        purpose: purpose.into(),
        filters,
        limit: Some(2),
        exchange: Some(exchange.into()),
    };
    let mut a = decide_for(ctx, receiver, &q, Action::Refer, now)?;
    if let Some(quota) = a.quota.take() {
        // One case is one record of the quota, used or not.
        quota.settle(receiver, 1);
    }
    let grant =
        CaseGrant { fields: a.read.fields(), reason: a.reason, obligations: a.obligations, grant: a.grant };
    Ok(CaseDecision { read: a.read, grant })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send() -> Step {
        Step::Send {
            reference: "12345-0001".into(),
            subject: "noise".into(),
            instructions: "visit".into(),
            deadline: 100,
            case: None,
            parent: None,
        }
    }

    fn every_step() -> Vec<Step> {
        vec![
            send(),
            Step::Receive,
            Step::Accept,
            Step::Return { reason: "not ours".into() },
            Step::Update { notes: "visited".into() },
            Step::Forward { to: "mediation@wuxi.liangxi.chongan.guangrui".into(), child: "0".repeat(32) },
            Step::Resolve { result: "agreed".into(), feedback: "ok".into() },
            Step::Close,
            Step::Reopen { reason: "again".into() },
        ]
    }

    /// The table the machine must implement: (state, step) → next state; everything else refused.
    fn allowed(state: State, step: &str) -> Option<State> {
        use State as S;
        Some(match (state, step) {
            (S::Sent, "receive") => S::Received,
            (S::Received, "accept") => S::Accepted,
            (S::Received, "return") => S::Returned,
            (S::Accepted | S::InProgress | S::Reopened, "update" | "forward") => S::InProgress,
            (S::Accepted | S::InProgress | S::Reopened, "resolve") => S::Resolved,
            (S::Resolved | S::Returned, "close") => S::Closed,
            (S::Resolved, "reopen") => S::Reopened,
            _ => return None,
        })
    }

    #[test]
    fn every_transition_is_allowed_or_refused_as_the_table_says() {
        for state in State::ALL {
            for step in every_step() {
                let party = owner(&step);
                let got = next(Some(state), party, &step);
                match allowed(state, step.name()) {
                    Some(want) => assert_eq!(got, Ok(want), "{state} {}", step.name()),
                    None => assert!(got.is_err(), "{state} {} should be refused, got {got:?}", step.name()),
                }
                // The other party may never take it, whatever the state.
                let wrong = next(Some(state), party.other(), &step);
                assert!(matches!(wrong, Err(StepError::WrongParty { .. })), "{state} {}", step.name());
            }
        }
    }

    #[test]
    fn a_referral_begins_with_send_by_the_sender() {
        assert_eq!(next(None, Party::Sender, &send()), Ok(State::Sent));
        assert!(matches!(next(None, Party::Receiver, &send()), Err(StepError::WrongParty { .. })));
        assert_eq!(next(None, Party::Receiver, &Step::Accept), Err(StepError::NotFirst));
        assert_eq!(next(Some(State::Received), Party::Sender, &send()), Err(StepError::NotFirst));
    }

    #[test]
    fn closed_is_final_and_says_so() {
        for step in every_step() {
            let e = next(Some(State::Closed), owner(&step), &step).unwrap_err();
            if !matches!(step, Step::Send { .. }) {
                assert!(e.to_string().contains("closed referrals are final"), "{e}");
            }
        }
    }

    #[test]
    fn in_each_state_only_one_party_may_act() {
        for state in State::ALL {
            let actors: std::collections::HashSet<_> =
                every_step().iter().filter(|s| next(Some(state), owner(s), s).is_ok()).map(owner).collect();
            assert!(actors.len() <= 1, "{state}: {actors:?}");
        }
    }

    #[test]
    fn overdue_means_past_the_deadline_and_still_owing_a_result() {
        for state in State::ALL {
            assert!(!overdue(state, 100, 100), "{state} at the deadline is not yet overdue");
            let want = !matches!(state, State::Resolved | State::Closed);
            assert_eq!(overdue(state, 100, 101), want, "{state}");
        }
    }

    #[test]
    fn the_signature_covers_every_part() {
        let (a, b): (NodeId, NodeId) =
            ("hotline12345@wuxi".parse().unwrap(), "grid@wuxi.liangxi.chongan".parse().unwrap());
        let x = "0123456789abcdef0123456789abcdef";
        let base = signed_message(&a, &b, x, 3, 50, &Step::Accept);
        assert!(base.starts_with(b"fedgate referral v1\0hotline12345@wuxi\0"));
        let y = "1123456789abcdef0123456789abcdef";
        for other in [
            signed_message(&b, &a, x, 3, 50, &Step::Accept),
            signed_message(&a, &b, y, 3, 50, &Step::Accept),
            signed_message(&a, &b, x, 4, 50, &Step::Accept),
            signed_message(&a, &b, x, 3, 51, &Step::Accept),
            signed_message(&a, &b, x, 3, 50, &Step::Receive),
        ] {
            assert_ne!(base, other);
        }
        let r = |t: &str| step_digest(&Step::Resolve { result: t.into(), feedback: "f".into() });
        assert_ne!(r("agreed"), r("agreed."));
        assert_eq!(r("agreed"), r("agreed"));
    }

    #[test]
    fn steps_from_the_peer_are_new_resent_or_refused() {
        let x = "0123456789abcdef0123456789abcdef";
        let hot: NodeId = "hotline12345@wuxi".parse().unwrap();
        let other: NodeId = "police@wuxi".parse().unwrap();
        // The receiver's side: nothing held, the sender's first step.
        assert_eq!(admit(x, None, &hot, 1, &send(), None), Admit::Apply(State::Sent));
        assert!(matches!(admit(x, None, &hot, 2, &send(), None), Admit::Refuse(ErrorCode::BadRequest, _)));
        assert!(matches!(admit(x, None, &hot, 1, &Step::Accept, None), Admit::Refuse(ErrorCode::Denied, _)));
        assert!(matches!(admit("X", None, &hot, 1, &send(), None), Admit::Refuse(ErrorCode::BadRequest, _)));
        // The same step again is a resend; another step under a stored seq is refused.
        let d = step_digest(&send());
        assert_eq!(admit(x, None, &hot, 1, &send(), Some(&d)), Admit::Duplicate);
        assert!(matches!(
            admit(x, None, &hot, 1, &Step::Close, Some(&d)),
            Admit::Refuse(ErrorCode::BadRequest, _)
        ));
        // The sender's side after its send: the receiver's receive and accept, in order.
        let held = Held { party: Party::Sender, peer: hot.clone(), state: State::Sent, seq: 1 };
        assert_eq!(admit(x, Some(&held), &hot, 2, &Step::Receive, None), Admit::Apply(State::Received));
        assert!(matches!(
            admit(x, Some(&held), &hot, 3, &Step::Receive, None),
            Admit::Refuse(ErrorCode::BadRequest, _)
        ));
        // The sender's own steps, or anyone else's, never come from the peer.
        assert!(matches!(
            admit(x, Some(&held), &hot, 2, &Step::Close, None),
            Admit::Refuse(ErrorCode::Denied, _)
        ));
        assert!(matches!(
            admit(x, Some(&held), &other, 2, &Step::Receive, None),
            Admit::Refuse(ErrorCode::Denied, _)
        ));
    }
}
