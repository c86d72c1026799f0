//! Subscription figures (issue 14): nodes subscribe to the first provider's dataset; its
//! application publishes through `POST /v1/datasets/{id}/events`; each subscribing application
//! reads its own gateway's `GET /v1/subscriptions/{id}/events` long-poll and acknowledges.
//!
//! 1. Latency: events published one at a time, 20 ms apart; for each event and subscriber, the
//!    time from just before the publish call to the application reading it (provider's durable
//!    event log, QUIC push round, signed and witnessed batch verified, subscriber's receipt
//!    stored, the application's long-poll answered).
//! 2. Throughput: events published in batches of 100 as fast as the provider takes them; the
//!    time until every subscriber's application has read every one, and the CPU time per event
//!    of the provider and of the subscribing gateways.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use super::*;

/// What one subscribing application has read: event id → when.
#[derive(Default)]
struct Reads {
    at: Mutex<Vec<(u64, Instant)>>,
    count: AtomicU64,
}

pub(super) fn run(nodes: &[Node], apis: &[config::Config], running: &[Gateway], o: &Opts) -> Result<()> {
    let provider = nodes.get(1).context("no provider")?;
    let dataset = provider.dataset.clone().context("the first provider has no dataset")?;
    let subscribers: Vec<usize> = std::iter::once(0).chain(2..nodes.len()).take(o.subscribers).collect();
    if subscribers.len() < o.subscribers {
        bail!("--subscribers {} needs --gateways {} at least", o.subscribers, o.subscribers + 1);
    }
    let mut subs = Vec::new();
    for &i in &subscribers {
        let body =
            serde_json::json!({"peer": provider.id.to_string(), "dataset": dataset, "purpose": PURPOSE});
        let held = Client::new(&apis[i])?.send_json("/v1/subscriptions", Some(&body))?;
        subs.push((i, held["id"].as_str().context("no subscription id")?.to_owned()));
    }
    let total = o.latency_events + o.throughput_events + o.poll_events;
    let reads: Vec<Arc<Reads>> = subs.iter().map(|_| Arc::default()).collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = subs
        .iter()
        .zip(&reads)
        .map(|((i, id), r)| {
            let (cfg, id, r, stop) = (apis[*i].clone(), id.clone(), r.clone(), stop.clone());
            std::thread::spawn(move || read_all(&cfg, &id, total, &r, &stop))
        })
        .collect();
    let publisher = Publisher::new(&apis[1], provider, &dataset)?;
    let result = measure(&publisher, &reads, running, &subscribers, o);
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().map_err(|_| anyhow::anyhow!("a reader panicked"))??;
    }
    result
}

