//! The demo federation's catalogs and grants, as a steward would write them: data files under
//! deploy/demo/ (catalogs/<dataset>.toml, grants/<provider node>.toml), built into the binary so
//! `fedgate demo` needs nothing beside it.

/// (owner node, dataset id, region its records cover, catalog TOML).
pub(super) const DATASETS: &[(&str, &str, &str, &str)] = &[
    (
        "hotline12345@wuxi",
        "hotline-tickets",
        "wuxi",
        include_str!("../../../deploy/demo/catalogs/hotline-tickets.toml"),
    ),
    ("petition@wuxi", "petitions", "wuxi", include_str!("../../../deploy/demo/catalogs/petitions.toml")),
    (
        "womens-federation@wuxi",
        "family-disputes",
        "wuxi",
        include_str!("../../../deploy/demo/catalogs/family-disputes.toml"),
    ),
    (
        "womens-federation@wuxi",
        "shelter-referrals",
        "wuxi",
        include_str!("../../../deploy/demo/catalogs/shelter-referrals.toml"),
    ),
    (
        "police@wuxi.liangxi",
        "police-incidents",
        "wuxi.liangxi",
        include_str!("../../../deploy/demo/catalogs/police-incidents.toml"),
    ),
    (
        "court@wuxi.xinwu",
        "court-mediation-cases",
        "wuxi.xinwu",
        include_str!("../../../deploy/demo/catalogs/court-mediation-cases.toml"),
    ),
    (
        "grid@wuxi.liangxi.chongan",
        "grid-events",
        "wuxi.liangxi.chongan",
        include_str!("../../../deploy/demo/catalogs/grid-events.toml"),
    ),
];

/// Grants by provider node.
pub(super) const GRANTS: &[(&str, &str)] = &[
    ("hotline12345@wuxi", include_str!("../../../deploy/demo/grants/hotline12345@wuxi.toml")),
    ("petition@wuxi", include_str!("../../../deploy/demo/grants/petition@wuxi.toml")),
    ("womens-federation@wuxi", include_str!("../../../deploy/demo/grants/womens-federation@wuxi.toml")),
    ("police@wuxi.liangxi", include_str!("../../../deploy/demo/grants/police@wuxi.liangxi.toml")),
    ("grid@wuxi.liangxi.chongan", include_str!("../../../deploy/demo/grants/grid@wuxi.liangxi.chongan.toml")),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// The data files are what a steward edits: each must pass `catalog check`/`policy check`
    /// on its own, and each grant file may only name datasets of the demo.
    #[test]
    fn every_demo_file_is_valid_on_its_own() {
        let all: Vec<(&str, &str)> = DATASETS.iter().map(|(_, id, _, t)| (*id, *t)).collect();
        let catalog = fedgate_catalog::parse_files(&all).unwrap_or_else(|d| panic!("{d}"));
        for (owner, id, ..) in DATASETS {
            assert_eq!(catalog.get(id).map(|d| d.owner.to_string()).as_deref(), Some(*owner), "{id}");
        }
        let ids: Vec<&str> = catalog.datasets().iter().map(|d| d.id.as_str()).collect();
        for (owner, text) in GRANTS {
            let set = fedgate_policy::parse_grants(&[(*owner, *text)], Some(&ids))
                .unwrap_or_else(|d| panic!("{d}"));
            assert!(!set.grants.is_empty(), "{owner}");
        }
    }
}
