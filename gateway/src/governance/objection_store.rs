//! Both sides' objections, durably, in SQLite in the node's state folder (`objections.db`): the
//! consumer's with the last answer it verified, the provider's with what its steward decided.
//! Each change is one transaction, and the provider's copy is keyed by the exchange id the
//! consumer chose, so a resent objection is recognised, never stored twice.

use std::path::{Path, PathBuf};

use crate::state_db::StateDb;
use fedgate_catalog::NodeId;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;
use thiserror::Error;

use super::objection::{Answer, Mark, Objection, State};
use super::store::Role;

/// Why the objection store failed or refused a change.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ObjectionStoreError {
    /// The database could not be opened, read or written.
    #[error("objections {}: {source}", path.display())]
    Db {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The state folder could not be made.
    #[error("{}: {source}", path.display())]
    Folder {
        /// The folder.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// No such objection here.
    #[error("no {role} objection {id} at this gateway")]
    Unknown {
        /// The id asked for.
        id: String,
        /// `incoming` or `outgoing`.
        role: &'static str,
    },
    /// An objection resent under an id already used for a different one.
    #[error("objection {0} was already received with different content")]
    Conflict(String),
    /// A steward's decision on an objection already decided.
    #[error("objection {id} is {state}; only an open objection can be accepted or rejected")]
    Decided {
        /// The objection.
        id: String,
        /// Where it stands.
        state: &'static str,
    },
}

/// An objection as this node holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Filed {
    /// The objection id: its exchange id.
    pub id: String,
    /// This node's side: `outgoing` (it objected) or `incoming` (its record).
    pub role: Role,
    /// The other side.
    pub peer: String,
    /// The dataset.
    pub dataset: String,
    /// The purpose the consumer receives the record for.
    pub purpose: String,
    /// The record's primary key.
    pub key: String,
    /// The field objected to.
    pub field: String,
    /// Why the consumer holds it wrong.
    pub reason: String,
    /// The value the consumer proposed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proposed: Option<String>,
    /// Unix seconds when made (consumer) or received (provider).
    pub created: i64,
    /// Where it stands.
    pub state: State,
    /// The steward's reason for a rejection (or note on an acceptance).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer_reason: Option<String>,
    /// True if and only if accepting it changed the record at the source.
    pub corrected: bool,
    /// Unix seconds of the steward's decision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered: Option<i64>,
    /// The consumer's signature of the objection (hex).
    pub signature: String,
    /// The provider's signature of the last answer the consumer verified (hex).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer_signature: Option<String>,
}

impl Filed {
    /// The objection as signed.
    pub fn objection(&self, local: &NodeId) -> Result<Objection, String> {
        let (consumer, provider) = self.role.parties(local, &self.peer, "objection", &self.id)?;
        Ok(Objection {
            exchange: self.id.clone(),
            consumer,
            provider,
            dataset: self.dataset.clone(),
            purpose: self.purpose.clone(),
            key: self.key.clone(),
            field: self.field.clone(),
            reason: self.reason.clone(),
            proposed: self.proposed.clone(),
        })
    }

