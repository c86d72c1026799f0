//! Sharing requests between real gateways on loopback (mutual-TLS QUIC, real PKI, SQLite
//! state): a consumer applies, the provider's steward approves (a grant in force at once),
//! refuses with a reason or revokes; deadlines are flagged on both sides; everything survives
//! restarts of either side and is in both audit logs under the request's exchange id.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::api::{api, http, token};
use common::*;
use fedgate_audit::Kind;
use fedgate_gateway::config;
use fedgate_gateway::node::RunningNode;
use serde_json::Value;

const PROVIDER: &str = "womens-federation@wuxi";
const CONSUMER: &str = "court@wuxi.xinwu";

/// The steward's own grants: nothing for the court.
const GRANTS: &str = r#"
[[grant]]
id = "police-cases"
to = { department = "police" }
datasets = ["cases"]
purposes = ["law-enforcement"]
clearance = 2
"#;

/// The governance entries about request `id`, as `decision` in order.
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
}

async fn setup(provider_extra: &str) -> Setup {
    let fed = Federation::new();
    let sources = fed.sqlite_sources(&["cases", "open-data"]);
    let db = fed.dir.path().join("sources.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "INSERT INTO cases VALUES ('C001', 'wuxi.xinwu', '王小明'), ('C002', 'wuxi.liangxi', '李四');",
    )
    .unwrap();
    let catalog = format!(
        "{}{}",
        dataset("cases", PROVIDER, "conditional"),
        dataset("open-data", PROVIDER, "unconditional")
    );
    let cat = fed.file("cases.catalog.toml", &catalog);
    let grants = fed.file("cases.grants.toml", GRANTS);
    let extra = format!(
        "catalog = [{:?}]\ngrants = [{:?}]\n{sources}\n{provider_extra}",
        path_str(&cat),
        path_str(&grants)
    );
    let provider = fed.start_with(PROVIDER, &extra).await;
    // Pin the provider's port, so it can restart where the consumer looks for it.
    let provider_cfg = fed.dir.path().join(PROVIDER).join("gateway.toml");
    let text = std::fs::read_to_string(&provider_cfg).unwrap();
    let pinned = format!("listen = \"{}\"", provider.quic_addr().unwrap());
    std::fs::write(&provider_cfg, text.replace("listen = \"127.0.0.1:0\"", &pinned)).unwrap();
    let consumer = fed.start_with(CONSUMER, &peer_entry(&provider)).await;
    let consumer_cfg = fed.dir.path().join(CONSUMER).join("gateway.toml");
    Setup { fed, provider, provider_cfg, consumer, consumer_cfg }
}

async fn restart(cfg: &std::path::Path) -> RunningNode {
    RunningNode::start(config::load(cfg).unwrap()).await.unwrap()
}

const ASK: &str = r#"{"peer":"womens-federation@wuxi","dataset":"cases","purpose":"dispute-mediation","fields":["case_id","party_name"],"reason":"family dispute case (2026) 锡新民初 17"}"#;

async fn apply(consumer: &RunningNode, body: &str) -> String {
    let (status, v) = api(consumer, "POST", "/v1/requests", body).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["state"], "unsent", "{v}");
    v["id"].as_str().unwrap().to_owned()
}

