//! Sharing requests and objections between real `fedgate serve` processes of the demo
//! federation, with SIGKILL of the consumer and of the provider at each step (right after a
//! request or objection is made, while it is on its way, a moment later, and between the
//! steward's decisions): afterwards each is held once on both sides, both agree on where it
//! stands, and both audit logs have every step, in order (a crash between an entry and the
//! store may repeat an entry, never lose one).

mod served;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use served::*;

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Waits until every item `ids` under `base` (`/v1/requests`, `/v1/objections`) is in `state`.
fn wait_all(api: &Api, base: &str, ids: &[String], state: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in ids {
        loop {
            let (status, body) = api.get(&format!("{base}/{id}"));
            if status == 200 && json(&body)["state"] == state {
                break;
            }
            assert!(Instant::now() < deadline, "{id} never became {state}: {status} {body}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The node's governance entries about exchange `id`, decisions in order, repeats of the same
/// decision in a row folded (a crash between audit and store repeats an entry by design).
fn steps(cfg: &Path, id: &str) -> Vec<String> {
    let o = fedgate(&[
        "audit",
        "show",
        "--config",
        s(cfg),
        "--kind",
        "governance",
        "--exchange",
        id,
        "--format",
        "jsonl",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut out: Vec<String> = Vec::new();
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        let d = json(line)["decision"].as_str().unwrap_or_default().to_owned();
        if out.last() != Some(&d) {
            out.push(d);
        }
    }
    out
}

/// Kills one side or the other, now or a moment later, by round.
fn kill_by_round(round: usize, consumer: &mut Served, ccfg: &Path, provider: &mut Served, pcfg: &Path) {
    match round % 4 {
        0 => kill_and_restart(consumer, ccfg),
        1 => kill_and_restart(provider, pcfg),
        2 => {
            std::thread::sleep(Duration::from_millis(30));
            kill_and_restart(consumer, ccfg);
        }
        _ => {
            std::thread::sleep(Duration::from_millis(30));
            kill_and_restart(provider, pcfg);
        }
    }
}

fn count(api: &Api, base: &str, id: &str) -> usize {
    let (status, body) = api.get(base);
    assert_eq!(status, 200, "{body}");
    json(&body).as_array().unwrap().iter().filter(|r| r["id"] == id).count()
}

#[test]
fn sigkill_at_each_step_neither_loses_nor_repeats_a_request_or_an_objection() {
    let t = tempfile::tempdir().unwrap();
    let dir: PathBuf = t.path().join("demo");
    let o = fedgate(&["demo", "--dir", s(&dir), "--records", "12"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    requests(&dir);
    objections(&dir);
}

fn requests(dir: &Path) {
    let (ccfg, pcfg) =
        (dir.join("court@wuxi.xinwu/gateway.toml"), dir.join("womens-federation@wuxi/gateway.toml"));
    let (mut court, mut federation) = (serve(&ccfg), serve(&pcfg));
    let (capi, papi) = (Api::new(&ccfg), Api::new(&pcfg));
    let mut ids = Vec::new();
    for round in 0..4 {
        for i in 0..3 {
            let body = serde_json::json!({
                "peer": "womens-federation@wuxi", "dataset": "family-disputes",
                "purpose": "dispute-mediation", "reason": format!("case K{round}-{i}"),
            });
            let (status, text) = capi.post("/v1/requests", &body);
            assert_eq!(status, 201, "{text}");
            ids.push(json(&text)["id"].as_str().unwrap().to_owned());
        }
        kill_by_round(round, &mut court, &ccfg, &mut federation, &pcfg);
    }
    wait_all(&papi, "/v1/requests", &ids, "pending");
    wait_all(&capi, "/v1/requests", &ids, "pending");
    for (n, id) in ids.iter().enumerate() {
        let (path, body) = if n % 2 == 0 {
            (format!("/v1/requests/{id}/approve"), serde_json::json!({"days": 30}))
        } else {
            (format!("/v1/requests/{id}/refuse"), serde_json::json!({"reason": "not needed"}))
        };
        let (status, text) = papi.post(&path, &body);
        assert_eq!(status, 200, "{path}: {text}");
        if n % 3 == 1 {
            kill_by_round(n, &mut court, &ccfg, &mut federation, &pcfg);
        }
    }
    for (n, id) in ids.iter().enumerate() {
        let (state, decision) = if n % 2 == 0 { ("approved", "approve") } else { ("refused", "refuse") };
        wait_all(&capi, "/v1/requests", std::slice::from_ref(id), state);
        assert_eq!((count(&capi, "/v1/requests", id), count(&papi, "/v1/requests", id)), (1, 1), "{id}");
        assert_eq!(steps(&ccfg, id), ["requested", "pending", state], "court, {id}");
        assert_eq!(steps(&pcfg, id), ["received", decision], "federation, {id}");
    }
}

fn objections(dir: &Path) {
    let (ccfg, pcfg) =
        (dir.join("mediation-center@wuxi/gateway.toml"), dir.join("petition@wuxi/gateway.toml"));
    let db = dir.join("petition@wuxi/data/petitions.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let keys: Vec<String> = conn
        .prepare("SELECT petition_id FROM records ORDER BY petition_id LIMIT 8 OFFSET 1")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    drop(conn);
    assert_eq!(keys.len(), 8);
    let (mut centre, mut petition) = (serve(&ccfg), serve(&pcfg));
    let (capi, papi) = (Api::new(&ccfg), Api::new(&pcfg));
    let mut ids = Vec::new();
    for (round, pair) in keys.chunks(2).enumerate() {
        for key in pair {
            let body = serde_json::json!({
                "peer": "petition@wuxi", "dataset": "petitions", "purpose": "dispute-mediation",
                "key": key, "field": "mobile", "reason": "wrong number",
            });
            let (status, text) = capi.post("/v1/objections", &body);
            assert_eq!(status, 201, "{text}");
            ids.push(json(&text)["id"].as_str().unwrap().to_owned());
        }
        kill_by_round(round, &mut centre, &ccfg, &mut petition, &pcfg);
    }
    wait_all(&papi, "/v1/objections", &ids, "open");
    wait_all(&capi, "/v1/objections", &ids, "open");
    // The provider's marker set came back from its store after each kill.
    kill_and_restart(&mut petition, &pcfg);
    let marked = |key: &str| {
        let body = serde_json::json!({"peer": "petition@wuxi", "dataset": "petitions",
            "purpose": "dispute-mediation", "where": {"petition_id": key}});
        let (status, text) = capi.post("/v1/query", &body);
        assert_eq!(status, 200, "{text}");
        json(text.lines().next().unwrap())["@objection"].clone()
    };
    for (key, id) in keys.iter().zip(&ids) {
        assert_eq!(marked(key)["id"], id.as_str(), "{key}");
    }
    for (n, id) in ids.iter().enumerate() {
        let (path, body) = if n % 2 == 0 {
            (format!("/v1/objections/{id}/accept"), serde_json::json!({"value": format!("1390000{n:04}")}))
        } else {
            (format!("/v1/objections/{id}/reject"), serde_json::json!({"reason": "the form says so"}))
        };
        let (status, text) = papi.post(&path, &body);
        assert_eq!(status, 200, "{path}: {text}");
        if n % 3 == 1 {
            kill_by_round(n, &mut centre, &ccfg, &mut petition, &pcfg);
        }
    }
    for (n, (id, key)) in ids.iter().zip(&keys).enumerate() {
        let (state, decision) = if n % 2 == 0 { ("accepted", "accept") } else { ("rejected", "reject") };
        wait_all(&capi, "/v1/objections", std::slice::from_ref(id), state);
        assert_eq!((count(&capi, "/v1/objections", id), count(&papi, "/v1/objections", id)), (1, 1), "{id}");
        assert!(marked(key).is_null(), "{key}: decided, so unmarked");
        assert_eq!(steps(&ccfg, id), ["filed", "open", state], "centre, {id}");
        assert_eq!(steps(&pcfg, id), ["received", decision], "petition, {id}");
    }
    drop((centre, petition));
}
