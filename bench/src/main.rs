//! `fedgate-bench`: the exchange measured side by side, in one run, on the same records.
//!
//! 1. **raw** — quinn with the same mutual TLS, moving the same number of bytes with no
//!    processing: the ceiling on this machine;
//! 2. **fedgate** — two real gateway processes (provider and consumer): policy decision, row
//!    scoping, masking with the free-text PII scan, CBOR batches, signed trailer, audit on both
//!    sides, and this harness reading every record from the consumer's local API;
//! 3. **baseline** — what a department would otherwise build: an HTTPS/1.1 JSON API (axum +
//!    rustls, TLS 1.3 over TCP) serving the same records with the same masking.
//!
//! Usage: `fedgate-bench [--quick] [--runs N] [--records N] [--small N] [--keep DIR]`. Figures go to stdout;
//! see BENCHMARKS.md for what they mean. The servers run as child processes so each side's
//! peak RSS and CPU time can be read from /proc: CPU time per record and per query does not
//! depend on how many processes share the cores, where throughput on a 2-core machine does.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use fedgate_catalog::{NodeId, Region};
use fedgate_certs::authority::{Authority, NodeProfile};
use fedgate_certs::store;
use fedgate_certs::tls::{FederationVerifier, TlsBuilder};
use fedgate_certs::TrustStore;
use fedgate_gateway::config;
use fedgate_gateway::demo::data::{self, Rng};
use http_body_util::BodyExt;

const PROVIDER: &str = "hotline12345@wuxi";
const CONSUMER: &str = "police@wuxi.liangxi";
const DATASET: &str = "bench-tickets";
const PURPOSE: &str = "law-enforcement";
const IN_FLIGHT: usize = 64;

/// The demo hotline's 14 fields, as a dataset of the benchmark: at the consumer's clearance 2,
/// five are masked (name, ID, mobile, address, the ~200-character complaint scanned for PII), one
/// generalized, the rest in clear.
fn catalog() -> Result<String> {
    let text = fedgate_gateway::demo::catalog_text("hotline-tickets").context("demo hotline catalog")?;
    Ok(text.replace("id = \"hotline-tickets\"", &format!("id = \"{DATASET}\"")))
}

const GRANTS: &str = r#"
[[grant]]
id = "bench"
to = "police@wuxi.liangxi"
datasets = ["bench-tickets"]
purposes = ["law-enforcement"]
clearance = 2
rows = "all"
"#;

/// What to measure. `--quick` sets smaller defaults; explicit numbers win over it.
#[derive(Debug, Parser)]
#[command(
    name = "fedgate-bench",
    about = "Measures raw QUIC, fedgate and an HTTPS+JSON baseline on the same records.",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// 100,000 records, 2,000 small queries, 1 run (under a minute).
    #[arg(long)]
    quick: bool,
    /// Records in the bulk pull [default: 1,000,000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    records: Option<u64>,
    /// One-record queries for the small-query figures [default: 20,000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    small: Option<u64>,
    /// Bulk runs; the figures are their medians [default: 3].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1000))]
    runs: Option<u64>,
    /// Keep the generated federation in DIR instead of a temporary folder removed at the end.
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
    #[command(subcommand)]
    server: Option<Server>,
}

/// The benchmark's own servers, started as child processes so their RSS can be read apart.
#[derive(Debug, Subcommand)]
enum Server {
    /// Internal: the raw QUIC server next to the provider.
    #[command(hide = true)]
    RawServer { config: PathBuf },
    /// Internal: the HTTPS+JSON baseline server.
    #[command(hide = true)]
    BaselineServer { config: PathBuf },
}

#[derive(Debug, PartialEq)]
struct Opts {
    records: u64,
    small: u64,
    runs: usize,
    keep: Option<PathBuf>,
}

impl Cli {
    fn opts(&self) -> Opts {
        let (records, small, runs) = if self.quick { (100_000, 2_000, 1) } else { (1_000_000, 20_000, 3) };
        Opts {
            records: self.records.unwrap_or(records),
            small: self.small.unwrap_or(small),
            // Bounded to 1..=1000 by the parser, so the conversion cannot truncate.
            runs: self.runs.map_or(runs, |r| r as usize),
            keep: self.keep.clone(),
        }
    }
}

/// Exit 0, 1 with a one-line reason (its causes after colons, never a backtrace), or 2 for a
/// usage error (clap's).
fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run_cli(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fedgate-bench: {}", one_line(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, skipping causes the message already states.
fn one_line(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1).map(ToString::to_string) {
        if !msg.contains(&cause) {
            msg = format!("{msg}: {cause}");
        }
    }
    msg
}

fn run_cli(cli: Cli) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match &cli.server {
        Some(Server::RawServer { config }) => rt.block_on(raw::serve(config)),
        Some(Server::BaselineServer { config }) => rt.block_on(baseline::serve(config)),
        None => rt.block_on(run(cli.opts())),
    }
}

