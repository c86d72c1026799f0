//! The referral drivers: a peer's step arriving on a QUIC stream ([`serve_step`]: verify, store,
//! audit, acknowledge) and this node's outbox ([`deliver_loop`]: every own step the peer has not
//! acknowledged, in order, resent with backoff while the peer is down). The rules are
//! [`crate::exchange::referral`]'s and the durability [`crate::referrals`]'.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use fedgate_catalog::NodeId;
use fedgate_certs::VerifiedPeer;

use crate::exchange::referral::signed_message;
use crate::link;
use crate::referrals::{Received, StoredStep};
use crate::state::Shared;
use crate::wire::referral::Step;
use crate::wire::{ErrorCode, Message};
use fedgate_audit::Kind;

/// The first pause before resending to a peer that did not answer; doubled per failure.
pub const FIRST_RETRY: Duration = Duration::from_millis(500);
/// The longest pause between resends.
pub const MAX_RETRY: Duration = Duration::from_secs(30);
/// How long one delivery attempt may take (connect, send, acknowledgement).
pub const ATTEMPT: Duration = Duration::from_secs(10);

/// Runs `f` (SQLite, which fsyncs) off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f).await.map_err(|e| e.to_string())
}

/// A step as it arrived, before it is verified.
pub struct Incoming {
    /// The referral.
    pub exchange: String,
    /// Its seq.
    pub seq: u64,
    /// When the peer took it.
    pub at: i64,
    /// The step.
    pub step: Step,
    /// The peer's signature (hex).
    pub signature: String,
}

/// Serves a peer's referral step on its stream: checks the signature against the peer's
/// connection certificate, stores it (or recognises a resend), audits it, then acknowledges.
pub async fn serve_step(shared: Arc<Shared>, peer: VerifiedPeer, mut send: quinn::SendStream, m: Incoming) {
    let who = peer.node().to_string();
    let local = shared.link.local().clone();
    let msg = signed_message(peer.node(), &local, &m.exchange, m.seq, m.at, &m.step);
    let signed = fedgate_catalog::unhex(&m.signature).is_some_and(|sig| peer.verify_signature(&msg, &sig));
    if !signed {
        let why = format!("referral {} step {}: the signature does not verify", m.exchange, m.seq);
        return refuse(&shared, &who, &m, send, ErrorCode::BadRequest, why).await;
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let (store, node, x, step, sig) = (
        shared.referrals.clone(),
        peer.node().clone(),
        m.exchange.clone(),
        m.step.clone(),
        m.signature.clone(),
    );
    let (seq, at) = (m.seq, m.at);
    let got = blocking(move || store.receive(&node, &x, seq, at, step, &sig, now)).await;
    let steps = match got {
        Ok(Ok(Received::New(steps))) => steps,
        Ok(Ok(Received::Duplicate(s))) if s.audited => vec![],
        Ok(Ok(Received::Duplicate(s))) => vec![*s],
        Ok(Ok(Received::Refused(code, why))) => return refuse(&shared, &who, &m, send, code, why).await,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "storing a referral step failed");
            return link::reply_error(
                &mut send,
                ErrorCode::Internal,
                "the receiver failed to store the step; it will be resent".into(),
                &who,
            )
            .await;
        }
        Err(e) => {
            tracing::error!(error = %e, "storing a referral step failed");
            return link::reply_error(
                &mut send,
                ErrorCode::Internal,
                "the receiver failed; try again".into(),
                &who,
            )
            .await;
        }
    };
    for s in &steps {
        if let Err(e) = audit_step(&shared, s, None).await {
            // Unaudited, unacknowledged: the peer resends, and the resend is audited then.
            tracing::error!(error = %e, "audit append failed; not acknowledging the referral step");
            return link::reply_error(
                &mut send,
                ErrorCode::Internal,
                "the receiver failed to record the step; it will be resent".into(),
                &who,
            )
            .await;
        }
    }
    let ack = Message::ReferralAck { exchange: m.exchange.clone(), seq: m.seq };
    let _ = link::write_frame(&mut send, &ack, &who).await;
    let _ = send.finish();
}

