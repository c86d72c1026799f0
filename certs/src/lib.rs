//! fedgate-certs: the federation's PKI and how gateways verify each other.
//!
//! A federation has one root CA bound to its top region (e.g. `wuxi`). Region-bound intermediate
//! CAs (e.g. for `wuxi.liangxi`) may only issue identities inside their region; this crate checks
//! that binding itself on every handshake rather than trusting URI name constraints to webpki.
//! A node's identity is its [`NodeId`], carried as a URI SAN (`urn:fedgate:node:police@wuxi`).
//!
//! [`authority`] issues and revokes (ECDSA P-256 keys, X.509 v3, CRLs), [`store`] reads and writes
//! the PEM files of a CA or node folder, [`verify`] turns a presented chain into a
//! [`VerifiedPeer`] — a token nothing else can make — and [`tls`] wires that into rustls (ring
//! provider only, TLS 1.3 only) with revocation lists that reload without a restart.
//! [`directory`] is the federation directory those CAs sign: nodes, addresses, responsibility.
#![warn(missing_docs)]

pub mod authority;
pub mod directory;
pub mod inspect;
pub mod names;
pub mod sign;
pub mod store;
pub mod tls;
pub mod verify;

pub use fedgate_catalog::{NodeId, Region};
pub use verify::{PeerError, Role, TrustStore, VerifiedPeer};

#[cfg(test)]
mod tests;
