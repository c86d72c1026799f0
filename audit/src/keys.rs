//! Per-segment data keys: each segment's entries are sealed under a fresh random key, and that
//! key is kept only wrapped — for the node's audit key (AES-256-GCM) and for each auditor's
//! X25519 public key — in `seg-<first>.keys` beside the segment. An auditor reads with their own
//! private key and never needs the department's. Destroying a segment's wraps crypto-shreds it:
//! the ciphertext and the Merkle tree stay, so verification still passes, and no one can read it.
//!
//! Auditor wrap: an ephemeral X25519 key agrees with the auditor's public key; HKDF-SHA256
//! (salt = ephemeral public || auditor public, info = [`LABEL`] || segment) derives a one-use
//! AES-256-GCM key that seals the data key (zero nonce: the key is never reused). Pure but for
//! the file helpers at the end.

use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use serde::{Deserialize, Serialize};
use x25519_dalek::{PublicKey, StaticSecret};

use crate::entry::Sealer;
use crate::log::AuditError;

/// Domain separation of every wrap: a wrapped key means nothing in any other context.
const LABEL: &[u8] = b"fedgate audit segment key v1";
/// Prefix of an auditor public key file's text.
pub const PUBLIC_PREFIX: &str = "fedgate-auditor-x25519:";

/// A 256-bit data key.
pub type DataKey = [u8; 32];

/// One wrap of a segment's data key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wrap {
    /// `node` (the node's audit key) or the auditor's public key (`fedgate-auditor-x25519:HEX`).
    pub to: String,
    /// The ephemeral X25519 public key (hex), for an auditor wrap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epk: Option<String>,
    /// The AES-GCM nonce (hex), for the node wrap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// The sealed data key (hex).
    pub sealed: String,
}

/// A crypto-shredded segment: when, and the audit entry that records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shredded {
    /// Unix milliseconds.
    pub time_ms: i64,
    /// The `shred` entry's sequence number.
    pub entry: u64,
}

/// The contents of `seg-<first>.keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentKeys {
    /// The segment's first entry.
    pub segment: u64,
    /// When the segment was started (Unix ms); the previous segment ended then.
    pub opened_ms: i64,
    /// The data key, wrapped for each reader. Empty once shredded.
    #[serde(default)]
    pub wraps: Vec<Wrap>,
    /// Set once the data key was destroyed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shredded: Option<Shredded>,
}

/// Why a wrap could not be made or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WrapError {
    /// No wrap for this reader.
    #[error("segment {0} has no key wrapped for this reader")]
    NotForYou(u64),
    /// The segment's key was destroyed.
    #[error("segment {0} was crypto-shredded")]
    Shredded(u64),
    /// The wrap does not open: a wrong key, or altered bytes.
    #[error("segment {0}'s key does not unwrap: wrong audit key, or the key file was altered")]
    Unwrap(u64),
    /// A hex field is malformed.
    #[error("segment {0}'s key file is malformed: {1}")]
    Malformed(u64, &'static str),
    /// No system randomness.
    #[error("no system randomness")]
    Random,
}

/// What every wrap of a segment's key is bound to: the segment and when it started (so no one
/// can age a segment into early shredding by editing its key file).
fn aad(segment: u64, opened_ms: i64) -> Vec<u8> {
    let mut a = LABEL.to_vec();
    a.push(0);
    a.extend_from_slice(&segment.to_be_bytes());
    a.extend_from_slice(&opened_ms.to_be_bytes());
    a
}

fn random<const N: usize>() -> Result<[u8; N], WrapError> {
    let mut b = [0u8; N];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| WrapError::Random)?;
    Ok(b)
}

fn cipher(key: &[u8; 32]) -> Aes256Gcm {
    Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key))
}

fn kek(shared: &[u8; 32], epk: &[u8; 32], recipient: &[u8; 32], info: &[u8]) -> [u8; 32] {
    let mut salt = epk.to_vec();
    salt.extend_from_slice(recipient);
    let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, &salt).extract(shared);
    let mut out = [0u8; 32];
    // Expanding 32 bytes from SHA-256 cannot fail (the limit is 255 blocks).
    if let Ok(okm) = prk.expand(&[info], ring::hkdf::HKDF_SHA256) {
        let _ = okm.fill(&mut out);
    }
    out
}

/// An auditor's public key as written in a `.pub` file and in wraps.
pub fn public_text(public: &[u8; 32]) -> String {
    format!("{PUBLIC_PREFIX}{}", fedgate_catalog::hex(public))
}

