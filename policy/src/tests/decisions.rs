use fedgate_catalog::{Catalog, Grade, NodeId};

use crate::decide::{obligation, Decision, DenyReason, Obligation, Policy, Request, RowScope};
use crate::grant::{parse_grants, Action};
use crate::time::days_from_civil;

/// The shared fixtures: the family catalog (family-disputes, and shelters, never shared) and an
/// open one (open-stats).
const FAMILY: &str = include_str!("../../../testdata/family.catalog.toml");
const STATS: &str = include_str!("../../../testdata/stats.catalog.toml");

const GRANTS: &str = r#"
[[grant]]
id = "centre-full"
to = "mediation-center@wuxi"
datasets = ["family-disputes"]
purposes = ["dispute-mediation"]
clearance = 4
rows = "all"

[[grant]]
id = "district-police"
to = { department = "police" }
datasets = ["family-disputes"]
purposes = ["law-enforcement", "dispute-mediation"]
clearance = 3

[[grant]]
id = "liangxi-grid"
to = { region = "wuxi.liangxi", levels = [3, 4] }
datasets = ["*"]
purposes = ["dispute-mediation"]
clearance = 2
valid_from = 2026-01-01
valid_until = 2026-12-31
quota = 1000

[[grant]]
id = "shelters-never"
to = "*"
datasets = ["shelters"]
purposes = ["dispute-mediation"]
clearance = 4
"#;

fn now() -> i64 {
    days_from_civil(2026, 6, 1) * 86_400
}

fn setup() -> (Catalog, Policy) {
    let c = fedgate_catalog::parse_files(&[("family.catalog.toml", FAMILY), ("stats.catalog.toml", STATS)])
        .unwrap();
    let ids: Vec<&str> = c.datasets().iter().map(|d| d.id.as_str()).collect();
    let g = parse_grants(&[("g.toml", GRANTS)], Some(&ids)).unwrap();
    (c, Policy::new(g).unwrap())
}

fn req(ds: &str, purpose: &str) -> Request {
    Request { dataset: ds.into(), purpose: purpose.into(), action: Action::Read }
}

fn node(s: &str) -> NodeId {
    s.parse().unwrap()
}

fn fields(d: &Decision) -> Vec<(String, &'static str)> {
    match d {
        Decision::Allow(a) => a.fields.iter().map(|(n, o)| (n.clone(), o.name())).collect(),
        Decision::Deny { .. } => Vec::new(),
    }
}

#[test]
fn the_centre_sees_everything_in_clear() {
    let (c, p) = setup();
    let d = p
        .decide(&c, &node("mediation-center@wuxi"), &req("family-disputes", "dispute-mediation"), now())
        .unwrap();
    let Decision::Allow(a) = &*d else { panic!("{d:?}") };
    assert_eq!(a.grant.as_deref(), Some("centre-full"));
    assert_eq!(a.rows, RowScope::All);
    assert!(fields(&d).iter().all(|(_, o)| *o == "clear"));
}

#[test]
fn district_police_get_masked_core_fields_and_their_own_rows() {
    let (c, p) = setup();
    let d = p
        .decide(&c, &node("police@wuxi.liangxi"), &req("family-disputes", "law-enforcement"), now())
        .unwrap();
    let Decision::Allow(a) = &*d else { panic!("{d:?}") };
    assert_eq!(a.rows, RowScope::Within("wuxi.liangxi".parse().unwrap()));
    let f = fields(&d);
    assert_eq!(f[2], ("party_name".into(), "clear"));
    assert_eq!(f[3], ("party_id".into(), "mask"), "grade 4 never clear below clearance 4");
}

