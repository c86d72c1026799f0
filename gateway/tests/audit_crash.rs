//! Crash safety of the audit log, with the real binary killed mid-write.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fedgate_audit::{self as audit, AuditKeys, AuditLog};

/// Kills a process appending as fast as it can, several times: every entry it acknowledged is
/// in the log afterwards, and the log verifies.
#[test]
fn sigkill_during_sustained_appends_loses_no_acknowledged_entry() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    for round in 0..5 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fedgate"))
            .args(["audit", "soak", "--dir", dir.to_str().unwrap(), "--writers", "32"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let start = Instant::now();
        let mut max_acked = None::<u64>;
        while start.elapsed() < Duration::from_millis(300 + 100 * round) {
            match lines.next() {
                Some(Ok(l)) => max_acked = max_acked.max(l.trim().parse().ok()),
                _ => break,
            }
        }
        child.kill().unwrap();
        let _ = child.wait();
        // Lines already printed but not yet read were acknowledged too.
        for l in lines.map_while(Result::ok) {
            max_acked = max_acked.max(l.trim().parse().ok());
        }
        let max_acked = max_acked.expect("the soak acknowledged nothing");
        let keys =
            AuditKeys::load_or_create(&dir.join("keys/audit.key"), &dir.join("keys/signing.key")).unwrap();
        let sealer = AuditKeys::load_reader(&dir.join("keys/audit.key")).unwrap();
        let (log, recovery) = AuditLog::open(&dir.join("log"), "fedgate.audit/soak@wuxi", keys)
            .unwrap_or_else(|e| panic!("round {round}: reopening after SIGKILL: {e}"));
        assert!(
            recovery.entries > max_acked,
            "round {round}: acknowledged {max_acked} but the log holds {}",
            recovery.entries
        );
        drop(log);
        let verifier = audit::read_verifier(&dir.join("log/signing.pub")).unwrap();
        let v = audit::verify(&dir.join("log"), &verifier, Some(&sealer), |_| {}).unwrap();
        assert!(v.entries > max_acked);
    }
}
