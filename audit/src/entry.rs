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

use crate::merkle::{leaf_hash, Hash};

/// Bytes of framing around a leaf.
pub const FRAME_OVERHEAD: usize = 4 + 32;
/// The largest leaf, shared by the writer and the reader: the reader treats a longer length as
/// corruption (so a damaged length cannot make it allocate much), and the writer refuses to
/// append an entry whose leaf would be longer ([`Entry::check_size`]), so it never writes what
/// the reader would refuse.
pub const MAX_LEAF: usize = 1 << 20;
/// A text field longer than this is recorded as its length and SHA-256 digest instead
/// ([`Entry::bounded`]). Real values (ids, reasons, signatures) are far shorter; the cap exists
/// because some values come from peers.
pub const MAX_FIELD: usize = 4096;
/// A list field (filters, obligations) with more items than this is recorded as its item count
/// and digest instead.
pub const MAX_ITEMS: usize = 256;
const NONCE: usize = 12;
/// Leaf bytes besides the encrypted CBOR: seq, nonce and the AES-GCM tag.
const LEAF_OVERHEAD: usize = 8 + NONCE + 16;

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
    /// A segment past retention was crypto-shredded (its data key destroyed).
    Shred,
    /// A sharing request made, received or answered, or its grant revoked (the steward's
    /// decisions included): the exchange id pairs both sides' entries.
    Governance,
    /// A referral step taken here or received from the peer (also a refused one): the exchange
    /// id and [`Entry::step`] pair both sides' entries.
    Referral,
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
            Kind::Shred => "shred",
            Kind::Governance => "governance",
            Kind::Referral => "referral",
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
            Kind::Shred,
            Kind::Governance,
            Kind::Referral,
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
    /// The exchange (128-bit id, hex) this entry belongs to. The consumer picks it and sends it
    /// with the request, so both sides' entries carry the same id. Absent from entries written
    /// before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange: Option<String>,
    // The structured fields below are left out when absent, like `truncated`, so older entries
    // keep their exact bytes and an auditor's tools read every field without parsing prose.
    /// The grant that allowed the exchange.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    /// The highest grade the consumer saw in clear (1..4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clearance: Option<u8>,
    /// The rows the consumer could receive: `all`, or `within REGION`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<String>,
    /// The wire error code of a refusal or failure (`denied`, `quota-exceeded`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// At the consumer: the provider's audit entry the trailer (or refusal) cited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_entry: Option<u64>,
    /// At the consumer: the provider's trailer signature (hex), verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// At the consumer: the provider's signed checkpoint covering its entry for this exchange
    /// and that entry's inclusion proof, both verified against the provider's audit key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witness: Option<crate::witness::Witness>,
    /// In a long-lived exchange (a referral), the signed step this entry records: the same on
    /// both sides, so an auditor pairs the author's entry with the receiver's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<Step>,
}

/// A step of a long-lived exchange, as both sides' audit entries name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// Its number within the exchange (1 is the `send`).
    pub n: u64,
    /// The node that took it and signed it.
    pub by: String,
}

/// An entry too large to append even after [`Entry::bounded`] replaced its oversized fields.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit entry of {leaf} bytes exceeds the {MAX_LEAF}-byte entry limit")]
pub struct TooLarge {
    /// The leaf size it would have had.
    pub leaf: usize,
}

/// `<N bytes, sha256 HEX>`: the stand-in for a value too large to record (the same form the
/// gateway's wire limits use, so a value reads alike in errors and in the log).
pub fn fingerprint(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    format!("<{} bytes, sha256 {}>", bytes.len(), fedgate_catalog::hex(d.as_ref()))
}

fn bound_text(s: &mut String) {
    if s.len() > MAX_FIELD {
        *s = fingerprint(s.as_bytes());
    }
}

fn bound_opt(s: &mut Option<String>) {
    if let Some(s) = s {
        bound_text(s);
    }
}

fn cbor(value: &impl Serialize) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    if let Err(e) = ciborium::ser::into_writer(value, &mut out) {
        unreachable!("CBOR encoding into memory failed: {e}");
    }
    out
}

impl Entry {
    /// The entry with every text over [`MAX_FIELD`] and every list over [`MAX_ITEMS`] replaced
    /// by its length and SHA-256 digest, so a peer-supplied value cannot blow up the log.
    pub fn bounded(mut self) -> Entry {
        bound_text(&mut self.actor);
        for s in [
            &mut self.counterpart,
            &mut self.dataset,
            &mut self.purpose,
            &mut self.decision,
            &mut self.reason,
            &mut self.content_digest,
            &mut self.policy_digest,
            &mut self.catalog_digest,
            &mut self.detail,
            &mut self.truncated,
            &mut self.exchange,
            &mut self.grant,
            &mut self.rows,
            &mut self.code,
            &mut self.signature,
        ] {
            bound_opt(s);
        }
        // A witness is checked before it is kept, which bounds it; one that is not is dropped
        // rather than let a peer's bytes fill the log.
        if self.witness.as_ref().is_some_and(|w| {
            w.checkpoint.len() > crate::witness::MAX_NOTE
                || w.path.len() > crate::witness::MAX_PATH
                || std::iter::once(&w.leaf).chain(&w.path).any(|h| h.len() != 64)
        }) {
            self.witness = None;
        }
        if self.filters.len() > MAX_ITEMS {
            let all = cbor(&self.filters);
            let n = self.filters.len();
            self.filters = vec![(format!("<{n} filters>"), fingerprint(&all))];
        }
        for (k, v) in &mut self.filters {
            bound_text(k);
            bound_text(v);
        }
        if self.obligations.len() > MAX_ITEMS {
            let all = cbor(&self.obligations);
            let n = self.obligations.len();
            self.obligations = vec![format!("<{n} obligations> {}", fingerprint(&all))];
        }
        self.obligations.iter_mut().for_each(bound_text);
        self
    }

