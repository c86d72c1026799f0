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
    let sealer = AuditKeys::load_reader(&dir.join("audit.key")).unwrap();
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
    write_log(
        t.path(),
        12,
        LogOptions { segment_bytes: 1500, checkpoint_entries: 4, ..LogOptions::default() },
    )
    .await;
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
            let named = err.contains("entry ")
                || err.contains("checkpoint ")
                || f.ends_with("signing.pub")
                || (f.extension().is_some_and(|e| e == "keys") && err.contains(&*f.to_string_lossy()));
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
    let sealer = audit::entry::Sealer::new(&[3u8; 32]);
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
    let err = audit::verify(&t.path().join("log"), &verifier(t.path()), Some(&wrong.reader()), |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("segment 0") && err.contains("wrong audit key"), "{err}");
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
    write_log(
        t.path(),
        12,
        LogOptions { segment_bytes: 1 << 20, checkpoint_entries: 4, ..LogOptions::default() },
    )
    .await;
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

/// Appends `n` entries to a log opened with `keys` and `options`, then closes it.
async fn append_n(dir: &Path, keys: AuditKeys, options: LogOptions, from: u64, n: u64) {
    let (log, _) = AuditLog::open_with(&dir.join("log"), ORIGIN, keys, options).unwrap();
    for i in from..from + n {
        log.append(entry(i)).await.unwrap();
    }
    log.close().await.unwrap();
}

fn small() -> LogOptions {
    LogOptions { segment_bytes: 1500, checkpoint_entries: 4, ..LogOptions::default() }
}

#[tokio::test]
async fn an_auditor_reads_with_their_own_key_and_a_stranger_reads_nothing() {
    let t = tempfile::tempdir().unwrap();
    let (a_secret, a_public) = audit::keys::generate_auditor().unwrap();
    let (stranger, _) = audit::keys::generate_auditor().unwrap();
    append_n(t.path(), keys(t.path()).with_auditors(vec![a_public]), small(), 0, 12).await;
    let log = t.path().join("log");
    let segs = audit::log::segments(&log).unwrap();
    assert!(segs.len() >= 3, "small segments: {segs:?}");
    for (first, _) in &segs {
        let k = audit::keys::read(&log, *first).unwrap().expect("every segment has its key file");
        assert_eq!(k.wraps.len(), 2, "node and auditor");
    }
    let mut seen = Vec::new();
    audit::entries(&log, &audit::Reader::auditor(a_secret), |e| {
        seen.push(e.records.unwrap());
        Ok(())
    })
    .unwrap();
    assert_eq!(seen, (0..12).collect::<Vec<_>>());
    let v =
        audit::verify(&log, &verifier(t.path()), Some(&audit::Reader::auditor(a_secret)), |_| {}).unwrap();
    assert_eq!((v.entries, v.unreadable, v.shredded), (12, 0, 0));
    let v =
        audit::verify(&log, &verifier(t.path()), Some(&audit::Reader::auditor(stranger)), |_| {}).unwrap();
    assert_eq!((v.entries, v.unreadable), (12, 12), "integrity holds; nothing is readable");
    // Segments have distinct keys: one segment's key opens no other.
    let k0 = audit::keys::read(&log, segs[0].0).unwrap().unwrap();
    let dk0 = keys(t.path()).reader().unwrap(&k0).unwrap();
    let k1 = audit::keys::read(&log, segs[1].0).unwrap().unwrap();
    assert_ne!(dk0, keys(t.path()).reader().unwrap(&k1).unwrap());
}

/// Moves every segment's start `days` into the past, as if the log had been written then
/// (re-wrapping each data key: the start time is bound into the wraps).
fn age(dir: &Path, auditors: &[[u8; 32]], days: i64) {
    let log = dir.join("log");
    let audit::Reader::Node(master) = keys(dir).reader() else { unreachable!() };
    for (first, _) in audit::log::segments(&log).unwrap() {
        let k = audit::keys::read(&log, first).unwrap().unwrap();
        let dk = keys(dir).reader().unwrap(&k).unwrap();
        let aged =
            audit::keys::wrap_all(&master, auditors, first, k.opened_ms - days * 86_400_000, &dk).unwrap();
        audit::keys::write(&log, &aged).unwrap();
    }
}

