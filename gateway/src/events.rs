//! The provider's event log: every change to a dataset its subscribers must learn of, with a
//! per-dataset id that only grows, held durably in SQLite in the node's state folder.
//!
//! Events come from the department's application (`POST /v1/datasets/{id}/events`, checked
//! against the catalog by [`records_from_json`]) and from polling a source's cursor column
//! ([`EventLog::publish_polled`], which advances the poll cursor in the same transaction as the
//! events it found, so a crash never loses or repeats a change). The backlog is bounded by age
//! and count ([`Backlog`]); a subscriber whose cursor fell out of it is told the missing id range
//! ([`Slice::gap`]), never silently skipped. The log also keeps each subscription's acknowledged
//! cursor: the provider advances it only on the subscriber's acknowledgement.

use std::path::{Path, PathBuf};

use crate::state_db::StateDb;
use fedgate_catalog::{Dataset, FieldType, Record, Region, Value};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// How much of the past the provider keeps for subscribers that are behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// Events older than this many seconds are dropped.
    pub max_age_secs: i64,
    /// At most this many events per dataset are kept (the newest).
    pub max_count: u64,
}

impl Default for Backlog {
    /// A week, and 100,000 events per dataset.
    fn default() -> Backlog {
        Backlog { max_age_secs: 7 * 86_400, max_count: 100_000 }
    }
}

/// What happened to the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Op {
    /// A new record.
    Insert,
    /// A changed record (sent whole, as it is now).
    Update,
}

impl Op {
    /// As written on the wire, in the API and in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
        }
    }

    /// Parses [`Op::as_str`].
    pub fn parse(s: &str) -> Option<Op> {
        match s {
            "insert" => Some(Op::Insert),
            "update" => Some(Op::Update),
            _ => None,
        }
    }
}

/// One change to one record of a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Per dataset, increasing, never reused.
    pub id: u64,
    /// Insert or update.
    pub op: Op,
    /// Unix seconds when the provider recorded it.
    pub time: i64,
    /// The record, fields in the catalog's order.
    pub record: Record,
}

/// Where a poll of a source's cursor column stopped: the largest cursor value read, and which
/// records were already published at exactly that value (digests of their encoding), so a row
/// that appears later with the same value is still published, and one seen before is not
/// published again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PollCursor {
    /// The largest cursor value read; `Null` until the table had a row.
    pub value: Value,
    /// Digests of the records published (or found at the first poll) at `value`.
    pub at_value: Vec<[u8; 32]>,
}

/// Events after a cursor, and what is missing before them.
#[derive(Debug, Clone, PartialEq)]
pub struct Slice {
    /// Ids after the cursor that the backlog no longer holds (inclusive range), if any.
    pub gap: Option<(u64, u64)>,
    /// The events, in id order.
    pub events: Vec<Event>,
    /// The dataset's newest id (0 if it never had an event).
    pub head: u64,
}

