//! Both ends of every referral this node takes part in, durably: SQLite in the node's state
//! folder (`referrals.db`).
//!
//! A step is one row, keyed by (exchange, seq), written in the same transaction as the
//! referral's new state, whether this node took it ([`ReferralStore::take`]) or the peer did
//! ([`ReferralStore::receive`]). Each row says whether it has been audited and, for this node's
//! own steps, whether the peer acknowledged it; the drivers audit before they acknowledge and
//! resend until acknowledged. So after SIGKILL at any point a step is either stored (and then
//! audited and delivered on restart) or not (and the peer, which has no acknowledgement,
//! sends it again); a resend is recognised by its seq and digest and stored once.
//!
//! Every stored step also gets the next number of the node's event sequence (`event`), which is
//! what applications long-poll (`GET /v1/referrals/events?after=`).

use std::path::{Path, PathBuf};

use fedgate_catalog::{NodeId, Value};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::Serialize;
use thiserror::Error;

use crate::exchange::referral::{self as rules, Admit, Held, Party, State, StepError};
use crate::state_db::StateDb;
use crate::wire::referral::{Case, Step};
use crate::wire::ErrorCode;

/// Why the referral store failed or refused.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ReferralError {
    /// The database could not be opened, read or written.
    #[error("referrals {}: {source}", path.display())]
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
    /// No such referral here.
    #[error("no referral {0} at this gateway")]
    Unknown(String),
    /// The step is not allowed now, or not to this node.
    #[error("referral {exchange}: {error}")]
    Refused {
        /// The referral.
        exchange: String,
        /// Why.
        error: StepError,
    },
    /// A stored step that no longer decodes (the file was edited or damaged).
    #[error("referral {exchange} step {seq} is damaged in the store: {why}")]
    Damaged {
        /// The referral.
        exchange: String,
        /// The step.
        seq: u64,
        /// What failed.
        why: String,
    },
}

/// A referral as this node holds it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Referral {
    /// Its exchange id.
    pub exchange: String,
    /// This node's part.
    pub party: Party,
    /// The other end.
    pub peer: String,
    /// The sender's reference.
    pub reference: String,
    /// What it is about.
    pub subject: String,
    /// What the receiver is asked to do.
    pub instructions: String,
    /// Unix seconds by which it must be resolved.
    pub deadline: i64,
    /// Where it stands.
    pub state: State,
    /// The last step's seq.
    pub seq: u64,
    /// The referral this one was forwarded from, if any (held here as its receiver).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Unix seconds of its first step.
    pub created: i64,
    /// Unix seconds of its last step.
    pub updated: i64,
}

impl Referral {
    /// True if and only if it is past its deadline at `now` and still owes a result.
    pub fn overdue(&self, now: i64) -> bool {
        rules::overdue(self.state, self.deadline, now)
    }

    /// What admitting the peer's next step needs.
    pub fn held(&self) -> Option<Held> {
        Some(Held { party: self.party, peer: self.peer.parse().ok()?, state: self.state, seq: self.seq })
    }
}

/// One stored step.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredStep {
    /// The referral.
    pub exchange: String,
    /// Its place in the referral's history.
    pub seq: u64,
    /// Who took it.
    pub author: String,
    /// The other end.
    pub peer: String,
    /// Unix seconds when it was taken.
    pub at: i64,
    /// The step.
    pub step: Step,
    /// The referral's state after it.
    pub state: State,
    /// The author's signature (hex), for steps received from the peer.
    pub signature: Option<String>,
    /// True for this node's own steps.
    pub outgoing: bool,
    /// For own steps: the peer acknowledged it.
    pub delivered: bool,
    /// The step is in this node's audit log.
    pub audited: bool,
    /// Its number in the node's event sequence.
    pub event: u64,
}

