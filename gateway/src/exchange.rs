//! The record exchange: a provider answering a query, a consumer receiving and checking it.
//!
//! Provider: decide once, compile the obligations into a plan, read the source with the scope
//! and filters pushed down, apply the plan on the reading side, stream batches (QUIC flow control
//! and a bounded channel give backpressure), then a signed trailer. Consumer: count and hash
//! every batch as received, check the trailer against both and the provider's certificate key;
//! a stream that ends any other way is an incomplete transfer, never a short success.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use fedgate_catalog::{Dataset, FieldType, NodeId, Record, Value};
use fedgate_certs::VerifiedPeer;
use fedgate_policy::mask::consumer_key;
use fedgate_policy::{Action, Decision, Obligation, Plan, Request};
use ring::digest::{Context, SHA256};
use thiserror::Error;

use crate::link::{self, LinkError, PeerConnection};
use crate::node::Shared;
use crate::source::{self, SourceQuery};
use crate::wire::{self, ErrorCode, Message, Truncation};
use fedgate_audit::{Entry, Kind};

/// Why a query failed at the consumer.
#[derive(Debug, Error)]
pub enum ExchangeError {
    /// Connecting or talking failed before any record.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// The provider refused or failed with a typed error.
    #[error("{peer}: {code:?}: {message}")]
    Remote {
        /// The provider.
        peer: String,
        /// Its error code.
        code: ErrorCode,
        /// Its reason.
        message: String,
    },
    /// The stream ended without a valid trailer.
    #[error("incomplete transfer from {peer} after {count} records: {why}")]
    Incomplete {
        /// The provider.
        peer: String,
        /// Records received before it broke.
        count: u64,
        /// What happened.
        why: String,
    },
    /// The trailer does not match what arrived.
    #[error("transfer from {peer} failed verification: {why}")]
    BadTrailer {
        /// The provider.
        peer: String,
        /// What did not match.
        why: String,
    },
    /// The provider did not answer in time.
    #[error("{peer} timed out: {waiting} took longer than {}", seconds(*after))]
    TimedOut {
        /// The provider.
        peer: String,
        /// What the consumer was waiting for.
        waiting: Wait,
        /// The limit that ran out.
        after: std::time::Duration,
    },
}

/// What a consumer was waiting for when its time ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// The QUIC handshake and the hello.
    Connect,
    /// The provider's first answer (header or refusal) to a query.
    FirstAnswer,
}

impl std::fmt::Display for Wait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Wait::Connect => "connecting (QUIC handshake and hello)",
            Wait::FirstAnswer => "the first answer to the query",
        })
    }
}