/// Audits and answers a refused step.
async fn refuse(
    shared: &Shared,
    who: &str,
    m: &Incoming,
    mut send: quinn::SendStream,
    code: ErrorCode,
    why: String,
) {
    tracing::info!(peer = %who, exchange = %m.exchange, seq = m.seq, ?code, %why, "referral step refused");
    let mut e = shared.audit_entry(Kind::Referral);
    e.counterpart = Some(who.to_owned());
    e.exchange = Some(m.exchange.clone()).filter(|x| crate::exchange::valid_exchange_id(x));
    e.step = Some(fedgate_audit::Step { n: m.seq, by: who.to_owned() });
    e.decision = Some("deny".into());
    e.code = Some(code.as_str().into());
    e.reason = Some(why.clone());
    e.detail = Some(format!("referral step {} ({})", m.seq, m.step.name()));
    if let Err(err) = shared.audit.append(e).await {
        tracing::error!(error = %err, "audit append failed");
    }
    link::reply_error(&mut send, code, why, who).await;
}

/// Records a stored step in the audit log (with the decision on its case, for a `send` made
/// here), then marks it audited.
pub async fn audit_step(
    shared: &Shared,
    s: &StoredStep,
    decided: Option<&crate::exchange::referral::CaseGrant>,
) -> Result<(), String> {
    let mut e = shared.audit_entry(Kind::Referral);
    e.counterpart = Some(s.peer.clone());
    e.exchange = Some(s.exchange.clone());
    e.step = Some(fedgate_audit::Step { n: s.seq, by: s.author.clone() });
    e.decision = Some(format!("referral-{}", s.step.name()));
    e.reason = Some(format!("step {} by {}; the referral is {}", s.seq, s.author, s.state));
    e.content_digest = Some(crate::exchange::referral::step_digest(&s.step));
    e.signature = s.signature.clone();
    e.records = Some(0);
    if let Step::Send { reference, deadline, case, parent, .. } = &s.step {
        let parent = parent.as_deref().map_or_else(String::new, |p| format!(", forwarded from {p}"));
        e.detail = Some(format!("reference {reference}, deadline {deadline}{parent}"));
        if let Some(c) = case {
            e.dataset = Some(c.dataset.clone());
            e.purpose = Some(c.purpose.clone());
            e.records = Some(1);
        }
    }
    if let Some(g) = decided {
        e.grant = g.grant.clone();
        e.obligations = g.obligations.clone();
        e.detail = Some(format!("{}; {}", e.detail.take().unwrap_or_default(), g.reason));
    }
    shared.audit.append(e).await.map_err(|e| e.to_string())?;
    let (store, x, seq) = (shared.referrals.clone(), s.exchange.clone(), s.seq);
    blocking(move || store.mark_audited(&x, seq)).await?.map_err(|e| e.to_string())
}

/// Audits every step stored and not yet audited (a crash between storing and auditing).
pub async fn audit_pending(shared: &Shared) {
    let store = shared.referrals.clone();
    let pending = match blocking(move || store.unaudited()).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return tracing::error!(error = %e, "reading unaudited referral steps failed"),
        Err(e) => return tracing::error!(error = %e, "reading unaudited referral steps failed"),
    };
    for s in pending {
        if let Err(e) = audit_step(shared, &s, None).await {
            tracing::error!(error = %e, "audit append failed for a referral step");
            return;
        }
    }
}

/// Peers that opened a connection to this node since the outbox last looked. A peer that comes
/// back (restarted, its network restored) gets its pending steps at once, not after the pause
/// its absence built up (up to [`MAX_RETRY`]).
#[derive(Default)]
pub struct Arrivals {
    seen: std::sync::Mutex<std::collections::HashSet<String>>,
    notify: tokio::sync::Notify,
}

impl Arrivals {
    /// Notes that `peer` connected (an authenticated inbound connection).
    pub fn arrived(&self, peer: &NodeId) {
        let new = self.seen.lock().unwrap_or_else(|p| p.into_inner()).insert(peer.to_string());
        if new {
            self.notify.notify_one();
        }
    }

