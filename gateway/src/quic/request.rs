//! The sharing-request driver: the provider answers a `sharing-request` on one QUIC stream
//! ([`serve`]); the consumer keeps sending each of its requests whose answer may still change
//! until it has ([`keep_asking`]). Decisions are the pure core's
//! ([`crate::governance::request`]); this moves messages, rows, entries and signatures.

use std::sync::Arc;
use std::time::Duration;

use fedgate_catalog::NodeId;
use fedgate_certs::VerifiedPeer;

use crate::governance::request::{intake, Answer, SharingRequest, State};
use crate::governance::store::{Held, Role, StoreError};
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
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// The request a `sharing-request` message carries, with `consumer` (the connection's peer)
/// and `provider` (this node), and the consumer's signature.
pub fn from_message(msg: Message, consumer: &NodeId, provider: &NodeId) -> Option<(SharingRequest, String)> {
    let Message::SharingRequest { exchange, dataset, purpose, fields, until, reason, signature } = msg else {
        return None;
    };
    let req = SharingRequest {
        exchange,
        consumer: consumer.clone(),
        provider: provider.clone(),
        dataset,
        purpose,
        fields,
        until,
        reason,
    };
    Some((req, signature))
}

/// The message that sends `held` (an outgoing request) to its provider.
pub fn to_message(held: &Held) -> Message {
    Message::SharingRequest {
        exchange: held.id.clone(),
        dataset: held.dataset.clone(),
        purpose: held.purpose.clone(),
        fields: held.fields.clone(),
        until: held.until,
        reason: held.reason.clone(),
        signature: held.signature.clone(),
    }
}

/// A governance entry about request `req`, with `peer` as the counterpart.
pub fn entry(shared: &Shared, req: &SharingRequest, peer: &NodeId, decision: &str) -> Entry {
    let mut e = shared.audit_entry(Kind::Governance);
    e.counterpart = Some(peer.to_string());
    e.dataset = Some(req.dataset.clone());
    e.purpose = Some(req.purpose.clone());
    e.exchange = Some(req.exchange.clone());
    e.decision = Some(decision.into());
    e
}

/// Serves one `sharing-request` from `peer` (provider side): checks, stores and audits it the
/// first time, and answers with where it stands, signed.
pub async fn serve(shared: Arc<Shared>, peer: VerifiedPeer, mut send: quinn::SendStream, msg: Message) {
    let who = peer.node().to_string();
    let answer = match from_message(msg, peer.node(), shared.link.local()) {
        Some((req, signature)) => answer(&shared, &peer, req, signature).await,
        None => Message::error(ErrorCode::Internal, "not a sharing request"),
    };
    let _ = link::write_frame(&mut send, &answer, &who).await;
    let _ = send.finish();
}

async fn answer(
    shared: &Arc<Shared>,
    peer: &VerifiedPeer,
    req: SharingRequest,
    signature: String,
) -> Message {
    let now = unix_now();
    let signed =
        fedgate_catalog::unhex(&signature).is_some_and(|s| peer.verify_signature(&req.message(), &s));
    if !signed {
        let why = "the request's signature does not verify against your certificate".to_owned();
        return refuse(shared, &req, ErrorCode::BadRequest, why).await;
    }
    if let Err(why) = req.check(now) {
        return refuse(shared, &req, ErrorCode::BadRequest, why).await;
    }
    let (id, store) = (req.exchange.clone(), shared.requests.clone());
    let known = blocking(move || store.get(&id, Role::Incoming, now).map(Some).or_else(not_found)).await;
    let held = match known {
        Ok(Some(h)) => h,
        Ok(None) => match receive(shared, &req, &signature, now).await {
            Ok(m) => return m,
            Err(m) => return m,
        },
        Err(why) => return internal(&why),
    };
    if held.request(shared.link.local()).ok().as_ref() != Some(&req) {
        let why = format!("request {} was already received with different content", req.exchange);
        return refuse(shared, &req, ErrorCode::BadRequest, why).await;
    }
    signed_answer(shared, &req, &held, None)
}

