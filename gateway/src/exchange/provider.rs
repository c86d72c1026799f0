//! The provider's side of one query, as a state machine.
//!
//! [`ProviderSession::new`] decides at once (grant, filters, source, quota) and queues the first
//! actions. The driver then loops: take every [`ProviderAction`] from
//! [`ProviderSession::poll_action`] and execute it in order, answering an `Append` with
//! [`ProviderSession::handle_appended`], an `AppendWitnessed` with
//! [`ProviderSession::handle_witnessed`] and a `Sign` with [`ProviderSession::handle_signed`]
//! before polling on; when no action is left and the session is not done, it feeds the next
//! source item to [`ProviderSession::handle_source`]. A failed write is reported with
//! [`ProviderSession::handle_send_failed`].
//!
//! The order of actions carries the guarantees: the source read starts while the decision entry
//! is made durable, but no frame leaves before that entry is acknowledged; the outcome entry is
//! acknowledged before the trailer (which cites it) is signed and sent, and that entry (or a
//! refusal's) comes back with the log's signed checkpoint covering it and its inclusion proof,
//! which the trailer (or error frame) carries for the consumer to witness; a source that fails
//! before its first batch gets no header, so the consumer sees the refusal's own code.

use std::collections::VecDeque;
use std::sync::Arc;

use fedgate_catalog::{Catalog, Dataset, FieldType, NodeId, Record, Value};
use fedgate_policy::mask::consumer_key;
use fedgate_policy::{Action, Decision, Obligation, Plan, Policy, Request};
use ring::digest::{Context, SHA256};

use super::{source_failure_message, trailer_message, QuotaLedger};
use crate::config::{SourceConfig, SourceKind};
use crate::governance::objection::{Marking, MARKER_FIELD};
use crate::source::{SourceError, SourceQuery, Transform};
use crate::sources::SourceGate;
use crate::wire::{self, ErrorCode, Message, Truncation};
use fedgate_audit::{Entry, Kind};

/// What a provider consults to decide: snapshots of the node's rules and state, borrowed for
/// the decision only.
pub struct ProviderContext<'a> {
    /// This node.
    pub local: &'a NodeId,
    /// The catalog in force.
    pub catalog: &'a Catalog,
    /// The grants in force.
    pub policy: &'a Policy,
    /// The configured data sources.
    pub sources: &'a [SourceConfig],
    /// Which sources have passed their check against the catalog.
    pub gate: &'a SourceGate,
    /// The secret per-consumer hashing keys derive from.
    pub masking_secret: &'a [u8],
    /// The node's quota ledger.
    pub quotas: &'a Arc<QuotaLedger>,
    /// A fresh entry by this node with the digests of the rules in force; every audit entry of
    /// the session starts from it.
    pub entry: Entry,
    /// Open objections to this node's records: deliveries mark the records they name.
    pub marks: &'a crate::governance::objection::Marks,
}

/// A query as the consumer asked it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The dataset id.
    pub dataset: String,
    /// The declared purpose.
    pub purpose: String,
    /// Equality filters, field name and value as text.
    pub filters: Vec<(String, String)>,
    /// At most this many records.
    pub limit: Option<u64>,
    /// The exchange id the asker chose (32 hex digits); `None` from askers that predate it.
    pub exchange: Option<String>,
}

impl Query {
    /// A query as a consumer asks it: under a fresh random exchange id.
    pub fn asked(
        dataset: &str,
        purpose: &str,
        filters: Vec<(String, String)>,
        limit: Option<u64>,
    ) -> Result<Query, String> {
        let exchange = super::new_exchange_id().ok_or("no system randomness for an exchange id")?;
        Ok(Query {
            dataset: dataset.into(),
            purpose: purpose.into(),
            filters,
            limit,
            exchange: Some(exchange),
        })
    }
}

