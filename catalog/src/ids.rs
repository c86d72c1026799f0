//! The federation's shared names: regions, levels, node ids, grades, purposes.
//!
//! Every name is parsed and validated here, once; the rest of fedgate holds only valid values.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Why a name was refused. The message names the offending text.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum NameError {
    /// A region path was empty, had an empty segment, bad characters or too many levels.
    #[error("invalid region path {text:?}: {why}")]
    Region {
        /// The text as given.
        text: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A node id did not have the form `DEPARTMENT@REGION`.
    #[error("invalid node id {text:?}: {why}")]
    NodeId {
        /// The text as given.
        text: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A grade outside 1..=4.
    #[error("invalid grade {0}: grades run from 1 (public) to 4 (core)")]
    Grade(i64),
    /// A purpose or identifier with characters outside `[a-z0-9-]`.
    #[error("invalid {kind} {text:?}: use lowercase letters, digits and '-' (1 to 64 characters)")]
    Ident {
        /// What kind of identifier (purpose, dataset id, ...).
        kind: &'static str,
        /// The text as given.
        text: String,
    },
}

/// The deepest administrative level: village/community.
pub const MAX_LEVEL: u8 = 4;
const MAX_SEGMENT_LEN: usize = 63;

/// True if and only if `s` is a non-empty `[a-z0-9-]+` token of at most `max` bytes that does not
/// start or end with '-' (so it is also a valid DNS label).
fn is_token(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// An administrative level: 1 city, 2 district/county, 3 town/street, 4 village/community.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct Level(u8);

impl TryFrom<u8> for Level {
    type Error = String;
    fn try_from(n: u8) -> Result<Self, String> {
        Level::new(n).ok_or_else(|| format!("level {n} is outside 1..=4"))
    }
}

impl From<Level> for u8 {
    fn from(l: Level) -> u8 {
        l.0
    }
}

impl Level {
    /// The level's number, 1..=4.
    pub fn get(self) -> u8 {
        self.0
    }

    /// Builds a level from its number; `None` outside 1..=4.
    pub fn new(n: u8) -> Option<Level> {
        (1..=MAX_LEVEL).contains(&n).then_some(Level(n))
    }

    /// The level's name in the four-level administration.
    pub fn name(self) -> &'static str {
        match self.0 {
            1 => "city",
            2 => "district/county",
            3 => "town/street",
            _ => "village/community",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.0, self.name())
    }
}

/// A dot-separated region path such as `wuxi.liangxi.chongan`; 1 to 4 segments of `[a-z0-9-]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Region(String);

impl Region {
    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The number of segments: 1 city .. 4 village/community.
    pub fn level(&self) -> Level {
        Level(self.segments().count() as u8)
    }

    /// The path's segments, top region first.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('.')
    }

    /// True if and only if `other` lies in this region's subtree (a region covers itself).
    pub fn covers(&self, other: &Region) -> bool {
        other.0 == self.0
            || (other.0.len() > self.0.len()
                && other.0.starts_with(&self.0)
                && other.0.as_bytes()[self.0.len()] == b'.')
    }

    /// The ancestor at `level`, or `None` if this region is above that level.
    pub fn truncate(&self, level: Level) -> Option<Region> {
        if level > self.level() {
            return None;
        }
        let cut: Vec<&str> = self.segments().take(level.0 as usize).collect();
        Some(Region(cut.join(".")))
    }

    /// The parent region, `None` at the top.
    pub fn parent(&self) -> Option<Region> {
        self.0.rsplit_once('.').map(|(p, _)| Region(p.to_owned()))
    }
}

impl FromStr for Region {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why| NameError::Region { text: s.to_owned(), why };
        if s.is_empty() {
            return Err(err("empty"));
        }
        let mut n = 0;
        for seg in s.split('.') {
            n += 1;
            if seg.is_empty() {
                return Err(err("empty segment"));
            }
            if !is_token(seg, MAX_SEGMENT_LEN) {
                return Err(err(
                    "segments are [a-z0-9-]+, at most 63 characters, no leading or trailing '-'",
                ));
            }
        }
        if n > MAX_LEVEL as usize {
            return Err(err("more than 4 levels (city.district.town.village)"));
        }
        Ok(Region(s.to_owned()))
    }
}

impl TryFrom<String> for Region {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        s.parse()
    }
}

impl From<Region> for String {
    fn from(r: Region) -> String {
        r.0
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A gateway's identity, `DEPARTMENT@REGION`, e.g. `police@wuxi.liangxi`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeId {
    department: String,
    region: Region,
}

impl NodeId {
    /// The department, `[a-z0-9-]+`.
    pub fn department(&self) -> &str {
        &self.department
    }

    /// The region the node serves.
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// The node's administrative level (its region's).
    pub fn level(&self) -> Level {
        self.region.level()
    }

    /// A DNS-name form used as the TLS server name: `police.wuxi.liangxi`. It is injective because
    /// a department never contains a dot.
    pub fn to_server_name(&self) -> String {
        format!("{}.{}", self.department, self.region)
    }

