//! Subscriptions between real `fedgate serve` processes of the demo federation, with SIGKILL of
//! the subscriber and of the provider at several points while events stream: afterwards the
//! application has every published event exactly once, in id order.

mod served;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use served::*;

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
