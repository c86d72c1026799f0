//! The local HTTP API against real gateways on loopback: strict request bodies, one error shape
//! for every rejection, the documented statuses, and connection limits that leave the federation
//! link serving whatever the API is going through.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use fedgate_gateway::node::RunningNode;
use fedgate_gateway::quic::Transfer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PROVIDER: &str = "womens-federation@wuxi";
const CONSUMER: &str = "mediation-center@wuxi";

const GRANTS: &str = r#"
[[grant]]
id = "centre"
to = "mediation-center@wuxi"
datasets = ["cases"]
purposes = ["dispute-mediation"]
clearance = 4
rows = "all"
"#;

struct Pair {
    _fed: Federation,
    db: std::path::PathBuf,
    provider: RunningNode,
    consumer: RunningNode,
    token: String,
}

/// A provider serving `cases` (20 rows from SQLite) and a consumer with `extra` config.
async fn pair(provider_extra: &str, consumer_extra: &str) -> Pair {
    let fed = Federation::new();
    let db = fed.dir.path().join("cases.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "CREATE TABLE cases (case_id TEXT NOT NULL, region TEXT NOT NULL, party_name TEXT NOT NULL);",
    )
    .unwrap();
    for i in 0..20 {
        conn.execute(
            "INSERT INTO cases VALUES (?1, 'wuxi.liangxi', ?2)",
            rusqlite::params![format!("C{i:03}"), format!("name {i}")],
        )
        .unwrap();
    }
    drop(conn);
    let cat = fed.file("cases.catalog.toml", &dataset("cases", PROVIDER, "conditional"));
    let grants = fed.file("cases.grants.toml", GRANTS);
    let extra = format!(
        "catalog = [{:?}]\ngrants = [{:?}]\n{provider_extra}\n[[sources]]\ndataset = \"cases\"\nsqlite = {:?}\ntable = \"cases\"\n",
        path_str(&cat),
        path_str(&grants),
        path_str(&db)
    );
    let provider = fed.start_with(PROVIDER, &extra).await;
    let consumer = fed.start_with(CONSUMER, &format!("{consumer_extra}\n{}", peer_entry(&provider))).await;
    let token = std::fs::read_to_string(&consumer.config().api_token).unwrap().trim().to_owned();
    Pair { _fed: fed, db, provider, consumer, token }
}