    /// Inverse of [`NodeId::to_server_name`].
    pub fn from_server_name(name: &str) -> Result<NodeId, NameError> {
        match name.split_once('.') {
            Some((dept, region)) => format!("{dept}@{region}").parse(),
            None => Err(NameError::NodeId { text: name.to_owned(), why: "not a node server name" }),
        }
    }
}

impl FromStr for NodeId {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why| NameError::NodeId { text: s.to_owned(), why };
        let (dept, region) = s.split_once('@').ok_or_else(|| err("expected DEPARTMENT@REGION"))?;
        if !is_token(dept, MAX_SEGMENT_LEN) {
            return Err(err("department must be [a-z0-9-]+ (at most 63, no leading/trailing '-')"));
        }
        let region = region.parse().map_err(|e| match e {
            NameError::Region { why, .. } => err(why),
            other => other,
        })?;
        Ok(NodeId { department: dept.to_owned(), region })
    }
}

impl TryFrom<String> for NodeId {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        s.parse()
    }
}

impl From<NodeId> for String {
    fn from(n: NodeId) -> String {
        n.to_string()
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.department, self.region)
    }
}

/// Sensitivity grade, 1 public, 2 internal, 3 sensitive, 4 core (GB/T 43697 alignment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct Grade(u8);

impl TryFrom<u8> for Grade {
    type Error = NameError;
    fn try_from(n: u8) -> Result<Self, NameError> {
        Grade::new(i64::from(n))
    }
}

impl From<Grade> for u8 {
    fn from(g: Grade) -> u8 {
        g.0
    }
}

impl Grade {
    /// Grade 1: public.
    pub const PUBLIC: Grade = Grade(1);
    /// Grade 2: internal.
    pub const INTERNAL: Grade = Grade(2);
    /// Grade 3: sensitive.
    pub const SENSITIVE: Grade = Grade(3);
    /// Grade 4: core; never leaves in clear unless the clearance is 4.
    pub const CORE: Grade = Grade(4);

    /// Builds a grade from a number in 1..=4.
    pub fn new(n: i64) -> Result<Grade, NameError> {
        if (1..=4).contains(&n) {
            Ok(Grade(n as u8))
        } else {
            Err(NameError::Grade(n))
        }
    }

    /// The grade as a number.
    pub fn get(self) -> u8 {
        self.0
    }
}

impl fmt::Display for Grade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Checks a `[a-z0-9-]` identifier of 1..=64 characters (purposes, dataset ids).
pub fn check_ident(kind: &'static str, s: &str) -> Result<(), NameError> {
    if is_token(s, 64) {
        Ok(())
    } else {
        Err(NameError::Ident { kind, text: s.to_owned() })
    }
}

macro_rules! ident_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                s.parse()
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl $name {
            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                check_ident($kind, s).map(|()| $name(s.to_owned()))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

ident_type!(
    /// A usage purpose from the federation's vocabulary, e.g. `dispute-mediation`.
    Purpose,
    "purpose"
);
ident_type!(
    /// A dataset's stable id, `[a-z0-9-]+`.
    DatasetId,
    "dataset id"
);

#[cfg(test)]
mod tests {
    use super::*;

    fn region(s: &str) -> Region {
        s.parse().unwrap()
    }

    #[test]
    fn region_levels_and_cover() {
        assert_eq!(region("wuxi").level().get(), 1);
        assert_eq!(region("wuxi.liangxi.chongan.guangrui").level().get(), 4);
        assert!(region("wuxi.liangxi").covers(&region("wuxi.liangxi")));
        assert!(region("wuxi.liangxi").covers(&region("wuxi.liangxi.chongan")));
        assert!(!region("wuxi.liangxi").covers(&region("wuxi.liangxiang")));
        assert!(!region("wuxi.liangxi").covers(&region("wuxi")));
        assert!(!region("wuxi.liangxi").covers(&region("wuxi.xinwu")));
        assert_eq!(region("wuxi.liangxi.chongan").truncate(Level(2)), Some(region("wuxi.liangxi")));
        assert_eq!(region("wuxi").truncate(Level(2)), None);
    }

    #[test]
    fn bad_regions_are_refused() {
        for bad in ["", ".", "wuxi.", ".wuxi", "Wuxi", "wu xi", "a.b.c.d.e", "-a", "a-", "无锡"] {
            assert!(bad.parse::<Region>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn node_ids_round_trip() {
        let n: NodeId = "police@wuxi.liangxi".parse().unwrap();
        assert_eq!(n.department(), "police");
        assert_eq!(n.level().get(), 2);
        assert_eq!(n.to_string(), "police@wuxi.liangxi");
        assert_eq!(NodeId::from_server_name(&n.to_server_name()).unwrap(), n);
        for bad in ["police", "@wuxi", "police@", "Police@wuxi", "po.lice@wuxi", "a@b@c", "x@a.b.c.d.e"] {
            assert!(bad.parse::<NodeId>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn grades_are_one_to_four() {
        assert!(Grade::new(0).is_err());
        assert!(Grade::new(5).is_err());
        assert_eq!(Grade::new(4).unwrap(), Grade::CORE);
        assert!(Grade::PUBLIC < Grade::CORE);
    }
}
