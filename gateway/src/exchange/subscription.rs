//! Subscriptions as sans-IO state machines: one delivery round at the provider
//! ([`PublisherSession`]) and at the subscriber ([`SubscriberSession`]).
//!
//! A subscription is an exchange with a longer life. Its id is chosen by the subscriber when it
//! is created and sent in every round. A round: the subscriber asks for the events after its
//! cursor (`events-request`; the cursor is also the acknowledgement of everything up to it,
//! stored durably); the provider decides again — same [`decide_for`] path as a query, as a
//! `subscribe` action, so an expired or revoked grant stops delivery at the next round — records
//! the acknowledgement, then sends up to [`ROUND_BATCHES`] batches, each an `events` frame closed
//! by a signed `events-trailer`, waiting for the first event up to the round's wait. The
//! subscriber verifies each batch (continuity, count, digest, signature) and hands it to its
//! driver to store and audit before it looks at the next; it acknowledges in the next round.
//!
//! What bounds memory: a round holds at most [`ROUND_BATCHES`] × [`MAX_BATCH`] events in
//! flight, and a subscriber whose application is behind does not start the next round.

use std::collections::VecDeque;
use std::sync::Arc;

use fedgate_catalog::{NodeId, Value};
use fedgate_certs::VerifiedPeer;
use fedgate_policy::{Action, Plan};
use ring::digest::{digest, SHA256};

use super::provider::{decide_for, Allowed, ProviderContext, Refusal, Reservation};
use super::Query;
use crate::events::{Event, Slice};
use crate::wire::{self, ErrorCode, Message};
use fedgate_audit::{Entry, Kind, Witness};

/// Events per batch at most.
pub const MAX_BATCH: usize = 256;
/// Batches per round at most: what is in flight before the subscriber acknowledges.
pub const ROUND_BATCHES: usize = 4;

/// A subscription as the subscriber created it; fixed for its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The exchange id (32 lowercase hex digits), chosen by the subscriber.
    pub exchange: String,
    /// The dataset.
    pub dataset: String,
    /// The declared purpose.
    pub purpose: String,
    /// Equality filters, as in a query.
    pub filters: Vec<(String, String)>,
}

impl Subscription {
    /// A new subscription under a fresh random exchange id.
    pub fn create(
        dataset: &str,
        purpose: &str,
        filters: Vec<(String, String)>,
    ) -> Result<Subscription, String> {
        let exchange = super::new_exchange_id().ok_or("no system randomness for an exchange id")?;
        Ok(Subscription { exchange, dataset: dataset.into(), purpose: purpose.into(), filters })
    }

    /// The request opening a round that starts after `acked`.
    pub fn request(&self, acked: u64, wait_ms: u64) -> Message {
        Message::EventsRequest {
            exchange: self.exchange.clone(),
            dataset: self.dataset.clone(),
            purpose: self.purpose.clone(),
            filters: self.filters.clone(),
            acked,
            wait_ms,
        }
    }
}

/// What a batch covers, as signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// First id covered.
    pub first: u64,
    /// Last id covered.
    pub last: u64,
    /// Ids the provider no longer keeps, inside `first..=last`.
    pub gap: Option<(u64, u64)>,
}

impl Span {
    /// `events 3..=9` or `events 3..=9, gap 3..=5`: as audit entries record it.
    pub fn describe(&self) -> String {
        let gap = self.gap.map_or_else(String::new, |(a, b)| format!(", gap {a}..={b}"));
        format!("events {}..={}{gap}", self.first, self.last)
    }
}