/// What became of a step from the peer.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// Stored; with any step this node took in consequence (a forwarded referral resolved
    /// resolves its parent), all in one transaction. Each must be audited.
    New(Vec<StoredStep>),
    /// Already stored: acknowledge again (after auditing it, if that did not happen).
    Duplicate(Box<StoredStep>),
    /// Refused with this code and message; nothing stored.
    Refused(ErrorCode, String),
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS referrals (
    exchange TEXT PRIMARY KEY, party TEXT NOT NULL, peer TEXT NOT NULL, reference TEXT NOT NULL,
    subject TEXT NOT NULL, instructions TEXT NOT NULL, deadline INTEGER NOT NULL,
    state TEXT NOT NULL, seq INTEGER NOT NULL, parent TEXT, created INTEGER NOT NULL,
    updated INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS referrals_parent ON referrals (parent);
CREATE TABLE IF NOT EXISTS steps (
    exchange TEXT NOT NULL, seq INTEGER NOT NULL, author TEXT NOT NULL, peer TEXT NOT NULL,
    at INTEGER NOT NULL, step BLOB NOT NULL, digest TEXT NOT NULL, state TEXT NOT NULL,
    signature TEXT, outgoing INTEGER NOT NULL, delivered INTEGER NOT NULL,
    audited INTEGER NOT NULL, event INTEGER NOT NULL UNIQUE, PRIMARY KEY (exchange, seq));
CREATE INDEX IF NOT EXISTS steps_pending ON steps (outgoing, delivered);
";

const REFERRAL_COLUMNS: &str =
    "exchange, party, peer, reference, subject, instructions, deadline, state, seq, parent, created, updated";
const STEP_COLUMNS: &str =
    "exchange, seq, author, peer, at, step, state, signature, outgoing, delivered, audited, event";

/// The node's referrals: one SQLite file.
pub struct ReferralStore {
    state: StateDb,
    local: NodeId,
}

impl ReferralStore {
    /// Opens (creating) the store of node `local` at `path`.
    pub fn open(path: &Path, local: &NodeId) -> Result<ReferralStore, ReferralError> {
        let state = StateDb::open(
            path,
            SCHEMA,
            |path, source| ReferralError::Folder { path, source },
            |source| ReferralError::Db { path: path.to_owned(), source },
        )?;
        Ok(ReferralStore { state, local: local.clone() })
    }

    fn db(&self) -> impl Fn(rusqlite::Error) -> ReferralError + '_ {
        |source| ReferralError::Db { path: self.state.path().to_owned(), source }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.state.lock()
    }

    fn bump(&self) {
        self.state.bump();
    }

    /// A receiver that sees a change after every stored step and every acknowledgement.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.state.changes()
    }

    /// Sends a new referral `exchange` to `to` (this node's step 1), as one transaction.
    pub fn send(
        &self,
        exchange: &str,
        to: &NodeId,
        step: Step,
        now: i64,
    ) -> Result<StoredStep, ReferralError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(self.db())?;
        let s = self.start(&tx, exchange, to, step, now)?;
        tx.commit().map_err(self.db())?;
        drop(conn);
        self.bump();
        Ok(s)
    }

    /// Takes this node's next step on referral `exchange` (not `send`), as one transaction.
    pub fn take(&self, exchange: &str, step: Step, now: i64) -> Result<StoredStep, ReferralError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(self.db())?;
        let s = self.step_local(&tx, exchange, step, now)?;
        tx.commit().map_err(self.db())?;
        drop(conn);
        self.bump();
        Ok(s)
    }

    /// Passes referral `parent` (held here as its receiver) down to `to` as the new referral
    /// `child`: the child's `send` and the parent's `forward` in one transaction, so the chain
    /// is never half made.
    pub fn forward(
        &self,
        parent: &str,
        child: &str,
        to: &NodeId,
        send: Step,
        now: i64,
    ) -> Result<(StoredStep, StoredStep), ReferralError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(self.db())?;
        let fwd = Step::Forward { to: to.to_string(), child: child.to_owned() };
        let p = self.step_local(&tx, parent, fwd, now)?;
        let c = self.start(&tx, child, to, send, now)?;
        tx.commit().map_err(self.db())?;
        drop(conn);
        self.bump();
        Ok((c, p))
    }

    fn start(
        &self,
        tx: &Transaction<'_>,
        exchange: &str,
        to: &NodeId,
        step: Step,
        now: i64,
    ) -> Result<StoredStep, ReferralError> {
        let refused = |error| ReferralError::Refused { exchange: exchange.to_owned(), error };
        if referral_in(tx, exchange).map_err(self.db())?.is_some() {
            return Err(refused(StepError::NotFirst));
        }
        let state = rules::next(None, Party::Sender, &step).map_err(refused)?;
        insert_referral(tx, exchange, Party::Sender, to, &step, now).map_err(self.db())?;
        self.insert_step(tx, exchange, 1, &self.local.clone(), to, now, &step, state, None, true)
    }

    fn step_local(
        &self,
        tx: &Transaction<'_>,
        exchange: &str,
        step: Step,
        now: i64,
    ) -> Result<StoredStep, ReferralError> {
        let r = referral_in(tx, exchange)
            .map_err(self.db())?
            .ok_or_else(|| ReferralError::Unknown(exchange.into()))?;
        let state = rules::next(Some(r.state), r.party, &step)
            .map_err(|error| ReferralError::Refused { exchange: exchange.to_owned(), error })?;
        let peer = parse_node(&r.peer, exchange)?;
        let s = self.insert_step(
            tx,
            exchange,
            r.seq + 1,
            &self.local.clone(),
            &peer,
            now,
            &step,
            state,
            None,
            true,
        )?;
        Ok(s)
    }

    /// Stores step `seq` of referral `exchange` from `peer` if it is the next one and the peer
    /// may take it (see [`rules::admit`]), with whatever this node does in consequence.
    #[allow(clippy::too_many_arguments)]
    pub fn receive(
        &self,
        peer: &NodeId,
        exchange: &str,
        seq: u64,
        at: i64,
        step: Step,
        signature: &str,
        now: i64,
    ) -> Result<Received, ReferralError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(self.db())?;
        let held = referral_in(&tx, exchange).map_err(self.db())?;
        let stored = step_in(&tx, exchange, seq).map_err(self.db())?;
        let digest = stored.as_ref().map(|s| rules::step_digest(&s.step));
        let h = held.as_ref().and_then(Referral::held);
        let state = match rules::admit(exchange, h.as_ref(), peer, seq, &step, digest.as_deref()) {
            Admit::Apply(s) => s,
            Admit::Duplicate => {
                return Ok(Received::Duplicate(Box::new(stored.ok_or_else(|| self.gone(exchange, seq))?)))
            }
            Admit::Refuse(code, why) => return Ok(Received::Refused(code, why)),
        };
        if held.is_none() {
            insert_referral(&tx, exchange, Party::Receiver, peer, &step, at).map_err(self.db())?;
        }
        let local = self.local.clone();
        let mut out = vec![self.insert_step(
            &tx,
            exchange,
            seq,
            peer,
            &local,
            at,
            &step,
            state,
            Some(signature),
            false,
        )?];
        // Storing is acknowledged with the receiver's own `receive` step, sent back like any other.
        if matches!(step, Step::Send { .. }) {
            out.push(self.step_local(&tx, exchange, Step::Receive, now)?);
        }
        if let (Step::Resolve { result, feedback }, Some(parent)) =
            (&step, held.as_ref().and_then(|r| r.parent.clone()))
        {
            out.extend(self.relay_result(&tx, &parent, peer, result, feedback, now)?);
        }
        tx.commit().map_err(self.db())?;
        drop(conn);
        self.bump();
        Ok(Received::New(out))
    }

    /// A forwarded referral was resolved below: its parent, still open here, is resolved with
    /// the same result, so the result flows up the chain without anyone copying it by hand.
    fn relay_result(
        &self,
        tx: &Transaction<'_>,
        parent: &str,
        by: &NodeId,
        result: &str,
        feedback: &str,
        now: i64,
    ) -> Result<Option<StoredStep>, ReferralError> {
        let Some(p) = referral_in(tx, parent).map_err(self.db())? else { return Ok(None) };
        let step =
            Step::Resolve { result: result.to_owned(), feedback: format!("{feedback} (resolved by {by})") };
        if p.party != Party::Receiver || rules::next(Some(p.state), p.party, &step).is_err() {
            return Ok(None);
        }
        self.step_local(tx, parent, step, now).map(Some)
    }

    fn gone(&self, exchange: &str, seq: u64) -> ReferralError {
        ReferralError::Damaged { exchange: exchange.into(), seq, why: "the step vanished".into() }
    }

    #[allow(clippy::too_many_arguments)]
    fn insert_step(
        &self,
        tx: &Transaction<'_>,
        exchange: &str,
        seq: u64,
        author: &NodeId,
        peer: &NodeId,
        at: i64,
        step: &Step,
        state: State,
        signature: Option<&str>,
        outgoing: bool,
    ) -> Result<StoredStep, ReferralError> {
        let mut blob = Vec::new();
        ciborium::ser::into_writer(step, &mut blob).map_err(|e| ReferralError::Damaged {
            exchange: exchange.into(),
            seq,
            why: e.to_string(),
        })?;
        let event: u64 = tx
            .prepare_cached("SELECT COALESCE(MAX(event), 0) + 1 FROM steps")
            .and_then(|mut q| q.query_row([], |r| r.get(0)))
            .map_err(self.db())?;
        tx.prepare_cached(&format!(
            "INSERT INTO steps ({STEP_COLUMNS}, digest) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0, 0, ?10, ?11)"
        ))
        .and_then(|mut q| {
            q.execute(params![
                exchange,
                seq,
                author.to_string(),
                peer.to_string(),
                at,
                blob,
                state.as_str(),
                signature,
                outgoing,
                event,
                rules::step_digest(step)
            ])
        })
        .map_err(self.db())?;
        tx.prepare_cached("UPDATE referrals SET state = ?2, seq = ?3, updated = ?4 WHERE exchange = ?1")
            .and_then(|mut q| q.execute(params![exchange, state.as_str(), seq, at]))
            .map_err(self.db())?;
        Ok(StoredStep {
            exchange: exchange.into(),
            seq,
            author: author.to_string(),
            peer: peer.to_string(),
            at,
            step: step.clone(),
            state,
            signature: signature.map(str::to_owned),
            outgoing,
            delivered: false,
            audited: false,
            event,
        })
    }

    /// Marks a step as recorded in the audit log (which makes an own step ready to send).
    pub fn mark_audited(&self, exchange: &str, seq: u64) -> Result<(), ReferralError> {
        self.lock()
            .prepare_cached("UPDATE steps SET audited = 1 WHERE exchange = ?1 AND seq = ?2")
            .and_then(|mut q| q.execute(params![exchange, seq]))
            .map_err(self.db())?;
        self.bump();
        Ok(())
    }

    /// Marks one of this node's steps as acknowledged by the peer.
    pub fn mark_delivered(&self, exchange: &str, seq: u64) -> Result<(), ReferralError> {
        self.lock()
            .prepare_cached(
                "UPDATE steps SET delivered = 1 WHERE exchange = ?1 AND seq = ?2 AND outgoing = 1",
            )
            .and_then(|mut q| q.execute(params![exchange, seq]))
            .map_err(self.db())?;
        self.bump();
        Ok(())
    }

    /// Steps stored but not yet audited (what a crash between the two left), oldest first.
    pub fn unaudited(&self) -> Result<Vec<StoredStep>, ReferralError> {
        self.steps_where("audited = 0 ORDER BY event", params![])
    }

    /// This node's audited steps the peer has not acknowledged, in the order they were taken:
    /// what the outbox sends. A referral's steps stop at its first step not yet audited: a
    /// later step (an `accept` taken the moment the referral arrived) must not overtake an
    /// earlier one (the automatic `receive` still being audited), or the peer refuses it.
    pub fn outbox(&self) -> Result<Vec<StoredStep>, ReferralError> {
        let pending = self.steps_where("outgoing = 1 AND delivered = 0 ORDER BY event", params![])?;
        let mut held_back = std::collections::HashSet::new();
        let ready = pending.into_iter().filter(|s| {
            if !s.audited {
                held_back.insert(s.exchange.clone());
            }
            s.audited && !held_back.contains(&s.exchange)
        });
        Ok(ready.collect())
    }

    /// Steps with event numbers after `after`, at most `max`, in order.
    pub fn events(&self, after: u64, max: usize) -> Result<Vec<StoredStep>, ReferralError> {
        self.steps_where(
            "event > ?1 ORDER BY event LIMIT ?2",
            params![after.min(i64::MAX as u64), max as i64],
        )
    }

    /// Every step of referral `exchange`, in order.
    pub fn history(&self, exchange: &str) -> Result<Vec<StoredStep>, ReferralError> {
        self.steps_where("exchange = ?1 ORDER BY seq", params![exchange])
    }

    fn steps_where(
        &self,
        clause: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<StoredStep>, ReferralError> {
        let conn = self.lock();
        let mut s = conn
            .prepare_cached(&format!("SELECT {STEP_COLUMNS} FROM steps WHERE {clause}"))
            .map_err(self.db())?;
        let rows = s.query_map(args, raw_step).map_err(self.db())?;
        let mut out = Vec::new();
        for row in rows {
            out.push(decode_step(row.map_err(self.db())?)?);
        }
        Ok(out)
    }

    /// One referral.
    pub fn get(&self, exchange: &str) -> Result<Referral, ReferralError> {
        referral_in(&self.lock(), exchange)
            .map_err(self.db())?
            .ok_or_else(|| ReferralError::Unknown(exchange.into()))
    }

    /// Every referral, overdue first (at `now`), then the most recently changed.
    pub fn list(&self, now: i64) -> Result<Vec<Referral>, ReferralError> {
        let conn = self.lock();
        let mut s = conn
            .prepare_cached(&format!(
                "SELECT {REFERRAL_COLUMNS} FROM referrals ORDER BY updated DESC, exchange"
            ))
            .map_err(self.db())?;
        let rows = s.query_map([], referral_row).map_err(self.db())?;
        let mut out: Vec<Referral> = rows.collect::<Result<_, _>>().map_err(self.db())?;
        out.sort_by_key(|r| !r.overdue(now));
        Ok(out)
    }

    /// The referrals forwarded from `exchange` (its children here).
    pub fn children(&self, exchange: &str) -> Result<Vec<Referral>, ReferralError> {
        let conn = self.lock();
        let mut s = conn
            .prepare_cached(&format!(
                "SELECT {REFERRAL_COLUMNS} FROM referrals WHERE parent = ?1 ORDER BY created"
            ))
            .map_err(self.db())?;
        let rows = s.query_map(params![exchange], referral_row).map_err(self.db())?;
        rows.collect::<Result<_, _>>().map_err(self.db())
    }

    /// The case the referral carries, as its first step has it.
    pub fn case(&self, exchange: &str) -> Result<Option<Case>, ReferralError> {
        let first = self.steps_where("exchange = ?1 AND seq = 1", params![exchange])?;
        Ok(first.into_iter().find_map(|s| match s.step {
            Step::Send { case, .. } => case,
            _ => None,
        }))
    }
}