fn free_port_udp() -> Result<SocketAddr> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?)
}

fn free_port_tcp() -> Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Writes the PKI, both node folders and the records; returns the two config paths.
fn setup(dir: &Path, records: u64) -> Result<(PathBuf, PathBuf, SocketAddr)> {
    let now = time::OffsetDateTime::now_utc();
    let root = Authority::new_root(&"wuxi".parse::<Region>()?, now, 30)?;
    let p_quic = free_port_udp()?;
    let c_quic = free_port_udp()?;
    let baseline_addr = free_port_tcp()?;
    let mut configs = Vec::new();
    for (node, quic, peer, peer_quic) in
        [(PROVIDER, p_quic, CONSUMER, c_quic), (CONSUMER, c_quic, PROVIDER, p_quic)]
    {
        let id: NodeId = node.parse()?;
        let ndir = dir.join(node);
        let issued = root.issue_node(&id, NodeProfile::gateway(now, 30))?;
        store::write_node(&ndir.join("tls"), &issued, root.root(), true)?;
        let api = free_port_tcp()?;
        let mut text = format!("node = \"{node}\"\nlisten = \"{quic}\"\napi = \"{api}\"\n");
        if node == PROVIDER {
            std::fs::write(ndir.join("catalog.toml"), catalog()?)?;
            std::fs::write(ndir.join("grants.toml"), GRANTS)?;
            text.push_str("catalog = [\"catalog.toml\"]\ngrants = [\"grants.toml\"]\n");
        }
        text.push_str(
            "\n[tls]\ncert = \"tls/node.crt\"\nkey = \"tls/node.key\"\ntrust = \"tls/trust.crt\"\n",
        );
        if node == PROVIDER {
            text.push_str(&format!(
                "\n[[sources]]\ndataset = \"{DATASET}\"\nsqlite = \"records.db\"\ntable = \"records\"\n"
            ));
        }
        text.push_str(&format!("\n[[peers]]\nnode = \"{peer}\"\naddress = \"{peer_quic}\"\n"));
        let path = ndir.join("gateway.toml");
        std::fs::write(&path, text)?;
        configs.push(path);
    }
    write_records(&dir.join(PROVIDER).join("records.db"), records)?;
    Ok((configs.remove(0), configs.remove(0), baseline_addr))
}

fn write_records(path: &Path, n: u64) -> Result<()> {
    let catalog = fedgate_catalog::parse("bench.toml", &catalog()?).map_err(|d| anyhow::anyhow!("{d}"))?;
    let ds = catalog.get(DATASET).context("bench dataset")?;
    let mut rng = Rng::new(7);
    let rows = (0..n).map(|seq| {
        let mut rec = data::record(&mut rng, ds, seq, "wuxi");
        // A ~200-character complaint: the realistic worst case for the PII scan.
        if let Some(fedgate_catalog::Value::Text(c)) = rec.get_mut(8) {
            while c.chars().count() < 200 {
                let (phone, id) = (data::mobile(&mut rng), data::resident_id(&mut rng));
                c.push_str(&data::complaint(&mut rng, "来电人", &phone, &id));
            }
            *c = c.chars().take(200).collect();
        }
        rec
    });
    fedgate_gateway::demo::write_table(path, ds, rows)
}

/// Removes the bench folder when the run ends.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed when dropped.
struct Proc {
    child: Child,
    name: &'static str,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn spawn(name: &'static str, exe: &Path, args: &[&str]) -> Result<Proc> {
        let child = Command::new(exe)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        Ok(Proc { child, name })
    }

    /// (current RSS, peak RSS) in MiB, from /proc.
    fn rss(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        let kib = |key: &str| {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0)
    }

    fn cpu_secs(&self) -> f64 {
        cpu_secs(&format!("/proc/{}/stat", self.child.id()))
    }
}

/// User + system CPU seconds of every thread of a process, from its `/proc/PID/stat`.
fn cpu_secs(stat_path: &str) -> f64 {
    let stat = std::fs::read_to_string(stat_path).unwrap_or_default();
    // Fields after the command name (which may hold spaces, so split after its closing
    // parenthesis): utime and stime are the 12th and 13th, in ticks of 1/100 s (USER_HZ).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: f64 = rest.split_whitespace().skip(11).take(2).filter_map(|t| t.parse::<f64>().ok()).sum();
    ticks / 100.0
}

/// CPU seconds used per process while a phase ran: the harness (the client of every phase)
/// and each server.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    harness: f64,
    provider: f64,
    consumer: f64,
    raw_server: f64,
    baseline_server: f64,
}

impl Cpu {
    fn sub(self, before: Cpu) -> Cpu {
        Cpu {
            harness: self.harness - before.harness,
            provider: self.provider - before.provider,
            consumer: self.consumer - before.consumer,
            raw_server: self.raw_server - before.raw_server,
            baseline_server: self.baseline_server - before.baseline_server,
        }
    }

