//! The audit key's trust path through the federation PKI: the gateway's node key signs a
//! statement naming its audit key ([`fedgate_audit::keybind`]); an auditor with the federation
//! root checks the statement's chain and signature and then trusts that key, and only that key.

use std::path::Path;
use std::time::Duration;

use fedgate_audit::keybind::{self, SignedStatement, Statement, Vouched};
use fedgate_certs::sign::NodeSigner;
use fedgate_certs::verify::{Role, TrustStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};

/// Signs and appends a statement for the log in `dir` unless the latest one already names
/// `verifier_key` under this `chain`. Returns whether it wrote one.
pub fn ensure_statement(
    dir: &Path,
    node: &fedgate_catalog::NodeId,
    verifier_key: &str,
    log_size: u64,
    chain: &[CertificateDer<'_>],
    signer: &NodeSigner,
) -> Result<bool, String> {
    let pem = fedgate_certs::store::certs_pem(chain);
    let existing = keybind::read(dir).map_err(|e| e.to_string())?;
    if keybind::is_current(&existing, verifier_key, &pem) {
        return Ok(false);
    }
    let time = time::OffsetDateTime::now_utc().unix_timestamp();
    let st = Statement { node: node.to_string(), verifier_key: verifier_key.to_owned(), log_size, time };
    let text = st.text();
    let sig = signer.sign(text.as_bytes()).map_err(|e| e.to_string())?;
    let signed = SignedStatement { statement: text, signature: fedgate_catalog::hex(&sig), chain: pem };
    keybind::append(dir, &signed).map_err(|e| e.to_string())?;
    Ok(true)
}

/// Reads the federation root an auditor trusts.
pub fn read_root(path: &Path) -> Result<TrustStore, String> {
    let mut roots = fedgate_certs::store::read_certs(path).map_err(|e| e.to_string())?;
    if roots.len() != 1 {
        return Err(format!(
            "{}: expected the one federation root, found {} certificates",
            path.display(),
            roots.len()
        ));
    }
    TrustStore::new(roots.remove(0), &[]).map_err(|e| format!("{}: {e}", path.display()))
}

/// Checks one statement: its chain verifies to the root as of the statement's time, and the
/// leaf's key signed the statement's text.
pub fn check_statement(trust: &TrustStore, s: &SignedStatement, st: &Statement) -> Result<Vouched, String> {
    let chain = CertificateDer::pem_slice_iter(s.chain.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate chain is not PEM: {e}"))?;
    let (leaf, rest) = chain.split_first().ok_or("the statement carries no certificate")?;
    let at = UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(st.time).unwrap_or(0)));
    let peer = trust.verify(leaf, rest, Role::Server, at).map_err(|e| format!("certificate chain: {e}"))?;
    let sig = fedgate_catalog::unhex(&s.signature).ok_or("signature is not hex")?;
    if !peer.verify_signature(s.statement.as_bytes(), &sig) {
        return Err(format!("the signature is not by {}'s certificate key", peer.node()));
    }
    Ok(Vouched { node: peer.node().to_string() })
}

/// The node an audit origin (`fedgate.audit/NODE`) belongs to.
pub fn origin_node(origin: &str) -> Result<&str, String> {
    origin
        .strip_prefix("fedgate.audit/")
        .ok_or_else(|| format!("{origin:?} is not a fedgate audit log origin"))
}

/// The verifier of a log folder, trusted only through the federation root: the key in
/// `signing.pub` must be named, for the log's node, by a statement whose chain and signature
/// check. Returns the verifier and the node.
pub fn trusted_verifier(dir: &Path, trust: &TrustStore) -> Result<((String, Vec<u8>), String), String> {
    let pub_path = dir.join("signing.pub");
    let text = std::fs::read_to_string(&pub_path).map_err(|e| format!("{}: {e}", pub_path.display()))?;
    let verifier = fedgate_audit::checkpoint::parse_verifier_key(&text)
        .map_err(|e| format!("{}: {e}", pub_path.display()))?;
    let node = origin_node(&verifier.0)?.to_owned();
    let statements = keybind::read(dir).map_err(|e| e.to_string())?;
    keybind::trusted(&statements, &node, &text, |s, st| check_statement(trust, s, st))
        .map_err(|e| format!("{}: the audit key is not vouched for by the federation: {e}", dir.display()))?;
    Ok((verifier, node))
}

/// The verifiers that statements carried with a proof vouch for (those whose chain and
/// signature check), with their nodes.
pub fn vouched_verifiers(statements: &[SignedStatement], trust: &TrustStore) -> Vec<(String, Vec<u8>)> {
    statements
        .iter()
        .filter_map(|s| {
            let st = Statement::parse(&s.statement).ok()?;
            let v = check_statement(trust, s, &st).ok()?;
            let key = fedgate_audit::checkpoint::parse_verifier_key(&st.verifier_key).ok()?;
            (v.node == st.node && origin_node(&key.0).ok() == Some(st.node.as_str())).then_some(key)
        })
        .collect()
}

/// The auditors' public keys the config names; a bad file is named with why.
pub fn read_auditors(cfg: &crate::config::Config) -> Result<Vec<[u8; 32]>, (std::path::PathBuf, String)> {
    cfg.auditor_keys.iter().map(|p| read_auditor_public(p).map_err(|why| (p.clone(), why))).collect()
}

/// Reads an auditor public key file (`fedgate-auditor-x25519:HEX`, from `audit keygen`).
pub fn read_auditor_public(path: &Path) -> Result<[u8; 32], String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    fedgate_audit::keys::parse_public(&text).ok_or_else(|| {
        format!(
            "not an auditor public key (expected {}HEX, as `fedgate audit keygen` writes)",
            fedgate_audit::keys::PUBLIC_PREFIX
        )
    })
}

/// The log's options from the config: retention (a short one warns).
pub fn log_options(cfg: &crate::config::Config) -> fedgate_audit::LogOptions {
    let days = cfg.audit_retention_days;
    if days < crate::config::MIN_RETENTION_DAYS {
        tracing::warn!(
            retention_days = days,
            minimum = crate::config::MIN_RETENTION_DAYS,
            "audit.retention_days is below six months, the least China's Cybersecurity Law asks network logs to be kept"
        );
    }
    fedgate_audit::LogOptions {
        retention: Some(Duration::from_secs(u64::from(days) * 86_400)),
        ..fedgate_audit::LogOptions::default()
    }
}
