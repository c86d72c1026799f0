//! The signed federation directory: which nodes exist, where they listen, and which node of a
//! department answers for which region.
//!
//! A [`Directory`] lists nodes for one *scope* (a region subtree) of one federation, with a
//! version and an issue time. It is signed by the federation root, or by a region CA for a scope
//! inside its region ([`sign`], [`verify`]). A [`Bundle`] carries the signed directories a
//! gateway holds; verified, they make a [`View`]: the root directory combined with the subtree
//! directories (a node listed by a narrower scope wins), which answers addresses and
//! "department D for region R" ([`resolve`]).
//!
//! Everything signed is a canonical CBOR encoding: fixed field order, nodes sorted by id, no
//! optional field written when absent; decoding re-encodes and refuses anything that differs,
//! so one directory has exactly one byte string and one signature check.

mod codec;
mod source;
mod trust;
mod view;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;

use fedgate_catalog::{NodeId, Region};
use thiserror::Error;

pub use codec::{Bundle, Signed, MAX_BUNDLE};
pub use source::parse_source;
pub use trust::{sign, verify, Revocations, Verified};
pub use view::{resolve, Merge, View};

/// One node of the federation as the directory lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its id; the department and region are part of it.
    pub node: NodeId,
    /// Where its gateway listens for QUIC.
    pub address: SocketAddr,
    /// SHA-256 of its current certificate, if the directory pins it.
    pub fingerprint: Option<[u8; 32]>,
}

/// The nodes of one scope, at one version: what a CA signs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directory {
    /// The federation's top region (the root CA's).
    pub federation: Region,
    /// The subtree this directory speaks for; every node lies in it.
    pub scope: Region,
    /// Increases with every new directory of the same scope; never goes back.
    pub version: u64,
    /// When it was issued, seconds since the Unix epoch.
    pub issued: i64,
    nodes: Vec<Entry>,
}

/// Why a directory was refused. Each message names the directory (scope and version) and, where
/// there is one, the entry at fault.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DirectoryError {
    /// The bytes are not a directory (or bundle) at all.
    #[error("not a fedgate directory: {0}")]
    Decode(String),
    /// The bytes decode but are not the canonical encoding of what they say.
    #[error("directory {0}: not in canonical encoding (re-encoding differs); refusing to verify it")]
    NotCanonical(String),
    /// The format number is one this build does not read.
    #[error("directory format {0} is not supported (this build reads format 1)")]
    Format(u8),
    /// The version is 0.
    #[error("directory {0}: version must be 1 or more")]
    ZeroVersion(String),
    /// An entry's address is not a usable QUIC address.
    #[error("directory {dir}: node {node}: bad address {address:?}: {why}")]
    BadAddress {
        /// Which directory.
        dir: String,
        /// The entry.
        node: String,
        /// What it says.
        address: String,
        /// What is wrong.
        why: String,
    },
    /// An entry names no valid node id.
    #[error("directory {dir}: entry {index}: {why}")]
    BadEntry {
        /// Which directory.
        dir: String,
        /// Position of the entry (0-based).
        index: usize,
        /// What is wrong.
        why: String,
    },
    /// The same node is listed twice.
    #[error("directory {dir}: node {node} is listed twice")]
    DuplicateNode {
        /// Which directory.
        dir: String,
        /// The node.
        node: String,
    },
    /// A node outside the directory's scope.
    #[error("directory {dir}: node {node} lies outside the scope {scope} of this directory")]
    OutsideScope {
        /// Which directory.
        dir: String,
        /// The node.
        node: String,
        /// The scope.
        scope: String,
    },
    /// The scope is not inside the federation.
    #[error("directory {dir}: scope {scope} is not inside federation {federation}")]
    ScopeOutsideFederation {
        /// Which directory.
        dir: String,
        /// Its scope.
        scope: String,
        /// Its federation.
        federation: String,
    },
    /// The directory is for another federation than the trusted root's.
    #[error("directory {dir}: is for federation {got}, but the trusted root is {want}'s")]
    WrongFederation {
        /// Which directory.
        dir: String,
        /// What it says.
        got: String,
        /// The trusted root's region.
        want: String,
    },
    /// The signer's certificate chain does not lead to the trusted root.
    #[error("directory {dir}: signer {signer} is not a CA of this federation: {why}")]
    UnknownSigner {
        /// Which directory.
        dir: String,
        /// Subject of the signing certificate.
        signer: String,
        /// Why the chain failed.
        why: String,
    },
    /// A CA on the signing chain is revoked by its issuer's CRL.
    #[error("directory {dir}: signed under {revoked}, which {issuer} has revoked (CRL)")]
    Revoked {
        /// Which directory.
        dir: String,
        /// Subject of the revoked CA.
        revoked: String,
        /// Subject of the CA whose CRL lists it.
        issuer: String,
    },
    /// A region CA signed a scope outside its region.
    #[error(
        "directory {dir}: signed by the CA of region {signer_region}, which may not sign for scope {scope}"
    )]
    SignerOutsideRegion {
        /// Which directory.
        dir: String,
        /// The signing CA's region.
        signer_region: String,
        /// The directory's scope.
        scope: String,
    },
    /// The signature does not verify with the signer's key.
    #[error("directory {dir}: signature does not verify with the key of {signer} (forged or altered)")]
    BadSignature {
        /// Which directory.
        dir: String,
        /// Subject of the signing certificate.
        signer: String,
    },
    /// Older than the directory of the same scope already held.
    #[error(
        "directory {dir}: older than version {have} already held for scope {scope}; kept the current one"
    )]
    Older {
        /// Which directory.
        dir: String,
        /// Its scope.
        scope: String,
        /// The version held.
        have: u64,
    },
    /// Same scope and version as the one held, but different contents: one of them is not what
    /// its signer meant, or the signer reused a version.
    #[error("directory {dir}: same version as the one held for scope {scope} but different contents; kept the current one")]
    Conflict {
        /// Which directory.
        dir: String,
        /// Its scope.
        scope: String,
    },
    /// A bundle lists two directories for the same scope.
    #[error("bundle holds two directories for scope {0}")]
    DuplicateScope(String),
    /// Signing failed.
    #[error("cannot sign the directory: {0}")]
    Sign(String),
}

