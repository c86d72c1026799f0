//! Subscriptions between real gateways on loopback: events published at the provider's API reach
//! the subscribing application through its own gateway over mutual-TLS QUIC, desensitized as a
//! query would be, exactly once across restarts of either side; a withdrawn grant stops delivery.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use fedgate_gateway::config;
use fedgate_gateway::node::RunningNode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PROVIDER: &str = "womens-federation@wuxi";
const SUBSCRIBER: &str = "police@wuxi.liangxi";

/// Police may subscribe for law enforcement at clearance 2: names (grade 3) arrive masked, and
/// only rows of its district.
const GRANTS: &str = r#"
[[grant]]
id = "police-subscribe"
to = { department = "police" }
datasets = ["cases"]
actions = ["read", "subscribe"]
purposes = ["law-enforcement"]
clearance = 2
"#;

async fn http(addr: SocketAddr, token: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.into()
    };
    (status, body)
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    out
}

fn token(n: &RunningNode) -> String {
    std::fs::read_to_string(&n.config().api_token).unwrap().trim().to_owned()
}

struct Setup {
    fed: Federation,
    provider: RunningNode,
    provider_cfg: PathBuf,
    subscriber: RunningNode,
    subscriber_cfg: PathBuf,
    grants: PathBuf,
}

async fn setup() -> Setup {
    let fed = Federation::new();
    let sources = fed.sqlite_sources(&["cases"]);
    let cat = fed.file("cases.catalog.toml", &dataset("cases", PROVIDER, "conditional"));
    let grants = fed.file("cases.grants.toml", GRANTS);
    let extra = format!("catalog = [{:?}]\ngrants = [{:?}]\n{sources}", path_str(&cat), path_str(&grants));
    let provider = fed.start_with(PROVIDER, &extra).await;
    // Pin the provider's port, so it can restart where the subscriber looks for it.
    let provider_cfg = fed.dir.path().join(PROVIDER).join("gateway.toml");
    let text = std::fs::read_to_string(&provider_cfg).unwrap();
    let pinned = format!("listen = \"{}\"", provider.quic_addr().unwrap());
    std::fs::write(&provider_cfg, text.replace("listen = \"127.0.0.1:0\"", &pinned)).unwrap();
    let subscriber = fed.start_with(SUBSCRIBER, &peer_entry(&provider)).await;
    let subscriber_cfg = fed.dir.path().join(SUBSCRIBER).join("gateway.toml");
    Setup { fed, provider, provider_cfg, subscriber, subscriber_cfg, grants }
}

async fn publish(p: &RunningNode, ids: std::ops::Range<u32>, region: &str) {
    let recs: Vec<String> =
        ids.map(|i| format!(r#"{{"case_id":"C{i:03}","region":"{region}","party_name":"张{i}"}}"#)).collect();
    let body = format!(r#"{{"records":[{}]}}"#, recs.join(","));
    let (status, answer) = http(p.api_addr(), &token(p), "POST", "/v1/datasets/cases/events", &body).await;
    assert_eq!(status, 200, "{answer}");
}

/// Reads the subscription's events after `after` until `want` lines have arrived (or 20 s).
async fn read_events(s: &RunningNode, id: &str, after: u64, want: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got: Vec<serde_json::Value> = Vec::new();
    while got.len() < want && Instant::now() < deadline {
        let from = got.last().and_then(|v| v["@id"].as_u64()).unwrap_or(after);
        let path = format!("/v1/subscriptions/{id}/events?after={from}&wait_ms=2000");
        let (status, body) = http(s.api_addr(), &token(s), "GET", &path, "").await;
        assert_eq!(status, 200, "{body}");
        got.extend(body.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()));
        if got.iter().any(|v| v.get("@state").is_some()) {
            break;
        }
    }
    got
}

async fn subscribe(s: &RunningNode) -> String {
    let body = r#"{"peer":"womens-federation@wuxi","dataset":"cases","purpose":"law-enforcement"}"#;
    let (status, answer) = http(s.api_addr(), &token(s), "POST", "/v1/subscriptions", body).await;
    assert_eq!(status, 201, "{answer}");
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    v["id"].as_str().unwrap().to_owned()
}

async fn restart(cfg: &std::path::Path) -> RunningNode {
    RunningNode::start(config::load(cfg).unwrap()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_the_application_masked_and_scoped_exactly_once_across_restarts_of_either_side() {
    let Setup { fed, provider, provider_cfg, subscriber, subscriber_cfg, .. } = setup().await;
    let id = subscribe(&subscriber).await;
    publish(&provider, 0..3, "wuxi.liangxi.chongan").await;
    // Another district's case: never delivered to the liangxi police.
    publish(&provider, 3..4, "wuxi.xinwu").await;
    let got = read_events(&subscriber, &id, 0, 3).await;
    assert_eq!(got.iter().map(|v| v["@id"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(got[0]["party_name"], "张*", "grade 3 above clearance 2 arrives masked: {}", got[0]);
    assert_eq!(got[0]["@op"], "insert");
    let (status, body) = http(
        subscriber.api_addr(),
        &token(&subscriber),
        "POST",
        &format!("/v1/subscriptions/{id}/ack"),
        r#"{"upto":3}"#,
    )
    .await;
    assert_eq!((status, body.trim()), (200, r#"{"delivered":3}"#));

    // The subscriber goes away; events published meanwhile wait at the provider.
    subscriber.shutdown().await;
    publish(&provider, 4..6, "wuxi.liangxi").await;
    let subscriber = restart(&subscriber_cfg).await;
    let got = read_events(&subscriber, &id, 0, 2).await;
    // Acknowledged events are never handed out again; the new ones arrive once.
    assert_eq!(got.iter().map(|v| v["@id"].as_u64().unwrap()).collect::<Vec<_>>(), [5, 6]);

    // The provider restarts; the subscriber reconnects by itself.
    provider.shutdown().await;
    let provider = restart(&provider_cfg).await;
    publish(&provider, 6..7, "wuxi.liangxi").await;
    let got = read_events(&subscriber, &id, 6, 1).await;
    assert_eq!(got.iter().map(|v| v["@id"].as_u64().unwrap()).collect::<Vec<_>>(), [7]);
    let all = read_events(&subscriber, &id, 0, 3).await;
    assert_eq!(all.len(), 3, "{all:?}");
    drop(fed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawn_grant_stops_the_subscription_and_says_why() {
    let Setup { fed, provider, subscriber, grants, .. } = setup().await;
    let id = subscribe(&subscriber).await;
    publish(&provider, 0..1, "wuxi.liangxi").await;
    assert_eq!(read_events(&subscriber, &id, 0, 1).await.len(), 1);
    // The steward withdraws the grant (a file the provider reloads every second).
    std::fs::write(&grants, GRANTS.replace("\"read\", \"subscribe\"", "\"read\"")).unwrap();
    provider.reload_rules().await.unwrap();
    publish(&provider, 1..2, "wuxi.liangxi").await;
    let got = read_events(&subscriber, &id, 1, 1).await;
    let last = got.last().unwrap();
    assert_eq!(last["@state"], "stopped", "{got:?}");
    assert!(last["reason"].as_str().unwrap().contains("no grant"), "{last}");
    assert!(got.iter().all(|v| v["@id"].as_u64() != Some(2)), "nothing after the withdrawal: {got:?}");
    let (status, body) =
        http(subscriber.api_addr(), &token(&subscriber), "GET", "/v1/subscriptions", "").await;
    assert_eq!(status, 200);
    assert!(body.contains(r#""state":"stopped""#), "{body}");
    drop(fed);
}