    /// The peers noted since the last call.
    fn take(&self) -> std::collections::HashSet<String> {
        std::mem::take(&mut *self.seen.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// When each peer may be tried again, and how long the next pause is.
#[derive(Default)]
struct Backoff {
    peers: HashMap<String, (tokio::time::Instant, Duration)>,
}

impl Backoff {
    fn ready(&self, peer: &str, now: tokio::time::Instant) -> bool {
        self.peers.get(peer).is_none_or(|(at, _)| *at <= now)
    }

    fn failed(&mut self, peer: &str, now: tokio::time::Instant) {
        let pause = self.peers.get(peer).map_or(FIRST_RETRY, |(_, p)| (*p * 2).min(MAX_RETRY));
        self.peers.insert(peer.to_owned(), (now + pause, pause));
    }

    fn next_due(&self) -> Option<tokio::time::Instant> {
        self.peers.values().map(|(at, _)| *at).min()
    }

    /// Forgets the pauses of peers that came back.
    fn came_back(&mut self, peers: std::collections::HashSet<String>) {
        self.peers.retain(|p, _| !peers.contains(p));
    }
}

/// Delivers this node's steps until the node stops: each peer's in the order they were taken,
/// a peer that fails paused with backoff while the others go on.
pub(crate) async fn deliver_loop(shared: Arc<Shared>) {
    audit_pending(&shared).await;
    let mut changes = shared.referrals.changes();
    let mut backoff = Backoff::default();
    loop {
        changes.borrow_and_update();
        let store = shared.referrals.clone();
        let pending = match blocking(move || store.outbox()).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "reading the referral outbox failed");
                vec![]
            }
            Err(_) => return,
        };
        let mut by_peer: Vec<(String, Vec<StoredStep>)> = Vec::new();
        for s in pending {
            match by_peer.iter_mut().find(|(p, _)| *p == s.peer) {
                Some((_, v)) => v.push(s),
                None => by_peer.push((s.peer.clone(), vec![s])),
            }
        }
        let now = tokio::time::Instant::now();
        let mut sends = tokio::task::JoinSet::new();
        for (peer, steps) in by_peer.into_iter().filter(|(p, _)| backoff.ready(p, now)) {
            let shared = shared.clone();
            sends.spawn(async move {
                let ok = deliver_all(&shared, &peer, &steps).await;
                (peer, ok)
            });
        }
        while let Some(done) = sends.join_next().await {
            match done {
                Ok((peer, true)) => {
                    backoff.peers.remove(&peer);
                }
                Ok((peer, false)) => backoff.failed(&peer, tokio::time::Instant::now()),
                Err(_) => {}
            }
        }
        let wake = backoff.next_due().unwrap_or_else(|| tokio::time::Instant::now() + MAX_RETRY);
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep_until(wake) => {}
            _ = shared.arrivals.notify.notified() => {}
        }
        backoff.came_back(shared.arrivals.take());
    }
}

/// Referrals whose steps travel to one peer side by side.
const SIDE_BY_SIDE: usize = 16;

/// Delivers `steps` to `peer`; false if any failed. Each referral's steps go in order, one
/// acknowledged before the next; different referrals' steps go side by side, since the peer
/// orders steps per referral only. The first step goes alone, so a peer that is down costs one
/// attempt, not one per referral.
async fn deliver_all(shared: &Arc<Shared>, peer: &str, steps: &[StoredStep]) -> bool {
    let Ok(node) = peer.parse::<NodeId>() else {
        tracing::error!(%peer, "a referral's peer is not a node id; its steps stay in the outbox");
        return false;
    };
    let Some((first, rest)) = steps.split_first() else { return true };
    if !deliver_in_order(shared, &node, std::slice::from_ref(first)).await {
        return false;
    }
    let mut by_referral: Vec<Vec<StoredStep>> = Vec::new();
    for s in rest {
        match by_referral.iter_mut().find(|v| v[0].exchange == s.exchange) {
            Some(v) => v.push(s.clone()),
            None => by_referral.push(vec![s.clone()]),
        }
    }
    use futures::StreamExt;
    let node = &node;
    futures::stream::iter(by_referral)
        .map(|v| async move { deliver_in_order(shared, node, &v).await })
        .buffer_unordered(SIDE_BY_SIDE)
        .fold(true, |all, ok| async move { all && ok })
        .await
}

