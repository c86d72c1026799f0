//! Objections (数据异议) between real gateways on loopback (mutual-TLS QUIC, real PKI, SQLite
//! sources and state): a consumer objects to a record it receives; every delivery of that record
//! (query, subscription event) carries the `@objection` marker until the provider's steward
//! accepts (correcting the source: subscribers get the record as an update) or rejects with a
//! reason; the objector is told; records the consumer may not receive cannot be objected to;
//! all of it survives restarts of either side and is in both audit logs under the objection's id.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::api::{api, http, token};
use common::*;
use fedgate_audit::Kind;
use fedgate_gateway::config;
use fedgate_gateway::node::RunningNode;
use serde_json::Value;

const PROVIDER: &str = "petition@wuxi";
const CONSUMER: &str = "mediation-center@wuxi";

/// The centre reads and subscribes to `cases` in one district only; nothing of `secret`.
const GRANTS: &str = r#"
[[grant]]
id = "centre"
to = "mediation-center@wuxi"
datasets = ["cases"]
actions = ["read", "subscribe"]
purposes = ["dispute-mediation"]
clearance = 3
rows = "wuxi.liangxi"
"#;

/// The governance entries about objection `id`, as `decision` in order.
fn decisions(node: &RunningNode, id: &str) -> Vec<String> {
    audit_entries(node)
        .into_iter()
        .filter(|e| e.kind == Some(Kind::Governance) && e.exchange.as_deref() == Some(id))
        .map(|e| e.decision.unwrap_or_default())
        .collect()
}

struct Setup {
    fed: Federation,
    provider: RunningNode,
    provider_cfg: PathBuf,
    consumer: RunningNode,
    consumer_cfg: PathBuf,
    db: PathBuf,
}

async fn setup() -> Setup {
    let fed = Federation::new();
    let sources = fed.sqlite_sources(&["cases", "secret"]);
    let db = fed.dir.path().join("sources.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "INSERT INTO cases VALUES ('C001', 'wuxi.liangxi', '王小明'), ('C002', 'wuxi.xinwu', '李四'),
             ('C003', 'wuxi.liangxi.chongan', '赵六');
         INSERT INTO secret VALUES ('S001', 'wuxi.liangxi', '钱七');",
    )
    .unwrap();
    let catalog = format!(
        "{}{}",
        dataset("cases", PROVIDER, "conditional"),
        dataset("secret", PROVIDER, "conditional")
    );
    let cat = fed.file("cases.catalog.toml", &catalog);
    let grants = fed.file("cases.grants.toml", GRANTS);
    let extra = format!("catalog = [{:?}]\ngrants = [{:?}]\n{sources}", path_str(&cat), path_str(&grants));
    let provider = fed.start_with(PROVIDER, &extra).await;
    // Pin the provider's port, so it can restart where the consumer looks for it.
    let provider_cfg = fed.dir.path().join(PROVIDER).join("gateway.toml");
    let text = std::fs::read_to_string(&provider_cfg).unwrap();
    let pinned = format!("listen = \"{}\"", provider.quic_addr().unwrap());
    std::fs::write(&provider_cfg, text.replace("listen = \"127.0.0.1:0\"", &pinned)).unwrap();
    let consumer = fed.start_with(CONSUMER, &peer_entry(&provider)).await;
    let consumer_cfg = fed.dir.path().join(CONSUMER).join("gateway.toml");
    Setup { fed, provider, provider_cfg, consumer, consumer_cfg, db }
}

async fn restart(cfg: &std::path::Path) -> RunningNode {
    RunningNode::start(config::load(cfg).unwrap()).await.unwrap()
}

async fn object(consumer: &RunningNode, dataset: &str, key: &str) -> String {
    let body = format!(
        r#"{{"peer":"{PROVIDER}","dataset":"{dataset}","purpose":"dispute-mediation","key":"{key}","field":"party_name","reason":"the petitioner's name is misspelt","proposed":"王晓明"}}"#
    );
    let (status, v) = api(consumer, "POST", "/v1/objections", &body).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["state"], "unsent", "{v}");
    v["id"].as_str().unwrap().to_owned()
}

/// Waits until `node` holds objection `id` with `field` equal to `want`.
async fn wait_for(node: &RunningNode, id: &str, field: &str, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, v) = api(node, "GET", &format!("/v1/objections/{id}"), "").await;
        if status == 200 && v[field].as_str() == Some(want) {
            return v;
        }
        assert!(Instant::now() < deadline, "{} never had {field} = {want}: {status} {v}", node.config().node);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The consumer's query of `cases` as the application reads it: one JSON object per record.
