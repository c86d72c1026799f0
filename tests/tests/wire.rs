//! A hostile federation member at the wire (issue 11, items 1, 2 and 8): oversized requests,
//! stalled streams, connection floods and protocol conformance, against real gateways.

mod common;

use std::time::{Duration, Instant};

use ciborium::Value;
use common::*;
use fedgate_audit::{self as audit, AuditKeys, Kind};
use fedgate_certs::tls::FederationVerifier;
use fedgate_certs::TrustStore;
use fedgate_gateway::client::Client;
use fedgate_gateway::config::{self, Config};
use fedgate_gateway::exchange::ExchangeError;
use fedgate_gateway::link::{self, Link, LinkError, PeerConnection};
use fedgate_gateway::node::RunningNode;
use fedgate_gateway::quic::Transfer;
use fedgate_gateway::wire::limits::{
    fingerprint, CONNECTION_REQUEST_BUDGET, MAX_CONNECTIONS_PER_PEER, MAX_REQUEST_FRAME,
    MAX_STREAMS_PER_CONNECTION, REQUEST_TIMEOUT,
};
use fedgate_gateway::wire::{ErrorCode, Message};

const PROVIDER: &str = "police@wuxi.liangxi";
const GRANTS: &str = r#"
[[grant]]
id = "centre-reads"
to = "mediation-center@wuxi"
datasets = ["incidents"]
purposes = ["dispute-mediation"]
clearance = 4
"#;

async fn provider(fed: &Federation) -> RunningNode {
    let cat = fed.file("police.catalog.toml", &dataset("incidents", PROVIDER, "conditional"));
    let grants = fed.file("police.grants.toml", GRANTS);
    let sources = fed.sqlite_sources(&["incidents"]);
    let extra = format!("catalog = [{:?}]\ngrants = [{:?}]\n{sources}", path_str(&cat), path_str(&grants));
    fed.start_with(PROVIDER, &extra).await
}

/// A bare link presenting a valid federation certificate for `node`: the attacker's client.
fn member(fed: &Federation, node: &str) -> Link {
    let issued = fed.issue(node);
    let trust = TrustStore::new(fed.root.root().clone(), &[]).unwrap();
    Link::bind(
        id(node),
        "127.0.0.1:0".parse().unwrap(),
        FederationVerifier::new(trust),
        issued.chain.clone(),
        key_of(&issued),
    )
    .unwrap()
}

async fn dial(from: &Link, to: &RunningNode) -> Result<PeerConnection, LinkError> {
    from.connection(&to.config().node, to.quic_addr().unwrap()).await
}

/// Sends raw bytes as one request stream and reads the one answer.
async fn raw(pc: &PeerConnection, bytes: &[u8]) -> Message {
    let (mut send, mut recv) = pc.conn.open_bi().await.unwrap();
    let _ = send.write_all(bytes).await;
    let _ = send.finish();
    link::read_frame(&mut recv, "provider").await.unwrap().expect("an answer")
}

