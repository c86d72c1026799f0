//! Text renderings for people: aligned tables.

use fedgate_catalog::{Catalog, Generalize, NodeId, Rule};
use fedgate_policy::{Decision, NearMiss, Obligation, Request, RowScope};

/// Renders rows as aligned columns under a header; widths count characters, CJK counted double.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let width = |s: &str| s.chars().map(|c| if is_wide(c) { 2 } else { 1 }).sum::<usize>();
    let mut w: Vec<usize> = header.iter().map(|h| width(h)).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(w.len()) {
            w[i] = w[i].max(width(c));
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            out.push_str(c);
            if i + 1 < cells.len() {
                out.push_str(&" ".repeat(w[i] - width(c) + 2));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

fn is_wide(c: char) -> bool {
    matches!(c as u32, 0x1100..=0x115F | 0x2E80..=0xA4CF | 0xAC00..=0xD7A3 | 0xF900..=0xFAFF | 0xFE30..=0xFE4F | 0xFF00..=0xFF60 | 0xFFE0..=0xFFE6)
}

/// A catalog as a table: one line per dataset, then its fields with grades.
pub fn catalog_table(c: &Catalog) -> String {
    if c.datasets().is_empty() {
        return "no datasets\n".into();
    }
    let rows: Vec<Vec<String>> = c
        .datasets()
        .iter()
        .map(|d| {
            vec![
                d.id.to_string(),
                d.title.clone(),
                d.owner.to_string(),
                d.grade.to_string(),
                d.sharing.to_string(),
                d.update.to_string(),
                d.fields.iter().map(|f| format!("{}:{}", f.name, f.grade)).collect::<Vec<_>>().join(" "),
            ]
        })
        .collect();
    table(&["ID", "TITLE", "OWNER", "GRADE", "SHARING", "UPDATE", "FIELDS (name:grade)"], &rows)
}

/// Near misses shown as text; the JSON form lists them all.
const NEAR_MISSES_SHOWN: usize = 10;

/// `policy explain --format json`: decision, reason, fields, the grant's terms, and on a denial
/// the grants that almost matched (`near_misses`).
pub fn explain_json(d: &Decision, near: &[NearMiss]) -> String {
    let mut fields = serde_json::Map::new();
    let mut out = serde_json::Map::new();
    out.insert("decision".into(), (if d.is_allow() { "allow" } else { "deny" }).into());
    out.insert("reason".into(), d.reason().into());
    if let Decision::Allow(a) = d {
        for (name, ob) in &a.fields {
            fields.insert(name.clone(), ob.name().into());
        }
        out.insert("grant".into(), a.grant.clone().map_or(serde_json::Value::Null, Into::into));
        out.insert("clearance".into(), a.clearance.get().into());
        out.insert("rows".into(), rows(&a.rows).into());
        out.insert("quota_per_day".into(), a.quota.map_or(serde_json::Value::Null, Into::into));
        let details: serde_json::Map<String, serde_json::Value> =
            a.fields.iter().map(|(n, o)| (n.clone(), obligation_detail(o).into())).collect();
        out.insert("field_rules".into(), details.into());
    }
    out.insert("fields".into(), fields.into());
    let near: Vec<serde_json::Value> = near
        .iter()
        .map(|n| {
            let why: Vec<serde_json::Value> = n
                .misses
                .iter()
                .map(|m| {
                    let mut v = serde_json::to_value(m).unwrap_or_default();
                    if let Some(o) = v.as_object_mut() {
                        o.insert("message".into(), m.to_string().into());
                    }
                    v
                })
                .collect();
            serde_json::json!({ "grant": n.grant, "source": n.source, "why": why })
        })
        .collect();
    out.insert("near_misses".into(), near.into());
    serde_json::Value::Object(out).to_string()
}

fn rows(r: &RowScope) -> String {
    match r {
        RowScope::All => "all".into(),
        RowScope::Within(reg) => format!("within {reg}"),
    }
}

/// An obligation with its parameters, for people.
pub fn obligation_detail(o: &Obligation) -> String {
    match o {
        Obligation::Clear => "clear".into(),
        Obligation::Drop => "drop".into(),
        Obligation::Apply(rule) => match rule {
            Rule::Mask { keep_first, keep_last } => {
                format!("mask (keep first {keep_first}, last {keep_last})")
            }
            Rule::Redact { token } => format!("redact (as {token:?})"),
            Rule::Generalize(g) => match g {
                Generalize::Month => "generalize to month".into(),
                Generalize::Year => "generalize to year".into(),
                Generalize::AgeBand { width } => format!("generalize to {width}-year age bands"),
                Generalize::Region { level } => format!("generalize to region level {}", level.get()),
                Generalize::Address => "generalize address to district".into(),
            },
            Rule::Hash => "hash (HMAC-SHA256, keyed per consumer)".into(),
            Rule::Pseudonym => "pseudonym (valid-looking resident ID, keyed per consumer)".into(),
            Rule::Scan => "scan free text, mask PII inline".into(),
            other => other.name().into(),
        },
    }
}

/// `policy explain` for people; on a denial, the grants that almost matched and why not.
pub fn explain_text(peer: &NodeId, req: &Request, d: &Decision, near: &[NearMiss]) -> String {
    let mut out = format!(
        "{} {} `{}` for {}:\n  decision: {}\n  reason:   {}\n",
        peer,
        req.action,
        req.dataset,
        req.purpose,
        if d.is_allow() { "ALLOW" } else { "DENY" },
        d.reason()
    );
    if let Decision::Allow(a) = d {
        out.push_str(&format!("  rows:     {}\n", rows(&a.rows)));
        out.push_str(&format!(
            "  quota:    {}\n",
            a.quota.map_or("none".into(), |q| format!("{q} records/day"))
        ));
        out.push_str("  fields:\n");
        let body: Vec<Vec<String>> =
            a.fields.iter().map(|(n, o)| vec![format!("    {n}"), obligation_detail(o)]).collect();
        out.push_str(&table(&["    FIELD", "SENT AS"], &body));
    } else {
        out.push_str(&near_misses_text(near));
    }
    out
}

fn near_misses_text(near: &[NearMiss]) -> String {
    if near.is_empty() {
        return "  near misses: none (no grant comes within two differences of this request)\n".into();
    }
    let mut out = String::from("  near misses:\n");
    for n in near.iter().take(NEAR_MISSES_SHOWN) {
        let why: Vec<String> = n.misses.iter().map(ToString::to_string).collect();
        out.push_str(&format!("    grant {} ({}): {}\n", n.grant, n.source, why.join("; ")));
    }
    if near.len() > NEAR_MISSES_SHOWN {
        out.push_str(&format!(
            "    … and {} more (--format json lists them all)\n",
            near.len() - NEAR_MISSES_SHOWN
        ));
    }
    out
}

/// JSON-escaped `"name":` prefixes for each field, computed once per transfer.
pub fn json_keys(fields: &[String]) -> Vec<String> {
    fields.iter().map(|f| format!("{}:", serde_json::Value::String(f.clone()))).collect()
}

/// Appends one record as a JSON object line (`{"field": value, ...}\n`), keys in field order.
/// Written directly rather than through a `serde_json::Map`, which cost a key clone and a value
/// conversion per field.
pub fn json_line(keys: &[String], rec: &[fedgate_catalog::Value], out: &mut Vec<u8>) {
    out.push(b'{');
    for (i, (k, v)) in keys.iter().zip(rec).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(k.as_bytes());
        // Writing a Value into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, v);
    }
    out.extend_from_slice(b"}\n");
}

/// One certificate as JSON, for `fedgate pki show --format json`: the fields of the text form,
/// with times in RFC 3339 and whole days left before it expires (negative once expired) at
/// `now`.
pub fn cert_json(info: &fedgate_certs::inspect::CertInfo, now: time::OffsetDateTime) -> serde_json::Value {
    use fedgate_certs::inspect::hex_colon;
    use fedgate_certs::names::Named;
    let rfc3339 = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| t.to_string())
    };
    let mut v = serde_json::json!({
        "subject": info.subject,
        "issuer": info.issuer,
        "ca": info.is_ca,
        "not_before": rfc3339(info.not_before),
        "not_after": rfc3339(info.not_after),
        "days_left": (info.not_after - now).whole_days(),
        "serial": hex_colon(&info.serial),
        "sha256": hex_colon(&info.fingerprint),
    });
    let name = match &info.named {
        Named::Node(n) => serde_json::json!({
            "kind": "node", "node_id": n.to_string(), "department": n.department(),
            "region": n.region().to_string(), "level": n.level(),
        }),
        Named::Region(r) => serde_json::json!({ "kind": "ca", "region": r.to_string(), "level": r.level() }),
        Named::Nothing => serde_json::json!({ "kind": "none" }),
        Named::Ambiguous(why) => serde_json::json!({ "kind": "invalid", "why": why }),
    };
    if let (Some(v), serde_json::Value::Object(extra)) = (v.as_object_mut(), name) {
        v.extend(extra);
    }
    v
}
