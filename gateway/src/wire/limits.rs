//! Caps on everything a peer sends a provider, checked at the wire before any decision or audit.
//!
//! Every string and list in a request has a named cap here, each with the reason for its size.
//! A request over a cap is refused with [`ErrorCode::BadRequest`](super::ErrorCode::BadRequest)
//! and the offending value is only ever recorded as its length and SHA-256 digest
//! ([`fingerprint`]), never verbatim: a peer must not be able to write megabytes into our audit
//! log, nor make us hold them.

use std::time::Duration;

use thiserror::Error;

use super::msg::Message;

/// A whole request frame (hello, catalog-request, query), header excluded. Far above a real query
/// (a few hundred bytes), far below the 4 MiB a batch may need: a peer cannot make a provider
/// buffer more than this per stream.
pub const MAX_REQUEST_FRAME: usize = 64 * 1024;
/// A dataset id is a `[a-z0-9-]` token of at most 64 bytes (see the catalog's ids).
pub const MAX_DATASET: usize = 64;
/// A purpose is a token of at most 64 bytes, like a dataset id.
pub const MAX_PURPOSE: usize = 64;
/// Filters per query: one per field at most makes sense, and catalogs have a few dozen fields.
pub const MAX_FILTERS: usize = 32;
/// A filter's field name: field names are short identifiers.
pub const MAX_FILTER_FIELD: usize = 64;
/// A filter's value: equality on an id, a name, a date or a region path; 1 KiB is ample.
pub const MAX_FILTER_VALUE: usize = 1024;
/// `limit` must fit the sources' signed 64-bit `LIMIT`; larger values are refused up front.
pub const MAX_LIMIT: u64 = i64::MAX as u64;
/// A node id: a 63-byte department, `@`, and a region path of at most 4 labels of 63 bytes.
pub const MAX_NODE_ID: usize = 63 + 1 + 4 * 63 + 3;
/// The hello's software string is informational (`fedgate 0.1.0`); 128 bytes is plenty.
pub const MAX_SOFTWARE: usize = 128;

/// A referral's free text (subject, instructions, reason, notes, result, feedback, reference):
/// a case handed over is described in a few paragraphs; the record itself is the case.
pub const MAX_REFERRAL_TEXT: usize = 8 * 1024;
/// A signature in hex: an ECDSA P-256 signature is at most 72 bytes DER, 64 fixed.
pub const MAX_SIGNATURE: usize = 2 * 72;

/// Directories a `directory-offer` may list: one per scope, and a federation has one root
/// directory plus one per region CA that signs its own (a city's districts and a few more);
/// at this cap and [`MAX_SCOPE`] an offer still fits one request frame.
pub const MAX_DIRECTORY_SCOPES: usize = 128;
/// A scope in a `directory-offer` is a region path: 4 labels of 63 bytes and their dots.
pub const MAX_SCOPE: usize = 4 * 63 + 3;

/// Concurrent request streams a peer may have open on one connection. A gateway asks a few
/// queries at a time; this bounds what one connection can make a provider hold at once.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 32;
/// Live connections from one peer node. A gateway keeps one cached connection per peer; a few
/// more cover restarts and races.
pub const MAX_CONNECTIONS_PER_PEER: usize = 4;
/// Live peer connections in total, whoever they are from.
pub const MAX_CONNECTIONS: usize = 512;
/// Request bytes buffered (not yet decoded) on one connection at once: a few maximal requests.
pub const CONNECTION_REQUEST_BUDGET: usize = 4 * (MAX_REQUEST_FRAME + 4);
/// Request bytes buffered on the whole node at once: keeps every peer together (even at the
/// connection cap) within a fixed memory figure.
pub const NODE_REQUEST_BUDGET: usize = 16 * 1024 * 1024;
/// How long a peer may take from opening a stream to having sent its whole request. A real
/// request is one small frame sent at once; a stream that trickles bytes is an attack.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A request that breaks a cap. Oversized values appear only as length and digest.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RequestError {
    /// A string is longer than its cap.
    #[error("{field} is {len} bytes (sha256 {sha256}); the limit is {max}")]
    TooLong {
        /// Which field (`dataset`, `filters[2].value`, …).
        field: String,
        /// Its length in bytes.
        len: usize,
        /// The cap.
        max: usize,
        /// SHA-256 (hex) of the value, so an auditor can match it without storing it.
        sha256: String,
    },
    /// A list has more items than its cap.
    #[error("{field} has {count} items; the limit is {max}")]
    TooMany {
        /// Which list.
        field: &'static str,
        /// Its length.
        count: usize,
        /// The cap.
        max: usize,
    },
    /// `limit` exceeds [`MAX_LIMIT`].
    #[error("limit {limit} is larger than the largest allowed, {MAX_LIMIT}")]
    Limit {
        /// The requested limit.
        limit: u64,
    },
    /// The request frame is larger than [`MAX_REQUEST_FRAME`].
    #[error("request frame of {len} bytes exceeds the {MAX_REQUEST_FRAME}-byte request limit")]
    Frame {
        /// Its declared or received length.
        len: usize,
    },
}