impl Directory {
    /// A directory of `nodes` for `scope`; checks everything a verifier would, except the
    /// signature: scope inside the federation, version ≥ 1, every node inside the scope, no node
    /// twice, every address usable. Nodes are kept sorted by id.
    pub fn new(
        federation: Region,
        scope: Region,
        version: u64,
        issued: i64,
        mut nodes: Vec<Entry>,
    ) -> Result<Directory, DirectoryError> {
        let name = label(&scope, version);
        if version == 0 {
            return Err(DirectoryError::ZeroVersion(name));
        }
        if !federation.covers(&scope) {
            return Err(DirectoryError::ScopeOutsideFederation {
                dir: name,
                scope: scope.to_string(),
                federation: federation.to_string(),
            });
        }
        nodes.sort_by_cached_key(|e| e.node.to_string());
        for pair in nodes.windows(2) {
            if pair[0].node == pair[1].node {
                return Err(DirectoryError::DuplicateNode { dir: name, node: pair[0].node.to_string() });
            }
        }
        for e in &nodes {
            if !scope.covers(e.node.region()) {
                return Err(DirectoryError::OutsideScope {
                    dir: name,
                    node: e.node.to_string(),
                    scope: scope.to_string(),
                });
            }
            check_address(&name, &e.node, e.address)?;
        }
        Ok(Directory { federation, scope, version, issued, nodes })
    }

    /// The nodes, sorted by id.
    pub fn nodes(&self) -> &[Entry] {
        &self.nodes
    }

    /// `scope vN`, how messages name this directory.
    pub fn label(&self) -> String {
        label(&self.scope, self.version)
    }

    /// The canonical encoding, the bytes a CA signs.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode_body(self)
    }

    /// Decodes and checks a canonical encoding (not the signature: see [`verify`]).
    pub fn decode(bytes: &[u8]) -> Result<Directory, DirectoryError> {
        codec::decode_body(bytes)
    }
}

fn label(scope: &Region, version: u64) -> String {
    format!("{scope} v{version}")
}

/// A directory address must be one a peer can dial: not port 0, not an unspecified IP.
fn check_address(dir: &str, node: &NodeId, address: SocketAddr) -> Result<(), DirectoryError> {
    let why = if address.port() == 0 {
        "port 0 cannot be dialled"
    } else if address.ip().is_unspecified() {
        "an unspecified IP (0.0.0.0 or ::) cannot be dialled"
    } else {
        return Ok(());
    };
    Err(DirectoryError::BadAddress {
        dir: dir.into(),
        node: node.to_string(),
        address: address.to_string(),
        why: why.into(),
    })
}