fn measure(
    p: &Publisher,
    reads: &[Arc<Reads>],
    running: &[Gateway],
    subscribers: &[usize],
    o: &Opts,
) -> Result<()> {
    let k = reads.len();
    // 1. Latency, one event at a time.
    let mut sent = Vec::new();
    for _ in 0..o.latency_events {
        let t = Instant::now();
        let (first, _) = p.publish(1)?;
        sent.push((first, t));
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_all(reads, o.latency_events, Duration::from_secs(60))?;
    let lat = latencies(reads, &sent);
    println!(
        "subscription latency, publish API -> {k} subscribing application(s): {} events, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        lat.len(),
        percentile(&lat, 0.5) * 1e3,
        percentile(&lat, 0.99) * 1e3,
        lat.last().copied().unwrap_or(0.0) * 1e3
    );
    // 2. Throughput, batches of 100.
    let cpu = |who: &[usize]| who.iter().map(|&i| running[i].cpu_secs()).sum::<f64>();
    let (p0, s0) = (running[1].cpu_secs(), cpu(subscribers));
    let start = Instant::now();
    let mut left = o.throughput_events;
    while left > 0 {
        let n = left.min(100);
        p.publish(n)?;
        left -= n;
    }
    let published = start.elapsed().as_secs_f64();
    wait_all(reads, o.latency_events + o.throughput_events, Duration::from_secs(600))?;
    let secs = start.elapsed().as_secs_f64();
    let (p1, s1) = (running[1].cpu_secs(), cpu(subscribers));
    let events = o.throughput_events as f64;
    println!(
        "subscription throughput to {k} subscriber(s): {} events published in {published:.2} s, all read by every application after {secs:.2} s: {:.0} events/s, {:.0} deliveries/s; CPU per event: provider {:.1} µs (per delivery {:.1} µs), each subscribing gateway {:.1} µs",
        o.throughput_events,
        events / secs,
        events * k as f64 / secs,
        (p1 - p0) / events * 1e6,
        (p1 - p0) / (events * k as f64) * 1e6,
        (s1 - s0) / (events * k as f64) * 1e6,
    );
    if o.poll_events > 0 {
        polled(p, reads, o)?;
    }
    Ok(())
}

/// Latency of changes found by cursor polling (figure 3): rows inserted into the provider's source
/// table (the department's own application writing its database), 100 ms apart.
fn polled(p: &Publisher, reads: &[Arc<Reads>], o: &Opts) -> Result<()> {
    let conn = rusqlite::Connection::open(&p.source)?;
    let field = |name: &str| p.ds.fields.iter().position(|f| f.name == name).context("hotline field");
    let (ticket, received) = (field("ticket_id")?, field("received_at")?);
    let placeholders: Vec<String> = (1..=p.ds.fields.len()).map(|i| format!("?{i}")).collect();
    let insert = format!("INSERT INTO records VALUES ({})", placeholders.join(", "));
    let before = o.latency_events + o.throughput_events;
    let mut sent = Vec::new();
    let mut rng = Rng::new(5);
    for k in 0..o.poll_events {
        let mut rec = data::record(&mut rng, &p.ds, 2_000_000 + k, "wuxi");
        rec[ticket] = fedgate_catalog::Value::Text(format!("POLL-{k:06}"));
        let now = time::OffsetDateTime::now_utc().to_offset(time::macros::offset!(+8));
        rec[received] = fedgate_catalog::Value::Text(format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}+08:00",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second(),
            now.microsecond()
        ));
        let vals: Vec<rusqlite::types::Value> = rec
            .into_iter()
            .map(|v| match v {
                fedgate_catalog::Value::Null => rusqlite::types::Value::Null,
                fedgate_catalog::Value::Bool(b) => rusqlite::types::Value::Integer(i64::from(b)),
                fedgate_catalog::Value::Int(i) => rusqlite::types::Value::Integer(i),
                fedgate_catalog::Value::Text(s) => rusqlite::types::Value::Text(s),
            })
            .collect();
        let t = Instant::now();
        conn.execute(&insert, rusqlite::params_from_iter(vals))?;
        // The poller publishes rows in cursor order, so this row's event id is known.
        sent.push((before + k + 1, t));
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_all(reads, before + o.poll_events, Duration::from_secs(60))?;
    let lat = latencies(reads, &sent);
    println!(
        "subscription latency, row committed to the source -> {} application(s), cursor polling every 2 s (the default): {} events, p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        reads.len(),
        lat.len(),
        percentile(&lat, 0.5) * 1e3,
        percentile(&lat, 0.99) * 1e3,
        lat.last().copied().unwrap_or(0.0) * 1e3
    );
    Ok(())
}

/// For every subscriber and every sent event, read time minus send time, sorted.
fn latencies(reads: &[Arc<Reads>], sent: &[(u64, Instant)]) -> Vec<f64> {
    let mut lat = Vec::new();
    for r in reads {
        let at = r.at.lock().unwrap_or_else(|e| e.into_inner());
        let by_id: std::collections::HashMap<u64, Instant> = at.iter().copied().collect();
        for (id, t) in sent {
            if let Some(got) = by_id.get(id) {
                lat.push(got.duration_since(*t).as_secs_f64());
            }
        }
    }
    lat.sort_by(f64::total_cmp);
    lat
}

