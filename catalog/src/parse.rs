//! Catalog files (TOML) into a validated [`Catalog`], with every problem located.

use std::collections::HashMap;
use std::ops::Range;

use toml::de::DeValue;

use crate::ids::{DatasetId, Grade, Level, NodeId};
use crate::model::{
    Catalog, Dataset, Field, FieldType, Generalize, OpenAttr, PiiKind, Rule, Sharing, UpdateFrequency,
    DEFAULT_REDACT_TOKEN,
};
use crate::toml_reader::{Diagnostic, Diagnostics, Source, Table};

const ROOT_KEYS: &[&str] = &["dataset"];
const DATASET_KEYS: &[&str] = &[
    "id",
    "title",
    "description",
    "owner",
    "steward",
    "update",
    "sharing",
    "open",
    "classification",
    "grade",
    "jurisdiction",
    "primary_key",
    "keywords",
    "fields",
];
const FIELD_KEYS: &[&str] =
    &["name", "type", "classification", "grade", "pii", "rule", "nullable", "description"];
const RULE_KEYS: &[&str] = &["op", "keep_first", "keep_last", "to", "width", "level", "token"];
const RULE_OPS: &[&str] = &[
    "mask",
    "mask-name",
    "mask-card",
    "mask-email",
    "hash",
    "pseudonym",
    "generalize",
    "redact",
    "drop",
    "scan",
];
const GENERALIZE_TO: &[&str] = &["month", "year", "age-band", "region", "address"];

/// Parses one catalog file.
pub fn parse(file: &str, text: &str) -> Result<Catalog, Diagnostics> {
    parse_files(&[(file, text)])
}

/// Parses several catalog files as one catalog: dataset ids must be unique across them, and
/// together they must define at least one dataset. Every problem in every file is reported.
pub fn parse_files(files: &[(&str, &str)]) -> Result<Catalog, Diagnostics> {
    let mut all = Vec::new();
    let mut diags = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    for (file, text) in files {
        let mut src = Source::new(file, text);
        for (ds, id_span) in parse_file(&mut src) {
            let here = src.position(id_span.start);
            match seen.get(ds.id.as_str()) {
                Some(first) => {
                    src.error(id_span, format!("dataset id `{}` is already defined at {first}", ds.id))
                }
                None => {
                    seen.insert(ds.id.to_string(), here);
                    all.push(ds);
                }
            }
        }
        diags.extend(src.into_diagnostics());
    }
    if diags.is_empty() && all.is_empty() {
        let file = files.first().map_or("<no files>", |f| f.0);
        diags.push(Diagnostic {
            file: file.to_owned(),
            line: 1,
            col: 1,
            message: "empty catalog: no [[dataset]] defined".into(),
        });
    }
    if diags.is_empty() {
        Ok(Catalog::new(all))
    } else {
        Err(Diagnostics(diags))
    }
}

fn parse_file(src: &mut Source<'_>) -> Vec<(Dataset, Range<usize>)> {
    let Some(doc) = src.parse() else { return Vec::new() };
    let root = Table::root(&doc);
    root.deny_unknown(src, ROOT_KEYS);
    root.tables(src, "dataset").iter().filter_map(|t| dataset(src, t)).collect()
}

fn text(t: &Table<'_, '_>, src: &mut Source<'_>, key: &str, required: bool) -> Option<String> {
    let got = if required { t.str(src, key) } else { t.opt_str(src, key) };
    match got {
        Some((s, span)) if required && s.trim().is_empty() => {
            src.error(span, format!("`{key}` must not be empty"));
            None
        }
        Some((s, _)) => Some(s.to_owned()),
        None => (!required).then(String::new),
    }
}

fn grade(t: &Table<'_, '_>, src: &mut Source<'_>, key: &str) -> Option<(Grade, Range<usize>)> {
    let (n, span) = t.opt_int(src, key)?;
    match Grade::new(n) {
        Ok(g) => Some((g, span)),
        Err(e) => {
            src.error(span, e.to_string());
            None
        }
    }
}

