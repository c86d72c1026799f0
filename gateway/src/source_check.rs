//! Does a data source fit the catalog? Pure checks: the caller fetches a table's column list
//! (SQLite `pragma_table_info`, PostgreSQL `information_schema.columns`) and gets back every
//! mismatch, so a field with no column is found before it is ever read, never sent on as
//! something else.

use fedgate_catalog::{Catalog, Dataset, Diagnostic, FieldType, Sharing};
use thiserror::Error;

use crate::config::Config;

/// A column as the database declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Its name.
    pub name: String,
    /// Its declared type as the database reports it (`TEXT`, `integer`, `character varying`,
    /// or empty for an untyped SQLite column or view expression).
    pub declared: String,
}

/// Which database's type names and name rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite: column types are affinities, names compare case-insensitively.
    Sqlite,
    /// PostgreSQL: `information_schema` type names, names compare exactly (fedgate quotes them).
    Postgres,
}

/// One way a source does not fit its dataset.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Mismatch {
    /// The table or view does not exist (or has no columns).
    #[error("table `{table}` does not exist")]
    NoTable {
        /// The configured table.
        table: String,
    },
    /// A catalog field has no column of its name.
    #[error("field `{field}` has no column in table `{table}`{hint}")]
    NoColumn {
        /// The field.
        field: String,
        /// The table.
        table: String,
        /// A close column name, if one exists.
        hint: String,
    },
    /// A column's declared type cannot hold the field's values.
    #[error("field `{field}` is {ty}, but its column is declared {declared:?}; expected {expected}")]
    WrongType {
        /// The field.
        field: String,
        /// The field's catalog type.
        ty: FieldType,
        /// The column's declared type.
        declared: String,
        /// What would fit.
        expected: &'static str,
    },
}

/// Every mismatch between `ds` and the columns of `table`; empty if and only if the source fits.
/// Extra columns are fine: only catalog fields are ever read.
pub fn check(ds: &Dataset, table: &str, dialect: Dialect, columns: &[Column]) -> Vec<Mismatch> {
    if columns.is_empty() {
        return vec![Mismatch::NoTable { table: table.to_owned() }];
    }
    let same = |a: &str, b: &str| match dialect {
        Dialect::Sqlite => a.eq_ignore_ascii_case(b),
        Dialect::Postgres => a == b,
    };
    let mut out = Vec::new();
    for f in &ds.fields {
        let Some(col) = columns.iter().find(|c| same(&c.name, &f.name)) else {
            let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
            let hint = fedgate_catalog::toml_reader::closest(&f.name, &names)
                .map(|b| format!(" (did you mean column `{b}`?)"))
                .unwrap_or_default();
            out.push(Mismatch::NoColumn { field: f.name.clone(), table: table.to_owned(), hint });
            continue;
        };
        if !fits(dialect, f.ty, &col.declared) {
            out.push(Mismatch::WrongType {
                field: f.name.clone(),
                ty: f.ty,
                declared: col.declared.clone(),
                expected: expected(dialect, f.ty),
            });
        }
    }
    out
}

/// What a cursor column's values are, which decides how the poller compares and reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CursorKind {
    /// An integer (a sequence, a version counter, unix time).
    Integer,
    /// Text compared as text: SQLite's ISO-8601 date-times (TEXT, DATETIME).
    Text,
    /// A PostgreSQL `date` or `timestamp` type, named as `information_schema` does: values
    /// travel as text and are compared after a cast back to this type.
    PgTime(String),
}

/// Why a source's cursor column cannot be polled.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CursorMismatch {
    /// The table has no column of that name.
    #[error("cursor column `{column}` is not a column of table `{table}`{hint}")]
    NoColumn {
        /// The configured column.
        column: String,
        /// The table.
        table: String,
        /// A close column name, if one exists.
        hint: String,
    },
    /// The column's type does not order changes (a float, a blob, a boolean, free text).
    #[error("cursor column `{column}` is declared {declared:?}, which does not grow monotonically with changes; expected {expected}")]
    NotMonotonic {
        /// The column.
        column: String,
        /// Its declared type.
        declared: String,
        /// What would do.
        expected: &'static str,
    },
}

