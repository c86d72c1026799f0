//! The CBOR encodings: a directory's body (what is signed), a signed directory, and a bundle.

use std::net::SocketAddr;

use fedgate_catalog::{NodeId, Region};
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use super::{label, Directory, DirectoryError, Entry};

/// The encoding's format number, the first field of every body and bundle.
const FORMAT: u8 = 1;

/// The largest bundle a gateway reads or accepts from a peer: a federation of a few thousand
/// nodes fits; a peer cannot make a gateway parse more.
pub const MAX_BUNDLE: usize = 2 * 1024 * 1024;

/// A byte string, written as a CBOR byte string rather than an array of integers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Bytes(Vec<u8>);

impl Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Bytes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes(v))
            }
        }
        // Not `deserialize_bytes`: ciborium's reader serves that only from its 4 KiB scratch
        // buffer and refuses longer strings, and a directory body of ~60 nodes is longer.
        d.deserialize_byte_buf(V)
    }
}

#[derive(Serialize, Deserialize)]
struct BodyWire {
    format: u8,
    federation: String,
    scope: String,
    version: u64,
    issued: i64,
    nodes: Vec<EntryWire>,
}

#[derive(Serialize, Deserialize)]
struct EntryWire {
    node: String,
    address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fingerprint: Option<Bytes>,
}

#[derive(Serialize, Deserialize)]
struct SignedWire {
    body: Bytes,
    chain: Vec<Bytes>,
    signature: Bytes,
}

#[derive(Serialize, Deserialize)]
struct BundleWire {
    format: u8,
    directories: Vec<SignedWire>,
}

fn to_cbor<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing CBOR into memory fails only on I/O errors, which a Vec never gives.
    if let Err(e) = ciborium::ser::into_writer(value, &mut out) {
        unreachable!("CBOR encoding into memory failed: {e}");
    }
    out
}

fn from_cbor<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, DirectoryError> {
    if bytes.len() > MAX_BUNDLE {
        return Err(DirectoryError::Decode(format!(
            "{what} of {} bytes exceeds the {MAX_BUNDLE}-byte limit",
            bytes.len()
        )));
    }
    let mut rest = bytes;
    let value =
        ciborium::de::from_reader(&mut rest).map_err(|e| DirectoryError::Decode(format!("{what}: {e}")))?;
    if !rest.is_empty() {
        return Err(DirectoryError::Decode(format!("{what}: {} trailing bytes", rest.len())));
    }
    Ok(value)
}

pub(super) fn encode_body(d: &Directory) -> Vec<u8> {
    to_cbor(&BodyWire {
        format: FORMAT,
        federation: d.federation.to_string(),
        scope: d.scope.to_string(),
        version: d.version,
        issued: d.issued,
        nodes: d
            .nodes
            .iter()
            .map(|e| EntryWire {
                node: e.node.to_string(),
                address: e.address.to_string(),
                fingerprint: e.fingerprint.map(|f| Bytes(f.to_vec())),
            })
            .collect(),
    })
}

pub(super) fn decode_body(bytes: &[u8]) -> Result<Directory, DirectoryError> {
    let w: BodyWire = from_cbor(bytes, "directory body")?;
    if w.format != FORMAT {
        return Err(DirectoryError::Format(w.format));
    }
    let region = |s: &str, what: &str| {
        s.parse::<Region>().map_err(|e| DirectoryError::Decode(format!("directory {what}: {e}")))
    };
    let federation = region(&w.federation, "federation")?;
    let scope = region(&w.scope, "scope")?;
    let name = label(&scope, w.version);
    let mut nodes = Vec::with_capacity(w.nodes.len());
    for (index, e) in w.nodes.into_iter().enumerate() {
        let bad = |why: String| DirectoryError::BadEntry { dir: name.clone(), index, why };
        let node: NodeId = e.node.parse().map_err(|err| bad(format!("{err}")))?;
        let address: SocketAddr = e.address.parse().map_err(|_| DirectoryError::BadAddress {
            dir: name.clone(),
            node: node.to_string(),
            address: e.address.clone(),
            why: "not IP:PORT".into(),
        })?;
        let fingerprint =
            match e.fingerprint {
                None => None,
                Some(Bytes(f)) => Some(<[u8; 32]>::try_from(f.as_slice()).map_err(|_| {
                    bad(format!("node {node}: fingerprint must be 32 bytes, got {}", f.len()))
                })?),
            };
        nodes.push(Entry { node, address, fingerprint });
    }
    let dir = Directory::new(federation, scope, w.version, w.issued, nodes)?;
    // Also catches unsorted entries and non-shortest integers: one directory, one byte string.
    if dir.encode() != bytes {
        return Err(DirectoryError::NotCanonical(name));
    }
    Ok(dir)
}