/// One HTTP/1.1 exchange over a fresh connection: (status, content type, body).
async fn http(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("{head}\r\nHost: api\r\nConnection: close\r\nContent-Length: {}\r\n\r\n", body.len());
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (headers, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = headers.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let ctype = headers
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-type: ").map(str::to_owned))
        .unwrap_or_default();
    let chunked = headers.to_ascii_lowercase().contains("transfer-encoding: chunked");
    (status, ctype, if chunked { dechunk(body) } else { body.to_owned() })
}

/// The payload of a chunked body (sizes in hex, each chunk followed by CRLF).
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

fn auth(token: &str) -> String {
    format!("\r\nAuthorization: Bearer {token}")
}

async fn post_query(p: &Pair, body: &str) -> (u16, String, String) {
    let head = format!("POST /v1/query HTTP/1.1{}\r\nContent-Type: application/json", auth(&p.token));
    http(p.consumer.api_addr(), &head, body.as_bytes()).await
}

/// The chunks of a chunked HTTP/1.1 body, each as the gateway wrote it.
fn chunks(mut rest: &str) -> Vec<String> {
    let mut out = Vec::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            break;
        }
        out.push(after[..n].to_owned());
        rest = &after[n + 2..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_reaches_its_limit_goes_out_with_its_end_in_one_chunk() {
    let p = pair("", "").await;
    let api = p.consumer.api_addr();
    let raw = |limit: u32| {
        let head = format!("POST /v1/query HTTP/1.1{}\r\nContent-Type: application/json", auth(&p.token));
        let body = format!(r#"{{{GOOD},"limit":{limit}}}"#);
        async move {
            let mut s = TcpStream::connect(api).await.unwrap();
            let req = format!(
                "{head}\r\nHost: api\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            s.write_all(req.as_bytes()).await.unwrap();
            let mut raw = Vec::new();
            s.read_to_end(&mut raw).await.unwrap();
            let text = String::from_utf8(raw).unwrap();
            chunks(text.split_once("\r\n\r\n").unwrap().1)
        }
    };
    // Two of 20 rows: the records and the verified `@end` are one write, after the receipt.
    let got = raw(2).await;
    assert_eq!(got.len(), 1, "{got:?}");
    let lines: Vec<serde_json::Value> = got[0].lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3, "{got:?}");
    assert!(lines[0]["case_id"].is_string() && lines[1]["case_id"].is_string(), "{got:?}");
    let end = &lines[2]["@end"];
    assert_eq!(end["count"], 2, "{got:?}");
    assert!(end["signature"].as_str().is_some_and(|s| !s.is_empty()), "{got:?}");
    assert!(end["truncated"].is_string(), "a limit that cut the answer says so: {got:?}");
    // The receipt was durable before `@end` was written: it is on disk now, citing this answer.
    let cfg = p.consumer.config();
    let reader = fedgate_audit::AuditKeys::load_reader(&cfg.audit_key).unwrap();
    let mut receipts = Vec::new();
    fedgate_audit::entries(&cfg.audit_dir, &reader, |e| {
        if e.kind == Some(fedgate_audit::Kind::RequestOut) {
            receipts.push(e);
        }
        Ok(())
    })
    .unwrap();
    let receipt = receipts.last().expect("a receipt on disk before @end");
    assert_eq!(receipt.records, Some(2));
    assert_eq!(receipt.signature.as_deref(), end["signature"].as_str());
    // A limit above what matched: the records still go out as they come, then `@end`.
    let got = raw(50).await;
    let all: String = got.concat();
    assert_eq!(all.lines().count(), 21, "{got:?}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(all.lines().last().unwrap()).unwrap()["@end"]["count"],
        20
    );
    assert!(got.len() >= 2, "{got:?}");
}

/// The documented Error JSON: `{"error": "...", "code": "..."}`, nothing else.
fn error_body(ctype: &str, body: &str) -> (String, String) {
    assert_eq!(ctype, "application/json", "{body}");
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let obj = v.as_object().unwrap();
    assert_eq!(obj.len(), 2, "{body}");
    (obj["error"].as_str().unwrap().to_owned(), obj["code"].as_str().unwrap().to_owned())
}

const GOOD: &str = r#""peer":"womens-federation@wuxi","dataset":"cases","purpose":"dispute-mediation""#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_keys_and_bad_values_are_400s_naming_the_key() {
    let p = pair("", "").await;
    // The report: `filters` instead of `where` returned every record unfiltered.
    let (status, ctype, body) =
        post_query(&p, &format!(r#"{{{GOOD},"filters":{{"case_id":"C001"}}}}"#)).await;
    assert_eq!(status, 400, "{body}");
    let (error, code) = error_body(&ctype, &body);
    assert_eq!(code, "bad-request");
    assert_eq!(
        error,
        "unknown key `filters` in the request body; the known keys are peer, dataset, purpose, where, limit, timeout_ms"
    );
    for (bad, want) in [
        (format!(r#"{{{GOOD},"limit":0}}"#), "`limit` must be a whole number from 1 to"),
        (format!(r#"{{{GOOD},"limit":-3}}"#), "`limit` must be a whole number from 1 to"),
        (format!(r#"{{{GOOD},"where":{{"case_id":null}}}}"#), "`where.case_id` must be a string"),
        (r#"{"peer":"womens-federation@wuxi","dataset":"cases"}"#.to_owned(), "`purpose` is required"),
        (r#"{"peer":"Not A Node","dataset":"cases","purpose":"p"}"#.to_owned(), "`peer`: "),
        (format!(r#"{{{GOOD},"peer":"x@y"}}"#), "key `peer` appears twice"),
    ] {
        let (status, ctype, body) = post_query(&p, &bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        let (error, _) = error_body(&ctype, &body);
        assert!(error.contains(want), "{bad}: {error}");
    }
    // The same body with `where` filters as asked.
    let (status, ctype, body) = post_query(&p, &format!(r#"{{{GOOD},"where":{{"case_id":"C001"}}}}"#)).await;
    assert_eq!((status, ctype.as_str()), (200, "application/x-ndjson"), "{body}");
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines.len(), 2, "{body}");
    assert!(lines[0].contains("\"C001\"") && lines[1].starts_with("{\"@end\""), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framework_rejections_come_back_as_the_documented_error_json() {
    let p = pair("", "").await;
    let api = p.consumer.api_addr();
    let token = auth(&p.token);
    let big = format!(r#"{{{GOOD},"purpose":"{}"}}"#, "x".repeat(70 * 1024));
    let cases: Vec<(String, Vec<u8>, u16, &str)> = vec![
        (
            format!("POST /v1/query HTTP/1.1{token}\r\nContent-Type: application/json"),
            b"{\"peer\":".to_vec(),
            400,
            "bad-request",
        ),
        (
            format!("POST /v1/query HTTP/1.1{token}\r\nContent-Type: text/plain"),
            GOOD.as_bytes().to_vec(),
            415,
            "unsupported-media-type",
        ),
        (
            format!("POST /v1/query HTTP/1.1{token}"),
            format!("{{{GOOD}}}").into_bytes(),
            415,
            "unsupported-media-type",
        ),
        (
            format!("POST /v1/query HTTP/1.1{token}\r\nContent-Type: application/json"),
            big.into_bytes(),
            413,
            "too-large",
        ),
        (format!("GET /v1/nothing HTTP/1.1{token}"), vec![], 404, "not-found"),
        (format!("GET /v1/query HTTP/1.1{token}"), vec![], 405, "method-not-allowed"),
        (format!("DELETE /v1/catalog HTTP/1.1{token}"), vec![], 405, "method-not-allowed"),
        ("GET /v1/catalog HTTP/1.1".to_owned(), vec![], 401, "unauthorized"),
        ("GET /v1/peers HTTP/1.1\r\nAuthorization: Bearer wrong".to_owned(), vec![], 401, "unauthorized"),
        (
            "POST /v1/query HTTP/1.1\r\nContent-Type: application/json".to_owned(),
            format!("{{{GOOD}}}").into_bytes(),
            401,
            "unauthorized",
        ),
        (format!("GET /v1/peers/%FF/catalog HTTP/1.1{token}"), vec![], 400, "bad-request"),
        (format!("GET /v1/peers/court@wuxi.xinwu/catalog HTTP/1.1{token}"), vec![], 404, "unknown-peer"),
    ];
    for (head, body, want_status, want_code) in cases {
        let (status, ctype, text) = http(api, &head, &body).await;
        assert_eq!(status, want_status, "{head}: {text}");
        let (_, code) = error_body(&ctype, &text);
        assert_eq!(code, want_code, "{head}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_down_before_the_first_record_is_a_503() {
    let p = pair("", "").await;
    let (status, _, body) = post_query(&p, &format!("{{{GOOD}}}")).await;
    assert_eq!(status, 200, "{body}");
    // The source goes away while the gateway runs.
    std::fs::remove_file(&p.db).unwrap();
    let (status, ctype, body) = post_query(&p, &format!("{{{GOOD}}}")).await;
    assert_eq!(status, 503, "{body}");
    let (_, code) = error_body(&ctype, &body);
    assert_eq!(code, "source-unavailable");
}

/// Opens up to `n` connections to `addr` and returns the ones that connected within `wait`.
async fn open_idle(addr: SocketAddr, n: usize, wait: Duration) -> Vec<TcpStream> {
    let tasks: Vec<_> =
        (0..n).map(|_| tokio::spawn(tokio::time::timeout(wait, TcpStream::connect(addr)))).collect();
    let mut out = Vec::new();
    for t in tasks {
        if let Ok(Ok(Ok(s))) = t.await {
            out.push(s);
        }
    }
    out
}

/// True if and only if the server closed `s` within `wait`.
async fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(wait, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_api_connections_are_capped_and_closed_while_quic_serves() {
    const CAP: usize = 1000;
    const IDLE: usize = 2000;
    let limits =
        format!("\n[api_limits]\nmax_connections = {CAP}\nheader_timeout_secs = 3\nidle_timeout_secs = 10\n");
    // Limits on the provider: its API is flooded while it serves the consumer over QUIC. The
    // node raises its own open-file limit, which 1,000 + 2,000 sockets here need.
    let p = pair(&limits, "").await;
    let api = p.provider.api_addr();
    let mut idle = open_idle(api, IDLE, Duration::from_secs(5)).await;
    assert_eq!(idle.len(), IDLE, "the kernel queues what the API does not accept yet");

    // Exactly CAP of them are being served: those answer a request, the rest are not accepted.
    let req = b"GET /healthz HTTP/1.1\r\nHost: api\r\n\r\n";
    let answered: Vec<bool> = answered_at_once(&mut idle, req).await;
    let served = answered.iter().filter(|a| **a).count();
    assert_eq!(served, CAP, "served connections");

    // The federation link keeps serving: a verified transfer from the flooded provider.
    let started = Instant::now();
    let pc = p.consumer.peer(&id(PROVIDER)).await.unwrap();
    let mut t = Transfer::start(&pc, &p.consumer.config().node, "cases", "dispute-mediation", vec![], None)
        .await
        .unwrap();
    let mut n = 0;
    while let Some(b) = t.next_batch().await.unwrap() {
        n += b.len();
    }
    assert_eq!(n, 20);
    assert!(started.elapsed() < Duration::from_secs(2), "the transfer waited on the API");

    // Idle connections are closed after the header timeout, the queued ones as they get their turn.
    let deadline = Duration::from_secs(3 * (IDLE / CAP) as u64 + 10);
    let started = Instant::now();
    for s in idle.iter_mut() {
        let left = deadline.saturating_sub(started.elapsed());
        assert!(closed_within(s, left).await, "an idle connection stayed open {deadline:?}");
    }
    drop(idle);
    // And the API serves again.
    let (status, _, body) = http(api, "GET /healthz HTTP/1.1", b"").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
}

/// Sends `req` on every connection at once and reports which got an answer within a second.
async fn answered_at_once(conns: &mut [TcpStream], req: &[u8]) -> Vec<bool> {
    for s in conns.iter_mut() {
        s.write_all(req).await.unwrap();
    }
    let mut out = Vec::with_capacity(conns.len());
    let until = Instant::now() + Duration::from_secs(1);
    for s in conns.iter_mut() {
        let mut buf = [0u8; 12];
        let left = until.saturating_duration_since(Instant::now());
        let got = matches!(tokio::time::timeout(left, s.read_exact(&mut buf)).await, Ok(Ok(_)));
        out.push(got && buf.starts_with(b"HTTP/1.1 200"));
    }
    out
}

/// `POST /v1/datasets/{id}/events` at the provider: records checked against the catalog, ids
/// that grow, and the Error JSON naming the record and field at fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_events_get_growing_ids_and_bad_records_name_their_field() {
    let p = pair("", "").await;
    let token = std::fs::read_to_string(&p.provider.config().api_token).unwrap().trim().to_owned();
    let post = |path: &str, body: &str| {
        let head = format!("POST {path} HTTP/1.1{}\r\nContent-Type: application/json", auth(&token));
        let (addr, body) = (p.provider.api_addr(), body.to_owned());
        async move { http(addr, &head, body.as_bytes()).await }
    };
    let rec = r#"{"case_id":"C900","region":"wuxi.liangxi","party_name":"张三"}"#;
    let (status, _, body) =
        post("/v1/datasets/cases/events", &format!(r#"{{"records":[{rec},{rec}]}}"#)).await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((v["first"].as_u64(), v["last"].as_u64(), v["count"].as_u64()), (Some(1), Some(2), Some(2)));
    let (status, _, body) =
        post("/v1/datasets/cases/events", &format!(r#"{{"op":"update","records":[{rec}]}}"#)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""first":3"#), "{body}");
    let (status, ctype, body) =
        post("/v1/datasets/cases/events", r#"{"records":[{"case_id":"C1","region":"nowhere!"}]}"#).await;
    assert_eq!(status, 400, "{body}");
    let (error, code) = error_body(&ctype, &body);
    assert_eq!(code, "bad-request");
    assert!(error.starts_with("dataset `cases`: records[0]: `region` must be a region path"), "{error}");
    let (status, ctype, body) =
        post("/v1/datasets/nothing/events", &format!(r#"{{"records":[{rec}]}}"#)).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(error_body(&ctype, &body).1, "unknown-dataset");
    // Without the token: refused like every other authenticated path.
    let (status, _, _) = http(p.provider.api_addr(), "POST /v1/datasets/cases/events HTTP/1.1", b"{}").await;
    assert_eq!(status, 401);
}