fn parse_node(s: &str, exchange: &str) -> Result<NodeId, ReferralError> {
    s.parse().map_err(|e| ReferralError::Damaged {
        exchange: exchange.into(),
        seq: 0,
        why: format!("peer {s:?}: {e}"),
    })
}

fn insert_referral(
    tx: &Transaction<'_>,
    exchange: &str,
    party: Party,
    peer: &NodeId,
    send: &Step,
    at: i64,
) -> rusqlite::Result<()> {
    let Step::Send { reference, subject, instructions, deadline, parent, .. } = send else {
        return Ok(());
    };
    // The parent link is kept only by the node that forwarded (it holds the parent); the
    // receiver of a child sees it in the `send` step.
    let parent = if party == Party::Sender { parent.clone() } else { None };
    tx.execute(
        &format!("INSERT INTO referrals ({REFERRAL_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'sent', 0, ?8, ?9, ?9)"),
        params![exchange, party.as_str(), peer.to_string(), reference, subject, instructions, deadline, parent, at],
    )?;
    Ok(())
}

fn referral_in(conn: &Connection, exchange: &str) -> rusqlite::Result<Option<Referral>> {
    conn.prepare_cached(&format!("SELECT {REFERRAL_COLUMNS} FROM referrals WHERE exchange = ?1"))?
        .query_row(params![exchange], referral_row)
        .optional()
}

