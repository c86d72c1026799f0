//! A provider process killed with SIGKILL: its consumer's next query after the restart reaches
//! it at once, and the provider's audit log holds the decision of the transfer it died in.

mod served;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use fedgate_audit::{self as audit, AuditKeys, Entry, Kind};
use served::{exe, serve};

const PROVIDER: &str = "hotline12345@wuxi";
const CONSUMER: &str = "mediation-center@wuxi";

fn cfg(dir: &Path, node: &str) -> PathBuf {
    dir.join(node).join("gateway.toml")
}

fn query_cmd(dir: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(exe());
    c.args(["query", "--config", cfg(dir, CONSUMER).to_str().unwrap(), "--peer", PROVIDER])
        .args(["--dataset", "hotline-tickets", "--purpose", "dispute-mediation", "--format", "jsonl"])
        .args(extra);
    c
}

/// Runs a query, killed after `limit` (a query stuck on a dead connection would wait out the
/// QUIC idle timeout).
fn query_within(dir: &Path, limit: Duration) -> Output {
    let mut child =
        query_cmd(dir, &["--limit", "5"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("query still running after {limit:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait_with_output().unwrap()
}

fn demo(records: u64) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    fedgate_gateway::demo::build(t.path(), records, false).unwrap();
    t
}

/// issue 11.3: before, the consumer kept its cached connection to the dead process and every
/// query failed (or hung) until the 60 s idle timeout.
#[test]
fn the_first_query_after_a_provider_restart_succeeds() {
    let t = demo(50);
    let dir = t.path();
    let provider = serve(&cfg(dir, PROVIDER));
    let _consumer = serve(&cfg(dir, CONSUMER));
    let o = query_within(dir, Duration::from_secs(10));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    provider.crash();
    let restart = Instant::now();
    let _provider = serve(&cfg(dir, PROVIDER));
    let up = restart.elapsed();
    let o = query_within(dir, Duration::from_secs(5));
    let total = restart.elapsed();
    assert!(
        o.status.success(),
        "the first query after the restart failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 5);
    eprintln!("provider restart: up after {up:?}, first query answered {total:?} after the restart began");
    assert!(total < Duration::from_secs(2), "{total:?}");
}

fn provider_entries(dir: &Path) -> Vec<Entry> {
    let c = fedgate_gateway::config::load(&cfg(dir, PROVIDER)).unwrap();
    let sealer = AuditKeys::load_reader(&c.audit_key).unwrap();
    let verifier = audit::read_verifier(&c.audit_dir.join("signing.pub")).unwrap();
    audit::verify(&c.audit_dir, &verifier, Some(&sealer), |_| {}).unwrap();
    let mut entries = Vec::new();
    audit::entries(&c.audit_dir, &sealer, |e| {
        entries.push(e);
        Ok(())
    })
    .unwrap();
    entries
}

/// issue 11.4: the provider's entry for a transfer used to be written after the last batch, so
/// a provider killed mid-stream had sent records and logged nothing.
#[test]
fn a_provider_killed_mid_stream_has_logged_its_decision() {
    let t = demo(20_000);
    let dir = t.path();
    let provider = serve(&cfg(dir, PROVIDER));
    let _consumer = serve(&cfg(dir, CONSUMER));
    let mut q = query_cmd(dir, &[]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut lines = BufReader::new(q.stdout.take().unwrap()).lines();
    let first = lines.next().expect("no record arrived").unwrap();
    assert!(first.contains("ticket_id"), "{first}");
    // Not reading further holds the provider mid-stream (backpressure through the consumer).
    provider.crash();
    let _ = q.kill();
    let _ = q.wait();

    // Restarting recovers the log (a torn tail is cut); stopping seals it for reading.
    serve(&cfg(dir, PROVIDER)).stop();
    let entries = provider_entries(dir);
    let decision = entries
        .iter()
        .find(|e| e.kind == Some(Kind::RequestIn) && e.counterpart.as_deref() == Some(CONSUMER))
        .expect("the decision entry survived the crash");
    assert_eq!(decision.decision.as_deref(), Some("allow"));
    assert_eq!(decision.dataset.as_deref(), Some("hotline-tickets"));
    assert!(!decision.obligations.is_empty());
    let exchange = decision.exchange.as_deref().expect("the decision names its exchange");
    assert_eq!(exchange.len(), 32, "128-bit id in hex: {exchange}");
    assert!(exchange.bytes().all(|b| b.is_ascii_hexdigit()), "{exchange}");
    assert!(
        !entries.iter().any(|e| e.kind == Some(Kind::TransferEnd) && e.exchange.as_deref() == Some(exchange)),
        "a transfer cut by SIGKILL has no outcome entry"
    );
}
