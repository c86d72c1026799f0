//! Subscriptions between real `fedgate serve` processes of the demo federation, with SIGKILL of
//! the subscriber and of the provider at several points while events stream: afterwards the
//! application has every published event exactly once, in id order.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn fedgate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fedgate")).args(args).output().expect("run fedgate")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A `fedgate serve` child, SIGKILLed when dropped.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(cfg: &Path) -> Served {
    let served = Served(
        Command::new(env!("CARGO_BIN_EXE_fedgate"))
            .args(["serve", "--config", s(cfg)])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let api = fedgate_gateway::config::load(cfg).unwrap().api;
    for _ in 0..200 {
        if std::net::TcpStream::connect(api).is_ok() {
            return served;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("gateway for {} did not start", cfg.display());
}

/// SIGKILL, then a fresh process on the same folder.
fn kill_and_restart(p: &mut Served, cfg: &Path) {
    p.0.kill().unwrap();
    p.0.wait().unwrap();
    *p = serve(cfg);
}

struct Api {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl Api {
    fn new(cfg: &Path) -> Api {
        let c = fedgate_gateway::config::load(cfg).unwrap();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Api {
            base: format!("http://{}", c.api),
            token: std::fs::read_to_string(&c.api_token).unwrap().trim().to_owned(),
            agent,
        }
    }

    fn post(&self, path: &str, body: &serde_json::Value) -> (u16, String) {
        let r = self
            .agent
            .post(&format!("{}{path}", self.base))
            .header("Authorization", &format!("Bearer {}", self.token))
            .header("Content-Type", "application/json")
            .send(body.to_string().as_bytes())
            .unwrap();
        let status = r.status().as_u16();
        (status, r.into_body().read_to_string().unwrap())
    }

    fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .agent
            .get(&format!("{}{path}", self.base))
            .header("Authorization", &format!("Bearer {}", self.token))
            .call()
            .unwrap();
        let status = r.status().as_u16();
        (status, r.into_body().read_to_string().unwrap())
    }
}

fn ticket(id: &str) -> serde_json::Value {
    serde_json::json!({
        "ticket_id": id, "region": "wuxi.liangxi.chongan.guangrui", "caller_name": "王小明",
        "caller_mobile": "13912345678", "address": "江苏省无锡市梁溪区崇安寺街道广瑞路1号",
        "received_at": "2026-11-29T08:00:00+08:00", "category": "邻里纠纷",
        "content": "楼上噪音，来电人电话13912345678", "status": "open", "handler": "李四",
        "urgency": 2, "channel": "phone", "closed": false,
    })
}

fn publish(hotline: &Api, ids: &[String]) {
    let records: Vec<serde_json::Value> = ids.iter().map(|i| ticket(i)).collect();
    let (status, body) =
        hotline.post("/v1/datasets/hotline-tickets/events", &serde_json::json!({ "records": records }));
    assert_eq!(status, 200, "{body}");
}

/// Every stored item of the subscription after `after`, in order.
fn read_all(grid: &Api, id: &str, mut after: u64) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    loop {
        let (status, body) = grid.get(&format!("/v1/subscriptions/{id}/events?after={after}&limit=1000"));
        assert_eq!(status, 200, "{body}");
        let items: Vec<serde_json::Value> = body.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let Some(last) = items.last().and_then(|v| v["@id"].as_u64()) else { return out };
        after = last;
        out.extend(items);
    }
}

#[test]
fn sigkill_of_either_side_mid_stream_loses_nothing_and_repeats_nothing() {
    let t = tempfile::tempdir().unwrap();
    let dir: PathBuf = t.path().join("demo");
    let o = fedgate(&["demo", "--dir", s(&dir), "--records", "10"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let hotline_cfg = dir.join("hotline12345@wuxi/gateway.toml");
    let grid_cfg = dir.join("grid@wuxi.liangxi.chongan/gateway.toml");
    let mut hotline = serve(&hotline_cfg);
    let mut grid = serve(&grid_cfg);
    let o = fedgate(&[
        "subscribe",
        "--config",
        s(&grid_cfg),
        "--peer",
        "hotline12345@wuxi",
        "--dataset",
        "hotline-tickets",
        "--purpose",
        "dispute-mediation",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let id = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    let (hapi, gapi) = (Api::new(&hotline_cfg), Api::new(&grid_cfg));

    let mut published = Vec::new();
    let mut app = Vec::new();
    for round in 0..6 {
        for part in 0..3 {
            let ids: Vec<String> = (0..100).map(|i| format!("T{round}-{part}-{i:03}")).collect();
            publish(&hapi, &ids);
            published.extend(ids);
        }
        // Kill while the batches are on their way (at once, or a moment later).
        match round {
            0 => kill_and_restart(&mut grid, &grid_cfg),
            1 => kill_and_restart(&mut hotline, &hotline_cfg),
            2 => {
                std::thread::sleep(Duration::from_millis(40));
                kill_and_restart(&mut grid, &grid_cfg);
            }
            3 => {
                std::thread::sleep(Duration::from_millis(40));
                kill_and_restart(&mut hotline, &hotline_cfg);
            }
            4 => {
                // The application takes what arrived so far and acknowledges it; then the
                // subscriber dies.
                let got = read_all(&gapi, &id, 0);
                if let Some(last) = got.last().and_then(|v| v["@id"].as_u64()) {
                    let (status, body) =
                        gapi.post(&format!("/v1/subscriptions/{id}/ack"), &serde_json::json!({"upto": last}));
                    assert_eq!(status, 200, "{body}");
                }
                app.extend(got);
                kill_and_restart(&mut grid, &grid_cfg);
            }
            _ => {}
        }
    }
    // Everything arrives in the end (the subscriber's loop retries on its own).
    let after = app.last().and_then(|v| v["@id"].as_u64()).unwrap_or(0);
    let ours = |items: &[serde_json::Value]| {
        items.iter().filter(|v| v["ticket_id"].as_str().is_some_and(|t| t.starts_with('T'))).count()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut rest = read_all(&gapi, &id, 0);
    while ours(&app) + ours(&rest) < published.len() {
        assert!(
            Instant::now() < deadline,
            "only {} of {} events arrived",
            ours(&app) + ours(&rest),
            published.len()
        );
        std::thread::sleep(Duration::from_millis(200));
        rest = read_all(&gapi, &id, 0);
    }
    // What the application acknowledged is gone; the rest follows it, once.
    assert!(rest.first().is_none_or(|v| v["@id"].as_u64().unwrap() > after), "acknowledged events came back");
    app.extend(rest);
    let ids: Vec<u64> = app.iter().map(|v| v["@id"].as_u64().unwrap()).collect();
    // Ids from 1 without a hole or a repeat (the demo's own showcase tickets come first).
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>(), "every event once, in order");
    let tickets: Vec<&str> = app.iter().map(|v| v["ticket_id"].as_str().unwrap()).collect();
    let unique: BTreeSet<&str> = tickets.iter().copied().collect();
    assert_eq!(unique.len(), tickets.len(), "a ticket delivered twice");
    assert!(published.iter().all(|p| unique.contains(p.as_str())), "a published ticket is missing");
    assert_eq!(ours(&app), published.len());
    // Masked to the grid office's clearance (2) on the way, as its queries are.
    let first = app.iter().find(|v| v["ticket_id"] == "T0-0-000").unwrap();
    assert_eq!(first["caller_mobile"], "139****5678", "{first}");
    drop((hotline, grid));
}