fn referral_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Referral> {
    let party = if r.get::<_, String>(1)? == "sender" { Party::Sender } else { Party::Receiver };
    Ok(Referral {
        exchange: r.get(0)?,
        party,
        peer: r.get(2)?,
        reference: r.get(3)?,
        subject: r.get(4)?,
        instructions: r.get(5)?,
        deadline: r.get(6)?,
        // An unknown state (a damaged row) reads as closed: nothing more can happen to it.
        state: State::parse(&r.get::<_, String>(7)?).unwrap_or(State::Closed),
        seq: r.get(8)?,
        parent: r.get(9)?,
        created: r.get(10)?,
        updated: r.get(11)?,
    })
}

type RawStep = (String, u64, String, String, i64, Vec<u8>, String, Option<String>, bool, bool, bool, u64);

fn raw_step(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawStep> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
        r.get(11)?,
    ))
}

fn decode_step(raw: RawStep) -> Result<StoredStep, ReferralError> {
    let (exchange, seq, author, peer, at, blob, state, signature, outgoing, delivered, audited, event) = raw;
    let damaged = |why: String| ReferralError::Damaged { exchange: exchange.clone(), seq, why };
    let step: Step = ciborium::de::from_reader(blob.as_slice()).map_err(|e| damaged(e.to_string()))?;
    let state = State::parse(&state).ok_or_else(|| damaged(format!("unknown state {state:?}")))?;
    Ok(StoredStep {
        exchange,
        seq,
        author,
        peer,
        at,
        step,
        state,
        signature,
        outgoing,
        delivered,
        audited,
        event,
    })
}

