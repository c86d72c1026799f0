//! The messages gateways exchange.

use fedgate_audit::Witness;
use fedgate_catalog::{Catalog, Record};
use serde::{Deserialize, Serialize};

/// Typed error codes a provider answers with; each maps to a QUIC stream/connection close.
/// Sorted by blame: `0x1_` the asker's request, `0x2_` the provider's policy and catalog, `0x3_`
/// the provider's resources and bugs. [`crate::error`] maps each to the local API's code and
/// HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// The request frame did not decode.
    Malformed,
    /// No whole request arrived in time: the asker was too slow, its bytes were not bad.
    RequestTimeout,
    /// The request is valid but this gateway does not support it.
    Unsupported,
    /// The request decoded but breaks a cap on a field's size or value (see
    /// [`limits`](super::limits)).
    BadRequest,
    /// The provider is at a resource limit (connections, buffered requests); retry later.
    Busy,
    /// The peer said it is someone other than its certificate.
    WrongIdentity,
    /// Policy denies the request.
    Denied,
    /// No such dataset here.
    UnknownDataset,
    /// A filter names an unknown field or has a bad value.
    BadFilter,
    /// The dataset's source cannot be read now.
    SourceUnavailable,
    /// The grant's quota is used up.
    QuotaExceeded,
    /// A bug or unexpected failure on the provider.
    Internal,
}

impl ErrorCode {
    /// Every code, in the order of their QUIC codes.
    pub const ALL: [ErrorCode; 12] = [
        ErrorCode::Malformed,
        ErrorCode::Unsupported,
        ErrorCode::WrongIdentity,
        ErrorCode::BadRequest,
        ErrorCode::RequestTimeout,
        ErrorCode::Denied,
        ErrorCode::UnknownDataset,
        ErrorCode::BadFilter,
        ErrorCode::SourceUnavailable,
        ErrorCode::QuotaExceeded,
        ErrorCode::Busy,
        ErrorCode::Internal,
    ];

    /// The code as written on the wire (`bad-request`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Malformed => "malformed",
            ErrorCode::RequestTimeout => "request-timeout",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::BadRequest => "bad-request",
            ErrorCode::Busy => "busy",
            ErrorCode::WrongIdentity => "wrong-identity",
            ErrorCode::Denied => "denied",
            ErrorCode::UnknownDataset => "unknown-dataset",
            ErrorCode::BadFilter => "bad-filter",
            ErrorCode::SourceUnavailable => "source-unavailable",
            ErrorCode::QuotaExceeded => "quota-exceeded",
            ErrorCode::Internal => "internal",
        }
    }

    /// True if and only if the provider's policy refused: `denied`, or `unknown-dataset`, which
    /// is also what a dataset that is never shared is answered (peers are not told it exists;
    /// the provider's audit log records it as the denial it is).
    pub fn is_policy_denial(self) -> bool {
        matches!(self, ErrorCode::Denied | ErrorCode::UnknownDataset)
    }

    /// The code a QUIC application close or stream stop carries, if it is one of these.
    pub fn from_quic_code(code: u64) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| u64::from(c.quic_code()) == code)
    }

    /// The QUIC application error code used when closing with this error.
    pub fn quic_code(self) -> u32 {
        match self {
            ErrorCode::Malformed => 0x10,
            ErrorCode::RequestTimeout => 0x14,
            ErrorCode::Unsupported => 0x11,
            ErrorCode::BadRequest => 0x13,
            ErrorCode::Busy => 0x32,
            ErrorCode::WrongIdentity => 0x12,
            ErrorCode::Denied => 0x20,
            ErrorCode::UnknownDataset => 0x21,
            ErrorCode::BadFilter => 0x22,
            ErrorCode::SourceUnavailable => 0x30,
            ErrorCode::QuotaExceeded => 0x31,
            ErrorCode::Internal => 0x3f,
        }
    }
}

/// Why a provider ended a result before its last matching record. Signed with the trailer, so
/// a short answer can never pass for a complete one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Truncation {
    /// The asker's own `limit` was reached and more records match: what it asked for, not an
    /// error, but reported.
    Limit,
    /// The grant's daily quota ran out before the result did: the provider withheld records.
    Quota,
}

impl Truncation {
    /// As written on the wire, in the signed summary, in audit entries and in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Truncation::Limit => "limit",
            Truncation::Quota => "quota",
        }
    }

    /// True if and only if the provider (not the asker) cut the result short.
    pub fn by_provider(self) -> bool {
        self != Truncation::Limit
    }
}

