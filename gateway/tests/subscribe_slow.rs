//! A slow application, between real `fedgate serve` processes of the demo federation: the grid
//! office's application reads and acknowledges nothing while the hotline publishes many times
//! the subscriber's unread bound (`[subscriptions] max_unread`, small here). The subscriber's
//! gateway stops asking (what it holds unread stays bounded), neither gateway's memory grows
//! with the provider's backlog, and once the application drains, every event arrives exactly
//! once, in order.

mod served;

use std::time::{Duration, Instant};

use served::*;

/// The subscriber's bound in this test; the default is 10,000.
const MAX_UNREAD: u64 = 300;
/// Events in one round at most (4 batches of 256): the subscriber can be past its bound by
/// less than a round, since it checks the bound before asking.
const ROUND: u64 = 1024;

/// Resident set size of a process, in KiB, from /proc.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS in /proc status");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The subscription's stored, unread item count, once it has not changed for `still`.
fn settled_unread(grid: &Api, id: &str, still: Duration) -> u64 {
    let unread = || {
        let (status, body) = grid.get("/v1/subscriptions");
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let held = v.as_array().unwrap().iter().find(|s| s["id"] == id).unwrap().clone();
        held["cursor"].as_u64().unwrap() - held["delivered"].as_u64().unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut last, mut since) = (unread(), Instant::now());
    while since.elapsed() < still {
        assert!(Instant::now() < deadline, "the subscriber never settled (at {last})");
        std::thread::sleep(Duration::from_millis(100));
        let now = unread();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    last
}

fn publish_many(hotline: &Api, tag: &str, n: usize) -> Vec<String> {
    let mut all = Vec::new();
    // 100 tickets a request keeps a body under the API's 64 KiB cap.
    for chunk in 0..n / 100 {
        let ids: Vec<String> = (0..100).map(|i| format!("SLOW-{tag}-{chunk:03}-{i:02}")).collect();
        publish(hotline, &ids);
        all.extend(ids);
    }
    all
}

#[test]
fn a_slow_application_bounds_both_gateways_and_then_gets_every_event_once_in_order() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("demo");
    let o = fedgate(&["demo", "--dir", s(&dir), "--records", "10"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let hotline_cfg = dir.join("hotline12345@wuxi/gateway.toml");
    let grid_cfg = dir.join("grid@wuxi.liangxi.chongan/gateway.toml");
    let text = std::fs::read_to_string(&grid_cfg).unwrap();
    std::fs::write(&grid_cfg, format!("{text}\n[subscriptions]\nmax_unread = {MAX_UNREAD}\n")).unwrap();
    // The demo's grant caps the grid office at 5,000 events a day; this test sends more.
    let grants = dir.join("hotline12345@wuxi/grants.toml");
    let text = std::fs::read_to_string(&grants).unwrap();
    assert!(text.contains("quota = 5000"), "the demo hotline grants changed");
    std::fs::write(&grants, text.replace("quota = 5000", "quota = 1000000")).unwrap();
    let hotline = serve(&hotline_cfg);
    let grid = serve(&grid_cfg);
    let id = subscribe(&grid_cfg);
    let (hapi, gapi) = (Api::new(&hotline_cfg), Api::new(&grid_cfg));

    // Nobody reads: the subscriber takes what its bound allows (at most one round past it), then
    // stops asking.
    let mut published = publish_many(&hapi, "A", 2000);
    let held = settled_unread(&gapi, &id, Duration::from_millis(1500));
    assert!((MAX_UNREAD..MAX_UNREAD + ROUND).contains(&held), "held {held} unread");
    let (provider_before, subscriber_before) = (rss_kib(hotline.pid()), rss_kib(grid.pid()));

    // Six times more backlog at the provider: neither side's memory follows it (each event is
    // about 600 bytes as JSON, so 12,000 held in memory would be over 7 MB).
    published.extend(publish_many(&hapi, "B", 12_000));
    assert_eq!(settled_unread(&gapi, &id, Duration::from_millis(1500)), held, "it asked again");
    let (provider_after, subscriber_after) = (rss_kib(hotline.pid()), rss_kib(grid.pid()));
    eprintln!(
        "RSS KiB: provider {provider_before} -> {provider_after}, subscriber {subscriber_before} -> {subscriber_after}; unread held {held}"
    );
    assert!(
        provider_after < provider_before + 4 * 1024,
        "provider {provider_before} -> {provider_after} KiB"
    );
    assert!(
        subscriber_after < subscriber_before + 4 * 1024,
        "subscriber {subscriber_before} -> {subscriber_after} KiB"
    );

    // The application drains, acknowledging as it goes: everything arrives, once, in order.
    let mut app: Vec<serde_json::Value> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let ours = |items: &[serde_json::Value]| {
        items.iter().filter(|v| v["ticket_id"].as_str().is_some_and(|t| t.starts_with("SLOW-"))).count()
    };
    while ours(&app) < published.len() {
        assert!(Instant::now() < deadline, "only {} of {} arrived", ours(&app), published.len());
        let after = app.last().and_then(|v| v["@id"].as_u64()).unwrap_or(0);
        let (status, body) =
            gapi.get(&format!("/v1/subscriptions/{id}/events?after={after}&limit=1000&wait_ms=1000"));
        assert_eq!(status, 200, "{body}");
        let items: Vec<serde_json::Value> = body.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        if let Some(last) = items.last().and_then(|v| v["@id"].as_u64()) {
            let (status, body) =
                gapi.post(&format!("/v1/subscriptions/{id}/ack"), &serde_json::json!({"upto": last}));
            assert_eq!(status, 200, "{body}");
        }
        app.extend(items);
    }
    let ids: Vec<u64> = app.iter().map(|v| v["@id"].as_u64().unwrap()).collect();
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>(), "every event once, in order");
    let tickets: Vec<&str> =
        app.iter().filter_map(|v| v["ticket_id"].as_str()).filter(|t| t.starts_with("SLOW-")).collect();
    assert_eq!(
        tickets,
        published.iter().map(String::as_str).collect::<Vec<_>>(),
        "in publish order, none twice"
    );
    drop((hotline, grid));
}
