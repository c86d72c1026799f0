//! Audit log benchmark: durable appends/s with group commit (against one-at-a-time appends in
//! the same run), verification time, proof size.
//!
//! Run: cargo bench -p fedgate-audit --bench audit            (1,000,000 entries)
//!      cargo bench -p fedgate-audit --bench audit -- --quick (100,000 entries)

use std::time::Instant;

use fedgate_audit::{self as audit, AuditKeys, AuditLog, Entry, Kind};

fn entry(i: u64) -> Entry {
    Entry {
        kind: Some(Kind::RequestIn),
        actor: "hotline12345@wuxi".into(),
        counterpart: Some(format!("police@wuxi.r{}", i % 97)),
        dataset: Some("hotline-tickets".into()),
        purpose: Some("law-enforcement".into()),
        decision: Some("allow".into()),
        reason: Some("allowed by grant police-hotline (clearance 2, rows within wuxi.liangxi)".into()),
        obligations: vec![
            "caller_name=mask-name".into(),
            "caller_id=mask".into(),
            "address=generalize".into(),
        ],
        records: Some(i % 500),
        content_digest: Some("3f".repeat(32)),
        policy_digest: Some("a1".repeat(32)),
        catalog_digest: Some("b2".repeat(32)),
        ..Entry::default()
    }
}

async fn append_many(log: &AuditLog, total: u64, writers: u64) -> f64 {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while i < total {
                log.append(entry(i)).await.expect("append");
                i += writers;
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    total as f64 / start.elapsed().as_secs_f64()
}

/// CPU time this thread has used, in seconds (from the scheduler's own accounting, so it does
/// not count time spent waiting for a core on a busy machine).
fn thread_cpu_s() -> f64 {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let ns: f64 = text.split_whitespace().next().and_then(|t| t.parse().ok()).unwrap_or(f64::NAN);
    ns / 1e9
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let total: u64 = if quick { 100_000 } else { 1_000_000 };
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = || {
        AuditKeys::load_or_create(&dir.path().join("k/audit.key"), &dir.path().join("k/sign.key"))
            .expect("keys")
    };

    // Baseline: one appender, so every entry pays its own fsync.
    let base_dir = dir.path().join("baseline");
    let (base, _) = AuditLog::open(&base_dir, "fedgate.audit/bench@wuxi", keys()).expect("open");
    let mut one = Vec::new();
    for _ in 0..3 {
        one.push(append_many(&base, 500, 1).await);
    }
    base.close().await.expect("close");

    let log_dir = dir.path().join("log");
    let (log, _) = AuditLog::open(&log_dir, "fedgate.audit/bench@wuxi", keys()).expect("open");
    let mut grouped = Vec::new();
    let per_run = total / 3;
    for _ in 0..3 {
        grouped.push(append_many(&log, per_run, 512).await);
    }
    let rest = total - per_run * 3;
    if rest > 0 {
        append_many(&log, rest, 512).await;
    }
    log.close().await.expect("close");
    let bytes: u64 = audit::log::segments(&log_dir)
        .expect("segments")
        .iter()
        .map(|(_, p)| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();

    let verifier = audit::read_verifier(&log_dir.join("signing.pub")).expect("pubkey");
    let sealer = AuditKeys::load_reader(&dir.path().join("k/audit.key")).expect("key");
    let mut without_key = Vec::new();
    let mut with_key = Vec::new();
    let mut cpu_without_key = Vec::new();
    let mut cpu_with_key = Vec::new();
    for _ in 0..3 {
        let (t, cpu) = (Instant::now(), thread_cpu_s());
        let v = audit::verify(&log_dir, &verifier, None, |_| {}).expect("verify");
        without_key.push(t.elapsed().as_secs_f64());
        cpu_without_key.push(thread_cpu_s() - cpu);
        assert_eq!(v.entries, total);
        let (t, cpu) = (Instant::now(), thread_cpu_s());
        audit::verify(&log_dir, &verifier, Some(&sealer), |_| {}).expect("verify");
        with_key.push(t.elapsed().as_secs_f64());
        cpu_with_key.push(thread_cpu_s() - cpu);
    }
    let proof = audit::prove(&log_dir, &verifier, total / 2).expect("prove");
    let proof_json = serde_json::to_string(&proof).expect("json");

    println!("audit log benchmark, {total} entries of ~{} bytes on disk each", bytes / total);
    println!("  durable appends, 1 appender (fsync each):   median {:>10.0} entries/s", median(one.clone()));
    println!("  durable appends, 512 appenders (group):     median {:>10.0} entries/s  ({:.0}x the single appender)", median(grouped.clone()), median(grouped) / median(one));
    println!(
        "  verify without key (hashes + signatures):   median {:>10.2} s  ({:.2} s CPU)",
        median(without_key),
        median(cpu_without_key)
    );
    println!(
        "  verify with key (also decrypt every entry): median {:>10.2} s  ({:.2} s CPU)",
        median(with_key),
        median(cpu_with_key)
    );
    println!(
        "  inclusion proof for entry {}: {} hashes, {} bytes as JSON (checkpoint and entry included)",
        total / 2,
        proof.path.len(),
        proof_json.len()
    );
}