/// A source read to start: what to read, and the per-record work (row scope and
/// desensitization) to run on the reading side.
pub struct SourceRead {
    /// Which source.
    pub kind: SourceKind,
    /// The read, scope and filters pushed down.
    pub query: SourceQuery,
    pub(super) plan: Arc<Plan>,
    /// The dataset's open objections when decided, if it has any: records then carry the
    /// marker column.
    pub(super) marking: Option<Arc<Marking>>,
}

impl SourceRead {
    /// The plan's obligations as the per-record transform: out-of-scope rows dropped, every
    /// field desensitized for this consumer. The same code path whatever carries the records.
    pub fn transform(&self) -> Transform {
        let plan = self.plan.clone();
        match self.marking.clone() {
            None => Arc::new(move |rec: Record| plan.in_scope(&rec).then(|| plan.apply(&rec))),
            Some(m) => Arc::new(move |rec: Record| plan.in_scope(&rec).then(|| m.deliver(&plan, &rec))),
        }
    }

    /// The fields each delivered record carries, in order: the plan's, then the marker column
    /// if the dataset had open objections when this was decided.
    pub fn fields(&self) -> Vec<String> {
        delivered_fields(&self.plan, self.marking.as_deref())
    }
}

/// The fields a delivery under `plan` carries: the marker column last when `marking` is set.
pub(super) fn delivered_fields(plan: &Plan, marking: Option<&Marking>) -> Vec<String> {
    let mut fields = plan.fields().to_vec();
    if marking.is_some() {
        fields.push(MARKER_FIELD.to_owned());
    }
    fields
}

impl Marking {
    /// `raw` desensitized by `plan`, with its marker (or null) as the last value.
    pub(super) fn deliver(&self, plan: &Plan, raw: &Record) -> Record {
        let mut out = plan.apply(raw);
        out.push(self.value(raw));
        out
    }
}

/// What the driver must do next, in order.
#[must_use = "every action must be executed, in order"]
pub enum ProviderAction {
    /// Start reading the source; feed what it yields to [`ProviderSession::handle_source`].
    Read(Box<SourceRead>),
    /// Stop the source read: nothing more of it will be sent.
    StopRead,
    /// Append this entry durably, then answer with [`ProviderSession::handle_appended`].
    Append(Box<Entry>),
    /// Append this entry durably and get a signed checkpoint covering it with its inclusion
    /// proof ([`fedgate_audit::AuditLog::append_witnessed`]), then answer with
    /// [`ProviderSession::handle_witnessed`]. The entry is the one the answer cites (the
    /// outcome, or the refusal), and the consumer keeps the witness.
    AppendWitnessed(Box<Entry>),
    /// Write this encoded frame to the stream; on failure, say so with
    /// [`ProviderSession::handle_send_failed`] before polling on.
    Send(Vec<u8>),
    /// Sign this message with the key of the connection's certificate, then answer with
    /// [`ProviderSession::handle_signed`].
    Sign(Vec<u8>),
    /// Finish the stream: nothing more will be written.
    Finish,
}

/// How a provider session ended: what the driver reports in logs and metrics.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Refused before any record: the code and message the consumer got.
    Refused {
        /// The wire code.
        code: ErrorCode,
        /// The message.
        message: String,
    },
    /// Served in full (or to its cap), with a signed trailer.
    Served {
        /// Records sent.
        count: u64,
        /// Why fewer than all matching records were sent, if so.
        truncated: Option<Truncation>,
    },
    /// The source failed mid-transfer; the consumer was told, without the details.
    SourceFailed {
        /// Records sent before.
        count: u64,
        /// The provider's entry recording the abort.
        audit_seq: u64,
        /// What failed (for the provider's log only).
        error: SourceError,
    },
    /// Writing to the consumer failed: it went away.
    ConsumerGone {
        /// Records sent before.
        count: u64,
        /// The write error.
        why: String,
    },
    /// An audit entry could not be appended, so nothing (more) left unrecorded.
    NotRecorded {
        /// The append error.
        why: String,
    },
    /// The trailer could not be signed.
    NotSigned {
        /// The entry recording the transfer.
        audit_seq: u64,
        /// The signing error (about the node's key: the operator's business).
        why: String,
    },
}

