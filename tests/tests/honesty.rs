//! Loud, exact failures between real gateways: a result cut short says so in its signed trailer,
//! and a provider's internals (paths, SQL, driver messages) never reach the consumer.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};

use common::*;
use fedgate_audit::{Entry, Kind};
use fedgate_gateway::client::{Client, ClientError};
use fedgate_gateway::exchange::ExchangeError;
use fedgate_gateway::node::RunningNode;
use fedgate_gateway::quic::Transfer;
use fedgate_gateway::wire::ErrorCode;

const PROVIDER: &str = "hotline12345@wuxi";

const GRANTS: &str = r#"
[[grant]]
id = "centre-quota"
to = "mediation-center@wuxi"
datasets = ["cases"]
purposes = ["dispute-mediation"]
clearance = 4
rows = "all"
quota = 3

[[grant]]
id = "grid-quota"
to = { department = "grid" }
datasets = ["cases"]
purposes = ["dispute-mediation"]
clearance = 1
rows = "all"
quota = 3

[[grant]]
id = "police-open"
to = { department = "police" }
datasets = ["cases"]
purposes = ["law-enforcement"]
clearance = 1
rows = "all"
"#;

/// Four matching rows: three in one community, one in another.
fn write_db(path: &Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "CREATE TABLE cases (case_id TEXT PRIMARY KEY, region TEXT, party_name TEXT);
         INSERT INTO cases VALUES ('C1', 'wuxi.liangxi.chongan.guangrui', '张三'),
                                  ('C2', 'wuxi.liangxi.chongan.guangrui', '李四'),
                                  ('C3', 'wuxi.liangxi.chongan.guangrui', '王五'),
                                  ('C4', 'wuxi.xinwu.meicun.taibo', '赵六');",
    )
    .unwrap();
}

struct Fixture {
    fed: Federation,
    provider: RunningNode,
    db: PathBuf,
}

async fn provider() -> Fixture {
    let fed = Federation::new();
    let db = fed.dir.path().join("cases.db");
    write_db(&db);
    let cat = fed.file("catalog.toml", &dataset("cases", PROVIDER, "conditional"));
    let grants = fed.file("grants.toml", GRANTS);
    let extra = format!(
        "catalog = [{:?}]\ngrants = [{:?}]\n\n[[sources]]\ndataset = \"cases\"\nsqlite = {:?}\ntable = \"cases\"\n",
        path_str(&cat),
        path_str(&grants),
        path_str(&db)
    );
    let provider = fed.start_with(PROVIDER, &extra).await;
    Fixture { fed, provider, db }
}

async fn consumer(f: &Fixture, node: &str) -> RunningNode {
    f.fed.start_with(node, &peer_entry(&f.provider)).await
}

/// Every record of a transfer and its verified summary.
async fn fetch(
    c: &RunningNode,
    purpose: &str,
    filters: Vec<(String, String)>,
    limit: Option<u64>,
) -> Result<(usize, fedgate_gateway::exchange::TransferSummary), ExchangeError> {
    let pc = c.peer(&id(PROVIDER)).await.unwrap();
    let mut t = Transfer::start(&pc, &c.config().node, "cases", purpose, filters, limit).await?;
    let mut n = 0;
    while let Some(b) = t.next_batch().await? {
        n += b.len();
    }
    Ok((n, t.summary().unwrap().clone()))
}