fn step_in(conn: &Connection, exchange: &str, seq: u64) -> Result<Option<StoredStep>, rusqlite::Error> {
    let raw = conn
        .prepare_cached(&format!("SELECT {STEP_COLUMNS} FROM steps WHERE exchange = ?1 AND seq = ?2"))?
        .query_row(params![exchange, seq], raw_step)
        .optional()?;
    // A damaged row cannot be compared with a resend: treat it as a different step.
    Ok(raw.and_then(|r| decode_step(r).ok()))
}

/// A record as the application reads it: keyed by field name.
pub fn record_json(fields: &[String], record: &[Value]) -> serde_json::Value {
    let m = fields
        .iter()
        .zip(record)
        .map(|(f, v)| (f.clone(), crate::governance::objection::field_json(f, v)))
        .collect();
    serde_json::Value::Object(m)
}

/// A step as the API and `fedgate referral show` present it.
pub fn step_json(s: &StoredStep) -> serde_json::Value {
    let mut j = serde_json::json!({
        "event": s.event,
        "exchange": s.exchange,
        "seq": s.seq,
        "step": s.step.name(),
        "state": s.state.as_str(),
        "by": s.author,
        "at": s.at,
    });
    let extra = match &s.step {
        Step::Send { reference, subject, instructions, deadline, case, parent } => serde_json::json!({
            "reference": reference, "subject": subject, "instructions": instructions,
            "deadline": deadline, "parent": parent,
            "case": case.as_ref().map(|c| serde_json::json!({
                "dataset": c.dataset, "purpose": c.purpose, "record": record_json(&c.fields, &c.record)})),
        }),
        Step::Return { reason } | Step::Reopen { reason } => serde_json::json!({ "reason": reason }),
        Step::Update { notes } => serde_json::json!({ "notes": notes }),
        Step::Forward { to, child } => serde_json::json!({ "forwarded_to": to, "child": child }),
        Step::Resolve { result, feedback } => serde_json::json!({ "result": result, "feedback": feedback }),
        Step::Receive | Step::Accept | Step::Close => serde_json::json!({}),
    };
    if let (Some(m), serde_json::Value::Object(e)) = (j.as_object_mut(), extra) {
        m.extend(e.into_iter().filter(|(_, v)| !v.is_null()));
    }
    j
}

