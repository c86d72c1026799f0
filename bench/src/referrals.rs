//! Referral figures (issue 15): the hub refers cases to the first provider through
//! `POST /v1/referrals`; each side's application reads its own gateway's
//! `GET /v1/referrals/events` long-poll and answers there, as a department's case system would.
//!
//! 1. Latency: referrals sent one at a time, 20 ms apart; for each, the time from just before the
//!    send call to the receiving application reading it (sender's durable store and audit entry,
//!    signed step over QUIC, the receiver's signature check, store and audit entry, the
//!    application's long-poll answered).
//! 2. Throughput: referrals sent by 8 sender threads; the receiving application accepts and
//!    resolves each as it arrives, the sending application closes each resolved one. Every
//!    step (send, receive, accept, resolve, close) is a signed message stored and audited on
//!    both sides; transitions/s is steps / time until the receiver holds every close.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{mpsc, Arc, Mutex};

use super::*;

/// Steps a referral of the throughput figure takes: send, receive, accept, resolve, close.
const STEPS: u64 = 5;
/// Sender and answering threads per application.
const WORKERS: usize = 8;

/// What one application read: (exchange, step) → when, and how many of the watched steps.
#[derive(Default)]
struct Seen {
    at: Mutex<HashMap<(String, String), Instant>>,
    count: AtomicU64,
}

pub(super) fn run(nodes: &[Node], apis: &[config::Config], running: &[Gateway], o: &Opts) -> Result<()> {
    let to = nodes.get(1).context("no provider to refer to")?.id.to_string();
    let (hub, receiver) = (&apis[0], &apis[1]);
    let stop = Arc::new(AtomicBool::new(false));
    let at_receiver = Arc::new(Seen::default());
    let at_sender = Arc::new(Seen::default());
    // The receiving application answers `send` with accept then resolve; the sending one
    // answers `resolve` with close. Each answer goes through a pool of workers.
    let (accept_tx, accept_rx) = mpsc::channel::<String>();
    let (close_tx, close_rx) = mpsc::channel::<String>();
    let answering = Arc::new(AtomicBool::new(false));
    let closes = Arc::new(Seen::default());
    let mut threads = vec![
        reader(receiver, "send", &at_receiver, Some((accept_tx, answering.clone())), &stop),
        reader(receiver, "close", &closes, None, &stop),
        reader(hub, "resolve", &at_sender, Some((close_tx, answering.clone())), &stop),
    ];
    threads.extend(workers(receiver, accept_rx, &["accept", "resolve"]));
    threads.extend(workers(hub, close_rx, &["close"]));

    let result = measure(hub, &to, &at_receiver, &closes, &answering, running, o);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().map_err(|_| anyhow::anyhow!("a referral application thread panicked"))??;
    }
    result
}

fn measure(
    hub: &config::Config,
    to: &str,
    at_receiver: &Seen,
    closes: &Seen,
    answering: &AtomicBool,
    running: &[Gateway],
    o: &Opts,
) -> Result<()> {
    // 1. Latency, one referral at a time, nobody answering.
    let client = Client::new(hub)?;
    let mut sent = Vec::new();
    for k in 0..o.referral_latency {
        let t = Instant::now();
        sent.push((send(&client, to, &format!("lat-{k}"))?, t));
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_for(at_receiver, o.referral_latency, Duration::from_secs(60))?;
    let mut lat: Vec<f64> = {
        let at = at_receiver.at.lock().unwrap_or_else(|e| e.into_inner());
        sent.iter()
            .filter_map(|(x, t)| {
                at.get(&(x.clone(), "send".into())).map(|got| got.duration_since(*t).as_secs_f64())
            })
            .collect()
    };
    lat.sort_by(f64::total_cmp);
    println!(
        "referral latency, send API -> the receiving application: {} referrals, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        lat.len(),
        percentile(&lat, 0.5) * 1e3,
        percentile(&lat, 0.99) * 1e3,
        lat.last().copied().unwrap_or(0.0) * 1e3
    );

    // 2. Throughput: both applications answer from now on.
    answering.store(true, Ordering::Relaxed);
    let n = o.referrals;
    let cpu = |i: usize| running[i].cpu_secs();
    let (s0, r0) = (cpu(0), cpu(1));
    let start = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let senders: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (hub, to, next) = (hub.clone(), to.to_owned(), next.clone());
            std::thread::spawn(move || -> Result<()> {
                let client = Client::new(&hub)?;
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= n {
                        return Ok(());
                    }
                    send(&client, &to, &format!("tp-{k}"))?;
                }
            })
        })
        .collect();
    for s in senders {
        s.join().map_err(|_| anyhow::anyhow!("a sender panicked"))??;
    }
    let sent_in = start.elapsed().as_secs_f64();
    wait_for(closes, n, Duration::from_secs(600))?;
    let secs = start.elapsed().as_secs_f64();
    let steps = (n * STEPS) as f64;
    println!(
        "referral throughput between two gateways: {n} referrals sent in {sent_in:.2} s, every one closed at the receiver after {secs:.2} s: {:.0} transitions/s ({:.0} referrals/s through send, receive, accept, resolve, close); CPU per transition: sender gateway {:.0} µs, receiver gateway {:.0} µs",
        steps / secs,
        n as f64 / secs,
        (cpu(0) - s0) / steps * 1e6,
        (cpu(1) - r0) / steps * 1e6,
    );
    Ok(())
}

