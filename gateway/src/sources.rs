//! The node's sources against its catalog, checked at start, at every reload, and again for a
//! PostgreSQL server that was down: a source that has not passed the check is never read.
//!
//! The decisions are [`crate::source_check`]'s; this module only fetches column lists and keeps
//! which sources are ready.

use std::collections::HashMap;
use std::sync::RwLock;

use fedgate_catalog::{Catalog, Dataset, Diagnostic};

use crate::config::{Config, SourceConfig, SourceKind};
use crate::source::{self, SourceError};
use crate::source_check::{self, Dialect};

/// The outcome of checking every source of a config against a catalog.
#[derive(Debug, Default)]
pub struct Checked {
    /// Configuration errors, located in `gateway.toml`: the node must not start (or reload) with
    /// them.
    pub problems: Vec<Diagnostic>,
    /// Sources whose server could not be reached: (dataset, why). They stay unchecked, and
    /// refused, until a later check passes.
    pub unreachable: Vec<(String, String)>,
}

/// How one source's check ended.
#[derive(Debug)]
pub enum Outcome {
    /// It fits the catalog.
    Fits,
    /// It does not: every problem, located.
    Problems(Vec<Diagnostic>),
    /// Its server could not be reached; nothing is known.
    Unreachable(String),
}

/// Checks every source of `cfg` against `catalog`: the config's entries against the catalog,
/// then each database's tables and columns. Every problem is collected.
pub async fn check_all(cfg: &Config, catalog: &Catalog) -> Checked {
    let mut out = Checked { problems: source_check::config_vs_catalog(cfg, catalog), ..Checked::default() };
    for src in &cfg.sources {
        let Some(ds) = catalog.get(&src.dataset) else { continue };
        match check_one(cfg, src, ds).await {
            Outcome::Fits => {}
            Outcome::Problems(p) => out.problems.extend(p),
            Outcome::Unreachable(why) => out.unreachable.push((src.dataset.clone(), why)),
        }
    }
    out
}

/// Checks one source against its dataset.
pub async fn check_one(cfg: &Config, src: &SourceConfig, ds: &Dataset) -> Outcome {
    let (columns, dialect, place) = match &src.kind {
        SourceKind::Sqlite(path) => {
            let (p, table) = (path.clone(), src.table.clone());
            let got = tokio::task::spawn_blocking(move || source::sqlite_columns(&p, &table))
                .await
                .unwrap_or_else(|e| Err(SourceError::Unavailable(format!("column check stopped: {e}"))));
            (got, Dialect::Sqlite, path.display().to_string())
        }
        SourceKind::Postgres(conn) => {
            (source::postgres_columns(conn, &src.table).await, Dialect::Postgres, "PostgreSQL".to_owned())
        }
    };
    let columns = match (columns, dialect) {
        (Ok(c), _) => c,
        // A database server can be down for a while; a SQLite file is either there or a mistake.
        (Err(SourceError::Unavailable(why)), Dialect::Postgres) => return Outcome::Unreachable(why),
        (Err(e), _) => {
            let e = match e {
                SourceError::Unavailable(s) | SourceError::Query(s) => s,
            };
            return Outcome::Problems(vec![
                cfg.diagnostic(src.kind_at, format!("dataset `{}`: {e}", src.dataset))
            ]);
        }
    };
    let found = source_check::check(ds, &src.table, dialect, &columns);
    let mut problems: Vec<Diagnostic> = found
        .iter()
        .map(|m| cfg.diagnostic(src.table_at, format!("dataset `{}`: {m} ({place})", src.dataset)))
        .collect();
    if let Some(c) = &src.cursor {
        if let Err(m) = source_check::cursor_kind(&src.table, &c.column, dialect, &columns) {
            problems.push(cfg.diagnostic(c.at, format!("dataset `{}`: {m} ({place})", src.dataset)));
        }
    }
    if problems.is_empty() {
        Outcome::Fits
    } else {
        Outcome::Problems(problems)
    }
}

/// Which sources may be read: those not listed here. A source is listed, with why, while its
/// server has not answered the check.
#[derive(Debug, Default)]
pub struct SourceGate {
    unchecked: RwLock<HashMap<String, String>>,
}

impl SourceGate {
    /// Replaces the unchecked set after a full check.
    pub fn reset(&self, unreachable: &[(String, String)]) {
        *self.unchecked.write().unwrap_or_else(|p| p.into_inner()) = unreachable.iter().cloned().collect();
    }

    /// Why `dataset`'s source may not be read now, if it may not.
    pub fn unchecked(&self, dataset: &str) -> Option<String> {
        self.unchecked.read().unwrap_or_else(|p| p.into_inner()).get(dataset).cloned()
    }

    /// Datasets whose source still waits for a check.
    pub fn pending(&self) -> Vec<String> {
        self.unchecked.read().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect()
    }

    /// Records a check that ended: ready if it passed, still unchecked (with why) if not.
    pub fn record(&self, dataset: &str, outcome: &Outcome) {
        let mut u = self.unchecked.write().unwrap_or_else(|p| p.into_inner());
        match outcome {
            Outcome::Fits => {
                u.remove(dataset);
            }
            Outcome::Unreachable(why) => {
                u.insert(dataset.to_owned(), why.clone());
            }
            Outcome::Problems(p) => {
                let why = p.iter().map(|d| d.message.clone()).collect::<Vec<_>>().join("; ");
                u.insert(dataset.to_owned(), why);
            }
        }
    }
}
