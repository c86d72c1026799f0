//! The consumer's side of one query, as a state machine.
//!
//! The driver sends [`ConsumerSession::request`], then feeds every frame body that arrives to
//! [`ConsumerSession::handle_frame`], the clean end of the stream to
//! [`ConsumerSession::handle_end`], a failed read to [`ConsumerSession::handle_read_failed`],
//! and wakes the session at [`ConsumerSession::poll_timeout`] with
//! [`ConsumerSession::handle_timeout`]. It takes what happened from
//! [`ConsumerSession::poll_event`]: the header, batches of records, then exactly one of the
//! verified summary or the failure. The receipt to audit comes from
//! [`ConsumerSession::receipt`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fedgate_catalog::{NodeId, Record};
use fedgate_certs::VerifiedPeer;
use ring::digest::{Context, SHA256};

use super::{seconds, trailer_message, ExchangeError, Query, Wait};
use crate::api_code::ApiCode;
use crate::link::LinkError;
use crate::wire::{self, Message, Truncation};
use fedgate_audit::checkpoint::NoteMemo;
use fedgate_audit::{Entry, Kind, Witness};

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

/// How long a consumer waits: for the first answer (an instant), and for each next piece of
/// data once the transfer has started (a silent provider is cut; a slow but moving one never).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deadlines {
    /// The header or refusal must have arrived by then.
    pub answer_by: Option<(Instant, Duration)>,
    /// The longest silence between frames after the header.
    pub stall: Option<Duration>,
}

impl Deadlines {
    /// The first answer within `wait` of `now`, and no frame more than `wait` after the last.
    pub fn within(now: Instant, wait: Duration) -> Deadlines {
        Deadlines { answer_by: Some((now + wait, wait)), stall: Some(wait) }
    }
}

/// What happened, in order.
#[derive(Debug)]
pub enum ConsumerEvent {
    /// The transfer started: the fields every record carries and why it was allowed.
    Header,
    /// Records, each with the header's fields in order.
    Records(Vec<Record>),
    /// The trailer arrived and verified: the end of the transfer.
    Done(TransferSummary),
    /// The transfer failed; nothing more comes.
    Failed(ExchangeError),
}

enum State {
    AwaitingHeader,
    Receiving,
    Done(TransferSummary),
    /// Why, and the receipt's decision for it ([`ExchangeError::receipt_decision`]).
    Failed(String, &'static str),
}

/// One query at the consumer, from request to verified trailer.
pub struct ConsumerSession {
    peer: VerifiedPeer,
    local: NodeId,
    query: Query,
    deadlines: Deadlines,
    state: State,
    /// True once the header arrived, whatever happened after.
    header: bool,
    fields: Vec<String>,
    reason: String,
    digest: Context,
    count: u64,
    /// Since when the driver has been waiting for the next frame: the last frame's arrival or,
    /// if later, when the driver was ready for more (time the application takes to consume
    /// what arrived is not the provider's silence).
    waiting_since: Instant,
    events: VecDeque<ConsumerEvent>,
    /// Why it failed, as a code an auditor counts by: the provider's wire code, or what broke.
    code: Option<String>,
    /// The provider's audit note verifier, as its certificate vouched for it on this
    /// connection; with it every trailer must carry a witness that checks.
    audit_key: Option<Arc<(String, Vec<u8>)>>,
    /// Checkpoints of this provider already verified (shared by the connection's exchanges).
    notes: Option<Arc<NoteMemo>>,
    /// The provider's checkpoint and inclusion proof for its entry, verified.
    witness: Option<Witness>,
}

/// The code an auditor reads for a failed transfer: the provider's wire code, or what broke.
fn code_of(e: &ExchangeError) -> &'static str {
    match e {
        // The provider's own words, as it sent them.
        ExchangeError::Remote { code, .. } | ExchangeError::Link(LinkError::Remote { code, .. }) => {
            code.as_str()
        }
        // Everything else as the API and the metrics name it (`peer-timeout`, `unverified`, ...).
        e => ApiCode::from(e).as_str(),
    }
}

