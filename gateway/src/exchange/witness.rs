//! How a consumer learns which key signs its provider's audit checkpoints: the provider's
//! welcome carries a key statement ([`fedgate_audit::keybind::Statement`]) signed by the key of
//! the certificate the connection was made with, so the consumer trusts the audit key through
//! the peer certificate it already verified, once per connection. Pure.

use fedgate_audit::keybind::Statement;
use fedgate_catalog::NodeId;
use fedgate_certs::VerifiedPeer;

use crate::wire::AuditKey;

/// The statement a provider puts in its welcome: `node`'s audit log verifies with
/// `verifier_key` (as in its `signing.pub`), signed by `sign` (the connection's certificate
/// key) at unix time `now`. It is made for the connection, not at a log event, so its
/// `log-size` is 0.
pub fn audit_key(
    node: &NodeId,
    verifier_key: &str,
    now: i64,
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, String>,
) -> Result<AuditKey, String> {
    let text = Statement {
        node: node.to_string(),
        verifier_key: verifier_key.trim().to_owned(),
        log_size: 0,
        time: now,
    }
    .text();
    let signature = sign(text.as_bytes())?;
    Ok(AuditKey { statement: text, signature: fedgate_catalog::hex(&signature) })
}

/// The audit note verifier `(name, public key)` a welcome's statement vouches for, checked
/// against the peer's verified certificate: the statement names this peer, its certificate key
/// signed it, and the key is this peer's audit log's (`fedgate.audit/NODE`).
pub fn audit_verifier(peer: &VerifiedPeer, key: &AuditKey) -> Result<(String, Vec<u8>), String> {
    let st =
        Statement::parse(&key.statement).map_err(|e| format!("the welcome's audit key statement: {e}"))?;
    if st.node != peer.node().to_string() {
        return Err(format!(
            "the welcome's audit key statement names {}, the certificate {}",
            st.node,
            peer.node()
        ));
    }
    let sig = fedgate_catalog::unhex(&key.signature).ok_or("the welcome's audit key signature is not hex")?;
    if !peer.verify_signature(key.statement.as_bytes(), &sig) {
        return Err(format!(
            "the welcome's audit key statement is not signed by {}'s certificate key",
            peer.node()
        ));
    }
    let verifier = fedgate_audit::checkpoint::parse_verifier_key(&st.verifier_key)
        .map_err(|e| format!("the welcome's audit key: {e}"))?;
    if verifier.0 != fedgate_audit::origin(peer.node()) {
        return Err(format!("the welcome's audit key is for {}, not {}'s log", verifier.0, peer.node()));
    }
    Ok(verifier)
}