    fn add(self, more: Cpu) -> Cpu {
        Cpu {
            harness: self.harness + more.harness,
            provider: self.provider + more.provider,
            consumer: self.consumer + more.consumer,
            raw_server: self.raw_server + more.raw_server,
            baseline_server: self.baseline_server + more.baseline_server,
        }
    }
}

/// The processes whose CPU time is measured.
struct Procs<'a> {
    provider: &'a Proc,
    consumer: &'a Proc,
    raw_server: &'a Proc,
    baseline_server: &'a Proc,
}

impl Procs<'_> {
    fn cpu(&self) -> Cpu {
        Cpu {
            harness: cpu_secs("/proc/self/stat"),
            provider: self.provider.cpu_secs(),
            consumer: self.consumer.cpu_secs(),
            raw_server: self.raw_server.cpu_secs(),
            baseline_server: self.baseline_server.cpu_secs(),
        }
    }

    /// Runs `phase`, returning its result and the CPU each process used meanwhile.
    async fn measure<T>(&self, phase: impl std::future::Future<Output = Result<T>>) -> Result<(T, Cpu)> {
        let before = self.cpu();
        let out = phase.await?;
        Ok((out, self.cpu().sub(before)))
    }
}

/// CPU per unit of work (record or query), in µs, per side: (client, servers…).
fn cpu_line(name: &str, units: f64, parts: &[(&str, f64)]) -> String {
    let per = |s: f64| s * 1e6 / units.max(1.0);
    let total: f64 = parts.iter().map(|(_, s)| per(*s)).sum();
    let each: Vec<String> = parts.iter().map(|(who, s)| format!("{who} {:.1}", per(*s))).collect();
    format!("  {name:<9} {total:>8.1} µs  ({})", each.join(", "))
}

async fn wait_tcp(addr: SocketAddr) -> Result<()> {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("nothing listening on {addr}")
}

fn sibling(name: &str) -> Result<PathBuf> {
    let me = std::env::current_exe()?;
    let p = me.with_file_name(name);
    if !p.exists() {
        bail!("{} not found next to {} (build it: cargo build --release)", name, me.display());
    }
    Ok(p)
}

#[derive(Default, Clone, Copy)]
struct Bulk {
    secs: f64,
    records: u64,
    bytes: u64,
}

struct Small {
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// The median, or NaN for no samples (printed as such rather than a panic).
fn median(mut xs: Vec<f64>) -> f64 {
    percentile(&mut xs, 0.5)
}

/// The `p` quantile (0..=1) by the nearest-rank-below rule, or NaN for no samples.
fn percentile(xs: &mut [f64], p: f64) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    let last = xs.len().saturating_sub(1);
    xs.get((last as f64 * p.clamp(0.0, 1.0)) as usize).copied().unwrap_or(f64::NAN)
}