#[cfg(test)]
mod tests {
    use super::*;

    const X: &str = "0123456789abcdef0123456789abcdef";
    const Y: &str = "1123456789abcdef0123456789abcdef";

    fn node(s: &str) -> NodeId {
        s.parse().unwrap()
    }

    fn send(parent: Option<&str>) -> Step {
        send_as("12345-7", 1000, parent)
    }

    fn send_as(reference: &str, deadline: i64, parent: Option<&str>) -> Step {
        Step::Send {
            reference: reference.into(),
            subject: "noise".into(),
            instructions: "visit".into(),
            deadline,
            case: None,
            parent: parent.map(str::to_owned),
        }
    }

    fn deliver(from: &ReferralStore, to: &ReferralStore, from_id: &NodeId) -> Vec<StoredStep> {
        let mut made = Vec::new();
        for s in from.outbox_all().into_iter().filter(|s| s.peer == to.local.to_string()) {
            match to.receive(from_id, &s.exchange, s.seq, s.at, s.step.clone(), "sig", 10).unwrap() {
                Received::New(v) => made.extend(v),
                Received::Duplicate(_) => {}
                Received::Refused(c, m) => panic!("{c:?} {m}"),
            }
            from.mark_delivered(&s.exchange, s.seq).unwrap();
        }
        made
    }

