//! The audit log under damage, crashes and auditors' checks.

use std::path::Path;

use fedgate_audit::{self as audit, AuditKeys, AuditLog, Entry, Kind, LogOptions};

fn keys(dir: &Path) -> AuditKeys {
    AuditKeys::load_or_create(&dir.join("audit.key"), &dir.join("signing.key")).unwrap()
}

fn entry(i: u64) -> Entry {
    Entry {
        kind: Some(Kind::RequestIn),
        actor: "hotline12345@wuxi".into(),
        counterpart: Some("police@wuxi.liangxi".into()),
        dataset: Some("hotline-tickets".into()),
        purpose: Some("law-enforcement".into()),
        records: Some(i),
        ..Entry::default()
    }
}

const ORIGIN: &str = "fedgate.audit/hotline12345@wuxi";

fn verifier(dir: &Path) -> (String, Vec<u8>) {
    audit::read_verifier(&dir.join("log/signing.pub")).unwrap()
}

/// Verifies with the key; the number of entries, or the error's text.
fn check(dir: &Path) -> Result<u64, String> {
    let sealer = AuditKeys::load_sealer(&dir.join("audit.key")).unwrap();
    let verifier = audit::read_verifier(&dir.join("log/signing.pub")).map_err(|e| e.to_string())?;
    audit::verify(&dir.join("log"), &verifier, Some(&sealer), |_| {})
        .map(|v| v.entries)
        .map_err(|e| e.to_string())
}

/// Writes `n` entries (in groups) with small segments and frequent checkpoints, then closes.
async fn write_log(dir: &Path, n: u64, options: LogOptions) {
    let (log, _) = AuditLog::open_with(&dir.join("log"), ORIGIN, keys(dir), options).unwrap();
    for chunk in (0..n).collect::<Vec<_>>().chunks(3) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|&i| {
                let log = log.clone();
                tokio::spawn(async move { log.append(entry(i)).await.unwrap() })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    }
    log.close().await.unwrap();
}

#[tokio::test]
async fn any_flipped_byte_in_any_log_file_fails_verification_naming_the_place() {
    let t = tempfile::tempdir().unwrap();
    write_log(t.path(), 12, LogOptions { segment_bytes: 1500, checkpoint_entries: 4 }).await;
    let log = t.path().join("log");
    assert_eq!(check(t.path()).unwrap(), 12);
    let mut files: Vec<_> = std::fs::read_dir(&log).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(
        files.iter().filter(|f| f.to_string_lossy().contains("seg-")).count() >= 3,
        "rotation happened: {files:?}"
    );
    for f in files {
        let original = std::fs::read(&f).unwrap();
        for i in 0..original.len() {
            let mut bad = original.clone();
            bad[i] ^= 0x04;
            std::fs::write(&f, &bad).unwrap();
            let err =
                check(t.path()).expect_err(&format!("flip at byte {i} of {} went unnoticed", f.display()));
            let named = err.contains("entry ") || err.contains("checkpoint ") || f.ends_with("signing.pub");
            assert!(named, "{}: byte {i}: error does not name the place: {err}", f.display());
        }
        std::fs::write(&f, &original).unwrap();
    }
    assert_eq!(check(t.path()).unwrap(), 12);
}

#[tokio::test]
async fn a_torn_tail_is_cut_on_restart_and_nothing_acknowledged_is_lost() {
    let t = tempfile::tempdir().unwrap();
    write_log(t.path(), 10, LogOptions::default()).await;
    let seg = audit::log::segments(&t.path().join("log")).unwrap().pop().unwrap().1;
    let whole = std::fs::read(&seg).unwrap();
    // A crash in the middle of writing an 11th entry: some prefix of a real frame hits the disk.
    let sealer = AuditKeys::load_sealer(&t.path().join("audit.key")).unwrap();
    let mut frame = Vec::new();
    let mut next = entry(10);
    next.seq = 10;
    audit::entry::frame(&sealer.seal(&next, [3u8; 12]), &mut frame);
    for cut in [1, 4, 10, frame.len() - 1] {
        let mut torn = whole.clone();
        torn.extend_from_slice(&frame[..cut]);
        std::fs::write(&seg, &torn).unwrap();
        let (log, recovery) = AuditLog::open(&t.path().join("log"), ORIGIN, keys(t.path())).unwrap();
        assert_eq!(recovery.entries, 10, "cut {cut}");
        assert_eq!(recovery.torn_bytes, cut as u64, "cut {cut}");
        log.close().await.unwrap();
        assert_eq!(check(t.path()).unwrap(), 10, "cut {cut}");
    }
    // And the log goes on from there.
    let (log, _) = AuditLog::open(&t.path().join("log"), ORIGIN, keys(t.path())).unwrap();
    assert_eq!(log.append(entry(10)).await.unwrap(), 10);
    log.close().await.unwrap();
    assert_eq!(check(t.path()).unwrap(), 11);
}

#[tokio::test]
async fn a_wrong_key_is_a_clear_error_and_proofs_check_offline() {
    let t = tempfile::tempdir().unwrap();
    write_log(t.path(), 7, LogOptions::default()).await;
    let other = tempfile::tempdir().unwrap();
    let wrong = AuditKeys::load_or_create(&other.path().join("a.key"), &other.path().join("s.key")).unwrap();
    let err = audit::verify(&t.path().join("log"), &verifier(t.path()), Some(&wrong.sealer), |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("entry 0") && err.contains("wrong audit key"), "{err}");
    // Someone else's public key: the checkpoints do not verify.
    let foreign = (ORIGIN.to_owned(), wrong.public_key());
    let err = audit::verify(&t.path().join("log"), &foreign, None, |_| {}).unwrap_err().to_string();
    assert!(err.contains("checkpoint 1"), "{err}");

    for seq in 0..7 {
        let p = audit::prove(&t.path().join("log"), &verifier(t.path()), seq).unwrap();
        let cp = audit::check_proof(&p, &verifier(t.path())).unwrap();
        assert_eq!(cp.size, 7);
        let mut bad = p.clone();
        bad.leaf.replace_range(40..42, if &bad.leaf[40..42] == "00" { "01" } else { "00" });
        assert!(audit::check_proof(&bad, &verifier(t.path())).is_err());
    }
    assert!(audit::prove(&t.path().join("log"), &verifier(t.path()), 7).is_err());
}

#[tokio::test]
async fn consistency_proofs_between_checkpoints() {
    let t = tempfile::tempdir().unwrap();
    write_log(t.path(), 12, LogOptions { segment_bytes: 1 << 20, checkpoint_entries: 4 }).await;
    let log = t.path().join("log");
    let v = verifier(t.path());
    for from in 1..=12 {
        // Checkpoint sizes depend on how appends were grouped; prove between those that exist.
        let Ok(p) = audit::prove_consistency(&log, &v, from, None) else { continue };
        let (old, new) = audit::check_consistency(&p, &v).unwrap();
        assert_eq!((old.size, new.size), (from, 12));
        let mut bad = p.clone();
        if let Some(h) = bad.path.first_mut() {
            h.replace_range(0..2, if &h[0..2] == "00" { "01" } else { "00" });
            assert!(audit::check_consistency(&bad, &v).is_err());
        }
    }
    let sizes: Vec<u64> = (1..=12).filter(|&n| audit::prove_consistency(&log, &v, n, None).is_ok()).collect();
    assert!(sizes.len() >= 2, "checkpoints every few entries: {sizes:?}");
    assert!(audit::prove_consistency(&log, &v, 13, None).is_err(), "no checkpoint of that size");
}
