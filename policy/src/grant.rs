//! Grants: who may read or subscribe to which datasets, for which purposes, how clearly, until when.

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;

use fedgate_catalog::toml_reader::{closest, Source, Table};
use fedgate_catalog::{DatasetId, Diagnostics, Grade, Level, NodeId, Purpose, Region};
use serde::Serialize;
use toml::de::DeValue;

use crate::time::{days_from_civil, is_valid_date, CST_OFFSET_SECS};

/// The purposes a federation uses when none are declared.
pub const DEFAULT_PURPOSES: &[&str] =
    &["dispute-mediation", "risk-assessment", "statistics", "law-enforcement", "public-service", "audit"];

/// What a grant permits doing with a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Query records.
    Read,
    /// Receive change notifications.
    Subscribe,
    /// Receive a record of the dataset as the case of a referral (交办).
    Refer,
}

impl Action {
    /// As written in grant files.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Subscribe => "subscribe",
            Action::Refer => "refer",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a grant is for. All given parts must hold; none given means any federation member.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Default)]
pub struct Subject {
    /// Exactly this node.
    pub node: Option<NodeId>,
    /// This department, in any region the other parts allow.
    pub department: Option<String>,
    /// Nodes whose region lies in this subtree.
    pub region: Option<Region>,
    /// Nodes at these levels (inclusive range).
    pub levels: Option<(Level, Level)>,
}

impl Subject {
    /// True if and only if `node` is one of the nodes this subject names.
    pub fn matches(&self, node: &NodeId) -> bool {
        self.node.as_ref().is_none_or(|n| n == node)
            && self.department.as_deref().is_none_or(|d| d == node.department())
            && self.region.as_ref().is_none_or(|r| r.covers(node.region()))
            && self.levels.is_none_or(|(lo, hi)| (lo..=hi).contains(&node.level()))
    }
}

impl Subject {
    /// A compact text form casbin rules carry: `node=ID`, or `dept=D;region=R;levels=L-H`
    /// with absent parts left out (`*` for anyone).
    pub fn pattern(&self) -> String {
        if let Some(n) = &self.node {
            return format!("node={n}");
        }
        let mut parts = Vec::new();
        if let Some(d) = &self.department {
            parts.push(format!("dept={d}"));
        }
        if let Some(r) = &self.region {
            parts.push(format!("region={r}"));
        }
        if let Some((lo, hi)) = self.levels {
            parts.push(format!("levels={}-{}", lo.get(), hi.get()));
        }
        if parts.is_empty() {
            "*".into()
        } else {
            parts.join(";")
        }
    }

    /// Inverse of [`Subject::pattern`].
    pub fn from_pattern(p: &str) -> Option<Subject> {
        let mut s = Subject::default();
        if p == "*" {
            return Some(s);
        }
        for part in p.split(';') {
            let (k, v) = part.split_once('=')?;
            match k {
                "node" => s.node = Some(v.parse().ok()?),
                "dept" => s.department = Some(v.to_owned()),
                "region" => s.region = Some(v.parse().ok()?),
                "levels" => {
                    let (lo, hi) = v.split_once('-')?;
                    s.levels = Some((Level::new(lo.parse().ok()?)?, Level::new(hi.parse().ok()?)?));
                }
                _ => return None,
            }
        }
        Some(s)
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(n) = &self.node {
            return write!(f, "{n}");
        }
        let mut parts = Vec::new();
        if let Some(d) = &self.department {
            parts.push(format!("department {d}"));
        }
        if let Some(r) = &self.region {
            parts.push(format!("region {r}"));
        }
        if let Some((lo, hi)) = self.levels {
            parts.push(if lo == hi {
                format!("level {}", lo.get())
            } else {
                format!("levels {}-{}", lo.get(), hi.get())
            });
        }
        if parts.is_empty() {
            f.write_str("any federation member")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// Which rows a grant lets through.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rows {
    /// The consumer's own jurisdiction (its region's subtree): the default.
    Own,
    /// Rows in this region's subtree.
    Within(Region),
    /// Every row of the dataset.
    All,
}

/// One grant, as the steward wrote it (validated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grant {
    /// Name, unique in the node's grant files.
    pub id: String,
    /// Who.
    pub to: Subject,
    /// Which datasets; `None` means every dataset of the node.
    pub datasets: Option<Vec<DatasetId>>,
    /// What.
    pub actions: Vec<Action>,
    /// Why.
    pub purposes: Vec<Purpose>,
    /// Highest grade seen in clear.
    pub clearance: Grade,
    /// Row scope.
    pub rows: Rows,
    /// Start of validity, Unix seconds (inclusive).
    pub valid_from: Option<i64>,
    /// End of validity, Unix seconds (exclusive).
    pub valid_until: Option<i64>,
    /// Records per day (China Standard Time days).
    pub quota: Option<u64>,
    /// Where it was written, `FILE:LINE:COL`, for explanations.
    pub source: String,
}

impl Grant {
    /// True if and only if the grant is in force at `now`.
    pub fn in_force(&self, now: i64) -> bool {
        self.valid_from.is_none_or(|f| now >= f) && self.valid_until.is_none_or(|u| now < u)
    }