fn wait_all(reads: &[Arc<Reads>], n: u64, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    while reads.iter().any(|r| r.count.load(Ordering::Relaxed) < n) {
        if Instant::now() > deadline {
            let got: Vec<u64> = reads.iter().map(|r| r.count.load(Ordering::Relaxed)).collect();
            bail!("subscribers read {got:?} of {n} events within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// The subscribing application: long-polls its gateway, notes when each event arrived, and
/// acknowledges what it read; stops after `total` events or when told.
fn read_all(
    cfg: &config::Config,
    id: &str,
    total: u64,
    r: &Reads,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<()> {
    let client = Client::new(cfg)?.streaming(Duration::from_secs(30));
    let mut after = 0u64;
    while r.count.load(Ordering::Relaxed) < total && !stop.load(Ordering::Relaxed) {
        let text = client.get_text(&format!("/v1/subscriptions/{id}/events?after={after}&wait_ms=1000"))?;
        let now = Instant::now();
        let mut got = Vec::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line)?;
            if let Some(state) = v.get("@state") {
                bail!("subscription {id} ended: {state} {}", v["reason"]);
            }
            if v.get("@gap").is_some() {
                bail!("subscription {id} reported a gap: {line}");
            }
            let eid = v["@id"].as_u64().context("an event without @id")?;
            got.push((eid, now));
            after = after.max(eid);
        }
        if got.is_empty() {
            continue;
        }
        client
            .send_json(&format!("/v1/subscriptions/{id}/ack"), Some(&serde_json::json!({"upto": after})))?;
        let n = got.len() as u64;
        r.at.lock().unwrap_or_else(|e| e.into_inner()).extend(got);
        r.count.fetch_add(n, Ordering::Relaxed);
    }
    Ok(())
}

/// The provider's application: publishes generated tickets through its gateway's API.
struct Publisher {
    client: Client,
    /// The provider's source table (SQLite), for the polling figure.
    source: PathBuf,
    path: String,
    ds: fedgate_catalog::Dataset,
    keys: Vec<String>,
    rng: Mutex<(Rng, u64)>,
}

impl Publisher {
    fn new(cfg: &config::Config, provider: &Node, dataset: &str) -> Result<Publisher> {
        let text = std::fs::read_to_string(provider.config.with_file_name("catalog.toml"))?;
        let catalog = fedgate_catalog::parse("catalog.toml", &text).map_err(|d| anyhow::anyhow!("{d}"))?;
        let ds = catalog.get(dataset).context("publisher dataset")?.clone();
        let names: Vec<String> = ds.fields.iter().map(|f| f.name.clone()).collect();
        Ok(Publisher {
            client: Client::new(cfg)?,
            source: provider.config.with_file_name("records.db"),
            path: format!("/v1/datasets/{dataset}/events"),
            keys: fedgate_gateway::render::json_keys(&names),
            ds,
            rng: Mutex::new((Rng::new(99), 1_000_000)),
        })
    }

    /// Publishes `n` new records; the ids given, first and last.
    fn publish(&self, n: u64) -> Result<(u64, u64)> {
        let mut records = Vec::new();
        {
            let mut g = self.rng.lock().unwrap_or_else(|e| e.into_inner());
            for _ in 0..n {
                g.1 += 1;
                let seq = g.1;
                let rec = data::record(&mut g.0, &self.ds, seq, "wuxi");
                let mut line = Vec::new();
                fedgate_gateway::render::json_line(&self.keys, &rec, &mut line);
                records.push(serde_json::from_slice::<serde_json::Value>(&line)?);
            }
        }
        let answer = self
            .client
            .send_json(&self.path, Some(&serde_json::json!({"op": "insert", "records": records})))?;
        let id =
            |k: &str| answer[k].as_u64().with_context(|| format!("publish answer without `{k}`: {answer}"));
        Ok((id("first")?, id("last")?))
    }
}