impl Message {
    /// Every message kind, as it appears on the wire.
    pub const KINDS: &'static [&'static str] = &[
        "hello",
        "welcome",
        "catalog-request",
        "catalog",
        "query",
        "header",
        "batch",
        "trailer",
        "error",
        "events-request",
        "events",
        "events-trailer",
        "directory-offer",
        "directory",
        "referral",
        "referral-ack",
        "sharing-request",
        "sharing-answer",
        "objection",
        "objection-answer",
    ];

    /// This message's kind, as it appears on the wire (one of [`Message::KINDS`]).
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "hello",
            Message::Welcome { .. } => "welcome",
            Message::Error { .. } => "error",
            Message::DirectoryOffer { .. } => "directory-offer",
            Message::Directory { .. } => "directory",
            Message::CatalogRequest => "catalog-request",
            Message::Catalog { .. } => "catalog",
            Message::Query { .. } => "query",
            Message::Header { .. } => "header",
            Message::Batch { .. } => "batch",
            Message::Trailer { .. } => "trailer",
            Message::EventsRequest { .. } => "events-request",
            Message::Events { .. } => "events",
            Message::EventsTrailer { .. } => "events-trailer",
            Message::Referral { .. } => "referral",
            Message::ReferralAck { .. } => "referral-ack",
            Message::SharingRequest { .. } => "sharing-request",
            Message::SharingAnswer { .. } => "sharing-answer",
            Message::Objection { .. } => "objection",
            Message::ObjectionAnswer { .. } => "objection-answer",
        }
    }
}

