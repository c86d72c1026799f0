//! The subscription drivers: a delivery round at the provider ([`serve_round`]) and at the
//! subscriber ([`run_round`]) on one QUIC stream each, and the subscriber's loop that keeps every
//! active subscription of the node going across restarts and reconnects ([`keep_subscribed`]).
//! They move frames, events, entries and signatures; every decision is the sessions'.

use std::sync::Arc;
use std::time::Duration;

use fedgate_catalog::NodeId;
use fedgate_certs::VerifiedPeer;

use crate::exchange::subscription::{
    PublisherAction, PublisherSession, SubscriberEvent, SubscriberSession, Subscription,
};
use crate::link::{self, PeerConnection};
use crate::state::Shared;
use crate::subscriptions::{Held, SubState};
use crate::wire;
use fedgate_audit::{Entry, Kind};

/// The longest a provider holds a round open waiting for an event.
pub const MAX_WAIT: Duration = Duration::from_secs(20);
/// How long a subscriber asks the provider to wait for an event in one round.
pub const ROUND_WAIT: Duration = Duration::from_secs(10);
/// Pause before retrying a round that failed (provider down, busy, quota used up).
pub const RETRY: Duration = Duration::from_secs(2);
/// Pause before asking again after the provider said the quota is used up.
pub const QUOTA_RETRY: Duration = Duration::from_secs(60);

/// Runs `f` (SQLite, which may fsync) off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f).await.map_err(|e| e.to_string())
}

/// Serves one round of a subscription asked by `peer` (provider side).
pub async fn serve_round(
    shared: Arc<Shared>,
    peer: VerifiedPeer,
    mut send: quinn::SendStream,
    sub: Subscription,
    acked: u64,
    wait: Duration,
) {
    let who = peer.node().to_string();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let (catalog, policy) = (shared.catalog(), shared.policy());
    let ctx = super::provider_context(&shared, &catalog, &policy, Kind::TransferEnd);
    let dataset = sub.dataset.clone();
    let exchange = sub.exchange.clone();
    let mut s = PublisherSession::new(&ctx, peer.node(), sub, acked, now);
    drop((catalog, policy));
    let deadline = tokio::time::Instant::now() + wait.min(MAX_WAIT);
    let mut changes = shared.events.changes();
    while let Some(action) = s.poll_action() {
        match action {
            PublisherAction::Ack { upto } => {
                let (events, x, w, d) =
                    (shared.events.clone(), exchange.clone(), who.clone(), dataset.clone());
                let recorded = blocking(move || events.ack(&x, &w, &d, upto, now)).await;
                let failed = match recorded {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(e) => Some(e.to_string()),
                };
                if let Some(error) = failed {
                    tracing::error!(%error, "recording a subscription's acknowledgement failed");
                }
            }
            PublisherAction::Read { after, max, wait } => {
                let slice = loop {
                    changes.borrow_and_update();
                    match shared.events.read(&dataset, after, max) {
                        Ok(sl) if wait && sl.events.is_empty() && sl.gap.is_none() => {
                            // Long poll: wake on the next commit of events; give up at the
                            // deadline, or at once when the subscriber or the connection goes
                            // (a node shutting down must not wait for its open rounds).
                            tokio::select! {
                                woke = tokio::time::timeout_at(deadline, changes.changed()) => {
                                    if woke.is_err() {
                                        break sl;
                                    }
                                }
                                _ = send.stopped() => return,
                            }
                        }
                        Ok(sl) => break sl,
                        Err(e) => {
                            tracing::error!(error = %e, %dataset, "reading the event log failed");
                            break crate::events::Slice { gap: None, events: vec![], head: after };
                        }
                    }
                };
                let (catalog, policy) = (shared.catalog(), shared.policy());
                let ctx = super::provider_context(&shared, &catalog, &policy, Kind::TransferEnd);
                let now = time::OffsetDateTime::now_utc().unix_timestamp();
                s.handle_read(&ctx, slice, now);
            }
            PublisherAction::AppendWitnessed(e) => {
                let appended = shared.audit.append_witnessed(*e).await.map_err(|e| {
                    tracing::error!(error = %e, "audit append failed");
                    e.to_string()
                });
                s.handle_witnessed(appended);
            }
            PublisherAction::Sign(msg) => {
                s.handle_signed(shared.signer.sign(&msg).map_err(|e| e.to_string()))
            }
            PublisherAction::Send(frame) => {
                if let Err(e) = link::write_encoded(&mut send, &frame, &who).await {
                    // The subscriber went away: what it did not store it asks again for.
                    tracing::info!(peer = %who, %dataset, error = %e, "subscription round cut");
                    return;
                }
            }
            PublisherAction::Finish => {
                let _ = send.finish();
            }
        }
    }
    if let Some(code) = s.refused() {
        tracing::info!(peer = %who, %dataset, ?code, "subscription round refused");
    } else if s.delivered() > 0 {
        tracing::debug!(peer = %who, %dataset, events = s.delivered(), "subscription round served");
    }
}

