//! Certificate rotation without restart (issue 10, item 9): a provider's new certificate and key
//! are picked up by the reload timer; new connections see the new certificate, a connection
//! made before keeps verifying its trailers, and a bad new certificate leaves the old one in use.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use fedgate_certs::store;
use fedgate_gateway::config;
use fedgate_gateway::link::PeerConnection;
use fedgate_gateway::node::RunningNode;
use fedgate_gateway::quic::Transfer;

const PROVIDER: &str = "police@wuxi.liangxi";

const GRANTS: &str = r#"
[[grant]]
id = "all"
to = { levels = [1, 1] }
datasets = ["incidents"]
purposes = ["dispute-mediation"]
clearance = 4
rows = "all"
"#;

async fn provider(fed: &Federation) -> RunningNode {
    let cat = fed.file("c.toml", &dataset("incidents", PROVIDER, "conditional"));
    let grants = fed.file("g.toml", GRANTS);
    let db = fed.dir.path().join("sources.db");
    let extra = format!(
        "catalog = [{:?}]\ngrants = [{:?}]\n{}",
        path_str(&cat),
        path_str(&grants),
        fed.sqlite_sources(&["incidents"])
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute("INSERT INTO incidents VALUES ('A1', 'wuxi.liangxi', '张三')", []).unwrap();
    let path = fed.node_folder_with(PROVIDER, &fed.issue(PROVIDER), &extra);
    RunningNode::start(config::load(&path).unwrap()).await.unwrap()
}

/// One verified transfer on `pc` (the trailer's signature is checked against the certificate
/// the connection was made with).
async fn fetch_on(pc: &PeerConnection, me: &RunningNode) -> u64 {
    let mut t =
        Transfer::start(pc, &me.config().node, "incidents", "dispute-mediation", vec![], None).await.unwrap();
    while t.next_batch().await.unwrap().is_some() {}
    t.summary().unwrap().count
}

fn fingerprint(der: &rustls_pki_types::CertificateDer<'_>) -> Vec<u8> {
    fedgate_certs::inspect::parse(der).unwrap().fingerprint.to_vec()
}

fn write_identity(folder: &Path, fed: &Federation, issued: &fedgate_certs::authority::IssuedNode) {
    store::write_node(folder, issued, fed.root.root(), true).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_certificate_is_used_for_new_connections_and_old_ones_keep_verifying() {
    let fed = Federation::new();
    let provider = provider(&fed).await;
    let folder = provider.config().dir.clone();
    let before = std::fs::read(folder.join("node.crt")).unwrap();
    let first = fed.start_with("mediation-center@wuxi", &peer_entry(&provider)).await;
    let old_conn = first.peer(&id(PROVIDER)).await.unwrap();
    assert_eq!(fetch_on(&old_conn, &first).await, 1);
    let old_fp = old_conn.peer.fingerprint().to_vec();

    // The operator renews the certificate in place; the reload timer (1 s here) picks it up.
    let renewed = fed.issue(PROVIDER);
    let new_fp = fingerprint(&renewed.chain[0]);
    assert_ne!(new_fp, old_fp);
    write_identity(&folder, &fed, &renewed);
    assert_ne!(std::fs::read(folder.join("node.crt")).unwrap(), before);
    let mut seen = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if fingerprint(&provider.link().current_certificate()) == new_fp {
            seen = Some(());
            break;
        }
    }
    seen.expect("the reload timer picked up the new certificate");

    // The new certificate vouches for the unchanged audit key, so an auditor's trust path to it
    // does not end when the old certificate expires.
    let audit_dir = &provider.config().audit_dir;
    // (The reload switches the certificate first, then audits it and writes the statement.)
    let mut statements = fedgate_audit::keybind::read(audit_dir).unwrap();
    for _ in 0..50 {
        if statements.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        statements = fedgate_audit::keybind::read(audit_dir).unwrap();
    }
    assert_eq!(statements.len(), 2, "one statement at the first start, one at the rotation");
    let renewed_pem = store::certs_pem(&renewed.chain);
    assert!(statements[1].chain.starts_with(&renewed_pem[..renewed_pem.find("-----END").unwrap()]));
    let key = std::fs::read_to_string(audit_dir.join("signing.pub")).unwrap();
    assert!(statements[1].statement.contains(key.trim()), "{}", statements[1].statement);
    assert_ne!(statements[0].chain, statements[1].chain);

    let second = fed.start_with("petition@wuxi", &peer_entry(&provider)).await;
    let new_conn = second.peer(&id(PROVIDER)).await.unwrap();
    assert_eq!(new_conn.peer.fingerprint().to_vec(), new_fp, "a new connection sees the new certificate");
    assert_eq!(fetch_on(&new_conn, &second).await, 1, "trailers on it are signed with the new key");
    // The connection made before the rotation still carries the old certificate, and its
    // trailers still verify against it.
    let again = first.peer(&id(PROVIDER)).await.unwrap();
    assert_eq!(again.conn.stable_id(), old_conn.conn.stable_id());
    assert_eq!(fetch_on(&again, &first).await, 1);

    provider.shutdown().await;
    first.shutdown().await;
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_new_certificate_or_key_is_reported_and_the_old_one_stays() {
    let fed = Federation::new();
    let provider = provider(&fed).await;
    let folder = provider.config().dir.clone();
    let in_use = provider.link().current_certificate();

    // Someone else's certificate.
    write_identity(&folder, &fed, &fed.issue("court@wuxi.xinwu"));
    let err = provider.reload_identity().await.unwrap_err().to_string();
    assert!(err.contains("issued to court@wuxi.xinwu"), "{err}");
    assert_eq!(provider.link().current_certificate(), in_use);

    // This node's new certificate with a key that is not its own.
    let renewed = fed.issue(PROVIDER);
    let other_key = fed.issue(PROVIDER).key_pem;
    write_identity(&folder, &fed, &renewed);
    std::fs::write(folder.join("node.key"), other_key).unwrap();
    let err = provider.reload_identity().await.unwrap_err().to_string();
    assert!(err.contains("node.key: this key does not belong to the certificate"), "{err}");
    assert_eq!(provider.link().current_certificate(), in_use);

    // Still serving with the old identity.
    let consumer = fed.start_with("mediation-center@wuxi", &peer_entry(&provider)).await;
    let pc = consumer.peer(&id(PROVIDER)).await.unwrap();
    assert_eq!(pc.peer.fingerprint().to_vec(), fingerprint(&in_use));
    assert_eq!(fetch_on(&pc, &consumer).await, 1);
    provider.shutdown().await;
    consumer.shutdown().await;
}