impl ConsumerSession {
    /// A session asking `peer` for `query` on behalf of `local`, starting at `now`.
    pub fn new(peer: VerifiedPeer, local: NodeId, query: Query, deadlines: Deadlines, now: Instant) -> Self {
        ConsumerSession {
            peer,
            local,
            query,
            deadlines,
            state: State::AwaitingHeader,
            header: false,
            fields: Vec::new(),
            reason: String::new(),
            digest: Context::new(&SHA256),
            count: 0,
            waiting_since: now,
            events: VecDeque::new(),
            code: None,
            audit_key: None,
            notes: None,
            witness: None,
        }
    }

    /// The same session checking the provider's witnessed checkpoints against `key` (its
    /// audit note verifier, vouched for by its certificate when the connection was made): a
    /// trailer must then carry a witness for the entry it cites, and a refusal's witness must
    /// check too. Without a key (a provider that predates witnessing) witnesses are ignored.
    pub fn with_audit_key(mut self, key: Option<Arc<(String, Vec<u8>)>>) -> Self {
        self.audit_key = key;
        self
    }

    /// The same session taking a checkpoint's signature as verified when `memo` holds the
    /// byte-identical note, verified with the same key (the inclusion proof is always checked).
    pub fn with_note_memo(mut self, memo: Arc<NoteMemo>) -> Self {
        self.notes = Some(memo);
        self
    }

    /// The provider's checkpoint and proof for its entry, once verified.
    pub fn witness(&self) -> Option<&Witness> {
        self.witness.as_ref()
    }

    /// The same session with `d` as the longest silence between frames after the header.
    pub fn with_stall_limit(mut self, d: Duration) -> Self {
        self.deadlines.stall = Some(d);
        self
    }

    /// The request frame to send (then finish the sending side).
    pub fn request(&self) -> Vec<u8> {
        let q = &self.query;
        wire::encode(&Message::Query {
            dataset: q.dataset.clone(),
            purpose: q.purpose.clone(),
            filters: q.filters.clone(),
            limit: q.limit,
            exchange: q.exchange.clone(),
        })
    }

    /// The query asked.
    pub fn query(&self) -> &Query {
        &self.query
    }

    /// The provider.
    pub fn peer(&self) -> &VerifiedPeer {
        &self.peer
    }

    /// The fields each record carries (empty before the header).
    pub fn fields(&self) -> &[String] {
        &self.fields
    }

    /// The provider's reason for allowing (empty before the header).
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// True once the header has arrived.
    pub fn started(&self) -> bool {
        self.header
    }

    /// True once the transfer is verified or failed.
    pub fn is_over(&self) -> bool {
        matches!(self.state, State::Done(_) | State::Failed(..))
    }

    /// The verified summary, once the trailer has been checked.
    pub fn summary(&self) -> Option<&TransferSummary> {
        match &self.state {
            State::Done(s) => Some(s),
            _ => None,
        }
    }