fn not_found(e: StoreError) -> Result<Option<Held>, StoreError> {
    match e {
        StoreError::Unknown { .. } => Ok(None),
        other => Err(other),
    }
}

/// A request seen for the first time: intake, then audited before it is stored, so a crash in
/// between costs at most a second entry when the consumer resends, never a missing one.
async fn receive(
    shared: &Arc<Shared>,
    req: &SharingRequest,
    signature: &str,
    now: i64,
) -> Result<Message, Message> {
    let (catalog, policy) = (shared.catalog(), shared.policy());
    let grade = match intake(&catalog, |p| policy.knows_purpose(p), req) {
        Ok(g) => g,
        Err((code, why)) => return Err(refuse(shared, req, code, why).await),
    };
    let deadline = crate::governance::answer_deadline(&shared.calendar, now, shared.cfg.answer_days);
    let mut e = entry(shared, req, &req.consumer, "received");
    e.reason = Some(req.reason.clone());
    e.signature = Some(signature.to_owned());
    e.detail = Some(format!(
        "sharing request; fields [{}]; until {}; answer due {}",
        req.fields.join(", "),
        req.until.map_or_else(|| "unsaid".into(), crate::governance::request::rfc3339),
        crate::governance::request::rfc3339(deadline)
    ));
    let seq = shared.audit.append(e).await.map_err(|e| internal(&e.to_string()))?;
    let (store, r, sig) = (shared.requests.clone(), req.clone(), signature.to_owned());
    let held = blocking(move || store.receive(&r, &sig, deadline, grade, now).map(|(h, _)| h))
        .await
        .map_err(|why| internal(&why))?;
    tracing::info!(consumer = %req.consumer, dataset = %req.dataset, exchange = %req.exchange, "sharing request received");
    Ok(signed_answer(shared, req, &held, Some(seq)))
}

fn internal(why: &str) -> Message {
    tracing::error!(error = %why, "sharing request failed");
    Message::error(ErrorCode::Internal, "the provider could not record the request; retry later")
}

async fn refuse(shared: &Shared, req: &SharingRequest, code: ErrorCode, why: String) -> Message {
    let mut e = entry(shared, req, &req.consumer, "deny");
    e.code = Some(code.as_str().into());
    e.reason = Some(format!("sharing request: {why}"));
    if let Err(err) = shared.audit.append(e).await {
        tracing::error!(error = %err, "audit append failed");
    }
    Message::error(code, why)
}

fn signed_answer(shared: &Shared, req: &SharingRequest, held: &Held, audit_seq: Option<u64>) -> Message {
    let a = held.answer();
    let signature = match shared.signer.sign(&a.message(req)) {
        Ok(s) => fedgate_catalog::hex(&s),
        Err(e) => return internal(&e.to_string()),
    };
    Message::SharingAnswer {
        exchange: req.exchange.clone(),
        state: a.state.as_str().into(),
        deadline: a.deadline,
        reason: a.reason,
        grant: a.grant,
        clearance: a.clearance,
        until: a.until,
        quota: a.quota,
        answered: a.answered,
        signature,
        audit_seq,
    }
}

/// Keeps asking the providers of this node's open requests (and approved ones, whose grant may
/// be revoked) until their answers are final; across restarts, since the requests are stored.
pub(crate) async fn keep_asking(shared: Arc<Shared>) {
    let mut changes = shared.requests.changes();
    let every = shared.cfg.reload_interval.min(ASK_EVERY);
    loop {
        changes.borrow_and_update();
        let store = shared.requests.clone();
        if let Ok(open) = blocking(move || store.to_ask(unix_now())).await {
            for held in open {
                if let Err(why) = ask(&shared, &held).await {
                    tracing::debug!(exchange = %held.id, peer = %held.peer, error = %why, "sharing request not delivered yet; retrying");
                }
            }
        }
        let _ = tokio::time::timeout(every, changes.changed()).await;
    }
}