/// Asks the consumer's local API, as `fedgate query` does: the body's lines, or the API's error
/// as the CLI prints it (`CODE: message`).
async fn api_query(c: &RunningNode, body: serde_json::Value) -> Result<Vec<String>, String> {
    let mut cfg = c.config().clone();
    cfg.api = c.api_addr();
    tokio::task::spawn_blocking(move || {
        let client = Client::new(&cfg).unwrap();
        match client.post_lines("/v1/query", &body) {
            Ok(mut r) => {
                let mut text = String::new();
                r.read_to_string(&mut text).unwrap();
                Ok(text.lines().map(str::to_owned).collect())
            }
            Err(e @ ClientError::Api { .. }) => Err(e.to_string()),
            Err(other) => panic!("{other}"),
        }
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_that_cuts_a_result_short_is_signed_in_the_trailer_and_audited_on_both_sides() {
    let f = provider().await;
    let centre = consumer(&f, "mediation-center@wuxi").await;
    let lines = api_query(
        &centre,
        serde_json::json!({"peer": PROVIDER, "dataset": "cases", "purpose": "dispute-mediation"}),
    )
    .await
    .unwrap();
    assert_eq!(lines.len(), 4, "3 records and the control line: {lines:?}");
    let end: serde_json::Value = serde_json::from_str(&lines[3]).unwrap();
    assert_eq!(end["@end"]["count"], 3, "{end}");
    assert_eq!(end["@end"]["truncated"], "quota", "{end}");

    // The provider's entry (cited by the trailer) and the consumer's receipt both say so.
    let seq = end["@end"]["audit_seq"].as_u64().unwrap();
    let provided = &audit_entries(&f.provider)[seq as usize];
    assert_eq!(provided.kind, Some(Kind::TransferEnd));
    assert_eq!(provided.records, Some(3));
    assert_eq!(provided.truncated.as_deref(), Some("quota"));
    assert_eq!(provided.decision.as_deref(), Some("sent, truncated by quota"));
    let receipt = audit_entries(&centre).into_iter().rfind(|e| e.kind == Some(Kind::RequestOut)).unwrap();
    assert_eq!(receipt.records, Some(3));
    assert_eq!(receipt.truncated.as_deref(), Some("quota"));
    assert_eq!(receipt.decision.as_deref(), Some("received, truncated by quota"));

    // The quota is now used up: a refusal, not an empty success.
    let err = fetch(&centre, "dispute-mediation", vec![], None).await.unwrap_err();
    assert!(matches!(err, ExchangeError::Remote { code: ErrorCode::QuotaExceeded, .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_reports_a_cut_by_the_consumers_own_limit() {
    // Limits, quotas and exact fits are pair tests (gateway/src/exchange/pair.rs); this is the
    // API's end line.
    let f = provider().await;
    let police = consumer(&f, "police@wuxi.liangxi").await;
    let lines = api_query(
        &police,
        serde_json::json!({"peer": PROVIDER, "dataset": "cases", "purpose": "law-enforcement", "limit": 1}),
    )
    .await
    .unwrap();
    let end: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(end["@end"]["truncated"], "limit", "{end}");
}

/// The consumer's view of a failed query: the API's answer and its own audit log.
async fn consumer_view(c: &RunningNode) -> String {
    let answer = match api_query(
        c,
        serde_json::json!({"peer": PROVIDER, "dataset": "cases", "purpose": "law-enforcement"}),
    )
    .await
    {
        Ok(lines) => lines.join("\n"),
        Err(message) => message,
    };
    let receipt = audit_entries(c).into_iter().rfind(|e| e.kind == Some(Kind::RequestOut)).unwrap();
    format!("{answer}\n{receipt:?}")
}

fn assert_no_internals(view: &str, db: &Path) {
    let dir = db.parent().unwrap().display().to_string();
    for leak in [dir.as_str(), "cases.db", "SELECT", "no such table", "unable to open", "sqlite", "FROM"] {
        assert!(!view.contains(leak), "consumer sees {leak:?}: {view}");
    }
    assert!(view.contains("the provider cannot read dataset `cases` right now"), "{view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_source_tells_the_consumer_what_failed_but_no_paths_or_sql() {
    let f = provider().await;
    let police = consumer(&f, "police@wuxi.liangxi").await;

    // The table is gone: SQLite's error names the SQL it could not prepare.
    let conn = rusqlite::Connection::open(&f.db).unwrap();
    conn.execute_batch("ALTER TABLE cases RENAME TO cases_old").unwrap();
    drop(conn);
    let view = consumer_view(&police).await;
    assert_no_internals(&view, &f.db);
    let err = fetch(&police, "law-enforcement", vec![], None).await.unwrap_err();
    // Failed before its first record: refused with its code (a 503 at the API), no header sent.
    assert!(matches!(&err, ExchangeError::Remote { code: ErrorCode::SourceUnavailable, .. }), "{err}");

    // The file is gone: SQLite's error would name the path.
    std::fs::rename(&f.db, f.db.with_extension("moved")).unwrap();
    let view = consumer_view(&police).await;
    assert_no_internals(&view, &f.db);

    // The provider's own audit keeps the details for its operator.
    let failures: Vec<Entry> = audit_entries(&f.provider)
        .into_iter()
        .filter(|e| e.kind == Some(Kind::TransferEnd) && e.decision.as_deref() == Some("aborted"))
        .collect();
    let details: Vec<&str> = failures.iter().filter_map(|e| e.detail.as_deref()).collect();
    assert!(details.iter().any(|d| d.contains("no such table")), "{details:?}");
    assert!(details.iter().any(|d| d.contains("cases.db")), "{details:?}");
}

/// How a fake provider misbehaves once connected.
#[derive(Clone, Copy)]
enum Silence {
    /// Completes the handshake, then never answers, not even the hello.
    FromTheStart,
    /// Answers the hello, then never answers a query.
    AfterHello,
    /// Answers a query with a header and one batch, then goes quiet.
    MidStream,
    /// Answers a query with a header, one batch and a trailer whose digest and signature do not
    /// match it, then finishes.
    BadTrailer,
}

/// A provider with a valid federation certificate that accepts QUIC and then goes quiet as told.
/// Streams it does not answer are kept open (dropping them would end them, which is an answer).
fn silent_provider(fed: &Federation, how: Silence) -> std::net::SocketAddr {
    use fedgate_certs::tls::FederationVerifier;
    use fedgate_certs::TrustStore;
    use fedgate_gateway::link::{self, Link};
    use fedgate_gateway::wire::Message;
    let issued = fed.issue(PROVIDER);
    let trust = TrustStore::new(fed.root.root().clone(), &[]).unwrap();
    let verifier = FederationVerifier::new(trust);
    let link = Link::bind(
        id(PROVIDER),
        "127.0.0.1:0".parse().unwrap(),
        verifier,
        issued.chain.clone(),
        key_of(&issued),
    )
    .unwrap();
    let addr = link.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(Ok(pc)) = link.accept().await {
            while let Ok((mut send, mut recv)) = pc.conn.accept_bi().await {
                let who = pc.peer.node().to_string();
                let answer = match (how, link::read_frame(&mut recv, &who).await) {
                    (Silence::FromTheStart, _) => None,
                    (_, Ok(Some(Message::Hello { .. }))) => {
                        Some(vec![Message::Welcome { node: PROVIDER.into(), audit_key: None }])
                    }
                    (Silence::MidStream, Ok(Some(Message::Query { .. }))) => Some(vec![
                        Message::Header { fields: vec!["case_id".into()], reason: "test".into() },
                        Message::Batch { records: vec![vec![fedgate_catalog::Value::Text("C1".into())]] },
                    ]),
                    (Silence::BadTrailer, Ok(Some(Message::Query { .. }))) => Some(vec![
                        Message::Header { fields: vec!["case_id".into()], reason: "test".into() },
                        Message::Batch { records: vec![vec![fedgate_catalog::Value::Text("C1".into())]] },
                        Message::Trailer {
                            count: 1,
                            digest: "0".repeat(64),
                            signature: "0".repeat(128),
                            audit_seq: Some(1),
                            truncated: None,
                            witness: None,
                        },
                    ]),
                    _ => None,
                };
                for m in answer.iter().flatten() {
                    link::write_frame(&mut send, m, &who).await.unwrap();
                }
                if matches!(
                    answer.as_deref(),
                    Some([Message::Welcome { .. }] | [.., Message::Trailer { .. }])
                ) {
                    let _ = send.finish();
                }
                held.push((send, recv));
            }
        }
    });
    addr
}

async fn query_silent(how: Silence) -> (Result<Vec<String>, String>, std::time::Duration) {
    let fed = Federation::new();
    let (got, took, _) = query_misbehaving(&fed, how).await;
    (got, took)
}

/// Queries a provider that misbehaves as told; also returns the consumer, for its audit log.
async fn query_misbehaving(
    fed: &Federation,
    how: Silence,
) -> (Result<Vec<String>, String>, std::time::Duration, RunningNode) {
    let addr = silent_provider(fed, how);
    let centre = fed
        .start_with(
            "mediation-center@wuxi",
            &format!("\n[[peers]]\nnode = \"{PROVIDER}\"\naddress = \"{addr}\"\n"),
        )
        .await;
    let started = std::time::Instant::now();
    let body = serde_json::json!({"peer": PROVIDER, "dataset": "cases", "purpose": "dispute-mediation", "timeout_ms": 2000});
    let got = api_query(&centre, body).await;
    (got, started.elapsed(), centre)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_answers_the_hello_times_out_connecting() {
    let (got, took) = query_silent(Silence::FromTheStart).await;
    let err = got.unwrap_err();
    assert_eq!(
        err,
        "peer-timeout: hotline12345@wuxi timed out: connecting (QUIC handshake and hello) took longer than 2 s"
    );
    assert!(took < std::time::Duration::from_secs(8), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_answers_the_query_times_out_waiting_for_the_first_answer() {
    let (got, took) = query_silent(Silence::AfterHello).await;
    let err = got.unwrap_err();
    assert_eq!(
        err,
        "peer-timeout: hotline12345@wuxi timed out: the first answer to the query took longer than 2 s"
    );
    assert!(took < std::time::Duration::from_secs(8), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stalls_mid_stream_is_an_incomplete_transfer() {
    let (got, took) = query_silent(Silence::MidStream).await;
    let lines = got.unwrap();
    assert_eq!(lines[0], r#"{"case_id":"C1"}"#);
    let last: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(
        last["@error"],
        "incomplete transfer from hotline12345@wuxi after 1 records: stalled: no data for 2 s",
        "{lines:?}"
    );
    assert_eq!(last["code"], "incomplete", "{lines:?}");
    assert!(took < std::time::Duration::from_secs(8), "{took:?}");
}

/// A trailer that does not match what arrived is told and audited as unverified, not as a
/// stream that merely broke off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trailer_that_does_not_verify_is_unverified_not_incomplete() {
    let fed = Federation::new();
    let (got, _, centre) = query_misbehaving(&fed, Silence::BadTrailer).await;
    let lines = got.unwrap();
    assert_eq!(lines[0], r#"{"case_id":"C1"}"#);
    let last: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(last["code"], "unverified", "{lines:?}");
    let message = last["@error"].as_str().unwrap();
    assert!(message.starts_with("transfer from hotline12345@wuxi failed verification: "), "{message}");
    let receipt = audit_entries(&centre).into_iter().rfind(|e| e.kind == Some(Kind::RequestOut)).unwrap();
    assert_eq!(receipt.decision.as_deref(), Some("unverified"), "{receipt:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_outside_its_range_is_a_bad_request() {
    let f = provider().await;
    let centre = consumer(&f, "mediation-center@wuxi").await;
    for bad in [0u64, 3_600_001] {
        let body = serde_json::json!({"peer": PROVIDER, "dataset": "cases", "purpose": "dispute-mediation", "timeout_ms": bad});
        let err = api_query(&centre, body).await.unwrap_err();
        assert!(err.contains("`timeout_ms` must be a whole number from 1 to 3600000"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_down_since_start_is_refused_with_the_details_only_in_the_providers_audit() {
    let fed = Federation::new();
    // Nothing listens on port 1: the PostgreSQL source cannot be checked, so it is not read.
    let conn = "host=127.0.0.1 port=1 user=secret-user dbname=cases connect_timeout=1";
    let cat = fed.file("catalog.toml", &dataset("cases", PROVIDER, "conditional"));
    let grants = fed.file("grants.toml", GRANTS);
    let extra = format!(
        "catalog = [{:?}]\ngrants = [{:?}]\n\n[[sources]]\ndataset = \"cases\"\npostgres = {conn:?}\ntable = \"cases\"\n",
        path_str(&cat),
        path_str(&grants),
    );
    let provider = fed.start_with(PROVIDER, &extra).await;
    let police = fed.start_with("police@wuxi.liangxi", &peer_entry(&provider)).await;
    let err = api_query(
        &police,
        serde_json::json!({"peer": PROVIDER, "dataset": "cases", "purpose": "law-enforcement"}),
    )
    .await
    .unwrap_err();
    let receipt = audit_entries(&police).into_iter().rfind(|e| e.kind == Some(Kind::RequestOut)).unwrap();
    let view = format!("{err}\n{receipt:?}");
    for leak in ["secret-user", "port=1", "127.0.0.1", "Connection refused", "error connecting"] {
        assert!(!view.contains(leak), "consumer sees {leak:?}: {view}");
    }
    let refused = audit_entries(&provider)
        .into_iter()
        .rfind(|e| e.kind == Some(Kind::RequestIn) && e.counterpart.as_deref() == Some("police@wuxi.liangxi"))
        .unwrap();
    assert!(refused.detail.as_deref().is_some_and(|d| !d.is_empty()), "{refused:?}");
}
