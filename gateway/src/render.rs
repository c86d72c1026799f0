//! Text renderings for people: aligned tables.

use fedgate_catalog::Catalog;

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