/// What the provider signs for one batch: who sent which events of which subscription to whom,
/// how many, which bytes. Distinct from a query's summary (`fedgate transfer`), so neither
/// signature can be passed off as the other.
pub fn batch_message(
    provider: &NodeId,
    subscriber: &NodeId,
    sub: &Subscription,
    span: Span,
    count: u64,
    digest: &str,
) -> Vec<u8> {
    let gap = span.gap.map_or_else(String::new, |(a, b)| format!("{a}-{b}"));
    format!(
        "fedgate events v1\0{provider}\0{subscriber}\0{}\0{}\0{}\0{}\0{}\0{gap}\0{count}\0{digest}",
        sub.dataset, sub.purpose, sub.exchange, span.first, span.last
    )
    .into_bytes()
}

/// What the provider's driver must do next, in order.
#[must_use = "every action must be executed, in order"]
#[derive(Debug)]
pub enum PublisherAction {
    /// Store that the subscription acknowledged every event up to `upto`.
    Ack {
        /// The acknowledged cursor.
        upto: u64,
    },
    /// Read up to `max` events after `after` from the event log; if `wait` and there are none
    /// (and no gap), wait for new ones up to the round's wait first. Answer with
    /// [`PublisherSession::handle_read`].
    Read {
        /// Read after this id.
        after: u64,
        /// At most this many.
        max: usize,
        /// Whether this read may wait for new events.
        wait: bool,
    },
    /// Append this entry durably with a signed checkpoint covering it and its inclusion proof
    /// ([`fedgate_audit::AuditLog::append_witnessed`]), then answer with
    /// [`PublisherSession::handle_witnessed`]. The entry is the one the next frame cites (a
    /// batch, or the refusal), and the subscriber keeps the witness.
    AppendWitnessed(Box<Entry>),
    /// Sign this message with the connection certificate's key, then answer with
    /// [`PublisherSession::handle_signed`].
    Sign(Vec<u8>),
    /// Write this frame.
    Send(Vec<u8>),
    /// End the stream.
    Finish,
}

/// A batch made and not yet sent.
struct Pending {
    frame: Vec<u8>,
    span: Span,
    count: u64,
    digest: String,
}

enum PubState {
    RecordingRefusal(Refusal),
    Reading,
    RecordingBatch(Pending),
    Signing(Pending, u64, Box<Witness>),
    Done,
}

/// Everything of the decision a round's batches need.
struct Granted {
    plan: Arc<Plan>,
    marking: Option<Arc<crate::governance::objection::Marking>>,
    filters: Vec<(usize, Value)>,
    quota: Option<Reservation>,
    entry: Entry,
}

/// One round of a subscription at the provider.
pub struct PublisherSession {
    local: NodeId,
    peer: NodeId,
    sub: Subscription,
    state: PubState,
    actions: VecDeque<PublisherAction>,
    granted: Option<Granted>,
    /// The last id covered by a batch of this round (or the acknowledged cursor).
    sent_to: u64,
    batches: usize,
    /// Events sent this round (what quotas count).
    delivered: u64,
    refused: Option<ErrorCode>,
}

impl PublisherSession {
    /// A round asked by `peer` for `sub` after `acked`, decided at unix time `now`.
    pub fn new(ctx: &ProviderContext<'_>, peer: &NodeId, sub: Subscription, acked: u64, now: i64) -> Self {
        let q = query(&sub);
        let mut s = PublisherSession {
            local: ctx.local.clone(),
            peer: peer.clone(),
            sub,
            state: PubState::Done,
            actions: VecDeque::new(),
            granted: None,
            sent_to: acked,
            batches: 0,
            delivered: 0,
            refused: None,
        };
        let mut entry = ctx.entry.clone();
        entry.counterpart = Some(peer.to_string());
        entry.dataset = Some(s.sub.dataset.clone());
        entry.purpose = Some(s.sub.purpose.clone());
        entry.filters = s.sub.filters.clone();
        entry.exchange = Some(s.sub.exchange.clone());
        match decide_for(ctx, peer, &q, Action::Subscribe, now) {
            Ok(a) => s.allow(a, entry, acked),
            Err(r) => s.refuse(r, entry),
        }
        s
    }