#[tokio::test]
async fn expired_segments_are_crypto_shredded_as_an_audited_event_and_still_verify() {
    let t = tempfile::tempdir().unwrap();
    let (a_secret, a_public) = audit::keys::generate_auditor().unwrap();
    let keys_a = || keys(t.path()).with_auditors(vec![a_public]);
    append_n(t.path(), keys_a(), small(), 0, 12).await;
    let log = t.path().join("log");
    let before = audit::log::segments(&log).unwrap();
    age(t.path(), &[a_public], 200);
    // Reopening with 180 days' retention shreds every closed segment; the last one (still
    // being written) is kept.
    let retention = LogOptions { retention: Some(std::time::Duration::from_secs(180 * 86_400)), ..small() };
    append_n(t.path(), keys_a(), retention, 12, 1).await;
    let mut shredded_segments = 0;
    for (first, _) in &before[..before.len() - 1] {
        let k = audit::keys::read(&log, *first).unwrap().unwrap();
        assert!(k.wraps.is_empty() && k.shredded.is_some(), "segment {first} keeps no key");
        shredded_segments += 1;
    }
    assert!(shredded_segments >= 2);
    // Verification passes with and without a key; the shredded entries are counted.
    let total = audit::verify(&log, &verifier(t.path()), None, |_| {}).unwrap().entries;
    for reader in [keys(t.path()).reader(), audit::Reader::auditor(a_secret)] {
        let v = audit::verify(&log, &verifier(t.path()), Some(&reader), |_| {}).unwrap();
        assert_eq!(v.entries, total);
        assert_eq!(v.shredded, before.last().unwrap().0, "every entry before the last segment");
    }
    // Readers see the shredded entries as such, and the shredding itself is on record.
    let mut shreds = Vec::new();
    let mut gone = 0;
    audit::entries_all(&log, &keys(t.path()).reader(), |o| {
        match o {
            audit::Opened::Shredded { .. } => gone += 1,
            audit::Opened::Entry(e) if e.kind == Some(Kind::Shred) => shreds.push(*e),
            _ => {}
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(gone, before.last().unwrap().0);
    assert_eq!(shreds.len(), shredded_segments);
    assert_eq!(shreds.iter().map(|e| e.records.unwrap()).sum::<u64>(), gone);
    assert!(shreds[0].reason.as_deref().unwrap().contains("retention of 180 days"), "{:?}", shreds[0].reason);
    // Shredding is done once: reopening shreds nothing more.
    let n = total;
    append_n(t.path(), keys_a(), retention, 13, 0).await;
    assert_eq!(audit::verify(&log, &verifier(t.path()), None, |_| {}).unwrap().entries, n);
}

#[tokio::test]
async fn a_log_from_before_per_segment_keys_is_read_and_continued() {
    let t = tempfile::tempdir().unwrap();
    append_n(t.path(), keys(t.path()), LogOptions::default(), 0, 3).await;
    let log = t.path().join("log");
    // Make the log look as it did before: entries sealed under the node key, no key file.
    let seg0 = audit::log::segments(&log).unwrap()[0].0;
    let k = audit::keys::read(&log, seg0).unwrap().unwrap();
    let dk = keys(t.path()).reader().unwrap(&k).unwrap();
    assert_ne!(dk, [0u8; 32]);
    std::fs::remove_file(audit::keys::keys_path(&log, seg0)).unwrap();
    // Without its key file the segment is opened with the node key directly, which fails here
    // (it was sealed under a data key): the error names the entry.
    assert!(check(t.path()).unwrap_err().contains("entry 0"));
    // A genuinely old log: rewrite it with entries sealed under the node key itself.
    let t2 = tempfile::tempdir().unwrap();
    let node_key = keys(t2.path()).reader();
    let audit::Reader::Node(master) = node_key else { unreachable!() };
    let old = audit::entry::Sealer::new(&master);
    let mut bytes = Vec::new();
    for i in 0..3u64 {
        let mut e = entry(i);
        e.seq = i;
        audit::entry::frame(&old.seal(&e, [i as u8; 12]), &mut bytes);
    }
    std::fs::create_dir_all(t2.path().join("log")).unwrap();
    std::fs::write(t2.path().join("log/seg-00000000000000000000.log"), &bytes).unwrap();
    append_n(t2.path(), keys(t2.path()), LogOptions::default(), 3, 2).await;
    // The new entries went to a new segment with its own key; all five read back.
    let segs = audit::log::segments(&t2.path().join("log")).unwrap();
    assert_eq!(segs.iter().map(|s| s.0).collect::<Vec<_>>(), vec![0, 3]);
    assert_eq!(check(t2.path()).unwrap(), 5);
}

#[tokio::test]
async fn an_auditor_added_later_reads_every_entry_written_after() {
    let t = tempfile::tempdir().unwrap();
    append_n(t.path(), keys(t.path()), LogOptions::default(), 0, 3).await;
    let (secret, public) = audit::keys::generate_auditor().unwrap();
    append_n(t.path(), keys(t.path()).with_auditors(vec![public]), LogOptions::default(), 3, 2).await;
    let log = t.path().join("log");
    // The new entries went to a new segment wrapped for the auditor, not into the old one.
    let segs: Vec<u64> = audit::log::segments(&log).unwrap().iter().map(|s| s.0).collect();
    assert_eq!(segs, vec![0, 3]);
    let mut seen = Vec::new();
    audit::entries_all(&log, &audit::Reader::auditor(secret), |o| {
        seen.push(matches!(o, audit::Opened::Entry(_)));
        Ok(())
    })
    .unwrap();
    assert_eq!(seen, vec![false, false, false, true, true]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn witnessed_appends_get_a_signed_head_covering_them_and_a_proof_the_log_reproduces() {
    let t = tempfile::tempdir().unwrap();
    let (log, _) = AuditLog::open_with(&t.path().join("log"), ORIGIN, keys(t.path()), small()).unwrap();
    // Plain and witnessed appends side by side, so groups mix them.
    let mut witnessed = Vec::new();
    for round in 0..20u64 {
        let tasks: Vec<_> = (0..6u64)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(async move {
                    if i % 2 == 0 {
                        Some(log.append_witnessed(entry(round * 6 + i)).await.unwrap())
                    } else {
                        log.append(entry(round * 6 + i)).await.unwrap();
                        None
                    }
                })
            })
            .collect();
        for t in tasks {
            witnessed.extend(t.await.unwrap());
        }
    }
    log.close().await.unwrap();
    let v = verifier(t.path());
    // Every head covers its entry and is reproduced by the log as written: same root at that size.
    let mut tree = audit::merkle::CompactRange::default();
    let mut roots = std::collections::BTreeMap::new();
    audit::log::scan(&t.path().join("log"), |_, _, h| {
        tree.push(*h);
        roots.insert(tree.size(), tree.root());
        Ok(())
    })
    .unwrap();
    assert_eq!(witnessed.len(), 60);
    let mut sizes = std::collections::BTreeSet::new();
    for (seq, w) in &witnessed {
        let cp = w.check(&v, Some(*seq)).unwrap_or_else(|e| panic!("entry {seq}: {e}"));
        assert!(cp.size > *seq);
        assert_eq!(roots[&cp.size], cp.root, "entry {seq}: head of size {} not reproduced", cp.size);
        sizes.insert(cp.size);
    }
    // Concurrent appends share heads (one signature per group), yet each proves its own entry.
    assert!(sizes.len() <= witnessed.len());
    // The heads given out are not written to the checkpoints file; the log still verifies.
    assert_eq!(check(t.path()).unwrap(), 120);
}