#[test]
fn default_deny_and_reasons_do_not_reveal_other_grants() {
    let (c, p) = setup();
    let d =
        p.decide(&c, &node("court@wuxi.xinwu"), &req("family-disputes", "dispute-mediation"), now()).unwrap();
    match &*d {
        Decision::Deny { reason: DenyReason::NoGrant, message } => {
            assert_eq!(
                message,
                "no grant allows court@wuxi.xinwu to read `family-disputes` for purpose `dispute-mediation`"
            );
        }
        other => panic!("{other:?}"),
    }
    // Right node, wrong purpose.
    let d =
        p.decide(&c, &node("mediation-center@wuxi"), &req("family-disputes", "statistics"), now()).unwrap();
    assert!(matches!(&*d, Decision::Deny { reason: DenyReason::NoGrant, .. }));
    // Unknown purpose and dataset.
    let d =
        p.decide(&c, &node("mediation-center@wuxi"), &req("family-disputes", "curiosity"), now()).unwrap();
    assert!(matches!(&*d, Decision::Deny { reason: DenyReason::UnknownPurpose, .. }));
    let d = p.decide(&c, &node("mediation-center@wuxi"), &req("nope", "statistics"), now()).unwrap();
    assert!(matches!(&*d, Decision::Deny { reason: DenyReason::UnknownDataset, .. }));
}

#[test]
fn sharing_none_always_denies_even_with_a_grant() {
    let (c, p) = setup();
    let d =
        p.decide(&c, &node("mediation-center@wuxi"), &req("shelters", "dispute-mediation"), now()).unwrap();
    assert!(!d.is_allow(), "{d:?}");
}

#[test]
fn unconditional_datasets_still_obey_field_grades() {
    let (c, p) = setup();
    let d = p.decide(&c, &node("court@wuxi.xinwu"), &req("open-stats", "statistics"), now()).unwrap();
    let Decision::Allow(a) = &*d else { panic!("{d:?}") };
    assert_eq!(a.grant, None);
    assert_eq!(a.clearance, Grade::PUBLIC);
    assert_eq!(fields(&d)[2], ("count".into(), "redact"));
}

#[test]
fn region_and_level_subjects_with_time_windows() {
    let (c, p) = setup();
    let grid = node("grid@wuxi.liangxi.chongan");
    let d = p.decide(&c, &grid, &req("open-stats", "dispute-mediation"), now()).unwrap();
    let Decision::Allow(a) = &*d else { panic!("{d:?}") };
    assert_eq!(a.grant.as_deref(), Some("liangxi-grid"));
    assert_eq!(a.quota, Some(1000));
    // A district-level node in the region is outside levels 3-4; a street in Xinwu is outside it.
    assert!(!p
        .decide(&c, &node("grid@wuxi.liangxi"), &req("family-disputes", "dispute-mediation"), now())
        .unwrap()
        .is_allow());
    assert!(!p
        .decide(&c, &node("grid@wuxi.xinwu.x"), &req("family-disputes", "dispute-mediation"), now())
        .unwrap()
        .is_allow());
    // Before and after the window (valid_until 2026-12-31 means through that day, CST).
    let before = days_from_civil(2025, 12, 31) * 86_400;
    let last_day = days_from_civil(2026, 12, 31) * 86_400 + 12 * 3600;
    let after = days_from_civil(2027, 1, 1) * 86_400;
    let r = req("family-disputes", "dispute-mediation");
    assert!(!p.decide(&c, &grid, &r, before).unwrap().is_allow());
    assert!(p.decide(&c, &grid, &r, last_day).unwrap().is_allow());
    assert!(!p.decide(&c, &grid, &r, after).unwrap().is_allow(), "cached allow must not outlive its grant");
}