async fn run(o: Opts) -> Result<()> {
    let dir = o
        .keep
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("fedgate-bench-{}", std::process::id())));
    let _cleanup = (o.keep.is_none()).then(|| Cleanup(dir.clone()));
    std::fs::create_dir_all(&dir).with_context(|| format!("--keep {}", dir.display()))?;
    eprintln!("writing {} records…", o.records);
    let (pcfg, ccfg, baseline_addr) = setup(&dir, o.records)?;
    let fedgate = sibling("fedgate")?;
    let me = std::env::current_exe()?;
    let provider =
        Proc::spawn("provider gateway", &fedgate, &["serve", "--config", pcfg.to_str().unwrap_or_default()])?;
    let consumer =
        Proc::spawn("consumer gateway", &fedgate, &["serve", "--config", ccfg.to_str().unwrap_or_default()])?;
    let pc = config::load(&pcfg)?;
    let cc = config::load(&ccfg)?;
    wait_tcp(pc.api).await?;
    wait_tcp(cc.api).await?;
    std::fs::write(dir.join("baseline.addr"), baseline_addr.to_string())?;
    let raw_server = Proc::spawn("raw QUIC server", &me, &["raw-server", pcfg.to_str().unwrap_or_default()])?;
    let baseline_server =
        Proc::spawn("baseline HTTPS server", &me, &["baseline-server", pcfg.to_str().unwrap_or_default()])?;
    wait_tcp(baseline_addr).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = (provider.rss().0, consumer.rss().0);

    let token = std::fs::read_to_string(&cc.api_token)?.trim().to_owned();
    let raw_client = raw::Client::connect(&cc, raw::raw_addr(pc.listen), raw::IDLE_TIMEOUT).await?;
    let base_client = baseline::Client::new(&pc, baseline_addr)?;

    let procs = Procs {
        provider: &provider,
        consumer: &consumer,
        raw_server: &raw_server,
        baseline_server: &baseline_server,
    };
    let mut raw_bulk = Vec::new();
    let mut fed_bulk = Vec::new();
    let mut base_bulk = Vec::new();
    let (mut raw_bulk_cpu, mut fed_bulk_cpu, mut base_bulk_cpu) =
        (Cpu::default(), Cpu::default(), Cpu::default());
    for run in 0..o.runs {
        eprintln!("run {}/{}: bulk pulls of {} records", run + 1, o.runs, o.records);
        let (f, cpu) = procs.measure(fedgate_bulk(cc.api, &token, o.records)).await?;
        fed_bulk_cpu = fed_bulk_cpu.add(cpu);
        let (r, cpu) = procs.measure(raw_client.bulk(f.bytes, o.records)).await?;
        raw_bulk_cpu = raw_bulk_cpu.add(cpu);
        let (b, cpu) = procs.measure(base_client.bulk(o.records)).await?;
        base_bulk_cpu = base_bulk_cpu.add(cpu);
        fed_bulk.push(f);
        raw_bulk.push(r);
        base_bulk.push(b);
    }
    eprintln!("small queries: {} of 1 record each, {} in flight", o.small, IN_FLIGHT);
    let (raw_small, raw_small_cpu) = procs.measure(raw_client.small(o.small)).await?;
    let (fed_small, fed_small_cpu) = procs.measure(fedgate_small(cc.api, &token, o.small, o.records)).await?;
    let (base_small, base_small_cpu) = procs.measure(base_client.small(o.small, o.records)).await?;

    let rec_s = |v: &[Bulk]| median(v.iter().map(|b| b.records as f64 / b.secs).collect());
    let mb_s = |v: &[Bulk]| median(v.iter().map(|b| b.bytes as f64 / b.secs / 1e6).collect());
    println!("fedgate-bench: {} records (~{} B each as delivered), {} run(s), medians; small queries: {} × 1 record, {} in flight", o.records, fed_bulk.first().map_or(0, |b| b.bytes) / o.records.max(1), o.runs, o.small, IN_FLIGHT);
    println!(
        "{:<10} {:>14} {:>10} {:>14} {:>12} {:>12}",
        "", "bulk rec/s", "MB/s", "small q/s", "small p50", "small p99"
    );
    for (name, bulk, small) in [
        ("raw", &raw_bulk, &raw_small),
        ("fedgate", &fed_bulk, &fed_small),
        ("baseline", &base_bulk, &base_small),
    ] {
        println!(
            "{name:<10} {:>14.0} {:>10.1} {:>14.0} {:>10.2}ms {:>10.2}ms",
            rec_s(bulk),
            mb_s(bulk),
            small.per_sec,
            small.p50_ms,
            small.p99_ms
        );
    }
    println!(
        "ratios: bulk fedgate/raw {:.2} (bytes/s), fedgate/baseline {:.2} (records/s); small fedgate/raw {:.2}, fedgate/baseline {:.2}",
        mb_s(&fed_bulk) / mb_s(&raw_bulk),
        rec_s(&fed_bulk) / rec_s(&base_bulk),
        fed_small.per_sec / raw_small.per_sec,
        fed_small.per_sec / base_small.per_sec
    );
    let bulk_records = o.records as f64 * o.runs as f64;
    let small_queries = o.small as f64;
    println!("CPU per record (bulk) and per query (small), all processes of each side, from /proc:");
    for (phase, units, raw, fed, base) in [
        ("bulk", bulk_records, raw_bulk_cpu, fed_bulk_cpu, base_bulk_cpu),
        ("small", small_queries, raw_small_cpu, fed_small_cpu, base_small_cpu),
    ] {
        println!(" {phase}:");
        println!("{}", cpu_line("raw", units, &[("client", raw.harness), ("server", raw.raw_server)]));
        println!(
            "{}",
            cpu_line(
                "fedgate",
                units,
                &[("app", fed.harness), ("consumer gw", fed.consumer), ("provider gw", fed.provider)]
            )
        );
        println!(
            "{}",
            cpu_line("baseline", units, &[("client", base.harness), ("server", base.baseline_server)])
        );
    }
    println!("peak RSS (MiB): idle gateway {:.1} (provider) / {:.1} (consumer)", idle.0, idle.1);
    for p in [&provider, &consumer, &raw_server, &baseline_server] {
        let (now, peak) = p.rss();
        println!("  {:<22} now {:>6.1}  peak {:>6.1}", p.name, now, peak);
    }
    Ok(())
}

/// Pulls every record through the consumer's local API; counts records and bytes.
async fn fedgate_bulk(api: SocketAddr, token: &str, records: u64) -> Result<Bulk> {
    let body = serde_json::json!({"peer": PROVIDER, "dataset": DATASET, "purpose": PURPOSE}).to_string();
    let start = Instant::now();
    let (lines, bytes, last) = http::post_count(api, token, &body).await?;
    let secs = start.elapsed().as_secs_f64();
    if !last.contains("@end") {
        bail!("fedgate transfer did not end with a verified trailer: {last}");
    }
    let got = lines - 1;
    if got != records {
        bail!("fedgate delivered {got} of {records} records");
    }
    Ok(Bulk { secs, records: got, bytes })
}

