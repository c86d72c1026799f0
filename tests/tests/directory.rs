//! The signed federation directory between real gateways on loopback: nodes that know each
//! other only from the directory (no `[[peers]]`) connect and query; a newer directory given to
//! one node reaches the other over the link and is persisted; an older one, or one no CA of the
//! federation signed (from the file or from a peer), is refused and the current one kept.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use fedgate_certs::authority::Authority;
use fedgate_certs::directory::{self, Bundle, Directory, Entry as DirEntry, View};
use fedgate_gateway::config;
use fedgate_gateway::node::{Prebound, RunningNode};

const A: &str = "womens-federation@wuxi";
const B: &str = "grid@wuxi.liangxi.chongan";

/// A UDP socket bound on 127.0.0.1 and its address: the directory names addresses before the
/// gateways start, and the gateway that serves on it gets the socket itself (a port released
/// and bound again could be taken in between by a test running beside this one).
fn bound() -> (UdpSocket, SocketAddr) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    (socket, addr)
}

/// An address nothing here serves on: named in a directory, never dialled.
fn unused_port() -> SocketAddr {
    bound().1
}

fn directory_of(version: u64, nodes: &[(&str, SocketAddr)]) -> Directory {
    let entries =
        nodes.iter().map(|(n, a)| DirEntry { node: id(n), address: *a, fingerprint: None }).collect();
    Directory::new(region("wuxi"), region("wuxi"), version, now().unix_timestamp(), entries).unwrap()
}

