//! `fedgate-scale`: a federation of many gateways on one machine (issue 17, "Scale").
//!
//! Generates a federation — one root, N node certificates, a root-signed directory listing every
//! node at an address the OS handed out, a catalog, grants and a SQLite source per provider —
//! starts every gateway as its own `fedgate serve` process (no `[[peers]]`: everything is found in
//! the directory), and measures:
//!
//! 1. RSS per idle gateway (from /proc, after the federation has settled);
//! 2. the time for one node (the hub) to discover every other node's catalog through its local
//!    API, cold (no connection yet) and warm;
//! 3. a query fan-out from the hub to F providers at once, every answer read to its verified
//!    `@end`: wall time per round and per-query latency, and the hub's CPU time per round.
//!
//! Usage: `fedgate-scale [--gateways 200] [--fanout 50] [--records 20] [--rounds 5] [--keep DIR]`.
//! Figures go to stdout; BENCHMARKS.md ("Scale") has a run and what it means.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use fedgate_catalog::{NodeId, Region};
use fedgate_certs::authority::{Authority, NodeProfile};
use fedgate_certs::directory::{self, Bundle, Directory, Entry};
use fedgate_certs::store;
use fedgate_gateway::client::{self, AnswerLine, Client};
use fedgate_gateway::config;
use fedgate_gateway::demo::data::{self, Rng};

mod referrals;
mod subscriptions;

const HUB: &str = "mediation-center@wuxi";
const PURPOSE: &str = "dispute-mediation";

