//! The record exchange as sans-IO state machines: what a provider and a consumer decide, check
//! and say, with no sockets, no disk, no clock and no tasks.
//!
//! As quinn-proto is to quinn: a session takes `now`, decoded frames and source batches, and
//! hands back actions (frames to send, audit entries to append, a source read to start, a
//! message to sign) and events. The QUIC drivers (gateway/src/quic/) only move bytes and execute
//! the actions; tests drive a provider against a consumer in memory (`pair`, test builds only).
//!
//! - [`provider`]: decide once, compile the obligations into a plan, stream batches under the
//!   cap (limit or quota), record the outcome, then a signed trailer citing that record.
//! - [`consumer`]: count and hash every batch as received, check the trailer against both and
//!   the provider's certificate key, and the provider's witnessed checkpoint and proof against
//!   its audit key; a stream that ends any other way is an incomplete transfer, never a short
//!   success.
//! - [`witness`]: how the consumer learns the provider's audit key (a statement in the welcome,
//!   signed by the connection's certificate key).
//!
//! The longer-lived exchange kinds (subscriptions, referrals, sharing requests) are meant to be
//! further state machines beside these two, sharing the decision ([`provider::decide`]), the
//! signed summary ([`trailer_message`]) and the error taxonomy ([`ExchangeError`]).
//!
//! Layering: this module depends on the wire codec, the policy and catalog crates and the audit
//! entry type; never on the QUIC driver, the node or the local API.

pub mod consumer;
pub mod objection;
#[cfg(test)]
pub(crate) mod pair;
pub mod provider;
pub mod referral;
pub mod subscription;
#[cfg(test)]
mod subscription_pair;
pub mod witness;

use std::collections::HashMap;
use std::sync::Mutex;

use fedgate_catalog::NodeId;
use thiserror::Error;

use crate::api_code::ApiCode;
use crate::link::LinkError;
use crate::wire::{ErrorCode, Truncation};

pub use consumer::{ConsumerEvent, ConsumerSession, Deadlines, TransferSummary};
pub use provider::{Outcome, ProviderAction, ProviderContext, ProviderSession, Query, SourceRead};

/// Why a query failed at the consumer.
#[derive(Debug, Error)]
pub enum ExchangeError {
    /// Connecting or talking failed before any record.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// The provider refused or failed with a typed error.
    #[error("{peer}: {code:?}: {message}")]
    Remote {
        /// The provider.
        peer: String,
        /// Its error code.
        code: ErrorCode,
        /// Its reason.
        message: String,
        /// The provider's checkpoint and proof of the entry recording the refusal, verified
        /// against its audit key (for the consumer's receipt).
        witness: Option<Box<fedgate_audit::Witness>>,
    },
    /// The stream ended without a valid trailer.
    #[error("incomplete transfer from {peer} after {count} records: {why}")]
    Incomplete {
        /// The provider.
        peer: String,
        /// Records received before it broke.
        count: u64,
        /// What happened.
        why: String,
    },
    /// The trailer does not match what arrived.
    #[error("transfer from {peer} failed verification: {why}")]
    BadTrailer {
        /// The provider.
        peer: String,
        /// What did not match.
        why: String,
    },
    /// The provider did not answer in time.
    #[error("{peer} timed out: {waiting} took longer than {}", seconds(*after))]
    TimedOut {
        /// The provider.
        peer: String,
        /// What the consumer was waiting for.
        waiting: Wait,
        /// The limit that ran out.
        after: std::time::Duration,
    },
}

impl ExchangeError {
    /// The `decision` of the consumer's audit receipt for a transfer that failed after its
    /// header: `unverified` when the trailer does not match what arrived (the auditor's cue to
    /// look for tampering), else `incomplete`.
    pub fn receipt_decision(&self) -> &'static str {
        match self {
            ExchangeError::BadTrailer { .. } => "unverified",
            _ => "incomplete",
        }
    }

    /// The decision of the consumer's receipt for a query that failed before any record:
    /// `unverified` when what the provider sent did not verify, else `refused`.
    pub fn refusal_decision(&self) -> &'static str {
        match self {
            ExchangeError::BadTrailer { .. } => "unverified",
            _ => "refused",
        }
    }

    /// The provider's verified checkpoint and proof of the entry that recorded a refusal.
    pub fn witness(&self) -> Option<&fedgate_audit::Witness> {
        match self {
            ExchangeError::Remote { witness, .. } => witness.as_deref(),
            _ => None,
        }
    }

    /// Fills in the consumer's receipt for a query that failed before any record: the
    /// decision, why, and the provider's witness of its entry for it (which it cites).
    pub fn refusal_receipt(&self, entry: &mut fedgate_audit::Entry) {
        entry.decision = Some(self.refusal_decision().into());
        entry.reason = Some(self.to_string());
        entry.witness = self.witness().cloned();
        entry.provider_entry = entry.witness.as_ref().map(|w| w.entry);
    }
}

/// What a consumer was waiting for when its time ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// The QUIC handshake and the hello.
    Connect,
    /// The provider's first answer (header or refusal) to a query.
    FirstAnswer,
}

impl std::fmt::Display for Wait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Wait::Connect => "connecting (QUIC handshake and hello)",
            Wait::FirstAnswer => "the first answer to the query",
        })
    }
}