/// A directory body with its signer's certificate chain and signature, not yet verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub(super) body: Vec<u8>,
    /// The signing CA's certificate then any intermediates above it, root excluded; empty when
    /// the root itself signed.
    pub(super) chain: Vec<CertificateDer<'static>>,
    pub(super) signature: Vec<u8>,
}

impl Signed {
    /// The signed body (canonical CBOR of a [`Directory`]).
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body decoded and checked, signature unchecked: for showing a file, never for use.
    pub fn unverified(&self) -> Result<Directory, DirectoryError> {
        Directory::decode(&self.body)
    }

    /// The signer's certificate chain (empty: the root).
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The signature bytes (ECDSA P-256, fixed length).
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// A copy with the signature replaced, for tests of forgery detection.
    #[doc(hidden)]
    pub fn with_signature(&self, signature: Vec<u8>) -> Signed {
        Signed { signature, ..self.clone() }
    }

    /// A copy with the body replaced, for tests of forgery detection.
    #[doc(hidden)]
    pub fn with_body(&self, body: Vec<u8>) -> Signed {
        Signed { body, ..self.clone() }
    }
}

/// On the wire a bundle is one CBOR byte string holding its own encoding, decoded (and size
/// capped) with the message that carries it; verification is still the receiver's to do.
impl Serialize for Bundle {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.encode())
    }
}

impl<'de> Deserialize<'de> for Bundle {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Bundle, D::Error> {
        let Bytes(bytes) = Bytes::deserialize(d)?;
        Bundle::decode(&bytes).map_err(serde::de::Error::custom)
    }
}

/// The signed directories a gateway holds or sends: at most one per scope.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bundle {
    /// The directories, in no particular order.
    pub docs: Vec<Signed>,
}

impl Bundle {
    /// The bundle's CBOR encoding (what a directory file and the wire carry).
    pub fn encode(&self) -> Vec<u8> {
        to_cbor(&BundleWire {
            format: FORMAT,
            directories: self
                .docs
                .iter()
                .map(|s| SignedWire {
                    body: Bytes(s.body.clone()),
                    chain: s.chain.iter().map(|c| Bytes(c.to_vec())).collect(),
                    signature: Bytes(s.signature.clone()),
                })
                .collect(),
        })
    }

    /// Decodes a bundle; the directories in it are not verified yet.
    pub fn decode(bytes: &[u8]) -> Result<Bundle, DirectoryError> {
        let w: BundleWire = from_cbor(bytes, "directory bundle")?;
        if w.format != FORMAT {
            return Err(DirectoryError::Format(w.format));
        }
        let docs = w
            .directories
            .into_iter()
            .map(|s| Signed {
                body: s.body.0,
                chain: s.chain.into_iter().map(|c| CertificateDer::from(c.0)).collect(),
                signature: s.signature.0,
            })
            .collect();
        Ok(Bundle { docs })
    }

    /// Adds `signed`, replacing a directory of the same scope (whatever its version: this is
    /// the signer's own file, not a peer's offer).
    pub fn put(&mut self, signed: Signed) -> Result<(), DirectoryError> {
        let scope = signed.unverified()?.scope;
        self.docs.retain(|d| d.unverified().map(|d| d.scope != scope).unwrap_or(true));
        self.docs.push(signed);
        Ok(())
    }
}
