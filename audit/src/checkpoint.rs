//! Signed checkpoints in the C2SP tlog-checkpoint format (a signed note), so outside tools can
//! read them: `origin\nsize\nbase64(root)\n`, a blank line, then `— name base64(keyhash||sig)`.
//! Signatures are Ed25519 (ring). Pure.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};

use crate::merkle::Hash;

/// Signature-type byte of Ed25519 in the note format.
const ED25519_TYPE: u8 = 0x01;

/// A checkpoint: the log's size and root, signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Who signs: e.g. `fedgate.audit/police@wuxi.liangxi`.
    pub origin: String,
    /// Entries covered.
    pub size: u64,
    /// Merkle root at that size.
    pub root: Hash,
}

/// Why a note was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// Not a well-formed note or checkpoint.
    #[error("malformed checkpoint: {0}")]
    Malformed(&'static str),
    /// No signature by the expected key.
    #[error("no signature by key {0}")]
    NoSignature(String),
    /// The signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
}

fn key_hash(name: &str, public: &[u8]) -> [u8; 4] {
    let mut c = ring::digest::Context::new(&ring::digest::SHA256);
    c.update(name.as_bytes());
    c.update(b"\n");
    c.update(&[ED25519_TYPE]);
    c.update(public);
    let d = c.finish();
    let mut out = [0u8; 4];
    out.copy_from_slice(&d.as_ref()[..4]);
    out
}

/// The note verifier key string: `name+hexkeyhash+base64(0x01||pubkey)`.
pub fn verifier_key(name: &str, public: &[u8]) -> String {
    let mut k = vec![ED25519_TYPE];
    k.extend_from_slice(public);
    format!("{name}+{}+{}", fedgate_catalog::hex(&key_hash(name, public)), B64.encode(k))
}

/// Parses a verifier key string into (name, public key).
pub fn parse_verifier_key(s: &str) -> Result<(String, Vec<u8>), NoteError> {
    // The name never contains '+', the hash is hex; the base64 key may contain '+'.
    let mut parts = s.trim().splitn(3, '+');
    let (Some(name), Some(hash), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(NoteError::Malformed("verifier key is not name+hash+key"));
    };
    let raw = B64.decode(key).map_err(|_| NoteError::Malformed("verifier key is not base64"))?;
    let Some((&ED25519_TYPE, public)) = raw.split_first() else {
        return Err(NoteError::Malformed("verifier key is not an Ed25519 key"));
    };
    if fedgate_catalog::hex(&key_hash(name, public)) != hash {
        return Err(NoteError::Malformed("verifier key hash does not match its key"));
    }
    Ok((name.to_owned(), public.to_vec()))
}

impl Checkpoint {
    /// The note body (what is signed).
    pub fn body(&self) -> String {
        format!("{}\n{}\n{}\n", self.origin, self.size, B64.encode(self.root))
    }

    /// The signed note.
    pub fn sign(&self, key: &Ed25519KeyPair) -> String {
        let body = self.body();
        let sig = key.sign(body.as_bytes());
        let mut blob = key_hash(&self.origin, key.public_key().as_ref()).to_vec();
        blob.extend_from_slice(sig.as_ref());
        format!("{body}\n\u{2014} {} {}\n", self.origin, B64.encode(blob))
    }

    /// Parses and verifies a signed note against the key `(name, public)`.
    pub fn verify(note: &str, name: &str, public: &[u8]) -> Result<Checkpoint, NoteError> {
        let (body, sigs) =
            note.split_once("\n\n").ok_or(NoteError::Malformed("no blank line before signatures"))?;
        let body = format!("{body}\n");
        let want_hash = key_hash(name, public);
        let mut verified = false;
        for line in sigs.lines() {
            let Some(rest) = line.strip_prefix("\u{2014} ") else {
                return Err(NoteError::Malformed("signature line does not start with an em dash"));
            };
            let Some((who, b64)) = rest.split_once(' ') else {
                return Err(NoteError::Malformed("signature line"));
            };
            let blob = B64.decode(b64).map_err(|_| NoteError::Malformed("signature is not base64"))?;
            if who != name || blob.len() < 4 || blob[..4] != want_hash {
                continue;
            }
            UnparsedPublicKey::new(&ED25519, public)
                .verify(body.as_bytes(), &blob[4..])
                .map_err(|_| NoteError::BadSignature)?;
            verified = true;
        }
        if !verified {
            return Err(NoteError::NoSignature(name.to_owned()));
        }
        let mut lines = body.lines();
        let origin = lines.next().ok_or(NoteError::Malformed("no origin line"))?.to_owned();
        let size = lines.next().and_then(|l| l.parse().ok()).ok_or(NoteError::Malformed("no size line"))?;
        let root_raw =
            lines.next().and_then(|l| B64.decode(l).ok()).ok_or(NoteError::Malformed("no root hash line"))?;
        let root: Hash =
            root_raw.try_into().map_err(|_| NoteError::Malformed("root hash is not 32 bytes"))?;
        Ok(Checkpoint { origin, size, root })
    }
}

/// Checkpoints whose signatures were verified, remembered by their exact note text and
/// verifier: every exchange of one group commit carries the same signed note, so a consumer
/// with many exchanges in flight would otherwise verify the same Ed25519 signature once per
/// exchange. Verification is a pure function of (note, name, key), so answering a repeat from
/// memory changes nothing but the cost; anything not byte-identical is verified afresh.
/// Bounded: the last `cap` notes, oldest forgotten first.
pub struct NoteMemo {
    recent: std::sync::Mutex<std::collections::VecDeque<Remembered>>,
    cap: usize,
    hits: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for NoteMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoteMemo").field("cap", &self.cap).field("hits", &self.hits()).finish()
    }
}