/// Parses [`public_text`].
pub fn parse_public(text: &str) -> Option<[u8; 32]> {
    let hex = text.trim().strip_prefix(PUBLIC_PREFIX)?;
    fedgate_catalog::unhex(hex)?.try_into().ok()
}

/// A new auditor key pair: (secret, public).
pub fn generate_auditor() -> Result<([u8; 32], [u8; 32]), WrapError> {
    let secret = StaticSecret::from(random::<32>()?);
    Ok((secret.to_bytes(), PublicKey::from(&secret).to_bytes()))
}

/// The public half of auditor secret key `secret`.
pub fn auditor_public(secret: &[u8; 32]) -> [u8; 32] {
    PublicKey::from(&StaticSecret::from(*secret)).to_bytes()
}

/// An auditor secret key as `audit keygen` writes it: 64 hex digits (surrounding white space
/// allowed).
pub fn parse_auditor_secret(text: &str) -> Option<[u8; 32]> {
    fedgate_catalog::unhex(text.trim()).and_then(|k| <[u8; 32]>::try_from(k).ok())
}

/// Wraps `dk` for the node's audit key.
fn wrap_for_node(master: &[u8; 32], aad: &[u8], dk: &DataKey) -> Result<Wrap, WrapError> {
    let nonce = random::<12>()?;
    let sealed = cipher(master)
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: dk, aad })
        .map_err(|_| WrapError::Random)?;
    Ok(Wrap {
        to: "node".into(),
        epk: None,
        nonce: Some(fedgate_catalog::hex(&nonce)),
        sealed: fedgate_catalog::hex(&sealed),
    })
}

/// Wraps `dk` for an auditor's X25519 public key.
fn wrap_for_auditor(auditor: &[u8; 32], aad: &[u8], dk: &DataKey) -> Result<Wrap, WrapError> {
    let eph = StaticSecret::from(random::<32>()?);
    let epk = PublicKey::from(&eph).to_bytes();
    let shared = eph.diffie_hellman(&PublicKey::from(*auditor)).to_bytes();
    let k = kek(&shared, &epk, auditor, aad);
    let sealed = cipher(&k)
        .encrypt(Nonce::from_slice(&[0u8; 12]), Payload { msg: dk, aad })
        .map_err(|_| WrapError::Random)?;
    Ok(Wrap {
        to: public_text(auditor),
        epk: Some(fedgate_catalog::hex(&epk)),
        nonce: None,
        sealed: fedgate_catalog::hex(&sealed),
    })
}

/// Who reads a log: the node with its audit key, or an auditor with their X25519 secret.
pub enum Reader {
    /// The node's audit key (also opens segments written before per-segment keys).
    Node([u8; 32]),
    /// An auditor's X25519 secret key.
    Auditor(StaticSecret),
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Reader::Node(_) => "Reader::Node",
            Reader::Auditor(_) => "Reader::Auditor",
        })
    }
}

fn unhex_n<const N: usize>(segment: u64, s: &str, what: &'static str) -> Result<[u8; N], WrapError> {
    fedgate_catalog::unhex(s).and_then(|b| b.try_into().ok()).ok_or(WrapError::Malformed(segment, what))
}

impl Reader {
    /// An auditor reader from the secret key's bytes.
    pub fn auditor(secret: [u8; 32]) -> Reader {
        Reader::Auditor(StaticSecret::from(secret))
    }

    /// Unwraps a segment's data key.
    pub fn unwrap(&self, keys: &SegmentKeys) -> Result<DataKey, WrapError> {
        let seg = keys.segment;
        if keys.shredded.is_some() {
            return Err(WrapError::Shredded(seg));
        }
        let aad = aad(seg, keys.opened_ms);
        match self {
            Reader::Node(master) => {
                let w = keys.wraps.iter().find(|w| w.to == "node").ok_or(WrapError::NotForYou(seg))?;
                let nonce: [u8; 12] = unhex_n(seg, w.nonce.as_deref().unwrap_or_default(), "nonce")?;
                let sealed =
                    fedgate_catalog::unhex(&w.sealed).ok_or(WrapError::Malformed(seg, "sealed key"))?;
                let dk = cipher(master)
                    .decrypt(Nonce::from_slice(&nonce), Payload { msg: &sealed, aad: &aad })
                    .map_err(|_| WrapError::Unwrap(seg))?;
                dk.try_into().map_err(|_| WrapError::Unwrap(seg))
            }
            Reader::Auditor(secret) => {
                let me = PublicKey::from(secret).to_bytes();
                let w =
                    keys.wraps.iter().find(|w| w.to == public_text(&me)).ok_or(WrapError::NotForYou(seg))?;
                let epk: [u8; 32] = unhex_n(seg, w.epk.as_deref().unwrap_or_default(), "ephemeral key")?;
                let shared = secret.diffie_hellman(&PublicKey::from(epk)).to_bytes();
                let k = kek(&shared, &epk, &me, &aad);
                let sealed =
                    fedgate_catalog::unhex(&w.sealed).ok_or(WrapError::Malformed(seg, "sealed key"))?;
                let dk = cipher(&k)
                    .decrypt(Nonce::from_slice(&[0u8; 12]), Payload { msg: &sealed, aad: &aad })
                    .map_err(|_| WrapError::Unwrap(seg))?;
                dk.try_into().map_err(|_| WrapError::Unwrap(seg))
            }
        }
    }