fn classification(t: &Table<'_, '_>, src: &mut Source<'_>) -> Option<String> {
    let (s, span) = t.opt_str(src, "classification")?;
    let ok = !s.is_empty()
        && s.split('.').all(|seg| {
            !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    if !ok {
        src.error(
            span,
            format!("classification {s:?} must be dotted lowercase words, e.g. personal.contact"),
        );
    }
    Some(s.to_owned())
}

fn dataset(src: &mut Source<'_>, t: &Table<'_, '_>) -> Option<(Dataset, Range<usize>)> {
    t.deny_unknown(src, DATASET_KEYS);
    let id_span = t.get("id").map(|v| v.span()).unwrap_or_else(|| t.span());
    let id = t.parse::<DatasetId>(src, "id");
    let title = text(t, src, "title", true);
    let description = text(t, src, "description", false);
    let owner = t.parse::<NodeId>(src, "owner");
    let steward = text(t, src, "steward", true);
    let update = t.parse::<UpdateFrequency>(src, "update");
    let sharing = t.parse::<Sharing>(src, "sharing");
    let open = t.opt_parse::<OpenAttr>(src, "open").unwrap_or(OpenAttr::Closed);
    let class = classification(t, src);
    if class.is_none() && t.get("classification").is_none() {
        src.error(t.span(), "missing required key `classification` in `dataset`");
    }
    let declared_grade = grade(t, src, "grade");
    let keywords = t.str_list(src, "keywords").into_iter().map(|(s, _)| s.to_owned()).collect();

    let field_tables = t.tables(src, "fields");
    if field_tables.is_empty() && t.get("fields").is_none() {
        src.error(t.span(), "dataset has no fields: add [[dataset.fields]] tables");
    }
    let dataset_class = class.clone().unwrap_or_default();
    let mut fields: Vec<Field> = Vec::new();
    let mut field_spans = Vec::new();
    for ft in &field_tables {
        if let Some(f) = field(src, ft, &dataset_class) {
            if fields.iter().any(|g| g.name == f.name) {
                src.error(ft.key_span("name"), format!("duplicate field `{}`", f.name));
                continue;
            }
            field_spans.push(ft.get("grade").map_or_else(|| ft.span(), |v| v.span()));
            fields.push(f);
        }
    }

    let top = fields.iter().max_by_key(|f| f.grade);
    let grade = match (declared_grade, top) {
        (Some((g, span)), Some(top)) if g < top.grade => {
            src.error(
                span,
                format!(
                    "dataset grade {g} is below the grade {} of field `{}` (highest wins, GB/T 43697)",
                    top.grade, top.name
                ),
            );
            None
        }
        (Some((g, _)), _) => Some(g),
        (None, Some(top)) => Some(top.grade),
        (None, None) => Some(Grade::PUBLIC),
    };

    // Fields that were declared but failed their own checks already have an error; naming one
    // as a key must not add a second for the same mistake.
    let declared: Vec<&str> = field_tables
        .iter()
        .filter_map(|ft| match ft.get("name").map(|v| v.get_ref()) {
            Some(DeValue::String(s)) => Some(&**s),
            _ => None,
        })
        .collect();
    let jurisdiction = key_field(t, src, "jurisdiction", &fields, &declared, Some(FieldType::Region));
    let primary_key = key_field(t, src, "primary_key", &fields, &declared, None);

    Some((
        Dataset {
            id: id?,
            title: title?,
            description: description?,
            owner: owner?,
            steward: steward?,
            update: update?,
            sharing: sharing?,
            open,
            classification: class?,
            grade: grade?,
            jurisdiction: jurisdiction?,
            primary_key: primary_key?,
            keywords,
            fields,
        },
        id_span,
    ))
}

/// A dataset key that names one of its fields (`jurisdiction`, `primary_key`).
fn key_field(
    t: &Table<'_, '_>,
    src: &mut Source<'_>,
    key: &str,
    fields: &[Field],
    declared: &[&str],
    want: Option<FieldType>,
) -> Option<String> {
    let (name, span) = t.str(src, key)?;
    let Some(f) = fields.iter().find(|f| f.name == name) else {
        if declared.contains(&name) {
            return None;
        }
        let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
        let hint = crate::toml_reader::closest(name, &names)
            .map(|b| format!(", did you mean `{b}`?"))
            .unwrap_or_default();
        src.error(span, format!("`{key}` names field `{name}`, which this dataset does not have{hint}"));
        return None;
    };
    if let Some(ty) = want {
        if f.ty != ty {
            src.error(span, format!("`{key}` field `{name}` must be of type {ty}, not {}", f.ty));
            return None;
        }
    }
    if f.nullable {
        src.error(span, format!("`{key}` field `{name}` must not be nullable"));
        return None;
    }
    Some(name.to_owned())
}

fn valid_field_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_lowercase())
        && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
        && s.len() <= 64
}

