//! The objection driver: the provider answers an `objection` on one QUIC stream ([`serve`]);
//! the consumer keeps sending each of its objections until the provider's steward has decided
//! it ([`keep_asking`]). Decisions are the pure cores' ([`crate::governance::objection`],
//! [`crate::exchange::objection`]); this moves messages, records, entries and signatures.

use std::sync::Arc;
use std::time::Duration;

use fedgate_catalog::{NodeId, Record};
use fedgate_certs::VerifiedPeer;

use crate::exchange::objection::{decide_record, one_record, RecordRead};
use crate::exchange::provider::Refusal;
use crate::governance::objection::{intake, value_digest, Answer, Mark, Objection, State};
use crate::governance::objection_store::{Filed, ObjectionStoreError};
use crate::governance::store::Role;
use crate::link::{self, LinkError, PeerConnection};
use crate::state::Shared;
use crate::wire::{ErrorCode, Message};
use fedgate_audit::{Entry, Kind};

/// Pause between rounds of asking when nothing changed here.
pub const ASK_EVERY: Duration = Duration::from_secs(2);

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ObjectionStoreError> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// The objection an `objection` message carries, from `consumer` (the connection's peer) to
/// `provider` (this node), with the consumer's signature.
pub fn from_message(msg: Message, consumer: &NodeId, provider: &NodeId) -> Option<(Objection, String)> {
    let Message::Objection { exchange, dataset, purpose, key, field, reason, proposed, signature } = msg
    else {
        return None;
    };
    let o = Objection {
        exchange,
        consumer: consumer.clone(),
        provider: provider.clone(),
        dataset,
        purpose,
        key,
        field,
        reason,
        proposed,
    };
    Some((o, signature))
}

/// The message that sends `f` (an outgoing objection) to its provider.
pub fn to_message(f: &Filed) -> Message {
    Message::Objection {
        exchange: f.id.clone(),
        dataset: f.dataset.clone(),
        purpose: f.purpose.clone(),
        key: f.key.clone(),
        field: f.field.clone(),
        reason: f.reason.clone(),
        proposed: f.proposed.clone(),
        signature: f.signature.clone(),
    }
}

/// A governance entry about objection `o`, with `peer` as the counterpart: the dataset, the
/// purpose, the exchange id and the record's key (as the one filter) in it.
pub fn entry(shared: &Shared, o: &Objection, peer: &NodeId, decision: &str) -> Entry {
    let mut e = shared.audit_entry(Kind::Governance);
    e.counterpart = Some(peer.to_string());
    e.dataset = Some(o.dataset.clone());
    e.purpose = Some(o.purpose.clone());
    e.exchange = Some(o.exchange.clone());
    e.filters = vec![("@key".into(), o.key.clone())];
    e.decision = Some(decision.into());
    e
}

/// Reads every record `r` yields.
pub async fn read_records(r: &RecordRead) -> Result<Vec<Record>, crate::source::SourceError> {
    let mut rx = crate::source::spawn(&r.kind, r.query.clone(), r.transform());
    let mut out = Vec::new();
    while let Some(batch) = rx.recv().await {
        out.extend(batch?);
    }
    Ok(out)
}

/// Serves one `objection` from `peer` (provider side): checks, stores, marks and audits it the
/// first time, and answers with where it stands, signed.
pub async fn serve(shared: Arc<Shared>, peer: VerifiedPeer, mut send: quinn::SendStream, msg: Message) {
    let who = peer.node().to_string();
    let answer = match from_message(msg, peer.node(), shared.link.local()) {
        Some((o, signature)) => answer(&shared, &peer, o, signature).await,
        None => Message::error(ErrorCode::Internal, "not an objection"),
    };
    let _ = link::write_frame(&mut send, &answer, &who).await;
    let _ = send.finish();
}