/// Sends one referral without a case; its exchange id.
fn send(client: &Client, to: &str, reference: &str) -> Result<String> {
    let body = serde_json::json!({
        "to": to, "reference": reference, "subject": "bench", "instructions": "answer", "working_days": 5,
    });
    let answer = client.send_json("/v1/referrals", Some(&body))?;
    Ok(answer["exchange"].as_str().with_context(|| format!("send answered {answer}"))?.to_owned())
}

fn wait_for(seen: &Seen, n: u64, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    while seen.count.load(Ordering::Relaxed) < n {
        if Instant::now() > deadline {
            bail!("{} of {n} referral steps seen within {within:?}", seen.count.load(Ordering::Relaxed));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// An application reading its gateway's referral events: notes when each `step` arrived and,
/// once `answering` is set, hands the referral to `answer`.
fn reader(
    cfg: &config::Config,
    step: &'static str,
    seen: &Arc<Seen>,
    answer: Option<(mpsc::Sender<String>, Arc<AtomicBool>)>,
    stop: &Arc<AtomicBool>,
) -> std::thread::JoinHandle<Result<()>> {
    let (cfg, seen, stop) = (cfg.clone(), seen.clone(), stop.clone());
    std::thread::spawn(move || {
        let client = Client::new(&cfg)?.streaming(Duration::from_secs(30));
        let mut after = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let text = client.get_text(&format!("/v1/referrals/events?after={after}&wait_ms=500"))?;
            let now = Instant::now();
            for line in text.lines().filter(|l| !l.is_empty()) {
                let v: serde_json::Value = serde_json::from_str(line)?;
                after = after.max(v["event"].as_u64().context("a referral event without `event`")?);
                if v["step"] != step {
                    continue;
                }
                let x = v["exchange"].as_str().context("an event without `exchange`")?.to_owned();
                seen.at.lock().unwrap_or_else(|e| e.into_inner()).insert((x.clone(), step.into()), now);
                seen.count.fetch_add(1, Ordering::Relaxed);
                if let Some((tx, on)) = &answer {
                    if on.load(Ordering::Relaxed) {
                        let _ = tx.send(x);
                    }
                }
            }
        }
        Ok(())
    })
}

/// Workers that take each referral from `rx` through `steps`, in order.
fn workers(
    cfg: &config::Config,
    rx: mpsc::Receiver<String>,
    steps: &'static [&'static str],
) -> Vec<std::thread::JoinHandle<Result<()>>> {
    let rx = Arc::new(Mutex::new(rx));
    (0..WORKERS)
        .map(|_| {
            let (cfg, rx) = (cfg.clone(), rx.clone());
            std::thread::spawn(move || -> Result<()> {
                let client = Client::new(&cfg)?;
                loop {
                    let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok(x) = next else { return Ok(()) };
                    for step in steps {
                        let body = match *step {
                            "resolve" => serde_json::json!({"result": "done", "feedback": "bench"}),
                            _ => serde_json::json!({}),
                        };
                        client.send_json(&format!("/v1/referrals/{x}/{step}"), Some(&body))?;
                    }
                }
            })
        })
        .collect()
}