    impl ReferralStore {
        /// The outbox with every step taken as audited (the driver audits first).
        fn outbox_all(&self) -> Vec<StoredStep> {
            for s in self.unaudited().unwrap() {
                self.mark_audited(&s.exchange, s.seq).unwrap();
            }
            self.outbox().unwrap()
        }
    }

    #[test]
    fn a_step_taken_before_the_automatic_receive_is_audited_waits_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (node("hotline12345@wuxi"), node("grid@wuxi.liangxi.chongan"));
        let sa = ReferralStore::open(&dir.path().join("a/referrals.db"), &a).unwrap();
        let sb = ReferralStore::open(&dir.path().join("b/referrals.db"), &b).unwrap();
        sa.send(X, &b, send(None), 1).unwrap();
        sa.send(Y, &b, send(None), 1).unwrap();
        deliver(&sa, &sb, &a);
        // The receive steps are stored, not audited yet; the operator accepts X at once and
        // that step is audited first.
        let accept = sb.take(X, Step::Accept, 2).unwrap();
        sb.mark_audited(X, accept.seq).unwrap();
        sb.mark_audited(Y, 2).unwrap();
        let ready = || -> Vec<(String, u64)> {
            sb.outbox().unwrap().into_iter().map(|s| (s.exchange, s.seq)).collect()
        };
        assert_eq!(ready(), vec![(Y.to_owned(), 2)], "X's accept must not overtake X's receive");
        sb.mark_audited(X, 2).unwrap();
        assert_eq!(ready(), vec![(X.to_owned(), 2), (Y.to_owned(), 2), (X.to_owned(), 3)]);
    }

    #[test]
    fn a_referral_goes_down_two_levels_and_the_result_comes_back_up() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            node("hotline12345@wuxi"),
            node("grid@wuxi.liangxi.chongan"),
            node("mediation@wuxi.liangxi.chongan.guangrui"),
        );
        let sa = ReferralStore::open(&dir.path().join("a/referrals.db"), &a).unwrap();
        let sb = ReferralStore::open(&dir.path().join("b/referrals.db"), &b).unwrap();
        let sc = ReferralStore::open(&dir.path().join("c/referrals.db"), &c).unwrap();
        sa.send(X, &b, send(None), 1).unwrap();
        deliver(&sa, &sb, &a);
        assert_eq!(sb.get(X).unwrap().state, State::Received);
        deliver(&sb, &sa, &b);
        assert_eq!(sa.get(X).unwrap().state, State::Received);
        sb.take(X, Step::Accept, 2).unwrap();
        let (child, fwd) = sb.forward(X, Y, &c, send(Some(X)), 3).unwrap();
        assert_eq!((child.seq, fwd.state), (1, State::InProgress));
        deliver(&sb, &sa, &b);
        deliver(&sb, &sc, &b);
        deliver(&sc, &sb, &c);
        sc.take(Y, Step::Accept, 4).unwrap();
        sc.take(Y, Step::Resolve { result: "agreed".into(), feedback: "both sides signed".into() }, 5)
            .unwrap();
        // The grid office stores the child's result and resolves the parent with it.
        let relayed = deliver(&sc, &sb, &c);
        assert!(relayed.iter().any(|s| s.exchange == X && s.state == State::Resolved), "{relayed:?}");
        deliver(&sb, &sa, &b);
        let top = sa.get(X).unwrap();
        assert_eq!(top.state, State::Resolved);
        let hist = sa.history(X).unwrap();
        let names: Vec<_> = hist.iter().map(|s| s.step.name()).collect();
        assert_eq!(names, ["send", "receive", "accept", "forward", "resolve"]);
        let Step::Resolve { result, feedback } = &hist[4].step else { panic!() };
        assert_eq!(result, "agreed");
        assert!(feedback.contains("resolved by mediation@wuxi.liangxi.chongan.guangrui"), "{feedback}");
        assert_eq!(sb.children(X).unwrap().len(), 1);
        sa.take(X, Step::Close, 6).unwrap();
        deliver(&sa, &sb, &a);
        assert_eq!(sb.get(X).unwrap().state, State::Closed);
    }

    #[test]
    fn resends_are_stored_once_and_conflicts_refused_and_state_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (node("hotline12345@wuxi"), node("grid@wuxi.liangxi.chongan"));
        let path = dir.path().join("b/referrals.db");
        let sb = ReferralStore::open(&path, &b).unwrap();
        let first = sb.receive(&a, X, 1, 1, send(None), "sig", 2).unwrap();
        let Received::New(v) = first else { panic!("{first:?}") };
        assert_eq!(v.len(), 2, "the send and the receiver's receive");
        drop(sb);
        let sb = ReferralStore::open(&path, &b).unwrap();
        assert!(matches!(sb.receive(&a, X, 1, 1, send(None), "sig", 3).unwrap(), Received::Duplicate(_)));
        let other = send_as("other", 1000, None);
        assert!(matches!(
            sb.receive(&a, X, 1, 1, other, "sig", 3).unwrap(),
            Received::Refused(ErrorCode::BadRequest, _)
        ));
        assert_eq!(sb.history(X).unwrap().len(), 2);
        // The sender may not accept its own referral; the receiver may not close it.
        assert!(matches!(
            sb.receive(&a, X, 3, 1, Step::Accept, "sig", 3).unwrap(),
            Received::Refused(ErrorCode::Denied, _)
        ));
        assert!(matches!(sb.take(X, Step::Close, 4), Err(ReferralError::Refused { .. })));
        assert!(matches!(sb.take("f".repeat(32).as_str(), Step::Accept, 4), Err(ReferralError::Unknown(_))));
        // Events number every stored step, in order.
        let ev: Vec<u64> = sb.events(0, 10).unwrap().iter().map(|s| s.event).collect();
        assert_eq!(ev, [1, 2]);
        assert_eq!(sb.events(1, 10).unwrap().len(), 1);
    }

    #[test]
    fn overdue_referrals_are_listed_first() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (node("hotline12345@wuxi"), node("grid@wuxi.liangxi.chongan"));
        let sa = ReferralStore::open(&dir.path().join("referrals.db"), &a).unwrap();
        sa.send(X, &b, send_as("a", 10_000, None), 1).unwrap();
        sa.send(Y, &b, send_as("b", 50, None), 0).unwrap();
        let now = 100;
        let l = sa.list(now).unwrap();
        assert_eq!(l[0].exchange, Y);
        assert!(l[0].overdue(now) && !l[1].overdue(now));
    }
}
