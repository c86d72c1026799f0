//! Data sources: where a dataset's records live (SQLite, PostgreSQL), read as a bounded stream.
//!
//! The row scope and the consumer's filters are pushed down into parameterized SQL; identifiers
//! come only from the validated catalog and config, values only as bound parameters. Rows are
//! read in batches and handed over a bounded channel, so memory stays flat whatever the result
//! size, and a slow consumer slows the read (backpressure) instead of filling memory.

use std::sync::Arc;

use fedgate_catalog::{FieldType, Record, Value};
use fedgate_policy::RowScope;
use thiserror::Error;
use tokio::sync::mpsc;

use crate::config::SourceKind;
use crate::source_check::Column;

/// Records per batch read from a source.
pub const BATCH: usize = 256;
/// Batches buffered between the source and the sender.
const CHANNEL_BATCHES: usize = 4;

/// Why a source could not deliver.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum SourceError {
    /// The database cannot be opened or reached.
    #[error("source unavailable: {0}")]
    Unavailable(String),
    /// The query failed (missing table or column, wrong type).
    #[error("source query failed: {0}")]
    Query(String),
}

/// What to read: every field of the dataset, in order, narrowed by scope and filters.
#[derive(Debug, Clone)]
pub struct SourceQuery {
    /// Table or view.
    pub table: String,
    /// The dataset's fields and types, in order.
    pub columns: Vec<(String, FieldType)>,
    /// Per column: false if the catalog says the field is never null. A NULL there is a source
    /// error, not a value to pass on.
    pub nullable: Vec<bool>,
    /// The field holding each record's region path.
    pub jurisdiction: String,
    /// Which rows.
    pub scope: RowScope,
    /// Equality filters on fields (typed values).
    pub filters: Vec<(String, Value)>,
    /// The primary key, for a stable order.
    pub primary_key: String,
    /// At most this many rows.
    pub limit: Option<u64>,
}

impl SourceQuery {
    /// Every field of `ds` from `table`, in catalog order, narrowed by `scope` and `filters`.
    pub fn new(
        ds: &fedgate_catalog::Dataset,
        table: &str,
        scope: RowScope,
        filters: Vec<(String, Value)>,
        limit: Option<u64>,
    ) -> SourceQuery {
        SourceQuery {
            table: table.to_owned(),
            columns: ds.fields.iter().map(|f| (f.name.clone(), f.ty)).collect(),
            nullable: ds.fields.iter().map(|f| f.nullable).collect(),
            jurisdiction: ds.jurisdiction.clone(),
            scope,
            filters,
            primary_key: ds.primary_key.clone(),
            limit,
        }
    }

    /// Refuses a record with a NULL in a field the catalog says is never null.
    pub(crate) fn check_nulls(&self, rec: &Record) -> Result<(), SourceError> {
        let bad = rec.iter().zip(&self.nullable).position(|(v, nullable)| !nullable && *v == Value::Null);
        match bad {
            None => Ok(()),
            Some(i) => Err(SourceError::Query(format!(
                "column `{}` of `{}` holds NULL, but the catalog says field `{}` is never null",
                self.columns[i].0, self.table, self.columns[i].0
            ))),
        }
    }
}

