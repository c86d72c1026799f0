//! The tamper-evident, encrypted audit log and the auditor's tools.
//!
//! [`merkle`] (RFC 6962 hashing and proofs), [`entry`] (encryption and framing) and
//! [`checkpoint`] (signed notes) are pure; [`log`] owns the files; this module holds what the
//! `fedgate audit` commands do: verify, show, prove, check a proof, export.

pub mod checkpoint;
pub mod entry;
pub mod log;
pub mod merkle;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use entry::{Entry, Kind};
pub use log::{AuditError, AuditKeys, AuditLog, LogOptions, Recovery};

use checkpoint::Checkpoint;
use entry::Sealer;
use merkle::{CompactRange, Hash};

/// The checkpoint origin of a node's log.
pub fn origin(node: &fedgate_catalog::NodeId) -> String {
    format!("fedgate.audit/{node}")
}

/// Reads the verifier key written next to the log (`signing.pub`).
pub fn read_verifier(path: &Path) -> Result<(String, Vec<u8>), AuditError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| AuditError::Io { path: path.into(), source })?;
    checkpoint::parse_verifier_key(&text)
        .map_err(|e| AuditError::Key { path: path.into(), why: e.to_string() })
}

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

/// An inclusion proof, self-contained: checkable offline with only the signer's public key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InclusionProof {
    /// The entry's sequence number (leaf index).
    pub entry: u64,
    /// The stored (encrypted) entry, hex.
    pub leaf: String,
    /// The signed checkpoint it is proved against.
    pub checkpoint: String,
    /// Sibling hashes from the leaf up, hex.
    pub path: Vec<String>,
}

/// Proves entry `seq` against the latest checkpoint.
pub fn prove(dir: &Path, verifier: &(String, Vec<u8>), seq: u64) -> Result<InclusionProof, AuditError> {
    let (notes, _) = log::read_checkpoints(dir)?;
    let cp_path = dir.join("checkpoints");
    let note = notes.last().ok_or_else(|| AuditError::BadCheckpoint {
        path: cp_path.clone(),
        why: "no signed checkpoint yet".into(),
    })?;
    let cp = Checkpoint::verify(note, &verifier.0, &verifier.1)
        .map_err(|e| AuditError::BadCheckpoint { path: cp_path.clone(), why: e.to_string() })?;
    if seq >= cp.size {
        return Err(AuditError::BadCheckpoint {
            path: cp_path,
            why: format!(
                "the latest checkpoint covers entries 0..{}; entry {seq} is not signed yet",
                cp.size
            ),
        });
    }
    let mut hashes: Vec<Hash> = Vec::with_capacity(cp.size as usize);
    let mut leaf = Vec::new();
    log::scan(dir, |s, l, h| {
        if s < cp.size {
            hashes.push(*h);
        }
        if s == seq {
            leaf = l.to_vec();
        }
        Ok(())
    })?;
    let path = merkle::inclusion_proof(&hashes, seq as usize).map_err(|e| AuditError::Corrupt {
        path: dir.into(),
        seq,
        offset: 0,
        why: e.to_string(),
    })?;
    Ok(InclusionProof {
        entry: seq,
        leaf: fedgate_catalog::hex(&leaf),
        checkpoint: note.clone(),
        path: path.iter().map(|h| fedgate_catalog::hex(h)).collect(),
    })
}

/// Checks a proof with only the public key. Returns the checkpoint it was proved against.
pub fn check_proof(p: &InclusionProof, verifier: &(String, Vec<u8>)) -> Result<Checkpoint, String> {
    let cp = Checkpoint::verify(&p.checkpoint, &verifier.0, &verifier.1)
        .map_err(|e| format!("checkpoint: {e}"))?;
    let leaf = fedgate_catalog::unhex(&p.leaf).ok_or("leaf is not hex")?;
    if entry::leaf_seq(&leaf) != Some(p.entry) {
        return Err(format!("the leaf is not entry {}", p.entry));
    }
    let path = parse_hashes(&p.path)?;
    merkle::verify_inclusion(&merkle::leaf_hash(&leaf), p.entry, cp.size, &path, &cp.root)
        .map_err(|e| e.to_string())?;
    Ok(cp)
}

/// A consistency proof between two signed checkpoints: the later log extends the earlier one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConsistencyProof {
    /// The earlier signed checkpoint.
    pub old: String,
    /// The later signed checkpoint.
    pub new: String,
    /// RFC 6962 consistency proof hashes, hex.
    pub path: Vec<String>,
}

