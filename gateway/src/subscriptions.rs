//! The subscriber's side, durably: the subscriptions this node holds and the events received
//! for them, in SQLite in the node's state folder (`subscriptions.db`).
//!
//! A verified batch is stored with the subscription's new cursor in one transaction
//! ([`SubscriptionStore::store_batch`]), so after SIGKILL the cursor never runs ahead of what is
//! stored, and a batch delivered again (at-least-once on the wire) is recognised by its ids and
//! kept once. Applications read what is stored after an id and acknowledge what they processed
//! ([`SubscriptionStore::app_ack`]); acknowledged events are deleted, so storage stays bounded
//! by what the application has not yet taken.

use std::path::{Path, PathBuf};

use fedgate_catalog::NodeId;
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use thiserror::Error;

use crate::exchange::subscription::{Subscription, VerifiedBatch};
use crate::state_db::StateDb;

/// Why the subscription store failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be opened, read or written.
    #[error("subscriptions {}: {source}", path.display())]
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
    /// No such subscription here.
    #[error("no subscription {0} at this gateway")]
    Unknown(String),
    /// A batch that does not continue the stored cursor and is not one already stored.
    #[error("subscription {id}: batch starts at {first}, but the stored cursor is {cursor}")]
    Discontinuous {
        /// The subscription.
        id: String,
        /// The batch's first id.
        first: u64,
        /// The stored cursor.
        cursor: u64,
    },
}

/// Where a subscription stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SubState {
    /// Receiving.
    Active,
    /// The provider's policy refused it (grant expired or revoked); kept for the record.
    Stopped,
    /// Cancelled here.
    Cancelled,
}

impl SubState {
    /// As stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            SubState::Active => "active",
            SubState::Stopped => "stopped",
            SubState::Cancelled => "cancelled",
        }
    }

    fn parse(s: &str) -> SubState {
        match s {
            "active" => SubState::Active,
            "stopped" => SubState::Stopped,
            _ => SubState::Cancelled,
        }
    }
}

/// A subscription as this node holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Held {
    /// The subscription's id: its exchange id.
    pub id: String,
    /// The provider.
    pub peer: String,
    /// The dataset.
    pub dataset: String,
    /// The purpose.
    pub purpose: String,
    /// The filters, field and value.
    pub filters: Vec<(String, String)>,
    /// Where it stands.
    pub state: SubState,
    /// Why it stopped, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The last event id received and stored.
    pub cursor: u64,
    /// The last event id the application acknowledged.
    pub delivered: u64,
    /// Unix seconds when it was created.
    pub created: i64,
}

impl Held {
    /// The subscription as the sessions know it.
    pub fn subscription(&self) -> Subscription {
        Subscription {
            exchange: self.id.clone(),
            dataset: self.dataset.clone(),
            purpose: self.purpose.clone(),
            filters: self.filters.clone(),
        }
    }
}

