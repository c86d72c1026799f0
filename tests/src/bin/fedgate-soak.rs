//! fedgate-soak: many concurrent consumers querying through real gateways while the provider and
//! a consumer gateway are killed and restarted, for a set time. See docs/robustness.md.
//!
//! It builds the demo federation with the `fedgate` binary under test, runs three of its gateways
//! as separate `fedgate serve` processes (a provider, a consumer that is restarted, a consumer that
//! never is), sends queries through the consumers' local APIs as an application would, restarts a
//! gateway every few seconds (SIGKILL and SIGTERM in turn), samples each gateway's RSS, and at the
//! end verifies every audit log. Exit status 0 only with zero unexpected errors, bounded RSS and
//! every log verified; the judgement rules are in `fedgate_tests::soak`.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use fedgate_tests::soak::{latencies, recoveries, rss_problem, Outage, Outcome, Query, Role, Tally};

/// Soak test: concurrent consumers, periodic gateway restarts, RSS and audit checks.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The `fedgate` binary under test [default: `fedgate` next to this program].
    #[arg(long, value_name = "FILE")]
    fedgate: Option<PathBuf>,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 600)]
    secs: u64,
    /// Concurrent consumers (threads, each sending one query after another).
    #[arg(long, default_value_t = 64)]
    consumers: usize,
    /// Records per demo dataset.
    #[arg(long, default_value_t = 2000)]
    records: u64,
    /// Seconds between restarts (provider SIGKILL, consumer SIGKILL, provider SIGTERM, consumer SIGTERM, ...).
    #[arg(long, default_value_t = 20)]
    restart_every: u64,
    /// How long a stopped gateway stays down, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    down_ms: u64,
    /// After a restarted gateway answers again, how long failures it explains still count as
    /// expected, in milliseconds (peers must notice the new process within this).
    #[arg(long, default_value_t = 2000)]
    grace_ms: u64,
    /// Fail if a gateway's RSS goes over this many MiB.
    #[arg(long, default_value_t = 1024)]
    max_rss_mib: u64,
    /// Work folder (federation, logs); default: a new folder under the system's temp dir. Kept.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

const PROVIDER: &str = "hotline12345@wuxi";
const DATASET: &str = "hotline-tickets";

fn node_of(role: Role) -> &'static str {
    match role {
        Role::Provider => PROVIDER,
        Role::Consumer => "mediation-center@wuxi",
        Role::Steady => "police@wuxi.liangxi",
    }
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("fedgate-soak: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// One gateway process and what the run learnt about it.
struct Gateway {
    role: Role,
    config: PathBuf,
    logs: PathBuf,
    child: Option<Child>,
    starts: u32,
    api: String,
}

impl Gateway {
    fn start(&mut self, fedgate: &Path) -> Result<()> {
        self.starts += 1;
        let log = self.logs.join(format!("{}-{}.log", node_of(self.role), self.starts));
        let child = Command::new(fedgate)
            .args(["serve", "--config"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?)
            .spawn()
            .with_context(|| format!("starting {}", fedgate.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if healthy(&self.api) {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("{} exited with {status} while starting; see {}", node_of(self.role), log.display());
            }
            thread::sleep(Duration::from_millis(20));
        }
        bail!("{} did not answer /healthz within 30 s; see {}", node_of(self.role), log.display())
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the process: SIGKILL, or SIGTERM with 15 s to exit. Err if SIGTERM was ignored.
    fn stop(&mut self, kill: bool) -> Result<()> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        if kill {
            child.kill()?;
            child.wait()?;
            return Ok(());
        }
        Command::new("kill").args(["-TERM", &child.id().to_string()]).status()?;
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(20));
        }
        child.kill()?;
        child.wait()?;
        bail!("{} did not exit within 15 s of SIGTERM", node_of(self.role))
    }
}

fn healthy(api: &str) -> bool {
    let agent: ureq::Agent =
        ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(1))).build().into();
    agent.get(&format!("http://{api}/healthz")).call().is_ok_and(|r| r.status() == 200)
}

