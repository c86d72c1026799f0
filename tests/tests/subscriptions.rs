//! Subscriptions between real gateways on loopback: events published at the provider's API, or
//! found by polling a source's cursor column (SQLite and PostgreSQL), reach the subscribing
//! application through its own gateway over mutual-TLS QUIC, desensitized as a query would be,
//! exactly once across restarts of either side; a withdrawn grant stops delivery.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::api::{http, token};
use common::*;
use fedgate_gateway::config;
use fedgate_gateway::node::RunningNode;

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
    setup_with(fed, &sources).await
}

/// Like [`setup`], the provider's `cases` served by the `[[sources]]` entry `sources`.
async fn setup_with(fed: Federation, sources: &str) -> Setup {
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

/// A source table whose changes are found by polling its cursor column, which is not a catalog
/// field: `seq` (an integer) in SQLite, `updated_at` (a timestamp set by the writer) in PostgreSQL.
enum Polled {
    Sqlite(PathBuf),
    Pg(tokio_postgres::Client, String),
}

impl Polled {
    fn sqlite(fed: &Federation) -> Polled {
        let db = fed.dir.path().join("polled.db");
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(
            "CREATE TABLE cases (case_id TEXT PRIMARY KEY, region TEXT, party_name TEXT, seq INTEGER);",
        )
        .unwrap();
        Polled::Sqlite(db)
    }

    async fn pg(conn: &str) -> Polled {
        let (client, driver) = tokio_postgres::connect(conn, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(driver);
        let table = format!("polled_cases_{}", std::process::id());
        client
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (case_id TEXT PRIMARY KEY, region TEXT,
                 party_name TEXT, updated_at timestamptz NOT NULL DEFAULT clock_timestamp());"
            ))
            .await
            .unwrap();
        Polled::Pg(client, table)
    }

    fn entry(&self, conn: &str) -> String {
        match self {
            Polled::Sqlite(db) => format!(
                "\n[[sources]]\ndataset = \"cases\"\nsqlite = {:?}\ntable = \"cases\"\ncursor = \"seq\"\npoll_ms = 100\n",
                path_str(db)
            ),
            Polled::Pg(_, table) => format!(
                "\n[[sources]]\ndataset = \"cases\"\npostgres = {conn:?}\ntable = \"{table}\"\ncursor = \"updated_at\"\npoll_ms = 100\n"
            ),
        }
    }

    /// Inserts case `C{i:03}`, or changes its name, moving its cursor past every other row.
    async fn write(&self, i: u32, region: &str, name: &str) {
        let id = format!("C{i:03}");
        match self {
            Polled::Sqlite(db) => {
                let conn = rusqlite::Connection::open(db).unwrap();
                conn.execute(
                    "INSERT INTO cases VALUES (?1, ?2, ?3, (SELECT COALESCE(MAX(seq), 0) + 1 FROM cases))
                     ON CONFLICT(case_id) DO UPDATE SET party_name = ?3, seq = (SELECT MAX(seq) + 1 FROM cases)",
                    rusqlite::params![id, region, name],
                )
                .unwrap();
            }
            Polled::Pg(client, table) => {
                client
                    .execute(
                        &format!(
                            "INSERT INTO {table} VALUES ($1, $2, $3) ON CONFLICT (case_id)
                             DO UPDATE SET party_name = $3, updated_at = clock_timestamp()"
                        ),
                        &[&id, &region, &name],
                    )
                    .await
                    .unwrap();
            }
        }
    }
}