/// One stored item for the application: an event, or a gap the provider reported.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Item {
    /// The event id (for a gap: its first missing id).
    pub id: u64,
    /// The item as the application reads it: the record keyed by field name with `@id`,
    /// `@op` and `@time`, or `{"@id", "@gap": {"from", "to"}}`.
    pub json: serde_json::Value,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS subs (
    id TEXT PRIMARY KEY, peer TEXT NOT NULL, dataset TEXT NOT NULL, purpose TEXT NOT NULL,
    filters TEXT NOT NULL, state TEXT NOT NULL, reason TEXT, cursor INTEGER NOT NULL,
    delivered INTEGER NOT NULL, created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS inbox (
    sub TEXT NOT NULL, id INTEGER NOT NULL, item TEXT NOT NULL, PRIMARY KEY (sub, id)) WITHOUT ROWID;
";

/// The subscriber's store: one SQLite file.
pub struct SubscriptionStore {
    state: StateDb,
}

impl SubscriptionStore {
    /// Opens (creating) the store at `path`.
    pub fn open(path: &Path) -> Result<SubscriptionStore, StoreError> {
        let state = StateDb::open(
            path,
            SCHEMA,
            |path, source| StoreError::Folder { path, source },
            |source| StoreError::Db { path: path.to_owned(), source },
        )?;
        Ok(SubscriptionStore { state })
    }

    fn db(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        |source| StoreError::Db { path: self.state.path().to_owned(), source }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.state.lock()
    }

    fn bump(&self) {
        self.state.bump();
    }

    /// A receiver that sees a change after every stored batch and every state change.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.state.changes()
    }

    /// Records a new active subscription of `sub` from `peer`.
    pub fn create(&self, peer: &NodeId, sub: &Subscription, now: i64) -> Result<Held, StoreError> {
        let filters = serde_json::to_string(&sub.filters).unwrap_or_else(|_| "[]".into());
        self.lock()
            .execute(
                "INSERT INTO subs (id, peer, dataset, purpose, filters, state, cursor, delivered, created)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'active', 0, 0, ?6)",
                params![sub.exchange, peer.to_string(), sub.dataset, sub.purpose, filters, now],
            )
            .map_err(self.db())?;
        self.bump();
        self.get(&sub.exchange)
    }

    /// Every subscription, oldest first.
    pub fn list(&self) -> Result<Vec<Held>, StoreError> {
        let conn = self.lock();
        let mut s = conn
            .prepare("SELECT id, peer, dataset, purpose, filters, state, reason, cursor, delivered, created FROM subs ORDER BY created, id")
            .map_err(self.db())?;
        let rows = s.query_map([], held).map_err(self.db())?;
        rows.collect::<Result<_, _>>().map_err(self.db())
    }

    /// One subscription.
    pub fn get(&self, id: &str) -> Result<Held, StoreError> {
        self.lock()
            .query_row(
                "SELECT id, peer, dataset, purpose, filters, state, reason, cursor, delivered, created FROM subs WHERE id = ?1",
                params![id],
                held,
            )
            .optional()
            .map_err(self.db())?
            .ok_or_else(|| StoreError::Unknown(id.to_owned()))
    }

    /// Moves an active subscription to `state` (stopped or cancelled) with `reason`; returns
    /// false if it was not active.
    pub fn end(&self, id: &str, state: SubState, reason: &str) -> Result<bool, StoreError> {
        let n = self
            .lock()
            .execute(
                "UPDATE subs SET state = ?2, reason = ?3 WHERE id = ?1 AND state = 'active'",
                params![id, state.as_str(), reason],
            )
            .map_err(self.db())?;
        if n == 0 {
            self.get(id)?;
        }
        self.bump();
        Ok(n == 1)
    }

    /// Stores a verified batch and moves the cursor to its end, in one transaction. Returns
    /// false for a batch already stored (a redelivery), which changes nothing.
    pub fn store_batch(&self, id: &str, b: &VerifiedBatch) -> Result<bool, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(self.db())?;
        let cursor: u64 = tx
            .query_row("SELECT cursor FROM subs WHERE id = ?1", params![id], |r| r.get(0))
            .optional()
            .map_err(self.db())?
            .ok_or_else(|| StoreError::Unknown(id.to_owned()))?;
        if b.span.last <= cursor {
            return Ok(false);
        }
        if b.span.first != cursor + 1 {
            return Err(StoreError::Discontinuous { id: id.to_owned(), first: b.span.first, cursor });
        }
        {
            let mut ins = tx
                .prepare_cached("INSERT OR IGNORE INTO inbox (sub, id, item) VALUES (?1, ?2, ?3)")
                .map_err(self.db())?;
            if let Some((from, to)) = b.span.gap {
                let item = serde_json::json!({"@id": from, "@gap": {"from": from, "to": to}});
                ins.execute(params![id, from, item.to_string()]).map_err(self.db())?;
            }
            for e in &b.events {
                ins.execute(params![id, e.id, event_json(&b.fields, e).to_string()]).map_err(self.db())?;
            }
        }
        tx.execute("UPDATE subs SET cursor = ?2 WHERE id = ?1", params![id, b.span.last])
            .map_err(self.db())?;
        tx.commit().map_err(self.db())?;
        self.bump();
        Ok(true)
    }

    /// Up to `max` stored items of subscription `id` after `after`, in id order.
    pub fn items(&self, id: &str, after: u64, max: usize) -> Result<Vec<Item>, StoreError> {
        let conn = self.lock();
        let mut s = conn
            .prepare_cached("SELECT id, item FROM inbox WHERE sub = ?1 AND id > ?2 ORDER BY id LIMIT ?3")
            .map_err(self.db())?;
        let rows = s
            .query_map(params![id, after, max as i64], |r| Ok((r.get::<_, u64>(0)?, r.get::<_, String>(1)?)))
            .map_err(self.db())?;
        let mut out = Vec::new();
        for row in rows {
            let (id, text) = row.map_err(self.db())?;
            out.push(Item { id, json: serde_json::from_str(&text).unwrap_or(serde_json::Value::Null) });
        }
        Ok(out)
    }

    /// The application has processed everything up to `upto`: it is deleted here and never
    /// handed out again. Returns the acknowledged cursor (it only moves forward).
    pub fn app_ack(&self, id: &str, upto: u64) -> Result<u64, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(self.db())?;
        let n = tx
            .execute(
                "UPDATE subs SET delivered = MAX(delivered, MIN(?2, cursor)) WHERE id = ?1",
                params![id, upto],
            )
            .map_err(self.db())?;
        if n == 0 {
            return Err(StoreError::Unknown(id.to_owned()));
        }
        let delivered: u64 = tx
            .query_row("SELECT delivered FROM subs WHERE id = ?1", params![id], |r| r.get(0))
            .map_err(self.db())?;
        tx.execute("DELETE FROM inbox WHERE sub = ?1 AND id <= ?2", params![id, delivered])
            .map_err(self.db())?;
        tx.commit().map_err(self.db())?;
        self.bump();
        Ok(delivered)
    }
}