/// The `api` address of a gateway.toml (the demo writes `api = "HOST:PORT"` on its own line).
fn api_of(config: &Path) -> Result<String> {
    let text = std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    text.lines()
        .find_map(|l| l.strip_prefix("api = \"").and_then(|r| r.strip_suffix('"')))
        .map(str::to_owned)
        .with_context(|| format!("{}: no `api = \"HOST:PORT\"` line", config.display()))
}

struct Shared {
    t0: Instant,
    stop: AtomicBool,
    gateways: HashMap<Role, Mutex<Gateway>>,
    pids: Mutex<HashMap<Role, u32>>,
    queries: Mutex<Vec<Query>>,
    outages: Mutex<Vec<Outage>>,
    ready_at: Mutex<Vec<Duration>>,
    rss: Mutex<HashMap<(Role, u32), Vec<u64>>>,
    faults: Mutex<Vec<String>>,
}

impl Shared {
    fn now(&self) -> Duration {
        self.t0.elapsed()
    }
}

fn run(args: Args) -> Result<bool> {
    let fedgate = match &args.fedgate {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("fedgate"),
    };
    if !fedgate.is_file() {
        bail!("{}: no fedgate binary (build it with `cargo build --release -p fedgate-gateway` or pass --fedgate)", fedgate.display());
    }
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("fedgate-soak-{}", std::process::id())),
    };
    let fed = dir.join("federation");
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    println!("building the demo federation in {} ({} records per dataset)", fed.display(), args.records);
    let demo = Command::new(&fedgate)
        .args(["demo", "--dir"])
        .arg(&fed)
        .args(["--records", &args.records.to_string()])
        .stdout(std::fs::File::create(logs.join("demo.log"))?)
        .stderr(Stdio::inherit())
        .status()?;
    if !demo.success() {
        bail!("`fedgate demo` failed ({demo}); see {}", logs.join("demo.log").display());
    }

    let mut gateways = HashMap::new();
    for role in Role::ALL {
        let config = fed.join(node_of(role)).join("gateway.toml");
        let api = api_of(&config)?;
        gateways.insert(
            role,
            Mutex::new(Gateway { role, config, logs: logs.clone(), child: None, starts: 0, api }),
        );
    }
    let shared = Arc::new(Shared {
        t0: Instant::now(),
        stop: AtomicBool::new(false),
        gateways,
        pids: Mutex::default(),
        queries: Mutex::default(),
        outages: Mutex::default(),
        ready_at: Mutex::default(),
        rss: Mutex::default(),
        faults: Mutex::default(),
    });
    for role in Role::ALL {
        let mut g = lock(&shared.gateways[&role]);
        g.start(&fedgate)?;
        lock(&shared.pids).insert(role, g.pid().unwrap_or(0));
    }
    println!(
        "{} consumers for {} s; a restart every {} s (down {} ms, grace {} ms)",
        args.consumers, args.secs, args.restart_every, args.down_ms, args.grace_ms
    );

    let mut threads = Vec::new();
    for i in 0..args.consumers {
        let sh = shared.clone();
        let via = if i % 2 == 0 { Role::Consumer } else { Role::Steady };
        threads.push(thread::spawn(move || consumer(&sh, via, i as u64)));
    }
    let sampler = {
        let sh = shared.clone();
        thread::spawn(move || sample_rss(&sh))
    };
    let deadline = Duration::from_secs(args.secs);
    restarts(&shared, &fedgate, &args, deadline);
    shared.stop.store(true, Ordering::SeqCst);
    for t in threads {
        let _ = t.join();
    }
    let _ = sampler.join();
    for role in Role::ALL {
        if let Err(e) = lock(&shared.gateways[&role]).stop(false) {
            lock(&shared.faults).push(format!("final stop: {e}"));
        }
    }
    let verified = verify_audit(&fedgate, &shared);
    Ok(report(&shared, &args, verified))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The restart schedule; returns at the deadline.