/// Opens a SQLite source the one way fedgate reads it: read-only, and with double-quoted string
/// literals off, so `"no_such_column"` is an error instead of the text `no_such_column`.
pub fn open_sqlite(path: &std::path::Path) -> Result<rusqlite::Connection, SourceError> {
    use rusqlite::config::DbConfig;
    use rusqlite::OpenFlags;
    if !path.exists() {
        return Err(SourceError::Unavailable(format!("SQLite file {} does not exist", path.display())));
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = rusqlite::Connection::open_with_flags(path, flags)
        .map_err(|e| SourceError::Unavailable(format!("{}: {e}", path.display())))?;
    for c in [DbConfig::SQLITE_DBCONFIG_DQS_DML, DbConfig::SQLITE_DBCONFIG_DQS_DDL] {
        conn.set_db_config(c, false)
            .map_err(|e| SourceError::Unavailable(format!("{}: cannot turn off DQS: {e}", path.display())))?;
    }
    Ok(conn)
}

/// The columns of `table` (`name` or `schema.name`) in a SQLite file; empty if there is no
/// such table or view.
pub fn sqlite_columns(path: &std::path::Path, table: &str) -> Result<Vec<Column>, SourceError> {
    let conn = open_sqlite(path)?;
    let (schema, name) = table.split_once('.').unwrap_or(("main", table));
    let err = |e: rusqlite::Error| SourceError::Unavailable(format!("{}: {e}", path.display()));
    let mut stmt = conn.prepare("SELECT name, type FROM pragma_table_info(?1, ?2)").map_err(err)?;
    let rows = stmt
        .query_map([name, schema], |r| Ok(Column { name: r.get(0)?, declared: r.get(1)? }))
        .map_err(err)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(err)
}

/// How long a PostgreSQL source may take to answer the column check.
pub const POSTGRES_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The columns of `table` (`name` or `schema.name`, the schema defaulting to the search path's
/// first) in a PostgreSQL database; empty if there is no such table or view. `Unavailable` if
/// the server cannot be reached.
pub async fn postgres_columns(conn_str: &str, table: &str) -> Result<Vec<Column>, SourceError> {
    let fetch = async {
        let (client, connection) = tokio_postgres::connect(conn_str, tokio_postgres::NoTls)
            .await
            .map_err(|e| SourceError::Unavailable(format!("PostgreSQL: {e}")))?;
        let driver = tokio::spawn(connection);
        let (schema, name) = match table.split_once('.') {
            Some((s, n)) => (Some(s), n),
            None => (None, table),
        };
        let rows = client
            .query(
                "SELECT column_name::text, data_type::text FROM information_schema.columns \
                 WHERE table_schema = COALESCE($1, current_schema()) AND table_name = $2 ORDER BY ordinal_position",
                &[&schema, &name],
            )
            .await
            .map_err(|e| SourceError::Query(format!("PostgreSQL: {e}")));
        driver.abort();
        Ok(rows?.iter().map(|r| Column { name: r.get(0), declared: r.get(1) }).collect())
    };
    tokio::time::timeout(POSTGRES_CHECK_TIMEOUT, fetch).await.unwrap_or_else(|_| {
        Err(SourceError::Unavailable(format!("PostgreSQL: no answer within {POSTGRES_CHECK_TIMEOUT:?}")))
    })
}

/// Per-record work done on the reading side (policy obligations): `None` drops the record.
pub type Transform = Arc<dyn Fn(Record) -> Option<Record> + Send + Sync>;

/// Starts reading; batches (already transformed) arrive on the returned channel, which ends
/// after the last batch or after one error.
pub fn spawn(
    kind: &SourceKind,
    q: SourceQuery,
    transform: Transform,
) -> mpsc::Receiver<Result<Vec<Record>, SourceError>> {
    let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
    match kind {
        SourceKind::Sqlite(path) => {
            if let Some(items) = read_sqlite_inline(path, &q, &transform) {
                for item in items {
                    // At most one batch and one error: the channel holds them.
                    let _ = tx.try_send(item);
                }
                return rx;
            }
            let path = path.clone();
            tokio::task::spawn_blocking(move || {
                if let Err(e) = read_sqlite(&path, &q, &transform, &tx) {
                    let _ = tx.blocking_send(Err(e));
                }
            });
        }
        SourceKind::Postgres(conn) => {
            let conn = conn.clone();
            tokio::spawn(async move {
                if let Err(e) = read_postgres(&conn, &q, &transform, &tx).await {
                    let _ = tx.send(Err(e)).await;
                }
            });
        }
    }
    rx
}

/// Reads of at most this many rows may run on the calling thread: a one-record query by key is
/// a few microseconds of SQLite and masking, less than handing it to the blocking pool and back
/// (two thread wake-ups per query, profiled at 64 queries in flight).
const INLINE_ROWS: u64 = 64;
/// SQLite virtual-machine steps between checks of an inline read's budget.
const INLINE_STEPS: std::os::raw::c_int = 1000;
/// Checks an inline read may pass before it is interrupted and handed to the blocking pool
/// instead (so a small LIMIT over a filter that scans a large table never holds the async
/// thread for more than ~20 000 steps, tens of microseconds).
const INLINE_CHECKS: u32 = 20;

/// Reads a small query (a LIMIT of at most [`INLINE_ROWS`]) on the calling thread, through an
/// idle pooled connection, within a budget of SQLite steps: the items [`spawn`] would have sent.
/// `None` if it is not small, no connection is idle (opening one is file I/O, left to the
/// blocking pool), or the read ran past its budget (then nothing it read is used).
fn read_sqlite_inline(
    path: &std::path::Path,
    q: &SourceQuery,
    transform: &Transform,
) -> Option<Vec<Result<Vec<Record>, SourceError>>> {
    if q.limit.is_none_or(|l| l > INLINE_ROWS) {
        return None;
    }
    let conn = pool::checkout_idle(path)?;
    let over = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = over.clone();
    let mut checks = 0u32;
    conn.conn.progress_handler(
        INLINE_STEPS,
        Some(move || {
            checks += 1;
            let stop = checks > INLINE_CHECKS;
            flag.store(stop, std::sync::atomic::Ordering::Relaxed);
            stop
        }),
    );
    let mut items = Vec::new();
    let read = read_sqlite_on(&conn.conn, path, q, transform, &mut |batch| {
        items.push(Ok(batch));
        true
    });
    conn.conn.progress_handler(0, None::<fn() -> bool>);
    match read {
        Ok(()) => {
            pool::checkin(path, conn);
            Some(items)
        }
        // Interrupted: the read starts over on the blocking pool (the connection is dropped).
        Err(_) if over.load(std::sync::atomic::Ordering::Relaxed) => None,
        Err(e) => {
            items.push(Err(e));
            Some(items)
        }
    }
}

/// Idle read-only connections per SQLite file, reused across reads: opening the file and
/// preparing the statement cost more than reading one record, and a small query is one record.
mod pool {
    use std::collections::HashMap;
    use std::os::unix::fs::MetadataExt;
    use std::path::{Path, PathBuf};
    use std::sync::{Mutex, OnceLock};

    use super::{open_sqlite, SourceError};

    /// Idle connections kept per file; more concurrent reads open more, then close them. Sized
    /// for 64 queries in flight without opening and closing a connection per query (profiled:
    /// with 8, opening and closing was ~4 % of the provider's CPU at 64 in flight), while a
    /// read-only connection's page cache stays small for one-record reads.
    const IDLE_PER_FILE: usize = 64;

    /// A connection and the file it was opened on.
    pub(super) struct Pooled {
        pub(super) conn: rusqlite::Connection,
        file: Option<(u64, u64)>,
    }

    type Idle = Mutex<HashMap<PathBuf, Vec<Pooled>>>;

    fn idle() -> &'static Idle {
        static IDLE: OnceLock<Idle> = OnceLock::new();
        IDLE.get_or_init(Idle::default)
    }

    /// Device and inode of the file now at `path`: a file replaced by another (a new export
    /// renamed into place) must not be read through a connection to the old one.
    fn file_id(path: &Path) -> Option<(u64, u64)> {
        std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
    }

    /// An idle connection to the file now at `path`, or a new one. Connections to a file since
    /// replaced are closed on the way (quick: read-only, idle).
    pub(super) fn checkout(path: &Path) -> Result<Pooled, SourceError> {
        match checkout_idle(path) {
            Some(c) => Ok(c),
            None => Ok(Pooled { conn: open_sqlite(path)?, file: file_id(path) }),
        }
    }

    /// An idle connection to the file now at `path`, if there is one (never opens the file).
    pub(super) fn checkout_idle(path: &Path) -> Option<Pooled> {
        let now = file_id(path);
        let mut idle = idle().lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.get_mut(path)?;
        list.retain(|c| c.file.is_some() && c.file == now);
        list.pop()
    }

    /// Returns a connection after a clean read.
    pub(super) fn checkin(path: &Path, conn: Pooled) {
        let mut idle = idle().lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.entry(path.to_owned()).or_default();
        if list.len() < IDLE_PER_FILE {
            list.push(conn);
        }
    }

    #[cfg(test)]
    pub(super) fn idle_count(path: &Path) -> usize {
        idle().lock().unwrap_or_else(|p| p.into_inner()).get(path).map_or(0, Vec::len)
    }
}

/// `ident` (or `schema.ident`) as a quoted SQL identifier.
pub(crate) fn quote(ident: &str) -> String {
    // Identifiers are validated names; quoting keeps reserved words and case intact.
    ident.split('.').map(|p| format!("\"{p}\"")).collect::<Vec<_>>().join(".")
}

/// The WHERE clause and its parameters, numbered by `ph(n)`.
fn where_clause(
    q: &SourceQuery,
    col: impl Fn(&str) -> String,
    ph: impl Fn(usize) -> String,
) -> (String, Vec<Value>) {
    let mut conds = Vec::new();
    let mut params = Vec::new();
    if let RowScope::Within(region) = &q.scope {
        let j = col(&q.jurisdiction);
        conds.push(format!("({j} = {} OR {j} LIKE {})", ph(params.len() + 1), ph(params.len() + 2)));
        params.push(Value::Text(region.to_string()));
        // Region segments are [a-z0-9-], so '%' and '_' cannot occur in the prefix.
        params.push(Value::Text(format!("{region}.%")));
    }
    for (field, v) in &q.filters {
        conds.push(format!("{} = {}", col(field), ph(params.len() + 1)));
        params.push(v.clone());
    }
    let clause = if conds.is_empty() { String::new() } else { format!(" WHERE {}", conds.join(" AND ")) };
    (clause, params)
}

/// ` LIMIT n`, at most i64::MAX: both databases take a signed 64-bit LIMIT (SQLite reads a
/// larger one as a float and fails with "datatype mismatch"), and no table holds more rows.
fn limit_clause(limit: Option<u64>) -> String {
    limit.map(|l| format!(" LIMIT {}", l.min(i64::MAX as u64))).unwrap_or_default()
}

fn sqlite_sql(q: &SourceQuery) -> (String, Vec<Value>) {
    let cols: Vec<String> = q.columns.iter().map(|(n, _)| quote(n)).collect();
    let (clause, params) = where_clause(q, quote, |n| format!("?{n}"));
    let limit = limit_clause(q.limit);
    (
        format!(
            "SELECT {} FROM {}{clause} ORDER BY {}{limit}",
            cols.join(", "),
            quote(&q.table),
            quote(&q.primary_key)
        ),
        params,
    )
}

fn read_sqlite(
    path: &std::path::Path,
    q: &SourceQuery,
    transform: &Transform,
    tx: &mpsc::Sender<Result<Vec<Record>, SourceError>>,
) -> Result<(), SourceError> {
    read_sqlite_with(path, q, transform, &mut |batch| tx.blocking_send(Ok(batch)).is_ok())
}

/// Reads `q` from a SQLite file, handing each batch of transformed records to `sink`, which
/// says whether to go on (false: the reader went away, stop reading).
pub(crate) fn read_sqlite_with(
    path: &std::path::Path,
    q: &SourceQuery,
    transform: &Transform,
    sink: &mut dyn FnMut(Vec<Record>) -> bool,
) -> Result<(), SourceError> {
    let conn = pool::checkout(path)?;
    read_sqlite_on(&conn.conn, path, q, transform, sink)?;
    // Only a connection that finished its read cleanly is reused.
    pool::checkin(path, conn);
    Ok(())
}

fn read_sqlite_on(
    conn: &rusqlite::Connection,
    path: &std::path::Path,
    q: &SourceQuery,
    transform: &Transform,
    sink: &mut dyn FnMut(Vec<Record>) -> bool,
) -> Result<(), SourceError> {
    let (sql, params) = sqlite_sql(q);
    let mut stmt =
        conn.prepare_cached(&sql).map_err(|e| SourceError::Query(format!("{}: {e}", path.display())))?;
    let params: Vec<rusqlite::types::Value> = params
        .into_iter()
        .map(|v| match v {
            Value::Null => rusqlite::types::Value::Null,
            Value::Bool(b) => rusqlite::types::Value::Integer(i64::from(b)),
            Value::Int(i) => rusqlite::types::Value::Integer(i),
            Value::Text(s) => rusqlite::types::Value::Text(s),
        })
        .collect();
    let mut rows =
        stmt.query(rusqlite::params_from_iter(params)).map_err(|e| SourceError::Query(e.to_string()))?;
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(row) = rows.next().map_err(|e| SourceError::Query(e.to_string()))? {
        let rec = sqlite_record(row, &q.columns)?;
        q.check_nulls(&rec)?;
        if let Some(out) = transform(rec) {
            batch.push(out);
        }
        if batch.len() >= BATCH && !sink(std::mem::take(&mut batch)) {
            return Ok(()); // the reader went away: stop reading
        }
    }
    if !batch.is_empty() {
        sink(batch);
    }
    Ok(())
}

/// The first `columns.len()` values of a SQLite row as a record of those fields' types.
pub(crate) fn sqlite_record(
    row: &rusqlite::Row<'_>,
    columns: &[(String, FieldType)],
) -> Result<Record, SourceError> {
    columns
        .iter()
        .enumerate()
        .map(|(i, (name, ty))| {
            let v = row.get_ref(i).map_err(|e| SourceError::Query(e.to_string()))?;
            sqlite_value(name, *ty, v)
        })
        .collect()
}

fn sqlite_value(name: &str, ty: FieldType, v: rusqlite::types::ValueRef<'_>) -> Result<Value, SourceError> {
    use rusqlite::types::ValueRef;
    Ok(match (ty, v) {
        (_, ValueRef::Null) => Value::Null,
        (FieldType::Integer, ValueRef::Integer(n)) => Value::Int(n),
        (FieldType::Bool, ValueRef::Integer(n)) => Value::Bool(n != 0),
        (FieldType::Integer | FieldType::Bool, other) => {
            return Err(SourceError::Query(format!(
                "column `{name}` holds {:?}, not a {ty}",
                other.data_type()
            )))
        }
        (_, ValueRef::Text(t)) => Value::Text(match std::str::from_utf8(t) {
            Ok(s) => s.to_owned(),
            Err(_) => String::from_utf8_lossy(t).into_owned(),
        }),
        (_, ValueRef::Integer(n)) => Value::Text(n.to_string()),
        (_, ValueRef::Real(r)) => Value::Text(r.to_string()),
        (_, ValueRef::Blob(_)) => return Err(SourceError::Query(format!("column `{name}` holds a blob"))),
    })
}

/// The first `columns.len()` values of a PostgreSQL row read with [`pg_col`], as a record.
pub(crate) fn pg_record(
    row: &tokio_postgres::Row,
    columns: &[(String, FieldType)],
) -> Result<Record, SourceError> {
    columns
        .iter()
        .enumerate()
        .map(|(i, (name, ty))| {
            let bad = |e: tokio_postgres::Error| SourceError::Query(format!("column `{name}`: {e}"));
            Ok(match ty {
                FieldType::Integer => {
                    row.try_get::<_, Option<i64>>(i).map_err(bad)?.map_or(Value::Null, Value::Int)
                }
                FieldType::Bool => {
                    row.try_get::<_, Option<bool>>(i).map_err(bad)?.map_or(Value::Null, Value::Bool)
                }
                _ => row.try_get::<_, Option<String>>(i).map_err(bad)?.map_or(Value::Null, Value::Text),
            })
        })
        .collect()
}

/// A column as a select-list expression whose value [`pg_record`] reads as `ty`.
pub(crate) fn pg_col(name: &str, ty: FieldType) -> String {
    match ty {
        FieldType::Integer => format!("{}::int8", quote(name)),
        FieldType::Bool => format!("{}::bool", quote(name)),
        _ => format!("{}::text", quote(name)),
    }
}

async fn read_postgres(
    conn_str: &str,
    q: &SourceQuery,
    transform: &Transform,
    tx: &mpsc::Sender<Result<Vec<Record>, SourceError>>,
) -> Result<(), SourceError> {
    use futures::StreamExt;
    use tokio_postgres::types::ToSql;
    let mut pooled = pg_pool::checkout(conn_str).await?;
    let types: std::collections::HashMap<&str, FieldType> =
        q.columns.iter().map(|(n, t)| (n.as_str(), *t)).collect();
    let cols: Vec<String> = q.columns.iter().map(|(n, t)| pg_col(n, *t)).collect();
    let (clause, params) = where_clause(
        q,
        |f| pg_col(f, types.get(f).copied().unwrap_or(FieldType::String)),
        |n| format!("${n}"),
    );
    let limit = limit_clause(q.limit);
    let sql = format!(
        "SELECT {} FROM {}{clause} ORDER BY {}{limit}",
        cols.join(", "),
        quote(&q.table),
        quote(&q.primary_key)
    );
    let boxed: Vec<Box<dyn ToSql + Sync + Send>> = params
        .into_iter()
        .map(|v| -> Box<dyn ToSql + Sync + Send> {
            match v {
                Value::Null => Box::new(Option::<String>::None),
                Value::Bool(b) => Box::new(b),
                Value::Int(i) => Box::new(i),
                Value::Text(s) => Box::new(s),
            }
        })
        .collect();
    let refs: Vec<&(dyn ToSql + Sync)> = boxed.iter().map(|b| b.as_ref() as &(dyn ToSql + Sync)).collect();
    let stmt = pooled.prepare(&sql).await?;
    let stream = pooled.client.query_raw(&stmt, refs).await.map_err(|e| SourceError::Query(e.to_string()))?;
    futures::pin_mut!(stream);
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(row) = stream.next().await {
        let row = row.map_err(|e| SourceError::Query(e.to_string()))?;
        let rec = pg_record(&row, &q.columns)?;
        q.check_nulls(&rec)?;
        if let Some(out) = transform(rec) {
            batch.push(out);
        }
        if batch.len() >= BATCH && tx.send(Ok(std::mem::take(&mut batch))).await.is_err() {
            // The reader went away mid-result: this connection is dropped, not reused.
            return Ok(());
        }
    }
    if !batch.is_empty() {
        let _ = tx.send(Ok(batch)).await;
    }
    pg_pool::checkin(conn_str, pooled);
    Ok(())
}

/// Idle PostgreSQL connections per connection string, each with its prepared statements: a
/// connection costs a TCP handshake and a login, a statement a round trip, and a small query
/// one row.
mod pg_pool {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};

    use super::SourceError;

    const IDLE_PER_SOURCE: usize = 16;
    /// Prepared statements kept per connection (a source sees a few query shapes).
    const STATEMENTS: usize = 32;

    /// A client, the task driving its connection, and its prepared statements by SQL text.
    pub(super) struct PgPooled {
        pub(super) client: tokio_postgres::Client,
        driver: tokio::task::JoinHandle<()>,
        statements: HashMap<String, tokio_postgres::Statement>,
    }

    impl Drop for PgPooled {
        fn drop(&mut self) {
            self.driver.abort();
        }
    }

    impl PgPooled {
        pub(super) async fn prepare(&mut self, sql: &str) -> Result<tokio_postgres::Statement, SourceError> {
            if let Some(s) = self.statements.get(sql) {
                return Ok(s.clone());
            }
            let stmt = self.client.prepare(sql).await.map_err(|e| SourceError::Query(e.to_string()))?;
            if self.statements.len() >= STATEMENTS {
                self.statements.clear();
            }
            self.statements.insert(sql.to_owned(), stmt.clone());
            Ok(stmt)
        }
    }

    type Idle = Mutex<HashMap<String, Vec<PgPooled>>>;

    fn idle() -> &'static Idle {
        static IDLE: OnceLock<Idle> = OnceLock::new();
        IDLE.get_or_init(Idle::default)
    }

    /// An idle, still open connection, or a new one.
    pub(super) async fn checkout(conn_str: &str) -> Result<PgPooled, SourceError> {
        let reused = {
            let mut idle = idle().lock().unwrap_or_else(|p| p.into_inner());
            idle.get_mut(conn_str).and_then(|l| {
                // A server restarted since closes them: those are dropped, never handed out.
                l.retain(|c| !c.client.is_closed());
                l.pop()
            })
        };
        if let Some(c) = reused {
            return Ok(c);
        }
        let (client, connection) = tokio_postgres::connect(conn_str, tokio_postgres::NoTls)
            .await
            .map_err(|e| SourceError::Unavailable(format!("PostgreSQL: {e}")))?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(PgPooled { client, driver, statements: HashMap::new() })
    }

    /// Returns a connection after a complete read.
    pub(super) fn checkin(conn_str: &str, conn: PgPooled) {
        let mut idle = idle().lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.entry(conn_str.to_owned()).or_default();
        if list.len() < IDLE_PER_SOURCE && !conn.client.is_closed() {
            list.push(conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(scope: RowScope, filters: Vec<(String, Value)>) -> SourceQuery {
        SourceQuery {
            table: "main.tickets".into(),
            columns: vec![
                ("id".into(), FieldType::String),
                ("region".into(), FieldType::Region),
                ("n".into(), FieldType::Integer),
            ],
            nullable: vec![false, false, true],
            jurisdiction: "region".into(),
            scope,
            filters,
            primary_key: "id".into(),
            limit: Some(10),
        }
    }

    #[test]
    fn sql_is_parameterized() {
        let q = query(RowScope::Within("wuxi.liangxi".parse().unwrap()), vec![("n".into(), Value::Int(3))]);
        let (sql, params) = sqlite_sql(&q);
        assert_eq!(
            sql,
            "SELECT \"id\", \"region\", \"n\" FROM \"main\".\"tickets\" WHERE (\"region\" = ?1 OR \"region\" LIKE ?2) AND \"n\" = ?3 ORDER BY \"id\" LIMIT 10"
        );
        assert_eq!(
            params,
            vec![Value::Text("wuxi.liangxi".into()), Value::Text("wuxi.liangxi.%".into()), Value::Int(3)]
        );
        let (sql, params) = sqlite_sql(&query(RowScope::All, vec![]));
        assert!(!sql.contains("WHERE") && params.is_empty());
    }

    #[test]
    fn a_limit_past_i64_max_reads_everything() {
        // The cap plus the one row that tells a cut result: i64::MAX + 1 once failed the read.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE tickets (id TEXT NOT NULL, region TEXT NOT NULL, n INTEGER); INSERT INTO tickets VALUES ('a', 'wuxi', 1), ('b', 'wuxi', 2);").unwrap();
        drop(conn);
        let mut q = query(RowScope::All, vec![]);
        q.table = "tickets".into();
        q.limit = Some(i64::MAX as u64 + 1);
        assert!(sqlite_sql(&q).0.ends_with(" LIMIT 9223372036854775807"));
        let (tx, mut rx) = mpsc::channel(4);
        read_sqlite(&path, &q, &(Arc::new(Some) as Transform), &tx).unwrap();
        drop(tx);
        let mut rows = 0;
        while let Ok(batch) = rx.try_recv() {
            rows += batch.unwrap().len();
        }
        assert_eq!(rows, 2);
    }

    fn read_all(path: &std::path::Path) -> Vec<Record> {
        let mut q = query(RowScope::All, vec![]);
        q.table = "tickets".into();
        let mut out = Vec::new();
        read_sqlite_with(path, &q, &(Arc::new(Some) as Transform), &mut |b| {
            out.extend(b);
            true
        })
        .unwrap();
        out
    }

    fn write_db(path: &std::path::Path, rows: &str) {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.execute_batch(&format!(
            "CREATE TABLE tickets (id TEXT NOT NULL, region TEXT NOT NULL, n INTEGER); INSERT INTO tickets VALUES {rows};"
        ))
        .unwrap();
    }

    #[test]
    fn reads_reuse_a_connection_and_see_every_change_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        write_db(&path, "('a', 'wuxi', 1)");
        assert_eq!(read_all(&path).len(), 1);
        assert_eq!(pool::idle_count(&path), 1, "the connection went back to the pool");
        assert_eq!(read_all(&path).len(), 1);
        assert_eq!(pool::idle_count(&path), 1, "the second read reused it");
        // A row added in place is seen through the pooled connection.
        let writer = rusqlite::Connection::open(&path).unwrap();
        writer.execute("INSERT INTO tickets VALUES ('b', 'wuxi', 2)", []).unwrap();
        drop(writer);
        assert_eq!(read_all(&path).len(), 2);
        // A new file renamed over the old one is read, not the old one through a stale connection.
        let fresh = dir.path().join("fresh.db");
        write_db(&fresh, "('x', 'wuxi', 7), ('y', 'wuxi', 8), ('z', 'wuxi', 9)");
        std::fs::rename(&fresh, &path).unwrap();
        let rows = read_all(&path);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0][0], Value::Text("x".into()));
    }

    #[test]
    fn a_failed_read_does_not_return_its_connection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        write_db(&path, "('a', 'wuxi', NULL)");
        let mut q = query(RowScope::All, vec![]);
        q.table = "tickets".into();
        q.nullable = vec![false, false, false];
        let err = read_sqlite_with(&path, &q, &(Arc::new(Some) as Transform), &mut |_| true).unwrap_err();
        assert!(err.to_string().contains("holds NULL"), "{err}");
        assert_eq!(pool::idle_count(&path), 0);
    }

    fn tickets(n: usize) -> String {
        (0..n).map(|i| format!("('t{i:06}', 'wuxi', {i})")).collect::<Vec<_>>().join(", ")
    }

    fn ticket_query(filters: Vec<(String, Value)>, limit: u64) -> SourceQuery {
        let mut q = query(RowScope::All, filters);
        q.table = "tickets".into();
        q.limit = Some(limit);
        q
    }

    #[test]
    fn a_small_read_runs_inline_on_an_idle_connection_and_matches_the_pooled_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        write_db(&path, &tickets(500));
        let q = ticket_query(vec![("id".into(), Value::Text("t000042".into()))], 2);
        let id = |r: Record| Some(r);
        let transform: Transform = Arc::new(id);
        // No idle connection yet: not inline (opening the file is left to the blocking pool).
        assert!(read_sqlite_inline(&path, &q, &transform).is_none());
        let mut pooled = Vec::new();
        read_sqlite_with(&path, &q, &transform, &mut |b| {
            pooled.push(b);
            true
        })
        .unwrap();
        let inline = read_sqlite_inline(&path, &q, &transform).expect("a keyed one-record read runs inline");
        let inline: Vec<_> = inline.into_iter().map(Result::unwrap).collect();
        assert_eq!(inline, pooled);
        assert_eq!(inline[0].len(), 1);
        assert_eq!(pool::idle_count(&path), 1, "the connection went back to the pool");
        // A read past INLINE_ROWS is never tried inline.
        assert!(read_sqlite_inline(&path, &ticket_query(vec![], INLINE_ROWS + 1), &transform).is_none());
        // A source error comes back as the blocking read would send it.
        let mut strict = ticket_query(vec![], 2);
        strict.columns[2].0 = "no_such_column".into();
        let items = read_sqlite_inline(&path, &strict, &transform).expect("an error is an answer");
        assert!(matches!(items.as_slice(), [Err(SourceError::Query(_))]), "{items:?}");
    }

    #[test]
    fn a_small_limit_over_a_long_scan_is_interrupted_and_read_by_the_blocking_pool() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        // `n` has no index: finding n = 19999 scans the whole table, far past the step budget;
        // `id` has one, as a primary key would.
        write_db(&path, &tickets(20_000));
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("CREATE UNIQUE INDEX tickets_id ON tickets (id)").unwrap();
        drop(conn);
        let transform: Transform = Arc::new(Some);
        read_all(&path);
        let q = ticket_query(vec![("n".into(), Value::Int(19_999))], 2);
        assert!(read_sqlite_inline(&path, &q, &transform).is_none(), "the scan ran inline to its end");
        assert_eq!(pool::idle_count(&path), 0, "the interrupted connection is not reused");
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let rows: Vec<Record> = rt.block_on(async {
            let mut rx = spawn(&SourceKind::Sqlite(path.clone()), q, transform);
            let mut out = Vec::new();
            while let Some(b) = rx.recv().await {
                out.extend(b.unwrap());
            }
            out
        });
        assert_eq!(
            rows,
            vec![vec![Value::Text("t019999".into()), Value::Text("wuxi".into()), Value::Int(19_999)]]
        );
        // The inline path, through spawn: the answer is there before anything is awaited.
        let keyed = ticket_query(vec![("id".into(), Value::Text("t000007".into()))], 2);
        let mut rx = rt.block_on(async { spawn(&SourceKind::Sqlite(path.clone()), keyed, Arc::new(Some)) });
        assert_eq!(rx.try_recv().unwrap().unwrap().len(), 1);
    }
}
