//! Errors by blame, from the wire to HTTP.
//!
//! A failure keeps its class on the way out: a policy denial, a provider's typed error
//! ([`ErrorCode`]), a link failure ([`LinkError`]), a transfer that broke or did not verify
//! ([`ExchangeError`]) and a node that cannot act ([`NodeError`]) each convert with `From` into
//! one [`ApiCode`], the `code` of the local API's Error JSON, and [`ApiCode::status`] gives its
//! HTTP status from the one table in [`ApiCode::entry`]. The CLI reads the code back
//! ([`ApiCode::parse`]) and picks its exit status from it, so a timeout is never told as bad
//! input and an engine failure never as a denial.
//!
//! The typed diagnostics of the files a node loads ([`CatalogError`], [`GrantsError`]) live
//! with the loaders in [`crate::state`] (re-exported here), so they reach `fedgate check` and
//! the log as the located problems they are, and the loaders need nothing from this table.

use std::fmt;

use axum::http::StatusCode;

use crate::exchange::ExchangeError;
use crate::link::LinkError;
use crate::state::NodeError;
pub use crate::state::{CatalogError, GrantsError};
use crate::wire::ErrorCode;

/// The `code` of every error the local API answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ApiCode {
    /// The request to the API is malformed: a bad body, path or parameter (or the provider
    /// found a value over its caps).
    BadRequest,
    /// No or the wrong bearer token.
    Unauthorized,
    /// No such API path.
    NotFound,
    /// The path does not take that method.
    MethodNotAllowed,
    /// The request body is over the API's cap.
    TooLarge,
    /// The request body is not sent as JSON.
    UnsupportedMediaType,
    /// The peer named is not in this node's config.
    UnknownPeer,
    /// The provider's policy refuses the request.
    Denied,
    /// The provider has no such dataset (or does not share it).
    UnknownDataset,
    /// A filter names a field the asker does not receive in clear, or has a bad value.
    BadFilter,
    /// The grant's daily quota is used up.
    QuotaExceeded,
    /// The provider is at a resource limit; retry later.
    Busy,
    /// The provider's data source cannot be read now.
    SourceUnavailable,
    /// The peer cannot be reached (connection failed or closed).
    PeerUnavailable,
    /// This gateway is shutting down; the same request succeeds once it is back.
    ShuttingDown,
    /// The peer refused this node's certificate.
    CertificateRefused,
    /// This node refused the peer's certificate (revoked, expired, out of region, ...).
    PeerCertificateRejected,
    /// The peer did not connect or answer in time (or said our request did not arrive in time).
    PeerTimeout,
    /// The peer broke the protocol or failed on its side (`internal`, `malformed`, ...).
    PeerError,
    /// The transfer broke off before its signed trailer.
    Incomplete,
    /// The trailer's count, digest or signature does not match what arrived.
    Unverified,
    /// A failure inside this node.
    Internal,
}

impl ApiCode {
    /// Every code, in the order of the table.
    pub const ALL: [ApiCode; 22] = [
        ApiCode::BadRequest,
        ApiCode::Unauthorized,
        ApiCode::NotFound,
        ApiCode::MethodNotAllowed,
        ApiCode::TooLarge,
        ApiCode::UnsupportedMediaType,
        ApiCode::UnknownPeer,
        ApiCode::Denied,
        ApiCode::UnknownDataset,
        ApiCode::BadFilter,
        ApiCode::QuotaExceeded,
        ApiCode::Busy,
        ApiCode::SourceUnavailable,
        ApiCode::PeerUnavailable,
        ApiCode::ShuttingDown,
        ApiCode::CertificateRefused,
        ApiCode::PeerCertificateRejected,
        ApiCode::PeerTimeout,
        ApiCode::PeerError,
        ApiCode::Incomplete,
        ApiCode::Unverified,
        ApiCode::Internal,
    ];