    /// Decides again before a batch, against the rules in force at `now` (`ctx`): a grant
    /// revoked or expired since the round began stops it here, before anything more leaves,
    /// and changed obligations apply from this batch on. The round's quota reservation stays.
    fn redecide(&mut self, ctx: &ProviderContext<'_>, now: i64) -> bool {
        let Some(g) = self.granted.as_mut() else { return false };
        match decide_for(ctx, &self.peer, &query(&self.sub), Action::Subscribe, now) {
            Ok(mut a) => {
                if let Some(q) = a.quota.take() {
                    q.settle(&self.peer, 0);
                }
                let (filters, entry) = granted_parts(&a, g.entry.clone());
                (g.plan, g.marking, g.filters, g.entry) = (a.read.plan, a.read.marking, filters, entry);
                true
            }
            // The round's own reservation is what used the quota up: it stands.
            Err(Refusal(ErrorCode::QuotaExceeded, _)) => true,
            Err(r) => {
                let mut base = g.entry.clone();
                (base.obligations, base.grant, base.clearance, base.rows) = (vec![], None, None, None);
                if let Some(q) = g.quota.take() {
                    q.settle(&self.peer, self.delivered);
                }
                self.refuse(r, base);
                false
            }
        }
    }

    /// The next action, if any.
    pub fn poll_action(&mut self) -> Option<PublisherAction> {
        self.actions.pop_front()
    }

    /// True once every action has been taken and nothing more will come.
    pub fn is_done(&self) -> bool {
        matches!(self.state, PubState::Done) && self.actions.is_empty()
    }

    /// The code the round was refused with, if it was.
    pub fn refused(&self) -> Option<ErrorCode> {
        self.refused
    }

