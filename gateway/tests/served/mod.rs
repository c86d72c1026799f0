//! Real `fedgate serve` processes of the demo federation, driven through their local APIs: the
//! harness the subscription process tests share.
#![allow(dead_code, unreachable_pub)]

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

/// The binary under test; FEDGATE_BIN picks another build (the release binary, for figures).
pub fn exe() -> String {
    std::env::var("FEDGATE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_fedgate").into())
}

pub fn fedgate(args: &[&str]) -> std::process::Output {
    Command::new(exe()).args(args).output().expect("run fedgate")
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A `fedgate serve` child, SIGKILLed when dropped.
pub struct Served(pub Child);

impl Served {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// SIGKILL: no close frames, no final audit entry, nothing flushed that was not already.
    pub fn crash(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }

    /// SIGTERM, and wait for the gateway to record its stop.
    pub fn stop(mut self) {
        let pid = self.0.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.0.try_wait().unwrap().is_none() {
            assert!(std::time::Instant::now() < deadline, "gateway did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `fedgate serve` on `cfg` and waits until its local API answers; its stderr goes to
/// `serve.stderr.log` beside `cfg`. The demo chose the
/// node's ports and released them; if another process took one since (tests run side by side
/// and every outgoing connection takes a port), the gateway exits with "Address already in
/// use", and it is started again once that process lets go.
pub fn serve(cfg: &Path) -> Served {
    let log = cfg.with_file_name("serve.stderr.log");
    let api = fedgate_gateway::config::load(cfg).unwrap().api;
    for _ in 0..30 {
        let stderr = std::fs::File::create(&log).unwrap();
        let mut served =
            Served(Command::new(exe()).args(["serve", "--config", s(cfg)]).stderr(stderr).spawn().unwrap());
        if wait_for_api(&mut served, api) {
            return served;
        }
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(said.contains("Address already in use"), "gateway for {} exited: {said}", cfg.display());
        std::thread::sleep(Duration::from_secs(1));
    }
    panic!("gateway for {}: its ports stayed taken for 30 s", cfg.display());
}

/// True once the API accepts a connection; false if the process exits first.
fn wait_for_api(p: &mut Served, api: std::net::SocketAddr) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = p.0.try_wait() {
            return false;
        }
        if std::net::TcpStream::connect(api).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("gateway on {api} did not start within 60 s");
}

/// SIGKILL, then a fresh process on the same folder.
pub fn kill_and_restart(p: &mut Served, cfg: &Path) {
    p.0.kill().unwrap();
    p.0.wait().unwrap();
    *p = serve(cfg);
}

pub struct Api {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl Api {
    pub fn new(cfg: &Path) -> Api {
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

    pub fn post(&self, path: &str, body: &serde_json::Value) -> (u16, String) {
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

    pub fn get(&self, path: &str) -> (u16, String) {
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

pub fn ticket(id: &str) -> serde_json::Value {
    serde_json::json!({
        "ticket_id": id, "region": "wuxi.liangxi.chongan.guangrui", "caller_name": "王小明",
        "caller_mobile": "13912345678", "address": "江苏省无锡市梁溪区崇安寺街道广瑞路1号",
        "received_at": "2026-11-29T08:00:00+08:00", "category": "邻里纠纷",
        "content": "楼上噪音，来电人电话13912345678", "status": "open", "handler": "李四",
        "urgency": 2, "channel": "phone", "closed": false,
    })
}

pub fn publish(hotline: &Api, ids: &[String]) {
    let records: Vec<serde_json::Value> = ids.iter().map(|i| ticket(i)).collect();
    let (status, body) =
        hotline.post("/v1/datasets/hotline-tickets/events", &serde_json::json!({ "records": records }));
    assert_eq!(status, 200, "{body}");
}

/// Every stored item of the subscription after `after`, in order.
pub fn read_all(grid: &Api, id: &str, mut after: u64) -> Vec<serde_json::Value> {
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

/// Subscribes the grid office (`grid_cfg`) to the hotline's tickets for dispute mediation;
/// returns the subscription id.
pub fn subscribe(grid_cfg: &Path) -> String {
    let o = fedgate(&[
        "subscribe",
        "--config",
        s(grid_cfg),
        "--peer",
        "hotline12345@wuxi",
        "--dataset",
        "hotline-tickets",
        "--purpose",
        "dispute-mediation",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}
