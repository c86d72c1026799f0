//! An audit entry, its encryption at rest and its on-disk framing. Pure: bytes in, bytes out.
//!
//! Stored leaf = `seq (u64 BE) || nonce (12) || AES-256-GCM(CBOR(entry), aad = seq)`. The Merkle
//! tree is over these leaves, so integrity is checkable without the key; contents need it.
//! On disk each leaf is framed as `len (u32 BE) || leaf || leaf_hash (32)`: the stored hash lets
//! a reader name the exact entry a flipped byte damaged, and a torn final write is told apart
//! from corruption.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use serde::{Deserialize, Serialize};

use super::merkle::{leaf_hash, Hash};

/// Bytes of framing around a leaf.
pub const FRAME_OVERHEAD: usize = 4 + 32;
/// The largest leaf accepted when reading: far above any real entry, small enough that a
/// corrupted length cannot make a reader allocate much.
pub const MAX_LEAF: usize = 1 << 20;
const NONCE: usize = 12;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A peer asked this node for records (served or refused).
    RequestIn,
    /// This node asked a peer for records, and what it received.
    RequestOut,
    /// A request refused by policy.
    Deny,
    /// A peer certificate refused at the handshake.
    CertReject,
    /// How a transfer whose decision was recorded as `request-in` ended: records sent, digest.
    TransferEnd,
    /// Config, catalog, grants or revocation lists (re)loaded.
    Reload,
    /// The gateway started.
    Start,
    /// The gateway stopped.
    Stop,
}

impl Kind {
    /// As written in entries and accepted by `audit show --kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::RequestIn => "request-in",
            Kind::RequestOut => "request-out",
            Kind::Deny => "deny",
            Kind::CertReject => "cert-reject",
            Kind::TransferEnd => "transfer-end",
            Kind::Reload => "reload",
            Kind::Start => "start",
            Kind::Stop => "stop",
        }
    }

    /// Parses [`Kind::as_str`].
    pub fn parse(s: &str) -> Option<Kind> {
        [
            Kind::RequestIn,
            Kind::RequestOut,
            Kind::Deny,
            Kind::CertReject,
            Kind::TransferEnd,
            Kind::Reload,
            Kind::Start,
            Kind::Stop,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// One audit entry's contents (encrypted at rest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Entry {
    /// Position in the log (set by the log).
    pub seq: u64,
    /// Unix time in milliseconds (set by the log).
    pub time_ms: i64,
    /// What happened.
    pub kind: Option<Kind>,
    /// This node.
    pub actor: String,
    /// The peer, if any.
    pub counterpart: Option<String>,
    /// The dataset, if any.
    pub dataset: Option<String>,
    /// The purpose, if any.
    pub purpose: Option<String>,
    /// Filters asked for.
    pub filters: Vec<(String, String)>,
    /// allow / deny / ok / error.
    pub decision: Option<String>,
    /// Why: the grant that matched, the denial, the error.
    pub reason: Option<String>,
    /// Per-field obligation names applied (`field=operator`).
    pub obligations: Vec<String>,
    /// Records sent or received.
    pub records: Option<u64>,
    /// SHA-256 of what was sent or received.
    pub content_digest: Option<String>,
    /// Digest of the grants in force.
    pub policy_digest: Option<String>,
    /// Digest of the catalog in force.
    pub catalog_digest: Option<String>,
    /// Anything else worth keeping (a trailer signature, a file's digest).
    pub detail: Option<String>,
    /// For a transfer cut short, why: `limit` (the consumer's own) or `quota` (the provider's).
    /// Left out when absent, so entries without it keep their exact bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated: Option<String>,
    /// The exchange (128-bit id, hex) this entry belongs to; pairs a transfer's decision with
    /// its outcome. Absent from entries written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange: Option<String>,
}

/// Entry encryption with the node's audit key.
pub struct Sealer {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer")
    }
}

/// Why a stored entry could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Too short to hold seq and nonce.
    #[error("entry too short")]
    Short,
    /// Authentication failed: wrong key, or the bytes were changed.
    #[error("cannot decrypt: wrong audit key, or the entry was altered")]
    Decrypt,
    /// The plaintext is not an entry.
    #[error("decrypted entry is not valid CBOR: {0}")]
    Cbor(String),
    /// The seq inside differs from the one outside.
    #[error("entry claims seq {inner} but is stored as {outer}")]
    Seq {
        /// Stored.
        outer: u64,
        /// Inside.
        inner: u64,
    },
}