fn frame_of(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

fn envelope(v: u64, m: Value) -> Vec<u8> {
    let env =
        Value::Map(vec![(Value::Text("v".into()), Value::Integer(v.into())), (Value::Text("m".into()), m)]);
    let mut body = Vec::new();
    ciborium::ser::into_writer(&env, &mut body).unwrap();
    body
}

fn code_of(m: &Message) -> ErrorCode {
    match m {
        Message::Error { code, .. } => *code,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn entries(cfg: &Config) -> Vec<audit::Entry> {
    let sealer = AuditKeys::load_reader(&cfg.audit_key).unwrap();
    let mut all = Vec::new();
    audit::entries(&cfg.audit_dir, &sealer, |e| {
        all.push(e);
        Ok(())
    })
    .unwrap();
    all
}

fn verify(cfg: &Config) -> Result<u64, String> {
    let sealer = AuditKeys::load_reader(&cfg.audit_key).map_err(|e| e.to_string())?;
    let v = audit::read_verifier(&cfg.audit_dir.join("signing.pub")).map_err(|e| e.to_string())?;
    audit::verify(&cfg.audit_dir, &v, Some(&sealer), |_| {}).map(|r| r.entries).map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r11_1_a_megabyte_dataset_name_is_refused_and_both_gateways_restart() {
    let fed = Federation::new();
    let police = provider(&fed).await;
    let centre = fed.start_with("mediation-center@wuxi", &peer_entry(&police)).await;
    let huge = "d".repeat(1_100_000);

    // Through the consumer's local API, as an application would send it: the API refuses a body
    // over its own cap before anything reaches the wire or either audit log.
    let mut cfg = centre.config().clone();
    cfg.api = centre.api_addr();
    let api = |dataset: String| {
        let cfg = cfg.clone();
        let body = serde_json::json!({"peer": PROVIDER, "dataset": dataset, "purpose": "dispute-mediation"});
        tokio::task::spawn_blocking(move || match Client::new(&cfg).unwrap().post_lines("/v1/query", &body) {
            Ok(_) => panic!("the oversized query was accepted"),
            Err(e) => e.to_string(),
        })
    };
    let err = api(huge.clone()).await.unwrap();
    assert!(err.contains("the request body is over 65536 bytes"), "{err}");
    // Under the API's cap, over the wire's dataset cap: the provider refuses it, and the
    // consumer's audit records the value as length and digest.
    let mid = "m".repeat(60_000);
    let err = api(mid.clone()).await.unwrap();
    assert!(err.contains("dataset is 60000 bytes (sha256 "), "{err}");

    // A member that skips the API and sends the megabyte straight over QUIC.
    let pc = centre.peer(&id(PROVIDER)).await.unwrap();
    let err = Transfer::start(&pc, &centre.config().node, &huge, "dispute-mediation", vec![], None)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("request frame of 1100") && err.contains("65536-byte request limit"), "{err}");

    // Under the frame cap but over the dataset cap: refused with the field named, and the
    // provider's audit records the value as length and digest.
    let long = "x".repeat(5000);
    let err = Transfer::start(&pc, &centre.config().node, &long, "dispute-mediation", vec![], None)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&err, ExchangeError::Remote { code: ErrorCode::BadRequest, message, .. } if message.starts_with("dataset is 5000 bytes (sha256 ")),
        "{err}"
    );
    let err =
        Transfer::start(&pc, &centre.config().node, "incidents", "dispute-mediation", vec![], Some(u64::MAX))
            .await
            .err()
            .unwrap();
    assert!(matches!(&err, ExchangeError::Remote { code: ErrorCode::BadRequest, .. }), "limit: {err}");

    let (pcfg, ccfg) = (police.config().clone(), centre.config().clone());
    police.shutdown().await;
    centre.shutdown().await;
    assert!(verify(&pcfg).is_ok(), "provider log: {:?}", verify(&pcfg));
    assert!(verify(&ccfg).is_ok(), "consumer log: {:?}", verify(&ccfg));
    let provider_entries = entries(&pcfg);
    let refused: Vec<_> =
        provider_entries.iter().filter(|e| e.decision.as_deref() == Some("error")).collect();
    assert_eq!(refused.len(), 4, "every refusal is audited: {refused:?}");
    assert_eq!(refused[0].dataset, Some(fingerprint(mid.as_bytes())));
    assert!(refused[1].reason.as_deref().unwrap().contains("bad-request: request frame of 1100"));
    assert_eq!(refused[2].dataset, Some(fingerprint(long.as_bytes())));
    assert_eq!(refused[3].detail.as_deref(), Some(&*format!("limit {}", u64::MAX)));
    let consumer_refusals: Vec<_> =
        entries(&ccfg).into_iter().filter(|e| e.kind == Some(Kind::RequestOut)).collect();
    assert_eq!(consumer_refusals[0].dataset, Some(fingerprint(mid.as_bytes())));

    // Both restart on their logs.
    let police = RunningNode::start(config::load(&pcfg.path).unwrap()).await.expect("provider restarts");
    let centre = RunningNode::start(config::load(&ccfg.path).unwrap()).await.expect("consumer restarts");
    police.shutdown().await;
    centre.shutdown().await;
    assert!(verify(&pcfg).is_ok() && verify(&ccfg).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r11_8_unsupported_versus_malformed_at_the_wire() {
    let fed = Federation::new();
    let police = provider(&fed).await;
    let mallory = member(&fed, "grid@wuxi.liangxi.chongan");
    let pc = dial(&mallory, &police).await.unwrap();
    let unsupported = [
        frame_of(&envelope(2, Value::Text("catalog-request".into()))),
        frame_of(&envelope(1, Value::Text("subscribe".into()))),
        frame_of(&envelope(1, Value::Map(vec![(Value::Text("no-such-kind".into()), Value::Null)]))),
    ];
    for bytes in unsupported {
        assert_eq!(code_of(&raw(&pc, &bytes).await), ErrorCode::Unsupported);
    }
    let hello = Message::Hello { version: 9, node: "grid@wuxi.liangxi.chongan".into(), software: "x".into() };
    assert_eq!(code_of(&raw(&pc, &fedgate_gateway::wire::encode(&hello)).await), ErrorCode::Unsupported);

    // One CBOR value and nothing else: trailing bytes in the body or on the stream are refused.
    let mut body = envelope(1, Value::Text("catalog-request".into()));
    assert!(matches!(raw(&pc, &frame_of(&body)).await, Message::Catalog { .. }));
    body.push(0xf6);
    assert_eq!(code_of(&raw(&pc, &frame_of(&body)).await), ErrorCode::Malformed);
    let mut stream = fedgate_gateway::wire::encode(&Message::CatalogRequest);
    stream.push(0);
    assert_eq!(code_of(&raw(&pc, &stream).await), ErrorCode::Malformed);
    assert_eq!(code_of(&raw(&pc, &[0, 0, 0, 3, 0xa1]).await), ErrorCode::Malformed);

    // A limit beyond i64::MAX is a bad request up front, not a failure after the header.
    let q = |limit: u64| Message::Query {
        dataset: "incidents".into(),
        purpose: "dispute-mediation".into(),
        filters: vec![],
        limit: Some(limit),
        exchange: None,
    };
    assert_eq!(code_of(&raw(&pc, &fedgate_gateway::wire::encode(&q(u64::MAX))).await), ErrorCode::BadRequest);
    // Too many filters, named.
    let many = Message::Query {
        dataset: "incidents".into(),
        purpose: "dispute-mediation".into(),
        filters: (0..100).map(|i| (format!("f{i}"), "v".into())).collect(),
        limit: None,
        exchange: None,
    };
    let answer = raw(&pc, &fedgate_gateway::wire::encode(&many)).await;
    assert!(
        matches!(&answer, Message::Error { code: ErrorCode::BadRequest, message, .. } if message == "filters has 100 items; the limit is 32"),
        "{answer:?}"
    );
    police.shutdown().await;
}

/// Opens `streams` request streams on `pc`, each sending a maximal request frame but its last
/// byte, and never finishing: the stalled-request attack.
fn stall(pc: &PeerConnection, streams: usize) -> Vec<tokio::task::JoinHandle<Option<quinn::RecvStream>>> {
    (0..streams)
        .map(|_| {
            let conn = pc.conn.clone();
            tokio::spawn(async move {
                let (mut send, recv) = conn.open_bi().await.ok()?;
                let mut bytes = (MAX_REQUEST_FRAME as u32).to_be_bytes().to_vec();
                bytes.resize(4 + MAX_REQUEST_FRAME - 1, 0xa0);
                send.write_all(&bytes).await.ok()?;
                // Hold the stream open (neither finished nor reset) until the test ends.
                std::mem::forget(send);
                Some(recv)
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r11_2_stalled_maximal_requests_stay_within_the_request_budget() {
    let fed = Federation::new();
    let police = provider(&fed).await;
    let centre = fed.start_with("mediation-center@wuxi", &peer_entry(&police)).await;
    let budget = &police.shared().admission;
    let started = Instant::now();
    // Three peers, 256 streams each.
    let mut attackers = Vec::new();
    for node in ["grid@wuxi.liangxi.chongan", "court@wuxi.xinwu", "petition@wuxi"] {
        let link = member(&fed, node);
        let pc = dial(&link, &police).await.unwrap();
        let tasks = stall(&pc, 256);
        attackers.push((link, pc, tasks));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let held = budget.budget().used();
    assert!(held > 0, "the attack buffered nothing: it did not reach the provider");
    assert!(
        budget.budget().peak() <= 3 * CONNECTION_REQUEST_BUDGET,
        "peak {} bytes buffered for 3 connections",
        budget.budget().peak()
    );
    // The provider keeps serving others meanwhile.
    let cat = centre.shared().peer_catalog(&id(PROVIDER)).await.unwrap();
    assert_eq!(cat.datasets().len(), 1);

    // Stalled streams are answered within the request timeout, not held for long.
    let (_, _, tasks) = &mut attackers[0];
    // Streams over the budget are answered `busy` at once (their write may fail, or not); the
    // stalled ones within the request timeout.
    let mut answer = None;
    while answer.is_none() {
        let at = tasks.iter().position(|t| t.is_finished()).expect("a stream was sent whole and held");
        let Some(mut recv) = tasks.remove(at).await.unwrap() else { continue };
        match link::read_frame(&mut recv, "provider").await.unwrap().unwrap() {
            Message::Error { code: ErrorCode::Busy, .. } => continue,
            other => answer = Some(other),
        }
    }
    let answer = answer.unwrap_or_else(|| unreachable!());
    assert!(
        matches!(&answer, Message::Error { code: ErrorCode::RequestTimeout, message, .. } if message.contains("no whole request within 5s")),
        "{answer:?}"
    );
    assert!(started.elapsed() < REQUEST_TIMEOUT + Duration::from_secs(3), "{:?}", started.elapsed());
    let opened: usize = {
        let mut n = 1;
        for (_, _, tasks) in &attackers {
            n += tasks.iter().filter(|t| t.is_finished()).count();
        }
        n
    };
    assert!(opened <= 3 * 2 * MAX_STREAMS_PER_CONNECTION as usize, "{opened} streams opened");

    // Closing the attackers' connections gives every byte back.
    for (link, pc, tasks) in attackers {
        pc.conn.close(0u32.into(), b"done");
        tasks.into_iter().for_each(|t| t.abort());
        link.shutdown().await;
    }
    for _ in 0..50 {
        if budget.budget().used() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(budget.budget().used(), 0);
    police.shutdown().await;
    centre.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r11_2_connections_per_peer_are_capped() {
    let fed = Federation::new();
    let police = provider(&fed).await;
    let node = "grid@wuxi.liangxi.chongan";
    let mut held = Vec::new();
    for _ in 0..MAX_CONNECTIONS_PER_PEER {
        let l = member(&fed, node);
        let pc = dial(&l, &police).await.unwrap();
        held.push((l, pc));
    }
    let grid = id(node);
    assert_eq!(police.shared().admission.connections(&grid), MAX_CONNECTIONS_PER_PEER);
    // One more from the same peer (as after its restart, with its old connections not yet timed
    // out) replaces its oldest: the peer is served, and still holds no more than the cap.
    let extra = member(&fed, node);
    let newest = dial(&extra, &police).await;
    assert!(newest.is_ok(), "{:?}", newest.err().map(|e| e.to_string()));
    let (_, oldest) = &held[0];
    let closed = tokio::time::timeout(Duration::from_secs(5), oldest.conn.closed()).await.unwrap();
    assert!(closed.to_string().contains("replaced by a newer connection"), "{closed}");
    let mut live = usize::MAX;
    for _ in 0..50 {
        live = police.shared().admission.connections(&grid);
        if live == MAX_CONNECTIONS_PER_PEER {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(live, MAX_CONNECTIONS_PER_PEER);
    // Another peer is not affected.
    assert!(dial(&member(&fed, "court@wuxi.xinwu"), &police).await.is_ok());
    police.shutdown().await;
}
