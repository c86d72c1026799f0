//! Both sides' sharing requests, durably, in SQLite in the node's state folder
//! (`requests.db`): the consumer's requests with the last answer it verified, the provider's
//! with what its steward decided. Each change is one transaction, so after SIGKILL a request is
//! either stored whole or not at all, and the provider's copy is keyed by the exchange id the
//! consumer chose, so a resent request is recognised, never stored twice.
//!
//! The approvals in force are also the grants file the gateway manages next to the steward's
//! ([`RequestStore::approved_grants`], written by [`write_grants_file`]).

use std::path::{Path, PathBuf};

use crate::state_db::StateDb;
use fedgate_catalog::NodeId;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;
use thiserror::Error;

use super::request::{grant_id, grant_toml, Answer, Approval, SharingRequest, State};

/// Why the request store failed or refused a change.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be opened, read or written.
    #[error("requests {}: {source}", path.display())]
    Db {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// A file (the folder, the managed grants file) could not be written.
    #[error("{}: {source}", path.display())]
    File {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// No such request here.
    #[error("no {role} request {id} at this gateway")]
    Unknown {
        /// The id asked for.
        id: String,
        /// `incoming` or `outgoing`.
        role: &'static str,
    },
    /// A request resent under an id already used for a different one.
    #[error("request {0} was already received with different content")]
    Conflict(String),
    /// A steward's decision that does not fit where the request stands.
    #[error("request {id} is {state}; {wanted}")]
    State {
        /// The request.
        id: String,
        /// Where it stands.
        state: &'static str,
        /// What the change needs.
        wanted: &'static str,
    },
}

/// Which side of a request this node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// This node asked (the consumer).
    Outgoing,
    /// This node was asked (the provider).
    Incoming,
}

impl Role {
    /// As stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Outgoing => "outgoing",
            Role::Incoming => "incoming",
        }
    }

    /// (consumer, provider) of an exchange held in this role by `local` with `peer` (a stored
    /// peer id, named in the error as `what` `id`'s).
    pub fn parties(
        self,
        local: &NodeId,
        peer: &str,
        what: &str,
        id: &str,
    ) -> Result<(NodeId, NodeId), String> {
        let peer: NodeId = peer.parse().map_err(|e| format!("{what} {id}: peer: {e}"))?;
        Ok(match self {
            Role::Outgoing => (local.clone(), peer),
            Role::Incoming => (peer, local.clone()),
        })
    }
}

/// A request as this node holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Held {
    /// The request id: its exchange id.
    pub id: String,
    /// This node's side.
    pub role: Role,
    /// The other side: the provider of an outgoing request, the consumer of an incoming one.
    pub peer: String,
    /// The dataset.
    pub dataset: String,
    /// The purpose.
    pub purpose: String,
    /// Fields asked for (empty: the whole dataset).
    pub fields: Vec<String>,
    /// Unix seconds the consumer asked to use the data until.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<i64>,
    /// Why the consumer asks.
    pub reason: String,
    /// Unix seconds when made (consumer) or received (provider).
    pub created: i64,
    /// Where it stands.
    pub state: State,
    /// Unix seconds by which the provider must answer (known to the consumer once the provider
    /// stored the request).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline: Option<i64>,
    /// True if and only if the answer is owed and its deadline has passed (at listing time).
    pub overdue: bool,
    /// The steward's reason for a refusal or revocation (or a note on an approval).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer_reason: Option<String>,
    /// The grant an approval wrote.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    /// The grant's clearance (approved requests); at the provider before the answer, the
    /// highest grade the request covers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clearance: Option<u8>,
    /// Unix seconds the grant ends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant_until: Option<i64>,
    /// Records per day the grant allows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<u64>,
    /// Rows the grant lets through (`own`, `all`, a region).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<String>,
    /// Unix seconds of the steward's last decision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered: Option<i64>,
    /// The consumer's signature of the request (hex).
    pub signature: String,
    /// The provider's signature of the last answer the consumer verified (hex).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer_signature: Option<String>,
}

impl Held {
    /// The request as signed.
    pub fn request(&self, local: &NodeId) -> Result<SharingRequest, String> {
        let (consumer, provider) = self.role.parties(local, &self.peer, "request", &self.id)?;
        Ok(SharingRequest {
            exchange: self.id.clone(),
            consumer,
            provider,
            dataset: self.dataset.clone(),
            purpose: self.purpose.clone(),
            fields: self.fields.clone(),
            until: self.until,
            reason: self.reason.clone(),
        })
    }