impl Outcome {
    /// The metrics' outcome code, for outcomes that count as an ended query.
    pub fn metric_code(&self) -> Option<&'static str> {
        match self {
            Outcome::Refused { code, .. } => Some(code.as_str()),
            Outcome::Served { .. } => Some("ok"),
            Outcome::SourceFailed { .. } => Some("source-unavailable"),
            Outcome::ConsumerGone { .. } => Some("consumer-gone"),
            Outcome::NotRecorded { .. } | Outcome::NotSigned { .. } => None,
        }
    }

    /// Records sent.
    pub fn count(&self) -> u64 {
        match self {
            Outcome::Served { count, .. }
            | Outcome::SourceFailed { count, .. }
            | Outcome::ConsumerGone { count, .. } => *count,
            _ => 0,
        }
    }
}

/// A provider-side refusal: the code and message the consumer gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub ErrorCode, pub String);

/// Why a transfer stopped before its trailer.
enum Abort {
    Source(SourceError),
    Send(String),
}

impl Abort {
    fn detail(&self) -> String {
        match self {
            Abort::Source(e) => e.to_string(),
            Abort::Send(why) => format!("sending failed: {why}"),
        }
    }
}

/// Records reserved from a grant's daily quota, refunded in part if fewer were sent.
pub(super) struct Reservation {
    ledger: Arc<QuotaLedger>,
    grant: String,
    day: i64,
    pub(super) reserved: u64,
}

impl Reservation {
    /// Gives back what was reserved for `peer` beyond the `sent` records.
    pub(super) fn settle(self, peer: &NodeId, sent: u64) {
        self.ledger.refund(&self.grant, peer, self.day, self.reserved.saturating_sub(sent));
    }
}

/// Everything decided before the first record leaves.
pub struct Allowed {
    pub(super) obligations: Vec<String>,
    pub(super) read: SourceRead,
    pub(super) reason: String,
    pub(super) quota: Option<Reservation>,
    /// The most records this answer may carry, and who set that bound.
    pub(super) cap: Option<(u64, Truncation)>,
    /// For the audit entries: the grant, the clearance and the row scope decided.
    pub(super) grant: Option<String>,
    pub(super) clearance: u8,
    pub(super) rows: String,
}

/// Decides `q` from `peer` at unix time `now`: the grant, the filters (only on fields the peer
/// sees in clear), the source, the quota. Reserves quota, so an `Allowed` must be run by a
/// session (which refunds what it does not send).
pub fn decide(ctx: &ProviderContext<'_>, peer: &NodeId, q: &Query, now: i64) -> Result<Allowed, Refusal> {
    decide_for(ctx, peer, q, Action::Read, now)
}

