//! The audit key's trust path: an auditor with only an export and the federation root trusts
//! the log's key because the node's certificate vouches for it, and for no other reason.

use std::path::Path;

use fedgate_audit::{self as audit, keybind, AuditKeys, AuditLog, Entry, Kind};
use fedgate_certs::authority::{Authority, NodeProfile};
use fedgate_certs::sign::NodeSigner;
use fedgate_gateway::audit_trust;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

struct Fed {
    root: Authority,
    liangxi: Authority,
}

fn fed() -> Fed {
    let root = Authority::new_root(&"wuxi".parse().unwrap(), now(), 100).unwrap();
    let liangxi = root.issue_ca(&"wuxi.liangxi".parse().unwrap(), now(), 50).unwrap();
    Fed { root, liangxi }
}

fn trust_file(dir: &Path, ca: &Authority) -> std::path::PathBuf {
    let p = dir.join("root.crt");
    std::fs::write(&p, fedgate_certs::store::certs_pem(&[ca.root().clone()])).unwrap();
    p
}

/// A log of `n` entries by police@wuxi.liangxi, its statement signed by `issuer`'s certificate.
async fn node_log(dir: &Path, issuer: &Authority, n: u64) -> String {
    let node = "police@wuxi.liangxi".parse().unwrap();
    let issued = issuer.issue_node(&node, NodeProfile::gateway(now(), 10)).unwrap();
    let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
    let signer = NodeSigner::new(&key).unwrap();
    let keys = AuditKeys::load_or_create(&dir.join("audit.key"), &dir.join("signing.key")).unwrap();
    let origin = audit::origin(&node);
    let vk = audit::checkpoint::verifier_key(&origin, &keys.public_key());
    let (log, _) = AuditLog::open(&dir.join("log"), &origin, keys).unwrap();
    for i in 0..n {
        let e =
            Entry { kind: Some(Kind::Start), actor: node.to_string(), records: Some(i), ..Entry::default() };
        log.append(e).await.unwrap();
    }
    log.close().await.unwrap();
    let wrote =
        audit_trust::ensure_statement(&dir.join("log"), &node, &vk, n, &issued.chain, &signer).unwrap();
    assert!(wrote);
    // Same key, same certificate: nothing new to state.
    assert!(!audit_trust::ensure_statement(&dir.join("log"), &node, &vk, n, &issued.chain, &signer).unwrap());
    vk
}

#[tokio::test]
async fn an_auditor_trusts_the_audit_key_only_through_the_federation_root() {
    let t = tempfile::tempdir().unwrap();
    let f = fed();
    let vk = node_log(t.path(), &f.liangxi, 5).await;
    let root = audit_trust::read_root(&trust_file(t.path(), &f.root)).unwrap();
    let export = t.path().join("export");
    audit::export(&t.path().join("log"), &export).unwrap();
    let (verifier, node) = audit_trust::trusted_verifier(&export, &root).unwrap();
    assert_eq!(node, "police@wuxi.liangxi");
    assert_eq!(audit::checkpoint::verifier_key(&verifier.0, &verifier.1), vk);
    let v = audit::verify(&export, &verifier, None, |_| {}).unwrap();
    assert_eq!(v.entries, 5);

    // A proof carries the statements and checks with only the root.
    let proof = audit::prove(&export, &verifier, 3).unwrap();
    assert_eq!(proof.key_statements.len(), 1);
    let json = serde_json::to_string(&proof).unwrap();
    let back: audit::InclusionProof = serde_json::from_str(&json).unwrap();
    let vouched = audit_trust::vouched_verifiers(&back.key_statements, &root);
    assert_eq!(vouched, vec![verifier.clone()]);
    assert!(audit::check_proof(&back, &vouched[0]).is_ok());

    // Another federation's root vouches for nothing.
    let stranger = Authority::new_root(&"wuxi".parse().unwrap(), now(), 10).unwrap();
    std::fs::create_dir(t.path().join("stranger")).unwrap();
    let other_root = audit_trust::read_root(&trust_file(&t.path().join("stranger"), &stranger)).unwrap();
    let err = audit_trust::trusted_verifier(&export, &other_root).unwrap_err();
    assert!(err.contains("not vouched for"), "{err}");
    assert!(audit_trust::vouched_verifiers(&back.key_statements, &other_root).is_empty());
}

