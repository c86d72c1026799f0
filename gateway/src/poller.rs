//! Cursor-column polling: a source whose `[[sources]]` entry names `cursor = "COLUMN"` is read
//! every `poll_ms` for rows whose cursor value is past the last one read, and those rows become
//! insert/update events in the event log ([`EventLog::publish_polled`]), the poll cursor moving
//! in the same transaction, so a gateway killed at any moment neither repeats nor skips a change.
//!
//! The rule for equal values: each poll reads rows with cursor `>=` the last value, and skips the
//! rows at exactly that value whose record (by digest) was already published. A row committed
//! late with the same cursor value as rows already read is therefore still published; a row
//! committed late with a *smaller* value than one already read is not (the writer must assign
//! cursor values in commit order; README, "Subscriptions"). The first poll of a dataset
//! publishes nothing: it starts the cursor at the newest rows, since subscribers get changes and
//! a snapshot is what a query is for.
//!
//! [`advance`] and [`baseline`] are the pure core; the rest reads SQLite or PostgreSQL.

use std::sync::Arc;

use fedgate_catalog::{Catalog, Dataset, Record, Value};
use fedgate_policy::RowScope;
use thiserror::Error;

use crate::config::{CursorConfig, SourceConfig, SourceKind};
use crate::events::{EventError, EventLog, PollCursor};
use crate::source::{self, SourceError, SourceQuery};
use crate::source_check::{self, CursorKind, Dialect};
use crate::state::Shared;

/// Rows read past the cursor per page; a poll reads pages until one is not full.
const PAGE: usize = 1000;

