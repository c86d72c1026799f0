//! Any bytes as a grant file, loaded into a [`Policy`] and decided: errors are fine, panics are
//! not, and casbin must agree with the plain reference scan.
//!
//! `grants_parse` covers the parser at full speed; this target spends ~0.3 ms per parsed input
//! building a casbin enforcer, so it runs fewer executions. Its casbin decision is cross-checked
//! against the plain reference scan for a peer, dataset, purpose and time picked from a fixed set: a grant whose
//! subject pattern does not survive the round trip through casbin's rule text shows up as a
//! different answer.
#![no_main]

use std::sync::OnceLock;

use fedgate_catalog::{Catalog, NodeId};
use fedgate_policy::{Action, Decision, Policy, Request};
use libfuzzer_sys::fuzz_target;

#[path = "shared/parse.rs"]
mod shared;

/// The shared test fixtures (testdata/): a conditional dataset with grade 1 to 4 fields, one never
/// shared, and an unconditional one.
const FIXTURES: [(&str, &str); 2] = [
    ("family.catalog.toml", include_str!("../../../testdata/family.catalog.toml")),
    ("stats.catalog.toml", include_str!("../../../testdata/stats.catalog.toml")),
];

const PEERS: &[&str] = &[
    "mediation-center@wuxi",
    "police@wuxi.liangxi",
    "grid@wuxi.liangxi.chongan",
    "mediation@wuxi.liangxi.chongan.guangrui",
    "court@wuxi.xinwu",
];
const DATASETS: &[&str] = &["family-disputes", "open-stats", "shelters", "petitions"];
const PURPOSES: &[&str] = &["dispute-mediation", "law-enforcement", "statistics"];
/// 2026-01-01T00:00Z and 2026-07-01T00:00Z: inside and outside typical validity windows.
const TIMES: &[i64] = &[1_767_225_600, 1_782_864_000];

fn fixture() -> &'static (Catalog, Vec<NodeId>) {
    static F: OnceLock<(Catalog, Vec<NodeId>)> = OnceLock::new();
    F.get_or_init(|| {
        let catalog = fedgate_catalog::parse_files(&FIXTURES).expect("fixture catalogs");
        let peers = PEERS.iter().map(|p| p.parse().expect("fixture peer")).collect();
        (catalog, peers)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // Half the inputs are checked against known dataset ids too, and each input decides one of
    // the 120 peer × dataset × purpose × time cases: one parse and one casbin load per execution
    // keep the rate up, and across the corpus every case is covered.
    let pick = data.iter().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(usize::from(*b)));
    let known = (pick & 1 == 0).then_some(DATASETS);
    let Some(set) = shared::parse_checked(text, known) else { return };
    let policy = Policy::new(set).expect("a parsed grant set loads");
    let (catalog, peers) = fixture();
    let pick = pick >> 1;
    let (p, d, u) = (PEERS.len(), DATASETS.len(), PURPOSES.len());
    let req = Request {
        dataset: DATASETS[pick / p % d].into(),
        purpose: PURPOSES[pick / (p * d) % u].into(),
        action: Action::Read,
    };
    check(&policy, catalog, &peers[pick % p], &req, TIMES[pick / (p * d * u) % TIMES.len()]);
});

/// casbin's best grant must be the reference scan's.
fn check(policy: &Policy, catalog: &Catalog, peer: &NodeId, req: &Request, now: i64) {
    // The engine failing on valid grants is a bug the fuzzer should find.
    let decided = policy.decide_uncached(catalog, peer, req, now).expect("the policy engine failed");
    let _ = decided.reason();
    let (Some(ds), true) = (catalog.get(&req.dataset), policy.knows_purpose(&req.purpose)) else { return };
    let reference = policy.scan(peer, req, now).map(|g| g.id.clone());
    let got = match &decided {
        Decision::Allow(a) => a.grant.clone(),
        Decision::Deny { .. } => None,
    };
    assert_eq!(got, reference, "casbin and the reference scan disagree for {peer} on {} ({:?})", req.dataset, ds.sharing);
}