fn default_classification(pii: PiiKind, dataset_class: &str) -> String {
    match pii {
        PiiKind::PersonName | PiiKind::ResidentId => "personal.identity",
        PiiKind::Mobile | PiiKind::Landline | PiiKind::Email => "personal.contact",
        PiiKind::Address => "personal.location",
        PiiKind::BankCard => "personal.financial",
        PiiKind::Uscc => "enterprise",
        PiiKind::FreeText => "case.detail",
        PiiKind::None => dataset_class,
    }
    .to_owned()
}

fn field(src: &mut Source<'_>, t: &Table<'_, '_>, dataset_class: &str) -> Option<Field> {
    t.deny_unknown(src, FIELD_KEYS);
    let name = match t.str(src, "name") {
        Some((n, span)) if !valid_field_name(n) => {
            src.error(span, format!("field name {n:?} must be [a-z][a-z0-9_]* (at most 64)"));
            None
        }
        other => other.map(|(n, _)| n.to_owned()),
    };
    let ty = t.parse::<FieldType>(src, "type");
    let pii = t.opt_parse::<PiiKind>(src, "pii").unwrap_or(PiiKind::None);
    let grade = grade(t, src, "grade");
    if grade.is_none() && t.get("grade").is_none() {
        src.error(
            t.span(),
            format!("missing required key `grade` in field `{}`", name.as_deref().unwrap_or("?")),
        );
    }
    if let (Some((g, span)), true) = (&grade, pii != PiiKind::None) {
        if *g == Grade::PUBLIC {
            src.error(
                span.clone(),
                format!("a {pii} field cannot be grade 1 (public): personal information is at least grade 2"),
            );
        }
    }
    let class = classification(t, src).unwrap_or_else(|| default_classification(pii, dataset_class));
    let nullable = t.opt_bool(src, "nullable").unwrap_or(false);
    let description = text(t, src, "description", false).unwrap_or_default();
    let rule = match t.get("rule") {
        None => Some(Rule::default_for(pii)),
        Some(v) => rule(src, t, v.span()),
    };
    let (name, ty, (grade, _), rule) = (name?, ty?, grade?, rule?);
    if let Some(why) = rule.misfit(ty, pii) {
        let span = t.get("rule").map_or_else(|| t.key_span("pii"), |v| v.span());
        src.error(span, format!("field `{name}`: {why}"));
        return None;
    }
    Some(Field { name, ty, classification: class, grade, pii, rule, nullable, description })
}

fn rule(src: &mut Source<'_>, field: &Table<'_, '_>, span: Range<usize>) -> Option<Rule> {
    let v = field.get("rule")?;
    match v.get_ref() {
        DeValue::String(s) => simple_rule(src, s, span),
        DeValue::Table(_) => {
            let t = field.opt_table(src, "rule")?;
            rule_table(src, &t)
        }
        other => {
            src.error(
                span,
                format!("`rule` must be an operator name or a table, found {}", other.type_str()),
            );
            None
        }
    }
}