    /// True if and only if the grant names `dataset`.
    pub fn covers_dataset(&self, dataset: &str) -> bool {
        self.datasets.as_ref().is_none_or(|ds| ds.iter().any(|d| d.as_str() == dataset))
    }
}

/// A node's grants and the purpose vocabulary they were checked against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct GrantSet {
    /// The grants, in file order.
    pub grants: Vec<Grant>,
    /// The federation's purposes.
    pub purposes: BTreeSet<Purpose>,
}

impl GrantSet {
    /// A stable SHA-256 (hex) over the normalized grants, recorded in audit entries.
    pub fn digest(&self) -> String {
        let mut canonical = Vec::new();
        for g in &self.grants {
            // The source position is not part of a grant's meaning.
            let mut g = g.clone();
            g.source.clear();
            canonical.extend(format!("{g:?}\n").into_bytes());
        }
        for p in &self.purposes {
            canonical.extend(p.as_str().as_bytes());
            canonical.push(b'\n');
        }
        fedgate_catalog::hex(ring::digest::digest(&ring::digest::SHA256, &canonical).as_ref())
    }
}

const ROOT_KEYS: &[&str] = &["purposes", "grant"];
const GRANT_KEYS: &[&str] = &[
    "id",
    "to",
    "datasets",
    "actions",
    "purposes",
    "clearance",
    "rows",
    "valid_from",
    "valid_until",
    "quota",
];
const SUBJECT_KEYS: &[&str] = &["node", "department", "region", "level", "levels"];

/// Parses grant files together: ids unique across them; purposes checked against the declared
/// vocabulary (or [`DEFAULT_PURPOSES`]); datasets, if `known` is given, checked against it.
pub fn parse_grants(files: &[(&str, &str)], known: Option<&[&str]>) -> Result<GrantSet, Diagnostics> {
    let mut diags = Vec::new();
    let mut docs = Vec::new();
    let mut vocabulary = BTreeSet::new();
    // First pass: vocabularies, so a purpose declared in one file may be used in another.
    for (file, text) in files {
        let mut src = Source::new(file, text);
        if let Some(doc) = src.parse() {
            let root = Table::root(&doc);
            for (p, span) in root.str_list(&mut src, "purposes") {
                match p.parse::<Purpose>() {
                    Ok(p) => {
                        vocabulary.insert(p);
                    }
                    Err(e) => src.error(span, e.to_string()),
                }
            }
        }
        diags.extend(src.into_diagnostics());
        docs.push((file, text));
    }
    if vocabulary.is_empty() {
        vocabulary = DEFAULT_PURPOSES.iter().filter_map(|p| p.parse().ok()).collect();
    }
    let vocab: Vec<&str> = vocabulary.iter().map(Purpose::as_str).collect();
    let mut grants: Vec<Grant> = Vec::new();
    for (file, text) in docs {
        let mut src = Source::new(file, text);
        let Some(doc) = src.parse() else { continue };
        let root = Table::root(&doc);
        root.deny_unknown(&mut src, ROOT_KEYS);
        for t in root.tables(&mut src, "grant") {
            let start = t.get("id").map_or_else(|| t.span(), |v| v.span());
            let here = src.position(start.start);
            if let Some(g) = grant(&mut src, &t, &vocab, known, here) {
                if let Some(first) = grants.iter().find(|h| h.id == g.id) {
                    src.error(start, format!("grant id `{}` is already used at {}", g.id, first.source));
                    continue;
                }
                grants.push(g);
            }
        }
        diags.extend(src.into_diagnostics());
    }
    if diags.is_empty() {
        Ok(GrantSet { grants, purposes: vocabulary })
    } else {
        Err(Diagnostics(diags))
    }
}