fn signed(dir: &Path, verifier: &(String, Vec<u8>)) -> Result<Vec<(String, Checkpoint)>, AuditError> {
    let cp_path = dir.join("checkpoints");
    let (notes, _) = log::read_checkpoints(dir)?;
    notes
        .into_iter()
        .enumerate()
        .map(|(i, n)| {
            let cp = Checkpoint::verify(&n, &verifier.0, &verifier.1).map_err(|e| {
                AuditError::BadCheckpoint { path: cp_path.clone(), why: format!("checkpoint {}: {e}", i + 1) }
            })?;
            Ok((n, cp))
        })
        .collect()
}

/// Proves that the signed checkpoint of size `from` is a prefix of the one of size `to` (the
/// latest if `None`).
pub fn prove_consistency(
    dir: &Path,
    verifier: &(String, Vec<u8>),
    from: u64,
    to: Option<u64>,
) -> Result<ConsistencyProof, AuditError> {
    let cps = signed(dir, verifier)?;
    let cp_path = dir.join("checkpoints");
    let find = |size: u64| cps.iter().rev().find(|(_, c)| c.size == size).cloned();
    let old = find(from).ok_or_else(|| AuditError::BadCheckpoint {
        path: cp_path.clone(),
        why: format!("no signed checkpoint of size {from}"),
    })?;
    let new = match to {
        Some(t) => find(t).ok_or_else(|| AuditError::BadCheckpoint {
            path: cp_path.clone(),
            why: format!("no signed checkpoint of size {t}"),
        })?,
        None => cps.last().cloned().ok_or_else(|| AuditError::BadCheckpoint {
            path: cp_path.clone(),
            why: "no signed checkpoint yet".into(),
        })?,
    };
    let mut hashes = Vec::with_capacity(new.1.size as usize);
    log::scan(dir, |s, _, h| {
        if s < new.1.size {
            hashes.push(*h);
        }
        Ok(())
    })?;
    if (hashes.len() as u64) < new.1.size || old.1.size > new.1.size {
        return Err(AuditError::BadCheckpoint {
            path: cp_path,
            why: format!("checkpoints of size {} and {} do not fit this log", old.1.size, new.1.size),
        });
    }
    let path = merkle::consistency_proof(&hashes, old.1.size as usize);
    Ok(ConsistencyProof {
        old: old.0,
        new: new.0,
        path: path.iter().map(|h| fedgate_catalog::hex(h)).collect(),
    })
}

/// Checks a consistency proof with only the public key; returns (old, new) checkpoints.
pub fn check_consistency(
    p: &ConsistencyProof,
    verifier: &(String, Vec<u8>),
) -> Result<(Checkpoint, Checkpoint), String> {
    let old =
        Checkpoint::verify(&p.old, &verifier.0, &verifier.1).map_err(|e| format!("old checkpoint: {e}"))?;
    let new =
        Checkpoint::verify(&p.new, &verifier.0, &verifier.1).map_err(|e| format!("new checkpoint: {e}"))?;
    let path = parse_hashes(&p.path)?;
    merkle::verify_consistency(old.size, new.size, &path, &old.root, &new.root).map_err(|e| e.to_string())?;
    Ok((old, new))
}

/// Proof hashes from hex.
fn parse_hashes(hexes: &[String]) -> Result<Vec<Hash>, String> {
    hexes
        .iter()
        .map(|h| {
            fedgate_catalog::unhex(h)
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| format!("path hash {h:?} is not 32 hex bytes"))
        })
        .collect()
}

/// Copies the log (segments, checkpoints, public key) into `out` with a README for the auditor.
pub fn export(dir: &Path, out: &Path) -> Result<u64, AuditError> {
    let io = |p: &Path| {
        let p = p.to_owned();
        move |source| AuditError::Io { path: p, source }
    };
    std::fs::create_dir_all(out).map_err(io(out))?;
    let mut n = 0;
    for (_, seg) in log::segments(dir)? {
        let name = seg.file_name().map(PathBuf::from).unwrap_or_default();
        std::fs::copy(&seg, out.join(name)).map_err(io(&seg))?;
        n += 1;
    }
    for f in ["checkpoints", "signing.pub"] {
        let p = dir.join(f);
        if p.exists() {
            std::fs::copy(&p, out.join(f)).map_err(io(&p))?;
        }
    }
    std::fs::write(
        out.join("README.txt"),
        "fedgate audit log export\n\nseg-*.log     encrypted entries (RFC 6962 Merkle tree over them)\ncheckpoints   signed tree heads (C2SP tlog-checkpoint notes, length-prefixed)\nsigning.pub   the note verifier key of the node that signed them\n\nVerify without the decryption key:\n  fedgate audit verify --dir THIS_FOLDER --pubkey THIS_FOLDER/signing.pub\n",
    )
    .map_err(io(out))?;
    Ok(n)
}
