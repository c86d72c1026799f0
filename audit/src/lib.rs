//! fedgate-audit: one gateway's tamper-evident, encrypted audit log, and everything an auditor
//! needs to check it.
//!
//! Its one job is the log itself: what an entry holds and how it is sealed ([`entry`]), the
//! RFC 6962 Merkle tree over the sealed entries ([`merkle`]), signed checkpoints ([`checkpoint`]),
//! the crash-safe writer ([`log`]), whole-log verification ([`verify`](mod@verify)), inclusion and
//! consistency proofs ([`proof`]), the audit key's binding to the node's certificate
//! ([`keybind`]), per-segment data keys wrapped for the node and its auditors ([`keys`]) and the
//! auditor's export bundle ([`export`](mod@export)) and the checkpoints peers witness
//! ([`witness`]).
//! Layering: it depends on `fedgate-catalog` for the shared vocabulary and on nothing that speaks
//! QUIC, HTTP or an async runtime, so an auditor's tooling builds it alone; the gateway depends
//! on it, never the reverse. Everything but [`log`] and the folder readers is pure.
#![warn(missing_docs)]

pub mod checkpoint;
pub mod entry;
pub mod export;
pub mod keybind;
pub mod keys;
pub mod log;
pub mod merkle;
pub mod proof;
pub mod reconcile;
pub mod verify;
pub mod witness;

use std::path::Path;

pub use entry::{Entry, Kind, Step};
pub use export::{export, export_for};
pub use keys::Reader;
pub use log::{AuditError, AuditKeys, AuditLog, LogOptions, Recovery};
pub use proof::{check_consistency, check_proof, prove, prove_consistency, ConsistencyProof, InclusionProof};
pub use verify::{entries, entries_all, verify, Opened, Verified};
pub use witness::Witness;

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