fn write_signed(path: &Path, dir: &Directory, ca: &Authority) {
    let bundle = Bundle { docs: vec![directory::sign(dir, ca).unwrap()] };
    // Written whole, as an operator's copy would be (the node may read it any moment).
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bundle.encode()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Starts `node` serving on `socket`, with its own directory file and no `[[peers]]`.
async fn start(fed: &Federation, node: &str, socket: UdpSocket, extra: &str) -> (RunningNode, PathBuf) {
    let addr = socket.local_addr().unwrap();
    let file = fed.dir.path().join(format!("{node}.directory.cbor"));
    let extra = format!("directory = {:?}\n{extra}", path_str(&file));
    let path = fed.node_folder_with(node, &fed.issue(node), &extra);
    let text =
        std::fs::read_to_string(&path).unwrap().replace("127.0.0.1:0\"\napi", &format!("{addr}\"\napi"));
    std::fs::write(&path, text).unwrap();
    let cfg = config::load(&path).unwrap();
    assert!(cfg.peers.is_empty());
    (RunningNode::start_on(cfg, Prebound { quic: Some(socket), ..Prebound::default() }).await.unwrap(), file)
}

fn versions(n: &RunningNode) -> Vec<(String, u64)> {
    n.shared().directory.view().summary()
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Pair {
    fed: Federation,
    a: RunningNode,
    b: RunningNode,
    a_file: PathBuf,
    addrs: [SocketAddr; 2],
}

/// Two gateways that know each other only from directory v1, signed by the root.
async fn pair() -> Pair {
    let fed = Federation::new();
    let ((sa, a_addr), (sb, b_addr)) = (bound(), bound());
    let addrs = [a_addr, b_addr];
    let v1 = directory_of(1, &[(A, addrs[0]), (B, addrs[1])]);
    let a_path = fed.dir.path().join(format!("{A}.directory.cbor"));
    let b_path = fed.dir.path().join(format!("{B}.directory.cbor"));
    write_signed(&a_path, &v1, &fed.root);
    write_signed(&b_path, &v1, &fed.root);
    let catalog = fed.file("a.catalog.toml", &dataset("family-disputes", A, "conditional"));
    let sources = fed.sqlite_sources(&["family-disputes"]);
    let extra = format!("catalog = [{:?}]\n{sources}", path_str(&catalog));
    let (a, a_file) = start(&fed, A, sa, &extra).await;
    let (b, _) = start(&fed, B, sb, "").await;
    Pair { fed, a, b, a_file, addrs }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_with_only_a_directory_find_and_query_each_other() {
    let p = pair().await;
    let catalog = p.b.shared().peer_catalog(&id(A)).await.unwrap();
    assert_eq!(catalog.datasets().len(), 1, "B reached A at the directory's address");
    let back = p.a.shared().peer_catalog(&id(B)).await.unwrap();
    assert!(back.datasets().is_empty());
    // A node the directory does not list is still unknown, and says where it looked.
    let err = p.b.shared().peer_catalog(&id("court@wuxi.xinwu")).await.unwrap_err().to_string();
    assert_eq!(
        err,
        "court@wuxi.xinwu is neither under [[peers]] in the config nor in the federation directory"
    );
    // The local API lists the directory's peers, with where each came from.
    let mut cfg = p.b.config().clone();
    cfg.api = p.b.api_addr();
    let peers: serde_json::Value = tokio::task::spawn_blocking(move || {
        fedgate_gateway::client::Client::new(&cfg).unwrap().get_json("/v1/peers").unwrap()
    })
    .await
    .unwrap();
    let want = serde_json::json!([{"node": A, "address": p.addrs[0].to_string(), "source": "directory"}]);
    assert_eq!(peers, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_directory_given_to_one_node_reaches_the_other_over_the_link() {
    let p = pair().await;
    assert_eq!(versions(&p.b), vec![("wuxi".to_owned(), 1)]);
    let police = unused_port();
    let v2 = directory_of(2, &[(A, p.addrs[0]), (B, p.addrs[1]), ("police@wuxi.liangxi", police)]);
    write_signed(&p.a_file, &v2, &p.fed.root);
    wait_for("B to hold v2", || versions(&p.b) == vec![("wuxi".to_owned(), 2)]).await;
    assert_eq!(p.b.shared().address_of(&id("police@wuxi.liangxi")).unwrap(), police);
    // Persisted in B's state folder, verified again on read.
    let state = View::verify(
        &Bundle::decode(&std::fs::read(&p.b.config().directory_state).unwrap()).unwrap(),
        p.fed.root.root(),
        &Default::default(),
        now(),
    )
    .unwrap();
    assert_eq!(state.summary(), vec![("wuxi".to_owned(), 2)]);
    // Both sides audited it: A from its file, B from A.
    // The directory is in force a moment before its audit entry is written.
    wait_for("B's audit log to record the directory it took from A", || {
        audit_entries(&p.b).into_iter().any(|e| {
            e.counterpart.as_deref() == Some(A) && e.reason.as_deref() == Some("directory accepted: wuxi v2")
        })
    })
    .await;
    // What B loads when it restarts: v2 from its state folder, though its own file says v1.
    let cfg = p.b.config();
    let (held, _) = fedgate_gateway::directory::NodeDirectory::load(
        cfg.directory.as_deref(),
        &cfg.directory_state,
        p.fed.root.root().clone(),
        fedgate_certs::directory::Revocations::default(),
        now(),
    )
    .unwrap();
    assert_eq!(held.view().summary(), vec![("wuxi".to_owned(), 2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_or_forged_directory_file_is_refused_and_the_current_one_kept() {
    let p = pair().await;
    let v3 = directory_of(3, &[(A, p.addrs[0]), (B, p.addrs[1])]);
    write_signed(&p.a_file, &v3, &p.fed.root);
    wait_for("A to hold v3", || versions(&p.a) == vec![("wuxi".to_owned(), 3)]).await;
    let refused = |n: &RunningNode| -> Vec<String> {
        audit_entries(n)
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("directory refused"))
            .filter_map(|e| e.detail)
            .collect()
    };
    // Older.
    write_signed(&p.a_file, &directory_of(2, &[(A, p.addrs[0])]), &p.fed.root);
    wait_for("A to refuse the older file", || refused(&p.a).len() == 1).await;
    // Forged: a newer version signed by a root of the same name but another key.
    let forger = Authority::new_root(&region("wuxi"), now(), 10).unwrap();
    write_signed(&p.a_file, &directory_of(9, &[(A, p.addrs[0])]), &forger);
    wait_for("A to refuse the forged file", || refused(&p.a).len() == 2).await;
    // Altered: signed by the root, then its signature replaced.
    let signed = directory::sign(&directory_of(10, &[(A, p.addrs[0])]), &p.fed.root).unwrap();
    std::fs::write(&p.a_file, Bundle { docs: vec![signed.with_signature(vec![0; 64])] }.encode()).unwrap();
    wait_for("A to refuse the altered file", || refused(&p.a).len() == 3).await;
    let seen = refused(&p.a);
    assert!(seen[0].contains("directory wuxi v2: older than version 3 already held"), "{seen:?}");
    assert!(seen[1].contains("directory wuxi v9: signature does not verify"), "{seen:?}");
    assert!(seen[2].contains("directory wuxi v10: signature does not verify"), "{seen:?}");
    assert_eq!(versions(&p.a), vec![("wuxi".to_owned(), 3)]);
    wait_for("B to hold v3", || versions(&p.b) == vec![("wuxi".to_owned(), 3)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_directory_from_a_peer_is_refused_and_the_current_one_kept() {
    use fedgate_certs::tls::FederationVerifier;
    use fedgate_certs::TrustStore;
    use fedgate_gateway::link::{self, Link};
    use fedgate_gateway::wire::Message;
    let fed = Federation::new();
    let ((rogue_socket, rogue_addr), (sb, b_addr)) = (bound(), bound());
    let addrs = [rogue_addr, b_addr];
    // A peer with a valid certificate that answers every directory offer with a "newer"
    // directory signed by the liangxi CA for the whole federation.
    const ROGUE: &str = "rogue@wuxi.liangxi";
    let issued = fed.issue(ROGUE);
    let verifier = FederationVerifier::new(TrustStore::new(fed.root.root().clone(), &[]).unwrap());
    let link =
        Link::on_socket(id(ROGUE), rogue_socket, verifier, issued.chain.clone(), key_of(&issued)).unwrap();
    let body = directory_of(7, &[(ROGUE, addrs[0])]).encode();
    let sig = fed.liangxi.sign_message(&[b"fedgate directory v1\0".as_slice(), &body].concat()).unwrap();
    // The liangxi CA's own signature and chain, over a directory for the whole federation.
    let subtree = Directory::new(region("wuxi"), region("wuxi.liangxi"), 7, 0, vec![]).unwrap();
    let forged = directory::sign(&subtree, &fed.liangxi).unwrap().with_body(body).with_signature(sig);
    let forged = Bundle { docs: vec![forged] };
    let forged_bytes = forged.encode();
    tokio::spawn(async move {
        while let Some(Ok(pc)) = link.accept().await {
            let forged = Bundle::decode(&forged_bytes).unwrap();
            tokio::spawn(async move {
                while let Ok((mut send, mut recv)) = pc.conn.accept_bi().await {
                    let who = pc.peer.node().to_string();
                    let answer = match link::read_frame(&mut recv, &who).await {
                        Ok(Some(Message::Hello { .. })) => {
                            Message::Welcome { node: ROGUE.into(), audit_key: None }
                        }
                        Ok(Some(Message::DirectoryOffer { .. })) => Message::Directory {
                            have: vec![("wuxi".into(), 7)],
                            bundle: Some(forged.clone()),
                        },
                        _ => continue,
                    };
                    link::write_frame(&mut send, &answer, &who).await.unwrap();
                    let _ = send.finish();
                }
            });
        }
    });
    let v1 = directory_of(1, &[(ROGUE, addrs[0]), (B, addrs[1])]);
    write_signed(&fed.dir.path().join(format!("{B}.directory.cbor")), &v1, &fed.root);
    let (b, _) = start(&fed, B, sb, "").await;
    // Connecting makes the two exchange directories; the rogue's is refused.
    b.shared().peer(&id(ROGUE)).await.unwrap();
    let refused = || {
        audit_entries(&b)
            .into_iter()
            .filter(|e| e.counterpart.as_deref() == Some(ROGUE) && e.decision.as_deref() == Some("deny"))
            .filter_map(|e| e.detail)
            .collect::<Vec<_>>()
    };
    wait_for("B to refuse the rogue's directory", || !refused().is_empty()).await;
    assert_eq!(
        refused()[0],
        "directory wuxi v7: signed by the CA of region wuxi.liangxi, which may not sign for scope wuxi"
    );
    assert_eq!(versions(&b), vec![("wuxi".to_owned(), 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_ca_revoked_by_the_root_loses_its_directories_at_the_next_crl_reload() {
    use fedgate_certs::store;
    let fed = Federation::new();
    const COURT: &str = "court@wuxi.xinwu";
    let (sa, a_addr) = bound();
    let addrs = [a_addr, unused_port()];
    let city = directory_of(1, &[(A, addrs[0])]);
    let xinwu = Directory::new(
        region("wuxi"),
        region("wuxi.xinwu"),
        1,
        now().unix_timestamp(),
        vec![DirEntry { node: id(COURT), address: addrs[1], fingerprint: None }],
    )
    .unwrap();
    let bundle = Bundle {
        docs: vec![directory::sign(&city, &fed.root).unwrap(), directory::sign(&xinwu, &fed.xinwu).unwrap()],
    };
    std::fs::write(fed.dir.path().join(format!("{A}.directory.cbor")), bundle.encode()).unwrap();
    let (a, _) = start(&fed, A, sa, "").await;
    assert_eq!(versions(&a), vec![("wuxi".to_owned(), 1), ("wuxi.xinwu".to_owned(), 1)]);
    assert_eq!(a.shared().address_of(&id(COURT)).unwrap(), addrs[1]);
    // The root revokes the Xinwu CA and publishes its CRL; the node re-reads its CRLs.
    let root_crl = fed.dir.path().join("pki/root/crl.pem");
    let current = store::read_crl(&root_crl).unwrap();
    let crl = fed.root.revoke(Some(&current), fed.xinwu.cert(), now()).unwrap();
    std::fs::write(&root_crl, store::crl_pem(&crl)).unwrap();
    a.reload_trust().await.unwrap();
    assert_eq!(versions(&a), vec![("wuxi".to_owned(), 1)], "the Xinwu CA's directory is dropped");
    assert!(a.shared().address_of(&id(COURT)).is_err(), "its nodes are no longer found there");
    let dropped = audit_entries(&a)
        .into_iter()
        .filter_map(|e| e.reason)
        .find(|r| r.starts_with("directory dropped: directory wuxi.xinwu v1: signed under "));
    assert!(dropped.is_some_and(|r| r.contains("has revoked (CRL)")), "the drop is audited");
    // Offered again (by a peer, or in a bundle), it is refused whole.
    let err = a.shared().directory.offer(&bundle, now()).unwrap_err();
    assert!(err.to_string().contains("has revoked (CRL)"), "{err}");
    assert_eq!(versions(&a), vec![("wuxi".to_owned(), 1)]);
    // The persisted state holds what the node uses: a restart does not bring it back.
    let cfg = a.config();
    let state = View::verify(
        &Bundle::decode(&std::fs::read(&cfg.directory_state).unwrap()).unwrap(),
        fed.root.root(),
        &Default::default(),
        now(),
    )
    .unwrap();
    assert_eq!(state.summary(), vec![("wuxi".to_owned(), 1)]);
}