/// [`decide`] for `action`: a subscription's every batch is decided here too, as a
/// subscription, so the grant must allow `subscribe` and the same plan desensitizes it.
pub fn decide_for(
    ctx: &ProviderContext<'_>,
    peer: &NodeId,
    q: &Query,
    action: Action,
    now: i64,
) -> Result<Allowed, Refusal> {
    if q.exchange.as_deref().is_some_and(|x| !super::valid_exchange_id(x)) {
        return Err(Refusal(
            ErrorCode::BadRequest,
            "`exchange` must be 32 lowercase hex digits (a random 128-bit id)".into(),
        ));
    }
    let req = Request { dataset: q.dataset.clone(), purpose: q.purpose.clone(), action };
    let decision = ctx.policy.decide(ctx.catalog, peer, &req, now).map_err(|e| {
        tracing::error!(error = %e, "the policy engine failed; refusing the query as internal");
        Refusal(ErrorCode::from(&e), "the provider failed to decide; try again".into())
    })?;
    let allowed = match &*decision {
        Decision::Allow(a) => a.clone(),
        Decision::Deny { reason, message } => return Err(Refusal(reason.into(), message.clone())),
    };
    let dataset = &q.dataset;
    let Some(ds) = ctx.catalog.get(dataset) else {
        return Err(Refusal(ErrorCode::UnknownDataset, format!("no dataset `{dataset}` here")));
    };
    let filters = parse_filters(ds, &allowed.fields, &q.filters)?;
    let Some(src) = ctx.sources.iter().find(|s| &s.dataset == dataset) else {
        return Err(Refusal(
            ErrorCode::SourceUnavailable,
            format!("dataset `{dataset}` has no data source configured at its provider"),
        ));
    };
    if ctx.gate.unchecked(dataset).is_some() {
        // Never read a source that has not been checked against the catalog: its columns could
        // be anything. Why it is unchecked goes to the provider's log, not to the consumer.
        return Err(Refusal(
            ErrorCode::SourceUnavailable,
            format!("the source of `{dataset}` is not available at the provider right now; try again later"),
        ));
    }
    let mut cap = q.limit.map(|l| (l, Truncation::Limit));
    let mut quota = None;
    if let (Some(max), Some(grant)) = (allowed.quota, &allowed.grant) {
        let day = fedgate_policy::time::cst_day(now);
        let got = ctx.quotas.reserve(grant, peer, day, max, q.limit);
        if got == 0 {
            return Err(Refusal(ErrorCode::QuotaExceeded, format!("the daily quota of {max} records for `{dataset}` is used up; it resets at midnight (UTC+8)")));
        }
        if q.limit.is_none_or(|l| got < l) {
            cap = Some((got, Truncation::Quota));
        }
        quota = Some(Reservation { ledger: ctx.quotas.clone(), grant: grant.clone(), day, reserved: got });
    }
    let key = consumer_key(ctx.masking_secret, &peer.to_string());
    let plan = Arc::new(Plan::new(ds, &allowed, key));
    // One row past the cap tells a cut result from one that happens to end there. SQL LIMITs
    // are signed 64-bit: past that, the probe is dropped rather than the query failing.
    let limit = cap.map(|(n, _)| n.saturating_add(1).min(i64::MAX as u64));
    let query = SourceQuery::new(ds, &src.table, allowed.rows.clone(), filters, limit);
    let obligations = allowed.fields.iter().map(|(f, o)| format!("{f}={}", o.name())).collect();
    let marking = ctx.marks.for_dataset(dataset).and_then(|m| {
        ds.fields.iter().position(|f| f.name == ds.primary_key).map(|pk| Arc::new(Marking::new(pk, m)))
    });
    let read = SourceRead { kind: src.kind.clone(), query, plan, marking };
    let rows = match &allowed.rows {
        fedgate_policy::RowScope::All => "all".to_owned(),
        fedgate_policy::RowScope::Within(r) => format!("within {r}"),
    };
    Ok(Allowed {
        obligations,
        read,
        reason: decision.reason(),
        quota,
        cap,
        grant: allowed.grant.clone(),
        clearance: allowed.clearance.get(),
        rows,
    })
}

/// Parses `--where` filters for `ds` as seen by this consumer: only fields it receives in clear.
fn parse_filters(
    ds: &Dataset,
    fields: &[(String, Obligation)],
    raw: &[(String, String)],
) -> Result<Vec<(String, Value)>, Refusal> {
    let mut out = Vec::new();
    for (name, text) in raw {
        let Some(f) = ds.field(name) else {
            return Err(Refusal(ErrorCode::BadFilter, format!("dataset `{}` has no field `{name}`", ds.id)));
        };
        let clear = fields.iter().any(|(n, o)| n == name && *o == Obligation::Clear);
        if !clear {
            // Filtering on a field one may not see would reveal it by probing.
            return Err(Refusal(
                ErrorCode::BadFilter,
                format!("field `{name}` is not visible in clear to you; filters may only use fields you receive in clear"),
            ));
        }
        let v = match f.ty {
            FieldType::Integer => Value::Int(text.parse().map_err(|_| {
                Refusal(ErrorCode::BadFilter, format!("`{name}` is an integer, not {text:?}"))
            })?),
            FieldType::Bool => Value::Bool(text.parse().map_err(|_| {
                Refusal(ErrorCode::BadFilter, format!("`{name}` is true or false, not {text:?}"))
            })?),
            _ => Value::Text(text.clone()),
        };
        out.push((name.clone(), v));
    }
    Ok(out)
}

