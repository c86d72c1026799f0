//! Unauthenticated handshake floods (issue 11.5): a client with a certificate from a foreign CA
//! dials a real `fedgate serve` process again and again on 127.0.0.1. The gateway records the
//! rejections as one entry per (source, reason) with a count, logs a line or two, refuses the
//! source before any TLS work once it is over the threshold, and still serves honest peers.
//!
//! `FEDGATE_FLOOD=10000 FEDGATE_BIN=target/release/fedgate cargo test -p fedgate-gateway --test
//! flood -- --nocapture` prints the figures of BENCHMARKS.md.

mod served;

use std::path::{Path, PathBuf};
use std::time::Instant;

use fedgate_audit::{self as audit, AuditKeys, Kind};
use fedgate_catalog::NodeId;
use fedgate_certs::authority::{Authority, NodeProfile};
use fedgate_certs::store;
use fedgate_certs::tls::FederationVerifier;
use fedgate_certs::TrustStore;
use fedgate_gateway::link::Link;

const PROVIDER: &str = "hotline12345@wuxi";

fn cfg(dir: &Path, node: &str) -> PathBuf {
    dir.join(node).join("gateway.toml")
}

fn id(s: &str) -> NodeId {
    s.parse().unwrap()
}

/// CPU seconds (user + system) the process has used, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// A bare link presenting `chain`/`key`, trusting the demo federation's root, bound to `ip`.
fn client(
    dir: &Path,
    ip: &str,
    node: &str,
    chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    key: rustls_pki_types::PrivateKeyDer<'static>,
) -> Link {
    let root = store::read_certs(&dir.join("pki/root/root.crt")).unwrap().remove(0);
    let trust = TrustStore::new(root, &[]).unwrap();
    Link::bind(id(node), format!("{ip}:0").parse().unwrap(), FederationVerifier::new(trust), chain, key)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_flood_costs_a_few_entries_and_is_refused_early() {
    let n: usize = std::env::var("FEDGATE_FLOOD").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    fedgate_gateway::demo::build(dir, 10, false).unwrap();
    let served = served::serve(&cfg(dir, PROVIDER));
    let log_path = cfg(dir, PROVIDER).with_file_name("serve.stderr.log");
    let c = fedgate_gateway::config::load(&cfg(dir, PROVIDER)).unwrap();
    let provider = id(PROVIDER);

    // The flood: a member-looking node id under a CA this federation never heard of.
    let now = time::OffsetDateTime::now_utc();
    let stranger = Authority::new_root(&"wuxi".parse().unwrap(), now, 10).unwrap();
    let bad = stranger.issue_node(&id("police@wuxi.liangxi"), NodeProfile::gateway(now, 5)).unwrap();
    let bad_key = {
        use rustls_pki_types::pem::PemObject;
        rustls_pki_types::PrivateKeyDer::from_pem_slice(bad.key_pem.as_bytes()).unwrap()
    };
    let flooder = client(dir, "127.0.0.1", "police@wuxi.liangxi", bad.chain.clone(), bad_key);
    let cpu_before = cpu_seconds(served.0.id());
    let started = Instant::now();
    let mut refused_early = 0;
    for _ in 0..n {
        let err = flooder.connection(&provider, c.listen).await.expect_err("a foreign certificate got in");
        if err.to_string().contains("refused") && !err.to_string().contains("refused us") {
            refused_early += 1;
        }
    }
    let elapsed = started.elapsed();
    let cpu = cpu_seconds(served.0.id()) - cpu_before;

    // An honest peer from another source address is served during the flood's interval.
    let centre = dir.join("mediation-center@wuxi/tls");
    let honest = client(
        dir,
        "127.0.0.2",
        "mediation-center@wuxi",
        store::read_certs(&centre.join("node.crt")).unwrap(),
        store::read_key(&centre.join("node.key")).unwrap(),
    );
    honest.connection(&provider, c.listen).await.expect("an honest peer is still served");

    served.stop();

    let sealer = AuditKeys::load_reader(&c.audit_key).unwrap();
    let mut entries = Vec::new();
    audit::entries(&c.audit_dir, &sealer, |e| {
        entries.push(e);
        Ok(())
    })
    .unwrap();
    let rejects: Vec<_> = entries.iter().filter(|e| e.kind == Some(Kind::CertReject)).collect();
    let counted: u64 = rejects.iter().filter_map(|e| e.records).sum();
    let log_lines = std::fs::read_to_string(&log_path).unwrap().lines().count();
    eprintln!(
        "{n} bad handshakes in {elapsed:.2?}: gateway CPU {cpu:.2} s, {} audit entries in all ({} cert-reject, counting {counted} handshakes; {refused_early} refused before TLS), {log_lines} log lines",
        entries.len(),
        rejects.len()
    );
    assert!(rejects.len() <= 2, "one entry for the first, one summary: {rejects:#?}");
    assert_eq!(rejects[0].reason.as_deref(), Some("unknown-issuer"));
    assert_eq!(rejects[0].counterpart.as_deref(), Some("127.0.0.1"));
    let handshakes = flood_threshold().min(n as u64);
    assert_eq!(counted, handshakes, "every rejected handshake is counted");
    assert_eq!(refused_early as u64, n as u64 - handshakes, "the rest never reached TLS");
    assert!(entries.len() <= 6, "start, rejections, stop: {}", entries.len());
    assert!(log_lines <= 6, "{}", std::fs::read_to_string(&log_path).unwrap());
}

fn flood_threshold() -> u64 {
    fedgate_gateway::flood::REFUSE_AFTER
}