/// `30 s`, `0.5 s`: durations as people read them in messages.
pub fn seconds(d: std::time::Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

/// What the provider signs: who sent what to whom, for which purpose, how many, which bytes,
/// and whether (and why) that was less than everything that matched.
pub fn trailer_message(
    provider: &NodeId,
    consumer: &NodeId,
    dataset: &str,
    purpose: &str,
    count: u64,
    digest: &str,
    truncated: Option<Truncation>,
) -> Vec<u8> {
    let cut = truncated.map_or("", Truncation::as_str);
    format!("fedgate transfer v1\0{provider}\0{consumer}\0{dataset}\0{purpose}\0{count}\0{digest}\0{cut}")
        .into_bytes()
}

/// Per-grant, per-consumer, per-day record counts for quotas.
#[derive(Debug, Default)]
pub struct QuotaLedger {
    used: Mutex<HashMap<(String, NodeId, i64), u64>>,
}

impl QuotaLedger {
    /// Reserves up to `want` records (all remaining if `None`) of `quota`; returns how many.
    pub fn reserve(&self, grant: &str, peer: &NodeId, day: i64, quota: u64, want: Option<u64>) -> u64 {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let u = used.entry((grant.to_owned(), peer.clone(), day)).or_default();
        let take = quota.saturating_sub(*u).min(want.unwrap_or(u64::MAX));
        *u += take;
        take
    }

    /// Gives back what was reserved but not sent.
    pub fn refund(&self, grant: &str, peer: &NodeId, day: i64, n: u64) {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(u) = used.get_mut(&(grant.to_owned(), peer.clone(), day)) {
            *u = u.saturating_sub(n);
        }
    }
}

/// A provider-side failure: the code and message the consumer gets.
struct Refusal(ErrorCode, String);

/// A fresh random 128-bit exchange id, hex. The provider picks it while consumers do not send
/// one; it ties a transfer's decision entry to its outcome entry.
fn new_exchange_id() -> Option<String> {
    let bytes: [u8; 16] = ring::rand::generate(&ring::rand::SystemRandom::new()).ok()?.expose();
    Some(fedgate_catalog::hex(&bytes))
}

/// The audit entry of a query received, before its outcome is known.
fn entry_in(
    shared: &Shared,
    kind: Kind,
    peer: &NodeId,
    dataset: &str,
    purpose: &str,
    filters: &[(String, String)],
) -> Entry {
    let mut e = shared.audit_entry(kind);
    e.counterpart = Some(peer.to_string());
    e.dataset = Some(dataset.to_owned());
    e.purpose = Some(purpose.to_owned());
    e.filters = filters.to_vec();
    e
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

/// Everything decided before the first record leaves: the plan and the source query.
struct Prepared {
    obligations: Vec<String>,
    plan: Arc<Plan>,
    query: SourceQuery,
    kind: crate::config::SourceKind,
    reason: String,
    quota: Option<(String, i64, u64)>,
    /// The most records this answer may carry, and who set that bound.
    cap: Option<(u64, Truncation)>,
}

fn prepare(
    shared: &Shared,
    peer: &NodeId,
    dataset: &str,
    purpose: &str,
    filters: &[(String, String)],
    limit: Option<u64>,
    now: i64,
) -> Result<Prepared, Refusal> {
    let catalog = shared.catalog();
    let policy = shared.policy();
    let req = Request { dataset: dataset.to_owned(), purpose: purpose.to_owned(), action: Action::Read };
    let decision = policy.decide(&catalog, peer, &req, now).map_err(|e| {
        tracing::error!(error = %e, "the policy engine failed; refusing the query as internal");
        Refusal(ErrorCode::from(&e), "the provider failed to decide; try again".into())
    })?;
    let allowed = match &*decision {
        Decision::Allow(a) => a.clone(),
        Decision::Deny { reason, message } => return Err(Refusal(reason.into(), message.clone())),
    };
    let Some(ds) = catalog.get(dataset) else {
        return Err(Refusal(ErrorCode::UnknownDataset, format!("no dataset `{dataset}` here")));
    };
    let filters = parse_filters(ds, &allowed.fields, filters)?;
    let Some(src) = shared.cfg.sources.iter().find(|s| s.dataset == dataset) else {
        return Err(Refusal(
            ErrorCode::SourceUnavailable,
            format!("dataset `{dataset}` has no data source configured at its provider"),
        ));
    };
    if shared.sources.unchecked(dataset).is_some() {
        // Never read a source that has not been checked against the catalog: its columns could
        // be anything. Why it is unchecked goes to the provider's log, not to the consumer.
        return Err(Refusal(
            ErrorCode::SourceUnavailable,
            format!("the source of `{dataset}` is not available at the provider right now; try again later"),
        ));
    }
    let mut cap = limit.map(|l| (l, Truncation::Limit));
    let mut quota = None;
    if let (Some(q), Some(grant)) = (allowed.quota, &allowed.grant) {
        let day = fedgate_policy::time::cst_day(now);
        let got = shared.quotas.reserve(grant, peer, day, q, limit);
        if got == 0 {
            return Err(Refusal(ErrorCode::QuotaExceeded, format!("the daily quota of {q} records for `{dataset}` is used up; it resets at midnight (UTC+8)")));
        }
        if limit.is_none_or(|l| got < l) {
            cap = Some((got, Truncation::Quota));
        }
        quota = Some((grant.clone(), day, got));
    }
    let key = consumer_key(shared.masking_secret(), &peer.to_string());
    let plan = Arc::new(Plan::new(ds, &allowed, key));
    // One row past the cap tells a cut result from one that happens to end there. SQL LIMITs
    // are signed 64-bit: past that, the probe is dropped rather than the query failing.
    let limit = cap.map(|(n, _)| n.saturating_add(1).min(i64::MAX as u64));
    let query = SourceQuery::new(ds, &src.table, allowed.rows.clone(), filters, limit);
    let obligations = allowed.fields.iter().map(|(f, o)| format!("{f}={}", o.name())).collect();
    Ok(Prepared { obligations, plan, query, kind: src.kind.clone(), reason: decision.reason(), quota, cap })
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

/// Why a transfer stopped before its trailer.
enum Abort {
    /// The source failed; the detail (paths, SQL, driver messages) stays at the provider.
    Source(source::SourceError),
    /// Writing to the consumer failed: it went away.
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

/// What the consumer is told when the provider's source fails: that it did, and where the
/// provider's operator finds the details — never the details themselves.
fn source_failure_message(dataset: &str, audit_seq: Option<u64>) -> String {
    let entry = audit_seq.map_or_else(String::new, |s| format!(" (provider audit entry {s})"));
    format!("the provider cannot read dataset `{dataset}` right now; its operator has the details{entry}")
}

/// Serves one query on its stream (provider side).
pub async fn serve_query(
    shared: Arc<Shared>,
    peer: VerifiedPeer,
    mut send: quinn::SendStream,
    dataset: String,
    purpose: String,
    filters: Vec<(String, String)>,
    limit: Option<u64>,
) {
    let who = peer.node().to_string();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let Some(exchange) = new_exchange_id() else {
        tracing::error!("no randomness for an exchange id; refusing the query");
        link::reply_error(&mut send, ErrorCode::Internal, "the provider failed; try again".into(), &who)
            .await;
        return;
    };
    let started = std::time::Instant::now();
    let p = match shared
        .metrics
        .time_decision(|| prepare(&shared, peer.node(), &dataset, &purpose, &filters, limit, now))
    {
        Ok(p) => p,
        Err(Refusal(code, message)) => {
            shared.metrics.query_refused(&who, &dataset, &purpose, code, started);
            tracing::info!(peer = %who, %dataset, %purpose, ?code, %message, "query refused");
            let kind = if code == ErrorCode::Denied { Kind::Deny } else { Kind::RequestIn };
            let mut e = entry_in(&shared, kind, peer.node(), &dataset, &purpose, &filters);
            e.decision = Some(if code == ErrorCode::Denied { "deny" } else { "error" }.into());
            e.reason = Some(format!("{code:?}: {message}"));
            e.records = Some(0);
            e.exchange = Some(exchange);
            if code == ErrorCode::SourceUnavailable {
                // What the consumer is not told (paths, driver messages) the auditor still sees.
                e.detail = shared.sources.unchecked(&dataset);
            }
            if let Err(err) = shared.audit.append(e).await {
                // Nothing leaves unaudited: a refusal that cannot be recorded is still a refusal.
                tracing::error!(error = %err, "audit append failed");
            }
            link::reply_error(&mut send, code, message, &who).await;
            return;
        }
    };
    // The source starts reading while the decision entry is made durable: the fsync overlaps the
    // query instead of adding to it, and no record leaves before the decision is on disk.
    let plan = p.plan.clone();
    let transform: source::Transform =
        Arc::new(move |rec: Record| plan.in_scope(&rec).then(|| plan.apply(&rec)));
    let mut rx = source::spawn(&p.kind, p.query, transform);
    let mut decided = entry_in(&shared, Kind::RequestIn, peer.node(), &dataset, &purpose, &filters);
    decided.reason = Some(p.reason.clone());
    decided.obligations = p.obligations.clone();
    decided.decision = Some("allow".into());
    decided.exchange = Some(exchange.clone());
    if let Err(err) = shared.audit.append(decided).await {
        tracing::error!(error = %err, "audit append failed; sending nothing");
        if let Some((grant, day, reserved)) = &p.quota {
            shared.quotas.refund(grant, peer.node(), *day, *reserved);
        }
        link::reply_error(
            &mut send,
            ErrorCode::Internal,
            "the provider could not record this transfer".into(),
            &who,
        )
        .await;
        return;
    }
    let header = Message::Header { fields: p.plan.fields().to_vec(), reason: p.reason.clone() };
    let mut digest = Context::new(&SHA256);
    let mut count = 0u64;
    // The header commits the consumer to a transfer (its API answers 200), so a source that
    // fails before its first batch gets no header: the consumer sees the refusal's own code.
    let mut first = rx.recv().await;
    let mut failed = if matches!(first, Some(Err(_))) {
        None
    } else {
        link::write_frame(&mut send, &header, &who).await.err().map(|e| Abort::Send(e.to_string()))
    };
    let mut truncated = None;
    while failed.is_none() {
        let next = match first.take() {
            Some(b) => Some(b),
            None => rx.recv().await,
        };
        let Some(batch) = next else { break };
        match batch {
            Ok(mut records) => {
                truncated = fit_cap(&mut records, count, p.cap);
                if !records.is_empty() {
                    let n = records.len() as u64;
                    let frame = wire::encode(&Message::Batch { records });
                    digest.update(&frame[4..]);
                    if let Err(e) = link::write_encoded(&mut send, &frame, &who).await {
                        failed = Some(Abort::Send(e.to_string()));
                        break;
                    }
                    count += n;
                }
                if truncated.is_some() {
                    break; // dropping the receiver stops the source read
                }
            }
            Err(e) => {
                failed = Some(Abort::Source(e));
                break;
            }
        }
    }
    drop(rx);
    if let Some((grant, day, reserved)) = &p.quota {
        shared.quotas.refund(grant, peer.node(), *day, reserved.saturating_sub(count));
    }
    let digest = fedgate_catalog::hex(digest.finish().as_ref());
    let mut e = entry_in(&shared, Kind::TransferEnd, peer.node(), &dataset, &purpose, &filters);
    e.records = Some(count);
    e.content_digest = Some(digest.clone());
    e.decision = Some(match (&failed, truncated) {
        (Some(_), _) => "aborted".into(),
        (None, Some(t)) => format!("sent, truncated by {}", t.as_str()),
        (None, None) => "sent".into(),
    });
    e.truncated = truncated.map(|t| t.as_str().to_owned());
    e.detail = failed.as_ref().map(Abort::detail);
    e.exchange = Some(exchange);
    // The trailer cites this entry, so it is written (durably) before the trailer leaves.
    let audit_seq = match shared.audit.append(e).await {
        Ok(seq) => seq,
        Err(err) => {
            tracing::error!(error = %err, "audit append failed; withholding the trailer");
            let message = match &failed {
                Some(Abort::Source(_)) => source_failure_message(&dataset, None),
                _ => "the provider could not record this transfer".into(),
            };
            link::reply_error(&mut send, ErrorCode::Internal, message, &who).await;
            return;
        }
    };
    match failed {
        Some(Abort::Source(err)) => {
            tracing::warn!(peer = %who, %dataset, count, audit_seq, error = %err, "source failed; transfer aborted");
            let message = source_failure_message(&dataset, Some(audit_seq));
            link::reply_error(&mut send, ErrorCode::SourceUnavailable, message, &who).await;
            shared.metrics.query_ended(&who, &dataset, &purpose, "source-unavailable", count, started);
            return;
        }
        Some(Abort::Send(why)) => {
            tracing::warn!(peer = %who, %dataset, count, %why, "transfer aborted");
            shared.metrics.query_ended(&who, &dataset, &purpose, "consumer-gone", count, started);
            return;
        }
        None => {}
    }
    let msg =
        trailer_message(shared.link.local(), peer.node(), &dataset, &purpose, count, &digest, truncated);
    let signature = match shared.signer.sign(&msg) {
        Ok(s) => fedgate_catalog::hex(&s),
        Err(e) => {
            // The cause is about the node's key: the operator's business, not the consumer's.
            tracing::error!(error = %e, audit_seq, "signing the trailer failed");
            let message =
                format!("the provider could not sign this transfer (provider audit entry {audit_seq})");
            link::reply_error(&mut send, ErrorCode::Internal, message, &who).await;
            return;
        }
    };
    let trailer = Message::Trailer { count, digest, signature, audit_seq: Some(audit_seq), truncated };
    let _ = link::write_frame(&mut send, &trailer, &who).await;
    let _ = send.finish();
    shared.metrics.query_ended(&who, &dataset, &purpose, "ok", count, started);
    tracing::info!(peer = %who, %dataset, %purpose, count, truncated = ?truncated, "query served");
}

/// Whether `e` from [`Transfer::start`] means the connection was already gone: it is closed now,
/// and what failed was not an answer from the peer or a refusal of our certificate.
fn died_before_answer(pc: &PeerConnection, e: &ExchangeError) -> bool {
    let answered = matches!(
        e,
        ExchangeError::Remote { .. }
            | ExchangeError::Link(
                LinkError::Refused { .. } | LinkError::Remote { .. } | LinkError::Frame { .. }
            )
    );
    !answered && pc.conn.close_reason().is_some()
}

/// A query in progress at the consumer: field names, then batches, then a checked end.
pub struct Transfer {
    peer: VerifiedPeer,
    local: NodeId,
    dataset: String,
    purpose: String,
    recv: quinn::RecvStream,
    fields: Vec<String>,
    reason: String,
    digest: Option<Context>,
    count: u64,
    done: Option<TransferSummary>,
    stall: Option<std::time::Duration>,
}

/// What a completed transfer proved.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TransferSummary {
    /// Records received and vouched for.
    pub count: u64,
    /// SHA-256 over what was received.
    pub digest: String,
    /// The provider's signature (hex), verified.
    pub signature: String,
    /// The provider's audit position, if it reported one.
    pub audit_seq: Option<u64>,
    /// Set when the provider vouches that more records matched than it sent, and why.
    pub truncated: Option<Truncation>,
}

impl Transfer {
    /// The dataset asked for.
    pub fn dataset(&self) -> &str {
        &self.dataset
    }

    /// The declared purpose.
    pub fn purpose(&self) -> &str {
        &self.purpose
    }

    /// Sends the query and waits for the header (or the refusal).
    pub async fn start(
        pc: &PeerConnection,
        local: &NodeId,
        dataset: &str,
        purpose: &str,
        filters: Vec<(String, String)>,
        limit: Option<u64>,
    ) -> Result<Transfer, ExchangeError> {
        let who = pc.peer.node().to_string();
        let (mut send, mut recv) = pc.conn.open_bi().await.map_err(|e| link::lost(&who, e))?;
        let q = Message::Query { dataset: dataset.into(), purpose: purpose.into(), filters, limit };
        if let Err(e) = link::send_request(&mut send, &mut recv, &q, &who).await {
            return Err(match e {
                LinkError::Remote { peer, code, message } => ExchangeError::Remote { peer, code, message },
                other => other.into(),
            });
        }
        match link::read_frame(&mut recv, &who).await? {
            Some(Message::Header { fields, reason }) => Ok(Transfer {
                peer: pc.peer.clone(),
                local: local.clone(),
                dataset: dataset.into(),
                purpose: purpose.into(),
                recv,
                fields,
                reason,
                digest: Some(Context::new(&SHA256)),
                count: 0,
                done: None,
                stall: None,
            }),
            Some(Message::Error { code, message }) => Err(ExchangeError::Remote { peer: who, code, message }),
            Some(other) => Err(ExchangeError::Link(LinkError::Protocol {
                peer: who,
                why: format!("expected a header, got {}", crate::node::kind(&other)),
            })),
            None => Err(ExchangeError::Incomplete {
                peer: who,
                count: 0,
                why: "the stream ended before any answer".into(),
            }),
        }
    }

    /// [`Transfer::start`] on `pc`; if that connection turns out dead before any answer arrived
    /// (the provider restarted: its stateless reset or close ended the cached connection), dials
    /// afresh and asks once more. A query is a read, so asking twice is safe; a refusal or an
    /// answer is never retried.
    pub async fn start_redialling(
        shared: &Shared,
        pc: PeerConnection,
        dataset: &str,
        purpose: &str,
        filters: Vec<(String, String)>,
        limit: Option<u64>,
    ) -> Result<Transfer, ExchangeError> {
        let local = &shared.cfg.node;
        match Transfer::start(&pc, local, dataset, purpose, filters.clone(), limit).await {
            Err(e) if died_before_answer(&pc, &e) => {
                tracing::info!(peer = %pc.peer.node(), error = %e, "cached connection was dead; dialling again");
                let fresh = shared.peer(pc.peer.node()).await.map_err(|e| match e {
                    crate::node::NodeError::Link(l) => ExchangeError::Link(l),
                    other => ExchangeError::Link(LinkError::Protocol {
                        peer: pc.peer.node().to_string(),
                        why: other.to_string(),
                    }),
                })?;
                Transfer::start(&fresh, local, dataset, purpose, filters, limit).await
            }
            other => other,
        }
    }

    /// Gives up on the transfer, as incomplete, when no data arrives for `d` between frames.
    /// A slow but moving transfer is never cut; a silent provider is.
    pub fn stall_limit(mut self, d: std::time::Duration) -> Transfer {
        self.stall = Some(d);
        self
    }

    /// The fields each record carries.
    pub fn fields(&self) -> &[String] {
        &self.fields
    }

    /// The provider's reason for allowing.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The provider.
    pub fn peer(&self) -> &NodeId {
        self.peer.node()
    }

    /// The next batch; `Ok(None)` once the trailer has been received and verified.
    pub async fn next_batch(&mut self) -> Result<Option<Vec<Record>>, ExchangeError> {
        if self.done.is_some() {
            return Ok(None);
        }
        let who = self.peer.node().to_string();
        let incomplete = |count, why: String| ExchangeError::Incomplete { peer: who.clone(), count, why };
        let read = link::read_frame_raw(&mut self.recv, &who);
        let read = match self.stall {
            Some(d) => match tokio::time::timeout(d, read).await {
                Ok(r) => r,
                Err(_) => return Err(incomplete(self.count, format!("stalled: no data for {}", seconds(d)))),
            },
            None => read.await,
        };
        let frame = match read {
            Ok(f) => f,
            Err(e) => return Err(incomplete(self.count, e.to_string())),
        };
        match frame {
            Some((Message::Batch { records }, body)) => {
                if let Some(d) = self.digest.as_mut() {
                    d.update(&body);
                }
                if records.iter().any(|r| r.len() != self.fields.len()) {
                    return Err(ExchangeError::BadTrailer {
                        peer: who,
                        why: "a record does not match the header's fields".into(),
                    });
                }
                self.count += records.len() as u64;
                Ok(Some(records))
            }
            Some((Message::Trailer { count, digest, signature, audit_seq, truncated }, _)) => {
                let ours =
                    self.digest.take().map(|d| fedgate_catalog::hex(d.finish().as_ref())).unwrap_or_default();
                if count != self.count {
                    return Err(ExchangeError::BadTrailer {
                        peer: who,
                        why: format!("trailer says {count} records, received {}", self.count),
                    });
                }
                if digest != ours {
                    return Err(ExchangeError::BadTrailer {
                        peer: who,
                        why: "content digest does not match what was received".into(),
                    });
                }
                let msg = trailer_message(
                    self.peer.node(),
                    &self.local,
                    &self.dataset,
                    &self.purpose,
                    count,
                    &digest,
                    truncated,
                );
                let valid = fedgate_catalog::unhex(&signature)
                    .is_some_and(|sig| self.peer.verify_signature(&msg, &sig));
                if !valid {
                    return Err(ExchangeError::BadTrailer {
                        peer: who,
                        why: "the provider's signature does not verify".into(),
                    });
                }
                self.done = Some(TransferSummary { count, digest, signature, audit_seq, truncated });
                Ok(None)
            }
            Some((Message::Error { code, message }, _)) => {
                Err(incomplete(self.count, format!("{code:?}: {message}")))
            }
            Some((other, _)) => {
                Err(incomplete(self.count, format!("unexpected {} frame", crate::node::kind(&other))))
            }
            None => Err(incomplete(self.count, "the stream ended without a trailer".into())),
        }
    }

    /// The consumer's audit entry for this transfer: what was asked and what arrived.
    pub fn receipt(
        &self,
        shared: &Shared,
        filters: &[(String, String)],
        outcome: Result<(), &ExchangeError>,
    ) -> Entry {
        let mut e = shared.audit_entry(Kind::RequestOut);
        e.counterpart = Some(self.peer.node().to_string());
        e.dataset = Some(self.dataset.clone());
        e.purpose = Some(self.purpose.clone());
        e.filters = filters.to_vec();
        e.records = Some(self.count);
        e.obligations = self.fields.iter().map(|f| format!("{f}=received")).collect();
        e.reason = Some(self.reason.clone());
        match (outcome, &self.done) {
            (Ok(()), Some(s)) => {
                e.decision = Some(match s.truncated {
                    Some(t) => format!("received, truncated by {}", t.as_str()),
                    None => "received".into(),
                });
                e.truncated = s.truncated.map(|t| t.as_str().to_owned());
                e.content_digest = Some(s.digest.clone());
                e.detail = Some(format!(
                    "provider signature {}; provider audit entry {:?}",
                    s.signature, s.audit_seq
                ));
            }
            (Err(err), _) => {
                e.decision = Some("incomplete".into());
                e.detail = Some(err.to_string());
            }
            (Ok(()), None) => e.decision = Some("abandoned".into()),
        }
        e
    }

    /// The verified summary, once `next_batch` has returned `Ok(None)`.
    pub fn summary(&self) -> Option<&TransferSummary> {
        self.done.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recs(n: usize) -> Vec<Record> {
        (0..n).map(|i| vec![Value::Int(i as i64)]).collect()
    }

    #[test]
    fn the_signed_summary_covers_truncation() {
        let (p, c) = ("hotline12345@wuxi".parse().unwrap(), "police@wuxi.liangxi".parse().unwrap());
        let msg = |t| trailer_message(&p, &c, "ds", "statistics", 3, "ab", t);
        // A trailer stripped of its truncation no longer matches the signature made over it.
        assert_ne!(msg(None), msg(Some(Truncation::Quota)));
        assert_ne!(msg(Some(Truncation::Limit)), msg(Some(Truncation::Quota)));
        assert!(msg(Some(Truncation::Quota)).ends_with(b"\0ab\0quota"));
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

    #[test]
    fn source_failures_reach_the_consumer_without_details() {
        let m = source_failure_message("cases", Some(7));
        assert_eq!(m, "the provider cannot read dataset `cases` right now; its operator has the details (provider audit entry 7)");
    }
}