/// Cuts `records` to what still fits under `cap` after `sent`; says why if anything was cut.
fn fit_cap(records: &mut Vec<Record>, sent: u64, cap: Option<(u64, Truncation)>) -> Option<Truncation> {
    let (max, why) = cap?;
    let room = usize::try_from(max.saturating_sub(sent)).unwrap_or(usize::MAX);
    (records.len() > room).then(|| {
        records.truncate(room);
        why
    })
}

/// Where a session is.
enum State {
    /// A refusal's entry is being appended; the error frame follows whatever the append says.
    RecordingRefusal(Refusal),
    /// The decision entry is being appended; nothing leaves before it is durable.
    RecordingDecision,
    /// Streaming source batches; `header_sent` once the header is queued.
    Streaming { header_sent: bool },
    /// The transfer stopped; its outcome entry is made once every queued frame is written, so
    /// a write that fails meanwhile is in it.
    Ending,
    /// The outcome entry is being appended.
    RecordingEnd,
    /// The trailer is being signed; `audit_seq` is the outcome entry it cites.
    Signing { audit_seq: u64 },
    /// Nothing more to do once the queued actions are executed.
    Done,
}

/// One query at the provider, from decision to trailer.
pub struct ProviderSession {
    local: NodeId,
    peer: NodeId,
    query: Query,
    exchange: String,
    entry: Entry,
    state: State,
    actions: VecDeque<ProviderAction>,
    outcome: Option<Outcome>,
    header: Option<Message>,
    reason: String,
    quota: Option<Reservation>,
    cap: Option<(u64, Truncation)>,
    digest: Context,
    /// Records in batch frames queued so far (what the cap counts).
    queued: u64,
    /// Records in batch frames handed to the driver and not reported failed.
    count: u64,
    /// Records per batch frame queued and not yet handed out, in order (0 for other frames).
    unsent: VecDeque<u64>,
    /// Records in the frame handed out last.
    last_handed: u64,
    truncated: Option<Truncation>,
    failed: Option<Abort>,
    /// The grant that allowed the transfer (for its outcome entry).
    grant: Option<String>,
    /// The signed checkpoint and inclusion proof of the entry the answer cites, once durable.
    witness: Option<Box<fedgate_audit::Witness>>,
}

impl ProviderSession {
    /// A session for `query` from `peer`, decided at unix time `now` against `ctx`. `exchange`
    /// is the exchange's random 128-bit id (hex), picked by the driver.
    pub fn new(ctx: &ProviderContext<'_>, peer: &NodeId, query: Query, exchange: String, now: i64) -> Self {
        let decided = decide(ctx, peer, &query, now);
        let mut s = ProviderSession {
            local: ctx.local.clone(),
            peer: peer.clone(),
            query,
            exchange,
            entry: ctx.entry.clone(),
            state: State::Done,
            actions: VecDeque::new(),
            outcome: None,
            header: None,
            reason: String::new(),
            quota: None,
            cap: None,
            digest: Context::new(&SHA256),
            queued: 0,
            count: 0,
            unsent: VecDeque::new(),
            last_handed: 0,
            truncated: None,
            failed: None,
            grant: None,
            witness: None,
        };
        match decided {
            Ok(allowed) => s.allow(allowed),
            Err(refusal) => s.refuse(refusal, ctx.gate),
        }
        s
    }

    /// The dataset asked for.
    pub fn query(&self) -> &Query {
        &self.query
    }

    /// The exchange id.
    pub fn exchange(&self) -> &str {
        &self.exchange
    }