#[derive(Debug, Parser)]
#[command(
    name = "fedgate-scale",
    about = "Starts a federation of many gateways and measures memory, discovery and fan-out."
)]
struct Opts {
    /// Gateways in the federation, the hub included.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(3..=1000))]
    gateways: u64,
    /// Providers the hub queries at once.
    #[arg(long, default_value_t = 50)]
    fanout: usize,
    /// Records in each provider's dataset (each fan-out query reads all of them).
    #[arg(long, default_value_t = 20)]
    records: u64,
    /// Fan-out rounds (the median is reported).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Nodes that subscribe to the first provider's dataset (0: no subscription figures). The
    /// harness then measures the latency from `POST /v1/datasets/{id}/events` at the provider to
    /// each subscribing application's long-poll read, and events/s to all subscribers.
    #[arg(long, default_value_t = 0)]
    subscribers: usize,
    /// Events published one at a time for the latency figure.
    #[arg(long, default_value_t = 300)]
    latency_events: u64,
    /// Events published (in batches of 100) for the throughput figure.
    #[arg(long, default_value_t = 5_000)]
    throughput_events: u64,
    /// Rows inserted straight into the first provider's source table, one every 100 ms, for the
    /// latency of changes found by cursor polling (`cursor = "received_at"`, default interval).
    #[arg(long, default_value_t = 0)]
    poll_events: u64,
    /// Referrals the hub sends the first provider for the throughput figure, each taken through
    /// send, receive, accept, resolve and close by the two applications (0: no referral figures).
    #[arg(long, default_value_t = 0)]
    referrals: u64,
    /// Referrals sent one at a time (20 ms apart) for the latency figure, before the throughput.
    #[arg(long, default_value_t = 200)]
    referral_latency: u64,
    /// Concurrent catalog requests during discovery.
    #[arg(long, default_value_t = 32)]
    discovery_in_flight: usize,
    /// Keep the generated federation in DIR (default: a temporary folder removed at the end).
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    match run(Opts::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fedgate-scale: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// One generated node.
struct Node {
    id: NodeId,
    config: PathBuf,
    /// The provider's dataset; none for the hub.
    dataset: Option<String>,
    /// Its QUIC port, held until the gateway is started so nothing else takes it meanwhile
    /// (the directory names it before anyone starts).
    port: Option<std::net::UdpSocket>,
}

/// A running gateway, killed when dropped.
struct Gateway {
    child: Child,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    fn status_kib(&self, key: &str) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    fn rss_mib(&self) -> f64 {
        self.status_kib("VmRSS:") / 1024.0
    }

    fn cpu_secs(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command name (which may hold spaces) start at state; utime and
        // stime are the 14th and 15th fields of the whole line.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<f64> = rest.split_whitespace().skip(11).take(2).filter_map(|v| v.parse().ok()).collect();
        f.iter().sum::<f64>() / 100.0
    }
}

fn run(o: Opts) -> Result<()> {
    let temp;
    let dir = match &o.keep {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            temp = TempDir::new()?;
            temp.0.clone()
        }
    };
    let fedgate = sibling("fedgate")?;
    let started = Instant::now();
    let mut nodes = generate(&dir, o.gateways, o.records)?;
    println!(
        "generated {} gateways (PKI, directory, catalogs, grants, sources) in {:.1} s under {}",
        nodes.len(),
        started.elapsed().as_secs_f64(),
        dir.display()
    );
    let started = Instant::now();
    let mut running = Vec::with_capacity(nodes.len());
    for n in &mut nodes {
        let log = std::fs::File::create(n.config.with_file_name("gateway.log"))?;
        drop(n.port.take());
        let child = Command::new(&fedgate)
            .args(["serve", "--config"])
            .arg(&n.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", n.id))?;
        running.push(Gateway { child });
    }
    let mut apis = Vec::with_capacity(nodes.len());
    for (n, g) in nodes.iter().zip(running.iter_mut()) {
        apis.push(wait_ready(&n.config, g).context("waiting for the gateways' local APIs")?);
    }
    let clients = apis.iter().map(|cfg| Ok(Client::new(cfg)?)).collect::<Result<Vec<_>>>()?;
    println!(
        "started {} gateway processes, all APIs answering, in {:.1} s",
        running.len(),
        started.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(3));
    report_rss(&running);
    let hub = &clients[0];
    let providers: Vec<&Node> = nodes.iter().filter(|n| n.dataset.is_some()).collect();
    for pass in ["cold", "warm"] {
        let (secs, datasets) = discover(hub, &providers, o.discovery_in_flight)?;
        println!(
            "discovery ({pass}): the hub fetched {} catalogs ({datasets} datasets) in {secs:.2} s, {} in flight",
            providers.len(),
            o.discovery_in_flight
        );
    }
    let fan: Vec<&Node> = providers.iter().take(o.fanout).copied().collect();
    let rounds = if fan.is_empty() { 0 } else { o.rounds };
    let mut walls = Vec::new();
    let mut all = Vec::new();
    let mut cpus = Vec::new();
    for round in 0..rounds {
        let cpu = running[0].cpu_secs();
        let (wall, mut lat) = fan_out(&apis[0], &fan, o.records)?;
        cpus.push(running[0].cpu_secs() - cpu);
        walls.push(wall);
        println!(
            "fan-out round {}: {} providers x {} records in {:.3} s (slowest query {:.1} ms)",
            round + 1,
            fan.len(),
            o.records,
            wall,
            lat.iter().copied().fold(0.0, f64::max) * 1e3
        );
        all.append(&mut lat);
    }
    all.sort_by(f64::total_cmp);
    if !fan.is_empty() {
        println!(
        "fan-out to {}: wall median {:.3} s over {} rounds; per query p50 {:.1} ms, p99 {:.1} ms; hub CPU {:.3} s per round (median)",
        fan.len(),
        median(&mut walls),
        o.rounds,
        percentile(&all, 0.50) * 1e3,
        percentile(&all, 0.99) * 1e3,
        median(&mut cpus)
    );
    }
    report_rss(&running);
    if o.subscribers > 0 {
        subscriptions::run(&nodes, &apis, &running, &o)?;
        report_rss(&running);
    }
    if o.referrals > 0 {
        referrals::run(&nodes, &apis, &running, &o)?;
        report_rss(&running);
    }
    Ok(())
}

fn report_rss(running: &[Gateway]) {
    let mut rss: Vec<f64> = running.iter().map(Gateway::rss_mib).collect();
    let hub = rss[0];
    let total: f64 = rss.iter().sum();
    let mut providers = rss.split_off(1);
    providers.sort_by(f64::total_cmp);
    println!(
        "RSS: hub {hub:.1} MiB; providers median {:.1} MiB, p90 {:.1}, max {:.1}; all {} gateways {:.0} MiB",
        percentile(&providers, 0.5),
        percentile(&providers, 0.9),
        providers.last().copied().unwrap_or(0.0),
        running.len(),
        total
    );
}

/// Writes the PKI, the directory and every node folder.
fn generate(dir: &Path, gateways: u64, records: u64) -> Result<Vec<Node>> {
    let now = time::OffsetDateTime::now_utc();
    let region: Region = "wuxi".parse()?;
    let root = Authority::new_root(&region, now, 30)?;
    let template = fedgate_gateway::demo::catalog_text("hotline-tickets").context("demo hotline catalog")?;
    let mut nodes = Vec::new();
    let mut entries = Vec::new();
    for i in 0..gateways {
        let id: NodeId = if i == 0 { HUB.parse()? } else { format!("dept-{i:04}@wuxi").parse()? };
        let port = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let quic = port.local_addr()?;
        let ndir = dir.join(id.to_string());
        let issued = root.issue_node(&id, NodeProfile::gateway(now, 30))?;
        store::write_node(&ndir.join("tls"), &issued, root.root(), true)?;
        // The API port is the gateway's own pick (its log says which): one chosen here and
        // released could be taken meanwhile by any client's outgoing connection. The QUIC port
        // must be in the directory before anyone starts; UDP has no such outgoing traffic here.
        let mut text = format!(
            "node = \"{id}\"\nlisten = \"{quic}\"\napi = \"127.0.0.1:0\"\ndirectory = \"../directory.cbor\"\n"
        );
        let dataset = (i > 0).then(|| format!("tickets-{i:04}"));
        if let Some(ds) = &dataset {
            let catalog = template
                .replace("id = \"hotline-tickets\"", &format!("id = \"{ds}\""))
                .replace("owner = \"hotline12345@wuxi\"", &format!("owner = \"{id}\""));
            std::fs::write(ndir.join("catalog.toml"), &catalog)?;
            let grants = format!(
                "[[grant]]\nid = \"hub\"\nto = \"{HUB}\"\ndatasets = [\"{ds}\"]\npurposes = [\"{PURPOSE}\"]\nclearance = 2\nrows = \"all\"\n"
            );
            // Every node may subscribe to the first provider's dataset (the subscription figures).
            let everyone = if i == 1 {
                format!("\n[[grant]]\nid = \"everyone\"\nto = {{ region = \"wuxi\" }}\ndatasets = [\"{ds}\"]\npurposes = [\"{PURPOSE}\"]\nactions = [\"read\", \"subscribe\"]\nclearance = 2\nrows = \"all\"\n")
            } else {
                String::new()
            };
            std::fs::write(ndir.join("grants.toml"), format!("{grants}{everyone}"))?;
            write_records(&ndir.join("records.db"), &catalog, ds, records)?;
            text.push_str("catalog = [\"catalog.toml\"]\ngrants = [\"grants.toml\"]\n");
        }
        text.push_str(
            "\n[tls]\ncert = \"tls/node.crt\"\nkey = \"tls/node.key\"\ntrust = \"tls/trust.crt\"\n",
        );
        if let Some(ds) = &dataset {
            text.push_str(&format!(
                "\n[[sources]]\ndataset = \"{ds}\"\nsqlite = \"records.db\"\ntable = \"records\"\n"
            ));
            if i == 1 {
                // The subscription figures' provider also finds changes by polling.
                text.push_str("cursor = \"received_at\"\n");
            }
        }
        let config = ndir.join("gateway.toml");
        std::fs::write(&config, text)?;
        entries.push(Entry { node: id.clone(), address: quic, fingerprint: None });
        nodes.push(Node { id, config, dataset, port: Some(port) });
    }
    let directory = Directory::new(region.clone(), region, 1, now.unix_timestamp(), entries)?;
    let bundle = Bundle { docs: vec![directory::sign(&directory, &root)?] };
    std::fs::write(dir.join("directory.cbor"), bundle.encode())?;
    Ok(nodes)
}

fn write_records(path: &Path, catalog: &str, dataset: &str, n: u64) -> Result<()> {
    let catalog = fedgate_catalog::parse("scale.toml", catalog).map_err(|d| anyhow::anyhow!("{d}"))?;
    let ds = catalog.get(dataset).context("scale dataset")?;
    let mut rng = Rng::new(11);
    fedgate_gateway::demo::write_table(path, ds, (0..n).map(|seq| data::record(&mut rng, ds, seq, "wuxi")))
}

/// The config of the node at `config` with the API address it bound (from its log), once that
/// API answers. A gateway that exits instead is reported with the last line of its log.
fn wait_ready(config: &Path, gateway: &mut Gateway) -> Result<config::Config> {
    let mut cfg = config::load(config)?;
    let log = config.with_file_name("gateway.log");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(api) = text.lines().find(|l| l.contains("\"gateway listening\"")).and_then(api_of) {
            cfg.api = api;
            if Client::new(&cfg).is_ok_and(|c| c.get_text("/healthz").is_ok()) {
                return Ok(cfg);
            }
        }
        if let Ok(Some(status)) = gateway.child.try_wait() {
            bail!("{} exited ({status}): {}", cfg.node, text.lines().last().unwrap_or("no log"));
        }
        if Instant::now() > deadline {
            bail!("{} did not start within 120 s (see {})", cfg.node, log.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `api` address in a JSON log line.
fn api_of(line: &str) -> Option<SocketAddr> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    v["api"].as_str()?.parse().ok()
}

/// The hub fetches every provider's catalog, `in_flight` at a time; (seconds, datasets seen).
fn discover(hub: &Client, providers: &[&Node], in_flight: usize) -> Result<(f64, usize)> {
    let next = AtomicUsize::new(0);
    let datasets = AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..in_flight.max(1))
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    loop {
                        let Some(n) = providers.get(next.fetch_add(1, Ordering::Relaxed)) else {
                            return Ok(());
                        };
                        let catalog: serde_json::Value = hub
                            .get_json(&format!("/v1/peers/{}/catalog", n.id))
                            .with_context(|| format!("catalog of {}", n.id))?;
                        let count = catalog["datasets"].as_array().map_or(0, Vec::len);
                        if count != 1 {
                            bail!("catalog of {} lists {count} datasets, expected 1", n.id);
                        }
                        datasets.fetch_add(count, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().map_err(|_| anyhow::anyhow!("a discovery worker panicked"))??;
        }
        Ok(())
    })?;
    Ok((start.elapsed().as_secs_f64(), datasets.into_inner()))
}

/// One query to each of `providers` at once from the hub; (wall seconds, per-query seconds).
fn fan_out(cfg: &config::Config, providers: &[&Node], records: u64) -> Result<(f64, Vec<f64>)> {
    let start = Instant::now();
    let lat = std::thread::scope(|s| -> Result<Vec<f64>> {
        let workers: Vec<_> = providers
            .iter()
            .map(|n| {
                s.spawn(move || -> Result<f64> {
                    let client = Client::new(cfg)?.streaming(Duration::from_secs(30));
                    let dataset = n.dataset.as_deref().unwrap_or_default();
                    let t = Instant::now();
                    let body =
                        client::query_body(&n.id, dataset, PURPOSE, &[], None, Duration::from_secs(30));
                    let lines = client.post_lines("/v1/query", &body)?;
                    let mut got = 0;
                    let mut ended = false;
                    for line in std::io::BufRead::lines(lines) {
                        match client::parse_line(&line?).map_err(anyhow::Error::msg)? {
                            AnswerLine::Record(_) => got += 1,
                            AnswerLine::End(_) => ended = true,
                            AnswerLine::Error { message, .. } => bail!("{}: {message}", n.id),
                        }
                    }
                    if !ended || got != records {
                        bail!("{}: {got} of {records} records, verified end: {ended}", n.id);
                    }
                    Ok(t.elapsed().as_secs_f64())
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().map_err(|_| anyhow::anyhow!("a query worker panicked"))?)
            .collect()
    })?;
    Ok((start.elapsed().as_secs_f64(), lat))
}

fn sibling(name: &str) -> Result<PathBuf> {
    let me = std::env::current_exe()?;
    let p = me.with_file_name(name);
    if !p.exists() {
        bail!(
            "{} not found next to {} (build it: cargo build --release -p fedgate-gateway)",
            name,
            me.display()
        );
    }
    Ok(p)
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    percentile(xs, 0.5)
}

/// The `p` quantile of sorted `xs` (nearest rank).
fn percentile(xs: &[f64], p: f64) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let i = ((xs.len() as f64 * p).ceil() as usize).clamp(1, xs.len()) - 1;
    xs[i]
}

/// A temporary folder removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir> {
        let p = std::env::temp_dir().join(format!("fedgate-scale-{}", std::process::id()));
        std::fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