    /// Events sent this round.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    fn allow(&mut self, a: Allowed, entry: Entry, acked: u64) {
        let (filters, entry) = granted_parts(&a, entry);
        let (plan, marking) = (a.read.plan, a.read.marking);
        self.granted = Some(Granted { plan, marking, filters, quota: a.quota, entry });
        self.actions.push_back(PublisherAction::Ack { upto: acked });
        self.actions.push_back(PublisherAction::Read { after: acked, max: MAX_BATCH, wait: true });
        self.state = PubState::Reading;
    }

    fn refuse(&mut self, r: Refusal, mut entry: Entry) {
        let Refusal(code, message) = &r;
        let denied = code.is_policy_denial();
        entry.kind = Some(if denied { Kind::Deny } else { Kind::RequestIn });
        entry.decision = Some(if denied { "deny" } else { "error" }.into());
        entry.reason = Some(format!("subscription: {code:?}: {message}"));
        entry.code = Some(code.as_str().to_owned());
        entry.records = Some(0);
        self.refused = Some(*code);
        self.actions.push_back(PublisherAction::AppendWitnessed(Box::new(entry)));
        self.state = PubState::RecordingRefusal(r);
    }

    /// Events the quota still allows this round, at most a batch.
    fn room(&self) -> usize {
        let quota = self.granted.as_ref().and_then(|g| g.quota.as_ref()).map(|q| q.reserved);
        let left = quota.map_or(u64::MAX, |q| q.saturating_sub(self.delivered));
        usize::try_from(left).unwrap_or(usize::MAX).min(MAX_BATCH)
    }

    /// What the event log returned for the last `Read`; the batch is decided again at `now`
    /// against `ctx` (the rules in force now) before it is made.
    pub fn handle_read(&mut self, ctx: &ProviderContext<'_>, slice: Slice, now: i64) {
        if !matches!(self.state, PubState::Reading) || !self.redecide(ctx, now) {
            return;
        }
        let Some(g) = &self.granted else { return self.finish() };
        let room = self.room();
        let mut events = Vec::new();
        let mut last = slice.gap.map_or(self.sent_to, |(_, b)| b);
        for ev in slice.events {
            let shown =
                g.plan.in_scope(&ev.record) && g.filters.iter().all(|(i, v)| ev.record.get(*i) == Some(v));
            if shown && events.len() == room {
                // The quota counts events sent; the batch ends before the first it cannot carry.
                break;
            }
            last = ev.id;
            if shown {
                let record = match &g.marking {
                    None => g.plan.apply(&ev.record),
                    Some(m) => m.deliver(&g.plan, &ev.record),
                };
                events.push(Event { record, ..ev });
            }
        }
        if last == self.sent_to {
            return self.finish();
        }
        let span = Span { first: self.sent_to + 1, last, gap: slice.gap };
        let count = events.len() as u64;
        let fields = super::provider::delivered_fields(&g.plan, g.marking.as_deref());
        let frame = wire::encode(&Message::Events { first: span.first, last, gap: span.gap, fields, events });
        let digest = fedgate_catalog::hex(digest(&SHA256, &frame[4..]).as_ref());
        let mut e = g.entry.clone();
        e.decision = Some("sent".into());
        e.records = Some(count);
        e.content_digest = Some(digest.clone());
        e.detail = Some(span.describe());
        self.actions.push_back(PublisherAction::AppendWitnessed(Box::new(e)));
        self.state = PubState::RecordingBatch(Pending { frame, span, count, digest });
    }

    /// The outcome of the last `AppendWitnessed`: the entry's position in the log with the
    /// signed checkpoint covering it and its inclusion proof, or why it failed.
    pub fn handle_witnessed(&mut self, result: Result<(u64, Witness), String>) {
        match std::mem::replace(&mut self.state, PubState::Done) {
            PubState::RecordingRefusal(Refusal(code, message)) => {
                // A refusal goes out even if recording it failed; with its witness if it did not.
                let witness = result.ok().map(|(_, w)| Box::new(w));
                self.send(&Message::Error { code, message, witness });
                self.actions.push_back(PublisherAction::Finish);
            }
            PubState::RecordingBatch(p) => match result {
                Ok((seq, w)) => {
                    let msg = batch_message(&self.local, &self.peer, &self.sub, p.span, p.count, &p.digest);
                    self.actions.push_back(PublisherAction::Sign(msg));
                    self.state = PubState::Signing(p, seq, Box::new(w));
                }
                // Nothing leaves unrecorded; the subscriber asks again from its cursor.
                Err(_) => self.fail("the provider could not record this batch"),
            },
            other => self.state = other,
        }
    }

    /// The batch trailer's signature, or why signing failed.
    pub fn handle_signed(&mut self, result: Result<Vec<u8>, String>) {
        let PubState::Signing(p, seq, witness) = std::mem::replace(&mut self.state, PubState::Done) else {
            return;
        };
        let Ok(sig) = result else {
            return self
                .fail(&format!("the provider could not sign this batch (provider audit entry {seq})"));
        };
        self.actions.push_back(PublisherAction::Send(p.frame));
        let signature = fedgate_catalog::hex(&sig);
        self.send(&Message::EventsTrailer {
            count: p.count,
            digest: p.digest,
            signature,
            audit_seq: Some(seq),
            witness: Some(witness),
        });
        self.sent_to = p.span.last;
        self.delivered += p.count;
        self.batches += 1;
        if self.batches < ROUND_BATCHES && self.room() > 0 {
            self.actions.push_back(PublisherAction::Read {
                after: self.sent_to,
                max: MAX_BATCH,
                wait: false,
            });
            self.state = PubState::Reading;
        } else {
            self.finish();
        }
    }

    fn send(&mut self, m: &Message) {
        self.actions.push_back(PublisherAction::Send(wire::encode(m)));
    }

    fn fail(&mut self, message: &str) {
        self.send(&Message::error(ErrorCode::Internal, message));
        self.finish();
    }

    fn finish(&mut self) {
        if let Some(q) = self.granted.as_mut().and_then(|g| g.quota.take()) {
            q.settle(&self.peer, self.delivered);
        }
        self.actions.push_back(PublisherAction::Finish);
        self.state = PubState::Done;
    }
}