    /// How this reader opens the segment starting at `first` in `dir`.
    pub fn open_segment(&self, dir: &Path, first: u64) -> Result<SegmentAccess, AuditError> {
        match read(dir, first)? {
            None => match self {
                // Written before per-segment keys: sealed under the node's key itself.
                Reader::Node(master) => Ok(SegmentAccess::Open(Box::new(Sealer::new(master)))),
                Reader::Auditor(_) => Ok(SegmentAccess::Unreadable(
                    "written before per-segment keys; only the node's audit key reads it".into(),
                )),
            },
            Some(k) if k.shredded.is_some() => Ok(SegmentAccess::Shredded),
            Some(k) => match self.unwrap(&k) {
                Ok(dk) => Ok(SegmentAccess::Open(Box::new(Sealer::new(&dk)))),
                // An auditor added later holds no key for older segments; the node always does.
                Err(WrapError::NotForYou(_)) if matches!(self, Reader::Auditor(_)) => {
                    Ok(SegmentAccess::Unreadable(format!(
                        "no key wrapped for this reader in {}",
                        keys_path(dir, first).display()
                    )))
                }
                Err(e) => Err(AuditError::Key { path: keys_path(dir, first), why: e.to_string() }),
            },
        }
    }
}

/// What a reader can do with one segment.
#[derive(Debug)]
pub enum SegmentAccess {
    /// Its entries open with this.
    Open(Box<Sealer>),
    /// Its key was destroyed at the end of retention.
    Shredded,
    /// This reader holds no key for it (why).
    Unreadable(String),
}

/// `seg-<first>.keys` in `dir`.
pub fn keys_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("seg-{first:020}.keys"))
}

/// Reads a segment's key file, if it has one.
pub fn read(dir: &Path, first: u64) -> Result<Option<SegmentKeys>, AuditError> {
    let path = keys_path(dir, first);
    match std::fs::read_to_string(&path) {
        Ok(t) => match serde_json::from_str::<SegmentKeys>(&t) {
            Ok(k) if k.segment == first => Ok(Some(k)),
            Ok(k) => Err(AuditError::Key { path, why: format!("holds the keys of segment {}", k.segment) }),
            Err(e) => Err(AuditError::Key { path, why: format!("not a segment key file: {e}") }),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AuditError::Io { path, source }),
    }
}