/// Sends one outgoing request and records the provider's answer if it changed.
pub async fn ask(shared: &Arc<Shared>, held: &Held) -> Result<(), String> {
    let req = held.request(shared.link.local())?;
    let msg = to_message(held);
    let pc = shared.peer(&req.provider).await.map_err(|e| e.to_string())?;
    let got = match link::request_one(&pc, &msg).await {
        // The cached connection was dead (the provider restarted): dial again, once.
        Err(e) if pc.conn.close_reason().is_some() && !matches!(e, LinkError::Remote { .. }) => {
            let pc = shared.peer(&req.provider).await.map_err(|e| e.to_string())?;
            let got = link::request_one(&pc, &msg).await;
            return answered(shared, &req, &pc, got).await;
        }
        other => other,
    };
    answered(shared, &req, &pc, got).await
}

async fn answered(
    shared: &Arc<Shared>,
    req: &SharingRequest,
    pc: &PeerConnection,
    got: Result<Message, LinkError>,
) -> Result<(), String> {
    let now = unix_now();
    let (answer, signature, provider_entry) = match got {
        Ok(Message::SharingAnswer {
            state,
            deadline,
            reason,
            grant,
            clearance,
            until,
            quota,
            answered,
            signature,
            audit_seq,
            ..
        }) => {
            let state = State::parse(&state).filter(|s| *s != State::Unsent).ok_or("unknown answer state")?;
            let a = Answer { state, deadline, reason, grant, clearance, until, quota, answered };
            let ok = fedgate_catalog::unhex(&signature)
                .is_some_and(|s| pc.peer.verify_signature(&a.message(req), &s));
            if !ok {
                return Err(format!("{}: the answer's signature does not verify", req.provider));
            }
            (a, signature, audit_seq)
        }
        // Refused at intake (or the provider does not take requests): final, so stop asking.
        Err(LinkError::Remote { code, message, .. })
            if code != ErrorCode::Internal && code != ErrorCode::Busy =>
        {
            let a = Answer {
                state: State::Refused,
                deadline: now,
                reason: Some(format!("{}: {message}", code.as_str())),
                grant: None,
                clearance: None,
                until: None,
                quota: None,
                answered: Some(now),
            };
            (a, String::new(), None)
        }
        Ok(other) => return Err(format!("expected a sharing answer, got {}", other.kind())),
        Err(e) => return Err(e.to_string()),
    };
    let (store, id) = (shared.requests.clone(), req.exchange.clone());
    let held = blocking(move || store.get(&id, Role::Outgoing, now)).await?;
    if held.state != State::Unsent && held.answer() == answer {
        return Ok(());
    }
    // Audited before it is stored: a crash in between costs a second entry at the next ask,
    // never a missing one (and a reader who sees the new state finds its entry).
    let mut e = entry(shared, req, &req.provider, answer.state.as_str());
    e.reason = answer.reason.clone();
    e.grant = answer.grant.clone();
    e.clearance = answer.clearance;
    e.provider_entry = provider_entry;
    e.signature = Some(signature.clone()).filter(|s| !s.is_empty());
    e.detail = Some(describe(&answer));
    shared.audit.append(e).await.map_err(|e| e.to_string())?;
    let (store, id, a) = (shared.requests.clone(), req.exchange.clone(), answer.clone());
    blocking(move || store.record_answer(&id, &a, &signature)).await?;
    tracing::info!(exchange = %req.exchange, provider = %req.provider, state = answer.state.as_str(), "sharing request answered");
    Ok(())
}

/// `answer due …; grant until …, quota …/day`: an answer as audit entries record it.
pub fn describe(a: &Answer) -> String {
    let mut s = format!("answer due {}", crate::governance::request::rfc3339(a.deadline));
    if let Some(u) = a.until {
        s.push_str(&format!("; grant until {}", crate::governance::request::rfc3339(u)));
    }
    if let Some(q) = a.quota {
        s.push_str(&format!(", quota {q}/day"));
    }
    s
}