/// True if and only if a refusal with `code` ends the subscription rather than the round: the
/// provider's policy refused it, or it can never be served as asked (a filter on a field not
/// seen in clear, a request over the caps). Everything else (quota, load, a source down) is
/// retried.
pub fn stops(code: ErrorCode) -> bool {
    code.is_policy_denial()
        || matches!(code, ErrorCode::BadFilter | ErrorCode::BadRequest | ErrorCode::Unsupported)
}

/// The query a subscription's rounds are decided as: a query for at most a round's events.
fn query(sub: &Subscription) -> Query {
    Query {
        dataset: sub.dataset.clone(),
        purpose: sub.purpose.clone(),
        filters: sub.filters.clone(),
        limit: Some((ROUND_BATCHES * MAX_BATCH) as u64),
        exchange: Some(sub.exchange.clone()),
    }
}

/// The filters as field positions, and the batch entry template with the decision's grant,
/// clearance, rows and obligations.
fn granted_parts(a: &Allowed, mut entry: Entry) -> (Vec<(usize, Value)>, Entry) {
    let columns = &a.read.query.columns;
    let filters = a
        .read
        .query
        .filters
        .iter()
        .filter_map(|(name, v)| columns.iter().position(|(c, _)| c == name).map(|i| (i, v.clone())))
        .collect();
    entry.kind = Some(Kind::TransferEnd);
    entry.reason = Some(format!("subscription: {}", a.reason));
    entry.obligations = a.obligations.clone();
    entry.grant = a.grant.clone();
    entry.clearance = Some(a.clearance);
    entry.rows = Some(a.rows.clone());
    (filters, entry)
}

/// A batch that verified: to be stored (events and cursor in one transaction) and its receipt
/// audited, before the subscriber looks at anything else.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedBatch {
    /// What it covers.
    pub span: Span,
    /// The fields of each record.
    pub fields: Vec<String>,
    /// The events.
    pub events: Vec<Event>,
    /// The subscriber's receipt for its audit log.
    pub receipt: Entry,
}

/// What the subscriber's driver is told.
#[derive(Debug)]
pub enum SubscriberEvent {
    /// Store this batch durably and audit its receipt, then call
    /// [`SubscriberSession::handle_stored`].
    Batch(Box<VerifiedBatch>),
    /// The provider refused the round. `stop` when its policy refused (the subscription is
    /// over until a steward changes the grants), otherwise retry later.
    Refused {
        /// The provider's code.
        code: ErrorCode,
        /// Its message.
        message: String,
        /// True if and only if the subscription is over ([`stops`]).
        stop: bool,
    },
    /// The round broke: a bad or cut batch. Nothing unverified was handed out; the next round
    /// starts from the stored cursor.
    Broken(String),
    /// The round ended cleanly.
    Over,
}

enum SubState {
    /// Waiting for an `events` frame (or the end).
    Idle,
    /// Got an `events` frame; waiting for its trailer.
    Trailer {
        span: Span,
        fields: Vec<String>,
        events: Vec<Event>,
        digest: String,
    },
    /// A verified batch is with the driver.
    Storing(u64),
    Over,
}

/// One round of a subscription at the subscriber.
pub struct SubscriberSession {
    provider: VerifiedPeer,
    local: NodeId,
    sub: Subscription,
    template: Entry,
    cursor: u64,
    state: SubState,
    queued: VecDeque<Vec<u8>>,
    events: VecDeque<SubscriberEvent>,
    /// The provider's audit note verifier, as its certificate vouched for it on this
    /// connection; with it every batch trailer must carry a witness that checks.
    audit_key: Option<Arc<(String, Vec<u8>)>>,
}

/// What an `events-trailer` says about the batch before it.
struct Trailer<'a> {
    count: u64,
    digest: &'a str,
    signature: &'a str,
    audit_seq: Option<u64>,
    witness: Option<Box<Witness>>,
}

