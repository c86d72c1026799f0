//! Where grants apply, filed so that a request finds its few candidates with a few dozen
//! integer-keyed lookups, however many grants there are.
//!
//! A grant names its subject by node, or by department × region subtree × levels. A node is named
//! by 21 such keys: itself; its department or any; its region, each ancestor region or any; its
//! level or any. Names (departments, regions, nodes, datasets, purposes) are interned to numbers
//! when a snapshot is built, so a lookup hashes a few integers and compares no strings.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use fedgate_catalog::NodeId;

use crate::grant::{Action, Grant, Subject};

/// An interned name.
type Name = u32;
/// The name `*`: any department, region, level or dataset.
const ANY: Name = 0;

/// Whom a grant names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Who {
    Node(Name),
    /// Level 0 is any level.
    Group {
        department: Name,
        region: Name,
        level: u8,
    },
}

/// One list of grants: those naming this subject, dataset, purpose and action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Shelf {
    who: Who,
    dataset: Name,
    purpose: Name,
    action: Action,
}

/// The grants of a snapshot, filed by where they apply; each list holds grant indices best first.
#[derive(Debug, Default)]
pub(crate) struct GrantIndex {
    names: HashMap<String, Name>,
    shelves: HashMap<Shelf, Vec<usize>, BuildHasherDefault<MixHasher>>,
}

impl GrantIndex {
    /// Files `grants`; `rank[i]` is grant i's place in priority order (0 = best).
    pub(crate) fn new(grants: &[Grant], rank: &[u32]) -> GrantIndex {
        let mut index = GrantIndex::default();
        index.names.insert("*".to_owned(), ANY);
        for (i, g) in grants.iter().enumerate() {
            let whos = index.whos_of(&g.to);
            let datasets: Vec<Name> = match &g.datasets {
                None => vec![ANY],
                Some(ds) => ds.iter().map(|d| index.intern(d.as_str())).collect(),
            };
            let purposes: Vec<Name> = g.purposes.iter().map(|p| index.intern(p.as_str())).collect();
            for &who in &whos {
                for &dataset in &datasets {
                    for &purpose in &purposes {
                        for &action in &g.actions {
                            let shelf = Shelf { who, dataset, purpose, action };
                            index.shelves.entry(shelf).or_default().push(i);
                        }
                    }
                }
            }
        }
        for list in index.shelves.values_mut() {
            list.sort_unstable_by_key(|&i| rank[i]);
            list.dedup();
        }
        index
    }

    /// Subject keys in the grant shelves: number of distinct (subject, dataset, purpose, action).
    pub(crate) fn len(&self) -> usize {
        self.shelves.len()
    }

    fn intern(&mut self, name: &str) -> Name {
        let next = Name::try_from(self.names.len()).unwrap_or(Name::MAX);
        *self.names.entry(name.to_owned()).or_insert(next)
    }

    fn whos_of(&mut self, s: &Subject) -> Vec<Who> {
        if let Some(n) = &s.node {
            return vec![Who::Node(self.intern(&n.to_string()))];
        }
        let department = s.department.as_deref().map_or(ANY, |d| self.intern(d));
        let region = s.region.as_ref().map_or(ANY, |r| self.intern(r.as_str()));
        match s.levels {
            None => vec![Who::Group { department, region, level: 0 }],
            Some((lo, hi)) => {
                (lo.get()..=hi.get()).map(|level| Who::Group { department, region, level }).collect()
            }
        }
    }

    /// Every key naming `peer`; names no grant uses are left out (nothing is filed under them).
    fn whos_naming(&self, peer: &NodeId) -> Vec<Who> {
        let known = |s: &str| self.names.get(s).copied();
        let mut whos = Vec::with_capacity(21);
        whos.extend(known(&peer.to_string()).map(Who::Node));
        let region = peer.region().as_str();
        let ancestors = region.match_indices('.').map(|(at, _)| &region[..at]).chain([region]);
        let regions: Vec<Name> = [ANY].into_iter().chain(ancestors.filter_map(known)).collect();
        let departments = [Some(ANY), known(peer.department())];
        for department in departments.into_iter().flatten() {
            for &region in &regions {
                for level in [0, peer.level().get()] {
                    whos.push(Who::Group { department, region, level });
                }
            }
        }
        whos
    }

    /// Calls `visit` with each list of grants (best first) filed for `peer`, `dataset` (or every
    /// dataset), `purpose` and `action`.
    pub(crate) fn for_each_list(
        &self,
        peer: &NodeId,
        dataset: &str,
        purpose: &str,
        action: Action,
        mut visit: impl FnMut(&[usize]),
    ) {
        let Some(purpose) = self.names.get(purpose).copied() else { return };
        let datasets = [self.names.get(dataset).copied(), Some(ANY)];
        for who in self.whos_naming(peer) {
            for dataset in datasets.into_iter().flatten() {
                if let Some(list) = self.shelves.get(&Shelf { who, dataset, purpose, action }) {
                    visit(list);
                }
            }
        }
    }
}

/// A multiply-and-rotate hash for shelf keys, which are a handful of small integers: SipHash's
/// resistance to chosen keys buys nothing here (every key is built from the steward's grants or
/// from names already found among them) and was a third of a lookup's cost.
#[derive(Debug, Default)]
struct MixHasher(u64);

impl Hasher for MixHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grant::parse_grants;

    const GRANTS: &str = r#"
[[grant]]
id = "one-node"
to = "police@wuxi.liangxi"
datasets = ["cases"]
purposes = ["dispute-mediation"]
clearance = 2

[[grant]]
id = "department-in-subtree"
to = { department = "police", region = "wuxi" }
datasets = ["*"]
purposes = ["dispute-mediation", "statistics"]
clearance = 3

[[grant]]
id = "street-level-anyone"
to = { region = "wuxi.liangxi", levels = [3, 4] }
datasets = ["cases"]
purposes = ["dispute-mediation"]
clearance = 1
"#;

    fn filed(index: &GrantIndex, peer: &str, dataset: &str, purpose: &str) -> Vec<usize> {
        let mut ids = Vec::new();
        index.for_each_list(&peer.parse().unwrap(), dataset, purpose, Action::Read, |l| ids.extend(l));
        ids.sort_unstable();
        ids
    }

    #[test]
    fn a_node_finds_exactly_the_grants_naming_it() {
        let set = parse_grants(&[("g.toml", GRANTS)], None).unwrap();
        let index = GrantIndex::new(&set.grants, &[0, 1, 2]);
        assert_eq!(filed(&index, "police@wuxi.liangxi", "cases", "dispute-mediation"), [0, 1]);
        assert_eq!(filed(&index, "police@wuxi.liangxi", "other", "dispute-mediation"), [1]);
        assert_eq!(filed(&index, "police@wuxi.liangxi", "cases", "statistics"), [1]);
        assert_eq!(filed(&index, "grid@wuxi.liangxi.chongan", "cases", "dispute-mediation"), [2]);
        assert_eq!(filed(&index, "police@wuxi.liangxi.chongan", "cases", "dispute-mediation"), [1, 2]);
        // Outside the subtree, another department, an unknown purpose: nothing is filed.
        assert!(filed(&index, "police@suzhou", "cases", "dispute-mediation").is_empty());
        assert!(filed(&index, "court@wuxi.liangxi", "cases", "dispute-mediation").is_empty());
        assert!(filed(&index, "police@wuxi.liangxi", "cases", "no-such-purpose").is_empty());
        // A region whose name only starts like a covered one is not inside it.
        assert!(filed(&index, "grid@wuxi.liangxiang.a", "cases", "dispute-mediation").is_empty());
    }
}