/// Delivers one referral's `steps` in order; false at the first that fails.
async fn deliver_in_order(shared: &Arc<Shared>, node: &NodeId, steps: &[StoredStep]) -> bool {
    for s in steps {
        match tokio::time::timeout(ATTEMPT, deliver(shared, node, s)).await {
            Ok(Ok(())) => {}
            Ok(Err(why)) => {
                tracing::info!(peer = %node, exchange = %s.exchange, seq = s.seq, %why, "referral step not delivered; will resend");
                return false;
            }
            Err(_) => {
                tracing::info!(peer = %node, exchange = %s.exchange, seq = s.seq, "referral step not acknowledged in time; will resend");
                return false;
            }
        }
    }
    true
}

/// Sends one step and waits for its acknowledgement; then marks it delivered.
async fn deliver(shared: &Arc<Shared>, node: &NodeId, s: &StoredStep) -> Result<(), String> {
    let pc = shared.peer(node).await.map_err(|e| e.to_string())?;
    let sent = send_once(shared, &pc, s).await;
    let sent = match sent {
        // A dead cached connection (the peer restarted): dial again at once.
        Err(link::LinkError::Remote { .. }) => sent,
        Err(_) if pc.conn.close_reason().is_some() => {
            let pc = shared.peer(node).await.map_err(|e| e.to_string())?;
            send_once(shared, &pc, s).await
        }
        other => other,
    };
    match sent.map_err(|e| e.to_string())? {
        Message::ReferralAck { exchange, seq } if exchange == s.exchange && seq == s.seq => {}
        other => return Err(format!("answered {} instead of the acknowledgement", other.kind())),
    }
    let (store, x, seq) = (shared.referrals.clone(), s.exchange.clone(), s.seq);
    blocking(move || store.mark_delivered(&x, seq)).await?.map_err(|e| e.to_string())
}

/// Signs `s` with the key of `pc`'s certificate (what the peer verifies against) and sends it.
async fn send_once(
    shared: &Shared,
    pc: &link::PeerConnection,
    s: &StoredStep,
) -> Result<Message, link::LinkError> {
    let msg = signed_message(shared.link.local(), pc.peer.node(), &s.exchange, s.seq, s.at, &s.step);
    let signature = crate::identity::for_connection(pc.identity, async { shared.signer.sign(&msg) })
        .await
        .map_err(|e| link::LinkError::Protocol {
            peer: pc.peer.node().to_string(),
            why: format!("signing failed: {e}"),
        })?;
    let m = Message::Referral {
        exchange: s.exchange.clone(),
        seq: s.seq,
        at: s.at,
        step: s.step.clone(),
        signature: fedgate_catalog::hex(&signature),
    };
    link::request_one(pc, &m).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_that_comes_back_is_tried_at_once_the_others_keep_their_pause() {
        let now = tokio::time::Instant::now();
        let mut b = Backoff::default();
        for _ in 0..8 {
            b.failed("grid@wuxi.liangxi.chongan", now);
            b.failed("police@wuxi.liangxi", now);
        }
        assert_eq!(b.peers["grid@wuxi.liangxi.chongan"].1, MAX_RETRY);
        assert!(!b.ready("grid@wuxi.liangxi.chongan", now + Duration::from_secs(29)));
        let arrivals = Arrivals::default();
        arrivals.arrived(&"grid@wuxi.liangxi.chongan".parse().unwrap());
        b.came_back(arrivals.take());
        assert!(b.ready("grid@wuxi.liangxi.chongan", now));
        assert!(!b.ready("police@wuxi.liangxi", now + Duration::from_secs(29)));
        assert!(arrivals.take().is_empty(), "taken once");
    }
}
