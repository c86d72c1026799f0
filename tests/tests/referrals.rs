//! Referrals between real gateways on loopback (mutual-TLS QUIC, SQLite state, encrypted audit):
//! the hotline hands a case to the grid office, which passes it down to the community mediation
//! committee; the committee's result reaches the hotline. Steps by the wrong party, on a closed
//! referral, and a case the receiver has no grant for are refused (the last audited as a
//! denial); a referral past its deadline is listed first and flagged on both sides.

mod common;

use std::time::{Duration, Instant};

use common::api::{api, http, token};
use common::*;
use fedgate_gateway::node::{Prebound, RunningNode};
use serde_json::Value;

const HOTLINE: &str = "hotline12345@wuxi";
const GRID: &str = "grid@wuxi.liangxi.chongan";
const COMMITTEE: &str = "mediation@wuxi.liangxi.chongan.guangrui";

/// The grid office may receive hotline cases as referrals, names masked (grade 3 > clearance 2).
/// The committee has no grant: the hotline may refer to it only without a case.
const GRANTS: &str = r#"
[[grant]]
id = "grid-referrals"
to = "grid@wuxi.liangxi.chongan"
datasets = ["cases"]
actions = ["refer"]
purposes = ["dispute-mediation"]
clearance = 2
"#;

async fn ok(n: &RunningNode, method: &str, path: &str, body: &str) -> Value {
    let (status, v) = api(n, method, path, body).await;
    assert!(status == 200 || status == 201, "{method} {path}: {status} {v}");
    v
}

/// Waits until `n` holds referral `id` in `state`.
async fn wait_state(n: &RunningNode, id: &str, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, v) = api(n, "GET", &format!("/v1/referrals/{id}"), "").await;
        if status == 200 && v["state"] == state {
            return v;
        }
        assert!(Instant::now() < deadline, "{} never saw {id} {state}: {status} {v}", n.config().node);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A UDP socket bound on loopback, so three nodes can name each other before starting; each
/// node serves on its socket (a port released and bound again could be taken in between).
fn bound() -> std::net::UdpSocket {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap()
}

struct Three {
    fed: Federation,
    hotline: RunningNode,
    grid: RunningNode,
    committee: RunningNode,
}

