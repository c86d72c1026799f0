//! `fedgate check` against real files and real peers on loopback (issue 10, item 8): every
//! problem once, located; a running peer passes, a silent one is named; expiry is warned about.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use fedgate_gateway::check::{self, Finding, Severity};

fn errors(found: &[Finding]) -> Vec<&str> {
    found.iter().filter(|f| f.severity == Severity::Error).map(|f| f.text.as_str()).collect()
}

fn warnings(found: &[Finding]) -> Vec<&str> {
    found.iter().filter(|f| f.severity == Severity::Warning).map(|f| f.text.as_str()).collect()
}

const GRANTS: &str = r#"
[[grant]]
id = "centre"
to = "mediation-center@wuxi"
datasets = ["incidents"]
purposes = ["dispute-mediation"]
clearance = 4
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_node_with_a_running_peer_has_no_problem_and_its_expiry_is_warned() {
    let fed = Federation::new();
    let peer = fed.start("mediation-center@wuxi").await;
    let cat = fed.file("c.toml", &dataset("incidents", "police@wuxi.liangxi", "conditional"));
    let grants = fed.file("g.toml", GRANTS);
    let extra = format!(
        "catalog = [{:?}]\ngrants = [{:?}]\n{}{}",
        path_str(&cat),
        path_str(&grants),
        fed.sqlite_sources(&["incidents"]),
        peer_entry(&peer)
    );
    let path = fed.node_folder_with("police@wuxi.liangxi", &fed.issue("police@wuxi.liangxi"), &extra);
    let found = check::run(&path, now(), true).await;
    assert_eq!(errors(&found), Vec::<&str>::new());
    // The fixture's certificates last 10 days.
    let cert = path.parent().unwrap().join("node.crt");
    assert!(
        warnings(&found).iter().any(|w| w.starts_with(&format!("{}: certificate 1 (", cert.display()))
            && w.contains("expires in 9 days")),
        "{found:#?}"
    );
    peer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_problem_is_reported_once_with_its_place() {
    let fed = Federation::new();
    let running = fed.start("mediation-center@wuxi").await;
    // A port nothing answers on.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    drop(silent);
    // One mistake in the catalog: the primary key field's type. It must not also say that
    // primary_key names a field the dataset does not have, nor fail the grants or the sources.
    let bad_catalog = dataset("incidents", "police@wuxi.liangxi", "conditional").replacen(
        "type = \"string\"",
        "type = \"strng\"",
        1,
    );
    let cat = fed.file("c.toml", &bad_catalog);
    let grants = fed.file("g.toml", GRANTS);
    let extra = format!(
        "catalog = [{:?}]\ngrants = [{:?}]\n{}{}\n[[peers]]\nnode = \"court@wuxi.xinwu\"\naddress = \"{silent_addr}\"\n",
        path_str(&cat),
        path_str(&grants),
        fed.sqlite_sources(&["incidents"]),
        peer_entry(&running)
    );
    let path = fed.node_folder_with("police@wuxi.liangxi", &fed.issue("police@wuxi.liangxi"), &extra);
    let dir = path.parent().unwrap();
    let masking = dir.join("masking.key");
    std::fs::write(&masking, "00112233\n").unwrap();
    std::fs::set_permissions(&masking, std::fs::Permissions::from_mode(0o644)).unwrap();

    let found = check::run(&path, now(), true).await;
    let errs = errors(&found);
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(
        errs[0].starts_with(&format!("{}:", cat.display()))
            && errs[0].contains("unknown field type \"strng\""),
        "{errs:#?}"
    );
    assert!(errs.iter().all(|e| !e.contains("does not have")), "{errs:#?}");
    assert_eq!(errs[1], format!("{}: readable by others (mode 644); run chmod 600", masking.display()));
    assert!(errs[2].starts_with(&format!("peer court@wuxi.xinwu at {silent_addr}: ")), "{errs:#?}");
    // The secrets not created yet are only warnings.
    assert!(warnings(&found).iter().any(|w| w.contains("api.token: does not exist yet")), "{found:#?}");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_error_stops_the_check_with_located_messages() {
    let fed = Federation::new();
    let path =
        fed.node_folder_with("police@wuxi.liangxi", &fed.issue("police@wuxi.liangxi"), "api_token = 5\n");
    let found = check::run(&path, now(), false).await;
    let errs = errors(&found);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].starts_with(&format!("{}:5:", path.display())) && errs[0].contains("api_token"),
        "{errs:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_is_verified_and_its_peers_dialled() {
    use fedgate_certs::directory::{self, Bundle, Directory, Entry};
    let fed = Federation::new();
    let peer = fed.start("mediation-center@wuxi").await;
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let nodes = vec![
        Entry { node: id("mediation-center@wuxi"), address: peer.quic_addr().unwrap(), fingerprint: None },
        Entry { node: id("petition@wuxi"), address: silent.local_addr().unwrap(), fingerprint: None },
    ];
    let dir = Directory::new(region("wuxi"), region("wuxi"), 1, 0, nodes).unwrap();
    let write = |name: &str, ca: &fedgate_certs::authority::Authority| {
        let bundle = Bundle { docs: vec![directory::sign(&dir, ca).unwrap()] };
        let p = fed.dir.path().join(name);
        std::fs::write(&p, bundle.encode()).unwrap();
        p
    };
    let good = write("good.cbor", &fed.root);
    let extra = format!("directory = {:?}\n", path_str(&good));
    let path = fed.node_folder_with("police@wuxi.liangxi", &fed.issue("police@wuxi.liangxi"), &extra);
    let found = check::run(&path, now(), true).await;
    // The directory's running peer passes; the silent one is named with its directory address.
    let errs = errors(&found);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with(&format!("peer petition@wuxi at {}:", silent.local_addr().unwrap())),
        "{errs:?}"
    );
    // Signed by another federation's root of the same name: refused, naming the file.
    let forger = fedgate_certs::authority::Authority::new_root(&region("wuxi"), now(), 10).unwrap();
    let forged = write("forged.cbor", &forger);
    let extra = format!("directory = {:?}\n", path_str(&forged));
    let path = fed.node_folder_with("police@wuxi.liangxi", &fed.issue("police@wuxi.liangxi"), &extra);
    let found = check::run(&path, now(), false).await;
    let errs = errors(&found);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with(&format!("{}: directory wuxi v1: signature does not verify", forged.display())),
        "{errs:?}"
    );
    peer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calendar_with_mistakes_is_reported_located_and_stops_the_node() {
    let fed = Federation::new();
    let cal = fed.dir.path().join("calendar.toml");
    std::fs::write(&cal, "holidays = [\"2026-10-01\"]\nworkdays = [\"2026-02-30\"]\n").unwrap();
    let extra = format!("calendar = {{ file = {:?} }}\n", path_str(&cal));
    let path = fed.node_folder_with("police@wuxi.liangxi", &fed.issue("police@wuxi.liangxi"), &extra);
    let found = check::run(&path, now(), false).await;
    let errs = errors(&found);
    assert_eq!(errs.len(), 1, "{errs:?}");
    let want = format!("{}:2:13: `workdays`: \"2026-02-30\" is not a date", cal.display());
    assert!(errs[0].starts_with(&want), "{errs:?}");
    let cfg = fedgate_gateway::config::load(&path).unwrap();
    let refused = fedgate_gateway::node::RunningNode::start(cfg)
        .await
        .err()
        .expect("a node with a broken calendar must not start");
    assert!(refused.to_string().contains("is not a date"), "{refused}");
    // Fixed, the same node checks clean.
    std::fs::write(&cal, "holidays = [\"2026-10-01..2026-10-07\"]\nworkdays = [\"2026-10-10\"]\n").unwrap();
    assert!(errors(&check::run(&path, now(), false).await).is_empty());
}
