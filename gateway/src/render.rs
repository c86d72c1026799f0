//! Renderings for people and their tools: aligned tables (display width by `unicode-width`),
//! CSV (the `csv` crate), record printers for `fedgate query`, `policy explain`.

use std::borrow::Cow;

use unicode_width::UnicodeWidthStr;

use fedgate_catalog::{Catalog, Generalize, NodeId, Rule};
use fedgate_policy::{Decision, NearMiss, Obligation, Request, RowScope};

/// Renders rows as aligned columns under a header. Widths are display columns (`unicode-width`:
/// CJK counts two), and control characters in values are shown escaped (`\n`, `\t`, `\u{1b}`),
/// so a value can neither break a row across lines nor send terminal escape sequences.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let header: Vec<Cow<'_, str>> = header.iter().map(|h| one_line(h)).collect();
    let rows: Vec<Vec<Cow<'_, str>>> = rows.iter().map(|r| r.iter().map(|c| one_line(c)).collect()).collect();
    let mut w: Vec<usize> = header.iter().map(|h| h.width()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate().take(w.len()) {
            w[i] = w[i].max(c.width());
        }
    }
    let line = |cells: &[Cow<'_, str>], out: &mut String| {
        for (i, c) in cells.iter().enumerate() {
            out.push_str(c);
            if i + 1 < cells.len() {
                let pad = w.get(i).map_or(0, |w| w.saturating_sub(c.width()));
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push('\n');
    };
    let mut out = String::new();
    line(&header, &mut out);
    for r in &rows {
        line(r, &mut out);
    }
    out
}

/// `s` with every control character written as an escape, borrowed when there is none.
pub fn one_line(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&c.escape_unicode().to_string()),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// CSV for people's spreadsheets: RFC 4180 quoting and CRLF line ends (the `csv` crate), an
/// optional UTF-8 byte-order mark (spreadsheet programs read UTF-8 only with one), and formula
/// cells defused (see [`formula_safe`]).
pub struct CsvOut<W: std::io::Write> {
    w: csv::Writer<W>,
}

impl<W: std::io::Write> CsvOut<W> {
    /// A writer onto `out`, starting with a UTF-8 BOM if `bom`.
    pub fn new(mut out: W, bom: bool) -> std::io::Result<Self> {
        if bom {
            out.write_all("\u{feff}".as_bytes())?;
        }
        let w = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(out);
        Ok(CsvOut { w })
    }

    /// Writes one row (the header is a row too).
    pub fn row<'a>(&mut self, cells: impl IntoIterator<Item = &'a str>) -> std::io::Result<()> {
        let cells: Vec<Cow<'a, str>> = cells.into_iter().map(formula_safe).collect();
        self.w.write_record(cells.iter().map(|c| c.as_bytes())).map_err(std::io::Error::other)
    }

    /// Flushes and returns the inner writer.
    pub fn finish(self) -> std::io::Result<W> {
        self.w.into_inner().map_err(|e| e.into_error())
    }
}

/// A cell a spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`, or a tab or
/// carriage return that some programs skip before one) gets a leading `'`, which spreadsheets
/// show as text (OWASP's CSV injection advice). Plain signed numbers such as `-3.5` stay
/// numbers: they cannot call anything.
pub fn formula_safe(cell: &str) -> Cow<'_, str> {
    let risky = cell.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if risky && !is_signed_number(cell) {
        Cow::Owned(format!("'{cell}"))
    } else {
        Cow::Borrowed(cell)
    }
}

fn is_signed_number(s: &str) -> bool {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
        && digits.parse::<f64>().is_ok()
}

/// How `fedgate query` prints records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RecordFormat {
    /// One JSON object per record, keyed by field name.
    Jsonl,
    /// RFC 4180 CSV with a header line; cells a spreadsheet would run as formulas are prefixed
    /// with `'`.
    Csv,
    /// Aligned columns (buffers the result).
    Table,
}