    /// The table: the code as the Error JSON spells it, and its HTTP status.
    fn entry(self) -> (&'static str, StatusCode) {
        match self {
            ApiCode::BadRequest => ("bad-request", StatusCode::BAD_REQUEST),
            ApiCode::Unauthorized => ("unauthorized", StatusCode::UNAUTHORIZED),
            ApiCode::NotFound => ("not-found", StatusCode::NOT_FOUND),
            ApiCode::MethodNotAllowed => ("method-not-allowed", StatusCode::METHOD_NOT_ALLOWED),
            ApiCode::TooLarge => ("too-large", StatusCode::PAYLOAD_TOO_LARGE),
            ApiCode::UnsupportedMediaType => ("unsupported-media-type", StatusCode::UNSUPPORTED_MEDIA_TYPE),
            ApiCode::UnknownPeer => ("unknown-peer", StatusCode::NOT_FOUND),
            ApiCode::Denied => ("denied", StatusCode::FORBIDDEN),
            ApiCode::UnknownDataset => ("unknown-dataset", StatusCode::NOT_FOUND),
            ApiCode::BadFilter => ("bad-filter", StatusCode::BAD_REQUEST),
            ApiCode::QuotaExceeded => ("quota-exceeded", StatusCode::TOO_MANY_REQUESTS),
            ApiCode::Busy => ("busy", StatusCode::SERVICE_UNAVAILABLE),
            ApiCode::SourceUnavailable => ("source-unavailable", StatusCode::SERVICE_UNAVAILABLE),
            ApiCode::PeerUnavailable => ("peer-unavailable", StatusCode::BAD_GATEWAY),
            ApiCode::ShuttingDown => ("shutting-down", StatusCode::SERVICE_UNAVAILABLE),
            ApiCode::CertificateRefused => ("certificate-refused", StatusCode::BAD_GATEWAY),
            ApiCode::PeerCertificateRejected => ("peer-certificate-rejected", StatusCode::BAD_GATEWAY),
            ApiCode::PeerTimeout => ("peer-timeout", StatusCode::GATEWAY_TIMEOUT),
            ApiCode::PeerError => ("peer-error", StatusCode::BAD_GATEWAY),
            ApiCode::Incomplete => ("incomplete", StatusCode::BAD_GATEWAY),
            ApiCode::Unverified => ("unverified", StatusCode::BAD_GATEWAY),
            ApiCode::Internal => ("internal", StatusCode::INTERNAL_SERVER_ERROR),
        }
    }

    /// The code as the Error JSON and the metrics spell it (`peer-timeout`).
    pub fn as_str(self) -> &'static str {
        self.entry().0
    }

    /// The HTTP status an error with this code answers with.
    pub fn status(self) -> StatusCode {
        self.entry().1
    }

    /// The code an Error JSON names; `None` for a code this build does not know.
    pub fn parse(s: &str) -> Option<ApiCode> {
        ApiCode::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// True if and only if the same request may succeed later unchanged: the peer or its
    /// source is down, busy or slow. Scripts retry these; they do not retry a denial.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ApiCode::Busy
                | ApiCode::SourceUnavailable
                | ApiCode::PeerUnavailable
                | ApiCode::ShuttingDown
                | ApiCode::PeerTimeout
        )
    }
}

impl fmt::Display for ApiCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A provider's typed error, as the asker's API tells it. Codes that blame the asker's
/// request keep their class; codes that say the provider (or our own gateway's bytes) failed
/// are the peer's error, not the user's.
impl From<ErrorCode> for ApiCode {
    fn from(code: ErrorCode) -> ApiCode {
        match code {
            ErrorCode::Denied => ApiCode::Denied,
            ErrorCode::UnknownDataset => ApiCode::UnknownDataset,
            ErrorCode::BadFilter => ApiCode::BadFilter,
            ErrorCode::BadRequest => ApiCode::BadRequest,
            ErrorCode::QuotaExceeded => ApiCode::QuotaExceeded,
            ErrorCode::Busy => ApiCode::Busy,
            ErrorCode::SourceUnavailable => ApiCode::SourceUnavailable,
            ErrorCode::RequestTimeout => ApiCode::PeerTimeout,
            ErrorCode::Malformed
            | ErrorCode::Unsupported
            | ErrorCode::WrongIdentity
            | ErrorCode::Internal => ApiCode::PeerError,
        }
    }
}