async fn fedgate_small(api: SocketAddr, token: &str, n: u64, records: u64) -> Result<Small> {
    let mut conns = Vec::new();
    for _ in 0..IN_FLIGHT {
        conns.push(http::Conn::plain(api).await?);
    }
    let token: Arc<str> = token.into();
    drive_small(n, conns, move |mut conn: http::Conn, i| {
        let token = token.clone();
        async move {
            let id = format!("BENCH-{:06}", (i * 7919) % records);
            let body = serde_json::json!({"peer": PROVIDER, "dataset": DATASET, "purpose": PURPOSE, "where": {"ticket_id": id}, "limit": 1}).to_string();
            let (lines, _, last) = conn.post(&token, &body).await?;
            if lines != 2 || !last.contains("@end") {
                bail!("small query {id}: {lines} lines, last {last}");
            }
            Ok(conn)
        }
    })
    .await
}

/// Runs `n` one-record queries, one worker per connection in `conns`, each worker taking the
/// next query number as it finishes one; times every query.
async fn drive_small<C, F, Fut>(n: u64, conns: Vec<C>, query: F) -> Result<Small>
where
    C: Send + 'static,
    F: Fn(C, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<C>> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for conn in conns {
        let (next, query) = (next.clone(), query.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = conn;
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(lat);
                }
                let t = Instant::now();
                conn = query(conn, i).await?;
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let per_sec = n as f64 / start.elapsed().as_secs_f64();
    Ok(Small { per_sec, p50_ms: percentile(&mut all, 0.5), p99_ms: percentile(&mut all, 0.99) })
}

/// A minimal HTTP/1.1 client over hyper, for the gateway's API (plain) and the baseline (TLS).
mod http {
    use super::*;
    use hyper::body::Bytes;

    pub(crate) struct Conn {
        sender: hyper::client::conn::http1::SendRequest<http_body_util::Full<Bytes>>,
    }

    impl Conn {
        pub(crate) async fn plain(addr: SocketAddr) -> Result<Conn> {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            Conn::over(tcp).await
        }

        pub(crate) async fn over<T>(io: T) -> Result<Conn>
        where
            T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        {
            let (sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await?;
            tokio::spawn(conn);
            Ok(Conn { sender })
        }

        async fn send(
            &mut self,
            req: hyper::Request<http_body_util::Full<Bytes>>,
        ) -> Result<(u64, u64, String)> {
            self.sender.ready().await?;
            let resp = self.sender.send_request(req).await?;
            let status = resp.status();
            let mut body = resp.into_body();
            let (mut lines, mut bytes) = (0u64, 0u64);
            let mut tail: Vec<u8> = Vec::new();
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame?.into_data() {
                    lines += data.iter().filter(|&&b| b == b'\n').count() as u64;
                    bytes += data.len() as u64;
                    tail.extend_from_slice(&data[data.len().saturating_sub(512)..]);
                    if tail.len() > 1024 {
                        tail.drain(..tail.len() - 512);
                    }
                }
            }
            let text = String::from_utf8_lossy(&tail);
            let last = text.trim_end().rsplit('\n').next().unwrap_or_default().to_owned();
            if !status.is_success() {
                bail!("HTTP {status}: {last}");
            }
            Ok((lines, bytes, last))
        }

        pub(crate) async fn post(&mut self, token: &str, body: &str) -> Result<(u64, u64, String)> {
            let req = hyper::Request::post("/v1/query")
                .header("host", "localhost")
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", "application/json")
                .body(http_body_util::Full::new(Bytes::from(body.to_owned())))?;
            self.send(req).await
        }

        pub(crate) async fn get(&mut self, path: &str) -> Result<(u64, u64, String)> {
            let req = hyper::Request::get(path)
                .header("host", "localhost")
                .body(http_body_util::Full::new(Bytes::new()))?;
            self.send(req).await
        }
    }

    /// One POST on a fresh connection; (lines, bytes, last line).
    pub(crate) async fn post_count(addr: SocketAddr, token: &str, body: &str) -> Result<(u64, u64, String)> {
        Conn::plain(addr).await?.post(token, body).await
    }
}

/// The ceiling: the same mutual TLS over quinn, bytes moved with no processing.
mod raw {
    use super::*;

    pub(crate) fn endpoint(
        cfg: &config::Config,
        listen: Option<SocketAddr>,
        idle: Duration,
    ) -> Result<(quinn::Endpoint, quinn::ClientConfig)> {
        let id = fedgate_gateway::node::load_identity(cfg)?;
        let verifier = FederationVerifier::new(
            TrustStore::new(id.trust.root().clone(), &[]).map_err(anyhow::Error::msg)?,
        );
        let tls = TlsBuilder::new(verifier).identity(id.chain, id.key);
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(
            quinn::crypto::rustls::QuicServerConfig::try_from(tls.server()?)?,
        ));
        server.transport_config(Arc::new(transport(idle)));
        let mut client = quinn::ClientConfig::new(Arc::new(
            quinn::crypto::rustls::QuicClientConfig::try_from(tls.client()?)?,
        ));
        client.transport_config(Arc::new(transport(idle)));
        let ep = match listen {
            Some(addr) => quinn::Endpoint::server(server, addr)?,
            None => quinn::Endpoint::client("127.0.0.1:0".parse()?)?,
        };
        Ok((ep, client))
    }

    /// quinn's default idle timeout (30 s): the one connection of the raw client sits idle while the
    /// fedgate and baseline phases run, which on a loaded 2-core machine take longer than that for
    /// 1M records, and the next raw phase then failed with "timed out".
    pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

    /// Keep-alives a third of the idle timeout apart keep the connection open however long the
    /// other phases take; the idle timeout still catches a server that has gone away.
    pub(crate) fn transport(idle: Duration) -> quinn::TransportConfig {
        let mut t = quinn::TransportConfig::default();
        t.max_idle_timeout(idle.try_into().ok());
        t.keep_alive_interval(Some(idle / 3));
        t
    }

    /// Serves on the provider's QUIC address + 1000 (UDP): each stream asks for N bytes.
    pub(crate) async fn serve(pcfg: &Path) -> Result<()> {
        let cfg = config::load(pcfg)?;
        let (ep, _) = endpoint(&cfg, Some(raw_addr(cfg.listen)), IDLE_TIMEOUT)?;
        answer(ep).await;
        Ok(())
    }

    pub(crate) async fn answer(ep: quinn::Endpoint) {
        let chunk = Arc::new(vec![0x5au8; 64 * 1024]);
        while let Some(inc) = ep.accept().await {
            let chunk = chunk.clone();
            tokio::spawn(async move {
                let Ok(conn) = inc.await else { return };
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    let chunk = chunk.clone();
                    tokio::spawn(async move {
                        let Ok(req) = recv.read_to_end(16).await else { return };
                        let mut left = u64::from_be_bytes(req.try_into().unwrap_or([0; 8]));
                        while left > 0 {
                            let n = left.min(chunk.len() as u64) as usize;
                            if send.write_all(&chunk[..n]).await.is_err() {
                                return;
                            }
                            left -= n as u64;
                        }
                        let _ = send.finish();
                    });
                }
            });
        }
    }

    pub(crate) fn raw_addr(listen: SocketAddr) -> SocketAddr {
        let mut a = listen;
        a.set_port(listen.port().wrapping_add(1000).max(1024));
        a
    }

    pub(crate) struct Client {
        conn: quinn::Connection,
    }

    impl Client {
        /// Retries for a few seconds: the server is a child process that may still be starting.
        pub(crate) async fn connect(
            ccfg: &config::Config,
            addr: SocketAddr,
            idle: Duration,
        ) -> Result<Client> {
            let (ep, client) = endpoint(ccfg, None, idle)?;
            let server_name = PROVIDER.parse::<NodeId>()?.to_server_name();
            for _ in 0..100 {
                if let Ok(conn) = ep.connect_with(client.clone(), addr, &server_name)?.await {
                    return Ok(Client { conn });
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            bail!("raw server not reachable at {addr}")
        }

        pub(crate) async fn fetch(&self, bytes: u64) -> Result<u64> {
            let (mut send, mut recv) = self.conn.open_bi().await?;
            send.write_all(&bytes.to_be_bytes()).await?;
            send.finish()?;
            let mut got = 0u64;
            while let Some(chunk) = recv.read_chunk(usize::MAX, true).await? {
                got += chunk.bytes.len() as u64;
            }
            Ok(got)
        }

        pub(crate) async fn bulk(&self, bytes: u64, records: u64) -> Result<Bulk> {
            let start = Instant::now();
            let got = self.fetch(bytes).await?;
            Ok(Bulk { secs: start.elapsed().as_secs_f64(), records, bytes: got })
        }

        pub(crate) async fn small(&self, n: u64) -> Result<Small> {
            let conns = (0..IN_FLIGHT).map(|_| Client { conn: self.conn.clone() }).collect();
            drive_small(n, conns, |c: Client, _| async move {
                c.fetch(600).await?;
                Ok(c)
            })
            .await
        }
    }
}

/// What a department would otherwise build: HTTPS/1.1 + JSON, the same records, the same masking.
mod baseline {
    use super::*;
    use axum::extract::{Query, State};
    use axum::response::IntoResponse;
    use fedgate_gateway::source::{self, SourceQuery};
    use fedgate_policy::{Action, Decision, Plan, Request};

    struct App {
        query: SourceQuery,
        kind: config::SourceKind,
        plan: Arc<Plan>,
    }

    fn tls_server(cfg: &config::Config) -> Result<rustls::ServerConfig> {
        let id = fedgate_gateway::node::load_identity(cfg)?;
        let mut c = rustls::ServerConfig::builder_with_provider(Arc::new(fedgate_certs::tls::provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(id.chain, id.key)?;
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(c)
    }

    pub(crate) async fn serve(pcfg: &Path) -> Result<()> {
        let cfg = config::load(pcfg)?;
        let addr: SocketAddr =
            std::fs::read_to_string(cfg.dir.parent().context("bench folder")?.join("baseline.addr"))?
                .trim()
                .parse()?;
        let catalog = fedgate_gateway::node::load_catalog(&cfg)?;
        let policy = fedgate_gateway::node::load_policy(&cfg, &catalog)?;
        let consumer: NodeId = CONSUMER.parse()?;
        let req = Request { dataset: DATASET.into(), purpose: PURPOSE.into(), action: Action::Read };
        let Decision::Allow(allowed) =
            (*policy.decide(&catalog, &consumer, &req, time::OffsetDateTime::now_utc().unix_timestamp())?)
                .clone()
        else {
            bail!("baseline: the bench grant does not allow the consumer")
        };
        let ds = catalog.get(DATASET).context("dataset")?;
        let key = fedgate_policy::mask::consumer_key(b"baseline secret", CONSUMER);
        let plan = Arc::new(Plan::new(ds, &allowed, key));
        let src = cfg.sources.first().context("source")?;
        let query = SourceQuery::new(ds, &src.table, allowed.rows.clone(), vec![], None);
        let app = Arc::new(App { query, kind: src.kind.clone(), plan });
        let router = axum::Router::new().route("/v1/records", axum::routing::get(records)).with_state(app);
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_server(&cfg)?));
        let listener = tokio::net::TcpListener::bind(addr).await?;
        loop {
            let (tcp, _) = listener.accept().await?;
            let _ = tcp.set_nodelay(true);
            let (acceptor, router) = (acceptor.clone(), router.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let svc = hyper_util::service::TowerToHyperService::new(router);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    }

    #[derive(serde::Deserialize)]
    struct Params {
        id: Option<String>,
    }

    async fn records(State(app): State<Arc<App>>, Query(p): Query<Params>) -> axum::response::Response {
        let mut q = app.query.clone();
        if let Some(id) = p.id {
            q.filters = vec![("ticket_id".into(), fedgate_catalog::Value::Text(id))];
            q.limit = Some(1);
        }
        let plan = app.plan.clone();
        let keys = fedgate_gateway::render::json_keys(plan.fields());
        let transform: source::Transform = Arc::new(move |rec| plan.in_scope(&rec).then(|| plan.apply(&rec)));
        let rx = source::spawn(&app.kind, q, transform);
        // The same JSON writer the gateway's API uses, so the formats cost the same.
        let stream = futures::stream::unfold(rx, move |mut rx| {
            let keys = keys.clone();
            async move {
                let batch = rx.recv().await?;
                let text: Vec<u8> = match batch {
                    Ok(recs) => {
                        let mut out = Vec::with_capacity(recs.len() * 600);
                        for r in &recs {
                            fedgate_gateway::render::json_line(&keys, r, &mut out);
                        }
                        out
                    }
                    Err(e) => format!("{{\"error\":{:?}}}\n", e.to_string()).into_bytes(),
                };
                Some((Ok::<_, std::convert::Infallible>(text), rx))
            }
        });
        ([(axum::http::header::CONTENT_TYPE, "application/x-ndjson")], axum::body::Body::from_stream(stream))
            .into_response()
    }

    pub(crate) struct Client {
        addr: SocketAddr,
        connector: tokio_rustls::TlsConnector,
    }

    impl Client {
        pub(crate) fn new(pcfg: &config::Config, addr: SocketAddr) -> Result<Client> {
            let id = fedgate_gateway::node::load_identity(pcfg)?;
            let mut roots = rustls::RootCertStore::empty();
            roots.add(id.trust.root().clone())?;
            let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(fedgate_certs::tls::provider()))
                .with_protocol_versions(&[&rustls::version::TLS13])?
                .with_root_certificates(roots)
                .with_no_client_auth();
            c.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(Client { addr, connector: tokio_rustls::TlsConnector::from(Arc::new(c)) })
        }

        async fn conn(&self) -> Result<http::Conn> {
            let tcp = tokio::net::TcpStream::connect(self.addr).await?;
            tcp.set_nodelay(true)?;
            let name = rustls::pki_types::ServerName::try_from(PROVIDER.parse::<NodeId>()?.to_server_name())?;
            let tls = self.connector.connect(name, tcp).await?;
            http::Conn::over(tls).await
        }

        pub(crate) async fn bulk(&self, records: u64) -> Result<Bulk> {
            let start = Instant::now();
            let (lines, bytes, _) = self.conn().await?.get("/v1/records").await?;
            if lines != records {
                bail!("baseline delivered {lines} of {records} records");
            }
            Ok(Bulk { secs: start.elapsed().as_secs_f64(), records: lines, bytes })
        }

        pub(crate) async fn small(&self, n: u64, records: u64) -> Result<Small> {
            let mut conns = Vec::new();
            for _ in 0..IN_FLIGHT {
                conns.push(self.conn().await?);
            }
            drive_small(n, conns, move |mut conn: http::Conn, i| async move {
                let id = format!("BENCH-{:06}", (i * 7919) % records);
                let (lines, _, _) = conn.get(&format!("/v1/records?id={id}")).await?;
                if lines != 1 {
                    bail!("baseline small query {id}: {lines} lines");
                }
                Ok(conn)
            })
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("fedgate-bench").chain(args.iter().copied()))
    }

    #[test]
    fn failures_are_one_line_naming_what_failed() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let e = anyhow::Error::new(io).context("--keep /proc/nope");
        assert_eq!(one_line(&e), "--keep /proc/nope: No such file or directory");
        // A cause the message already quotes is not repeated.
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let e = anyhow::Error::new(io).context("/x.toml: gone");
        assert_eq!(one_line(&e), "/x.toml: gone");
    }

    #[test]
    fn zero_or_bad_numbers_are_usage_errors() {
        for args in [
            &["--runs", "0"][..],
            &["--records", "0"],
            &["--small", "0"],
            &["--runs", "-1"],
            &["--runs", "three"],
            &["--runs"],
            &["--records", "1e6"],
            &["--bogus"],
            &["raw-server"],
        ] {
            let e = parse(args).expect_err(&format!("{args:?} accepted"));
            assert_ne!(e.kind(), clap::error::ErrorKind::DisplayHelp, "{args:?}");
        }
    }

    #[test]
    fn quick_sets_defaults_and_explicit_numbers_win_in_any_order() {
        let quick = parse(&["--quick"]).unwrap().opts();
        assert_eq!((quick.records, quick.small, quick.runs), (100_000, 2_000, 1));
        let a = parse(&["--runs", "5", "--quick"]).unwrap().opts();
        let b = parse(&["--quick", "--runs", "5"]).unwrap().opts();
        assert_eq!(a, b);
        assert_eq!(a.runs, 5);
        let full = parse(&[]).unwrap().opts();
        assert_eq!((full.records, full.small, full.runs), (1_000_000, 20_000, 3));
    }

    #[test]
    fn internal_server_modes_parse() {
        let c = parse(&["baseline-server", "/x/gateway.toml"]).unwrap();
        assert!(
            matches!(c.server, Some(Server::BaselineServer { ref config }) if config == Path::new("/x/gateway.toml"))
        );
    }

    #[test]
    fn statistics_of_no_samples_do_not_panic() {
        assert!(median(Vec::new()).is_nan());
        assert!(percentile(&mut [], 0.99).is_nan());
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(percentile(&mut [1.0, 2.0, 3.0, 4.0], 1.0), 4.0);
    }

    #[test]
    fn cpu_time_is_read_after_a_command_name_with_spaces_and_parentheses() {
        let dir = std::env::temp_dir().join(format!("fedgate-bench-stat-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let stat = dir.join("stat");
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime …
        std::fs::write(&stat, "42 (a (b) c) S 1 42 42 0 -1 4194560 10 0 0 0 250 50 0 0 20 0 3 0\n").unwrap();
        assert_eq!(cpu_secs(stat.to_str().unwrap()), 3.0);
        assert_eq!(cpu_secs("/proc/no-such-process/stat"), 0.0);
        let _ = std::fs::remove_dir_all(&dir);
        // This process's own figure moves with work done (spinning until it does, however busy
        // the machine; a reader that always says 0 spins out the 20 s and fails).
        let before = cpu_secs("/proc/self/stat");
        let start = Instant::now();
        let mut x = 0u64;
        while cpu_secs("/proc/self/stat") - before < 0.05 && start.elapsed() < Duration::from_secs(20) {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        assert!(cpu_secs("/proc/self/stat") - before >= 0.05, "{x}");
    }

    /// The default run failed with "timed out" in its first raw phase: the raw client's one
    /// connection sat idle through the fedgate phase, longer than quinn's idle timeout under load.
    /// Here the idle timeout is short and the connection idles four times as long.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_raw_connection_left_idle_past_its_idle_timeout_still_answers() {
        let dir = std::env::temp_dir().join(format!("fedgate-bench-idle-{}", std::process::id()));
        let _cleanup = Cleanup(dir.clone());
        let (pcfg, ccfg, _) = setup(&dir, 1).unwrap();
        let (pc, cc) = (config::load(&pcfg).unwrap(), config::load(&ccfg).unwrap());
        let idle = Duration::from_millis(600);
        let (ep, _) = raw::endpoint(&pc, Some("127.0.0.1:0".parse().unwrap()), idle).unwrap();
        let addr = ep.local_addr().unwrap();
        tokio::spawn(raw::answer(ep));
        let client = raw::Client::connect(&cc, addr, idle).await.unwrap();
        tokio::time::sleep(idle * 4).await;
        assert_eq!(client.fetch(100_000).await.unwrap(), 100_000);
    }
}