#[test]
fn casbin_agrees_with_the_reference_scan() {
    let (c, p) = setup();
    let nodes = [
        "mediation-center@wuxi",
        "police@wuxi.liangxi",
        "police@wuxi.xinwu",
        "grid@wuxi.liangxi.chongan",
        "mediation@wuxi.liangxi.chongan.guangrui",
        "court@wuxi.xinwu",
        "petition@wuxi",
    ];
    for n in nodes {
        for ds in ["family-disputes", "open-stats"] {
            for pur in ["dispute-mediation", "law-enforcement", "statistics"] {
                for t in [now(), days_from_civil(2027, 6, 1) * 86_400] {
                    let n = node(n);
                    let r = req(ds, pur);
                    let want = p.scan(&n, &r, t).map(|g| g.id.clone());
                    let got = match &*p.decide(&c, &n, &r, t).unwrap() {
                        Decision::Allow(a) => a.grant.clone(),
                        Decision::Deny { .. } => None,
                    };
                    assert_eq!(got, want, "{n} {ds} {pur} at {t}");
                }
            }
        }
    }
}

#[test]
fn obligations_follow_grade_and_clearance() {
    use fedgate_catalog::Rule;
    let g = |n| Grade::new(n).unwrap();
    assert_eq!(obligation(g(4), &Rule::Hash, g(3)), Obligation::Apply(Rule::Hash));
    assert_eq!(obligation(g(4), &Rule::Hash, g(4)), Obligation::Clear);
    assert_eq!(obligation(g(2), &Rule::Drop, g(1)), Obligation::Drop);
    assert_eq!(obligation(g(1), &Rule::Drop, g(1)), Obligation::Clear);
}

#[test]
fn grant_files_get_located_errors() {
    let bad = GRANTS
        .replace("purposes = [\"law-enforcement\"", "purposes = [\"law-enforcment\"")
        .replace("clearance = 2", "clearance = 7")
        .replace("rows = \"all\"", "rows = \"Everything\"");
    let err =
        parse_grants(&[("g.toml", &bad)], Some(&["family-disputes", "open-stats"])).unwrap_err().to_string();
    assert!(
        err.contains("g.toml:14:13: unknown purpose \"law-enforcment\", did you mean \"law-enforcement\"?"),
        "{err}"
    );
    assert!(err.contains("clearance 7 is not a grade"), "{err}");
    assert!(err.contains("`rows` must be \"own\", \"all\" or a region path"), "{err}");
    assert!(err.contains("no dataset `shelters` in this node's catalog"), "{err}");
    let dup = format!("{GRANTS}\n[[grant]]\nid = \"centre-full\"\nto = \"*\"\ndatasets = [\"*\"]\npurposes = [\"statistics\"]\nclearance = 1\n");
    let err = parse_grants(&[("g.toml", &dup)], None).unwrap_err().to_string();
    assert!(err.contains("grant id `centre-full` is already used at g.toml:3:6"), "{err}");
}

#[test]
fn documented_example_parses() {
    let doc = include_str!("../../../docs/policy.md");
    let start = doc.find("```toml\n").unwrap() + 8;
    let example = &doc[start..start + doc[start..].find("```").unwrap()];
    let set = parse_grants(&[("policy.md", example)], Some(&["family-disputes"])).unwrap();
    assert_eq!(set.grants.len(), 3);
    assert_eq!(set.grants[2].quota, Some(500));
}

mod near_misses {
    use super::*;
    use crate::explain::{near_misses, Miss, NearMiss};

    fn explain(peer: &str, ds: &str, purpose: &str, action: Action, t: i64) -> Vec<NearMiss> {
        let (c, p) = setup();
        let r = Request { dataset: ds.into(), purpose: purpose.into(), action };
        assert!(!p.decide(&c, &node(peer), &r, t).unwrap().is_allow(), "only denials are explained");
        near_misses(p.grants(), &c, &node(peer), &r, t)
    }