/// How the poller reads cursor column `column` of `table`, or why it cannot. Only types whose
/// order is exact and that a writer can make grow qualify: integers and date-times (SQLite has
/// no date-time type, so TEXT and DATETIME qualify there, holding ISO-8601 text).
pub fn cursor_kind(
    table: &str,
    column: &str,
    dialect: Dialect,
    columns: &[Column],
) -> Result<CursorKind, CursorMismatch> {
    let same = |a: &str| match dialect {
        Dialect::Sqlite => a.eq_ignore_ascii_case(column),
        Dialect::Postgres => a == column,
    };
    let Some(col) = columns.iter().find(|c| same(&c.name)) else {
        let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        let hint = fedgate_catalog::toml_reader::closest(column, &names)
            .map(|b| format!(" (did you mean `{b}`?)"))
            .unwrap_or_default();
        return Err(CursorMismatch::NoColumn { column: column.to_owned(), table: table.to_owned(), hint });
    };
    let d = col.declared.to_ascii_lowercase();
    let kind = match dialect {
        Dialect::Sqlite => match affinity(&col.declared) {
            _ if d.trim().is_empty() => None,
            Affinity::Integer => Some(CursorKind::Integer),
            Affinity::Text | Affinity::Numeric => Some(CursorKind::Text),
            Affinity::Real | Affinity::Blob => None,
        },
        Dialect::Postgres if PG_INT.contains(&d.as_str()) => Some(CursorKind::Integer),
        // Only these exact names: the poller writes the type into a cast.
        Dialect::Postgres if PG_TIME.contains(&d.as_str()) => Some(CursorKind::PgTime(d)),
        Dialect::Postgres => None,
    };
    kind.ok_or_else(|| CursorMismatch::NotMonotonic {
        column: column.to_owned(),
        declared: col.declared.clone(),
        expected: match dialect {
            Dialect::Sqlite => "INTEGER, or TEXT/DATETIME holding ISO-8601 date-times",
            Dialect::Postgres => "smallint, integer, bigint, date or a timestamp type",
        },
    })
}

/// SQLite's column affinity for a declared type (the five rules of "Datatypes In SQLite", 3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Affinity {
    Integer,
    Text,
    Blob,
    Real,
    Numeric,
}

fn affinity(declared: &str) -> Affinity {
    let d = declared.to_ascii_uppercase();
    if d.contains("INT") {
        Affinity::Integer
    } else if ["CHAR", "CLOB", "TEXT"].iter().any(|w| d.contains(w)) {
        Affinity::Text
    } else if d.contains("BLOB") || d.trim().is_empty() {
        Affinity::Blob
    } else if ["REAL", "FLOA", "DOUB"].iter().any(|w| d.contains(w)) {
        Affinity::Real
    } else {
        Affinity::Numeric
    }
}

const PG_TEXT: &[&str] = &["text", "character varying", "character", "varchar", "char", "name", "citext"];
const PG_INT: &[&str] = &["smallint", "integer", "bigint"];
const PG_TIME: &[&str] = &["date", "timestamp with time zone", "timestamp without time zone"];

/// True if and only if a column declared `declared` holds values of type `ty` without loss.
fn fits(dialect: Dialect, ty: FieldType, declared: &str) -> bool {
    match dialect {
        Dialect::Sqlite => {
            // An untyped column (a view over an expression) declares nothing to check; its values
            // are still checked one by one as they are read.
            if declared.trim().is_empty() {
                return true;
            }
            let a = affinity(declared);
            match ty {
                FieldType::Integer | FieldType::Bool => matches!(a, Affinity::Integer | Affinity::Numeric),
                FieldType::Decimal => a != Affinity::Blob,
                // DATE and DATETIME columns get NUMERIC affinity but keep ISO text as text.
                FieldType::Date | FieldType::Datetime => matches!(a, Affinity::Text | Affinity::Numeric),
                _ => a == Affinity::Text,
            }
        }
        Dialect::Postgres => {
            let d = declared.to_ascii_lowercase();
            let text = PG_TEXT.contains(&d.as_str());
            match ty {
                FieldType::Integer => PG_INT.contains(&d.as_str()),
                FieldType::Bool => d == "boolean",
                FieldType::Decimal => {
                    text || PG_INT.contains(&d.as_str())
                        || ["numeric", "real", "double precision"].contains(&d.as_str())
                }
                FieldType::Date => text || d == "date",
                FieldType::Datetime => text || d.starts_with("timestamp"),
                _ => text,
            }
        }
    }
}

fn expected(dialect: Dialect, ty: FieldType) -> &'static str {
    match (dialect, ty) {
        (Dialect::Sqlite, FieldType::Integer | FieldType::Bool) => "INTEGER (or NUMERIC)",
        (Dialect::Sqlite, FieldType::Decimal) => "TEXT, NUMERIC, REAL or INTEGER",
        (Dialect::Sqlite, FieldType::Date | FieldType::Datetime) => "TEXT (or DATE/DATETIME)",
        (Dialect::Sqlite, _) => "TEXT",
        (Dialect::Postgres, FieldType::Integer) => "smallint, integer or bigint",
        (Dialect::Postgres, FieldType::Bool) => "boolean",
        (Dialect::Postgres, FieldType::Decimal) => "numeric, a float, an integer or a text type",
        (Dialect::Postgres, FieldType::Date) => "date or a text type",
        (Dialect::Postgres, FieldType::Datetime) => "timestamp or a text type",
        (Dialect::Postgres, _) => "text, varchar or char",
    }
}