/// `30 s`, `0.5 s`: durations as people read them in messages.
pub fn seconds(d: std::time::Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

/// What the provider signs: who sent what to whom, for which purpose, how many, which bytes,
/// whether (and why) that was less than everything that matched, and — when the asker named
/// one — in which exchange (`v2`; askers that send no exchange id get the `v1` summary).
#[allow(clippy::too_many_arguments)]
pub fn trailer_message(
    provider: &NodeId,
    consumer: &NodeId,
    dataset: &str,
    purpose: &str,
    count: u64,
    digest: &str,
    truncated: Option<Truncation>,
    exchange: Option<&str>,
) -> Vec<u8> {
    let cut = truncated.map_or("", Truncation::as_str);
    let summary = format!("{provider}\0{consumer}\0{dataset}\0{purpose}\0{count}\0{digest}\0{cut}");
    match exchange {
        Some(x) => format!("fedgate transfer v2\0{summary}\0{x}").into_bytes(),
        None => format!("fedgate transfer v1\0{summary}").into_bytes(),
    }
}

/// True if and only if `s` is an exchange id: 32 lowercase hex digits (128 bits).
pub fn valid_exchange_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A fresh random 128-bit exchange id, hex: the consumer picks one per query and sends it; a
/// provider picks one only for askers that send none.
pub fn new_exchange_id() -> Option<String> {
    let bytes: [u8; 16] = ring::rand::generate(&ring::rand::SystemRandom::new()).ok()?.expose();
    Some(fedgate_catalog::hex(&bytes))
}

/// Per-grant, per-consumer, per-day record counts for quotas. In memory and shared by every
/// session of a node; a reservation not spent is refunded when its session ends.
#[derive(Debug, Default)]
pub struct QuotaLedger {
    used: Mutex<HashMap<(String, NodeId, i64), u64>>,
}

impl QuotaLedger {
    /// Reserves up to `want` records (all remaining if `None`) of `quota`; returns how many.
    pub fn reserve(&self, grant: &str, peer: &NodeId, day: i64, quota: u64, want: Option<u64>) -> u64 {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let u = used.entry((grant.to_owned(), peer.clone(), day)).or_default();
        let take = quota.saturating_sub(*u).min(want.unwrap_or(u64::MAX));
        *u += take;
        take
    }

    /// Gives back what was reserved but not sent.
    pub fn refund(&self, grant: &str, peer: &NodeId, day: i64, n: u64) {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(u) = used.get_mut(&(grant.to_owned(), peer.clone(), day)) {
            *u = u.saturating_sub(n);
        }
    }
}

/// What the consumer is told when the provider's source fails: that it did, and where the
/// provider's operator finds the details — never the details themselves.
pub fn source_failure_message(dataset: &str, audit_seq: Option<u64>) -> String {
    let entry = audit_seq.map_or_else(String::new, |s| format!(" (provider audit entry {s})"));
    format!("the provider cannot read dataset `{dataset}` right now; its operator has the details{entry}")
}

/// A consumer's failure as the API, the metrics and the audit receipt name it.
impl From<&ExchangeError> for ApiCode {
    fn from(e: &ExchangeError) -> ApiCode {
        match e {
            ExchangeError::Link(l) => ApiCode::from(l),
            ExchangeError::Remote { code, .. } => ApiCode::from(*code),
            ExchangeError::Incomplete { .. } => ApiCode::Incomplete,
            ExchangeError::BadTrailer { .. } => ApiCode::Unverified,
            ExchangeError::TimedOut { .. } => ApiCode::PeerTimeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signed_summary_covers_truncation() {
        let (p, c) = ("hotline12345@wuxi".parse().unwrap(), "police@wuxi.liangxi".parse().unwrap());
        let msg = |t| trailer_message(&p, &c, "ds", "statistics", 3, "ab", t, None);
        // A trailer stripped of its truncation no longer matches the signature made over it.
        assert_ne!(msg(None), msg(Some(Truncation::Quota)));
        assert_ne!(msg(Some(Truncation::Limit)), msg(Some(Truncation::Quota)));
        assert!(msg(Some(Truncation::Quota)).ends_with(b"\0ab\0quota"));
        // With the asker's exchange id: v2, the id last; another id is another message.
        let x = "0123456789abcdef0123456789abcdef";
        let v2 = trailer_message(&p, &c, "ds", "statistics", 3, "ab", None, Some(x));
        assert!(v2.starts_with(b"fedgate transfer v2\0") && v2.ends_with(format!("\0ab\0\0{x}").as_bytes()));
        let y = "1123456789abcdef0123456789abcdef";
        assert_ne!(v2, trailer_message(&p, &c, "ds", "statistics", 3, "ab", None, Some(y)));
        assert_ne!(v2, msg(None));
        assert!(valid_exchange_id(x) && !valid_exchange_id(&x.to_uppercase()) && !valid_exchange_id(&x[1..]));
    }

    #[test]
    fn source_failures_reach_the_consumer_without_details() {
        let m = source_failure_message("cases", Some(7));
        assert_eq!(m, "the provider cannot read dataset `cases` right now; its operator has the details (provider audit entry 7)");
    }
}
