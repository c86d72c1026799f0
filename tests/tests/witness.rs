//! Peers witness each other's logs, end to end over real QUIC on loopback: a federation runs
//! queries (transfers, refusals, failures), every consumer receipt keeps the provider's signed
//! checkpoint and inclusion proof, and the exports reconcile with every exchange matched and
//! every witnessed checkpoint consistent. Then the provider's log is rolled back to an earlier
//! copy and new exchanges appended (a fork): reconcile fails and names the consumer entry that
//! witnessed the lost history.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use fedgate_audit::reconcile::Report;
use fedgate_audit::{self as audit, AuditKeys, Entry, Kind};
use fedgate_gateway::client::Client;
use fedgate_gateway::node::RunningNode;

const CATALOG: &str = include_str!("../../testdata/family.catalog.toml");
const GRANTS: &str = include_str!("../../testdata/family.grants.toml");
const PROVIDER: &str = "womens-federation@wuxi";
const CENTRE: &str = "mediation-center@wuxi";
const COURT: &str = "court@wuxi.xinwu";

fn write_db(path: &Path, n: usize) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "CREATE TABLE cases (case_id TEXT PRIMARY KEY, region TEXT, party_name TEXT, party_id TEXT, mobile TEXT, notes TEXT, age INTEGER, kind TEXT);
         CREATE TABLE shelter (case_id TEXT PRIMARY KEY, region TEXT);",
    )
    .unwrap();
    for i in 0..n {
        conn.execute(
            "INSERT INTO cases VALUES (?1, 'wuxi.liangxi.chongan.guangrui', '欧阳娜娜', '11010519491231002X', ?2, '请回访', 30, '婚姻')",
            rusqlite::params![format!("C{i:06}"), format!("139{i:08}")],
        )
        .unwrap();
    }
}

struct Federation3 {
    fed: Federation,
    auditor: [u8; 32],
    /// `[audit] auditors = [...]`: every node's segments are wrapped for the auditor.
    audit_table: String,
}

impl Federation3 {
    fn new() -> Federation3 {
        let fed = Federation::new();
        let (secret, public) = audit::keys::generate_auditor().unwrap();
        let pubf = fed.file("auditor.pub", &audit::keys::public_text(&public));
        let audit_table = format!("\n[audit]\nauditors = [{:?}]\n", path_str(&pubf));
        Federation3 { fed, auditor: secret, audit_table }
    }

    fn provider_extra(&self) -> String {
        let db = self.fed.dir.path().join("wf.db");
        if !db.exists() {
            write_db(&db, 12);
        }
        let cat = self.fed.file("wf.catalog.toml", CATALOG);
        let grants = self.fed.file("wf.grants.toml", GRANTS);
        format!(
            "catalog = [{:?}]\ngrants = [{:?}]\n\n[[sources]]\ndataset = \"family-disputes\"\nsqlite = {:?}\ntable = \"cases\"\n\n[[sources]]\ndataset = \"shelters\"\nsqlite = {:?}\ntable = \"shelter\"\n{}",
            path_str(&cat),
            path_str(&grants),
            path_str(&db),
            path_str(&db),
            self.audit_table
        )
    }

    async fn consumer(&self, node: &str, provider: &RunningNode) -> RunningNode {
        self.fed.start_with(node, &format!("{}{}", peer_entry(provider), self.audit_table)).await
    }

    /// Exports `nodes`' logs and reconciles them as `audit reconcile --trust root.crt` does.
    fn reconcile(&self, nodes: &[&RunningNode], tag: &str) -> Report {
        let exports: Vec<PathBuf> = nodes
            .iter()
            .map(|n| {
                let out = self.fed.dir.path().join(format!("export-{tag}-{}", n.config().node));
                audit::export(&n.config().audit_dir, &out).unwrap();
                out
            })
            .collect();
        let trust = fedgate_certs::TrustStore::new(self.fed.root.root().clone(), &[]).unwrap();
        let reader = audit::Reader::auditor(self.auditor);
        fedgate_gateway::audit_cli::reconcile_exports(&exports, &reader, Some(&trust)).unwrap()
    }
}

/// Asks through the consumer's local API, as `fedgate query` does (so the receipt is audited);
/// true if records arrived and verified.
async fn ask(c: &RunningNode, dataset: &str, purpose: &str, filters: &[(&str, &str)]) -> bool {
    let mut cfg = c.config().clone();
    cfg.api = c.api_addr();
    let filters: Vec<(String, String)> =
        filters.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let body = fedgate_gateway::client::query_body(
        &id(PROVIDER),
        dataset,
        purpose,
        &filters,
        None,
        std::time::Duration::from_secs(10),
    );
    tokio::task::spawn_blocking(move || {
        let Ok(r) = Client::new(&cfg).unwrap().post_lines("/v1/query", &body) else { return false };
        let lines: Vec<String> = std::io::BufRead::lines(r).map(Result::unwrap).collect();
        lines.last().is_some_and(|l| l.contains("@end"))
    })
    .await
    .unwrap()
}