/// What the config's `[[sources]]` say against what the catalog holds, checked without touching
/// any database: a source for a dataset the catalog does not have, and a dataset other nodes may
/// ask for (sharing type not `none`) with no source. Every problem, located in `gateway.toml`.
pub fn config_vs_catalog(cfg: &Config, catalog: &Catalog) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let ids: Vec<&str> = catalog.datasets().iter().map(|d| d.id.as_str()).collect();
    for s in &cfg.sources {
        if catalog.get(&s.dataset).is_none() {
            let hint = match fedgate_catalog::toml_reader::closest(&s.dataset, &ids) {
                Some(b) => format!(", did you mean `{b}`?"),
                None if ids.is_empty() => " (the catalog is empty)".to_owned(),
                None => format!(" (it has: {})", ids.join(", ")),
            };
            out.push(cfg.diagnostic(
                s.dataset_at,
                format!(
                    "[[sources]] entry for dataset `{}`, which the catalog does not have{hint}",
                    s.dataset
                ),
            ));
        }
    }
    for d in catalog.datasets() {
        if d.sharing != Sharing::None && !cfg.sources.iter().any(|s| s.dataset == d.id.as_str()) {
            out.push(cfg.diagnostic(
                cfg.catalog_at,
                format!(
                    "dataset `{}` is shared ({}) but has no [[sources]] entry; add one, or set its sharing to \"none\"",
                    d.id,
                    d.sharing.as_str()
                ),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CATALOG: &str = r#"
[[dataset]]
id = "cases"
title = "Cases"
owner = "police@wuxi.liangxi"
steward = "s"
update = "daily"
sharing = "conditional"
classification = "case.detail"
jurisdiction = "region"
primary_key = "case_id"

  [[dataset.fields]]
  name = "case_id"
  type = "string"
  grade = 1

  [[dataset.fields]]
  name = "region"
  type = "region"
  grade = 1

  [[dataset.fields]]
  name = "age"
  type = "integer"
  grade = 2

  [[dataset.fields]]
  name = "opened"
  type = "date"
  grade = 1
"#;

    fn ds() -> Dataset {
        fedgate_catalog::parse("c.toml", CATALOG).unwrap().datasets()[0].clone()
    }

    fn cols(spec: &[(&str, &str)]) -> Vec<Column> {
        spec.iter().map(|(n, t)| Column { name: (*n).into(), declared: (*t).into() }).collect()
    }

    #[test]
    fn a_fitting_table_has_no_mismatch() {
        let c = cols(&[
            ("case_id", "TEXT"),
            ("REGION", "varchar(64)"),
            ("age", "INTEGER"),
            ("opened", "DATE"),
            ("extra", "BLOB"),
        ]);
        assert_eq!(check(&ds(), "cases", Dialect::Sqlite, &c), vec![]);
        let c = cols(&[
            ("case_id", "text"),
            ("region", "character varying"),
            ("age", "bigint"),
            ("opened", "date"),
        ]);
        assert_eq!(check(&ds(), "cases", Dialect::Postgres, &c), vec![]);
    }

    #[test]
    fn a_missing_table_is_one_problem() {
        assert_eq!(
            check(&ds(), "cases", Dialect::Sqlite, &[]),
            vec![Mismatch::NoTable { table: "cases".into() }]
        );
    }

    #[test]
    fn every_missing_column_and_wrong_type_is_named() {
        let c = cols(&[("case_id", "INTEGER"), ("regoin", "TEXT"), ("age", "TEXT")]);
        let got: Vec<String> =
            check(&ds(), "cases", Dialect::Sqlite, &c).iter().map(|m| m.to_string()).collect();
        assert_eq!(
            got,
            vec![
                "field `case_id` is string, but its column is declared \"INTEGER\"; expected TEXT",
                "field `region` has no column in table `cases` (did you mean column `regoin`?)",
                "field `age` is integer, but its column is declared \"TEXT\"; expected INTEGER (or NUMERIC)",
                "field `opened` has no column in table `cases`",
            ]
        );
    }

    #[test]
    fn postgres_names_are_exact_and_types_strict() {
        let c = cols(&[
            ("case_id", "text"),
            ("Region", "text"),
            ("age", "numeric"),
            ("opened", "timestamp without time zone"),
        ]);
        let got = check(&ds(), "cases", Dialect::Postgres, &c);
        assert!(matches!(&got[0], Mismatch::NoColumn { field, .. } if field == "region"), "{got:?}");
        assert!(matches!(&got[1], Mismatch::WrongType { field, .. } if field == "age"), "{got:?}");
        assert!(matches!(&got[2], Mismatch::WrongType { field, .. } if field == "opened"), "{got:?}");
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn sqlite_affinity_follows_sqlite_rules() {
        assert_eq!(affinity("BIGINT"), Affinity::Integer);
        assert_eq!(affinity("VARCHAR(10)"), Affinity::Text);
        assert_eq!(affinity("DOUBLE PRECISION"), Affinity::Real);
        assert_eq!(affinity(""), Affinity::Blob);
        assert_eq!(affinity("DECIMAL(10,5)"), Affinity::Numeric);
        // "POINT" contains "INT": SQLite's rule 1 wins, and so does ours.
        assert_eq!(affinity("FLOATING POINT"), Affinity::Integer);
    }

    #[test]
    fn a_cursor_column_must_exist_and_grow_monotonically() {
        let sq = cols(&[("seq", "INTEGER"), ("updated_at", "DATETIME"), ("score", "REAL"), ("raw", "")]);
        assert_eq!(cursor_kind("t", "SEQ", Dialect::Sqlite, &sq), Ok(CursorKind::Integer));
        assert_eq!(cursor_kind("t", "updated_at", Dialect::Sqlite, &sq), Ok(CursorKind::Text));
        let e = cursor_kind("t", "updatd_at", Dialect::Sqlite, &sq).unwrap_err().to_string();
        assert_eq!(e, "cursor column `updatd_at` is not a column of table `t` (did you mean `updated_at`?)");
        for c in ["score", "raw"] {
            let e = cursor_kind("t", c, Dialect::Sqlite, &sq).unwrap_err().to_string();
            assert!(e.contains("does not grow monotonically"), "{c}: {e}");
        }
        let pg = cols(&[
            ("seq", "bigint"),
            ("at", "timestamp with time zone"),
            ("note", "text"),
            ("flag", "boolean"),
        ]);
        assert_eq!(cursor_kind("t", "seq", Dialect::Postgres, &pg), Ok(CursorKind::Integer));
        assert_eq!(
            cursor_kind("t", "at", Dialect::Postgres, &pg),
            Ok(CursorKind::PgTime("timestamp with time zone".into()))
        );
        for c in ["note", "flag"] {
            let e = cursor_kind("t", c, Dialect::Postgres, &pg).unwrap_err().to_string();
            assert!(e.contains("expected smallint, integer, bigint, date or a timestamp type"), "{c}: {e}");
        }
        assert!(matches!(
            cursor_kind("t", "SEQ", Dialect::Postgres, &pg),
            Err(CursorMismatch::NoColumn { .. })
        ));
    }

    fn config(sources: &str) -> Config {
        let text = format!(
            "node = \"police@wuxi.liangxi\"\nlisten = \"127.0.0.1:0\"\napi = \"127.0.0.1:0\"\ncatalog = [\"c.toml\"]\n{sources}\n[tls]\ncert = \"a\"\nkey = \"b\"\ntrust = \"c\"\n"
        );
        crate::config::parse(std::path::Path::new("gateway.toml"), &text).unwrap()
    }

    #[test]
    fn sources_must_match_the_catalog_both_ways() {
        let catalog = fedgate_catalog::parse("c.toml", CATALOG).unwrap();
        let cfg = config("[[sources]]\ndataset = \"cses\"\nsqlite = \"x.db\"\ntable = \"t\"\n");
        let got: Vec<String> = config_vs_catalog(&cfg, &catalog).iter().map(|d| d.to_string()).collect();
        assert_eq!(
            got,
            vec![
                "gateway.toml:6:11: [[sources]] entry for dataset `cses`, which the catalog does not have, did you mean `cases`?",
                "gateway.toml:4:11: dataset `cases` is shared (conditional) but has no [[sources]] entry; add one, or set its sharing to \"none\"",
            ]
        );
        let cfg = config("[[sources]]\ndataset = \"cases\"\nsqlite = \"x.db\"\ntable = \"t\"\n");
        assert_eq!(config_vs_catalog(&cfg, &catalog), vec![]);
        let none = fedgate_catalog::parse("c.toml", &CATALOG.replace("conditional", "none")).unwrap();
        assert_eq!(config_vs_catalog(&config(""), &none), vec![]);
    }
}