async fn three() -> Three {
    let fed = Federation::new();
    let sources = fed.sqlite_sources(&["cases"]);
    let db = rusqlite::Connection::open(fed.dir.path().join("sources.db")).unwrap();
    db.execute_batch(
        "INSERT INTO cases VALUES ('C001', 'wuxi.liangxi.chongan', '张三'), ('C002', 'wuxi.liangxi.chongan', '李四');",
    )
    .unwrap();
    let cat = fed.file("cases.catalog.toml", &dataset("cases", HOTLINE, "conditional"));
    let grants = fed.file("cases.grants.toml", GRANTS);
    let sockets: Vec<_> = (0..3).map(|_| bound()).collect();
    let ports: Vec<u16> = sockets.iter().map(|s| s.local_addr().unwrap().port()).collect();
    let mut sockets: Vec<Option<_>> = sockets.into_iter().map(Some).collect();
    let peer =
        |node: &str, port: u16| format!("\n[[peers]]\nnode = \"{node}\"\naddress = \"127.0.0.1:{port}\"\n");
    let listen = |port: u16| format!("listen = \"127.0.0.1:{port}\"");
    let mut start = |node: &'static str, i: usize, extra: String| {
        let fed = &fed;
        let listen = listen(ports[i]);
        let socket = sockets[i].take().unwrap();
        async move {
            let path = fed.node_folder_with(node, &fed.issue(node), &extra);
            let text = std::fs::read_to_string(&path).unwrap().replace("listen = \"127.0.0.1:0\"", &listen);
            std::fs::write(&path, text).unwrap();
            let cfg = fedgate_gateway::config::load(&path).unwrap();
            RunningNode::start_on(cfg, Prebound { quic: Some(socket), ..Prebound::default() }).await.unwrap()
        }
    };
    let hotline_extra = format!(
        "catalog = [{:?}]\ngrants = [{:?}]\n{sources}{}{}",
        path_str(&cat),
        path_str(&grants),
        peer(GRID, ports[1]),
        peer(COMMITTEE, ports[2])
    );
    let hotline = start(HOTLINE, 0, hotline_extra).await;
    let grid = start(GRID, 1, format!("{}{}", peer(HOTLINE, ports[0]), peer(COMMITTEE, ports[2]))).await;
    let committee = start(COMMITTEE, 2, format!("{}{}", peer(HOTLINE, ports[0]), peer(GRID, ports[1]))).await;
    Three { fed, hotline, grid, committee }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_goes_down_three_levels_and_the_result_comes_back_to_the_hotline() {
    let Three { fed, hotline, grid, committee } = three().await;
    let sent = ok(
        &hotline,
        "POST",
        "/v1/referrals",
        &format!(
            r#"{{"to":"{GRID}","reference":"12345-0001","subject":"neighbours' dispute over noise",
                "instructions":"mediate within the week","working_days":5,
                "case":{{"dataset":"cases","purpose":"dispute-mediation","where":{{"case_id":"C001"}}}}}}"#
        ),
    )
    .await;
    let id = sent["exchange"].as_str().unwrap().to_owned();
    assert_eq!((sent["state"].as_str(), sent["party"].as_str()), (Some("sent"), Some("sender")));

    // The grid office's application learns of it from its events, the case masked for it.
    let token = token(&grid);
    let (status, lines) =
        http(grid.api_addr(), &token, "GET", "/v1/referrals/events?after=0&wait_ms=10000", "").await;
    assert_eq!(status, 200, "{lines}");
    let first: Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert_eq!((first["step"].as_str(), first["exchange"].as_str()), (Some("send"), Some(id.as_str())));
    assert_eq!(first["case"]["record"]["case_id"], "C001");
    assert_eq!(first["case"]["record"]["party_name"], "张*", "masked for clearance 2: {first}");
    wait_state(&hotline, &id, "received").await;

    ok(&grid, "POST", &format!("/v1/referrals/{id}/accept"), "").await;
    let child = ok(
        &grid,
        "POST",
        &format!("/v1/referrals/{id}/forward"),
        &format!(r#"{{"to":"{COMMITTEE}","reference":"grid-77","subject":"noise dispute","instructions":"mediate"}}"#),
    )
    .await;
    let child_id = child["exchange"].as_str().unwrap().to_owned();
    assert_eq!(child["parent"].as_str(), Some(id.as_str()));
    wait_state(&committee, &child_id, "received").await;
    ok(&committee, "POST", &format!("/v1/referrals/{child_id}/accept"), "").await;
    ok(&committee, "POST", &format!("/v1/referrals/{child_id}/update"), r#"{"notes":"visited both flats"}"#)
        .await;
    ok(
        &committee,
        "POST",
        &format!("/v1/referrals/{child_id}/resolve"),
        r#"{"result":"agreement signed: quiet hours 22:00-07:00","feedback":"both parties satisfied"}"#,
    )
    .await;

    // The result flows up: the grid office's parent referral is resolved with it, and the
    // hotline sees the whole chain in its history.
    let top = wait_state(&hotline, &id, "resolved").await;
    let steps: Vec<&str> =
        top["history"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(steps, ["send", "receive", "accept", "forward", "resolve"], "{top}");
    let fwd = &top["history"][3];
    assert_eq!(
        (fwd["forwarded_to"].as_str(), fwd["child"].as_str()),
        (Some(COMMITTEE), Some(child_id.as_str()))
    );
    assert_eq!(top["history"][4]["result"], "agreement signed: quiet hours 22:00-07:00");
    let at_grid = wait_state(&grid, &id, "resolved").await;
    assert_eq!(at_grid["forwarded"][0]["exchange"].as_str(), Some(child_id.as_str()));
    assert_eq!(at_grid["forwarded"][0]["state"], "resolved");

    // Refused: the receiver closing, the sender accepting, anything after closing.
    let (status, v) = api(&grid, "POST", &format!("/v1/referrals/{id}/close"), "").await;
    assert_eq!((status, v["code"].as_str()), (409, Some("conflict")), "{v}");
    let (status, _) = api(&hotline, "POST", &format!("/v1/referrals/{id}/accept"), "").await;
    assert_eq!(status, 409);
    ok(&hotline, "POST", &format!("/v1/referrals/{id}/close"), "").await;
    wait_state(&grid, &id, "closed").await;
    let (status, v) =
        api(&hotline, "POST", &format!("/v1/referrals/{id}/reopen"), r#"{"reason":"again"}"#).await;
    assert_eq!(status, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("closed referrals are final"), "{v}");

    // Both sides audited every step under the referral's exchange id.
    let steps_of = |n: &RunningNode| -> Vec<String> {
        audit_entries(n)
            .into_iter()
            .filter(|e| e.exchange.as_deref() == Some(id.as_str()))
            .filter_map(|e| e.decision)
            .collect()
    };
    let want = ["send", "receive", "accept", "forward", "resolve", "close"].map(|s| format!("referral-{s}"));
    // A step is stored (and its state shown) before its audit entry is written: wait for it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while (steps_of(&hotline) != want || steps_of(&grid) != want) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(steps_of(&hotline), want);
    assert_eq!(steps_of(&grid), want);
    drop((committee, fed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_without_a_grant_is_refused_and_audited_and_overdue_referrals_come_first() {
    let Three { fed, hotline, grid, committee } = three().await;
    let body = format!(
        r#"{{"to":"{COMMITTEE}","reference":"12345-0002","subject":"s",
            "case":{{"dataset":"cases","purpose":"dispute-mediation","where":{{"case_id":"C002"}}}}}}"#
    );
    let (status, v) = api(&hotline, "POST", "/v1/referrals", &body).await;
    assert_eq!((status, v["code"].as_str()), (403, Some("denied")), "{v}");
    let denied = audit_entries(&hotline)
        .into_iter()
        .find(|e| e.counterpart.as_deref() == Some(COMMITTEE) && e.decision.as_deref() == Some("deny"));
    let denied = denied.expect("the refusal is audited");
    assert_eq!(denied.dataset.as_deref(), Some("cases"));
    let (_, list) = api(&committee, "GET", "/v1/referrals", "").await;
    assert_eq!(list, Value::Array(vec![]), "nothing reached the committee");

    // Two referrals to the grid office: one already past its deadline, one due later.
    let send = |due: &str, r: &str| {
        format!(r#"{{"to":"{GRID}","reference":"{r}","subject":"s","deadline":"{due}"}}"#)
    };
    let late = ok(&hotline, "POST", "/v1/referrals", &send("2020-01-01", "late")).await;
    let fine = ok(&hotline, "POST", "/v1/referrals", &send("2099-01-01", "fine")).await;
    for n in [&hotline, &grid] {
        let id = fine["exchange"].as_str().unwrap();
        wait_state(n, id, "received").await;
        let (_, list) = api(n, "GET", "/v1/referrals", "").await;
        let list = list.as_array().unwrap();
        assert_eq!(list[0]["exchange"], late["exchange"], "{}: overdue first: {list:?}", n.config().node);
        assert_eq!((list[0]["overdue"].as_bool(), list[1]["overdue"].as_bool()), (Some(true), Some(false)));
    }
    drop(fed);
}

/// Starts `cfg` on the address a node that just stopped held (its socket may linger briefly).
async fn start_on_freed_port(cfg: fedgate_gateway::config::Config) -> RunningNode {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match RunningNode::start(cfg.clone()).await {
            Ok(n) => return n,
            Err(e) if Instant::now() < deadline => {
                eprintln!("{}: {e}; retrying", cfg.node);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{}: {e}", cfg.node),
        }
    }
}

/// A receiver that was away (here: its address answered by another node, so every delivery
/// fails at once and the sender's pause grows to 8 s) gets the pending referral as soon as it
/// is back and connects, not when the sender's pause ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_comes_back_gets_its_referral_at_once_not_after_the_backoff() {
    let Three { fed, hotline, grid, committee } = three().await;
    let grid_cfg = grid.config().clone();
    grid.shutdown().await;
    // Another node on the grid office's address: the hotline's handshakes fail at once.
    let impostor = "police@wuxi.liangxi";
    let path = fed.node_folder_with(impostor, &fed.issue(impostor), "");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("listen = \"127.0.0.1:0\"", &format!("listen = \"{}\"", grid_cfg.listen));
    std::fs::write(&path, text).unwrap();
    let away = start_on_freed_port(fedgate_gateway::config::load(&path).unwrap()).await;

    let sent = ok(
        &hotline,
        "POST",
        "/v1/referrals",
        &format!(r#"{{"to":"{GRID}","reference":"12345-0009","subject":"s","instructions":"i"}}"#),
    )
    .await;
    let id = sent["exchange"].as_str().unwrap().to_owned();
    // Failures at 0, 0.5, 1.5, 3.5 and 7.5 s: by 9 s the next try is not before 15.5 s.
    tokio::time::sleep(Duration::from_secs(9)).await;
    let (_, v) = api(&hotline, "GET", &format!("/v1/referrals/{id}"), "").await;
    assert_eq!(v["state"], "sent", "the impostor must not have taken it: {v}");
    away.shutdown().await;

    let grid = start_on_freed_port(grid_cfg).await;
    let back = Instant::now();
    grid.shared().peer_catalog(&HOTLINE.parse().unwrap()).await.unwrap();
    wait_state(&grid, &id, "received").await;
    let took = back.elapsed();
    assert!(took < Duration::from_secs(4), "delivered {took:?} after the grid office came back");
    drop((committee, fed));
}