async fn answer(shared: &Arc<Shared>, peer: &VerifiedPeer, o: Objection, signature: String) -> Message {
    let signed = fedgate_catalog::unhex(&signature).is_some_and(|s| peer.verify_signature(&o.message(), &s));
    if !signed {
        let why = "the objection's signature does not verify against your certificate".to_owned();
        return refuse(shared, &o, ErrorCode::BadRequest, why).await;
    }
    if let Err(why) = o.check() {
        return refuse(shared, &o, ErrorCode::BadRequest, why).await;
    }
    let (id, store) = (o.exchange.clone(), shared.objections.clone());
    let held = match blocking(move || store.find(&id, Role::Incoming)).await {
        Ok(Some(f)) => f,
        Ok(None) => return receive(shared, &o, &signature).await.unwrap_or_else(|m| m),
        Err(why) => return internal(&why),
    };
    if held.objection(shared.link.local()).ok().as_ref() != Some(&o) {
        let why = format!("objection {} was already received with different content", o.exchange);
        return refuse(shared, &o, ErrorCode::BadRequest, why).await;
    }
    signed_answer(shared, &o, &held, None)
}

/// An objection seen for the first time: intake, the query's decision for the consumer, the
/// record read within its rows; then audited before it is stored and marked, so a crash in
/// between costs at most a second entry when the consumer resends, never a missing one.
async fn receive(shared: &Arc<Shared>, o: &Objection, signature: &str) -> Result<Message, Message> {
    let now = unix_now();
    let catalog = shared.catalog();
    let (key, _) = match intake(&catalog, o) {
        Ok(k) => k,
        Err((code, why)) => return Err(refuse(shared, o, code, why).await),
    };
    let decided = {
        let policy = shared.policy();
        let ctx = crate::quic::provider_context(shared, &catalog, &policy, Kind::Governance);
        decide_record(&ctx, &o.consumer, o, &key, now)
    };
    let read = match decided {
        Ok(r) => r,
        Err(Refusal(code, why)) => return Err(refuse(shared, o, code, why).await),
    };
    let records = match read_records(&read).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, dataset = %o.dataset, "reading an objection's record failed");
            let why = format!("the source of `{}` cannot be read right now; try again later", o.dataset);
            return Err(refuse(shared, o, ErrorCode::SourceUnavailable, why).await);
        }
    };
    let what = || format!("with key {:?} of `{}` is delivered to you", o.key, o.dataset);
    let record = match one_record(records, what) {
        Ok(r) => r,
        Err(why) => return Err(refuse(shared, o, ErrorCode::Denied, why).await),
    };
    let digest = value_digest(record.get(read.field).unwrap_or(&fedgate_catalog::Value::Null));
    let mut e = entry(shared, o, &o.consumer, "received");
    e.reason = Some(o.reason.clone());
    e.signature = Some(signature.to_owned());
    e.detail = Some(format!(
        "objection to field `{}`{}",
        o.field,
        if o.proposed.is_some() { "; a value is proposed" } else { "" }
    ));
    e.records = Some(1);
    let seq = shared.audit.append(e).await.map_err(|e| internal(&e.to_string()))?;
    let (store, sig, stored) = (shared.objections.clone(), signature.to_owned(), o.clone());
    let (held, _) =
        blocking(move || store.receive(&stored, &sig, &digest, now)).await.map_err(|why| internal(&why))?;
    let mark = Mark { id: held.id.clone(), field: held.field.clone(), received: held.created };
    shared.marks.add(&held.dataset, &key, mark);
    tracing::info!(consumer = %o.consumer, dataset = %o.dataset, exchange = %o.exchange, "objection received");
    Ok(signed_answer(shared, o, &held, Some(seq)))
}

fn internal(why: &str) -> Message {
    tracing::error!(error = %why, "objection failed");
    Message::error(ErrorCode::Internal, "the provider could not record the objection; retry later")
}

async fn refuse(shared: &Shared, o: &Objection, code: ErrorCode, why: String) -> Message {
    let mut e = entry(shared, o, &o.consumer, "deny");
    e.code = Some(code.as_str().into());
    e.reason = Some(format!("objection: {why}"));
    e.records = Some(0);
    if let Err(err) = shared.audit.append(e).await {
        tracing::error!(error = %err, "audit append failed");
    }
    Message::error(code, why)
}

fn signed_answer(shared: &Shared, o: &Objection, held: &Filed, audit_seq: Option<u64>) -> Message {
    let a = held.answer();
    let signature = match shared.signer.sign(&a.message(o)) {
        Ok(s) => fedgate_catalog::hex(&s),
        Err(e) => return internal(&e.to_string()),
    };
    Message::ObjectionAnswer {
        exchange: o.exchange.clone(),
        state: a.state.as_str().into(),
        reason: a.reason,
        corrected: a.corrected,
        answered: a.answered,
        signature,
        audit_seq,
    }
}