    /// Checks that the entry's leaf fits [`MAX_LEAF`] whatever seq and time the log gives it.
    pub fn check_size(&self) -> Result<(), TooLarge> {
        // The largest seq and time encode longest; the log sets the real ones later.
        let widest = Entry { seq: u64::MAX, time_ms: i64::MIN, ..self.clone() };
        let leaf = LEAF_OVERHEAD + cbor(&widest).len();
        if leaf > MAX_LEAF {
            return Err(TooLarge { leaf });
        }
        Ok(())
    }
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
        let plain = cbor(entry);
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
    if !(LEAF_OVERHEAD..=MAX_LEAF).contains(&len) {
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
    fn oversized_fields_become_length_and_digest() {
        let huge = "x".repeat(1_100_000);
        let e = Entry {
            dataset: Some(huge.clone()),
            filters: vec![("f".into(), huge.clone())],
            obligations: (0..MAX_ITEMS + 1).map(|i| format!("f{i}=clear")).collect(),
            ..sample(1)
        };
        assert!(e.check_size().is_err(), "the test entry must be too large before bounding");
        let b = e.bounded();
        let want = fingerprint(huge.as_bytes());
        assert_eq!(b.dataset.as_deref(), Some(want.as_str()));
        assert!(want.starts_with("<1100000 bytes, sha256 "), "{want}");
        assert_eq!(b.filters, vec![("f".into(), want)]);
        assert_eq!(b.obligations.len(), 1);
        assert!(b.check_size().is_ok());
        // Short values are kept as they are.
        assert_eq!(sample(1).bounded(), sample(1));
    }

    #[test]
    fn what_check_size_passes_the_reader_accepts() {
        // Many fields just under the field cap: bounded, yet too large as a whole.
        let near = "y".repeat(MAX_FIELD);
        let big = Entry { filters: vec![(near.clone(), near); MAX_ITEMS], ..sample(2) }.bounded();
        assert!(matches!(big.check_size(), Err(TooLarge { leaf }) if leaf > MAX_LEAF));
        // The largest entry check_size passes is read back as a record, not as corruption.
        let mut fits = Entry { detail: Some(String::new()), ..sample(u64::MAX) };
        fits.time_ms = i64::MIN;
        let room = MAX_LEAF - LEAF_OVERHEAD - cbor(&fits).len();
        fits.detail = Some("z".repeat(room.min(MAX_FIELD)));
        let mut filler = Vec::new();
        while fits.check_size().is_ok() {
            filler.push(("k".into(), "v".repeat(MAX_FIELD - 8)));
            fits.filters = filler.clone();
        }
        filler.pop();
        fits.filters = filler;
        assert!(fits.check_size().is_ok());
        let leaf = Sealer::new(&[7u8; 32]).seal(&fits, [3u8; 12]);
        assert!(leaf.len() <= MAX_LEAF && leaf.len() > MAX_LEAF - 2 * MAX_FIELD, "{}", leaf.len());
        let mut disk = Vec::new();
        frame(&leaf, &mut disk);
        assert!(matches!(read_record(&disk), Read::Record { .. }));
    }

    #[test]
    fn absent_structured_fields_leave_an_entry_bytes_as_before() {
        // An entry written before the structured fields existed: the same CBOR map minus them.
        #[derive(Serialize)]
        struct Before<'a> {
            seq: u64,
            time_ms: i64,
            kind: Option<Kind>,
            actor: &'a str,
            counterpart: Option<&'a str>,
            dataset: Option<&'a str>,
            purpose: Option<&'a str>,
            filters: Vec<(String, String)>,
            decision: Option<&'a str>,
            reason: Option<&'a str>,
            obligations: Vec<String>,
            records: Option<u64>,
            content_digest: Option<&'a str>,
            policy_digest: Option<&'a str>,
            catalog_digest: Option<&'a str>,
            detail: Option<&'a str>,
        }
        let old = Before {
            seq: 1,
            time_ms: 1_800_000_000_000,
            kind: Some(Kind::RequestIn),
            actor: "hotline12345@wuxi",
            counterpart: Some("police@wuxi.liangxi"),
            dataset: Some("hotline-tickets"),
            purpose: None,
            filters: vec![],
            decision: None,
            reason: None,
            obligations: vec![],
            records: Some(42),
            content_digest: None,
            policy_digest: None,
            catalog_digest: None,
            detail: None,
        };
        assert_eq!(cbor(&sample(1)), cbor(&old));
        let back: Entry = ciborium::de::from_reader(cbor(&old).as_slice()).unwrap();
        assert_eq!(back, sample(1));
        let full = Entry {
            exchange: Some("00".repeat(16)),
            grant: Some("police-hotline".into()),
            clearance: Some(2),
            rows: Some("within wuxi.liangxi".into()),
            code: Some("quota-exceeded".into()),
            provider_entry: Some(20),
            signature: Some("ab".repeat(32)),
            step: Some(Step { n: 3, by: "police@wuxi.liangxi".into() }),
            ..sample(1)
        };
        let back: Entry = ciborium::de::from_reader(cbor(&full).as_slice()).unwrap();
        assert_eq!(back, full);
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