/// Why the event log failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EventError {
    /// The database could not be opened, read or written.
    #[error("event log {}: {source}", path.display())]
    Db {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The state folder could not be created.
    #[error("state folder {}: {source}", path.display())]
    Folder {
        /// The folder.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The poll cursor moved while a poll ran: a second poller on the same event log.
    #[error("poll cursor of `{dataset}` moved during the poll; nothing was published")]
    CursorMoved {
        /// The dataset.
        dataset: String,
    },
    /// A stored record did not decode: the file was damaged or written by something else.
    #[error("event log {}: event {id} of `{dataset}` is damaged: {why}", path.display())]
    Damaged {
        /// The database file.
        path: PathBuf,
        /// The dataset.
        dataset: String,
        /// The event.
        id: u64,
        /// What did not decode.
        why: String,
    },
}

/// Why records offered as events do not fit the catalog.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("records[{index}]: {why}")]
pub struct RecordError {
    /// Which record (0-based).
    pub index: usize,
    /// What is wrong, naming the field.
    pub why: String,
}

/// The provider's event log: one SQLite file.
pub struct EventLog {
    /// Bumped after every commit that added events.
    state: StateDb,
    backlog: Backlog,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    dataset TEXT NOT NULL, id INTEGER NOT NULL, op TEXT NOT NULL, time INTEGER NOT NULL,
    record BLOB NOT NULL, PRIMARY KEY (dataset, id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS heads (dataset TEXT PRIMARY KEY, last INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS polls (dataset TEXT PRIMARY KEY, cursor BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS seen (dataset TEXT NOT NULL, pk BLOB NOT NULL, PRIMARY KEY (dataset, pk)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cursors (
    exchange TEXT PRIMARY KEY, peer TEXT NOT NULL, dataset TEXT NOT NULL, acked INTEGER NOT NULL,
    updated INTEGER NOT NULL);
";

fn cbor<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing CBOR into a Vec cannot fail for these plain values.
    let _ = ciborium::into_writer(v, &mut out);
    out
}

impl EventLog {
    /// Opens (creating) the event log at `path`, its folder created too.
    pub fn open(path: &Path, backlog: Backlog) -> Result<EventLog, EventError> {
        // WAL with full sync: a published event or an acknowledged cursor survives SIGKILL and
        // power loss once the call returns.
        let state = StateDb::open(
            path,
            SCHEMA,
            |path, source| EventError::Folder { path, source },
            |source| EventError::Db { path: path.to_owned(), source },
        )?;
        Ok(EventLog { state, backlog })
    }

    /// A receiver that sees a change after every commit that added events.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.state.changes()
    }

    fn committed(&self, ids: Option<(u64, u64)>) -> Option<(u64, u64)> {
        if ids.is_some() {
            self.state.bump();
        }
        ids
    }

    /// The backlog bounds in force.
    pub fn backlog(&self) -> Backlog {
        self.backlog
    }

    fn db(&self) -> impl Fn(rusqlite::Error) -> EventError + '_ {
        |source| EventError::Db { path: self.state.path().to_owned(), source }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.state.lock()
    }

    /// Appends `records` to `dataset` as `op` events at unix time `now`; returns the ids given
    /// (first, last), or `None` for no records. Durable when it returns.
    pub fn publish(
        &self,
        dataset: &str,
        op: Op,
        records: &[Record],
        now: i64,
    ) -> Result<Option<(u64, u64)>, EventError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(self.db())?;
        let ids = append(&tx, dataset, records.iter().map(|r| (op, r)), now).map_err(self.db())?;
        trim(&tx, dataset, self.backlog, now).map_err(self.db())?;
        tx.commit().map_err(self.db())?;
        Ok(self.committed(ids))
    }

    /// Appends what a poll of the source's cursor column found, each an insert if its primary
    /// key (`pk`, a field index) is new to this log and an update otherwise, and moves the poll
    /// cursor from `from` (what [`EventLog::poll_cursor`] said before the poll) to `cursor`, all
    /// in one transaction: a crash leaves both or neither. If the cursor is no longer `from`
    /// (another poller got there first), nothing is written.
    pub fn publish_polled(
        &self,
        dataset: &str,
        from: Option<&PollCursor>,
        records: &[Record],
        pk: usize,
        cursor: &PollCursor,
        now: i64,
    ) -> Result<Option<(u64, u64)>, EventError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(self.db())?;
        let stored: Option<Vec<u8>> = tx
            .query_row("SELECT cursor FROM polls WHERE dataset = ?1", params![dataset], |r| r.get(0))
            .optional()
            .map_err(self.db())?;
        if stored != from.map(cbor) {
            return Err(EventError::CursorMoved { dataset: dataset.to_owned() });
        }
        let mut ops = Vec::with_capacity(records.len());
        for r in records {
            let key = cbor(&r.get(pk).cloned().unwrap_or(Value::Null));
            let new = tx
                .execute("INSERT OR IGNORE INTO seen (dataset, pk) VALUES (?1, ?2)", params![dataset, key])
                .map_err(self.db())?;
            ops.push((if new == 1 { Op::Insert } else { Op::Update }, r));
        }
        let ids = append(&tx, dataset, ops.into_iter(), now).map_err(self.db())?;
        tx.execute(
            "INSERT INTO polls (dataset, cursor) VALUES (?1, ?2) ON CONFLICT(dataset) DO UPDATE SET cursor = ?2",
            params![dataset, cbor(cursor)],
        )
        .map_err(self.db())?;
        trim(&tx, dataset, self.backlog, now).map_err(self.db())?;
        tx.commit().map_err(self.db())?;
        Ok(self.committed(ids))
    }

    /// Starts polling `dataset` at `cursor`, the rows already there (primary keys `known`) counted
    /// as seen, so their later changes are updates. Nothing is written if polling already started.
    pub fn start_polled(
        &self,
        dataset: &str,
        known: &[Value],
        cursor: &PollCursor,
    ) -> Result<(), EventError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(self.db())?;
        let fresh = tx
            .execute(
                "INSERT OR IGNORE INTO polls (dataset, cursor) VALUES (?1, ?2)",
                params![dataset, cbor(cursor)],
            )
            .map_err(self.db())?;
        if fresh == 0 {
            return Err(EventError::CursorMoved { dataset: dataset.to_owned() });
        }
        {
            let mut seen = tx
                .prepare_cached("INSERT OR IGNORE INTO seen (dataset, pk) VALUES (?1, ?2)")
                .map_err(self.db())?;
            for k in known {
                seen.execute(params![dataset, cbor(k)]).map_err(self.db())?;
            }
        }
        tx.commit().map_err(self.db())
    }

    /// Where the last poll of `dataset`'s cursor column stopped, if it ever ran.
    pub fn poll_cursor(&self, dataset: &str) -> Result<Option<PollCursor>, EventError> {
        let blob: Option<Vec<u8>> = self
            .lock()
            .query_row("SELECT cursor FROM polls WHERE dataset = ?1", params![dataset], |r| r.get(0))
            .optional()
            .map_err(self.db())?;
        // A damaged cursor must stop the poller: guessing would repeat or skip changes.
        blob.map(|b| {
            ciborium::from_reader(b.as_slice()).map_err(|e| EventError::Damaged {
                path: self.state.path().to_owned(),
                dataset: dataset.to_owned(),
                id: 0,
                why: format!("poll cursor: {e}"),
            })
        })
        .transpose()
    }

    /// Up to `max` events of `dataset` after id `after`, and the ids after it already dropped
    /// from the backlog (so the subscriber hears of them).
    pub fn read(&self, dataset: &str, after: u64, max: usize) -> Result<Slice, EventError> {
        let conn = self.lock();
        let head = head(&conn, dataset).map_err(self.db())?;
        let oldest: Option<u64> = conn
            .query_row("SELECT MIN(id) FROM events WHERE dataset = ?1", params![dataset], |r| r.get(0))
            .map_err(self.db())?;
        // Everything after the cursor up to the oldest kept (or the head, if nothing is kept)
        // that is not there any more.
        let first_kept = oldest.unwrap_or(head.saturating_add(1));
        let gap = (after.saturating_add(1) < first_kept && after < head).then(|| (after + 1, first_kept - 1));
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, op, time, record FROM events WHERE dataset = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
            )
            .map_err(self.db())?;
        let rows = stmt
            .query_map(params![dataset, after, max as i64], |r| {
                Ok((
                    r.get::<_, u64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                ))
            })
            .map_err(self.db())?;
        let mut events = Vec::new();
        for row in rows {
            let (id, op, time, blob) = row.map_err(self.db())?;
            let damaged = |why: String| EventError::Damaged {
                path: self.state.path().to_owned(),
                dataset: dataset.to_owned(),
                id,
                why,
            };
            let op = Op::parse(&op).ok_or_else(|| damaged(format!("unknown op {op:?}")))?;
            let record = ciborium::from_reader(blob.as_slice()).map_err(|e| damaged(e.to_string()))?;
            events.push(Event { id, op, time, record });
        }
        Ok(Slice { gap, events, head })
    }

    /// The newest id of `dataset` (0 if it never had an event).
    pub fn head(&self, dataset: &str) -> Result<u64, EventError> {
        head(&self.lock(), dataset).map_err(self.db())
    }

    /// Drops events past the backlog bounds at unix time `now`, for every dataset.
    pub fn trim_all(&self, now: i64) -> Result<(), EventError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(self.db())?;
        let datasets: Vec<String> = {
            let mut s = tx.prepare("SELECT dataset FROM heads").map_err(self.db())?;
            let rows = s.query_map([], |r| r.get(0)).map_err(self.db())?;
            rows.collect::<Result<_, _>>().map_err(self.db())?
        };
        for d in datasets {
            trim(&tx, &d, self.backlog, now).map_err(self.db())?;
        }
        tx.commit().map_err(self.db())
    }

    /// Records that the subscription `exchange` (of `peer`, on `dataset`) has acknowledged
    /// every event up to `upto`. The cursor only moves forward.
    pub fn ack(
        &self,
        exchange: &str,
        peer: &str,
        dataset: &str,
        upto: u64,
        now: i64,
    ) -> Result<(), EventError> {
        self.lock()
            .execute(
                "INSERT INTO cursors (exchange, peer, dataset, acked, updated) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(exchange) DO UPDATE SET acked = MAX(acked, ?4), updated = ?5",
                params![exchange, peer, dataset, upto, now],
            )
            .map(drop)
            .map_err(self.db())
    }

    /// What the subscription `exchange` last acknowledged, if it ever did.
    pub fn acked(&self, exchange: &str) -> Result<Option<u64>, EventError> {
        self.lock()
            .query_row("SELECT acked FROM cursors WHERE exchange = ?1", params![exchange], |r| r.get(0))
            .optional()
            .map_err(self.db())
    }
}