/// Keeps sending this node's undecided objections to their providers until each is decided;
/// across restarts, since the objections are stored.
pub(crate) async fn keep_asking(shared: Arc<Shared>) {
    let mut changes = shared.objections.changes();
    let every = shared.cfg.reload_interval.min(ASK_EVERY);
    loop {
        changes.borrow_and_update();
        let store = shared.objections.clone();
        if let Ok(open) = blocking(move || store.to_ask()).await {
            for f in open {
                if let Err(why) = ask(&shared, &f).await {
                    tracing::debug!(exchange = %f.id, peer = %f.peer, error = %why, "objection not delivered yet; retrying");
                }
            }
        }
        let _ = tokio::time::timeout(every, changes.changed()).await;
    }
}

/// Sends one outgoing objection and records the provider's answer if it changed.
pub async fn ask(shared: &Arc<Shared>, f: &Filed) -> Result<(), String> {
    let o = f.objection(shared.link.local())?;
    let msg = to_message(f);
    let pc = shared.peer(&o.provider).await.map_err(|e| e.to_string())?;
    let got = match link::request_one(&pc, &msg).await {
        // The cached connection was dead (the provider restarted): dial again, once.
        Err(e) if pc.conn.close_reason().is_some() && !matches!(e, LinkError::Remote { .. }) => {
            let pc = shared.peer(&o.provider).await.map_err(|e| e.to_string())?;
            let got = link::request_one(&pc, &msg).await;
            return answered(shared, &o, &pc, got).await;
        }
        other => other,
    };
    answered(shared, &o, &pc, got).await
}

async fn answered(
    shared: &Arc<Shared>,
    o: &Objection,
    pc: &PeerConnection,
    got: Result<Message, LinkError>,
) -> Result<(), String> {
    let now = unix_now();
    let (answer, signature, provider_entry) = match got {
        Ok(Message::ObjectionAnswer { state, reason, corrected, answered, signature, audit_seq, .. }) => {
            let state = State::parse(&state)
                .filter(|s| matches!(s, State::Open | State::Accepted | State::Rejected))
                .ok_or("unknown answer state")?;
            let a = Answer { state, reason, corrected, answered };
            let ok = fedgate_catalog::unhex(&signature)
                .is_some_and(|s| pc.peer.verify_signature(&a.message(o), &s));
            if !ok {
                return Err(format!("{}: the answer's signature does not verify", o.provider));
            }
            (a, signature, audit_seq)
        }
        // Refused at intake (no such record for this node, a field it is not sent): final.
        Err(LinkError::Remote { code, message, .. })
            if code != ErrorCode::Internal && code != ErrorCode::Busy =>
        {
            let reason = Some(format!("{}: {message}", code.as_str()));
            (
                Answer { state: State::Refused, reason, corrected: false, answered: Some(now) },
                String::new(),
                None,
            )
        }
        Ok(other) => return Err(format!("expected an objection answer, got {}", other.kind())),
        Err(e) => return Err(e.to_string()),
    };
    let (store, id) = (shared.objections.clone(), o.exchange.clone());
    let held = blocking(move || store.get(&id, Role::Outgoing)).await?;
    if held.state != State::Unsent && held.answer() == answer {
        return Ok(());
    }
    // Audited before it is stored: a crash in between costs a second entry at the next ask,
    // never a missing one.
    let mut e = entry(shared, o, &o.provider, answer.state.as_str());
    e.reason = answer.reason.clone();
    e.provider_entry = provider_entry;
    e.signature = Some(signature.clone()).filter(|s| !s.is_empty());
    e.detail = Some(format!(
        "objection to field `{}`{}",
        o.field,
        if answer.corrected { "; the provider corrected the record" } else { "" }
    ));
    shared.audit.append(e).await.map_err(|e| e.to_string())?;
    let (store, id, a) = (shared.objections.clone(), o.exchange.clone(), answer.clone());
    blocking(move || store.record_answer(&id, &a, &signature)).await?;
    tracing::info!(exchange = %o.exchange, provider = %o.provider, state = answer.state.as_str(), "objection answered");
    Ok(())
}
