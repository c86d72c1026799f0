//! Referrals between real `fedgate serve` processes of the demo federation, with SIGKILL of the
//! sender and of the receiver at each step (right after a step is taken, while it is on its way,
//! and a moment later): afterwards every referral has its whole history once, in order, on both
//! ends, and the receiver's application saw each step exactly once.

use std::collections::{BTreeMap, BTreeSet};
mod served;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use served::*;

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Waits until every referral in `ids` is in `state` at `api`.
fn wait_all(api: &Api, ids: &[String], state: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in ids {
        loop {
            let (status, body) = api.get(&format!("/v1/referrals/{id}"));
            if status == 200 && json(&body)["state"] == state {
                break;
            }
            assert!(Instant::now() < deadline, "{id} never became {state}: {status} {body}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn step(api: &Api, id: &str, name: &str, body: serde_json::Value) {
    let (status, text) = api.post(&format!("/v1/referrals/{id}/{name}"), &body);
    assert_eq!(status, 200, "{name} {id}: {text}");
}

#[test]
fn sigkill_at_each_step_neither_loses_nor_repeats_a_referral_step() {
    let t = tempfile::tempdir().unwrap();
    let dir: PathBuf = t.path().join("demo");
    let o = fedgate(&["demo", "--dir", s(&dir), "--records", "10"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let hotline_cfg = dir.join("hotline12345@wuxi/gateway.toml");
    let grid_cfg = dir.join("grid@wuxi.liangxi.chongan/gateway.toml");
    let mut hotline = serve(&hotline_cfg);
    let mut grid = serve(&grid_cfg);
    let (hapi, gapi) = (Api::new(&hotline_cfg), Api::new(&grid_cfg));
    let (_, before) = gapi.get("/v1/referrals/events?after=0");
    let first_event = before.lines().count() as u64;

    // Send: the receiver killed as they arrive, the sender killed with them in its outbox.
    let mut ids = Vec::new();
    for round in 0..4 {
        for i in 0..5 {
            let body = serde_json::json!({
                "department": "grid", "region": "wuxi.liangxi.chongan",
                "reference": format!("K{round}-{i}"), "subject": "noise", "working_days": 5,
            });
            let (status, text) = hapi.post("/v1/referrals", &body);
            assert_eq!(status, 201, "{text}");
            ids.push(json(&text)["exchange"].as_str().unwrap().to_owned());
        }
        match round {
            0 => kill_and_restart(&mut hotline, &hotline_cfg),
            1 => kill_and_restart(&mut grid, &grid_cfg),
            2 => {
                std::thread::sleep(Duration::from_millis(30));
                kill_and_restart(&mut hotline, &hotline_cfg);
            }
            _ => {
                std::thread::sleep(Duration::from_millis(30));
                kill_and_restart(&mut grid, &grid_cfg);
            }
        }
    }
    wait_all(&gapi, &ids, "received");
    wait_all(&hapi, &ids, "received");

    // The receiver's steps, with kills of either end between them.
    for (n, id) in ids.iter().enumerate() {
        step(&gapi, id, "accept", serde_json::json!({}));
        step(&gapi, id, "update", serde_json::json!({"notes": "visited"}));
        step(&gapi, id, "resolve", serde_json::json!({"result": "agreed", "feedback": "ok"}));
        match n % 5 {
            0 => kill_and_restart(&mut grid, &grid_cfg),
            2 => kill_and_restart(&mut hotline, &hotline_cfg),
            _ => {}
        }
    }
    wait_all(&hapi, &ids, "resolved");
    for (n, id) in ids.iter().enumerate() {
        step(&hapi, id, "close", serde_json::json!({}));
        if n % 7 == 3 {
            kill_and_restart(&mut hotline, &hotline_cfg);
        }
    }
    wait_all(&gapi, &ids, "closed");

    // Both ends hold the same history, each step once, in order.
    let want = ["send", "receive", "accept", "update", "resolve", "close"];
    for id in &ids {
        for api in [&hapi, &gapi] {
            let r = json(&api.get(&format!("/v1/referrals/{id}")).1);
            let steps: Vec<&str> =
                r["history"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap()).collect();
            assert_eq!(steps, want, "{r}");
            let seqs: Vec<u64> =
                r["history"].as_array().unwrap().iter().map(|s| s["seq"].as_u64().unwrap()).collect();
            assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
        }
    }
    // The receiver's application saw every step of every referral exactly once.
    let (_, all) = gapi.get(&format!("/v1/referrals/events?after={first_event}"));
    let mut seen: BTreeMap<(String, u64), usize> = BTreeMap::new();
    for line in all.lines() {
        let v = json(line);
        *seen.entry((v["exchange"].as_str().unwrap().to_owned(), v["seq"].as_u64().unwrap())).or_default() +=
            1;
    }
    assert!(seen.values().all(|n| *n == 1), "a step seen twice: {seen:?}");
    let ours: BTreeSet<&String> = seen.keys().map(|(x, _)| x).collect();
    assert_eq!(ours.len(), ids.len());
    assert_eq!(seen.len(), ids.len() * want.len());
    drop((hotline, grid));
}