fn restarts(sh: &Shared, fedgate: &Path, args: &Args, deadline: Duration) {
    const PLAN: [(Role, bool); 4] =
        [(Role::Provider, true), (Role::Consumer, true), (Role::Provider, false), (Role::Consumer, false)];
    let every = Duration::from_secs(args.restart_every.max(1));
    let mut next = every;
    let mut i = 0;
    loop {
        while sh.now() < next.min(deadline) {
            thread::sleep(Duration::from_millis(50));
        }
        if sh.now() >= deadline || next + Duration::from_millis(args.down_ms + args.grace_ms) >= deadline {
            return;
        }
        let (role, kill) = PLAN[i % PLAN.len()];
        i += 1;
        let from = sh.now();
        let mut g = lock(&sh.gateways[&role]);
        if let Err(e) = g.stop(kill) {
            lock(&sh.faults).push(e.to_string());
        }
        thread::sleep(Duration::from_millis(args.down_ms));
        let started = g.start(fedgate);
        let ready = sh.now();
        lock(&sh.pids).insert(role, g.pid().unwrap_or(0));
        drop(g);
        lock(&sh.outages).push(Outage { role, from, to: ready + Duration::from_millis(args.grace_ms) });
        if role == Role::Provider {
            lock(&sh.ready_at).push(ready);
        }
        println!(
            "[{:>4}s] {role} {} and restarted: ready after {} ms",
            from.as_secs(),
            if kill { "SIGKILLed" } else { "SIGTERMed" },
            (ready - from).as_millis()
        );
        if let Err(e) = started {
            lock(&sh.faults).push(format!("restart failed: {e:#}"));
            return;
        }
        next += every;
    }
}

/// One application: query after query through its consumer gateway's API until told to stop.
fn consumer(sh: &Shared, via: Role, seed: u64) {
    let (api, token_file) = {
        let g = lock(&sh.gateways[&via]);
        (g.api.clone(), g.config.with_file_name("api.token"))
    };
    // No pooled connections: a connection kept across a consumer restart would fail for the
    // client's own reasons, not the gateway's.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(120)))
        .http_status_as_error(false)
        .max_idle_connections(0)
        .build()
        .into();
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while !sh.stop.load(Ordering::SeqCst) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let expect_denial = rng & 15 == 0;
        // Mostly small pages, sometimes the whole dataset so kills land mid-stream.
        let limit = [Some(1), Some(10), Some(100), Some(500), None][(rng >> 8) as usize % 5];
        let purpose = if expect_denial { "statistics" } else { "dispute-mediation" };
        let started = sh.now();
        let outcome = query(&agent, &api, &token_file, purpose, limit);
        let ended = sh.now();
        let failed = !matches!(outcome, Outcome::Complete { .. });
        lock(&sh.queries).push(Query { via, started, ended, expect_denial, outcome });
        if failed {
            // Do not spin on a gateway that is down.
            thread::sleep(Duration::from_millis(50));
        }
    }
}

fn query(agent: &ureq::Agent, api: &str, token_file: &Path, purpose: &str, limit: Option<u64>) -> Outcome {
    let token = match std::fs::read_to_string(token_file) {
        Ok(t) => t.trim().to_owned(),
        Err(e) => return Outcome::Broken(format!("{}: {e}", token_file.display())),
    };
    let mut body = serde_json::json!({ "peer": PROVIDER, "dataset": DATASET, "purpose": purpose });
    if let Some(n) = limit {
        body["limit"] = n.into();
    }
    let resp = match agent
        .post(&format!("http://{api}/v1/query"))
        .header("Authorization", &format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .send(body.to_string().as_bytes())
    {
        Ok(r) => r,
        Err(e) => return Outcome::Unreachable(e.to_string()),
    };
    let status = resp.status().as_u16();
    let mut reader = std::io::BufReader::new(resp.into_body().into_reader());
    if status != 200 {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut reader, &mut text);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let field = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or_default().to_owned();
        return Outcome::Refused { status, code: field("code"), message: field("error") };
    }
    read_stream(&mut reader)
}

/// Reads JSON Lines up to the control line.
fn read_stream(reader: &mut impl BufRead) -> Outcome {
    let mut records = 0u64;
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => return Outcome::Cut { records, why: "body ended without @end".into() },
            Ok(_) => {}
            Err(e) => return Outcome::Cut { records, why: e.to_string() },
        }
        let v: serde_json::Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => return Outcome::Broken(format!("line {} is not JSON: {e}", records + 1)),
        };
        if let Some(end) = v.get("@end") {
            return match end.get("count").and_then(|c| c.as_u64()) {
                Some(n) if n == records => Outcome::Complete { records },
                other => Outcome::Broken(format!("@end count {other:?} after {records} records")),
            };
        }
        if let Some(e) = v.get("@error") {
            return Outcome::StreamError { records, message: e.as_str().unwrap_or_default().to_owned() };
        }
        records += 1;
    }
}