/// One frame's message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Message {
    /// First request on a new connection: the asker's protocol version and the node it believes
    /// it is. The provider answers from the certificate, never from this claim.
    Hello {
        /// Protocol version spoken.
        version: u16,
        /// The node id the asker claims (must match its certificate).
        node: String,
        /// Software name and version, for operators.
        software: String,
    },
    /// Answer to `Hello`: the provider's node id.
    Welcome {
        /// The provider's node id.
        node: String,
        /// The provider's audit key, vouched for by the key of the certificate this connection
        /// was made with: the consumer checks the checkpoints it witnesses against it. Absent
        /// from providers that predate witnessing.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        audit_key: Option<AuditKey>,
    },
    /// Asks for the provider's catalog metadata.
    CatalogRequest,
    /// The provider's shareable datasets (metadata only; never sharing type `none`).
    Catalog {
        /// The datasets.
        catalog: Catalog,
    },
    /// Asks for records.
    Query {
        /// The dataset id.
        dataset: String,
        /// The purpose of use.
        purpose: String,
        /// Equality filters, field name and value as text.
        filters: Vec<(String, String)>,
        /// At most this many records.
        limit: Option<u64>,
        /// The exchange's random 128-bit id (32 lowercase hex digits), chosen by the asker; it
        /// is in both sides' audit entries and in the trailer's signed summary. Absent from
        /// askers that predate it (the provider then picks one for its own log).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exchange: Option<String>,
    },
    /// First answer to an allowed query: the fields each record carries, in order.
    Header {
        /// Field names.
        fields: Vec<String>,
        /// Why it was allowed (grant, clearance, rows).
        reason: String,
    },
    /// Some records, each with the header's fields in order.
    Batch {
        /// The records.
        records: Vec<Record>,
    },
    /// Last answer to a query: what was sent, vouched for by the provider.
    Trailer {
        /// Records sent.
        count: u64,
        /// SHA-256 (hex) over the bodies of every batch frame, in order.
        digest: String,
        /// The provider's ECDSA P-256 signature (hex) over the transfer summary.
        signature: String,
        /// Where the provider recorded this transfer in its audit log.
        audit_seq: Option<u64>,
        /// Set when more records matched than were sent, and why; absent for a whole result.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        truncated: Option<Truncation>,
        /// The provider's signed checkpoint covering entry `audit_seq` and that entry's
        /// inclusion proof, for the consumer to check and keep. Absent from older providers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        witness: Option<Box<Witness>>,
    },
    /// One delivery round of a subscription (docs/protocol.md, "Subscriptions"): the
    /// subscriber asks for the events after `acked`, which also acknowledges every event up to
    /// it (received, verified and stored durably). The provider answers with up to a few
    /// `events` + `events-trailer` pairs, waiting up to `wait_ms` for the first, then finishes.
    EventsRequest {
        /// The subscription's exchange id (32 lowercase hex digits), fixed at its creation.
        exchange: String,
        /// The dataset id.
        dataset: String,
        /// The purpose of use.
        purpose: String,
        /// Equality filters, field name and value as text, as in a query.
        filters: Vec<(String, String)>,
        /// The last event id the subscriber has stored; 0 before the first.
        acked: u64,
        /// How long the provider may hold the round open waiting for a new event.
        wait_ms: u64,
    },
    /// A batch of events covering ids `first..=last` (ids in that range that are absent were
    /// outside the subscriber's rows or filters), desensitized as a query by the same subscriber
    /// would be.
    Events {
        /// First id covered.
        first: u64,
        /// Last id covered.
        last: u64,
        /// Ids after the subscriber's cursor the provider no longer keeps (its backlog bound):
        /// reported, never skipped silently.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gap: Option<(u64, u64)>,
        /// The fields each event's record carries, in order (the subscriber's view: fields
        /// its grant drops are absent).
        fields: Vec<String>,
        /// The events, ids increasing.
        events: Vec<crate::events::Event>,
    },
    /// Closes an `events` frame: what it carried, vouched for by the provider.
    EventsTrailer {
        /// Events in the batch.
        count: u64,
        /// SHA-256 (hex) of the `events` frame's body.
        digest: String,
        /// The provider's signature (hex) over the batch summary.
        signature: String,
        /// Where the provider recorded the batch in its audit log.
        audit_seq: Option<u64>,
        /// The provider's signed checkpoint covering entry `audit_seq` and that entry's
        /// inclusion proof, for the subscriber to check and keep, as a query's trailer carries.
        /// Absent from older providers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        witness: Option<Box<Witness>>,
    },
    /// Says which federation directories the asker holds, `(scope, version)`, and asks for
    /// newer ones. Sent right after connecting, and to tell a peer a newer directory is here
    /// (the peer then asks back).
    DirectoryOffer {
        /// The asker's directories.
        have: Vec<(String, u64)>,
    },
    /// Answer to `DirectoryOffer`: the provider's directories, and its signed bundle if it holds
    /// anything newer than the asker said (verified by the asker before any use).
    Directory {
        /// The provider's directories.
        have: Vec<(String, u64)>,
        /// Its bundle, only when the asker lacks something in it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bundle: Option<fedgate_certs::directory::Bundle>,
    },
    /// One step of a referral (docs/protocol.md, "Referrals"), signed by the party that took
    /// it. The receiving gateway stores and audits it before it answers `referral-ack`; a step
    /// it already holds is acknowledged again, so resending is always safe.
    Referral {
        /// The referral's exchange id (32 lowercase hex digits), chosen by its sender.
        exchange: String,
        /// The step's place in the referral's life: 1 for `send`, then one more per step.
        seq: u64,
        /// Unix seconds when the step was taken.
        at: i64,
        /// The step.
        step: super::referral::Step,
        /// ECDSA P-256 signature (hex) by the key of the sender's connection certificate over
        /// the step's summary (author, recipient, exchange, seq, time, step digest).
        signature: String,
    },
    /// Answer to `referral`: the step is stored and audited.
    ReferralAck {
        /// The referral's exchange id.
        exchange: String,
        /// The step acknowledged.
        seq: u64,
    },
    /// A sharing request (docs/governance.md), signed by the consumer. Sent again, unchanged,
    /// until the provider has answered it for good: the provider stores it once (by its
    /// exchange id) and every time answers with where it stands.
    SharingRequest {
        /// The request's exchange id (32 lowercase hex digits), chosen by the consumer.
        exchange: String,
        /// The dataset id.
        dataset: String,
        /// The purpose of use.
        purpose: String,
        /// Fields the consumer needs (empty: the whole dataset).
        fields: Vec<String>,
        /// Unix seconds until which the consumer asks to use the data.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<i64>,
        /// Why the consumer needs the data.
        reason: String,
        /// The consumer's signature (hex) over the request's summary.
        signature: String,
    },
    /// Answer to `SharingRequest`: where the request stands, signed by the provider.
    SharingAnswer {
        /// The request's exchange id.
        exchange: String,
        /// `pending`, `approved`, `refused` or `revoked`.
        state: String,
        /// Unix seconds by which the provider must answer.
        deadline: i64,
        /// The steward's reason (refusals and revocations).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// The grant an approval wrote.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grant: Option<String>,
        /// The grant's clearance.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        clearance: Option<u8>,
        /// Unix seconds the grant ends.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<i64>,
        /// Records per day the grant allows.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        quota: Option<u64>,
        /// Unix seconds of the steward's decision.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        answered: Option<i64>,
        /// The provider's signature (hex) over the answer's summary.
        signature: String,
        /// Where the provider recorded receiving the request in its audit log (first answer).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        audit_seq: Option<u64>,
    },
    /// An objection to one record (docs/governance.md, "Objections"), signed by the consumer.
    /// Sent again, unchanged, until the provider's steward has decided it: the provider stores
    /// it once (by its exchange id) and every time answers with where it stands.
    Objection {
        /// The objection's exchange id (32 lowercase hex digits), chosen by the consumer.
        exchange: String,
        /// The dataset id.
        dataset: String,
        /// The purpose the consumer receives the record for.
        purpose: String,
        /// The record's primary key, as text.
        key: String,
        /// The field held to be wrong.
        field: String,
        /// Why.
        reason: String,
        /// The value the consumer holds right, if it says.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        proposed: Option<String>,
        /// The consumer's signature (hex) over the objection's summary.
        signature: String,
    },
    /// Answer to `Objection`: where it stands, signed by the provider.
    ObjectionAnswer {
        /// The objection's exchange id.
        exchange: String,
        /// `open`, `accepted` or `rejected`.
        state: String,
        /// The steward's reason.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// True if and only if accepting it changed the record at the source.
        #[serde(default)]
        corrected: bool,
        /// Unix seconds of the steward's decision.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        answered: Option<i64>,
        /// The provider's signature (hex) over the answer's summary.
        signature: String,
        /// Where the provider recorded receiving the objection in its audit log (first answer).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        audit_seq: Option<u64>,
    },
    /// A typed failure with a message a steward can act on.
    Error {
        /// What kind of failure.
        code: ErrorCode,
        /// Human-readable reason; never reveals other peers' grants.
        message: String,
        /// For a refusal or failure the provider recorded (a `deny`, a source that failed): its
        /// signed checkpoint covering that entry and the entry's inclusion proof.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        witness: Option<Box<Witness>>,
    },
}