impl Sealer {
    /// From a 32-byte key.
    pub fn new(key: &[u8; 32]) -> Sealer {
        Sealer { cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key)) }
    }

    /// Encrypts `entry` (whose seq must already be set) with a fresh random nonce.
    pub fn seal(&self, entry: &Entry, nonce: [u8; NONCE]) -> Vec<u8> {
        let mut plain = Vec::with_capacity(256);
        if let Err(e) = ciborium::ser::into_writer(entry, &mut plain) {
            unreachable!("CBOR encoding into memory failed: {e}");
        }
        let aad = entry.seq.to_be_bytes();
        let ct = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: &plain, aad: &aad })
            .unwrap_or_else(|_| unreachable!("AES-GCM encryption of a bounded message cannot fail"));
        let mut leaf = Vec::with_capacity(8 + NONCE + ct.len());
        leaf.extend_from_slice(&aad);
        leaf.extend_from_slice(&nonce);
        leaf.extend_from_slice(&ct);
        leaf
    }

    /// Decrypts a stored leaf.
    pub fn open(&self, leaf: &[u8]) -> Result<Entry, OpenError> {
        let outer = leaf_seq(leaf).ok_or(OpenError::Short)?;
        let nonce = leaf.get(8..8 + NONCE).ok_or(OpenError::Short)?;
        let ct = &leaf[8 + NONCE..];
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: &leaf[..8] })
            .map_err(|_| OpenError::Decrypt)?;
        let entry: Entry =
            ciborium::de::from_reader(plain.as_slice()).map_err(|e| OpenError::Cbor(e.to_string()))?;
        if entry.seq != outer {
            return Err(OpenError::Seq { outer, inner: entry.seq });
        }
        Ok(entry)
    }
}

/// The seq in a stored leaf's clear prefix.
pub fn leaf_seq(leaf: &[u8]) -> Option<u64> {
    leaf.first_chunk::<8>().map(|b| u64::from_be_bytes(*b))
}

/// Frames a leaf for disk.
pub fn frame(leaf: &[u8], out: &mut Vec<u8>) -> Hash {
    let h = leaf_hash(leaf);
    out.extend_from_slice(&(leaf.len() as u32).to_be_bytes());
    out.extend_from_slice(leaf);
    out.extend_from_slice(&h);
    h
}

/// One framed record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read<'a> {
    /// A whole, intact record and its length on disk.
    Record {
        /// The leaf.
        leaf: &'a [u8],
        /// Its hash (recomputed and matching the stored one).
        hash: Hash,
        /// Bytes consumed.
        len: usize,
    },
    /// The bytes end inside a record: a torn write.
    Torn,
    /// A whole record whose stored hash does not match, or a length beyond [`MAX_LEAF`].
    Corrupt(&'static str),
}

/// Reads the record at the start of `bytes` (which must not be empty).
pub fn read_record(bytes: &[u8]) -> Read<'_> {
    let Some(len) = bytes.first_chunk::<4>().map(|b| u32::from_be_bytes(*b) as usize) else {
        return Read::Torn;
    };
    if !(8 + NONCE + 16..=MAX_LEAF).contains(&len) {
        return Read::Corrupt("impossible entry length");
    }
    let Some(leaf) = bytes.get(4..4 + len) else { return Read::Torn };
    let Some(stored) = bytes.get(4 + len..4 + len + 32) else { return Read::Torn };
    let hash = leaf_hash(leaf);
    if hash[..] != stored[..] {
        return Read::Corrupt("stored hash does not match the entry's bytes");
    }
    Read::Record { leaf, hash, len: len + FRAME_OVERHEAD }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(seq: u64) -> Entry {
        Entry {
            seq,
            time_ms: 1_800_000_000_000,
            kind: Some(Kind::RequestIn),
            actor: "hotline12345@wuxi".into(),
            counterpart: Some("police@wuxi.liangxi".into()),
            dataset: Some("hotline-tickets".into()),
            records: Some(42),
            ..Entry::default()
        }
    }

    #[test]
    fn seal_open_round_trip_and_tampering() {
        let s = Sealer::new(&[7u8; 32]);
        let leaf = s.seal(&sample(5), [1u8; 12]);
        assert_eq!(s.open(&leaf).unwrap(), sample(5));
        assert_eq!(leaf_seq(&leaf), Some(5));
        for i in 0..leaf.len() {
            let mut bad = leaf.clone();
            bad[i] ^= 0x01;
            assert!(s.open(&bad).is_err(), "flip at {i} undetected");
        }
        assert_eq!(Sealer::new(&[8u8; 32]).open(&leaf), Err(OpenError::Decrypt));
    }

    #[test]
    fn framing_detects_torn_tails_and_flips() {
        let s = Sealer::new(&[7u8; 32]);
        let mut disk = Vec::new();
        frame(&s.seal(&sample(0), [2u8; 12]), &mut disk);
        let Read::Record { len, .. } = read_record(&disk) else { panic!() };
        assert_eq!(len, disk.len());
        for cut in 1..disk.len() {
            assert!(matches!(read_record(&disk[..cut]), Read::Torn | Read::Corrupt(_)), "cut {cut}");
        }
        for i in 4..disk.len() {
            let mut bad = disk.clone();
            bad[i] ^= 0x80;
            assert!(matches!(read_record(&bad), Read::Corrupt(_)), "flip at {i}");
        }
    }
}