/// Records as they arrive, printed in one [`RecordFormat`].
pub enum Records<W: std::io::Write> {
    /// Lines passed through as the API sent them.
    Jsonl(W),
    /// CSV, and whether the header is out.
    Csv(Box<CsvOut<W>>, bool),
    /// Header and rows kept until the end, to align the columns.
    Table(W, Vec<String>, Vec<Vec<String>>),
}

impl<W: std::io::Write> Records<W> {
    /// A printer onto `out`; `bom` starts CSV with a UTF-8 byte-order mark.
    pub fn new(format: RecordFormat, out: W, bom: bool) -> std::io::Result<Self> {
        Ok(match format {
            RecordFormat::Jsonl => Records::Jsonl(out),
            RecordFormat::Csv => Records::Csv(Box::new(CsvOut::new(out, bom)?), false),
            RecordFormat::Table => Records::Table(out, Vec::new(), Vec::new()),
        })
    }

    /// Prints (or keeps) one record; `line` is the record as the API sent it.
    pub fn record(
        &mut self,
        line: &str,
        rec: &serde_json::Map<String, serde_json::Value>,
    ) -> std::io::Result<()> {
        match self {
            Records::Jsonl(out) => writeln!(out, "{line}"),
            Records::Csv(csv, header) => {
                if !*header {
                    csv.row(rec.keys().map(String::as_str))?;
                    *header = true;
                }
                let cells: Vec<String> = rec.values().map(cell_text).collect();
                csv.row(cells.iter().map(String::as_str))
            }
            Records::Table(_, header, rows) => {
                if header.is_empty() {
                    *header = rec.keys().cloned().collect();
                }
                rows.push(rec.values().map(cell_text).collect());
                Ok(())
            }
        }
    }

    /// Prints what is kept and flushes; `footer` goes under a table.
    pub fn finish(self, footer: &str) -> std::io::Result<()> {
        let mut out = match self {
            Records::Jsonl(out) => out,
            Records::Csv(csv, _) => csv.finish()?,
            Records::Table(mut out, header, rows) => {
                let h: Vec<&str> = header.iter().map(String::as_str).collect();
                write!(out, "{}", table(&h, &rows))?;
                writeln!(out, "{footer}")?;
                out
            }
        };
        out.flush()
    }

    /// Flushes what was printed so far (after a failure): a table prints nothing.
    pub fn abandon(self) -> std::io::Result<()> {
        match self {
            Records::Jsonl(mut out) | Records::Table(mut out, ..) => out.flush(),
            Records::Csv(csv, _) => csv.finish().map(drop),
        }
    }
}

/// A JSON value as a cell: strings bare, null empty, the rest as JSON.
fn cell_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        o => o.to_string(),
    }
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