impl Message {
    /// A typed failure that cites no audit entry.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Message {
        Message::Error { code, message: message.into(), witness: None }
    }
}

/// A provider's audit key as its node certificate vouches for it on one connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditKey {
    /// The statement ([`fedgate_audit::keybind::Statement`]'s text) naming the node and its
    /// audit note verifier key.
    pub statement: String,
    /// ECDSA P-256 signature (hex) of the statement by the key of the connection's certificate.
    pub signature: String,
}

/// A denial keeps its class on the wire: an unknown (or never shared) dataset is
/// `unknown-dataset`, so peers cannot tell a `none` dataset from a missing one; every other
/// reason is `denied`.
impl From<&fedgate_policy::DenyReason> for ErrorCode {
    fn from(r: &fedgate_policy::DenyReason) -> ErrorCode {
        use fedgate_policy::DenyReason as R;
        match r {
            R::UnknownDataset | R::NotShared => ErrorCode::UnknownDataset,
            R::UnknownPurpose | R::NoGrant => ErrorCode::Denied,
        }
    }
}

/// The policy engine failing is the provider's bug, never a denial.
impl From<&fedgate_policy::EngineError> for ErrorCode {
    fn from(_: &fedgate_policy::EngineError) -> ErrorCode {
        ErrorCode::Internal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_round_trip_and_sort_by_blame() {
        let mut names = std::collections::HashSet::new();
        let mut quic = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(names.insert(code.as_str()), "{code:?} shares its name");
            assert!(quic.insert(code.quic_code()), "{code:?} shares its QUIC code");
            // Below the certificate refusals (0x40..) and sorted as ALL lists them.
            assert!((0x10..0x40).contains(&code.quic_code()), "{code:?}");
        }
        assert!(ErrorCode::ALL.windows(2).all(|w| w[0].quic_code() < w[1].quic_code()));
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_quic_code(u64::from(code.quic_code())), Some(code));
        }
        for other in [0, 0x15, 0x40, 0x49, 0x100, u64::MAX] {
            assert_eq!(ErrorCode::from_quic_code(other), None, "{other:#x}");
        }
    }

    #[test]
    fn deny_reasons_and_engine_failures_map_by_blame() {
        use fedgate_policy::DenyReason as R;
        let cases = [
            (R::UnknownDataset, ErrorCode::UnknownDataset),
            (R::NotShared, ErrorCode::UnknownDataset),
            (R::UnknownPurpose, ErrorCode::Denied),
            (R::NoGrant, ErrorCode::Denied),
        ];
        for (reason, want) in cases {
            assert_eq!(ErrorCode::from(&reason), want, "{reason:?}");
        }
    }
}