fn sample_rss(sh: &Shared) {
    while !sh.stop.load(Ordering::SeqCst) {
        let pids: Vec<(Role, u32)> = lock(&sh.pids).iter().map(|(r, p)| (*r, *p)).collect();
        for (role, pid) in pids {
            if let Some(bytes) = rss_of(pid) {
                lock(&sh.rss).entry((role, pid)).or_default().push(bytes);
            }
        }
        thread::sleep(Duration::from_millis(500));
    }
}

fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

fn verify_audit(fedgate: &Path, sh: &Shared) -> Vec<(Role, bool, String)> {
    Role::ALL
        .iter()
        .map(|&role| {
            let config = lock(&sh.gateways[&role]).config.clone();
            match Command::new(fedgate).args(["audit", "verify", "--config"]).arg(&config).output() {
                Ok(out) => {
                    let text =
                        String::from_utf8_lossy(if out.status.success() { &out.stdout } else { &out.stderr });
                    (role, out.status.success(), text.lines().last().unwrap_or_default().to_owned())
                }
                Err(e) => (role, false, e.to_string()),
            }
        })
        .collect()
}

fn report(sh: &Shared, args: &Args, verified: Vec<(Role, bool, String)>) -> bool {
    let queries = lock(&sh.queries);
    let outages = lock(&sh.outages);
    let tally = Tally::of(&queries, &outages);
    let secs = sh.now().as_secs_f64();
    println!("\n== fedgate-soak: {} s, {} consumers, {} restarts", args.secs, args.consumers, outages.len());
    println!(
        "queries           {} ({:.0}/s), good {}, records {}",
        tally.queries,
        tally.queries as f64 / secs,
        tally.good,
        tally.records
    );
    for (label, n) in &tally.expected {
        println!("expected          {n:>7}  {label}");
    }
    for (label, (n, example)) in &tally.unexpected {
        println!("UNEXPECTED        {n:>7}  {label}\n                           e.g. {example}");
    }
    if let Some([p50, p99, max]) = latencies(&queries) {
        println!(
            "complete answers took: p50 {} ms, p99 {} ms, max {} ms",
            p50.as_millis(),
            p99.as_millis(),
            max.as_millis()
        );
    }
    let rec: Vec<Duration> = recoveries(&lock(&sh.ready_at), &queries).into_iter().flatten().collect();
    if let Some(worst) = rec.iter().max() {
        let mut sorted = rec.clone();
        sorted.sort();
        println!(
            "first success after a provider restart: median {} ms, worst {} ms ({} restarts)",
            sorted[sorted.len() / 2].as_millis(),
            worst.as_millis(),
            rec.len()
        );
    }
    let mut ok = tally.unexpected_total() == 0;
    let cap = args.max_rss_mib << 20;
    let rss = lock(&sh.rss);
    for role in Role::ALL {
        let lives: Vec<&Vec<u64>> = rss.iter().filter(|((r, _), _)| *r == role).map(|(_, v)| v).collect();
        let max = lives.iter().flat_map(|v| v.iter()).max().copied().unwrap_or(0);
        let problems: Vec<String> = lives.iter().filter_map(|v| rss_problem(v, cap, 32 << 20)).collect();
        println!(
            "max RSS           {:>4} MiB  {role} ({}, {} process(es))",
            max >> 20,
            node_of(role),
            lives.len()
        );
        for p in &problems {
            println!("RSS PROBLEM       {role}: {p}");
        }
        ok &= problems.is_empty();
    }
    for (role, good, line) in &verified {
        println!("audit verify      {}  {role}: {line}", if *good { "ok  " } else { "FAIL" });
        ok &= good;
    }
    for f in lock(&sh.faults).iter() {
        println!("FAULT             {f}");
        ok = false;
    }
    println!("{}", if ok { "PASS" } else { "FAIL" });
    ok
}
