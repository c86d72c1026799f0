//! Whole-log verification, with or without the key that reads entries.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::checkpoint::Checkpoint;
use crate::entry::{Entry, Sealer};
use crate::log::{self, AuditError};
use crate::merkle::CompactRange;

/// What `audit verify` established.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verified {
    /// Entries in the log, all intact.
    pub entries: u64,
    /// Signed checkpoints, all valid and consistent with the entries.
    pub checkpoints: usize,
    /// Size of the latest checkpoint.
    pub signed_size: u64,
    /// Entries were also decrypted and authenticated with the audit key.
    pub decrypted: bool,
    /// The log ends inside an entry that no checkpoint covers: a write in progress, or one torn
    /// by a crash (never acknowledged; the gateway cuts it on restart).
    pub unfinished_tail: bool,
}

/// Verifies a whole log: framing and stored hashes of every entry, sequence continuity, every
/// checkpoint's signature, each checkpoint's root recomputed from the entries (which also proves
/// checkpoints consistent with each other), and — with the key — every entry's authenticity.
/// The first failure is returned, naming the entry or checkpoint. `progress(done)` is called
/// now and then for long logs.
pub fn verify(
    dir: &Path,
    verifier: &(String, Vec<u8>),
    sealer: Option<&Sealer>,
    mut progress: impl FnMut(u64),
) -> Result<Verified, AuditError> {
    let (notes, torn) = log::read_checkpoints(dir)?;
    let cp_path = dir.join("checkpoints");
    if let Some(at) = torn {
        return Err(AuditError::BadCheckpoint {
            path: cp_path,
            why: format!("checkpoint {} (byte {at}) is cut short or its length was altered", notes.len() + 1),
        });
    }
    let mut cps = Vec::with_capacity(notes.len());
    for (i, n) in notes.iter().enumerate() {
        let cp = Checkpoint::verify(n, &verifier.0, &verifier.1).map_err(|e| AuditError::BadCheckpoint {
            path: cp_path.clone(),
            why: format!("checkpoint {} of {}: {e}", i + 1, notes.len()),
        })?;
        if let Some(prev) = cps.last().map(|c: &Checkpoint| c.size) {
            if cp.size < prev {
                return Err(AuditError::BadCheckpoint {
                    path: cp_path,
                    why: format!("checkpoint {} shrinks the log from {prev} to {} entries", i + 1, cp.size),
                });
            }
        }
        cps.push(cp);
    }
    let mut tree = CompactRange::default();
    let mut next_cp = 0usize;
    let mut check_cps = |tree: &CompactRange| -> Result<(), AuditError> {
        while next_cp < cps.len() && cps[next_cp].size == tree.size() {
            if cps[next_cp].root != tree.root() {
                let from = if next_cp == 0 { 0 } else { cps[next_cp - 1].size };
                return Err(AuditError::BadCheckpoint {
                    path: cp_path.clone(),
                    why: format!(
                        "checkpoint {} (size {}) does not match the log: an entry in {from}..{} was rewritten",
                        next_cp + 1,
                        tree.size(),
                        tree.size()
                    ),
                });
            }
            next_cp += 1;
        }
        Ok(())
    };
    check_cps(&tree)?;
    let seg_of = |seq: u64| -> PathBuf {
        log::segments(dir)
            .ok()
            .and_then(|s| s.into_iter().rev().find(|(f, _)| *f <= seq).map(|(_, p)| p))
            .unwrap_or_default()
    };
    let scan = log::scan(dir, |seq, leaf, hash| {
        if let Some(s) = sealer {
            s.open(leaf).map_err(|e| AuditError::Corrupt {
                path: seg_of(seq),
                seq,
                offset: 0,
                why: e.to_string(),
            })?;
        }
        tree.push(*hash);
        if seq % 65_536 == 0 {
            progress(seq);
        }
        check_cps(&tree)
    })?;
    let signed = cps.last().map_or(0, |c| c.size);
    if let Some((path, at)) = &scan.torn {
        if scan.entries < signed {
            return Err(AuditError::Corrupt {
                path: path.clone(),
                seq: scan.entries,
                offset: *at,
                why: format!("entry {} is damaged or cut, but a checkpoint covers it", scan.entries),
            });
        }
    }
    if let Some(cp) = cps.get(next_cp) {
        return Err(AuditError::BadCheckpoint {
            path: cp_path,
            why: format!(
                "checkpoint {} covers {} entries but the log holds {}: entries were removed",
                next_cp + 1,
                cp.size,
                scan.entries
            ),
        });
    }
    progress(scan.entries);
    Ok(Verified {
        entries: scan.entries,
        checkpoints: cps.len(),
        signed_size: signed,
        decrypted: sealer.is_some(),
        unfinished_tail: scan.torn.is_some(),
    })
}

/// Decrypts every entry in order.
pub fn entries(
    dir: &Path,
    sealer: &Sealer,
    mut visit: impl FnMut(Entry) -> Result<(), AuditError>,
) -> Result<u64, AuditError> {
    let scan = log::scan(dir, |seq, leaf, _| {
        let e = sealer.open(leaf).map_err(|e| AuditError::Corrupt {
            path: dir.into(),
            seq,
            offset: 0,
            why: e.to_string(),
        })?;
        visit(e)
    })?;
    Ok(scan.entries)
}