fn grant(
    src: &mut Source<'_>,
    t: &Table<'_, '_>,
    vocab: &[&str],
    known: Option<&[&str]>,
    source: String,
) -> Option<Grant> {
    t.deny_unknown(src, GRANT_KEYS);
    let id = t.str(src, "id").map(|(s, _)| s.to_owned());
    let to = subject(src, t);
    let datasets = datasets(src, t, known);
    let actions = actions(src, t);
    let purposes = purposes(src, t, vocab);
    let clearance = match t.opt_int(src, "clearance") {
        Some((n, span)) => match Grade::new(n) {
            Ok(g) => Some(g),
            Err(_) => {
                src.error(span, format!("clearance {n} is not a grade: use 1 (public) to 4 (core)"));
                None
            }
        },
        None => {
            src.error(t.span(), "missing required key `clearance` in `grant` (1..4)");
            None
        }
    };
    let rows = rows(src, t);
    let valid_from = instant(src, t, "valid_from", false);
    let valid_until = instant(src, t, "valid_until", true);
    if let (Some(Some(f)), Some(Some(u))) = (valid_from, valid_until) {
        if u <= f {
            src.error(t.key_span("valid_until"), "`valid_until` must be after `valid_from`");
            return None;
        }
    }
    let quota = match t.opt_int(src, "quota") {
        Some((n, span)) if n <= 0 => {
            src.error(span, "`quota` must be a positive number of records per day (omit it for no quota)");
            None
        }
        Some((n, _)) => Some(Some(n as u64)),
        None => Some(None),
    };
    Some(Grant {
        id: id?,
        to: to?,
        datasets: datasets?,
        actions: actions?,
        purposes: purposes?,
        clearance: clearance?,
        rows: rows?,
        valid_from: valid_from?,
        valid_until: valid_until?,
        quota: quota?,
        source,
    })
}

fn subject(src: &mut Source<'_>, t: &Table<'_, '_>) -> Option<Subject> {
    let Some(v) = t.get("to") else {
        src.error(
            t.span(),
            "missing required key `to` in `grant` (a node id, \"*\", or { department, region, level(s) })",
        );
        return None;
    };
    match v.get_ref() {
        DeValue::String(s) if s.as_ref() == "*" => Some(Subject::default()),
        DeValue::String(s) => match s.parse::<NodeId>() {
            Ok(n) => Some(Subject { node: Some(n), ..Subject::default() }),
            Err(e) => {
                src.error(
                    v.span(),
                    format!("`to`: {e} (or use a table such as {{ department = \"police\" }})"),
                );
                None
            }
        },
        DeValue::Table(_) => {
            let s = t.opt_table(src, "to")?;
            s.deny_unknown(src, SUBJECT_KEYS);
            let node = s.opt_parse::<NodeId>(src, "node");
            let department = s.opt_str(src, "department").and_then(|(d, span)| {
                let ok = format!("{d}@x").parse::<NodeId>().is_ok();
                if !ok {
                    src.error(span, format!("department {d:?} must be [a-z0-9-]+"));
                }
                ok.then(|| d.to_owned())
            });
            let region = s.opt_parse::<Region>(src, "region");
            let levels = levels(src, &s);
            if s.get("node").is_some() && s.entries().count() > 1 {
                src.error(v.span(), "`to.node` names one node; do not combine it with other parts");
                return None;
            }
            Some(Subject { node, department, region, levels: levels? })
        }
        other => {
            src.error(
                v.span(),
                format!("`to` must be a node id, \"*\" or a table, found {}", other.type_str()),
            );
            None
        }
    }
}

fn levels(src: &mut Source<'_>, s: &Table<'_, '_>) -> Option<Option<(Level, Level)>> {
    let level = |src: &mut Source<'_>, n: i64, span: Range<usize>| {
        let l = u8::try_from(n).ok().and_then(Level::new);
        if l.is_none() {
            src.error(span, format!("level {n} is not 1 (city) to 4 (village/community)"));
        }
        l
    };
    if let Some((n, span)) = s.opt_int(src, "level") {
        let l = level(src, n, span)?;
        return Some(Some((l, l)));
    }
    let Some(v) = s.get("levels") else { return Some(None) };
    let items: Vec<(i64, Range<usize>)> = match v.get_ref().as_array() {
        Some(a) => a
            .iter()
            .filter_map(|i| match i.get_ref() {
                DeValue::Integer(n) => n.as_str().parse::<i64>().ok().map(|n| (n, i.span())),
                _ => None,
            })
            .collect(),
        None => Vec::new(),
    };
    if items.len() != 2 {
        src.error(v.span(), "`levels` must be [lowest, highest], e.g. [2, 3]");
        return None;
    }
    let lo = level(src, items[0].0, items[0].1.clone())?;
    let hi = level(src, items[1].0, items[1].1.clone())?;
    if lo > hi {
        src.error(v.span(), "`levels` must be [lowest, highest]");
        return None;
    }
    Some(Some((lo, hi)))
}