async fn query(consumer: &RunningNode) -> Vec<Value> {
    let body = format!(r#"{{"peer":"{PROVIDER}","dataset":"cases","purpose":"dispute-mediation"}}"#);
    let (status, text) = http(consumer.api_addr(), &token(consumer), "POST", "/v1/query", &body).await;
    assert_eq!(status, 200, "{text}");
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(lines.last().is_some_and(|l| l.get("@end").is_some()), "{text}");
    lines.into_iter().filter(|l| l.get("case_id").is_some()).collect()
}

fn record<'a>(records: &'a [Value], key: &str) -> &'a Value {
    records.iter().find(|r| r["case_id"] == key).unwrap_or_else(|| panic!("no {key} in {records:?}"))
}

async fn subscribe(consumer: &RunningNode) -> String {
    let body = format!(r#"{{"peer":"{PROVIDER}","dataset":"cases","purpose":"dispute-mediation"}}"#);
    let (status, v) = api(consumer, "POST", "/v1/subscriptions", &body).await;
    assert_eq!(status, 201, "{v}");
    v["id"].as_str().unwrap().to_owned()
}

/// Reads the subscription's events after `after` until one satisfies `want` (or 20 s).
async fn event_where(s: &RunningNode, id: &str, after: u64, want: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut from = after;
    loop {
        let path = format!("/v1/subscriptions/{id}/events?after={from}&wait_ms=1000");
        let (status, body) = http(s.api_addr(), &token(s), "GET", &path, "").await;
        assert_eq!(status, 200, "{body}");
        for line in body.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            if want(&v) {
                return v;
            }
            from = v["@id"].as_u64().unwrap_or(from);
        }
        assert!(Instant::now() < deadline, "no such event after {after}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_objection_marks_the_record_until_accepted_and_the_correction_reaches_subscribers() {
    let Setup { fed: _fed, provider, consumer, db, .. } = setup().await;
    let sub = subscribe(&consumer).await;
    let before = query(&consumer).await;
    assert!(before.iter().all(|r| r.get("@objection").is_none()), "no objection, no marker: {before:?}");

    let id = object(&consumer, "cases", "C001").await;
    let received = wait_for(&provider, &id, "state", "open").await;
    assert_eq!((received["role"].as_str(), received["peer"].as_str()), (Some("incoming"), Some(CONSUMER)));
    wait_for(&consumer, &id, "state", "open").await;

    // Every delivery of the record carries the marker; the other records carry null.
    let marked = query(&consumer).await;
    let m = &record(&marked, "C001")["@objection"];
    assert_eq!(m["id"], id.as_str(), "{marked:?}");
    assert_eq!(
        (m["field"].as_str(), m["status"].as_str(), m["open"].as_u64()),
        (Some("party_name"), Some("open"), Some(1))
    );
    assert!(record(&marked, "C003")["@objection"].is_null(), "{marked:?}");
    // The department publishes a change of the record: the event carries the marker too.
    let body =
        r#"{"op":"update","records":[{"case_id":"C001","region":"wuxi.liangxi","party_name":"王小明"}]}"#;
    let (status, v) = api(&provider, "POST", "/v1/datasets/cases/events", body).await;
    assert_eq!(status, 200, "{v}");
    let ev = event_where(&consumer, &sub, 0, |e| e["case_id"] == "C001").await;
    assert_eq!(ev["@objection"]["id"], id.as_str(), "{ev}");

    // Accepting without a value needs the source corrected first.
    let (status, v) = api(&provider, "POST", &format!("/v1/objections/{id}/accept"), "").await;
    assert_eq!(status, 409, "{v}");
    assert!(v["error"].as_str().unwrap_or_default().contains("still holds"), "{v}");
    // With the value, the gateway corrects the source itself.
    let body = r#"{"value":"王晓明","reason":"checked against the petition form"}"#;
    let (status, v) = api(&provider, "POST", &format!("/v1/objections/{id}/accept"), body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!((v["state"].as_str(), v["corrected"].as_bool()), (Some("accepted"), Some(true)));
    let conn = rusqlite::Connection::open(&db).unwrap();
    let name: String =
        conn.query_row("SELECT party_name FROM cases WHERE case_id = 'C001'", [], |r| r.get(0)).unwrap();
    assert_eq!(name, "王晓明", "the correction is in the source itself");
    let (status, v) =
        api(&provider, "POST", &format!("/v1/objections/{id}/reject"), r#"{"reason":"x"}"#).await;
    assert_eq!(status, 409, "a decided objection stays decided: {v}");

    // Subscribers get the corrected record as an update, unmarked.
    let update = event_where(&consumer, &sub, ev["@id"].as_u64().unwrap(), |e| e["case_id"] == "C001").await;
    assert_eq!(
        (update["@op"].as_str(), update["party_name"].as_str()),
        (Some("update"), Some("王晓明")),
        "{update}"
    );
    assert!(update.get("@objection").is_none(), "{update}");
    // The objector is told; the next query has no marker.
    let told = wait_for(&consumer, &id, "state", "accepted").await;
    assert_eq!(
        (told["corrected"].as_bool(), told["answer_reason"].as_str()),
        (Some(true), Some("checked against the petition form"))
    );
    let after = query(&consumer).await;
    assert!(after.iter().all(|r| r.get("@objection").is_none()), "{after:?}");
    assert_eq!(record(&after, "C001")["party_name"], "王晓明");

    // Both logs have every step under the objection's id.
    assert_eq!(decisions(&provider, &id), ["received", "accept"]);
    assert_eq!(decisions(&consumer, &id), ["filed", "open", "accepted"]);
    let accept =
        audit_entries(&provider).into_iter().find(|e| e.decision.as_deref() == Some("accept")).unwrap();
    assert_eq!(accept.counterpart.as_deref(), Some(CONSUMER));
    assert!(accept.detail.unwrap_or_default().contains("corrected by the gateway"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_reaches_the_objector_with_its_reason_across_restarts_of_either_side() {
    let Setup { fed: _fed, provider, provider_cfg, consumer, consumer_cfg, .. } = setup().await;
    // Filed while the provider is down: kept, and sent once it is back.
    provider.shutdown().await;
    let id = object(&consumer, "cases", "C003").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, v) = api(&consumer, "GET", &format!("/v1/objections/{id}"), "").await;
    assert_eq!(v["state"], "unsent", "{v}");
    let provider = restart(&provider_cfg).await;
    wait_for(&provider, &id, "state", "open").await;
    wait_for(&consumer, &id, "state", "open").await;
    // The marker set is rebuilt from the store at start.
    provider.shutdown().await;
    let provider = restart(&provider_cfg).await;
    let marked = query(&consumer).await;
    assert_eq!(record(&marked, "C003")["@objection"]["id"], id.as_str(), "{marked:?}");

    // Decided while the objector is down: it learns when it is back.
    consumer.shutdown().await;
    let (status, v) =
        api(&provider, "POST", &format!("/v1/objections/{id}/reject"), r#"{"reason":" "}"#).await;
    assert_eq!(status, 400, "a rejection says why: {v}");
    let why = "the register of 2026-03 shows this spelling";
    let (status, v) =
        api(&provider, "POST", &format!("/v1/objections/{id}/reject"), &format!(r#"{{"reason":"{why}"}}"#))
            .await;
    assert_eq!((status, v["state"].as_str()), (200, Some("rejected")), "{v}");
    let consumer = restart(&consumer_cfg).await;
    let told = wait_for(&consumer, &id, "state", "rejected").await;
    assert_eq!((told["answer_reason"].as_str(), told["corrected"].as_bool()), (Some(why), Some(false)));
    let after = query(&consumer).await;
    assert!(after.iter().all(|r| r.get("@objection").is_none()), "{after:?}");
    assert_eq!(record(&after, "C003")["party_name"], "赵六", "a rejection changes nothing");

    assert_eq!(decisions(&provider, &id), ["received", "reject"]);
    assert_eq!(decisions(&consumer, &id), ["filed", "open", "rejected"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objections_to_records_the_consumer_may_not_receive_are_refused_and_audited_as_denials() {
    let Setup { fed: _fed, provider, consumer, .. } = setup().await;
    // Another district's record (outside the grant's rows), a dataset without a grant, a key
    // that is not there: the provider cannot tell the consumer which, and stores none.
    for (dataset, key) in [("cases", "C002"), ("secret", "S001"), ("cases", "C999")] {
        let id = object(&consumer, dataset, key).await;
        let refused = wait_for(&consumer, &id, "state", "refused").await;
        let why = refused["answer_reason"].as_str().unwrap_or_default();
        assert!(why.starts_with("denied:"), "{dataset} {key}: {why}");
        assert_eq!(decisions(&provider, &id), ["deny"], "{dataset} {key}");
        assert_eq!(decisions(&consumer, &id), ["filed", "refused"], "{dataset} {key}");
        let (status, _) = api(&provider, "GET", &format!("/v1/objections/{id}"), "").await;
        assert_eq!(status, 404, "a refused objection is not stored by the provider");
    }
    let marked = query(&consumer).await;
    assert!(marked.iter().all(|r| r.get("@objection").is_none()), "{marked:?}");
}