    fn of<'a>(n: &'a [NearMiss], grant: &str) -> &'a [Miss] {
        &n.iter().find(|m| m.grant == grant).unwrap_or_else(|| panic!("{grant} not in {n:?}")).misses
    }

    #[test]
    fn an_expired_grant_is_named_with_its_end() {
        let after = days_from_civil(2027, 6, 1) * 86_400;
        let n =
            explain("grid@wuxi.liangxi.chongan", "family-disputes", "dispute-mediation", Action::Read, after);
        // valid_until = 2026-12-31 means through that day in UTC+8.
        let end = days_from_civil(2027, 1, 1) * 86_400 - 8 * 3600;
        assert_eq!(of(&n, "liangxi-grid"), [Miss::Expired { until: end }]);
        assert_eq!(of(&n, "liangxi-grid")[0].to_string(), "expired at 2027-01-01 00:00 UTC+8");
        let g = n.iter().find(|m| m.grant == "liangxi-grid").unwrap();
        assert_eq!(g.source, "g.toml:18:6", "file position for the steward");
    }

    #[test]
    fn a_grant_not_yet_in_force_says_when_it_starts() {
        let before = days_from_civil(2025, 12, 1) * 86_400;
        let n = explain(
            "grid@wuxi.liangxi.chongan",
            "family-disputes",
            "dispute-mediation",
            Action::Read,
            before,
        );
        let start = days_from_civil(2026, 1, 1) * 86_400 - 8 * 3600;
        assert_eq!(of(&n, "liangxi-grid"), [Miss::NotYetValid { from: start }]);
    }

    #[test]
    fn subjects_outside_region_level_department_or_node() {
        let why = |n: &[NearMiss], g: &str| match of(n, g) {
            [Miss::OtherSubject { why, .. }] => why.clone(),
            other => panic!("{other:?}"),
        };
        let n = explain("grid@wuxi.xinwu.x", "family-disputes", "dispute-mediation", Action::Read, now());
        assert_eq!(why(&n, "liangxi-grid"), "grid@wuxi.xinwu.x is outside region wuxi.liangxi");
        let n = explain("grid@wuxi.liangxi", "family-disputes", "dispute-mediation", Action::Read, now());
        assert_eq!(why(&n, "liangxi-grid"), "grid@wuxi.liangxi is at level 2, the grant covers levels 3-4");
        assert_eq!(why(&n, "district-police"), "grid@wuxi.liangxi is in department grid, not police");
        assert_eq!(
            why(&n, "centre-full"),
            "the grant is for mediation-center@wuxi only, not grid@wuxi.liangxi"
        );
    }

    #[test]
    fn other_purpose_action_and_dataset() {
        let n = explain("mediation-center@wuxi", "family-disputes", "statistics", Action::Read, now());
        assert_eq!(
            of(&n, "centre-full"),
            [Miss::OtherPurpose { purposes: vec!["dispute-mediation".into()] }]
        );
        let n = explain(
            "mediation-center@wuxi",
            "family-disputes",
            "dispute-mediation",
            Action::Subscribe,
            now(),
        );
        assert_eq!(of(&n, "centre-full"), [Miss::OtherAction { actions: vec![Action::Read] }]);
        assert_eq!(of(&n, "shelters-never").len(), 2, "other dataset and other action");
        assert!(matches!(of(&n, "shelters-never")[0], Miss::OtherDataset { .. }));
    }

    #[test]
    fn sharing_none_is_named_on_a_grant_that_fits() {
        let n = explain("mediation-center@wuxi", "shelters", "dispute-mediation", Action::Read, now());
        assert_eq!(of(&n, "shelters-never"), [Miss::NotShared]);
    }

    #[test]
    fn grants_wrong_in_many_ways_are_not_near_and_closest_come_first() {
        let after = days_from_civil(2027, 6, 1) * 86_400;
        let n = explain("court@wuxi.xinwu", "family-disputes", "statistics", Action::Subscribe, after);
        assert!(n.is_empty(), "every grant misses in 3+ ways: {n:?}");
        let n = explain("grid@wuxi.liangxi.chongan", "family-disputes", "statistics", Action::Read, after);
        let counts: Vec<usize> = n.iter().map(|m| m.misses.len()).collect();
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{n:?}");
        assert!(n.iter().all(|m| m.misses.len() <= crate::explain::MAX_MISSES));
    }
}

