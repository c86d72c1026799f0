//! Errors by blame, from the wire to HTTP.
//!
//! A failure keeps its class on the way out: a policy denial, a provider's typed error
//! ([`crate::wire::ErrorCode`]), a link failure ([`crate::link::LinkError`]), a transfer that
//! broke or did not verify ([`crate::exchange::ExchangeError`]) and a node that cannot act
//! ([`NodeError`]) each convert with `From` into one [`ApiCode`] (a leaf module, so the
//! exchange's audit entries use it too), the `code` of the local API's Error JSON, and
//! [`ApiCode::status`] gives its HTTP status from its one table. The CLI reads the code back
//! ([`ApiCode::parse`]) and picks its exit status from it, so a timeout is never told as bad
//! input and an engine failure never as a denial.
//!
//! The typed diagnostics of the files a node loads ([`CatalogError`], [`GrantsError`]) live
//! with the loaders in [`crate::state`] (re-exported here), so they reach `fedgate check` and
//! the log as the located problems they are, and the loaders need nothing from this table.

pub use crate::api_code::ApiCode;
use crate::state::NodeError;
pub use crate::state::{CatalogError, GrantsError};

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
    use crate::exchange::ExchangeError;
    use crate::exchange::Wait;
    use crate::link::LinkError;
    use crate::refusal::Refusal;
    use crate::wire::ErrorCode;
    use axum::http::StatusCode;
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
                ExchangeError::Remote {
                    peer: who(),
                    code: ErrorCode::QuotaExceeded,
                    message: "q".into(),
                    witness: None,
                },
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