struct Remembered {
    note: String,
    name: String,
    public: Vec<u8>,
    checkpoint: Checkpoint,
}

impl NoteMemo {
    /// An empty memo of the last `cap` verified notes.
    pub const fn new(cap: usize) -> NoteMemo {
        NoteMemo {
            recent: std::sync::Mutex::new(std::collections::VecDeque::new()),
            cap,
            hits: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// [`Checkpoint::verify`], answered from memory when this exact note was verified with this
    /// exact verifier before. Only successes are remembered.
    pub fn verify(&self, note: &str, name: &str, public: &[u8]) -> Result<Checkpoint, NoteError> {
        if let Some(cp) = self.recall(note, name, public) {
            self.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(cp);
        }
        let checkpoint = Checkpoint::verify(note, name, public)?;
        if self.cap > 0 {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            if recent.len() >= self.cap {
                recent.pop_front();
            }
            let remembered = Remembered {
                note: note.to_owned(),
                name: name.to_owned(),
                public: public.to_vec(),
                checkpoint: checkpoint.clone(),
            };
            recent.push_back(remembered);
        }
        Ok(checkpoint)
    }

    /// How many verifications were answered from memory.
    pub fn hits(&self) -> u64 {
        self.hits.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn recall(&self, note: &str, name: &str, public: &[u8]) -> Option<Checkpoint> {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        // Newest first: concurrent exchanges cite the latest group's note.
        recent
            .iter()
            .rev()
            .find(|r| r.note == note && r.name == name && r.public == public)
            .map(|r| r.checkpoint.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifier_keys_round_trip_whatever_base64_they_contain() {
        for _ in 0..64 {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
            let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
            let vk = verifier_key("fedgate.audit/x@wuxi", key.public_key().as_ref());
            assert_eq!(parse_verifier_key(&vk).unwrap().1, key.public_key().as_ref(), "{vk}");
        }
    }

    #[test]
    fn sign_verify_and_reject() {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let cp = Checkpoint { origin: "fedgate.audit/police@wuxi.liangxi".into(), size: 12, root: [9u8; 32] };
        let note = cp.sign(&key);
        assert!(note.starts_with("fedgate.audit/police@wuxi.liangxi\n12\nCQkJ"));
        let vk = verifier_key(&cp.origin, key.public_key().as_ref());
        let (name, public) = parse_verifier_key(&vk).unwrap();
        assert_eq!(Checkpoint::verify(&note, &name, &public).unwrap(), cp);
        for i in 0..note.len() {
            let mut bytes = note.clone().into_bytes();
            bytes[i] ^= 0x01;
            if let Ok(s) = String::from_utf8(bytes) {
                assert!(Checkpoint::verify(&s, &name, &public).is_err(), "flip at {i} accepted");
            }
        }
    }
    #[test]
    fn the_memo_answers_only_byte_identical_notes_under_the_same_key() {
        let rng = ring::rand::SystemRandom::new();
        let key = Ed25519KeyPair::from_pkcs8(Ed25519KeyPair::generate_pkcs8(&rng).unwrap().as_ref()).unwrap();
        let other =
            Ed25519KeyPair::from_pkcs8(Ed25519KeyPair::generate_pkcs8(&rng).unwrap().as_ref()).unwrap();
        let origin = "fedgate.audit/police@wuxi.liangxi";
        let cp = Checkpoint { origin: origin.into(), size: 12, root: [9u8; 32] };
        let note = cp.sign(&key);
        let public = key.public_key().as_ref();
        let memo = NoteMemo::new(4);
        assert_eq!(memo.verify(&note, origin, public).unwrap(), cp);
        assert_eq!(memo.hits(), 0);
        assert_eq!(memo.verify(&note, origin, public).unwrap(), cp);
        assert_eq!(memo.hits(), 1, "the repeat is answered from memory");
        // A remembered note under another key or name is verified afresh, and fails.
        assert!(memo.verify(&note, origin, other.public_key().as_ref()).is_err());
        assert!(memo.verify(&note, "fedgate.audit/court@wuxi.xinwu", public).is_err());
        // Any flipped byte is a different note: never answered from memory.
        for i in 0..note.len() {
            let mut bytes = note.clone().into_bytes();
            bytes[i] ^= 0x01;
            if let Ok(s) = String::from_utf8(bytes) {
                assert!(memo.verify(&s, origin, public).is_err(), "flip at {i} accepted");
            }
        }
        assert_eq!(memo.hits(), 1);
    }

    #[test]
    fn the_memo_forgets_the_oldest_note_past_its_bound() {
        let rng = ring::rand::SystemRandom::new();
        let key = Ed25519KeyPair::from_pkcs8(Ed25519KeyPair::generate_pkcs8(&rng).unwrap().as_ref()).unwrap();
        let origin = "fedgate.audit/police@wuxi.liangxi";
        let note = |size| Checkpoint { origin: origin.into(), size, root: [7u8; 32] }.sign(&key);
        let public = key.public_key().as_ref();
        let memo = NoteMemo::new(2);
        for size in 1..=3 {
            memo.verify(&note(size), origin, public).unwrap();
        }
        memo.verify(&note(3), origin, public).unwrap();
        memo.verify(&note(2), origin, public).unwrap();
        assert_eq!(memo.hits(), 2);
        memo.verify(&note(1), origin, public).unwrap();
        assert_eq!(memo.hits(), 2, "the first note was forgotten");
        assert_eq!(memo.recent.lock().unwrap().len(), 2);
        let none = NoteMemo::new(0);
        none.verify(&note(1), origin, public).unwrap();
        none.verify(&note(1), origin, public).unwrap();
        assert_eq!(none.hits(), 0);
    }
}