/// The real model with a matcher that calls a function no enforcer registers: it loads, but
/// every match it attempts fails inside casbin.
fn broken_model() -> &'static str {
    let broken = crate::decide::MODEL.replace("subjectMatch(r.sub, p.sub)", "noSuchFunction(r.sub, p.sub)");
    assert_ne!(broken, crate::decide::MODEL, "the matcher to break is in the model");
    // `with_model` keeps the text for the policy's life; one small leak per test run.
    Box::leak(broken.into_boxed_str())
}

#[test]
fn a_failing_engine_is_an_error_not_a_no_grant_denial() {
    let (c, good) = setup();
    let broken = Policy::with_model(good.grants().clone(), broken_model()).unwrap();
    let centre = node("mediation-center@wuxi");
    let r = req("family-disputes", "dispute-mediation");
    assert!(good.decide(&c, &centre, &r, now()).unwrap().is_allow());
    let err = broken.decide(&c, &centre, &r, now()).unwrap_err();
    assert!(err.to_string().starts_with("policy engine: matching failed"), "{err}");
    // Not cached: every attempt reaches the engine and fails again.
    assert!(broken.decide(&c, &centre, &r, now()).is_err());
    // Requests decided before casbin is asked (unknown dataset or purpose, no candidate grant)
    // are still the denials they are.
    let d = broken.decide(&c, &centre, &req("nope", "dispute-mediation"), now()).unwrap();
    assert!(matches!(&*d, Decision::Deny { reason: DenyReason::UnknownDataset, .. }));
    let d = broken.decide(&c, &node("court@wuxi.xinwu"), &r, now()).unwrap();
    assert!(matches!(&*d, Decision::Deny { reason: DenyReason::NoGrant, .. }));
}