    /// Records received so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<ConsumerEvent> {
        self.events.pop_front()
    }

    /// When the session must be woken with [`ConsumerSession::handle_timeout`], if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::AwaitingHeader => self.deadlines.answer_by.map(|(at, _)| at),
            State::Receiving => self.deadlines.stall.map(|d| self.waiting_since + d),
            _ => None,
        }
    }

    /// The driver is ready for the next frame from `now` on: the stall limit counts from here.
    pub fn handle_ready(&mut self, now: Instant) {
        self.waiting_since = self.waiting_since.max(now);
    }

    /// Time passed: fails the transfer if a deadline has run out at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_none_or(|at| now < at) {
            return;
        }
        let who = self.who();
        match self.state {
            State::AwaitingHeader => {
                let after = self.deadlines.answer_by.map_or(Duration::ZERO, |(_, d)| d);
                self.fail(ExchangeError::TimedOut { peer: who, waiting: Wait::FirstAnswer, after });
            }
            State::Receiving => {
                let d = self.deadlines.stall.unwrap_or_default();
                self.incomplete(format!("stalled: no data for {}", seconds(d)));
            }
            _ => {}
        }
    }

    /// One frame body (after its length header) arrived at `now`.
    pub fn handle_frame(&mut self, now: Instant, body: &[u8]) {
        if self.is_over() {
            return;
        }
        let msg = match wire::frame::decode_body(body) {
            Ok(m) => m,
            Err(error) => return self.handle_read_failed(LinkError::Frame { peer: self.who(), error }),
        };
        self.waiting_since = now;
        match self.state {
            State::AwaitingHeader => self.first_answer(msg),
            State::Receiving => self.next_frame(msg, body),
            _ => {}
        }
    }

    /// The stream ended cleanly between frames.
    pub fn handle_end(&mut self) {
        match self.state {
            State::AwaitingHeader => self.fail(ExchangeError::Incomplete {
                peer: self.who(),
                count: 0,
                why: "the stream ended before any answer".into(),
            }),
            State::Receiving => self.incomplete("the stream ended without a trailer".into()),
            _ => {}
        }
    }

    /// Reading (or, before any answer, sending) failed.
    pub fn handle_read_failed(&mut self, e: LinkError) {
        match self.state {
            State::AwaitingHeader => self.fail(match e {
                LinkError::Remote { peer, code, message } => {
                    ExchangeError::Remote { peer, code, message, witness: None }
                }
                other => ExchangeError::Link(other),
            }),
            State::Receiving => self.incomplete(e.to_string()),
            _ => {}
        }
    }

    /// The provider's exchange id for this query (the consumer chose it).
    pub fn exchange(&self) -> Option<&str> {
        self.query.exchange.as_deref()
    }

    fn who(&self) -> String {
        self.peer.node().to_string()
    }

    fn fail(&mut self, e: ExchangeError) {
        if self.code.is_none() {
            self.code = Some(code_of(&e).to_owned());
        }
        self.state = State::Failed(e.to_string(), e.receipt_decision());
        self.events.push_back(ConsumerEvent::Failed(e));
    }

    fn incomplete(&mut self, why: String) {
        self.fail(ExchangeError::Incomplete { peer: self.who(), count: self.count, why });
    }

    fn bad_trailer(&mut self, why: impl Into<String>) {
        self.fail(ExchangeError::BadTrailer { peer: self.who(), why: why.into() });
    }

    fn first_answer(&mut self, msg: Message) {
        let who = self.who();
        match msg {
            Message::Header { fields, reason } => {
                self.header = true;
                self.fields = fields;
                self.reason = reason;
                self.state = State::Receiving;
                self.events.push_back(ConsumerEvent::Header);
            }
            Message::Error { code, message, witness } => {
                if let Err(why) = self.take_witness(witness, None) {
                    return self.bad_trailer(format!("the refusal's {why}"));
                }
                let witness = self.witness.clone().map(Box::new);
                self.fail(ExchangeError::Remote { peer: who, code, message, witness })
            }
            other => self.fail(ExchangeError::Link(LinkError::Protocol {
                peer: who,
                why: format!("expected a header, got {}", other.kind()),
            })),
        }
    }

    fn next_frame(&mut self, msg: Message, body: &[u8]) {
        match msg {
            Message::Batch { records } => {
                // The digest is over the bytes as received, whatever they decode to.
                self.digest.update(body);
                if records.iter().any(|r| r.len() != self.fields.len()) {
                    return self.bad_trailer("a record does not match the header's fields");
                }
                self.count += records.len() as u64;
                self.events.push_back(ConsumerEvent::Records(records));
            }
            Message::Trailer { count, digest, signature, audit_seq, truncated, witness } => self
                .check_trailer(TransferSummary { count, digest, signature, audit_seq, truncated }, witness),
            Message::Error { code, message, witness } => {
                if let Err(why) = self.take_witness(witness, None) {
                    return self.bad_trailer(format!("the error frame's {why}"));
                }
                self.code = Some(code.as_str().to_owned());
                self.incomplete(format!("{code:?}: {message}"))
            }
            other => self.incomplete(format!("unexpected {} frame", other.kind())),
        }
    }

    /// Checks a witness against the provider's audit key and keeps it. Without a key there is
    /// nothing to check it against: it is not kept. `cited` is the entry the frame cites.
    fn take_witness(&mut self, w: Option<Box<Witness>>, cited: Option<u64>) -> Result<(), String> {
        let Some(key) = self.audit_key.clone() else { return Ok(()) };
        let Some(w) = w else {
            return match cited {
                Some(seq) => Err(format!("witness is missing: the provider announced its audit key, but does not prove its entry {seq}")),
                None => Ok(()),
            };
        };
        let checked = match &self.notes {
            Some(memo) => w.check_memo(&key, cited, memo),
            None => w.check(&key, cited),
        };
        checked.map_err(|e| format!("witness does not verify: {e}"))?;
        self.witness = Some(*w);
        Ok(())
    }

    fn check_trailer(&mut self, t: TransferSummary, witness: Option<Box<Witness>>) {
        let ours = fedgate_catalog::hex(self.digest.clone().finish().as_ref());
        if t.count != self.count {
            return self.bad_trailer(format!("trailer says {} records, received {}", t.count, self.count));
        }
        if t.digest != ours {
            return self.bad_trailer("content digest does not match what was received");
        }
        let q = &self.query;
        let msg = trailer_message(
            self.peer.node(),
            &self.local,
            &q.dataset,
            &q.purpose,
            t.count,
            &t.digest,
            t.truncated,
            q.exchange.as_deref(),
        );
        let valid =
            fedgate_catalog::unhex(&t.signature).is_some_and(|sig| self.peer.verify_signature(&msg, &sig));
        if !valid {
            return self.bad_trailer("the provider's signature does not verify");
        }
        // A witnessing provider cites the entry that records the transfer and proves it.
        if self.audit_key.is_some() && t.audit_seq.is_none() {
            return self.bad_trailer("the trailer cites no provider audit entry to witness");
        }
        if let Err(why) = self.take_witness(witness, t.audit_seq) {
            return self.bad_trailer(format!("the trailer's {why}"));
        }
        self.state = State::Done(t.clone());
        self.events.push_back(ConsumerEvent::Done(t));
    }

    /// The consumer's audit entry for this transfer, starting from `template` (this node, the
    /// digests in force): what was asked and what arrived. A transfer that never started is
    /// `refused`; one that started and neither verified nor failed is `abandoned`.
    pub fn receipt(&self, template: Entry) -> Entry {
        let mut e = template;
        e.kind = Some(Kind::RequestOut);
        e.counterpart = Some(self.who());
        e.dataset = Some(self.query.dataset.clone());
        e.purpose = Some(self.query.purpose.clone());
        e.filters = self.query.filters.clone();
        e.records = Some(self.count);
        e.exchange = self.query.exchange.clone();
        e.code = self.code.clone();
        e.witness = self.witness.clone();
        if !self.started() {
            e.provider_entry = self.witness.as_ref().map(|w| w.entry);
            e.decision = Some(match &self.state {
                // A refusal whose witness did not verify is evidence of tampering, not a refusal.
                State::Failed(_, d @ "unverified") => (*d).into(),
                _ => "refused".into(),
            });
            if let State::Failed(why, _) = &self.state {
                e.reason = Some(why.clone());
            }
            return e;
        }
        e.obligations = self.fields.iter().map(|f| format!("{f}=received")).collect();
        e.reason = Some(self.reason.clone());
        match &self.state {
            State::Done(s) => {
                e.decision = Some(match s.truncated {
                    Some(t) => format!("received, truncated by {}", t.as_str()),
                    None => "received".into(),
                });
                e.truncated = s.truncated.map(|t| t.as_str().to_owned());
                e.content_digest = Some(s.digest.clone());
                e.signature = Some(s.signature.clone());
                e.provider_entry = s.audit_seq;
            }
            State::Failed(why, decision) => {
                e.decision = Some((*decision).into());
                e.detail = Some(why.clone());
            }
            _ => e.decision = Some("abandoned".into()),
        }
        e
    }
}