fn head(conn: &Connection, dataset: &str) -> rusqlite::Result<u64> {
    Ok(conn
        .query_row("SELECT last FROM heads WHERE dataset = ?1", params![dataset], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

fn append<'a>(
    tx: &rusqlite::Transaction<'_>,
    dataset: &str,
    events: impl Iterator<Item = (Op, &'a Record)>,
    now: i64,
) -> rusqlite::Result<Option<(u64, u64)>> {
    let start = head(tx, dataset)?;
    let mut last = start;
    {
        let mut ins = tx.prepare_cached(
            "INSERT INTO events (dataset, id, op, time, record) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for (op, rec) in events {
            last += 1;
            ins.execute(params![dataset, last, op.as_str(), now, cbor(rec)])?;
        }
    }
    if last == start {
        return Ok(None);
    }
    tx.execute(
        "INSERT INTO heads (dataset, last) VALUES (?1, ?2) ON CONFLICT(dataset) DO UPDATE SET last = ?2",
        params![dataset, last],
    )?;
    Ok(Some((start + 1, last)))
}

fn trim(tx: &rusqlite::Transaction<'_>, dataset: &str, b: Backlog, now: i64) -> rusqlite::Result<()> {
    let keep_from = head(tx, dataset)?.saturating_sub(b.max_count);
    tx.execute(
        "DELETE FROM events WHERE dataset = ?1 AND (id <= ?2 OR time < ?3)",
        params![dataset, keep_from, now.saturating_sub(b.max_age_secs)],
    )?;
    Ok(())
}

/// Checks JSON records (objects keyed by field name) against `ds` and returns them in the
/// catalog's field order. Every field must be known; a field left out is null, which only a
/// nullable field may be.
pub fn records_from_json(ds: &Dataset, items: &[serde_json::Value]) -> Result<Vec<Record>, RecordError> {
    items
        .iter()
        .enumerate()
        .map(|(index, item)| record_from_json(ds, item).map_err(|why| RecordError { index, why }))
        .collect()
}

fn record_from_json(ds: &Dataset, item: &serde_json::Value) -> Result<Record, String> {
    let obj = item.as_object().ok_or("a record must be a JSON object keyed by field name")?;
    if let Some(k) = obj.keys().find(|k| ds.field(k).is_none()) {
        return Err(format!("dataset `{}` has no field `{k}`", ds.id));
    }
    ds.fields
        .iter()
        .map(|f| {
            let v = obj.get(&f.name).unwrap_or(&serde_json::Value::Null);
            if v.is_null() {
                return if f.nullable { Ok(Value::Null) } else { Err(format!("`{}` is required", f.name)) };
            }
            field_value(f.ty, v).ok_or_else(|| format!("`{}` must be {}, not {v}", f.name, expected(f.ty)))
        })
        .collect()
}

fn field_value(ty: FieldType, v: &serde_json::Value) -> Option<Value> {
    match ty {
        FieldType::Integer => v.as_i64().map(Value::Int),
        FieldType::Bool => v.as_bool().map(Value::Bool),
        FieldType::Region => {
            v.as_str().filter(|s| s.parse::<Region>().is_ok()).map(|s| Value::Text(s.into()))
        }
        FieldType::Date => v.as_str().filter(|s| valid_date(s)).map(|s| Value::Text(s.into())),
        FieldType::Datetime => v.as_str().filter(|s| valid_datetime(s)).map(|s| Value::Text(s.into())),
        FieldType::Decimal => v
            .as_str()
            .map(str::to_owned)
            .or_else(|| v.as_number().map(|n| n.to_string()))
            .filter(|s| s.parse::<f64>().is_ok())
            .map(Value::Text),
        _ => v.as_str().map(|s| Value::Text(s.into())),
    }
}

fn expected(ty: FieldType) -> &'static str {
    match ty {
        FieldType::Integer => "an integer",
        FieldType::Bool => "true or false",
        FieldType::Region => "a region path such as \"wuxi.liangxi\"",
        FieldType::Date => "a date YYYY-MM-DD",
        FieldType::Datetime => "an RFC 3339 date-time",
        FieldType::Decimal => "a decimal number",
        _ => "a string",
    }
}

fn valid_date(s: &str) -> bool {
    time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]")).is_ok()
}

fn valid_datetime(s: &str) -> bool {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(dir: &Path, backlog: Backlog) -> EventLog {
        EventLog::open(&dir.join("state/events.db"), backlog).unwrap()
    }

    fn recs(n: usize) -> Vec<Record> {
        (0..n).map(|i| vec![Value::Int(i as i64)]).collect()
    }

    #[test]
    fn ids_grow_per_dataset_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let l = log(dir.path(), Backlog::default());
        assert_eq!(l.publish("a", Op::Insert, &recs(3), 100).unwrap(), Some((1, 3)));
        assert_eq!(l.publish("b", Op::Insert, &recs(1), 100).unwrap(), Some((1, 1)));
        assert_eq!(l.publish("a", Op::Update, &[], 100).unwrap(), None);
        drop(l);
        let l = log(dir.path(), Backlog::default());
        assert_eq!(l.publish("a", Op::Update, &recs(2), 101).unwrap(), Some((4, 5)));
        let s = l.read("a", 2, 10).unwrap();
        assert_eq!(s.gap, None);
        assert_eq!(s.head, 5);
        assert_eq!(
            s.events.iter().map(|e| (e.id, e.op)).collect::<Vec<_>>(),
            [(3, Op::Insert), (4, Op::Update), (5, Op::Update)]
        );
        assert_eq!(s.events[1].record, vec![Value::Int(0)]);
        assert_eq!(l.read("a", 0, 2).unwrap().events.len(), 2);
    }

    #[test]
    fn the_backlog_is_bounded_and_what_fell_out_is_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        let l = log(dir.path(), Backlog { max_age_secs: 60, max_count: 4 });
        l.publish("a", Op::Insert, &recs(10), 1000).unwrap();
        // Only the newest four are kept: a subscriber at 2 misses 3..=6.
        let s = l.read("a", 2, 100).unwrap();
        assert_eq!(s.gap, Some((3, 6)));
        assert_eq!(s.events.iter().map(|e| e.id).collect::<Vec<_>>(), [7, 8, 9, 10]);
        assert_eq!(l.read("a", 6, 100).unwrap().gap, None);
        // Past the age bound everything goes; ids still never repeat.
        l.trim_all(1061).unwrap();
        let s = l.read("a", 8, 100).unwrap();
        assert_eq!((s.gap, s.events.len(), s.head), (Some((9, 10)), 0, 10));
        assert_eq!(l.read("a", 10, 100).unwrap().gap, None);
        assert_eq!(l.publish("a", Op::Insert, &recs(1), 1062).unwrap(), Some((11, 11)));
        assert_eq!(l.read("a", 10, 100).unwrap().gap, None);
    }

    #[test]
    fn polled_changes_tell_inserts_from_updates_and_move_the_cursor_with_them() {
        let dir = tempfile::tempdir().unwrap();
        let l = log(dir.path(), Backlog::default());
        assert_eq!(l.poll_cursor("a").unwrap(), None);
        let r = |k: &str, v: i64| vec![Value::Text(k.into()), Value::Int(v)];
        let at = |v: i64| PollCursor { value: Value::Int(v), at_value: vec![[v as u8; 32]] };
        l.publish_polled("a", None, &[r("x", 1), r("y", 2)], 0, &at(2), 10).unwrap();
        l.publish_polled("a", Some(&at(2)), &[r("x", 3)], 0, &at(3), 11).unwrap();
        assert_eq!(l.poll_cursor("a").unwrap(), Some(at(3)));
        // A poll that started from a cursor since moved writes nothing.
        let e = l.publish_polled("a", Some(&at(2)), &[r("z", 4)], 0, &at(4), 12).unwrap_err();
        assert!(matches!(e, EventError::CursorMoved { .. }), "{e}");
        assert_eq!(l.poll_cursor("a").unwrap(), Some(at(3)));
        let ops: Vec<Op> = l.read("a", 0, 10).unwrap().events.iter().map(|e| e.op).collect();
        assert_eq!(ops, [Op::Insert, Op::Insert, Op::Update]);
    }

    #[test]
    fn acknowledged_cursors_only_move_forward() {
        let dir = tempfile::tempdir().unwrap();
        let l = log(dir.path(), Backlog::default());
        assert_eq!(l.acked("x").unwrap(), None);
        l.ack("x", "grid@wuxi.liangxi.chongan", "a", 5, 1).unwrap();
        l.ack("x", "grid@wuxi.liangxi.chongan", "a", 3, 2).unwrap();
        assert_eq!(l.acked("x").unwrap(), Some(5));
    }

    #[test]
    fn json_records_are_checked_against_the_catalog() {
        let cat = fedgate_catalog::parse("c.toml", crate::exchange::pair::CATALOG).unwrap();
        let ds = cat.get("family-disputes").unwrap();
        let good = serde_json::json!({"case_id": "C1", "region": "wuxi.liangxi", "party_name": "欧阳娜娜",
            "party_id": "11010519491231002X", "mobile": "13900000001", "notes": "n", "age": 30, "kind": "婚姻"});
        let recs = records_from_json(ds, std::slice::from_ref(&good)).unwrap();
        assert_eq!(recs[0][6], Value::Int(30));
        let mut bad_age = good.clone();
        bad_age["age"] = serde_json::json!("thirty");
        let mut unknown = good.clone();
        unknown["colour"] = serde_json::json!("red");
        let mut bad_region = good.clone();
        bad_region["region"] = serde_json::json!("Wuxi!");
        let e = records_from_json(ds, &[good.clone(), bad_age]).unwrap_err();
        assert_eq!(e.index, 1);
        assert!(e.to_string().starts_with("records[1]: `age` must be an integer"), "{e}");
        let e = records_from_json(ds, &[unknown]).unwrap_err();
        assert_eq!(e.to_string(), "records[0]: dataset `family-disputes` has no field `colour`");
        assert!(records_from_json(ds, &[bad_region]).unwrap_err().why.contains("region path"));
        assert!(records_from_json(ds, &[serde_json::json!([1])]).unwrap_err().why.contains("JSON object"));
    }
}
