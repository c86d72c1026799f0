//! Peers witness each other's logs: with every answer a provider hands the consumer its signed
//! checkpoint covering the entry that records the answer, and that entry's inclusion proof. The
//! consumer checks both against the provider's audit key and keeps them in its own entry, so it
//! holds signed, provable snapshots of the provider's log; a provider that later truncates,
//! forks or rewrites its log no longer reproduces them (see [`crate::reconcile`]). Pure.

use serde::{Deserialize, Serialize};

use crate::checkpoint::{Checkpoint, NoteError, NoteMemo};
use crate::merkle::{self, Hash, ProofError};

/// The longest signed note accepted from a peer: a checkpoint is about 200 bytes; the cap
/// bounds what a peer can make a consumer check and keep.
pub const MAX_NOTE: usize = 1024;
/// The most proof hashes accepted: a tree of 2^64 entries needs 64.
pub const MAX_PATH: usize = 64;

/// A provider's signed tree head and the inclusion proof of one of its entries in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Witness {
    /// The signed checkpoint (a C2SP note, as in the `checkpoints` file).
    pub checkpoint: String,
    /// The entry proved (its sequence number, the leaf index).
    pub entry: u64,
    /// The entry's leaf hash (hex): the entry is encrypted, so the consumer proves its hash.
    pub leaf: String,
    /// Sibling hashes from the leaf up (hex).
    pub path: Vec<String>,
}

/// Why a witness was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WitnessError {
    /// Not well-formed (sizes, hex).
    #[error("malformed witness: {0}")]
    Malformed(String),
    /// The checkpoint is not signed by the provider's audit key.
    #[error("the checkpoint does not verify with {origin}'s audit key: {error}")]
    Checkpoint {
        /// Whose key it was checked against.
        origin: String,
        /// Why.
        error: NoteError,
    },
    /// The proof is for another entry than the one the answer cites.
    #[error("the proof is for provider entry {got}, the answer cites entry {want}")]
    OtherEntry {
        /// Proved.
        got: u64,
        /// Cited.
        want: u64,
    },
    /// The proof does not lead from the entry to the checkpoint's root.
    #[error(
        "the inclusion proof of entry {entry} does not lead to the checkpoint's root (size {size}): {error}"
    )]
    Proof {
        /// The entry.
        entry: u64,
        /// The checkpoint's size.
        size: u64,
        /// Why.
        error: ProofError,
    },
}

impl Witness {
    /// Makes a witness from a signed note and the entry's proof.
    pub fn new(checkpoint: String, entry: u64, leaf: &Hash, path: &[Hash]) -> Witness {
        Witness {
            checkpoint,
            entry,
            leaf: fedgate_catalog::hex(leaf),
            path: path.iter().map(|h| fedgate_catalog::hex(h)).collect(),
        }
    }

    /// Checks the witness against the provider's note verifier `(name, public key)`: the
    /// checkpoint's signature, then that the proof leads from the leaf to its root. With
    /// `cited`, the proof must be for that entry. Returns the checkpoint.
    pub fn check(
        &self,
        verifier: &(String, Vec<u8>),
        cited: Option<u64>,
    ) -> Result<Checkpoint, WitnessError> {
        self.check_by(verifier, cited, |note| Checkpoint::verify(note, &verifier.0, &verifier.1))
    }

    /// [`Witness::check`], with the checkpoint's signature answered from `memo` when the same
    /// note was verified with the same key before (the proof is always checked).
    pub fn check_memo(
        &self,
        verifier: &(String, Vec<u8>),
        cited: Option<u64>,
        memo: &NoteMemo,
    ) -> Result<Checkpoint, WitnessError> {
        self.check_by(verifier, cited, |note| memo.verify(note, &verifier.0, &verifier.1))
    }