/// Why a poll failed (it is retried at the next interval).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PollError {
    /// The source could not be read.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The event log could not be read or written.
    #[error(transparent)]
    Events(#[from] EventError),
    /// The cursor column is not (any more) fit for polling.
    #[error("{0}")]
    Cursor(#[from] source_check::CursorMismatch),
    /// The catalog in force has no such dataset (a reload removed it).
    #[error("the catalog has no dataset `{0}`")]
    NoDataset(String),
    /// The blocking task doing the work stopped.
    #[error("poll task stopped: {0}")]
    Stopped(String),
}

fn digest(rec: &Record) -> [u8; 32] {
    let mut bytes = Vec::new();
    // Writing CBOR into a Vec cannot fail for a record.
    let _ = ciborium::into_writer(rec, &mut bytes);
    let d = ring::digest::digest(&ring::digest::SHA256, &bytes);
    let mut out = [0; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The cursor a first poll starts at: the largest value (`rows_at_max` are the rows holding it),
/// with those rows counted as published, so only later changes become events.
pub fn baseline(rows_at_max: &[(Value, Record)]) -> PollCursor {
    match rows_at_max.first() {
        None => PollCursor { value: Value::Null, at_value: Vec::new() },
        Some((v, _)) => {
            PollCursor { value: v.clone(), at_value: rows_at_max.iter().map(|(_, r)| digest(r)).collect() }
        }
    }
}

/// Which of `rows` to publish and where the cursor stands after them. `rows` were read with
/// cursor `>=` `from.value`, in cursor order; those at `from.value` already published are left
/// out.
pub fn advance(from: &PollCursor, rows: Vec<(Value, Record)>) -> (Vec<Record>, PollCursor) {
    let mut next = from.clone();
    let mut out = Vec::new();
    for (v, rec) in rows {
        let d = digest(&rec);
        if v == next.value && next.at_value.contains(&d) {
            continue;
        }
        if v != next.value {
            next.value = v;
            next.at_value.clear();
        }
        next.at_value.push(d);
        out.push(rec);
    }
    (out, next)
}

/// Which rows one read asks for.
#[derive(Debug, Clone, Copy)]
enum Rows<'a> {
    /// Rows whose cursor equals the value.
    At(&'a Value),
    /// The first `PAGE` rows past the value (every row with a cursor if it is `Null`).
    After(&'a Value),
    /// Rows holding the largest cursor value.
    Max,
}

/// What the poller reads: the dataset's fields, then the cursor column.
struct Spec {
    dataset: String,
    query: SourceQuery,
    cursor: String,
    kind: CursorKind,
}

impl Spec {
    fn where_clause(&self, rows: Rows<'_>, ph: &str) -> String {
        let c = source::quote(&self.cursor);
        let t = source::quote(&self.query.table);
        match rows {
            Rows::At(_) => format!(" WHERE {c} = {ph}"),
            Rows::After(Value::Null) => format!(" WHERE {c} IS NOT NULL ORDER BY {c} LIMIT {PAGE}"),
            Rows::After(_) => format!(" WHERE {c} > {ph} ORDER BY {c} LIMIT {PAGE}"),
            Rows::Max => format!(" WHERE {c} = (SELECT MAX({c}) FROM {t})"),
        }
    }
}

/// One page of changes: rows at `from.value`, then past it in cursor order, the last value's rows
/// complete. The flag is true if more pages may follow.
fn page_plan(
    from: &PollCursor,
    mut read: impl FnMut(Rows<'_>) -> Result<Vec<(Value, Record)>, PollError>,
) -> Result<(Vec<(Value, Record)>, bool), PollError> {
    let mut rows = if from.value == Value::Null { Vec::new() } else { read(Rows::At(&from.value))? };
    let mut after = read(Rows::After(&from.value))?;
    let full = after.len() >= PAGE;
    if full {
        // The page may have cut the rows of its last value short: take them all.
        let last = after.last().map(|(v, _)| v.clone()).unwrap_or(Value::Null);
        after.retain(|(v, _)| *v != last);
        after.extend(read(Rows::At(&last))?);
    }
    rows.extend(after);
    Ok((rows, full))
}

fn sqlite_read(
    conn: &rusqlite::Connection,
    spec: &Spec,
    rows: Rows<'_>,
) -> Result<Vec<(Value, Record)>, PollError> {
    let cols: Vec<String> = spec
        .query
        .columns
        .iter()
        .map(|(n, _)| n.as_str())
        .chain([spec.cursor.as_str()])
        .map(source::quote)
        .collect();
    let sql = format!(
        "SELECT {} FROM {}{}",
        cols.join(", "),
        source::quote(&spec.query.table),
        spec.where_clause(rows, "?1")
    );
    let q = |e: rusqlite::Error| SourceError::Query(e.to_string());
    let mut stmt = conn.prepare_cached(&sql).map_err(q)?;
    let param = match rows {
        Rows::At(v) | Rows::After(v) => match v {
            Value::Int(i) => Some(rusqlite::types::Value::Integer(*i)),
            Value::Text(s) => Some(rusqlite::types::Value::Text(s.clone())),
            _ => None,
        },
        Rows::Max => None,
    };
    let mut rs = stmt.query(rusqlite::params_from_iter(param)).map_err(q)?;
    let mut out = Vec::new();
    let n = spec.query.columns.len();
    while let Some(row) = rs.next().map_err(q)? {
        let rec = source::sqlite_record(row, &spec.query.columns)?;
        spec.query.check_nulls(&rec)?;
        let cursor = match row.get_ref(n).map_err(q)? {
            rusqlite::types::ValueRef::Integer(i) => Value::Int(i),
            rusqlite::types::ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
            other => {
                return Err(SourceError::Query(format!(
                    "cursor column `{}` holds {:?}; it must hold integers or ISO-8601 text",
                    spec.cursor,
                    other.data_type()
                ))
                .into())
            }
        };
        out.push((cursor, rec));
    }
    Ok(out)
}

/// The primary key of every row (field `pk` of the dataset).
fn sqlite_keys(conn: &rusqlite::Connection, spec: &Spec, pk: usize) -> Result<Vec<Value>, PollError> {
    let col = spec.query.columns.get(pk).cloned().into_iter().collect::<Vec<_>>();
    let Some((name, _)) = col.first() else { return Ok(Vec::new()) };
    let sql = format!("SELECT {} FROM {}", source::quote(name), source::quote(&spec.query.table));
    let q = |e: rusqlite::Error| SourceError::Query(e.to_string());
    let mut stmt = conn.prepare(&sql).map_err(q)?;
    let mut rs = stmt.query([]).map_err(q)?;
    let mut out = Vec::new();
    while let Some(row) = rs.next().map_err(q)? {
        out.extend(source::sqlite_record(row, &col)?);
    }
    Ok(out)
}

/// Polls a SQLite source until it has no more changes; returns how many events it published.
fn sqlite_poll(events: &EventLog, path: &std::path::Path, spec: &Spec, pk: usize) -> Result<u64, PollError> {
    let conn = source::open_sqlite(path)?;
    let mut published = 0;
    loop {
        // One read transaction per page: its queries see one snapshot of the file.
        let tx = conn.unchecked_transaction().map_err(|e| SourceError::Query(e.to_string()))?;
        let Some(from) = events.poll_cursor(&spec.dataset)? else {
            let rows = sqlite_read(&tx, spec, Rows::Max)?;
            let known = sqlite_keys(&tx, spec, pk)?;
            events.start_polled(&spec.dataset, &known, &baseline(&rows))?;
            return Ok(0);
        };
        let (rows, more) = page_plan(&from, |r| sqlite_read(&tx, spec, r))?;
        drop(tx);
        let (records, next) = advance(&from, rows);
        if next != from {
            events.publish_polled(&spec.dataset, Some(&from), &records, pk, &next, now())?;
        }
        published += records.len() as u64;
        if !more {
            return Ok(published);
        }
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A PostgreSQL connection the poller keeps between polls.
struct Pg {
    client: tokio_postgres::Client,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for Pg {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

async fn pg_connect(conn: &str) -> Result<Pg, PollError> {
    let (client, connection) = tokio_postgres::connect(conn, tokio_postgres::NoTls)
        .await
        .map_err(|e| SourceError::Unavailable(format!("PostgreSQL: {e}")))?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(Pg { client, driver })
}

async fn pg_read(
    tx: &tokio_postgres::Transaction<'_>,
    spec: &Spec,
    rows: Rows<'_>,
) -> Result<Vec<(Value, Record)>, PollError> {
    let c = source::quote(&spec.cursor);
    let (cursor_col, ph) = match &spec.kind {
        CursorKind::Integer => (format!("{c}::int8"), "$1::int8".to_owned()),
        CursorKind::PgTime(ty) => (format!("{c}::text"), format!("CAST($1::text AS {ty})")),
        CursorKind::Text => (format!("{c}::text"), "$1::text".to_owned()),
    };
    let cols: Vec<String> =
        spec.query.columns.iter().map(|(n, t)| source::pg_col(n, *t)).chain([cursor_col]).collect();
    let sql = format!(
        "SELECT {} FROM {}{}",
        cols.join(", "),
        source::quote(&spec.query.table),
        spec.where_clause(rows, &ph)
    );
    let int;
    let text;
    let param: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = match rows {
        Rows::At(Value::Int(i)) | Rows::After(Value::Int(i)) => {
            int = *i;
            vec![&int]
        }
        Rows::At(Value::Text(s)) | Rows::After(Value::Text(s)) => {
            text = s.clone();
            vec![&text]
        }
        _ => vec![],
    };
    let q = |e: tokio_postgres::Error| SourceError::Query(format!("PostgreSQL: {e}"));
    let found = tx.query(&sql, &param).await.map_err(q)?;
    let n = spec.query.columns.len();
    let mut out = Vec::with_capacity(found.len());
    for row in &found {
        let rec = source::pg_record(row, &spec.query.columns)?;
        spec.query.check_nulls(&rec)?;
        let cursor = match spec.kind {
            CursorKind::Integer => Value::Int(row.try_get(n).map_err(q)?),
            _ => Value::Text(row.try_get(n).map_err(q)?),
        };
        out.push((cursor, rec));
    }
    Ok(out)
}

/// The primary key of every row (field `pk` of the dataset).
async fn pg_keys(
    tx: &tokio_postgres::Transaction<'_>,
    spec: &Spec,
    pk: usize,
) -> Result<Vec<Value>, PollError> {
    let col = spec.query.columns.get(pk).cloned().into_iter().collect::<Vec<_>>();
    let Some((name, ty)) = col.first() else { return Ok(Vec::new()) };
    let sql = format!("SELECT {} FROM {}", source::pg_col(name, *ty), source::quote(&spec.query.table));
    let rows = tx.query(&sql, &[]).await.map_err(|e| SourceError::Query(format!("PostgreSQL: {e}")))?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        out.extend(source::pg_record(row, &col)?);
    }
    Ok(out)
}

/// [`page_plan`] against PostgreSQL, in one repeatable-read transaction (one snapshot).
async fn pg_page(
    pg: &mut Pg,
    spec: &Spec,
    from: &PollCursor,
) -> Result<(Vec<(Value, Record)>, bool), PollError> {
    let tx = pg
        .client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(|e| SourceError::Unavailable(format!("PostgreSQL: {e}")))?;
    let mut rows = if from.value == Value::Null {
        Vec::new()
    } else {
        pg_read(&tx, spec, Rows::At(&from.value)).await?
    };
    let mut after = pg_read(&tx, spec, Rows::After(&from.value)).await?;
    let full = after.len() >= PAGE;
    if full {
        let last = after.last().map(|(v, _)| v.clone()).unwrap_or(Value::Null);
        after.retain(|(v, _)| *v != last);
        after.extend(pg_read(&tx, spec, Rows::At(&last)).await?);
    }
    rows.extend(after);
    Ok((rows, full))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, PollError> + Send + 'static,
) -> Result<T, PollError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| PollError::Stopped(e.to_string()))?
}

/// Polls a PostgreSQL source until it has no more changes; returns how many events it published.
async fn pg_poll(events: &Arc<EventLog>, pg: &mut Pg, spec: &Arc<Spec>, pk: usize) -> Result<u64, PollError> {
    let mut published = 0;
    loop {
        let Some(from) = events.poll_cursor(&spec.dataset)? else {
            let tx = pg.client.transaction().await.map_err(|e| SourceError::Unavailable(e.to_string()))?;
            let rows = pg_read(&tx, spec, Rows::Max).await?;
            let known = pg_keys(&tx, spec, pk).await?;
            drop(tx);
            let (events, dataset) = (events.clone(), spec.dataset.clone());
            blocking(move || Ok(events.start_polled(&dataset, &known, &baseline(&rows))?)).await?;
            return Ok(0);
        };
        let (rows, more) = pg_page(pg, spec, &from).await?;
        let (records, next) = advance(&from, rows);
        published += records.len() as u64;
        if next != from {
            let (events, dataset) = (events.clone(), spec.dataset.clone());
            blocking(move || Ok(events.publish_polled(&dataset, Some(&from), &records, pk, &next, now())?))
                .await?;
        }
        if !more {
            return Ok(published);
        }
    }
}

/// The poller's view of `src`: the dataset's fields, the cursor column and how to read it.
async fn spec_of(src: &SourceConfig, c: &CursorConfig, ds: &Dataset) -> Result<Spec, PollError> {
    let (columns, dialect) = match &src.kind {
        SourceKind::Sqlite(path) => {
            let (p, t) = (path.clone(), src.table.clone());
            (blocking(move || Ok(source::sqlite_columns(&p, &t)?)).await?, Dialect::Sqlite)
        }
        SourceKind::Postgres(conn) => (source::postgres_columns(conn, &src.table).await?, Dialect::Postgres),
    };
    let kind = source_check::cursor_kind(&src.table, &c.column, dialect, &columns)?;
    Ok(Spec {
        dataset: src.dataset.clone(),
        query: SourceQuery::new(ds, &src.table, RowScope::All, Vec::new(), None),
        cursor: c.column.clone(),
        kind,
    })
}

/// The poller's view of a source, worked out again when the catalog in force changes.
type Cached = Option<(Arc<Catalog>, Arc<Spec>, usize)>;

/// One poll of `src`: every change since the last, published. `pg` and `cached` are kept across
/// polls, and dropped by the caller after a failure.
async fn poll_once(
    shared: &Shared,
    src: &SourceConfig,
    c: &CursorConfig,
    pg: &mut Option<Pg>,
    cached: &mut Cached,
) -> Result<u64, PollError> {
    let catalog = shared.catalog();
    let (spec, pk) = match cached {
        Some((seen, spec, pk)) if Arc::ptr_eq(seen, &catalog) => (spec.clone(), *pk),
        _ => {
            let ds = catalog.get(&src.dataset).ok_or_else(|| PollError::NoDataset(src.dataset.clone()))?;
            let pk = ds.fields.iter().position(|f| f.name == ds.primary_key).unwrap_or(0);
            let spec = Arc::new(spec_of(src, c, ds).await?);
            *cached = Some((catalog.clone(), spec.clone(), pk));
            (spec, pk)
        }
    };
    match &src.kind {
        SourceKind::Sqlite(path) => {
            let (events, path) = (shared.events.clone(), path.clone());
            blocking(move || sqlite_poll(&events, &path, &spec, pk)).await
        }
        SourceKind::Postgres(conn) => {
            if pg.as_ref().is_none_or(|p| p.client.is_closed()) {
                *pg = Some(pg_connect(conn).await?);
            }
            let Some(p) = pg.as_mut() else { return Ok(0) };
            pg_poll(&shared.events, p, &spec, pk).await
        }
    }
}

/// Polls every source with a cursor column at its interval, for as long as the node runs. The
/// polls run inside this one task, so stopping it stops them all.
pub async fn poll_sources(shared: Arc<Shared>) {
    let polls = shared.cfg.sources.iter().filter_map(|src| {
        let c = src.cursor.clone()?;
        Some(poll_source(shared.clone(), src.clone(), c))
    });
    futures::future::join_all(polls).await;
}

async fn poll_source(shared: Arc<Shared>, src: SourceConfig, c: CursorConfig) {
    let mut tick = tokio::time::interval(c.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pg = None;
    let mut cached = None;
    let mut failing = false;
    loop {
        tick.tick().await;
        // A source not (yet) checked against the catalog is never read.
        if shared.sources.unchecked(&src.dataset).is_some() {
            continue;
        }
        match poll_once(&shared, &src, &c, &mut pg, &mut cached).await {
            Ok(n) => {
                if failing {
                    tracing::info!(dataset = %src.dataset, "cursor polling works again");
                }
                failing = false;
                if n > 0 {
                    tracing::debug!(dataset = %src.dataset, events = n, "polled changes published");
                }
            }
            Err(e) => {
                // Said once per outage, not every interval.
                if !failing {
                    tracing::warn!(dataset = %src.dataset, error = %e, "cursor poll failed; retrying at every interval");
                }
                failing = true;
                pg = None;
                cached = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Backlog, Op};

    const CATALOG: &str = r#"
[[dataset]]
id = "tickets"
title = "Tickets"
owner = "hotline12345@wuxi"
steward = "s"
update = "realtime"
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
"#;

    fn rec(id: &str) -> Record {
        vec![Value::Text(id.into()), Value::Text("wuxi".into())]
    }

    #[test]
    fn a_poll_skips_what_it_published_at_the_last_value_and_takes_late_rows_with_that_value() {
        let start = baseline(&[(Value::Int(5), rec("a")), (Value::Int(5), rec("b"))]);
        assert_eq!((start.value.clone(), start.at_value.len()), (Value::Int(5), 2));
        assert_eq!(baseline(&[]), PollCursor { value: Value::Null, at_value: vec![] });
        // a and b read again at 5 are not news; c committed late at 5 is; d and e move on.
        let rows = vec![
            (Value::Int(5), rec("a")),
            (Value::Int(5), rec("b")),
            (Value::Int(5), rec("c")),
            (Value::Int(6), rec("d")),
            (Value::Int(7), rec("e")),
        ];
        let (out, next) = advance(&start, rows);
        assert_eq!(out, vec![rec("c"), rec("d"), rec("e")]);
        assert_eq!((next.value.clone(), next.at_value.clone()), (Value::Int(7), vec![digest(&rec("e"))]));
        // Nothing new: the cursor does not move.
        let (out, again) = advance(&next, vec![(Value::Int(7), rec("e"))]);
        assert!(out.is_empty());
        assert_eq!(again.value, Value::Int(7));
        // A row changed without moving its cursor value is a change too.
        let mut changed = rec("e");
        changed[1] = Value::Text("wuxi.liangxi".into());
        assert_eq!(advance(&again, vec![(Value::Int(7), changed.clone())]).0, vec![changed]);
    }

    struct Fixture {
        dir: tempfile::TempDir,
        spec: Spec,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let cat = fedgate_catalog::parse("c.toml", CATALOG).unwrap();
            let db = rusqlite::Connection::open(dir.path().join("src.db")).unwrap();
            db.execute_batch("CREATE TABLE tickets (case_id TEXT PRIMARY KEY, region TEXT, seq INTEGER);")
                .unwrap();
            let spec = Spec {
                dataset: "tickets".into(),
                query: SourceQuery::new(cat.get("tickets").unwrap(), "tickets", RowScope::All, vec![], None),
                cursor: "seq".into(),
                kind: CursorKind::Integer,
            };
            Fixture { dir, spec }
        }

        fn exec(&self, sql: &str) {
            rusqlite::Connection::open(self.dir.path().join("src.db")).unwrap().execute_batch(sql).unwrap();
        }

        fn poll(&self) -> u64 {
            let log = EventLog::open(&self.dir.path().join("state/events.db"), Backlog::default()).unwrap();
            sqlite_poll(&log, &self.dir.path().join("src.db"), &self.spec, 0).unwrap()
        }

        fn events(&self) -> Vec<(Op, String)> {
            let log = EventLog::open(&self.dir.path().join("state/events.db"), Backlog::default()).unwrap();
            let s = log.read("tickets", 0, 100_000).unwrap();
            s.events.iter().map(|e| (e.op, e.record[0].as_text().unwrap_or("?").to_owned())).collect()
        }
    }

    #[test]
    fn sqlite_polls_start_at_the_newest_rows_then_publish_each_change_once_across_reopening() {
        let f = Fixture::new();
        f.exec("INSERT INTO tickets VALUES ('old', 'wuxi', 1), ('old2', 'wuxi', 2);");
        assert_eq!(f.poll(), 0, "the first poll only finds where to start");
        assert!(f.events().is_empty());
        f.exec("INSERT INTO tickets VALUES ('t3', 'wuxi', 3), ('t4', 'wuxi', 4);");
        // Every poll opens the event log afresh, as a restarted gateway would.
        assert_eq!(f.poll(), 2);
        assert_eq!(f.poll(), 0, "nothing is published twice");
        // An update moves the row's cursor; a row committed late with the last value still counts;
        // a row without a cursor value is not a change yet.
        f.exec(
            "UPDATE tickets SET region = 'wuxi.liangxi', seq = 5 WHERE case_id = 'old';
                INSERT INTO tickets VALUES ('late4', 'wuxi', 4), ('nocursor', 'wuxi', NULL);",
        );
        assert_eq!(f.poll(), 2);
        assert_eq!(
            f.events(),
            [
                (Op::Insert, "t3".into()),
                (Op::Insert, "t4".into()),
                (Op::Insert, "late4".into()),
                (Op::Update, "old".into())
            ]
        );
    }

    #[test]
    fn a_poll_reads_pages_and_keeps_rows_of_one_value_together() {
        let f = Fixture::new();
        f.poll();
        // More than two pages, with 1,500 rows sharing one value across a page boundary.
        let rows: Vec<String> =
            (0..2500).map(|i| format!("('r{i:04}', 'wuxi', {})", if i < 1500 { 1 } else { i })).collect();
        f.exec(&format!("INSERT INTO tickets VALUES {};", rows.join(",")));
        assert_eq!(f.poll(), 2500);
        let got = f.events();
        assert_eq!(got.len(), 2500);
        let distinct: std::collections::BTreeSet<_> = got.iter().map(|(_, id)| id.clone()).collect();
        assert_eq!(distinct.len(), 2500);
        assert_eq!(f.poll(), 0);
    }

    #[test]
    fn a_cursor_value_that_is_no_integer_or_text_is_named() {
        let f = Fixture::new();
        f.poll();
        f.exec("INSERT INTO tickets VALUES ('x', 'wuxi', 2.5);");
        let log = EventLog::open(&f.dir.path().join("state/events.db"), Backlog::default()).unwrap();
        let e = sqlite_poll(&log, &f.dir.path().join("src.db"), &f.spec, 0).unwrap_err();
        assert!(e.to_string().contains("cursor column `seq` holds Real"), "{e}");
    }
}