    /// The answer as it stands (what the provider signs and sends).
    pub fn answer(&self) -> Answer {
        Answer {
            state: self.state,
            reason: self.answer_reason.clone(),
            corrected: self.corrected,
            answered: self.answered,
        }
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS objections (
    id TEXT NOT NULL, role TEXT NOT NULL, peer TEXT NOT NULL, dataset TEXT NOT NULL,
    purpose TEXT NOT NULL, key TEXT NOT NULL, field TEXT NOT NULL, reason TEXT NOT NULL,
    proposed TEXT, created INTEGER NOT NULL, state TEXT NOT NULL, answer_reason TEXT,
    corrected INTEGER NOT NULL DEFAULT 0, answered INTEGER, signature TEXT NOT NULL,
    answer_signature TEXT, objected_digest TEXT,
    PRIMARY KEY (id, role));
";

const COLUMNS: &str = "id, role, peer, dataset, purpose, key, field, reason, proposed, created, state, \
    answer_reason, corrected, answered, signature, answer_signature";

/// Both sides' objections.
pub struct ObjectionStore {
    state: StateDb,
}

type Res<T> = Result<T, ObjectionStoreError>;

impl ObjectionStore {
    /// Opens (creating) the store at `path`.
    pub fn open(path: &Path) -> Res<ObjectionStore> {
        let state = StateDb::open(
            path,
            SCHEMA,
            |path, source| ObjectionStoreError::Folder { path, source },
            |source| ObjectionStoreError::Db { path: path.to_owned(), source },
        )?;
        Ok(ObjectionStore { state })
    }

    /// Notified whenever an objection is filed, received, answered or decided here.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.state.changes()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Res<T> {
        f(&mut self.state.lock())
            .map_err(|source| ObjectionStoreError::Db { path: self.state.path().to_owned(), source })
    }

    fn bump(&self) {
        self.state.bump();
    }

    /// Stores an objection this node files, signed, before it is sent.
    pub fn create_outgoing(&self, o: &Objection, signature: &str, now: i64) -> Res<Filed> {
        if !self.insert(o, Role::Outgoing, &o.provider, signature, now, State::Unsent, None)? {
            return Err(ObjectionStoreError::Conflict(o.exchange.clone()));
        }
        self.bump();
        self.get(&o.exchange, Role::Outgoing)
    }

    /// Stores an objection received from its consumer, with the digest of the value objected
    /// to as the source held it. Returns it and whether it is new; a resent objection (same id,
    /// same content) is the stored one; the same id with other content is a conflict.
    pub fn receive(&self, o: &Objection, signature: &str, digest: &str, now: i64) -> Res<(Filed, bool)> {
        // One statement decides: two copies arriving at once (a resend racing the original)
        // must not both pass a check made before the insert.
        let new = self.insert(o, Role::Incoming, &o.consumer, signature, now, State::Open, Some(digest))?;
        let f = self.get(&o.exchange, Role::Incoming)?;
        if new {
            self.bump();
            return Ok((f, true));
        }
        match f.objection(&o.provider) {
            Ok(stored) if &stored == o => Ok((f, false)),
            _ => Err(ObjectionStoreError::Conflict(o.exchange.clone())),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn insert(
        &self,
        o: &Objection,
        role: Role,
        peer: &NodeId,
        signature: &str,
        now: i64,
        state: State,
        digest: Option<&str>,
    ) -> Res<bool> {
        self.with(|c| {
            c.execute(
                "INSERT INTO objections (id, role, peer, dataset, purpose, key, field, reason, proposed, created, state, signature, objected_digest)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                 ON CONFLICT (id, role) DO NOTHING",
                params![
                    o.exchange,
                    role.as_str(),
                    peer.to_string(),
                    o.dataset,
                    o.purpose,
                    o.key,
                    o.field,
                    o.reason,
                    o.proposed,
                    now,
                    state.as_str(),
                    signature,
                    digest
                ],
            )
        })
        .map(|rows| rows == 1)
    }

    /// One objection, if this node holds it in `role`.
    pub fn find(&self, id: &str, role: Role) -> Res<Option<Filed>> {
        let sql = format!("SELECT {COLUMNS} FROM objections WHERE id = ?1 AND role = ?2");
        self.with(|c| c.query_row(&sql, params![id, role.as_str()], filed).optional())
    }

    /// One objection.
    pub fn get(&self, id: &str, role: Role) -> Res<Filed> {
        self.find(id, role)?
            .ok_or_else(|| ObjectionStoreError::Unknown { id: id.to_owned(), role: role.as_str() })
    }

    /// Every objection of `role` (both sides if `None`), newest first.
    pub fn list(&self, role: Option<Role>) -> Res<Vec<Filed>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM objections WHERE ?1 IS NULL OR role = ?1 ORDER BY created DESC, id"
        );
        self.with(|c| {
            let mut st = c.prepare(&sql)?;
            let rows = st.query_map(params![role.map(Role::as_str)], filed)?;
            rows.collect()
        })
    }

    /// The consumer's objections not yet decided: the ones to keep sending.
    pub fn to_ask(&self) -> Res<Vec<Filed>> {
        Ok(self.list(Some(Role::Outgoing))?.into_iter().filter(|f| f.state.is_open()).collect())
    }

    /// The provider's open objections, as the marker set loads them.
    pub fn open_marks(&self) -> Res<Vec<(String, String, Mark)>> {
        Ok(self
            .list(Some(Role::Incoming))?
            .into_iter()
            .filter(|f| f.state == State::Open)
            .map(|f| (f.dataset, f.key, Mark { id: f.id, field: f.field, received: f.created }))
            .collect())
    }

    /// The digest of the value objected to, as the source held it when the objection arrived.
    pub fn objected_digest(&self, id: &str) -> Res<Option<String>> {
        self.with(|c| {
            c.query_row(
                "SELECT objected_digest FROM objections WHERE id = ?1 AND role = 'incoming'",
                params![id],
                |r| r.get(0),
            )
            .optional()
            .map(Option::flatten)
        })
    }

    /// Records the provider's verified answer to an outgoing objection; true if and only if it
    /// changed what was stored (the caller audits only then).
    pub fn record_answer(&self, id: &str, a: &Answer, signature: &str) -> Res<bool> {
        let n = self.with(|c| {
            c.execute(
                "UPDATE objections SET state = ?3, answer_reason = ?4, corrected = ?5, answered = ?6,
                     answer_signature = ?7
                 WHERE id = ?1 AND role = ?2 AND NOT (state IS ?3 AND answer_reason IS ?4
                     AND corrected IS ?5 AND answered IS ?6)",
                params![
                    id,
                    Role::Outgoing.as_str(),
                    a.state.as_str(),
                    a.reason,
                    a.corrected,
                    a.answered,
                    Some(signature).filter(|s| !s.is_empty())
                ],
            )
        })?;
        if n > 0 {
            self.bump();
        }
        Ok(n > 0)
    }

    /// The steward decides an open incoming objection: `accepted` (with whether the source was
    /// corrected) or `rejected`, with the reason.
    pub fn decide(&self, id: &str, a: &Answer) -> Res<Filed> {
        let f = self.get(id, Role::Incoming)?;
        if f.state != State::Open {
            return Err(ObjectionStoreError::Decided { id: id.to_owned(), state: f.state.as_str() });
        }
        self.with(|c| {
            c.execute(
                "UPDATE objections SET state = ?2, answer_reason = ?3, corrected = ?4, answered = ?5
                 WHERE id = ?1 AND role = 'incoming' AND state = 'open'",
                params![id, a.state.as_str(), a.reason, a.corrected, a.answered],
            )
        })?;
        self.bump();
        self.get(id, Role::Incoming)
    }
}

fn filed(r: &Row<'_>) -> rusqlite::Result<Filed> {
    let role = if r.get::<_, String>(1)? == "incoming" { Role::Incoming } else { Role::Outgoing };
    let state: String = r.get(10)?;
    Ok(Filed {
        id: r.get(0)?,
        role,
        peer: r.get(2)?,
        dataset: r.get(3)?,
        purpose: r.get(4)?,
        key: r.get(5)?,
        field: r.get(6)?,
        reason: r.get(7)?,
        proposed: r.get(8)?,
        created: r.get(9)?,
        state: State::parse(&state).unwrap_or(State::Open),
        answer_reason: r.get(11)?,
        corrected: r.get(12)?,
        answered: r.get(13)?,
        signature: r.get(14)?,
        answer_signature: r.get(15)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objection(x: &str) -> Objection {
        Objection {
            exchange: x.repeat(32),
            consumer: "mediation-center@wuxi".parse().unwrap(),
            provider: "petition@wuxi".parse().unwrap(),
            dataset: "petitions".into(),
            purpose: "dispute-mediation".into(),
            key: "XF-1".into(),
            field: "mobile".into(),
            reason: "wrong number".into(),
            proposed: None,
        }
    }

    #[test]
    fn copies_arriving_at_once_are_stored_once_and_none_fails() {
        // The original and a resend racing it (seen in the demo): each receipt is new or the
        // stored one, never an error, and exactly one is new.
        let dir = tempfile::tempdir().unwrap();
        let s = ObjectionStore::open(&dir.path().join("objections.db")).unwrap();
        for x in ["a", "b", "c", "d", "e", "f", "g", "h"] {
            let gate = std::sync::Barrier::new(4);
            let news: Vec<bool> = std::thread::scope(|t| {
                let copies: Vec<_> = (0..4)
                    .map(|_| {
                        t.spawn(|| {
                            gate.wait();
                            s.receive(&objection(x), "sig", "d", 100).map(|(_, new)| new)
                        })
                    })
                    .collect();
                copies.into_iter().map(|c| c.join().unwrap().unwrap()).collect()
            });
            assert_eq!(news.iter().filter(|n| **n).count(), 1, "{x}: {news:?}");
        }
    }

    #[test]
    fn a_resent_objection_is_stored_once_and_decisions_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("objections.db");
        {
            let s = ObjectionStore::open(&path).unwrap();
            let (f, new) = s.receive(&objection("a"), "sig", "d1", 100).unwrap();
            assert!(new && f.state == State::Open);
            let (_, new) = s.receive(&objection("a"), "sig", "d2", 200).unwrap();
            assert!(!new);
            assert_eq!(s.objected_digest(&f.id).unwrap().as_deref(), Some("d1"), "the first receipt stands");
            let other = Objection { key: "XF-2".into(), ..objection("a") };
            assert!(matches!(s.receive(&other, "sig", "d", 100), Err(ObjectionStoreError::Conflict(_))));
            s.receive(&objection("b"), "sig", "d", 150).unwrap();
            assert_eq!(s.open_marks().unwrap().len(), 2);
        }
        let s = ObjectionStore::open(&path).unwrap();
        let reject = Answer {
            state: State::Rejected,
            reason: Some("checked".into()),
            corrected: false,
            answered: Some(300),
        };
        let f = s.decide(&"a".repeat(32), &reject).unwrap();
        assert_eq!((f.state, f.answer_reason.as_deref()), (State::Rejected, Some("checked")));
        assert!(matches!(s.decide(&"a".repeat(32), &reject), Err(ObjectionStoreError::Decided { .. })));
        let marks = s.open_marks().unwrap();
        assert_eq!(marks.len(), 1);
        assert_eq!(marks[0].2.id, "b".repeat(32));
        assert!(matches!(s.get("c", Role::Incoming), Err(ObjectionStoreError::Unknown { .. })));
    }

    #[test]
    fn the_consumer_records_an_answer_only_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let s = ObjectionStore::open(&dir.path().join("objections.db")).unwrap();
        let f = s.create_outgoing(&objection("c"), "sig", 100).unwrap();
        assert_eq!(f.state, State::Unsent);
        assert_eq!(s.to_ask().unwrap().len(), 1);
        let mut a = Answer { state: State::Open, reason: None, corrected: false, answered: None };
        assert!(s.record_answer(&f.id, &a, "p1").unwrap());
        assert!(!s.record_answer(&f.id, &a, "p2").unwrap());
        a.state = State::Accepted;
        a.corrected = true;
        a.answered = Some(500);
        assert!(s.record_answer(&f.id, &a, "p3").unwrap());
        let got = s.get(&f.id, Role::Outgoing).unwrap();
        assert_eq!(
            (got.state, got.corrected, got.answer_signature.as_deref()),
            (State::Accepted, true, Some("p3"))
        );
        assert!(s.to_ask().unwrap().is_empty(), "a decided objection is not asked about again");
    }
}
