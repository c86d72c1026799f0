//! Inclusion and consistency proofs: made from a log folder, checked offline with only the
//! signer's public key.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::entry;
use crate::keybind::SignedStatement;
use crate::log::{self, AuditError};
use crate::merkle::{self, Hash};

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
    /// The node certificate's statements naming the signing key, so the proof checks with only
    /// the federation root (`check-proof --trust`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_statements: Vec<SignedStatement>,
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
        key_statements: crate::keybind::read(dir)?,
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
    /// As in [`InclusionProof::key_statements`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_statements: Vec<SignedStatement>,
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
        key_statements: crate::keybind::read(dir)?,
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

/// The log's length and its root at each of `sizes` it reaches (for checking witnessed
/// checkpoints, [`crate::reconcile::reconcile_witnessed`]): one pass over the entries.
pub fn heads_at(
    dir: &Path,
    sizes: &std::collections::BTreeSet<u64>,
) -> Result<(u64, std::collections::BTreeMap<u64, Hash>), AuditError> {
    let mut tree = merkle::CompactRange::default();
    let mut roots = std::collections::BTreeMap::new();
    let scan = log::scan(dir, |_, _, h| {
        tree.push(*h);
        if sizes.contains(&tree.size()) {
            roots.insert(tree.size(), tree.root());
        }
        Ok(())
    })?;
    Ok((scan.entries, roots))
}