/// [`json_line`] for a delivery whose last field is the objection marker column
/// ([`crate::governance::objection::MARKER_FIELD`]): the marker is written as the JSON object it
/// stands for (or null), not as the text it travels as.
pub fn json_line_marked(keys: &[String], rec: &[fedgate_catalog::Value], out: &mut Vec<u8>) {
    let (Some((_, fields)), Some((marker, values))) = (keys.split_last(), rec.split_last()) else {
        return json_line(keys, rec, out);
    };
    json_line(fields, values, out);
    out.truncate(out.len() - 2);
    if !fields.is_empty() {
        out.push(b',');
    }
    let m = crate::governance::objection::MARKER_FIELD;
    out.extend_from_slice(format!("{}:", serde_json::Value::String(m.into())).as_bytes());
    let _ = serde_json::to_writer(&mut *out, &crate::governance::objection::field_json(m, marker));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cjk_columns_line_up_by_display_width() {
        let rows = vec![
            vec!["张三丰".to_owned(), "梁溪区".to_owned(), "x".to_owned()],
            vec!["ab".to_owned(), "ｆｕｌｌ".to_owned(), "y".to_owned()],
        ];
        let t = table(&["NAME", "DISTRICT", "K"], &rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        // The third column starts at the same display column on every line.
        let col = |l: &str| l[..l.rfind(' ').unwrap() + 1].width();
        assert_eq!(col(lines[0]), col(lines[1]), "{t}");
        assert_eq!(col(lines[1]), col(lines[2]), "{t}");
        assert_eq!(col(lines[0]), 6 + 2 + 8 + 2, "{t}");
    }

    #[test]
    fn newlines_and_escapes_in_values_stay_on_their_row() {
        let rows = vec![vec!["line one\nline two\r\n".to_owned(), "\x1b[31mred\tcell".to_owned()]];
        let t = table(&["A", "B"], &rows);
        assert_eq!(t.lines().count(), 2, "{t:?}");
        assert!(t.contains("line one\\nline two\\r\\n"), "{t:?}");
        assert!(t.contains("\\u{1b}[31mred\\tcell"), "{t:?}");
        assert!(!t.contains('\x1b'));
        assert!(matches!(one_line("plain 中文"), Cow::Borrowed(_)));
    }

    fn csv(rows: &[&[&str]], bom: bool) -> String {
        let mut out = CsvOut::new(Vec::new(), bom).unwrap();
        for r in rows {
            out.row(r.iter().copied()).unwrap();
        }
        String::from_utf8(out.finish().unwrap()).unwrap()
    }

    #[test]
    fn csv_quotes_by_rfc_4180() {
        let text = csv(&[&["id", "note"], &["1", "say \"hi\", then\nleave"], &["2", ""]], false);
        assert_eq!(text, "id,note\r\n1,\"say \"\"hi\"\", then\nleave\"\r\n2,\r\n");
        // And it reads back to the same cells.
        let mut r = csv::ReaderBuilder::new().from_reader(text.as_bytes());
        let back: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
        assert_eq!(&back[0][1], "say \"hi\", then\nleave");
    }

    #[test]
    fn csv_defuses_formulas_but_keeps_signed_numbers() {
        for (cell, want) in [
            ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"),
            ("+1+cmd|' /C calc'!A0", "'+1+cmd|' /C calc'!A0"),
            ("-2+3", "'-2+3"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\t=1", "'\t=1"),
            ("-", "'-"),
            ("-3.5", "-3.5"),
            ("+86", "+86"),
            ("a=b", "a=b"),
            ("张=三", "张=三"),
        ] {
            assert_eq!(formula_safe(cell), want, "{cell:?}");
        }
        let text = csv(&[&["=1+1"]], false);
        assert_eq!(text, "'=1+1\r\n");
    }

    #[test]
    fn csv_bom_only_when_asked() {
        assert!(csv(&[&["a"]], true).starts_with('\u{feff}'));
        assert!(!csv(&[&["a"]], false).starts_with('\u{feff}'));
    }

    fn print(format: RecordFormat) -> (String, String) {
        let rec: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(r#"{"name":"王五","n":3,"none":null,"f":"=1"}"#).unwrap();
        let line = serde_json::Value::Object(rec.clone()).to_string();
        let mut buf = Vec::new();
        let mut r = Records::new(format, &mut buf, false).unwrap();
        r.record(&line, &rec).unwrap();
        r.finish("(1 record)").unwrap();
        (String::from_utf8(buf).unwrap(), line)
    }

    #[test]
    fn a_marked_record_carries_its_marker_as_an_object() {
        use fedgate_catalog::Value;
        let keys = json_keys(&["id".into(), "@objection".into()]);
        let marker = r#"{"id":"ab","field":"mobile","status":"open","open":1}"#;
        let mut out = Vec::new();
        json_line_marked(&keys, &[Value::Int(1), Value::Text(marker.into())], &mut out);
        json_line_marked(&keys, &[Value::Int(2), Value::Null], &mut out);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines[0]["@objection"]["field"], "mobile");
        assert_eq!(lines[0]["id"], 1);
        assert!(lines[1]["@objection"].is_null());
        assert_eq!(text.lines().count(), 2);
    }

    #[test]
    fn records_print_in_each_format() {
        let (jsonl, line) = print(RecordFormat::Jsonl);
        assert_eq!(jsonl, format!("{line}\n"));
        assert_eq!(print(RecordFormat::Csv).0, "name,n,none,f\r\n王五,3,,'=1\r\n");
        assert_eq!(print(RecordFormat::Table).0, "name  n  none  f\n王五  3        =1\n(1 record)\n");
    }
}