/// Waits until `node` holds request `id` with `field` equal to `want`.
async fn wait_for(node: &RunningNode, id: &str, field: &str, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, v) = api(node, "GET", &format!("/v1/requests/{id}"), "").await;
        if status == 200 && v[field].as_str() == Some(want) {
            return v;
        }
        assert!(Instant::now() < deadline, "{} never had {field} = {want}: {status} {v}", node.config().node);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn query(consumer: &RunningNode) -> (u16, Value) {
    let body = r#"{"peer":"womens-federation@wuxi","dataset":"cases","purpose":"dispute-mediation"}"#;
    api(consumer, "POST", "/v1/query", body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_request_is_a_grant_in_force_at_once_and_both_logs_pair_by_its_id() {
    let Setup { fed, provider, consumer, .. } = setup("").await;
    let (status, v) = query(&consumer).await;
    assert_eq!(status, 403, "denied before any request: {v}");

    let id = apply(&consumer, ASK).await;
    let received = wait_for(&provider, &id, "state", "pending").await;
    assert_eq!(received["role"], "incoming");
    assert_eq!(received["peer"], CONSUMER);
    assert_eq!(received["clearance"], 3, "the request covers party_name, grade 3: {received}");
    assert_eq!(received["overdue"], false);
    let seen = wait_for(&consumer, &id, "state", "pending").await;
    assert!(seen["deadline"].as_i64().unwrap() > seen["created"].as_i64().unwrap() + 86_400, "{seen}");

    let (status, v) =
        api(&provider, "POST", &format!("/v1/requests/{id}/approve"), r#"{"days":30,"quota":1}"#).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["grant"], format!("request-{id}"));
    // In force at once: the managed file is written and loaded, no restart.
    let managed = std::fs::read_to_string(&provider.config().approved_grants).unwrap();
    assert!(
        managed.contains(&format!("id = \"request-{id}\"")) && managed.contains("quota = 1"),
        "{managed}"
    );
    let (status, v) = query(&consumer).await;
    assert_eq!(status, 200, "{v}");
    let text = v.as_str().unwrap_or_default().to_owned();
    assert!(text.contains("王小明"), "clearance 3 shows the name in clear, own district only: {text}");
    assert!(!text.contains("李四"), "another district's row: {text}");

    let answer = wait_for(&consumer, &id, "state", "approved").await;
    assert_eq!(answer["quota"], 1);
    assert_eq!(answer["clearance"], 3);
    assert!(answer["answer_signature"].as_str().is_some_and(|s| s.len() == 128), "{answer}");

    // Both logs, one exchange id: the consumer's request and the answer it verified; the
    // provider's receipt and its steward's approval.
    assert_eq!(decisions(&consumer, &id), ["requested", "pending", "approved"]);
    assert_eq!(decisions(&provider, &id), ["received", "approve"]);
    let approved =
        audit_entries(&consumer).into_iter().find(|e| e.decision.as_deref() == Some("approved")).unwrap();
    assert_eq!(approved.grant.as_deref(), Some(&*format!("request-{id}")));
    assert!(approved.signature.is_some());
    // The provider's entry for the query names the grant the request became.
    let served = audit_entries(&provider)
        .into_iter()
        .any(|e| e.kind == Some(Kind::RequestIn) && e.grant.as_deref() == Some(&*format!("request-{id}")));
    assert!(served, "the query was allowed by the approved grant");

    // Statistics from each side's own log and state; the provider's also in /metrics.
    let stats = fedgate_gateway::stats_cli::collect(provider.config(), None).unwrap();
    let row = stats.iter().find(|r| r.dataset == "cases" && r.peer == CONSUMER).unwrap();
    assert_eq!((row.requests_in, row.approvals, row.pending), (1, 1, 0), "{row:?}");
    assert_eq!((row.queries_in, row.queries_denied, row.records_sent), (2, 1, 1), "{row:?}");
    assert!(row.answer_secs_mean.is_some(), "{row:?}");
    let stats = fedgate_gateway::stats_cli::collect(consumer.config(), None).unwrap();
    let row = stats.iter().find(|r| r.dataset == "cases" && r.peer == PROVIDER).unwrap();
    assert_eq!(
        (row.requests_out, row.approvals, row.queries_out, row.records_received),
        (1, 1, 2, 1),
        "{row:?}"
    );
    let (status, metrics) = api(&provider, "GET", "/metrics", "").await;
    assert_eq!(status, 200);
    let text = metrics.as_str().unwrap_or_default();
    assert!(text.contains(r#"fedgate_sharing_requests{role="incoming",state="approved"} 1"#), "{text}");
    drop(fed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_reaches_the_consumer_with_its_reason_and_unconditional_data_needs_no_request() {
    let Setup { fed, provider, consumer, .. } = setup("").await;
    let id = apply(&consumer, ASK).await;
    wait_for(&provider, &id, "state", "pending").await;
    let (status, v) = api(&provider, "POST", &format!("/v1/requests/{id}/refuse"), r#"{}"#).await;
    assert_eq!(status, 400, "a refusal needs a reason: {v}");
    let why = "family dispute records are shared with mediation bodies only";
    let (status, v) =
        api(&provider, "POST", &format!("/v1/requests/{id}/refuse"), &format!(r#"{{"reason":"{why}"}}"#))
            .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = api(&provider, "POST", &format!("/v1/requests/{id}/approve"), r#"{"days":30}"#).await;
    assert_eq!(status, 400, "a refused request cannot be approved after: {v}");
    let seen = wait_for(&consumer, &id, "state", "refused").await;
    assert_eq!(seen["answer_reason"], why);
    assert_eq!(decisions(&provider, &id), ["received", "refuse"]);
    assert_eq!(decisions(&consumer, &id), ["requested", "pending", "refused"]);
    let (status, _) = query(&consumer).await;
    assert_eq!(status, 403);

    // An unconditional dataset takes no request: refused at intake, and the consumer stops asking.
    let open = ASK.replace("\"cases\"", "\"open-data\"");
    let id = apply(&consumer, &open).await;
    let seen = wait_for(&consumer, &id, "state", "refused").await;
    assert!(seen["answer_reason"].as_str().unwrap().contains("needs no request"), "{seen}");
    let (status, _) = api(&provider, "GET", &format!("/v1/requests/{id}"), "").await;
    assert_eq!(status, 404, "never stored by the provider");
    assert!(decisions(&provider, &id).contains(&"deny".to_owned()));
    drop(fed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_request_past_its_deadline_is_overdue_on_both_sides() {
    // No working days to answer: due the moment it arrives.
    let Setup { fed, provider, consumer, .. } = setup("[requests]\nanswer_days = 0\n").await;
    let id = apply(&consumer, ASK).await;
    wait_for(&provider, &id, "state", "pending").await;
    let seen = wait_for(&consumer, &id, "state", "pending").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for node in [&provider, &consumer] {
        let (status, v) = api(node, "GET", "/v1/requests", "").await;
        assert_eq!(status, 200);
        let mine = v.as_array().unwrap().iter().find(|h| h["id"] == id.as_str()).unwrap().clone();
        assert_eq!(mine["overdue"], true, "{}: {mine}", node.config().node);
        assert_eq!(mine["deadline"], seen["deadline"], "both sides hold the provider's deadline");
    }
    // Answering clears the flag.
    api(&provider, "POST", &format!("/v1/requests/{id}/approve"), r#"{"days":1}"#).await;
    let seen = wait_for(&consumer, &id, "state", "approved").await;
    assert_eq!(seen["overdue"], false);
    drop(fed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_survive_restarts_of_either_side_and_revocation_stops_a_subscription_at_once() {
    let Setup { fed, provider, provider_cfg, consumer, consumer_cfg } = setup("").await;
    // The provider is down when the court applies: the request waits, stored, at the consumer.
    provider.shutdown().await;
    let id = apply(&consumer, ASK).await;
    consumer.shutdown().await;
    let consumer = restart(&consumer_cfg).await;
    let provider = restart(&provider_cfg).await;
    wait_for(&provider, &id, "state", "pending").await;
    // The provider restarts with the request pending; approval after it works. A managed
    // grants file out of step with the store (a crash between a decision and the file's
    // rewrite) is rewritten from the store before any rule is loaded.
    let managed = provider.config().approved_grants.clone();
    provider.shutdown().await;
    let stale = "[[grant]]\nid = \"request-stale\"\nto = \"court@wuxi.xinwu\"\ndatasets = [\"cases\"]\npurposes = [\"dispute-mediation\"]\nclearance = 1\n";
    std::fs::write(&managed, stale).unwrap();
    let provider = restart(&provider_cfg).await;
    assert!(!std::fs::read_to_string(&managed).unwrap().contains("[[grant]]"));
    let (status, v) = query(&consumer).await;
    assert_eq!(status, 403, "no grant from a stale file: {v}");
    let (status, v) = api(&provider, "POST", &format!("/v1/requests/{id}/approve"), r#"{"days":30}"#).await;
    assert_eq!(status, 200, "{v}");
    wait_for(&consumer, &id, "state", "approved").await;
    assert_eq!(decisions(&provider, &id), ["received", "approve"], "stored once despite resends");

    // The approved grant allows subscribing; the first event arrives.
    let body = r#"{"peer":"womens-federation@wuxi","dataset":"cases","purpose":"dispute-mediation"}"#;
    let (status, sub) = api(&consumer, "POST", "/v1/subscriptions", body).await;
    assert_eq!(status, 201, "{sub}");
    let sid = sub["id"].as_str().unwrap().to_owned();
    publish(&provider, "C101").await;
    let got = events(&consumer, &sid, 1).await;
    assert_eq!(got[0]["case_id"], "C101", "{got:?}");

    // Revoked: the next batch is refused and the subscription stops, saying why.
    let (status, v) =
        api(&provider, "POST", &format!("/v1/requests/{id}/revoke"), r#"{"reason":"case closed"}"#).await;
    assert_eq!(status, 200, "{v}");
    publish(&provider, "C102").await;
    let got = events(&consumer, &sid, 2).await;
    assert_eq!(got.last().unwrap()["@state"], "stopped", "{got:?}");
    assert!(got.iter().all(|v| v["case_id"] != "C102"), "nothing after the revocation: {got:?}");
    let (status, _) = query(&consumer).await;
    assert_eq!(status, 403, "queries refused at once too");
    let seen = wait_for(&consumer, &id, "state", "revoked").await;
    assert_eq!(seen["answer_reason"], "case closed");
    assert_eq!(decisions(&provider, &id), ["received", "approve", "revoke"]);
    // The consumer's restart repeated none of its entries (it may have missed the pending
    // state: the provider went down right after storing the request).
    let mut seen = decisions(&consumer, &id);
    seen.retain(|d| d != "pending");
    assert_eq!(seen, ["requested", "approved", "revoked"]);
    drop(fed);
}

async fn publish(p: &RunningNode, case: &str) {
    let body = format!(r#"{{"records":[{{"case_id":"{case}","region":"wuxi.xinwu","party_name":"张三"}}]}}"#);
    let (status, v) = api(p, "POST", "/v1/datasets/cases/events", &body).await;
    assert_eq!(status, 200, "{v}");
}

/// Reads a subscription's items until `want` have arrived or it ended (or 20 s).
async fn events(s: &RunningNode, id: &str, want: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let token = token(s);
    let mut got: Vec<Value> = Vec::new();
    while got.len() < want && Instant::now() < deadline {
        let from = got.last().and_then(|v| v["@id"].as_u64()).unwrap_or(0);
        let path = format!("/v1/subscriptions/{id}/events?after={from}&wait_ms=1000");
        let (status, body) = http(s.api_addr(), &token, "GET", &path, "").await;
        assert_eq!(status, 200, "{body}");
        got.extend(body.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()));
        if got.iter().any(|v| v.get("@state").is_some()) {
            break;
        }
    }
    got
}