/// SHA-256 (hex) of `bytes`: how an oversized value is recorded instead of the value.
pub fn sha256_hex(bytes: &[u8]) -> String {
    fedgate_catalog::hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// `<N bytes, sha256 HEX>`: the stand-in for a value too large to record.
pub fn fingerprint(bytes: &[u8]) -> String {
    format!("<{} bytes, sha256 {}>", bytes.len(), sha256_hex(bytes))
}

fn text(field: impl Into<String>, value: &str, max: usize) -> Result<(), RequestError> {
    if value.len() <= max {
        return Ok(());
    }
    Err(RequestError::TooLong {
        field: field.into(),
        len: value.len(),
        max,
        sha256: sha256_hex(value.as_bytes()),
    })
}

/// Checks a decoded request against every cap. Messages that are not requests pass: whether
/// they are acceptable is the dispatcher's question, not a size question.
pub fn check_request(msg: &Message) -> Result<(), RequestError> {
    match msg {
        Message::Hello { node, software, .. } => {
            text("hello.node", node, MAX_NODE_ID)?;
            text("hello.software", software, MAX_SOFTWARE)
        }
        Message::EventsRequest { exchange, dataset, purpose, filters, .. } => {
            text("exchange", exchange, 32)?;
            check_asked(dataset, purpose, filters)
        }
        Message::SharingRequest { exchange, dataset, purpose, fields, reason, signature, .. } => {
            text("exchange", exchange, 32)?;
            check_asked(dataset, purpose, &[])?;
            text("reason", reason, crate::governance::request::MAX_REASON)?;
            text("signature", signature, MAX_SIGNATURE)?;
            let max = crate::governance::request::MAX_FIELDS;
            if fields.len() > max {
                return Err(RequestError::TooMany { field: "fields", count: fields.len(), max });
            }
            fields.iter().enumerate().try_for_each(|(i, f)| text(format!("fields[{i}]"), f, MAX_FILTER_FIELD))
        }
        Message::Objection { exchange, dataset, purpose, key, field, reason, proposed, signature } => {
            use crate::governance::objection::{MAX_REASON, MAX_VALUE};
            text("exchange", exchange, 32)?;
            check_asked(dataset, purpose, &[])?;
            text("key", key, MAX_VALUE)?;
            text("field", field, MAX_FILTER_FIELD)?;
            text("reason", reason, MAX_REASON)?;
            text("signature", signature, MAX_SIGNATURE)?;
            proposed.as_deref().map_or(Ok(()), |p| text("proposed", p, MAX_VALUE))
        }
        Message::DirectoryOffer { have } => {
            if have.len() > MAX_DIRECTORY_SCOPES {
                return Err(RequestError::TooMany {
                    field: "have",
                    count: have.len(),
                    max: MAX_DIRECTORY_SCOPES,
                });
            }
            have.iter()
                .enumerate()
                .try_for_each(|(i, (scope, _))| text(format!("have[{i}].scope"), scope, MAX_SCOPE))
        }
        Message::Query { dataset, purpose, filters, limit, exchange } => {
            if let Some(x) = exchange {
                text("exchange", x, 32)?;
            }
            check_asked(dataset, purpose, filters)?;
            match limit {
                Some(l) if *l > MAX_LIMIT => Err(RequestError::Limit { limit: *l }),
                _ => Ok(()),
            }
        }
        Message::Referral { exchange, step, signature, .. } => {
            text("exchange", exchange, 32)?;
            text("signature", signature, 512)?;
            check_step(step)
        }
        _ => Ok(()),
    }
}

/// Every free-text field of a referral step within [`MAX_REFERRAL_TEXT`].
fn check_step(step: &super::referral::Step) -> Result<(), RequestError> {
    use super::referral::Step;
    let t = |field: &str, v: &str| text(format!("{}.{field}", step.name()), v, MAX_REFERRAL_TEXT);
    match step {
        Step::Send { reference, subject, instructions, parent, .. } => {
            t("reference", reference)?;
            t("subject", subject)?;
            t("instructions", instructions)?;
            parent.as_deref().map_or(Ok(()), |p| text("send.parent", p, 32))
        }
        Step::Return { reason } | Step::Reopen { reason } => t("reason", reason),
        Step::Update { notes } => t("notes", notes),
        Step::Forward { to, child } => {
            text("forward.to", to, MAX_NODE_ID)?;
            text("forward.child", child, 32)
        }
        Step::Resolve { result, feedback } => {
            t("result", result)?;
            t("feedback", feedback)
        }
        Step::Receive | Step::Accept | Step::Close => Ok(()),
    }
}

/// The caps a query and a subscription's request share.
fn check_asked(dataset: &str, purpose: &str, filters: &[(String, String)]) -> Result<(), RequestError> {
    text("dataset", dataset, MAX_DATASET)?;
    text("purpose", purpose, MAX_PURPOSE)?;
    if filters.len() > MAX_FILTERS {
        return Err(RequestError::TooMany { field: "filters", count: filters.len(), max: MAX_FILTERS });
    }
    for (i, (name, value)) in filters.iter().enumerate() {
        text(format!("filters[{i}].field"), name, MAX_FILTER_FIELD)?;
        text(format!("filters[{i}].value"), value, MAX_FILTER_VALUE)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(dataset: &str, filters: Vec<(String, String)>, limit: Option<u64>) -> Message {
        Message::Query {
            dataset: dataset.into(),
            purpose: "statistics".into(),
            filters,
            limit,
            exchange: None,
        }
    }

    #[test]
    fn sharing_requests_are_capped_field_by_field() {
        let req = |reason: String, fields: Vec<String>| Message::SharingRequest {
            exchange: "0".repeat(32),
            dataset: "ds".into(),
            purpose: "audit".into(),
            fields,
            until: None,
            reason,
            signature: "00".into(),
        };
        assert_eq!(check_request(&req("why".into(), vec![])), Ok(()));
        let long = "r".repeat(crate::governance::request::MAX_REASON + 1);
        assert!(
            matches!(check_request(&req(long, vec![])), Err(RequestError::TooLong { ref field, .. }) if field == "reason")
        );
        let many = (0..=crate::governance::request::MAX_FIELDS).map(|i| format!("f{i}")).collect();
        assert!(matches!(
            check_request(&req("why".into(), many)),
            Err(RequestError::TooMany { field: "fields", .. })
        ));
        let wide = vec!["f".repeat(MAX_FILTER_FIELD + 1)];
        assert!(
            matches!(check_request(&req("why".into(), wide)), Err(RequestError::TooLong { ref field, .. }) if field == "fields[0]")
        );
    }

    #[test]
    fn caps_name_the_field_and_never_echo_the_value() {
        let huge = "d".repeat(1_100_000);
        let err = check_request(&query(&huge, vec![], None)).unwrap_err();
        let shown = err.to_string();
        assert!(shown.starts_with("dataset is 1100000 bytes (sha256 "), "{shown}");
        assert!(shown.len() < 200, "the value leaked into the message: {} bytes", shown.len());

        let f = vec![("kind".to_string(), "v".repeat(MAX_FILTER_VALUE + 1))];
        let err = check_request(&query("ds", f, None)).unwrap_err();
        assert!(matches!(err, RequestError::TooLong { ref field, .. } if field == "filters[0].value"));

        let many = (0..=MAX_FILTERS).map(|i| (format!("f{i}"), "v".into())).collect();
        assert_eq!(
            check_request(&query("ds", many, None)),
            Err(RequestError::TooMany { field: "filters", count: MAX_FILTERS + 1, max: MAX_FILTERS })
        );
    }

    #[test]
    fn limit_must_fit_a_signed_64_bit_sql_limit() {
        assert!(check_request(&query("ds", vec![], Some(MAX_LIMIT))).is_ok());
        assert_eq!(
            check_request(&query("ds", vec![], Some(MAX_LIMIT + 1))),
            Err(RequestError::Limit { limit: MAX_LIMIT + 1 })
        );
    }

    #[test]
    fn values_at_their_caps_pass() {
        let f = vec![("f".repeat(MAX_FILTER_FIELD), "v".repeat(MAX_FILTER_VALUE))];
        assert!(check_request(&query(&"d".repeat(MAX_DATASET), f, Some(1))).is_ok());
        let hello = Message::Hello {
            version: 1,
            node: "n".repeat(MAX_NODE_ID),
            software: "s".repeat(MAX_SOFTWARE + 1),
        };
        assert!(
            matches!(check_request(&hello), Err(RequestError::TooLong { ref field, .. }) if field == "hello.software")
        );
    }

    #[test]
    fn directory_offers_are_capped() {
        let offer = |n: usize, len: usize| Message::DirectoryOffer { have: vec![("w".repeat(len), 1); n] };
        assert!(check_request(&offer(MAX_DIRECTORY_SCOPES, MAX_SCOPE)).is_ok());
        assert!(matches!(
            check_request(&offer(MAX_DIRECTORY_SCOPES + 1, 4)),
            Err(RequestError::TooMany { .. })
        ));
        assert!(
            matches!(check_request(&offer(1, MAX_SCOPE + 1)), Err(RequestError::TooLong { ref field, .. }) if field == "have[0].scope")
        );
        // The largest offer still fits one request frame.
        assert!(crate::wire::encode(&offer(MAX_DIRECTORY_SCOPES, MAX_SCOPE)).len() <= MAX_REQUEST_FRAME);
    }

    #[test]
    fn a_maximal_valid_query_fits_the_request_frame() {
        let filters =
            (0..MAX_FILTERS).map(|_| ("f".repeat(MAX_FILTER_FIELD), "v".repeat(MAX_FILTER_VALUE))).collect();
        let q = Message::Query {
            dataset: "d".repeat(MAX_DATASET),
            purpose: "p".repeat(MAX_PURPOSE),
            filters,
            limit: Some(MAX_LIMIT),
            exchange: Some("f".repeat(32)),
        };
        assert!(super::super::encode(&q).len() - 4 <= MAX_REQUEST_FRAME);
    }
}