fn datasets(
    src: &mut Source<'_>,
    t: &Table<'_, '_>,
    known: Option<&[&str]>,
) -> Option<Option<Vec<DatasetId>>> {
    let list = t.str_list(src, "datasets");
    if list.is_empty() {
        src.error(
            t.key_span("datasets"),
            "a grant needs `datasets` (ids, or [\"*\"] for all of this node's)",
        );
        return None;
    }
    if list.iter().any(|(d, _)| *d == "*") {
        return Some(None);
    }
    let mut out = Vec::new();
    for (d, span) in list {
        match d.parse::<DatasetId>() {
            Ok(id) => {
                if let Some(known) = known {
                    if !known.contains(&d) {
                        let hint =
                            closest(d, known).map(|b| format!(", did you mean `{b}`?")).unwrap_or_default();
                        src.error(span, format!("no dataset `{d}` in this node's catalog{hint}"));
                        continue;
                    }
                }
                out.push(id);
            }
            Err(e) => src.error(span, e.to_string()),
        }
    }
    Some(Some(out))
}

fn actions(src: &mut Source<'_>, t: &Table<'_, '_>) -> Option<Vec<Action>> {
    let list = t.str_list(src, "actions");
    if list.is_empty() {
        return Some(vec![Action::Read]);
    }
    let mut out = Vec::new();
    for (a, span) in list {
        match a {
            "read" => out.push(Action::Read),
            "subscribe" => out.push(Action::Subscribe),
            "refer" => out.push(Action::Refer),
            other => src.error(span, format!("unknown action {other:?} (expected read, subscribe or refer)")),
        }
    }
    Some(out)
}

fn purposes(src: &mut Source<'_>, t: &Table<'_, '_>, vocab: &[&str]) -> Option<Vec<Purpose>> {
    let list = t.str_list(src, "purposes");
    if list.is_empty() {
        src.error(t.key_span("purposes"), format!("a grant needs `purposes`, from: {}", vocab.join(", ")));
        return None;
    }
    let mut out = Vec::new();
    for (p, span) in list {
        if !vocab.contains(&p) {
            let hint = closest(p, vocab)
                .map(|b| format!(", did you mean {b:?}?"))
                .unwrap_or_else(|| format!(" (the federation's purposes: {})", vocab.join(", ")));
            src.error(span, format!("unknown purpose {p:?}{hint}"));
            continue;
        }
        if let Ok(p) = p.parse() {
            out.push(p);
        }
    }
    Some(out)
}

fn rows(src: &mut Source<'_>, t: &Table<'_, '_>) -> Option<Rows> {
    match t.opt_str(src, "rows") {
        None | Some(("own", _)) => Some(Rows::Own),
        Some(("all", _)) => Some(Rows::All),
        Some((r, span)) => match r.parse::<Region>() {
            Ok(r) => Some(Rows::Within(r)),
            Err(_) => {
                src.error(span, format!("`rows` must be \"own\", \"all\" or a region path such as \"wuxi.liangxi\" (got {r:?})"));
                None
            }
        },
    }
}

/// A TOML date or datetime as Unix seconds. Dates and local datetimes are China Standard Time;
/// a `valid_until` date means the end of that day.
fn instant(src: &mut Source<'_>, t: &Table<'_, '_>, key: &str, end_of_day: bool) -> Option<Option<i64>> {
    let Some(v) = t.get(key) else { return Some(None) };
    let DeValue::Datetime(dt) = v.get_ref() else {
        src.error(v.span(), format!("`{key}` must be a TOML date such as 2027-06-30 (not a string)"));
        return None;
    };
    let Some(date) = dt.date else {
        src.error(v.span(), format!("`{key}` needs a date"));
        return None;
    };
    let (y, m, d) = (i64::from(date.year), u32::from(date.month), u32::from(date.day));
    if !is_valid_date(y, m, d) {
        src.error(v.span(), format!("`{key}`: {y}-{m:02}-{d:02} is not a calendar date"));
        return None;
    }
    let mut secs = days_from_civil(y, m, d) * 86_400;
    match (dt.time, end_of_day) {
        (Some(tm), _) => {
            secs += i64::from(tm.hour) * 3600 + i64::from(tm.minute) * 60 + i64::from(tm.second.unwrap_or(0))
        }
        (None, true) => secs += 86_400,
        (None, false) => {}
    }
    let offset = match dt.offset {
        Some(toml::value::Offset::Z) => 0,
        Some(toml::value::Offset::Custom { minutes }) => i64::from(minutes) * 60,
        None => CST_OFFSET_SECS,
    };
    Some(Some(secs - offset))
}
