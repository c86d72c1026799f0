//! Shared fixtures: a small federation with real certificates, gateways on 127.0.0.1 port 0.
#![allow(dead_code, unreachable_pub)]

pub mod api;
pub mod console;
pub mod webdriver;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use fedgate_catalog::{NodeId, Region};
use fedgate_certs::authority::{Authority, IssuedNode, NodeProfile};
use fedgate_certs::store;
use fedgate_certs::tls::Rejection;
use fedgate_gateway::config;
use fedgate_gateway::node::RunningNode;
use time::OffsetDateTime;

pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

pub fn id(s: &str) -> NodeId {
    s.parse().unwrap()
}

pub fn region(s: &str) -> Region {
    s.parse().unwrap()
}

pub struct Federation {
    pub dir: tempfile::TempDir,
    pub root: Authority,
    pub liangxi: Authority,
    pub xinwu: Authority,
}

impl Federation {
    pub fn new() -> Federation {
        let dir = tempfile::tempdir().unwrap();
        let root = Authority::new_root(&region("wuxi"), now(), 100).unwrap();
        let liangxi = root.issue_ca(&region("wuxi.liangxi"), now(), 50).unwrap();
        let xinwu = root.issue_ca(&region("wuxi.xinwu"), now(), 50).unwrap();
        for (name, ca) in [("root", &root), ("liangxi", &liangxi), ("xinwu", &xinwu)] {
            store::write_authority(&dir.path().join("pki").join(name), ca, now(), false).unwrap();
        }
        Federation { dir, root, liangxi, xinwu }
    }

    pub fn ca_for(&self, node: &NodeId) -> &Authority {
        [&self.liangxi, &self.xinwu]
            .into_iter()
            .find(|ca| ca.region().covers(node.region()))
            .unwrap_or(&self.root)
    }

    pub fn issue(&self, node: &str) -> IssuedNode {
        let n = id(node);
        self.ca_for(&n).issue_node(&n, NodeProfile::gateway(now(), 10)).unwrap()
    }

    pub fn crl_paths(&self) -> Vec<PathBuf> {
        ["root", "liangxi", "xinwu"]
            .iter()
            .map(|n| self.dir.path().join("pki").join(n).join("crl.pem"))
            .collect()
    }

    /// Writes a node folder with `issued` as its identity and returns its config path.
    pub fn node_folder(&self, node: &str, issued: &IssuedNode) -> PathBuf {
        self.node_folder_with(node, issued, "")
    }

    /// Like `node_folder`, with `extra` TOML appended (top-level keys first, then tables).
    pub fn node_folder_with(&self, node: &str, issued: &IssuedNode, extra: &str) -> PathBuf {
        let ndir = self.dir.path().join(node);
        store::write_node(&ndir, issued, self.root.root(), true).unwrap();
        let crls: Vec<String> =
            self.crl_paths().iter().map(|p| format!("{:?}", p.display().to_string())).collect();
        let text = format!(
            "node = \"{node}\"\nlisten = \"127.0.0.1:0\"\napi = \"127.0.0.1:0\"\nreload_secs = 1\n{extra}\n[tls]\ncert = \"node.crt\"\nkey = \"node.key\"\ntrust = \"trust.crt\"\ncrls = [{}]\n",
            crls.join(", ")
        );
        let path = ndir.join("gateway.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    pub async fn start(&self, node: &str) -> RunningNode {
        self.start_with(node, "").await
    }

    /// Starts `node` with `extra` config (top-level keys such as `catalog = [...]`).
    pub async fn start_with(&self, node: &str, extra: &str) -> RunningNode {
        let path = self.node_folder_with(node, &self.issue(node), extra);
        RunningNode::start(config::load(&path).unwrap()).await.unwrap()
    }

    /// A SQLite file with one table per dataset id (columns of [`dataset`], table named like the
    /// id with `_` for `-`) and the `[[sources]]` entries pointing at it.
    pub fn sqlite_sources(&self, ids: &[&str]) -> String {
        let db = self.dir.path().join("sources.db");
        let conn = rusqlite::Connection::open(&db).unwrap();
        let mut entries = String::new();
        for ds in ids {
            let table = ds.replace('-', "_");
            conn.execute_batch(&format!(
                "CREATE TABLE IF NOT EXISTS {table} (case_id TEXT PRIMARY KEY, region TEXT, party_name TEXT);"
            ))
            .unwrap();
            entries.push_str(&format!(
                "\n[[sources]]\ndataset = \"{ds}\"\nsqlite = {:?}\ntable = \"{table}\"\n",
                path_str(&db)
            ));
        }
        entries
    }

    /// Writes `text` to `name` in the federation folder and returns its path.
    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

/// Records every rejection a node's verifier reports.
pub fn record_rejections(node: &RunningNode) -> Arc<Mutex<Vec<Rejection>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    node.link().verifier().set_observer(move |r| s.lock().unwrap().push(r.clone()));
    seen
}

pub fn key_of(issued: &IssuedNode) -> rustls::pki_types::PrivateKeyDer<'static> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap()
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// A `[[peers]]` entry for a running node.
pub fn peer_entry(n: &RunningNode) -> String {
    format!("\n[[peers]]\nnode = \"{}\"\naddress = \"{}\"\n", n.config().node, n.quic_addr().unwrap())
}

/// A small valid dataset owned by `owner`.
pub fn dataset(id: &str, owner: &str, sharing: &str) -> String {
    format!(
        r#"
[[dataset]]
id = "{id}"
title = "Dataset {id}"
owner = "{owner}"
steward = "test steward"
update = "daily"
sharing = "{sharing}"
classification = "case.detail"
jurisdiction = "region"
primary_key = "case_id"

  [[dataset.fields]]
  name = "case_id"
  type = "string"
  grade = 1

  [[dataset.fields]]
  name = "region"
  type = "region"
  grade = 1

  [[dataset.fields]]
  name = "party_name"
  type = "string"
  grade = 3
  pii = "person-name"
"#
    )
}

/// Every entry of `node`'s audit log, decrypted with its own key.
pub fn audit_entries(node: &RunningNode) -> Vec<fedgate_audit::Entry> {
    let cfg = node.config();
    let reader = fedgate_audit::AuditKeys::load_reader(&cfg.audit_key).unwrap();
    let mut out = Vec::new();
    fedgate_audit::entries(&cfg.audit_dir, &reader, |e| {
        out.push(e);
        Ok(())
    })
    .unwrap();
    out
}