/// Many grants naming the same peer through different subject keys (node, department, region
/// subtree, levels, everyone), with clearances, row scopes and windows that tie and differ: the
/// decision must be the reference scan's best grant at every moment, however the candidates are
/// cut before casbin sees them.
fn overlapping_grants() -> String {
    let subjects = [
        r#""police@wuxi.liangxi""#,
        r#"{ department = "police" }"#,
        r#"{ department = "police", region = "wuxi.liangxi" }"#,
        r#"{ region = "wuxi" }"#,
        r#"{ region = "wuxi.liangxi", levels = [2, 2] }"#,
        r#""*""#,
    ];
    let mut text = String::new();
    for i in 0..60 {
        let subject = subjects[i % subjects.len()];
        let clearance = 1 + (i * 7) % 4;
        let rows = ["\"all\"", "\"own\"", "\"wuxi.liangxi\""][i % 3];
        let datasets = if i % 5 == 0 { r#"["*"]"# } else { r#"["family-disputes"]"# };
        let until = 2026 + (i % 3);
        text.push_str(&format!(
            "[[grant]]\nid = \"g{i:02}\"\nto = {subject}\ndatasets = {datasets}\npurposes = [\"dispute-mediation\"]\n\
             clearance = {clearance}\nrows = {rows}\nvalid_until = {until}-06-01\n\n"
        ));
    }
    text
}

#[test]
fn the_best_of_many_overlapping_grants_is_the_reference_scan_s() {
    let c = fedgate_catalog::parse_files(&[("family.catalog.toml", FAMILY), ("stats.catalog.toml", STATS)])
        .unwrap();
    let ids: Vec<&str> = c.datasets().iter().map(|d| d.id.as_str()).collect();
    let p = Policy::new(parse_grants(&[("g.toml", &overlapping_grants())], Some(&ids)).unwrap()).unwrap();
    let peer = node("police@wuxi.liangxi");
    for year in [2025, 2026, 2027, 2028] {
        let t = days_from_civil(year, 7, 1) * 86_400;
        for ds in ["family-disputes", "open-stats"] {
            let r = req(ds, "dispute-mediation");
            let want = p.scan(&peer, &r, t).map(|g| g.id.clone());
            let got = match &*p.decide(&c, &peer, &r, t).unwrap() {
                Decision::Allow(a) => a.grant.clone(),
                Decision::Deny { .. } => None,
            };
            assert_eq!(got, want, "{ds} in {year}");
        }
    }
}

#[test]
fn casbin_refusing_the_best_candidates_falls_back_to_the_next_ones() {
    let c = fedgate_catalog::parse_files(&[("family.catalog.toml", FAMILY), ("stats.catalog.toml", STATS)])
        .unwrap();
    let ids: Vec<&str> = c.datasets().iter().map(|d| d.id.as_str()).collect();
    let set = parse_grants(&[("g.toml", &overlapping_grants())], Some(&ids)).unwrap();
    let peer = node("police@wuxi.liangxi");
    let r = req("family-disputes", "dispute-mediation");
    let t = days_from_civil(2025, 7, 1) * 86_400;
    let real = Policy::new(set.clone()).unwrap();
    // A model whose matcher also refuses the ten best grants (by index, as casbin sees them),
    // so the answer lies beyond the first handful of candidates.
    let mut ranked: Vec<&crate::grant::Grant> = set.grants.iter().filter(|g| g.to.matches(&peer)).collect();
    ranked.sort_by_key(|g| (std::cmp::Reverse(g.clearance), g.id.clone()));
    let best = real.scan(&peer, &r, t).unwrap().id.clone();
    let mut refused: Vec<String> = Vec::new();
    let mut model = crate::decide::MODEL.to_owned();
    let mut excluded = real.grants().clone();
    for _ in 0..10 {
        let Some(g) = Policy::new(excluded.clone()).unwrap().scan(&peer, &r, t).map(|g| g.id.clone()) else {
            break;
        };
        let index = set.grants.iter().position(|x| x.id == g).unwrap();
        model = model.replacen("r.pur == p.pur", &format!("r.pur == p.pur && p.gid != \"{index}\""), 1);
        excluded.grants.retain(|x| x.id != g);
        refused.push(g);
    }
    assert_eq!(refused.len(), 10, "the fixture has more than ten grants for the peer");
    assert_eq!(refused[0], best);
    let picky = Policy::with_model(set.clone(), Box::leak(model.into_boxed_str())).unwrap();
    let want = Policy::new(excluded).unwrap().scan(&peer, &r, t).map(|g| g.id.clone());
    assert!(want.is_some(), "a grant is left after the ten refused");
    let got = match &*picky.decide(&c, &peer, &r, t).unwrap() {
        Decision::Allow(a) => a.grant.clone(),
        Decision::Deny { .. } => None,
    };
    assert_eq!(got, want);
}

#[test]
fn refer_is_its_own_action() {
    let grants = r#"
[[grant]]
id = "grid-referrals"
to = "grid@wuxi.liangxi.chongan"
datasets = ["family-disputes"]
purposes = ["dispute-mediation"]
actions = ["refer"]
clearance = 2
"#;
    let catalog = fedgate_catalog::parse_files(&[("family.catalog.toml", FAMILY)]).unwrap();
    let p = Policy::new(parse_grants(&[("grants.toml", grants)], None).unwrap()).unwrap();
    let ask =
        |action| Request { dataset: "family-disputes".into(), purpose: "dispute-mediation".into(), action };
    let grid = node("grid@wuxi.liangxi.chongan");
    assert!(p.decide(&catalog, &grid, &ask(Action::Refer), now()).unwrap().is_allow());
    // A grant to receive cases is not a grant to query the dataset, nor the other way round.
    assert!(!p.decide(&catalog, &grid, &ask(Action::Read), now()).unwrap().is_allow());
    let (c, full) = setup();
    assert!(!full.decide(&c, &node("mediation-center@wuxi"), &ask(Action::Refer), now()).unwrap().is_allow());
    assert!(parse_grants(&[("g.toml", &grants.replace("\"refer\"", "\"referral\""))], None).is_err());
}