/// Waits until the provider's first poll of `cases` has found where to start.
async fn polling_started(p: &RunningNode) {
    for _ in 0..100 {
        if p.shared().events.poll_cursor("cases").unwrap().is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the provider never polled `cases`");
}

fn ids_ops(got: &[serde_json::Value]) -> Vec<(u64, String, String)> {
    got.iter()
        .map(|v| {
            let (id, op, case) =
                (v["@id"].as_u64().unwrap(), v["@op"].as_str().unwrap(), v["case_id"].as_str().unwrap());
            (id, op.to_owned(), case.to_owned())
        })
        .collect()
}

/// Rows written to the source reach the subscribing application as insert/update events, masked
/// and scoped; rows there before polling started are not events; changes made while the provider
/// is down arrive once after it restarts, none twice.
async fn polled_changes_reach_the_application_once(fed: Federation, db: Polled, conn: &str) {
    db.write(0, "wuxi.liangxi", "王五").await;
    let Setup { fed, provider, provider_cfg, subscriber, .. } = setup_with(fed, &db.entry(conn)).await;
    let id = subscribe(&subscriber).await;
    polling_started(&provider).await;
    db.write(1, "wuxi.liangxi.chongan", "张一").await;
    db.write(2, "wuxi.liangxi", "张二").await;
    db.write(3, "wuxi.xinwu", "张三").await;
    db.write(0, "wuxi.liangxi", "王六").await;
    let got = read_events(&subscriber, &id, 0, 3).await;
    let want = |v: &[(u64, &str, &str)]| -> Vec<(u64, String, String)> {
        v.iter().map(|(i, o, c)| (*i, (*o).to_owned(), (*c).to_owned())).collect()
    };
    assert_eq!(ids_ops(&got), want(&[(1, "insert", "C001"), (2, "insert", "C002"), (4, "update", "C000")]));
    assert_eq!(got[2]["party_name"], "王*", "masked as a query would be: {}", got[2]);
    let (status, _) = http(
        subscriber.api_addr(),
        &token(&subscriber),
        "POST",
        &format!("/v1/subscriptions/{id}/ack"),
        r#"{"upto":4}"#,
    )
    .await;
    assert_eq!(status, 200);

    provider.shutdown().await;
    db.write(5, "wuxi.liangxi", "张五").await;
    db.write(6, "wuxi.liangxi", "张六").await;
    let provider = restart(&provider_cfg).await;
    db.write(7, "wuxi.liangxi", "张七").await;
    let got = read_events(&subscriber, &id, 4, 3).await;
    assert_eq!(ids_ops(&got), want(&[(5, "insert", "C005"), (6, "insert", "C006"), (7, "insert", "C007")]));
    // A while later, still nothing repeated.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (_, body) = http(
        subscriber.api_addr(),
        &token(&subscriber),
        "GET",
        &format!("/v1/subscriptions/{id}/events?after=4"),
        "",
    )
    .await;
    assert_eq!(body.lines().count(), 3, "{body}");
    assert_eq!(provider.shared().events.head("cases").unwrap(), 7);
    provider.shutdown().await;
    subscriber.shutdown().await;
    drop(fed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_changes_found_by_polling_reach_the_application_once_across_a_provider_restart() {
    let fed = Federation::new();
    let db = Polled::sqlite(&fed);
    polled_changes_reach_the_application_once(fed, db, "").await;
}

/// Needs FEDGATE_TEST_PG (`eval "$(bash .ci/postgres.sh start)"`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_changes_found_by_polling_reach_the_application_once_across_a_provider_restart() {
    let Ok(conn) = std::env::var("FEDGATE_TEST_PG") else {
        assert!(std::env::var("CI").is_err(), "CI must provide FEDGATE_TEST_PG");
        eprintln!("skipping: set FEDGATE_TEST_PG to run the PostgreSQL polling test");
        return;
    };
    let db = Polled::pg(&conn).await;
    polled_changes_reach_the_application_once(Federation::new(), db, &conn).await;
}

/// A cursor column that is missing, or cannot order changes, stops the start with its location.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_column_that_cannot_be_polled_stops_the_start_with_its_location() {
    let fed = Federation::new();
    let db = Polled::sqlite(&fed);
    rusqlite::Connection::open(fed.dir.path().join("polled.db"))
        .unwrap()
        .execute_batch("ALTER TABLE cases ADD COLUMN score REAL;")
        .unwrap();
    let cat = fed.file("cases.catalog.toml", &dataset("cases", PROVIDER, "conditional"));
    for (column, want) in [
        ("sqe", "cursor column `sqe` is not a column of table `cases` (did you mean `seq`?)"),
        (
            "score",
            "cursor column `score` is declared \"REAL\", which does not grow monotonically with changes",
        ),
    ] {
        let entry = db.entry("").replace("cursor = \"seq\"", &format!("cursor = \"{column}\""));
        let extra = format!("catalog = [{:?}]\n{entry}", path_str(&cat));
        let path = fed.node_folder_with(PROVIDER, &fed.issue(PROVIDER), &extra);
        let line =
            std::fs::read_to_string(&path).unwrap().lines().position(|l| l.starts_with("cursor")).unwrap()
                + 1;
        let err = match RunningNode::start(config::load(&path).unwrap()).await {
            Ok(_) => panic!("started with cursor {column}"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(&format!("gateway.toml:{line}:10: dataset `cases`: {want}")), "{err}");
    }
}