/// How a round ended at the subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoundEnd {
    /// Cleanly; ask again.
    Over,
    /// The provider refused; `stop` when the subscription is over.
    Refused {
        /// The provider's code.
        code: wire::ErrorCode,
        /// Its message.
        message: String,
        /// Whether the subscription ended.
        stop: bool,
    },
    /// The link or a batch failed; retry after a pause.
    Broken(String),
}

/// Runs one round of `held` on `pc` (subscriber side): asks from the stored cursor, and stores
/// and audits every verified batch before looking at the next.
pub async fn run_round(shared: &Arc<Shared>, pc: &PeerConnection, held: &Held, wait: Duration) -> RoundEnd {
    let who = pc.peer.node().to_string();
    let sub = held.subscription();
    let template = shared.audit_entry(Kind::RequestOut);
    let mut s =
        SubscriberSession::new(pc.peer.clone(), shared.cfg.node.clone(), sub.clone(), held.cursor, template)
            .with_audit_key(pc.audit_key.clone());
    let request = wire::encode(&sub.request(held.cursor, wait.as_millis() as u64));
    let opened = async {
        let (mut send, mut recv) = pc.conn.open_bi().await.map_err(|e| link::lost(&who, e))?;
        link::send_encoded_request(&mut send, &mut recv, &request, &who).await?;
        Ok::<_, link::LinkError>(recv)
    };
    let mut recv = match tokio::time::timeout(Duration::from_secs(10), opened).await {
        Ok(Ok(r)) => r,
        Ok(Err(link::LinkError::Remote { code, message, .. })) => {
            let stop = crate::exchange::subscription::stops(code);
            return RoundEnd::Refused { code, message, stop };
        }
        Ok(Err(e)) => return RoundEnd::Broken(e.to_string()),
        Err(_) => return RoundEnd::Broken(format!("{who} did not take the request in time")),
    };
    // The provider answers within its wait plus the time to send a round.
    let silence = wait.min(MAX_WAIT) + Duration::from_secs(30);
    loop {
        while let Some(ev) = s.poll_event() {
            match ev {
                SubscriberEvent::Batch(b) => {
                    let stored = store(shared, &held.id, *b).await;
                    s.handle_stored(stored);
                }
                SubscriberEvent::Over => return RoundEnd::Over,
                SubscriberEvent::Refused { code, message, stop } => {
                    return RoundEnd::Refused { code, message, stop }
                }
                SubscriberEvent::Broken(why) => return RoundEnd::Broken(why),
            }
        }
        match tokio::time::timeout(silence, link::read_body(&mut recv, &who)).await {
            Ok(Ok(Some(body))) => s.handle_frame(&body),
            Ok(Ok(None)) => s.handle_end(),
            Ok(Err(e)) => return RoundEnd::Broken(e.to_string()),
            Err(_) => return RoundEnd::Broken(format!("{who} went silent mid-round")),
        }
    }
}

/// Audits the receipt, then stores the batch with the new cursor: a batch is never kept
/// unrecorded (a crash between the two leaves a receipt and a redelivery, never the reverse).
async fn store(
    shared: &Arc<Shared>,
    id: &str,
    b: crate::exchange::subscription::VerifiedBatch,
) -> Result<(), String> {
    shared.audit.append(b.receipt.clone()).await.map_err(|e| e.to_string())?;
    let (subs, id) = (shared.subscriptions.clone(), id.to_owned());
    blocking(move || subs.store_batch(&id, &b).map(drop).map_err(|e| e.to_string())).await?
}