fn held(r: &rusqlite::Row<'_>) -> rusqlite::Result<Held> {
    let filters: String = r.get(4)?;
    Ok(Held {
        id: r.get(0)?,
        peer: r.get(1)?,
        dataset: r.get(2)?,
        purpose: r.get(3)?,
        filters: serde_json::from_str(&filters).unwrap_or_default(),
        state: SubState::parse(&r.get::<_, String>(5)?),
        reason: r.get(6)?,
        cursor: r.get(7)?,
        delivered: r.get(8)?,
        created: r.get(9)?,
    })
}

/// An event as the application reads it: the record keyed by field name, with `@id`, `@op`
/// and `@time` (RFC 3339, UTC).
pub fn event_json(fields: &[String], e: &crate::events::Event) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    m.insert("@id".into(), e.id.into());
    m.insert("@op".into(), e.op.as_str().into());
    let time = time::OffsetDateTime::from_unix_timestamp(e.time)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default();
    m.insert("@time".into(), time.into());
    for (f, v) in fields.iter().zip(&e.record) {
        m.insert(f.clone(), crate::governance::objection::field_json(f, v));
    }
    serde_json::Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Event, Op};
    use crate::exchange::subscription::Span;

    fn batch(first: u64, last: u64, ids: &[u64]) -> VerifiedBatch {
        let events = ids
            .iter()
            .map(|&id| Event {
                id,
                op: Op::Insert,
                time: 0,
                record: vec![fedgate_catalog::Value::Int(id as i64)],
            })
            .collect();
        VerifiedBatch {
            span: Span { first, last, gap: None },
            fields: vec!["n".into()],
            events,
            receipt: fedgate_audit::Entry::default(),
        }
    }

    #[test]
    fn batches_continue_the_cursor_survive_reopening_and_acked_items_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/subscriptions.db");
        let s = SubscriptionStore::open(&path).unwrap();
        let sub = Subscription::create("d", "statistics", vec![("k".into(), "v".into())]).unwrap();
        let peer: NodeId = "hotline12345@wuxi".parse().unwrap();
        s.create(&peer, &sub, 5).unwrap();
        assert!(s.store_batch(&sub.exchange, &batch(1, 4, &[2, 4])).unwrap());
        // A hole is refused, a repeat ignored.
        let e = s.store_batch(&sub.exchange, &batch(6, 7, &[7])).unwrap_err();
        assert!(matches!(e, StoreError::Discontinuous { first: 6, cursor: 4, .. }), "{e}");
        assert!(!s.store_batch(&sub.exchange, &batch(1, 4, &[2, 4])).unwrap());
        drop(s);
        let s = SubscriptionStore::open(&path).unwrap();
        let held = s.get(&sub.exchange).unwrap();
        assert_eq!(
            (held.cursor, held.state, held.filters.clone()),
            (4, SubState::Active, sub.filters.clone())
        );
        let items = s.items(&sub.exchange, 0, 10).unwrap();
        assert_eq!(items.iter().map(|i| i.id).collect::<Vec<_>>(), [2, 4]);
        assert_eq!(items[0].json["n"], 2);
        assert_eq!(items[0].json["@op"], "insert");
        // The application's ack cannot run ahead of what is stored, and deletes what it covers.
        assert_eq!(s.app_ack(&sub.exchange, 99).unwrap(), 4);
        assert!(s.items(&sub.exchange, 0, 10).unwrap().is_empty());
        assert_eq!(s.app_ack(&sub.exchange, 1).unwrap(), 4);
        assert!(s.end(&sub.exchange, SubState::Cancelled, "by the operator").unwrap());
        assert!(!s.end(&sub.exchange, SubState::Stopped, "again").unwrap());
        assert_eq!(s.get(&sub.exchange).unwrap().state, SubState::Cancelled);
        assert!(matches!(s.get("nope"), Err(StoreError::Unknown(_))));
        assert!(matches!(s.app_ack("nope", 1), Err(StoreError::Unknown(_))));
    }
}