fn entries(node: &RunningNode) -> Vec<Entry> {
    let sealer = AuditKeys::load_reader(&node.config().audit_key).unwrap();
    let mut out = Vec::new();
    audit::entries(&node.config().audit_dir, &sealer, |e| {
        out.push(e);
        Ok(())
    })
    .unwrap();
    out
}

/// One round of the federation's traffic: a transfer, a denial, a refusal of a dataset the
/// provider does not have, and a failure (a filter on a field that does not exist).
async fn round(centre: &RunningNode, court: &RunningNode) {
    assert!(ask(centre, "family-disputes", "dispute-mediation", &[]).await);
    assert!(!ask(court, "family-disputes", "dispute-mediation", &[]).await);
    assert!(!ask(centre, "no-such-dataset", "dispute-mediation", &[]).await);
    assert!(!ask(centre, "family-disputes", "dispute-mediation", &[("nope", "1")]).await);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn witnessed_checkpoints_reconcile_and_a_rolled_back_provider_log_is_caught() {
    let f = Federation3::new();
    let provider = f.fed.start_with(PROVIDER, &f.provider_extra()).await;
    let centre = f.consumer(CENTRE, &provider).await;
    let court = f.consumer(COURT, &provider).await;

    round(&centre, &court).await;
    // The provider's operator keeps a copy of its log as it is now...
    let audit_dir = provider.config().audit_dir.clone();
    let aside = f.fed.dir.path().join("aside");
    copy_dir(&audit_dir, &aside);
    // ...and the federation goes on; consumers witness the heads that cover these exchanges.
    round(&centre, &court).await;

    // Every receipt that got an answer the provider recorded keeps a witness of it.
    let receipts: Vec<Entry> = [&centre, &court]
        .iter()
        .flat_map(|n| entries(n))
        .filter(|e| e.kind == Some(Kind::RequestOut))
        .collect();
    assert_eq!(receipts.len(), 8);
    assert!(receipts.iter().all(|e| e.witness.is_some()), "{receipts:#?}");
    assert!(receipts.iter().all(|e| e.provider_entry == e.witness.as_ref().map(|w| w.entry)));

    let report = f.reconcile(&[&provider, &centre, &court], "before");
    assert!(report.reconciled, "{report:#?}");
    assert_eq!(report.exchanges.len(), 8);
    assert!(report.exchanges.iter().all(|x| !x.one_sided && x.disagreements.is_empty()));
    assert!(report.exchanges.iter().any(|x| x.provider_says.as_deref() == Some("deny")));
    assert!(report.exchanges.iter().any(|x| x.provider_says.as_deref() == Some("error")));
    assert_eq!(report.witnessed.len(), 8);
    assert!(report.witnessed.iter().all(|w| w.consistent == Some(true)), "{report:#?}");

    // The provider's log is rolled back to the copy, and it serves new exchanges: a fork.
    let mut cfg =
        fedgate_gateway::config::load(&f.fed.dir.path().join(PROVIDER).join("gateway.toml")).unwrap();
    cfg.listen = provider.quic_addr().unwrap(); // where the consumers' peer entries point
    provider.shutdown().await;
    std::fs::remove_dir_all(&audit_dir).unwrap();
    copy_dir(&aside, &audit_dir);
    let provider = RunningNode::start(cfg).await.unwrap();
    // The consumers' cached connections died with the old process; they redial the new one.
    let centre2 = centre;
    assert!(ask(&centre2, "family-disputes", "dispute-mediation", &[]).await);
    round(&centre2, &court).await;

    let report = f.reconcile(&[&provider, &centre2, &court], "after");
    assert!(!report.reconciled);
    let lost: Vec<_> = report.witnessed.iter().filter(|w| w.consistent == Some(false)).collect();
    assert!(!lost.is_empty(), "{report:#?}");
    // Named: the provider, the consumer, its entry, the exchange.
    let centre_log = entries(&centre2);
    for w in &lost {
        let witnessing = centre_log
            .iter()
            .chain(entries(&court).iter())
            .find(|e| e.seq == w.consumer_entry && e.exchange == w.exchange && w.consumer == e.actor)
            .cloned();
        let e = witnessing.unwrap_or_else(|| panic!("no such witnessing entry: {w:?}"));
        let problem = w.problem.as_deref().unwrap();
        let x = e.exchange.as_deref().unwrap();
        assert!(problem.starts_with(&format!("{PROVIDER}'s log does not hold the checkpoint")), "{problem}");
        assert!(
            problem.contains(&format!("{} witnessed in its entry {} (exchange {x})", w.consumer, e.seq)),
            "{problem}"
        );
        assert!(
            ["forked or rewritten", "rolled back", "not this one"].iter().any(|p| problem.contains(p)),
            "{problem}"
        );
    }
    // Exactly the second round's witnesses are lost history: the first round's stay consistent
    // with the rolled-back log, and the new exchanges' with the fork.
    assert_eq!(lost.len(), 4, "{report:#?}");
    assert_eq!(report.witnessed.iter().filter(|w| w.consistent == Some(true)).count(), 4 + 5, "{report:#?}");
}