    /// The next action to execute, if any.
    pub fn poll_action(&mut self) -> Option<ProviderAction> {
        if self.actions.is_empty() && matches!(self.state, State::Ending) {
            self.record_end();
        }
        let a = self.actions.pop_front()?;
        if let ProviderAction::Send(_) = a {
            self.last_handed = self.unsent.pop_front().unwrap_or(0);
            self.count += self.last_handed;
        }
        Some(a)
    }

    /// True once every action has been taken and nothing more will come.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done) && self.actions.is_empty()
    }

    /// True if and only if the session waits for the next source item
    /// ([`ProviderSession::handle_source`]) and has no action left.
    pub fn wants_source(&self) -> bool {
        matches!(self.state, State::Streaming { .. }) && self.actions.is_empty()
    }

    /// How the session ended, once that is known (possibly before the last actions are taken).
    pub fn outcome(&self) -> Option<&Outcome> {
        self.outcome.as_ref()
    }

    fn entry(&self, kind: Kind) -> Entry {
        let mut e = self.entry.clone();
        e.kind = Some(kind);
        e.counterpart = Some(self.peer.to_string());
        e.dataset = Some(self.query.dataset.clone());
        e.purpose = Some(self.query.purpose.clone());
        e.filters = self.query.filters.clone();
        e.exchange = Some(self.exchange.clone());
        e
    }

    fn refuse(&mut self, r: Refusal, gate: &SourceGate) {
        let Refusal(code, message) = &r;
        let denied = code.is_policy_denial();
        let mut e = self.entry(if denied { Kind::Deny } else { Kind::RequestIn });
        e.decision = Some(if denied { "deny" } else { "error" }.into());
        e.reason = Some(format!("{code:?}: {message}"));
        e.code = Some(code.as_str().to_owned());
        e.records = Some(0);
        if *code == ErrorCode::SourceUnavailable {
            // What the consumer is not told (paths, driver messages) the auditor still sees.
            e.detail = gate.unchecked(&self.query.dataset);
        }
        self.outcome = Some(Outcome::Refused { code: *code, message: message.clone() });
        self.actions.push_back(ProviderAction::AppendWitnessed(Box::new(e)));
        self.state = State::RecordingRefusal(r);
    }

    fn allow(&mut self, a: Allowed) {
        let mut e = self.entry(Kind::RequestIn);
        e.reason = Some(a.reason.clone());
        e.obligations = a.obligations;
        e.decision = Some("allow".into());
        e.grant = a.grant.clone();
        e.clearance = Some(a.clearance);
        e.rows = Some(a.rows.clone());
        self.grant = a.grant;
        self.header = Some(Message::Header { fields: a.read.fields(), reason: a.reason.clone() });
        self.reason = a.reason;
        self.quota = a.quota;
        self.cap = a.cap;
        // The read starts before the decision entry is durable: the fsync overlaps the query
        // instead of adding to it.
        self.actions.push_back(ProviderAction::Read(Box::new(a.read)));
        self.actions.push_back(ProviderAction::Append(Box::new(e)));
        self.state = State::RecordingDecision;
    }

    /// The outcome of the last `AppendWitnessed`: its position in the log with the signed
    /// checkpoint covering it and its inclusion proof, or why it failed. The witness goes out
    /// with the frame that cites the entry.
    pub fn handle_witnessed(&mut self, result: Result<(u64, fedgate_audit::Witness), String>) {
        let result = result.map(|(seq, w)| {
            self.witness = Some(Box::new(w));
            seq
        });
        self.handle_appended(result);
    }

    /// The outcome of the last `Append`: its position in the log, or why it failed.
    pub fn handle_appended(&mut self, result: Result<u64, String>) {
        match std::mem::replace(&mut self.state, State::Done) {
            State::RecordingRefusal(Refusal(code, message)) => {
                // Nothing leaves unaudited, but a refusal that cannot be recorded is still one.
                let witness = self.witness.take();
                self.send(&Message::Error { code, message, witness });
                self.actions.push_back(ProviderAction::Finish);
            }
            State::RecordingDecision => match result {
                Ok(_) => self.state = State::Streaming { header_sent: false },
                Err(why) => {
                    self.refund(0);
                    self.actions.push_back(ProviderAction::StopRead);
                    self.fail(ErrorCode::Internal, "the provider could not record this transfer".into());
                    self.outcome = Some(Outcome::NotRecorded { why });
                }
            },
            State::RecordingEnd => self.recorded_end(result),
            other => self.state = other,
        }
    }

    /// The next item of the source read: a batch, a failure, or `None` at its end.
    pub fn handle_source(&mut self, item: Option<Result<Vec<Record>, SourceError>>) {
        let State::Streaming { header_sent } = self.state else { return };
        match item {
            Some(Ok(mut records)) => {
                self.send_header(header_sent);
                self.truncated = fit_cap(&mut records, self.queued, self.cap);
                if !records.is_empty() {
                    let n = records.len() as u64;
                    let frame = wire::encode(&Message::Batch { records });
                    self.digest.update(&frame[4..]);
                    self.queue_frame(frame, n);
                    self.queued += n;
                }
                if self.truncated.is_some() {
                    self.actions.push_back(ProviderAction::StopRead);
                    self.end();
                }
            }
            // No header before a failed first batch: the consumer sees the refusal's own code.
            Some(Err(e)) => {
                self.failed = Some(Abort::Source(e));
                self.actions.push_back(ProviderAction::StopRead);
                self.end();
            }
            None => {
                self.send_header(header_sent);
                self.end();
            }
        }
    }

    /// A write to the consumer failed: it went away. Nothing more is sent; the outcome is
    /// still recorded.
    pub fn handle_send_failed(&mut self, why: String) {
        if !matches!(self.state, State::Streaming { .. } | State::Ending) {
            return; // a final error frame or trailer that does not arrive changes nothing now
        }
        self.count -= std::mem::take(&mut self.last_handed);
        self.actions.retain(|a| !matches!(a, ProviderAction::Send(_)));
        self.unsent.clear();
        if self.failed.is_none() {
            self.failed = Some(Abort::Send(why));
        }
        if let State::Streaming { .. } = self.state {
            self.actions.push_back(ProviderAction::StopRead);
            self.end();
        }
    }

    /// The trailer's signature, or why signing failed.
    pub fn handle_signed(&mut self, result: Result<Vec<u8>, String>) {
        let State::Signing { audit_seq } = self.state else { return };
        self.state = State::Done;
        match result {
            Ok(sig) => {
                let trailer = Message::Trailer {
                    count: self.count,
                    digest: self.digest_hex(),
                    signature: fedgate_catalog::hex(&sig),
                    audit_seq: Some(audit_seq),
                    truncated: self.truncated,
                    witness: self.witness.take(),
                };
                self.outcome = Some(Outcome::Served { count: self.count, truncated: self.truncated });
                self.send(&trailer);
                self.actions.push_back(ProviderAction::Finish);
            }
            Err(why) => {
                let message =
                    format!("the provider could not sign this transfer (provider audit entry {audit_seq})");
                self.outcome = Some(Outcome::NotSigned { audit_seq, why });
                self.fail(ErrorCode::Internal, message);
            }
        }
    }

    fn send(&mut self, m: &Message) {
        self.queue_frame(wire::encode(m), 0);
    }

    fn queue_frame(&mut self, frame: Vec<u8>, records: u64) {
        self.unsent.push_back(records);
        self.actions.push_back(ProviderAction::Send(frame));
    }

    fn send_header(&mut self, already: bool) {
        if !already {
            if let Some(h) = self.header.take() {
                self.send(&h);
            }
            self.state = State::Streaming { header_sent: true };
        }
    }

    /// Queues a typed error (with the witness of the entry it cites, if any) and the end of
    /// the stream.
    fn fail(&mut self, code: ErrorCode, message: String) {
        let witness = self.witness.take();
        self.send(&Message::Error { code, message, witness });
        self.actions.push_back(ProviderAction::Finish);
        self.state = State::Done;
    }

    fn refund(&mut self, sent: u64) {
        if let Some(r) = self.quota.take() {
            r.ledger.refund(&r.grant, &self.peer, r.day, r.reserved.saturating_sub(sent));
        }
    }

    fn digest_hex(&self) -> String {
        fedgate_catalog::hex(self.digest.clone().finish().as_ref())
    }

    /// The transfer stopped (whole, cut, or failed); its outcome is recorded once the frames
    /// queued so far are written.
    fn end(&mut self) {
        self.state = State::Ending;
    }

    /// Refunds the quota not spent and records the outcome; the trailer, which cites that
    /// entry, waits for it to be durable.
    fn record_end(&mut self) {
        self.refund(self.count);
        let mut e = self.entry(Kind::TransferEnd);
        e.records = Some(self.count);
        e.content_digest = Some(self.digest_hex());
        e.decision = Some(match (&self.failed, self.truncated) {
            (Some(_), _) => "aborted".into(),
            (None, Some(t)) => format!("sent, truncated by {}", t.as_str()),
            (None, None) => "sent".into(),
        });
        e.truncated = self.truncated.map(|t| t.as_str().to_owned());
        e.detail = self.failed.as_ref().map(Abort::detail);
        e.code = match &self.failed {
            Some(Abort::Source(_)) => Some(ErrorCode::SourceUnavailable.as_str().to_owned()),
            Some(Abort::Send(_)) => Some("consumer-gone".to_owned()),
            None => None,
        };
        e.grant = self.grant.clone();
        self.actions.push_back(ProviderAction::AppendWitnessed(Box::new(e)));
        self.state = State::RecordingEnd;
    }

    fn recorded_end(&mut self, result: Result<u64, String>) {
        let count = self.count;
        let audit_seq = match result {
            Ok(seq) => seq,
            Err(why) => {
                let message = match &self.failed {
                    Some(Abort::Source(_)) => source_failure_message(&self.query.dataset, None),
                    _ => "the provider could not record this transfer".into(),
                };
                self.outcome = Some(Outcome::NotRecorded { why });
                return self.fail(ErrorCode::Internal, message);
            }
        };
        match self.failed.take() {
            Some(Abort::Source(error)) => {
                let message = source_failure_message(&self.query.dataset, Some(audit_seq));
                self.outcome = Some(Outcome::SourceFailed { count, audit_seq, error });
                self.fail(ErrorCode::SourceUnavailable, message);
            }
            Some(Abort::Send(why)) => {
                self.outcome = Some(Outcome::ConsumerGone { count, why });
                self.state = State::Done;
            }
            None => {
                let q = &self.query;
                let digest = self.digest_hex();
                let msg = trailer_message(
                    &self.local,
                    &self.peer,
                    &q.dataset,
                    &q.purpose,
                    count,
                    &digest,
                    self.truncated,
                    q.exchange.as_deref(),
                );
                self.actions.push_back(ProviderAction::Sign(msg));
                self.state = State::Signing { audit_seq };
            }
        }
    }

    /// The provider's reason for allowing (empty if refused).
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recs(n: usize) -> Vec<Record> {
        (0..n).map(|i| vec![Value::Int(i as i64)]).collect()
    }

    #[test]
    fn the_cap_cuts_at_the_bound_and_says_why() {
        let quota = Some((3, Truncation::Quota));
        let mut b = recs(2);
        assert_eq!(fit_cap(&mut b, 0, quota), None);
        assert_eq!(b.len(), 2);
        // The probe row past the bound: the result was cut.
        let mut b = recs(2);
        assert_eq!(fit_cap(&mut b, 2, quota), Some(Truncation::Quota));
        assert_eq!(b.len(), 1);
        let mut b = recs(1);
        assert_eq!(fit_cap(&mut b, 3, quota), Some(Truncation::Quota));
        assert!(b.is_empty());
        let mut b = recs(500);
        assert_eq!(fit_cap(&mut b, 0, None), None);
        assert_eq!(b.len(), 500);
    }
}
