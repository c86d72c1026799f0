//! What a referral's messages carry (docs/protocol.md, "Referrals"): one step of the referral's
//! life per message, signed by the party that took it.

use fedgate_catalog::Record;
use serde::{Deserialize, Serialize};

/// The case a referral carries: one record of a dataset the sender owns, desensitized for the
/// receiver by the same decision as a query (the receiver's grant needs the action `refer`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Case {
    /// The sender's dataset.
    pub dataset: String,
    /// The purpose the case was decided for.
    pub purpose: String,
    /// The fields the record carries, in order (the receiver's view).
    pub fields: Vec<String>,
    /// The record, desensitized for the receiver.
    pub record: Record,
}

/// One step of a referral (交办 → 受理 → 办理 → 反馈 → 办结).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// 交办: the sender hands the referral over (always the first message, seq 1).
    Send {
        /// The sender's own reference (ticket number).
        reference: String,
        /// One line saying what it is about.
        subject: String,
        /// What the receiver is asked to do.
        instructions: String,
        /// Unix seconds by which it must be resolved.
        deadline: i64,
        /// The case record, if the referral carries one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        case: Option<Case>,
        /// When the sender forwards a referral it received: that referral's exchange id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<String>,
    },
    /// The receiver's gateway stored the referral (automatic).
    Receive,
    /// 受理: the receiver takes it on.
    Accept,
    /// 退回: the receiver sends it back.
    Return {
        /// Why.
        reason: String,
    },
    /// 办理: progress notes.
    Update {
        /// The notes.
        notes: String,
    },
    /// The receiver passed it further down as a new referral.
    Forward {
        /// The node it was passed to.
        to: String,
        /// The child referral's exchange id.
        child: String,
    },
    /// 反馈: done, with the result.
    Resolve {
        /// What was done.
        result: String,
        /// Feedback for the sender.
        feedback: String,
    },
    /// 办结: the sender closes it.
    Close,
    /// The sender is not satisfied with the result and reopens it.
    Reopen {
        /// Why.
        reason: String,
    },
}

impl Step {
    /// The step's name, as shown and stored.
    pub fn name(&self) -> &'static str {
        match self {
            Step::Send { .. } => "send",
            Step::Receive => "receive",
            Step::Accept => "accept",
            Step::Return { .. } => "return",
            Step::Update { .. } => "update",
            Step::Forward { .. } => "forward",
            Step::Resolve { .. } => "resolve",
            Step::Close => "close",
            Step::Reopen { .. } => "reopen",
        }
    }
}