impl SubscriberSession {
    /// A round of `sub` from `provider` (verified from its certificate) after `cursor`; every
    /// receipt starts from `template` (this node's entry with its digests).
    pub fn new(
        provider: VerifiedPeer,
        local: NodeId,
        sub: Subscription,
        cursor: u64,
        template: Entry,
    ) -> Self {
        SubscriberSession {
            provider,
            local,
            sub,
            template,
            cursor,
            state: SubState::Idle,
            queued: VecDeque::new(),
            events: VecDeque::new(),
            audit_key: None,
        }
    }

    /// The same round checking the provider's witnessed checkpoints against `key` (its audit
    /// note verifier, vouched for by its certificate when the connection was made): every batch
    /// trailer must then cite the entry recording the batch and carry a witness for it that
    /// checks. Without a key (a provider that predates witnessing) witnesses are ignored.
    pub fn with_audit_key(mut self, key: Option<Arc<(String, Vec<u8>)>>) -> Self {
        self.audit_key = key;
        self
    }

    /// The cursor: the last id stored (as told by [`SubscriberSession::handle_stored`]).
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// True once the round is over.
    pub fn is_over(&self) -> bool {
        matches!(self.state, SubState::Over) && self.events.is_empty()
    }

    /// The next thing the driver must act on.
    pub fn poll_event(&mut self) -> Option<SubscriberEvent> {
        self.events.pop_front()
    }

    /// A frame body from the provider.
    pub fn handle_frame(&mut self, body: &[u8]) {
        if matches!(self.state, SubState::Storing(_)) {
            // Looked at only once the batch before it is stored.
            self.queued.push_back(body.to_vec());
            return;
        }
        if matches!(self.state, SubState::Over) {
            return;
        }
        let msg = match wire::frame::decode_body(body) {
            Ok(m) => m,
            Err(e) => return self.broken(format!("a frame did not decode: {e}")),
        };
        match (std::mem::replace(&mut self.state, SubState::Idle), msg) {
            (SubState::Idle, Message::Events { first, last, gap, fields, events }) => {
                let span = Span { first, last, gap };
                if let Err(why) = self.check_span(span, &events) {
                    return self.broken(why);
                }
                let digest = fedgate_catalog::hex(digest(&SHA256, body).as_ref());
                self.state = SubState::Trailer { span, fields, events, digest };
            }
            (
                SubState::Trailer { span, fields, events, digest },
                Message::EventsTrailer { count, digest: d, signature, audit_seq, witness },
            ) => {
                let t = Trailer { count, digest: &d, signature: &signature, audit_seq, witness };
                self.check_batch(span, fields, events, &digest, t);
            }
            (SubState::Idle, Message::Error { code, message, .. }) => {
                let stop = stops(code);
                self.events.push_back(SubscriberEvent::Refused { code, message, stop });
                self.state = SubState::Over;
            }
            (_, other) => self.broken(format!("unexpected {} frame", other.kind())),
        }
    }

    /// The ids must continue the cursor without a hole, and the events lie inside them, in order.
    fn check_span(&self, s: Span, events: &[Event]) -> Result<(), String> {
        if s.first != self.cursor + 1 || s.last < s.first {
            return Err(format!(
                "batch covers {}..={}, but the cursor is at {}",
                s.first, s.last, self.cursor
            ));
        }
        if let Some((a, b)) = s.gap {
            if a != s.first || b < a || b > s.last {
                return Err(format!("gap {a}..={b} is not at the start of {}", s.describe()));
            }
        }
        let low = s.gap.map_or(s.first, |(_, b)| b + 1);
        let ordered = events.windows(2).all(|w| w[0].id < w[1].id);
        if !ordered || events.iter().any(|e| e.id < low || e.id > s.last) {
            return Err(format!("event ids out of order or outside {}", s.describe()));
        }
        Ok(())
    }