fn unknown_op(src: &mut Source<'_>, op: &str, span: Range<usize>) {
    let hint = crate::toml_reader::closest(op, RULE_OPS)
        .map(|b| format!(", did you mean {b:?}?"))
        .unwrap_or_else(|| format!(" (expected one of: {})", RULE_OPS.join(", ")));
    src.error(span, format!("unknown rule {op:?}{hint}"));
}

fn simple_rule(src: &mut Source<'_>, op: &str, span: Range<usize>) -> Option<Rule> {
    Some(match op {
        "mask-name" => Rule::MaskName,
        "mask-card" => Rule::MaskCard,
        "mask-email" => Rule::MaskEmail,
        "hash" => Rule::Hash,
        "pseudonym" => Rule::Pseudonym,
        "redact" => Rule::Redact { token: DEFAULT_REDACT_TOKEN.into() },
        "drop" => Rule::Drop,
        "scan" => Rule::Scan,
        "mask" => {
            src.error(
                span,
                "`mask` needs parameters: rule = { op = \"mask\", keep_first = 3, keep_last = 4 }",
            );
            return None;
        }
        "generalize" => {
            src.error(span, "`generalize` needs a target: rule = { op = \"generalize\", to = \"month\" }");
            return None;
        }
        other => {
            unknown_op(src, other, span);
            return None;
        }
    })
}

fn small(t: &Table<'_, '_>, src: &mut Source<'_>, key: &str, max: i64) -> Option<Option<u8>> {
    match t.opt_int(src, key) {
        None => Some(None),
        Some((n, span)) if !(0..=max).contains(&n) => {
            src.error(span, format!("`rule.{key}` must be between 0 and {max}"));
            None
        }
        Some((n, _)) => Some(Some(n as u8)),
    }
}

fn rule_table(src: &mut Source<'_>, t: &Table<'_, '_>) -> Option<Rule> {
    t.deny_unknown(src, RULE_KEYS);
    let (op, op_span) = t.str(src, "op")?;
    match op {
        "mask" => {
            let first = small(t, src, "keep_first", 32)?;
            let last = small(t, src, "keep_last", 32)?;
            if first.is_none() && last.is_none() {
                src.error(
                    op_span,
                    "`mask` keeps nothing visible; give keep_first and/or keep_last, or use \"redact\"",
                );
                return None;
            }
            Some(Rule::Mask { keep_first: first.unwrap_or(0), keep_last: last.unwrap_or(0) })
        }
        "redact" => {
            let token =
                t.opt_str(src, "token").map_or(DEFAULT_REDACT_TOKEN.to_owned(), |(s, _)| s.to_owned());
            Some(Rule::Redact { token })
        }
        "generalize" => {
            let (to, to_span) = t.str(src, "to")?;
            let g = match to {
                "month" => Generalize::Month,
                "year" => Generalize::Year,
                "address" => Generalize::Address,
                "age-band" => Generalize::AgeBand {
                    width: small(t, src, "width", 50)?.filter(|w| *w > 0).unwrap_or(10),
                },
                "region" => {
                    let n = small(t, src, "level", 4)?.unwrap_or(2);
                    let Some(level) = Level::new(n) else {
                        src.error(to_span, "`rule.level` must be 1 to 4");
                        return None;
                    };
                    Generalize::Region { level }
                }
                other => {
                    let hint = crate::toml_reader::closest(other, GENERALIZE_TO)
                        .map(|b| format!(", did you mean {b:?}?"))
                        .unwrap_or_else(|| format!(" (expected one of: {})", GENERALIZE_TO.join(", ")));
                    src.error(to_span, format!("cannot generalize to {other:?}{hint}"));
                    return None;
                }
            };
            Some(Rule::Generalize(g))
        }
        other => simple_rule(src, other, op_span),
    }
}