/// Audits a subscription's creation, cancellation or stop at the subscriber.
pub async fn audit_state(shared: &Shared, held: &Held, decision: &str, reason: &str, code: Option<&str>) {
    let mut e: Entry = shared.audit_entry(Kind::RequestOut);
    e.counterpart = Some(held.peer.clone());
    e.dataset = Some(held.dataset.clone());
    e.purpose = Some(held.purpose.clone());
    e.filters = held.filters.clone();
    e.exchange = Some(held.id.clone());
    e.decision = Some(decision.into());
    e.reason = Some(reason.into());
    e.code = code.map(str::to_owned);
    e.records = Some(0);
    if let Err(err) = shared.audit.append(e).await {
        tracing::error!(error = %err, "audit append failed");
    }
}

/// Keeps every active subscription of this node running, one task each, starting those created
/// later; after a restart it picks up where the store says each one is.
pub(crate) async fn keep_subscribed(shared: Arc<Shared>) {
    // Owned by this task: when the node stops (aborting it), every subscription task goes too.
    let mut set = tokio::task::JoinSet::new();
    let mut running: std::collections::HashMap<String, tokio::task::AbortHandle> = Default::default();
    let mut changes = shared.subscriptions.changes();
    loop {
        changes.borrow_and_update();
        while set.try_join_next().is_some() {}
        running.retain(|_, t| !t.is_finished());
        let subs = shared.subscriptions.clone();
        if let Ok(Ok(held)) = blocking(move || subs.list()).await {
            for h in held.into_iter().filter(|h| h.state == SubState::Active) {
                if !running.contains_key(&h.id) {
                    let id = h.id.clone();
                    running.insert(id, set.spawn(follow(shared.clone(), h.id)));
                }
            }
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}

/// Runs rounds of subscription `id` until it is no longer active.
async fn follow(shared: Arc<Shared>, id: String) {
    let mut changes = shared.subscriptions.changes();
    loop {
        changes.borrow_and_update();
        let subs = shared.subscriptions.clone();
        let sid = id.clone();
        let Ok(Ok(held)) = blocking(move || subs.get(&sid)).await else { return };
        if held.state != SubState::Active {
            return;
        }
        // Past the node's unread bound (`[subscriptions] max_unread`) the subscriber asks for no
        // more: a slow application slows its gateway's acknowledgements, and so the provider.
        if held.cursor.saturating_sub(held.delivered) >= shared.cfg.max_unread {
            // The application is behind: ask for nothing more until it acknowledges.
            let _ = changes.changed().await;
            continue;
        }
        let Ok(peer) = held.peer.parse::<NodeId>() else { return };
        let end = match shared.peer(&peer).await {
            Ok(pc) => {
                let end = run_round(&shared, &pc, &held, ROUND_WAIT).await;
                if matches!(&end, RoundEnd::Broken(_)) && pc.conn.close_reason().is_some() {
                    // A dead cached connection (the provider restarted): dial again at once.
                    match shared.peer(&peer).await {
                        Ok(pc) => run_round(&shared, &pc, &held, ROUND_WAIT).await,
                        Err(e) => RoundEnd::Broken(e.to_string()),
                    }
                } else {
                    end
                }
            }
            Err(e) => RoundEnd::Broken(e.to_string()),
        };
        match end {
            RoundEnd::Over => {}
            RoundEnd::Refused { code, message, stop: true } => {
                tracing::warn!(subscription = %id, %peer, ?code, %message, "subscription stopped by the provider");
                let (subs, sid, m) = (shared.subscriptions.clone(), id.clone(), message.clone());
                if let Ok(Ok(true)) = blocking(move || subs.end(&sid, SubState::Stopped, &m)).await {
                    audit_state(&shared, &held, "stopped", &message, Some(code.as_str())).await;
                }
                return;
            }
            RoundEnd::Refused { code, message, .. } => {
                tracing::info!(subscription = %id, %peer, ?code, %message, "subscription round refused; retrying");
                // A used-up quota resets at midnight; asking every few seconds would only fill
                // the provider's audit log with refusals.
                let pause = if code == wire::ErrorCode::QuotaExceeded { QUOTA_RETRY } else { RETRY };
                tokio::time::sleep(pause).await;
            }
            RoundEnd::Broken(why) => {
                tracing::info!(subscription = %id, %peer, %why, "subscription round failed; retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}