    fn check_by(
        &self,
        verifier: &(String, Vec<u8>),
        cited: Option<u64>,
        verify_note: impl FnOnce(&str) -> Result<Checkpoint, NoteError>,
    ) -> Result<Checkpoint, WitnessError> {
        if self.checkpoint.len() > MAX_NOTE {
            return Err(WitnessError::Malformed(format!(
                "checkpoint of {} bytes, at most {MAX_NOTE}",
                self.checkpoint.len()
            )));
        }
        if self.path.len() > MAX_PATH {
            return Err(WitnessError::Malformed(format!(
                "{} proof hashes, at most {MAX_PATH}",
                self.path.len()
            )));
        }
        if let Some(want) = cited.filter(|w| *w != self.entry) {
            return Err(WitnessError::OtherEntry { got: self.entry, want });
        }
        let cp = verify_note(&self.checkpoint)
            .map_err(|error| WitnessError::Checkpoint { origin: verifier.0.clone(), error })?;
        let leaf =
            hash(&self.leaf).ok_or_else(|| WitnessError::Malformed("leaf is not 32 hex bytes".into()))?;
        let path = self
            .path
            .iter()
            .map(|h| {
                hash(h).ok_or_else(|| WitnessError::Malformed(format!("path hash {h:?} is not 32 hex bytes")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        merkle::verify_inclusion(&leaf, self.entry, cp.size, &path, &cp.root)
            .map_err(|error| WitnessError::Proof { entry: self.entry, size: cp.size, error })?;
        Ok(cp)
    }

    /// The checkpoint's size and root as the note states them, without checking its signature
    /// (for a report about a witness whose signer's key is not at hand).
    pub fn claimed_head(&self) -> Option<(u64, Hash)> {
        let mut lines = self.checkpoint.lines().skip(1);
        let size = lines.next()?.parse().ok()?;
        use base64::Engine;
        let root = base64::engine::general_purpose::STANDARD.decode(lines.next()?).ok()?;
        Some((size, root.try_into().ok()?))
    }

    /// Bytes this witness adds to a CBOR frame (for the benchmark's account of the wire cost).
    pub fn wire_len(&self) -> usize {
        let mut out = Vec::new();
        ciborium::ser::into_writer(self, &mut out).map_or(0, |()| out.len())
    }
}

fn hash(h: &str) -> Option<Hash> {
    fedgate_catalog::unhex(h).and_then(|b| <[u8; 32]>::try_from(b).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{inclusion_proof, leaf_hash, root};
    use ring::signature::{Ed25519KeyPair, KeyPair};

    fn key() -> Ed25519KeyPair {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    const ORIGIN: &str = "fedgate.audit/hotline12345@wuxi";

    /// A log of 11 entries, the witness of entry `i` at size `n`, and the verifier.
    fn witness(k: &Ed25519KeyPair, i: usize, n: usize) -> (Witness, (String, Vec<u8>), Vec<Hash>) {
        let leaves: Vec<Hash> = (0..11u8).map(|b| leaf_hash(&[b])).collect();
        let cp = Checkpoint { origin: ORIGIN.into(), size: n as u64, root: root(&leaves[..n]) };
        let w = Witness::new(cp.sign(k), i as u64, &leaves[i], &inclusion_proof(&leaves[..n], i).unwrap());
        (w, (ORIGIN.into(), k.public_key().as_ref().to_vec()), leaves)
    }

    #[test]
    fn a_good_witness_checks_and_names_its_head() {
        let k = key();
        let (w, v, leaves) = witness(&k, 6, 9);
        let cp = w.check(&v, Some(6)).unwrap();
        assert_eq!((cp.size, cp.root), (9, root(&leaves[..9])));
        assert_eq!(w.claimed_head(), Some((9, cp.root)));
        assert!(w.wire_len() > 200 && w.wire_len() < 700, "{}", w.wire_len());
    }

    #[test]
    fn a_wrong_key_is_refused() {
        let (w, _, _) = witness(&key(), 6, 9);
        let other = key();
        let v = (ORIGIN.to_owned(), other.public_key().as_ref().to_vec());
        assert!(matches!(w.check(&v, Some(6)), Err(WitnessError::Checkpoint { .. })));
        // The right key under another node's name.
        let (w, v, _) = witness(&key(), 6, 9);
        let renamed = ("fedgate.audit/court@wuxi.xinwu".to_owned(), v.1);
        assert!(matches!(w.check(&renamed, Some(6)), Err(WitnessError::Checkpoint { .. })));
    }

    #[test]
    fn a_wrong_root_is_refused() {
        let k = key();
        let (mut w, v, leaves) = witness(&k, 6, 9);
        // Signed by the right key, but over another tree (entry 3 rewritten).
        let mut forked = leaves.clone();
        forked[3] = leaf_hash(b"rewritten");
        w.checkpoint = Checkpoint { origin: ORIGIN.into(), size: 9, root: root(&forked[..9]) }.sign(&k);
        assert!(
            matches!(w.check(&v, Some(6)), Err(WitnessError::Proof { entry: 6, size: 9, .. })),
            "{:?}",
            w.check(&v, Some(6))
        );
    }

    #[test]
    fn a_proof_for_another_entry_is_refused() {
        let k = key();
        let (w, v, _) = witness(&k, 5, 9);
        assert_eq!(w.check(&v, Some(6)), Err(WitnessError::OtherEntry { got: 5, want: 6 }));
        // Relabelled as entry 6: the path no longer leads to the root.
        let (mut w, v, leaves) = witness(&k, 5, 9);
        w.entry = 6;
        assert!(matches!(w.check(&v, Some(6)), Err(WitnessError::Proof { .. })));
        // Entry 6's path with entry 5's leaf.
        let (mut w, v, _) = witness(&k, 6, 9);
        w.leaf = fedgate_catalog::hex(&leaves[5]);
        assert!(matches!(w.check(&v, Some(6)), Err(WitnessError::Proof { .. })));
    }

    #[test]
    fn a_remembered_checkpoint_still_needs_a_proof_that_leads_to_it() {
        let k = key();
        let memo = NoteMemo::new(8);
        let (w, v, leaves) = witness(&k, 6, 9);
        w.check_memo(&v, Some(6), &memo).unwrap();
        // Another entry of the same group: same note, its own proof.
        let (w5, _, _) = witness(&k, 5, 9);
        let w5 = Witness { checkpoint: w.checkpoint.clone(), ..w5 };
        w5.check_memo(&v, Some(5), &memo).unwrap();
        assert_eq!(memo.hits(), 1);
        // The same note with a forged leaf: the note comes from memory, the proof fails.
        let mut forged = w.clone();
        forged.leaf = fedgate_catalog::hex(&leaves[2]);
        assert!(matches!(forged.check_memo(&v, Some(6), &memo), Err(WitnessError::Proof { .. })));
        assert_eq!(memo.hits(), 2);
        // Under another key the remembered note is not taken.
        let other = (ORIGIN.to_owned(), key().public_key().as_ref().to_vec());
        assert!(matches!(w.check_memo(&other, Some(6), &memo), Err(WitnessError::Checkpoint { .. })));
    }

    #[test]
    fn malformed_witnesses_are_refused_not_panicked_on() {
        let k = key();
        let (w, v, _) = witness(&k, 6, 9);
        let cases: [fn(&mut Witness); 7] = [
            |w| w.leaf = "zz".into(),
            |w| w.path[0].truncate(63),
            |w| w.path = vec![w.path[0].clone(); MAX_PATH + 1],
            |w| w.checkpoint = "x".repeat(MAX_NOTE + 1),
            |w| w.checkpoint.truncate(20),
            |w| drop(w.path.pop()),
            |w| w.entry = 9,
        ];
        for (i, f) in cases.iter().enumerate() {
            let mut bad = w.clone();
            f(&mut bad);
            assert!(bad.check(&v, None).is_err(), "case {i} accepted");
        }
    }
}