impl From<&LinkError> for ApiCode {
    fn from(e: &LinkError) -> ApiCode {
        match e {
            LinkError::Setup { .. } => ApiCode::Internal,
            // A provider at its connection caps closes with `busy`: retry later, it is up.
            LinkError::Closed { code: Some(code), .. } => ApiCode::from(*code),
            LinkError::Connect { .. } | LinkError::Closed { code: None, .. } => ApiCode::PeerUnavailable,
            LinkError::Stopping { .. } => ApiCode::ShuttingDown,
            LinkError::Refused { .. } => ApiCode::CertificateRefused,
            LinkError::Rejected { .. } => ApiCode::PeerCertificateRejected,
            LinkError::Frame { .. } | LinkError::Protocol { .. } => ApiCode::PeerError,
            LinkError::Remote { code, .. } => ApiCode::from(*code),
            LinkError::Timeout { .. } => ApiCode::PeerTimeout,
        }
    }
}

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

impl From<&NodeError> for ApiCode {
    fn from(e: &NodeError) -> ApiCode {
        match e {
            NodeError::UnknownPeer(_) => ApiCode::UnknownPeer,
            NodeError::Link(l) => ApiCode::from(l),
            // Files, PKI, rules, audit and the API's own setup: this node's side, whatever the
            // request was.
            _ => ApiCode::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::Wait;
    use crate::refusal::Refusal;
    use fedgate_catalog::{Diagnostics, NodeId};
    use std::time::Duration;

    #[test]
    fn the_table_has_one_name_per_code_and_parses_back() {
        let mut names = std::collections::HashSet::new();
        for code in ApiCode::ALL {
            assert!(names.insert(code.as_str()), "{code:?} shares its name");
            assert_eq!(ApiCode::parse(code.as_str()), Some(code));
            assert!(code.status().is_client_error() || code.status().is_server_error(), "{code:?}");
        }
        assert_eq!(ApiCode::parse("no-such-code"), None);
    }

    /// Every wire code → API code → HTTP status, as docs/openapi.yaml lists them.
    #[test]
    fn each_wire_code_maps_to_its_api_code_and_status() {
        let table = [
            (ErrorCode::Malformed, "peer-error", 502),
            (ErrorCode::Unsupported, "peer-error", 502),
            (ErrorCode::WrongIdentity, "peer-error", 502),
            (ErrorCode::BadRequest, "bad-request", 400),
            (ErrorCode::RequestTimeout, "peer-timeout", 504),
            (ErrorCode::Denied, "denied", 403),
            (ErrorCode::UnknownDataset, "unknown-dataset", 404),
            (ErrorCode::BadFilter, "bad-filter", 400),
            (ErrorCode::SourceUnavailable, "source-unavailable", 503),
            (ErrorCode::QuotaExceeded, "quota-exceeded", 429),
            (ErrorCode::Busy, "busy", 503),
            (ErrorCode::Internal, "peer-error", 502),
        ];
        assert_eq!(table.len(), ErrorCode::ALL.len());
        for (wire, name, status) in table {
            let api = ApiCode::from(wire);
            assert_eq!((api.as_str(), api.status().as_u16()), (name, status), "{wire:?}");
        }
    }

    #[test]
    fn policy_denials_reach_http_as_denials_and_engine_failures_do_not() {
        use fedgate_policy::DenyReason as R;
        let api = |r: R| ApiCode::from(ErrorCode::from(&r));
        assert_eq!(api(R::NoGrant).status(), StatusCode::FORBIDDEN);
        assert_eq!(api(R::UnknownPurpose).status(), StatusCode::FORBIDDEN);
        assert_eq!(api(R::UnknownDataset).status(), StatusCode::NOT_FOUND);
        assert_eq!(api(R::NotShared), api(R::UnknownDataset), "a `none` dataset looks missing");
    }

    fn link_errors() -> Vec<(LinkError, &'static str, u16)> {
        let peer: NodeId = "court@wuxi.xinwu".parse().unwrap();
        let addr: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
        let who = || peer.to_string();
        vec![
            (LinkError::Setup { addr, why: "in use".into() }, "internal", 500),
            (LinkError::Connect { peer: peer.clone(), addr, why: "refused".into() }, "peer-unavailable", 502),
            (LinkError::Closed { peer: who(), reason: "bye".into(), code: None }, "peer-unavailable", 502),
            (LinkError::Stopping { peer: who() }, "shutting-down", 503),
            (
                LinkError::Closed {
                    peer: who(),
                    reason: "too many connections".into(),
                    code: Some(ErrorCode::Busy),
                },
                "busy",
                503,
            ),
            (
                LinkError::Refused { peer: who(), refusal: Refusal::Revoked, detail: String::new() },
                "certificate-refused",
                502,
            ),
            (
                LinkError::Rejected { peer: who(), error: fedgate_certs::PeerError::Revoked },
                "peer-certificate-rejected",
                502,
            ),
            (
                LinkError::Frame { peer: who(), error: crate::wire::FrameError::Trailing(1) },
                "peer-error",
                502,
            ),
            (LinkError::Protocol { peer: who(), why: "early end".into() }, "peer-error", 502),
            (LinkError::Timeout { peer: who(), after: Duration::from_secs(1) }, "peer-timeout", 504),
            (LinkError::Remote { peer: who(), code: ErrorCode::Denied, message: "no".into() }, "denied", 403),
        ]
    }

    #[test]
    fn each_link_error_maps_to_its_api_code_and_status() {
        for (e, name, status) in link_errors() {
            let api = ApiCode::from(&e);
            assert_eq!((api.as_str(), api.status().as_u16()), (name, status), "{e}");
        }
    }

    #[test]
    fn each_exchange_and_node_error_maps_to_its_api_code_and_status() {
        let who = || "court@wuxi.xinwu".to_owned();
        let cases = [
            (
                ExchangeError::Remote { peer: who(), code: ErrorCode::QuotaExceeded, message: "q".into() },
                "quota-exceeded",
                429,
            ),
            (ExchangeError::Incomplete { peer: who(), count: 3, why: "reset".into() }, "incomplete", 502),
            (ExchangeError::BadTrailer { peer: who(), why: "digest".into() }, "unverified", 502),
            (
                ExchangeError::TimedOut {
                    peer: who(),
                    waiting: Wait::FirstAnswer,
                    after: Duration::from_secs(1),
                },
                "peer-timeout",
                504,
            ),
        ];
        for (e, name, status) in cases {
            let api = ApiCode::from(&e);
            assert_eq!((api.as_str(), api.status().as_u16()), (name, status), "{e}");
        }
        for (l, name, _) in link_errors() {
            assert_eq!(ApiCode::from(&ExchangeError::Link(l)).as_str(), name);
        }
        let peer: NodeId = "court@wuxi.xinwu".parse().unwrap();
        assert_eq!(ApiCode::from(&NodeError::UnknownPeer(peer)).status(), StatusCode::NOT_FOUND);
        let rules = NodeError::Policy(GrantsError::Invalid(Diagnostics(vec![])));
        assert_eq!(ApiCode::from(&rules), ApiCode::Internal);
        for (l, name, _) in link_errors() {
            assert_eq!(ApiCode::from(&NodeError::Link(l)).as_str(), name);
        }
    }

    #[test]
    fn only_down_busy_or_slow_is_transient() {
        let transient: Vec<&str> =
            ApiCode::ALL.into_iter().filter(|c| c.is_transient()).map(ApiCode::as_str).collect();
        assert_eq!(
            transient,
            ["busy", "source-unavailable", "peer-unavailable", "shutting-down", "peer-timeout"]
        );
    }

    /// A node folder with `catalog.toml` and `grants.toml` as given.
    fn node_with(dir: &std::path::Path, catalog: &str, grants: &str) -> crate::config::Config {
        std::fs::write(dir.join("catalog.toml"), catalog).unwrap();
        std::fs::write(dir.join("grants.toml"), grants).unwrap();
        let text = "node = \"womens-federation@wuxi\"\nlisten = \"127.0.0.1:0\"\napi = \"127.0.0.1:0\"\n\
                    catalog = [\"catalog.toml\"]\ngrants = [\"grants.toml\"]\n\
                    [tls]\ncert = \"node.crt\"\nkey = \"node.key\"\ntrust = \"trust.crt\"\n";
        crate::config::parse(&dir.join("gateway.toml"), text).unwrap()
    }

    #[test]
    fn catalog_and_grant_problems_stay_typed_and_located_through_node_error() {
        let family = include_str!("../../testdata/family.catalog.toml");
        let t = tempfile::tempdir().unwrap();
        // A bad grade in the catalog: located, not a string.
        let cfg = node_with(t.path(), &family.replace("grade = 4", "grade = 9"), "");
        match crate::state::load_catalog(&cfg) {
            Err(NodeError::Catalog(CatalogError::Invalid(d))) => {
                assert!(
                    !d.0.is_empty() && d.0.iter().all(|p| p.file.ends_with("catalog.toml") && p.line > 0)
                );
            }
            other => panic!("{other:?}"),
        }
        // Another node's dataset: which one and whose.
        let cfg = node_with(
            t.path(),
            &family.replace("owner = \"womens-federation@wuxi\"", "owner = \"police@wuxi\""),
            "",
        );
        match crate::state::load_catalog(&cfg) {
            Err(NodeError::Catalog(CatalogError::Foreign { foreign, .. })) => {
                assert_eq!(foreign[0].0, "family-disputes");
                assert_eq!(foreign[0].1.to_string(), "police@wuxi");
            }
            other => panic!("{other:?}"),
        }
        // A grant naming a dataset the catalog lacks: located in the grant file.
        let grant = "[[grant]]\nid = \"g\"\nto = \"police@wuxi\"\ndatasets = [\"nope\"]\npurposes = [\"statistics\"]\nclearance = 1\n";
        let cfg = node_with(t.path(), family, grant);
        let catalog = crate::state::load_catalog(&cfg).unwrap();
        match crate::state::load_policy(&cfg, &catalog) {
            Err(e @ NodeError::Policy(GrantsError::Invalid(_))) => {
                let NodeError::Policy(g) = &e else { unreachable!() };
                let d = g.diagnostics().unwrap();
                assert!(d.0[0].file.ends_with("grants.toml") && d.0[0].message.contains("nope"), "{e}");
                assert_eq!(ApiCode::from(&e), ApiCode::Internal);
            }
            other => panic!("{other:?}"),
        }
        // A missing file names the file.
        std::fs::remove_file(t.path().join("grants.toml")).unwrap();
        let e = crate::state::load_policy(&cfg, &catalog).unwrap_err();
        assert!(
            matches!(&e, NodeError::Policy(GrantsError::Read { path, .. }) if path.ends_with("grants.toml")),
            "{e}"
        );
    }

    /// A connection the provider closed with one of the wire's codes keeps it, so a provider at
    /// its connection caps is `busy` (503), not unreachable.
    #[test]
    fn a_connection_closed_with_a_wire_code_keeps_it() {
        let close = |code: u32, reason: &'static [u8]| {
            quinn::ConnectionError::ApplicationClosed(quinn::ApplicationClose {
                error_code: quinn::VarInt::from_u32(code),
                reason: reason.to_vec().into(),
            })
        };
        let busy = crate::link::lost("p", close(ErrorCode::Busy.quic_code(), b"too many connections"));
        assert!(matches!(&busy, LinkError::Closed { code: Some(ErrorCode::Busy), .. }), "{busy:?}");
        assert_eq!(ApiCode::from(&busy), ApiCode::Busy);
        assert_eq!(busy.to_string(), "p closed the connection: too many connections");
        let shutdown = crate::link::lost("p", close(0, b"gateway shutting down"));
        assert_eq!(ApiCode::from(&shutdown), ApiCode::PeerUnavailable);
        let revoked = crate::link::lost("p", close(Refusal::Revoked.close_code(), b""));
        assert_eq!(ApiCode::from(&revoked), ApiCode::CertificateRefused);
    }
}