    fn check_batch(
        &mut self,
        span: Span,
        fields: Vec<String>,
        events: Vec<Event>,
        digest: &str,
        t: Trailer<'_>,
    ) {
        let Trailer { count, digest: claimed, signature, audit_seq, witness } = t;
        if count != events.len() as u64 {
            return self.broken(format!("trailer says {count} events, the batch has {}", events.len()));
        }
        if claimed != digest {
            return self.broken("the batch's digest does not match its trailer".into());
        }
        let msg = batch_message(self.provider.node(), &self.local, &self.sub, span, count, digest);
        if !fedgate_catalog::unhex(signature).is_some_and(|sig| self.provider.verify_signature(&msg, &sig)) {
            return self.broken("the provider's signature over the batch does not verify".into());
        }
        let witness = match self.check_witness(audit_seq, witness) {
            Ok(w) => w,
            Err(why) => return self.broken(format!("the batch trailer's {why}")),
        };
        let mut r = self.template.clone();
        r.witness = witness;
        r.kind = Some(Kind::RequestOut);
        r.counterpart = Some(self.provider.node().to_string());
        r.dataset = Some(self.sub.dataset.clone());
        r.purpose = Some(self.sub.purpose.clone());
        r.filters = self.sub.filters.clone();
        r.exchange = Some(self.sub.exchange.clone());
        r.decision = Some("received".into());
        r.records = Some(count);
        r.content_digest = Some(digest.to_owned());
        r.signature = Some(signature.to_owned());
        r.provider_entry = audit_seq;
        r.detail = Some(span.describe());
        self.state = SubState::Storing(span.last);
        self.events.push_back(SubscriberEvent::Batch(Box::new(VerifiedBatch {
            span,
            fields,
            events,
            receipt: r,
        })));
    }

    /// The trailer's witness, checked against the provider's audit key: it must prove the entry
    /// the trailer cites. Without a key there is nothing to check it against, and it is not kept.
    fn check_witness(&self, cited: Option<u64>, w: Option<Box<Witness>>) -> Result<Option<Witness>, String> {
        let Some(key) = &self.audit_key else { return Ok(None) };
        let Some(seq) = cited else { return Err("cites no provider audit entry to witness".into()) };
        let Some(w) = w else {
            return Err(format!(
                "witness is missing: the provider announced its audit key, but does not prove its entry {seq}"
            ));
        };
        w.check(key, Some(seq)).map_err(|e| format!("witness does not verify: {e}"))?;
        Ok(Some(*w))
    }

    /// The last batch is stored (and its receipt appended), or why not. A batch that could not
    /// be stored ends the round: it is asked again from the old cursor.
    pub fn handle_stored(&mut self, result: Result<(), String>) {
        let SubState::Storing(last) = self.state else { return };
        match result {
            Ok(()) => {
                self.cursor = last;
                self.state = SubState::Idle;
                while let Some(f) = self.queued.pop_front() {
                    if f.is_empty() {
                        self.handle_end();
                        break;
                    }
                    self.handle_frame(&f);
                    if matches!(self.state, SubState::Storing(_) | SubState::Over) {
                        break;
                    }
                }
            }
            Err(why) => self.broken(format!("storing the batch failed: {why}")),
        }
    }

    /// The stream ended.
    pub fn handle_end(&mut self) {
        match self.state {
            SubState::Idle => {
                self.state = SubState::Over;
                self.events.push_back(SubscriberEvent::Over);
            }
            SubState::Trailer { .. } => self.broken("the stream ended before the batch's trailer".into()),
            // Frames still queued behind a batch being stored are looked at first.
            SubState::Storing(_) => self.queued.push_back(Vec::new()),
            SubState::Over => {}
        }
    }

    fn broken(&mut self, why: String) {
        self.queued.clear();
        self.state = SubState::Over;
        self.events.push_back(SubscriberEvent::Broken(why));
    }
}