#[tokio::test]
async fn a_swapped_key_or_an_altered_statement_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let f = fed();
    node_log(t.path(), &f.liangxi, 3).await;
    let root = audit_trust::read_root(&trust_file(t.path(), &f.root)).unwrap();
    let log = t.path().join("log");

    // Whoever re-signs the log with a key of their own must also replace signing.pub, and no
    // statement names that key.
    let other = AuditKeys::load_or_create(&t.path().join("a2.key"), &t.path().join("s2.key")).unwrap();
    let forged = audit::checkpoint::verifier_key("fedgate.audit/police@wuxi.liangxi", &other.public_key());
    let real = std::fs::read_to_string(log.join("signing.pub")).unwrap();
    std::fs::write(log.join("signing.pub"), format!("{forged}\n")).unwrap();
    let err = audit_trust::trusted_verifier(&log, &root).unwrap_err();
    assert!(err.contains("no key statement names this audit key"), "{err}");
    std::fs::write(log.join("signing.pub"), &real).unwrap();

    // A statement edited to name the forged key no longer carries a valid signature.
    let mut s = keybind::read(&log).unwrap();
    s[0].statement = s[0].statement.replace(real.trim(), &forged);
    std::fs::remove_file(log.join(keybind::STATEMENTS)).unwrap();
    keybind::append(&log, &s[0]).unwrap();
    std::fs::write(log.join("signing.pub"), format!("{forged}\n")).unwrap();
    let err = audit_trust::trusted_verifier(&log, &root).unwrap_err();
    assert!(err.contains("signature is not by police@wuxi.liangxi"), "{err}");

    // A log without statements is not trusted through the root at all.
    std::fs::remove_file(log.join(keybind::STATEMENTS)).unwrap();
    std::fs::write(log.join("signing.pub"), &real).unwrap();
    let err = audit_trust::trusted_verifier(&log, &root).unwrap_err();
    assert!(err.contains("no key statement"), "{err}");
}

#[tokio::test]
async fn a_certificate_of_another_node_cannot_vouch() {
    let t = tempfile::tempdir().unwrap();
    let f = fed();
    node_log(t.path(), &f.liangxi, 2).await;
    let log = t.path().join("log");
    // The court's certificate signs a statement naming the police log's key.
    let court = "court@wuxi.xinwu".parse().unwrap();
    let xinwu = f.root.issue_ca(&"wuxi.xinwu".parse().unwrap(), now(), 50).unwrap();
    let issued = xinwu.issue_node(&court, NodeProfile::gateway(now(), 10)).unwrap();
    let signer = NodeSigner::new(&PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap()).unwrap();
    let real = std::fs::read_to_string(log.join("signing.pub")).unwrap();
    let st = keybind::Statement {
        node: "police@wuxi.liangxi".into(),
        verifier_key: real.trim().into(),
        log_size: 2,
        time: now().unix_timestamp(),
    };
    let sig = signer.sign(st.text().as_bytes()).unwrap();
    std::fs::remove_file(log.join(keybind::STATEMENTS)).unwrap();
    keybind::append(
        &log,
        &keybind::SignedStatement {
            statement: st.text(),
            signature: fedgate_catalog::hex(&sig),
            chain: fedgate_certs::store::certs_pem(&issued.chain),
        },
    )
    .unwrap();
    let root = audit_trust::read_root(&trust_file(t.path(), &f.root)).unwrap();
    let err = audit_trust::trusted_verifier(&log, &root).unwrap_err();
    assert!(err.contains("court@wuxi.xinwu"), "{err}");
}