    /// The answer as it stands (what the provider signs and sends).
    pub fn answer(&self) -> Answer {
        Answer {
            state: self.state,
            deadline: self.deadline.unwrap_or(self.created),
            reason: self.answer_reason.clone(),
            grant: self.grant.clone(),
            clearance: self.clearance.filter(|_| self.state != State::Pending),
            until: self.grant_until,
            quota: self.quota,
            answered: self.answered,
        }
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS requests (
    id TEXT NOT NULL, role TEXT NOT NULL, peer TEXT NOT NULL, dataset TEXT NOT NULL,
    purpose TEXT NOT NULL, fields TEXT NOT NULL, until INTEGER, reason TEXT NOT NULL,
    created INTEGER NOT NULL, state TEXT NOT NULL, deadline INTEGER, answer_reason TEXT,
    grant_id TEXT, clearance INTEGER, grant_until INTEGER, quota INTEGER, rows TEXT,
    answered INTEGER, signature TEXT NOT NULL, answer_signature TEXT,
    PRIMARY KEY (id, role));
";

const COLUMNS: &str = "id, role, peer, dataset, purpose, fields, until, reason, created, state, deadline, \
    answer_reason, grant_id, clearance, grant_until, quota, rows, answered, signature, answer_signature";

/// Both sides' requests.
pub struct RequestStore {
    state: StateDb,
}

impl RequestStore {
    /// Opens (creating) the store at `path`.
    pub fn open(path: &Path) -> Result<RequestStore, StoreError> {
        let state = StateDb::open(
            path,
            SCHEMA,
            |path, source| StoreError::File { path, source },
            |source| StoreError::Db { path: path.to_owned(), source },
        )?;
        Ok(RequestStore { state })
    }

    /// Notified whenever a request is made, answered or revoked here.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.state.changes()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        f(&mut self.state.lock())
            .map_err(|source| StoreError::Db { path: self.state.path().to_owned(), source })
    }

    fn bump(&self) {
        self.state.bump();
    }

    /// Stores a request this node makes, signed, before it is sent.
    pub fn create_outgoing(
        &self,
        req: &SharingRequest,
        signature: &str,
        now: i64,
    ) -> Result<Held, StoreError> {
        if !self.insert(req, Role::Outgoing, &req.provider, signature, now, State::Unsent, None, None)? {
            return Err(StoreError::Conflict(req.exchange.clone()));
        }
        self.bump();
        self.get(&req.exchange, Role::Outgoing, now)
    }

    /// Stores a request received from its consumer, due at `deadline`, covering fields up to
    /// `grade`. Returns it and whether it is new; a resent request (same id, same content) is
    /// the stored one; the same id with other content is a conflict.
    pub fn receive(
        &self,
        req: &SharingRequest,
        signature: &str,
        deadline: i64,
        grade: u8,
        now: i64,
    ) -> Result<(Held, bool), StoreError> {
        // One statement decides: two copies of a request arriving at once (a resend racing the
        // original) must not both pass a check made before the insert.
        let pending = State::Pending;
        let new = self.insert(
            req,
            Role::Incoming,
            &req.consumer,
            signature,
            now,
            pending,
            Some(deadline),
            Some(grade),
        )?;
        let held = self.get(&req.exchange, Role::Incoming, now)?;
        if new {
            self.bump();
            return Ok((held, true));
        }
        match held.request(&req.provider) {
            Ok(stored) if &stored == req => Ok((held, false)),
            _ => Err(StoreError::Conflict(req.exchange.clone())),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn insert(
        &self,
        req: &SharingRequest,
        role: Role,
        peer: &NodeId,
        signature: &str,
        now: i64,
        state: State,
        deadline: Option<i64>,
        grade: Option<u8>,
    ) -> Result<bool, StoreError> {
        let fields = serde_json::to_string(&req.fields).unwrap_or_else(|_| "[]".into());
        self.with(|c| {
            c.execute(
                "INSERT INTO requests (id, role, peer, dataset, purpose, fields, until, reason, created, state, deadline, clearance, signature)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                 ON CONFLICT (id, role) DO NOTHING",
                params![
                    req.exchange,
                    role.as_str(),
                    peer.to_string(),
                    req.dataset,
                    req.purpose,
                    fields,
                    req.until,
                    req.reason,
                    now,
                    state.as_str(),
                    deadline,
                    grade,
                    signature
                ],
            )
        })
        .map(|rows| rows == 1)
    }

    fn find(&self, id: &str, role: Role, now: i64) -> Result<Option<Held>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM requests WHERE id = ?1 AND role = ?2");
        self.with(|c| c.query_row(&sql, params![id, role.as_str()], |r| held(r, now)).optional())
    }

    /// One request, as it stands at `now`.
    pub fn get(&self, id: &str, role: Role, now: i64) -> Result<Held, StoreError> {
        self.find(id, role, now)?
            .ok_or_else(|| StoreError::Unknown { id: id.to_owned(), role: role.as_str() })
    }

    /// Every request of `role` (both sides if `None`), newest first.
    pub fn list(&self, role: Option<Role>, now: i64) -> Result<Vec<Held>, StoreError> {
        let sql =
            format!("SELECT {COLUMNS} FROM requests WHERE ?1 IS NULL OR role = ?1 ORDER BY created DESC, id");
        self.with(|c| {
            let mut st = c.prepare(&sql)?;
            let rows = st.query_map(params![role.map(Role::as_str)], |r| held(r, now))?;
            rows.collect()
        })
    }

    /// The consumer's requests whose answer may still change: not yet answered, or approved and
    /// not yet expired (a revocation is an answer too).
    pub fn to_ask(&self, now: i64) -> Result<Vec<Held>, StoreError> {
        Ok(self
            .list(Some(Role::Outgoing), now)?
            .into_iter()
            .filter(|h| {
                h.state.awaits_answer()
                    || (h.state == State::Approved && h.grant_until.is_none_or(|u| u > now))
            })
            .collect())
    }

    /// Records the provider's verified answer to an outgoing request; true if and only if it
    /// changed what was stored (the caller audits only then).
    pub fn record_answer(&self, id: &str, a: &Answer, signature: &str) -> Result<bool, StoreError> {
        let n = self.with(|c| {
            c.execute(
                "UPDATE requests SET state = ?3, deadline = ?4, answer_reason = ?5, grant_id = ?6,
                     clearance = ?7, grant_until = ?8, quota = ?9, answered = ?10, answer_signature = ?11
                 WHERE id = ?1 AND role = ?2 AND NOT (state IS ?3 AND deadline IS ?4 AND answer_reason IS ?5
                     AND grant_id IS ?6 AND clearance IS ?7 AND grant_until IS ?8 AND quota IS ?9
                     AND answered IS ?10)",
                params![
                    id,
                    Role::Outgoing.as_str(),
                    a.state.as_str(),
                    a.deadline,
                    a.reason,
                    a.grant,
                    a.clearance,
                    a.until,
                    a.quota.and_then(|q| i64::try_from(q).ok()),
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

    fn steward_change(
        &self,
        id: &str,
        now: i64,
        from: State,
        wanted: &'static str,
        sql: &str,
        values: &[&dyn rusqlite::ToSql],
    ) -> Result<Held, StoreError> {
        let held = self.get(id, Role::Incoming, now)?;
        if held.state != from {
            return Err(StoreError::State { id: id.to_owned(), state: held.state.as_str(), wanted });
        }
        let mut all: Vec<&dyn rusqlite::ToSql> = vec![&held.id, &now];
        all.extend_from_slice(values);
        self.with(|c| c.execute(sql, all.as_slice()))?;
        self.bump();
        self.get(id, Role::Incoming, now)
    }

    /// The steward approves a pending incoming request.
    pub fn approve(&self, id: &str, a: &Approval, now: i64) -> Result<Held, StoreError> {
        let grant = grant_id(id);
        let quota = a.quota.and_then(|q| i64::try_from(q).ok());
        self.steward_change(
            id,
            now,
            State::Pending,
            "only a pending request can be approved",
            "UPDATE requests SET state = 'approved', answered = ?2, grant_id = ?3, clearance = ?4,
                 grant_until = ?5, quota = ?6, rows = ?7 WHERE id = ?1 AND role = 'incoming'",
            &[&grant, &a.clearance, &a.until, &quota, &a.rows],
        )
    }

    /// The steward refuses a pending incoming request, saying why.
    pub fn refuse(&self, id: &str, reason: &str, now: i64) -> Result<Held, StoreError> {
        self.steward_change(
            id,
            now,
            State::Pending,
            "only a pending request can be refused",
            "UPDATE requests SET state = 'refused', answered = ?2, answer_reason = ?3
                 WHERE id = ?1 AND role = 'incoming'",
            &[&reason],
        )
    }

    /// The steward revokes an approved request's grant, saying why.
    pub fn revoke(&self, id: &str, reason: &str, now: i64) -> Result<Held, StoreError> {
        self.steward_change(
            id,
            now,
            State::Approved,
            "only an approved request's grant can be revoked",
            "UPDATE requests SET state = 'revoked', answered = ?2, answer_reason = ?3
                 WHERE id = ?1 AND role = 'incoming'",
            &[&reason],
        )
    }

    /// The grants file of every approval in force (revoked ones are gone; expired ones stay,
    /// harmless past their `valid_until`, until the steward's records are cleaned).
    pub fn approved_grants(&self, local: &NodeId, now: i64) -> Result<String, StoreError> {
        let mut out = String::from(
            "# Managed by the gateway: grants from approved sharing requests (fedgate requests approve).\n\
             # Do not edit; revoke with `fedgate requests revoke`.\n",
        );
        for h in self.list(Some(Role::Incoming), now)?.into_iter().filter(|h| h.state == State::Approved) {
            let (Ok(req), Some(clearance), Some(until)) = (h.request(local), h.clearance, h.grant_until)
            else {
                continue;
            };
            let rows = h.rows.clone().unwrap_or_else(|| "own".into());
            out.push('\n');
            out.push_str(&grant_toml(&req, &Approval { clearance, until, quota: h.quota, rows }));
        }
        Ok(out)
    }
}

fn held(r: &Row<'_>, now: i64) -> rusqlite::Result<Held> {
    let role = if r.get::<_, String>(1)? == "incoming" { Role::Incoming } else { Role::Outgoing };
    let fields: String = r.get(5)?;
    let state_text: String = r.get(9)?;
    let state = State::parse(&state_text).unwrap_or(State::Pending);
    let deadline: Option<i64> = r.get(10)?;
    let quota: Option<i64> = r.get(15)?;
    Ok(Held {
        id: r.get(0)?,
        role,
        peer: r.get(2)?,
        dataset: r.get(3)?,
        purpose: r.get(4)?,
        fields: serde_json::from_str(&fields).unwrap_or_default(),
        until: r.get(6)?,
        reason: r.get(7)?,
        created: r.get(8)?,
        state,
        deadline,
        overdue: super::request::overdue(state, deadline, now),
        answer_reason: r.get(11)?,
        grant: r.get(12)?,
        clearance: r.get(13)?,
        grant_until: r.get(14)?,
        quota: quota.and_then(|q| u64::try_from(q).ok()),
        rows: r.get(16)?,
        answered: r.get(17)?,
        signature: r.get(18)?,
        answer_signature: r.get(19)?,
    })
}

/// Writes the managed grants file whole or not at all (a temporary file renamed over it), so
/// the reload never reads half of it.
pub fn write_grants_file(path: &Path, text: &str) -> Result<(), StoreError> {
    use std::io::Write;
    let err = |source| StoreError::File { path: path.to_owned(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("toml.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(x: &str) -> SharingRequest {
        SharingRequest {
            exchange: x.repeat(32),
            consumer: "court@wuxi.xinwu".parse().unwrap(),
            provider: "womens-federation@wuxi".parse().unwrap(),
            dataset: "family-disputes".into(),
            purpose: "dispute-mediation".into(),
            fields: vec!["case_id".into(), "party_name".into()],
            until: None,
            reason: "case 17".into(),
        }
    }

    #[test]
    fn copies_arriving_at_once_are_stored_once_and_none_fails() {
        // The original and a resend racing it: each receipt is new or the stored one, never an
        // error, and exactly one is new.
        let dir = tempfile::tempdir().unwrap();
        let s = RequestStore::open(&dir.path().join("requests.db")).unwrap();
        for x in ["a", "b", "c", "d", "e", "f", "g", "h"] {
            let gate = std::sync::Barrier::new(4);
            let news: Vec<bool> = std::thread::scope(|t| {
                let copies: Vec<_> = (0..4)
                    .map(|_| {
                        t.spawn(|| {
                            gate.wait();
                            s.receive(&req(x), "sig", 500, 3, 100).map(|(_, new)| new)
                        })
                    })
                    .collect();
                copies.into_iter().map(|c| c.join().unwrap().unwrap()).collect()
            });
            assert_eq!(news.iter().filter(|n| **n).count(), 1, "{x}: {news:?}");
        }
    }

    #[test]
    fn a_resent_request_is_stored_once_and_a_reused_id_is_a_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let s = RequestStore::open(&dir.path().join("requests.db")).unwrap();
        let (h, new) = s.receive(&req("a"), "sig", 500, 3, 100).unwrap();
        assert!(new && h.state == State::Pending && h.deadline == Some(500));
        let (again, new) = s.receive(&req("a"), "sig", 900, 3, 200).unwrap();
        assert!(!new);
        assert_eq!(again.deadline, Some(500), "the first receipt's deadline stands");
        let other = SharingRequest { dataset: "petitions".into(), ..req("a") };
        assert!(matches!(s.receive(&other, "sig", 500, 3, 100), Err(StoreError::Conflict(_))));
        // Overdue is computed at reading time.
        assert!(s.get(&"a".repeat(32), Role::Incoming, 501).unwrap().overdue);
    }

    #[test]
    fn steward_decisions_follow_the_states_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("requests.db");
        let local: NodeId = "womens-federation@wuxi".parse().unwrap();
        {
            let s = RequestStore::open(&path).unwrap();
            s.receive(&req("a"), "sig", 500, 3, 100).unwrap();
            s.receive(&req("b"), "sig", 500, 3, 100).unwrap();
            let a = Approval { clearance: 3, until: 10_000, quota: Some(50), rows: "own".into() };
            let h = s.approve(&"a".repeat(32), &a, 150).unwrap();
            assert_eq!((h.state, h.grant.as_deref()), (State::Approved, Some(&*grant_id(&"a".repeat(32)))));
            assert!(matches!(s.approve(&"a".repeat(32), &a, 150), Err(StoreError::State { .. })));
            assert!(matches!(s.revoke(&"b".repeat(32), "x", 150), Err(StoreError::State { .. })));
            s.refuse(&"b".repeat(32), "not needed for mediation", 160).unwrap();
            assert!(matches!(s.get("c", Role::Incoming, 0), Err(StoreError::Unknown { .. })));
        }
        let s = RequestStore::open(&path).unwrap();
        let text = s.approved_grants(&local, 200).unwrap();
        assert_eq!(text.matches("[[grant]]").count(), 1, "{text}");
        assert!(text.contains(&grant_id(&"a".repeat(32))) && text.contains("quota = 50"), "{text}");
        let b = s.get(&"b".repeat(32), Role::Incoming, 200).unwrap();
        assert_eq!((b.state, b.answer_reason.as_deref()), (State::Refused, Some("not needed for mediation")));
        s.revoke(&"a".repeat(32), "case closed", 300).unwrap();
        assert_eq!(s.approved_grants(&local, 300).unwrap().matches("[[grant]]").count(), 0);
    }

    #[test]
    fn the_consumer_records_an_answer_only_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let s = RequestStore::open(&dir.path().join("requests.db")).unwrap();
        let h = s.create_outgoing(&req("c"), "sig", 100).unwrap();
        assert_eq!(h.state, State::Unsent);
        let mut a = Answer {
            state: State::Pending,
            deadline: 900,
            reason: None,
            grant: None,
            clearance: None,
            until: None,
            quota: None,
            answered: None,
        };
        assert!(s.record_answer(&h.id, &a, "p1").unwrap());
        assert!(!s.record_answer(&h.id, &a, "p2").unwrap());
        a.state = State::Refused;
        a.reason = Some("no".into());
        assert!(s.record_answer(&h.id, &a, "p3").unwrap());
        let got = s.get(&h.id, Role::Outgoing, 1000).unwrap();
        assert_eq!(
            (got.state, got.answer_signature.as_deref(), got.overdue),
            (State::Refused, Some("p3"), false)
        );
        assert!(s.to_ask(1000).unwrap().is_empty());
    }
}