/// Writes a segment's key file durably (temporary file, sync, rename, sync the folder), so a
/// crash leaves either the old or the new contents — and after a shred, never the old key.
pub fn write(dir: &Path, keys: &SegmentKeys) -> Result<(), AuditError> {
    use std::io::Write;
    let path = keys_path(dir, keys.segment);
    let tmp = path.with_extension("keys.tmp");
    let io = |p: &Path| {
        let p = p.to_owned();
        move |source| AuditError::Io { path: p, source }
    };
    let text = serde_json::to_string_pretty(keys)
        .map_err(|e| AuditError::Key { path: path.clone(), why: e.to_string() })?;
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(text.as_bytes()).and_then(|_| f.write_all(b"\n")).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// A new segment's keys: a fresh data key wrapped for the node and each auditor.
pub fn new_segment(
    master: &[u8; 32],
    auditors: &[[u8; 32]],
    segment: u64,
    opened_ms: i64,
) -> Result<(DataKey, SegmentKeys), WrapError> {
    let dk = random::<32>()?;
    Ok((dk, wrap_all(master, auditors, segment, opened_ms, &dk)?))
}

/// `dk` wrapped for the node and each auditor, bound to `segment` and `opened_ms`.
pub fn wrap_all(
    master: &[u8; 32],
    auditors: &[[u8; 32]],
    segment: u64,
    opened_ms: i64,
    dk: &DataKey,
) -> Result<SegmentKeys, WrapError> {
    let aad = aad(segment, opened_ms);
    let mut wraps = vec![wrap_for_node(master, &aad, dk)?];
    for a in auditors {
        wraps.push(wrap_for_auditor(a, &aad, dk)?);
    }
    Ok(SegmentKeys { segment, opened_ms, wraps, shredded: None })
}

/// The segment's keys with a wrap added for one more auditor (for an export to an auditor
/// the node was not configured for when the segment was written).
pub fn add_auditor(
    master: &[u8; 32],
    keys: &SegmentKeys,
    auditor: &[u8; 32],
) -> Result<SegmentKeys, WrapError> {
    let mut out = keys.clone();
    if keys.shredded.is_some() || keys.wraps.iter().any(|w| w.to == public_text(auditor)) {
        return Ok(out);
    }
    let dk = Reader::Node(*master).unwrap(keys)?;
    out.wraps.push(wrap_for_auditor(auditor, &aad(keys.segment, keys.opened_ms), &dk)?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_auditor_secret_gives_its_public_half_and_parses_from_its_file_text() {
        let (secret, public) = generate_auditor().unwrap();
        assert_eq!(auditor_public(&secret), public);
        let text = format!("{}\n", fedgate_catalog::hex(&secret));
        assert_eq!(parse_auditor_secret(&text), Some(secret));
        assert_eq!(parse_auditor_secret(&text[..62]), None, "too short");
        assert_eq!(parse_auditor_secret(&public_text(&public)), None, "a public key is no secret");
    }

    #[test]
    fn the_node_and_each_auditor_unwrap_the_same_key_and_no_one_else() {
        let master = [7u8; 32];
        let (a_sec, a_pub) = generate_auditor().unwrap();
        let (b_sec, b_pub) = generate_auditor().unwrap();
        let (stranger, _) = generate_auditor().unwrap();
        let (dk, keys) = new_segment(&master, &[a_pub, b_pub], 4096, 1).unwrap();
        assert_eq!(Reader::Node(master).unwrap(&keys).unwrap(), dk);
        assert_eq!(Reader::auditor(a_sec).unwrap(&keys).unwrap(), dk);
        assert_eq!(Reader::auditor(b_sec).unwrap(&keys).unwrap(), dk);
        assert_eq!(Reader::auditor(stranger).unwrap(&keys), Err(WrapError::NotForYou(4096)));
        assert_eq!(Reader::Node([8u8; 32]).unwrap(&keys), Err(WrapError::Unwrap(4096)));
        // Editing when the segment started (to age it into early shredding) breaks every wrap.
        let aged = SegmentKeys { opened_ms: 0, ..keys.clone() };
        assert_eq!(Reader::Node(master).unwrap(&aged), Err(WrapError::Unwrap(4096)));
        assert_eq!(Reader::auditor(a_sec).unwrap(&aged), Err(WrapError::Unwrap(4096)));
        // A wrap moved to another segment does not open there (the segment is bound in).
        let moved = SegmentKeys { segment: 0, ..keys.clone() };
        assert_eq!(Reader::auditor(a_sec).unwrap(&moved), Err(WrapError::Unwrap(0)));
        assert_eq!(Reader::Node(master).unwrap(&moved), Err(WrapError::Unwrap(0)));
        // Any flipped byte of a sealed key is caught.
        let mut bad = keys.clone();
        let s = &mut bad.wraps[1].sealed;
        let flipped = if s.starts_with('0') { "1" } else { "0" };
        s.replace_range(0..1, flipped);
        assert_eq!(Reader::auditor(a_sec).unwrap(&bad), Err(WrapError::Unwrap(4096)));
        let shredded =
            SegmentKeys { wraps: vec![], shredded: Some(Shredded { time_ms: 2, entry: 9 }), ..keys };
        assert_eq!(Reader::Node(master).unwrap(&shredded), Err(WrapError::Shredded(4096)));
    }

    #[test]
    fn auditor_public_keys_round_trip_as_text() {
        let (_, p) = generate_auditor().unwrap();
        assert_eq!(parse_public(&format!("{}\n", public_text(&p))), Some(p));
        assert_eq!(parse_public("ed25519:00"), None);
        assert_eq!(parse_public(&format!("{PUBLIC_PREFIX}abcd")), None);
    }
}
