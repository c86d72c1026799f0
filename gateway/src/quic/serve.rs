//! Serving peers over QUIC: the accept loop (handshakes side by side, refusals aggregated),
//! admission of connections against the caps, and one task per request stream that reads the
//! request and hands it to its driver or answers it.

use std::sync::Arc;
use std::time::Duration;

use fedgate_catalog::{Catalog, NodeId};
use fedgate_certs::VerifiedPeer;

use crate::link::{self, PeerConnection};
use crate::state::Shared;
use crate::wire::limits::REQUEST_TIMEOUT;
use crate::wire::{ErrorCode, Message, PROTOCOL_VERSION};
use fedgate_audit::Kind;

/// The answer to a request that needs no data source, decided without I/O.
pub fn answer_request(local: &NodeId, catalog: &Catalog, peer: &VerifiedPeer, req: &Message) -> Message {
    match req {
        // Metadata only, and never datasets that are not to be shared at all.
        Message::CatalogRequest => {
            Message::Catalog { catalog: Catalog::from_datasets(catalog.shareable().cloned().collect()) }
        }
        Message::Hello { version, node, .. } => {
            if *version != PROTOCOL_VERSION {
                Message::error(
                    ErrorCode::Unsupported,
                    format!(
                        "protocol version {version} not supported; this gateway speaks {PROTOCOL_VERSION}"
                    ),
                )
            } else if node != &peer.node().to_string() {
                Message::error(
                    ErrorCode::WrongIdentity,
                    format!("you said you are {node}, but your certificate says {}", peer.node()),
                )
            } else {
                Message::Welcome { node: local.to_string(), audit_key: None }
            }
        }
        other => Message::error(ErrorCode::Unsupported, format!("unexpected request {}", other.kind())),
    }
}

/// Inbound handshakes in progress at once; beyond it new connections are refused (clients
/// retry), so a flood of handshakes that never finish costs bounded memory and CPU.
pub const MAX_HANDSHAKES: usize = 64;

pub(crate) async fn accept_loop(shared: Arc<Shared>) {
    // Handshakes run side by side: one that stalls (a client that sends its first packet and
    // nothing more) must not hold up everyone else's for the handshake timeout.
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    while let Some(incoming) = shared.link.admit_next().await {
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            incoming.refuse();
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let result = shared.link.handshake(incoming).await;
            drop(slot);
            if let Some(result) = result {
                accepted(&shared, result).await;
            }
        });
    }
}

/// Serves an accepted peer, or logs and audits a refused one.
async fn accepted(shared: &Arc<Shared>, result: Result<PeerConnection, link::InboundRejection>) {
    match result {
        Ok(pc) => {
            shared.metrics.connection_accepted(&pc.peer.node().to_string());
            tracing::info!(peer = %pc.peer.node(), addr = %pc.conn.remote_address(), "peer connected");
            shared.arrivals.arrived(pc.peer.node());
            tokio::spawn(serve_connection(shared.clone(), pc));
        }
        Err(r) => {
            tracing::warn!(addr = %r.addr, reason = r.reason, error = %r.error, "inbound connection refused; further ones from this source for this reason are counted, not logged, for a minute");
            let mut e = shared.audit_entry(Kind::CertReject);
            e.counterpart = Some(r.addr.ip().to_string());
            e.decision = Some("deny".into());
            e.reason = Some(r.reason.into());
            e.detail = Some(r.error.to_string());
            e.records = Some(1);
            if let Err(err) = shared.audit.append(e).await {
                tracing::error!(error = %err, "audit append failed");
            }
        }
    }
}

/// Every few seconds, writes the rejections counted in an interval that has ended: one log line
/// and one audit entry per (source, reason), with the count.
pub(crate) async fn rejection_summaries(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        record_rejections(&shared, false).await;
    }
}

pub(crate) async fn record_rejections(shared: &Shared, all: bool) {
    for s in shared.link.roll_rejections(std::time::Instant::now(), all) {
        let source = s.addr.map_or_else(|| "other sources".to_owned(), |a| a.to_string());
        tracing::warn!(%source, reason = %s.reason, count = s.count, refused_before_handshake = s.refused_early, "inbound handshakes rejected");
        let mut e = shared.audit_entry(Kind::CertReject);
        e.counterpart = Some(source);
        e.decision = Some("deny".into());
        e.reason = Some(s.reason.clone());
        e.records = Some(s.count);
        e.detail = Some(format!(
            "{} more rejected handshakes since the first was recorded, {} connections refused before the handshake",
            s.count, s.refused_early
        ));
        if let Err(err) = shared.audit.append(e).await {
            tracing::error!(error = %err, "audit append failed");
        }
    }
}

async fn serve_connection(shared: Arc<Shared>, pc: PeerConnection) {
    let Some(admitted) = admit(&shared, &pc).await else {
        return;
    };
    loop {
        match pc.conn.accept_bi().await {
            Ok((send, recv)) => {
                let stream = serve_stream(shared.clone(), pc.peer.clone(), admitted.clone(), send, recv);
                tokio::spawn(crate::identity::for_connection(pc.identity, stream));
            }
            Err(e) => {
                tracing::debug!(peer = %pc.peer.node(), reason = %e, "connection ended");
                shared.forget_inbound(pc.peer.node(), &pc.conn);
                return;
            }
        }
    }
}

/// How long a connection that replaced a peer's oldest one waits for that one's slot.
const REPLACE_WAIT: Duration = Duration::from_millis(500);

/// Admits a connection against the caps. A peer at its own cap that connects again has most
/// likely restarted and left dead connections behind (they linger until the idle timeout), so
/// its newest connection replaces its oldest: a peer can only ever displace its own.
async fn admit(shared: &Shared, pc: &PeerConnection) -> Option<Arc<crate::admission::Connection>> {
    let peer = pc.peer.node();
    let deadline = tokio::time::Instant::now() + REPLACE_WAIT;
    let mut replaced = false;
    loop {
        let full = match shared.admission.connect(peer) {
            Ok(a) => {
                let mut inbound = shared.inbound.lock().unwrap_or_else(|p| p.into_inner());
                inbound.entry(peer.clone()).or_default().push_back(pc.conn.clone());
                return Some(Arc::new(a));
            }
            Err(full) => full,
        };
        let at_own_cap = matches!(full, crate::admission::Full::Peer { .. });
        if at_own_cap && !replaced {
            replaced = shared.close_oldest_inbound(peer);
        }
        if !at_own_cap || !replaced || tokio::time::Instant::now() >= deadline {
            // Not audited: a peer at its cap could otherwise turn reconnects into log entries.
            tracing::warn!(peer = %peer, reason = %full, "connection refused");
            pc.conn.close(quinn::VarInt::from_u32(ErrorCode::Busy.quic_code()), full.to_string().as_bytes());
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn serve_stream(
    shared: Arc<Shared>,
    peer: VerifiedPeer,
    admitted: Arc<crate::admission::Connection>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let who = peer.node().to_string();
    let read = crate::admission::read_request(&mut recv, admitted.reservation());
    let refused = match tokio::time::timeout(REQUEST_TIMEOUT, read).await {
        Ok(Ok(Some(m))) => Ok(m),
        Ok(Ok(None)) => return,
        Ok(Err(refused)) => Err(refused),
        Err(_) => Err(crate::wire::request::Refused::Timeout(REQUEST_TIMEOUT)),
    };
    let req = match refused {
        Ok(m) => m,
        Err(refused) => return refuse_request(&shared, &peer, send, recv, refused).await,
    };
    if let Message::DirectoryOffer { have } = &req {
        let answer = crate::quic::directory::answer_offer(&shared, peer.node(), have);
        let _ = link::write_frame(&mut send, &answer, &who).await;
        let _ = send.finish();
        return;
    }
    if let Message::Query { dataset, purpose, filters, limit, exchange } = req {
        let query = crate::exchange::Query { dataset, purpose, filters, limit, exchange };
        crate::quic::provider::serve_query(shared, peer, send, query).await;
        return;
    }
    if let Message::EventsRequest { exchange, dataset, purpose, filters, acked, wait_ms } = req {
        let sub = crate::exchange::subscription::Subscription { exchange, dataset, purpose, filters };
        let wait = Duration::from_millis(wait_ms);
        crate::quic::subscription::serve_round(shared, peer, send, sub, acked, wait).await;
        return;
    }
    if let Message::Referral { exchange, seq, at, step, signature } = req {
        let m = crate::quic::referral::Incoming { exchange, seq, at, step, signature };
        crate::quic::referral::serve_step(shared, peer, send, m).await;
        return;
    }
    if let Message::SharingRequest { .. } = &req {
        crate::quic::request::serve(shared, peer, send, req).await;
        return;
    }
    if let Message::Objection { .. } = &req {
        crate::quic::objection::serve(shared, peer, send, req).await;
        return;
    }
    let mut answer = answer_request(shared.link.local(), &shared.catalog(), &peer, &req);
    if let Message::Welcome { audit_key, .. } = &mut answer {
        *audit_key = welcome_audit_key(&shared);
    }
    let _ = link::write_frame(&mut send, &answer, &who).await;
    let _ = send.finish();
}

/// This node's audit key, vouched for by the key of the certificate of the connection being
/// served (the task's identity generation), for the welcome. `None`, logged, if it cannot be
/// made: the peer then cannot witness this node's checkpoints, but can still ask.
fn welcome_audit_key(shared: &Shared) -> Option<crate::wire::AuditKey> {
    let path = shared.cfg.audit_dir.join("signing.pub");
    let made =
        std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display())).and_then(|key| {
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            crate::exchange::witness::audit_key(shared.link.local(), &key, now, |m| {
                shared.signer.sign(m).map_err(|e| e.to_string())
            })
        });
    made.map_err(|why| tracing::warn!(error = %why, "cannot vouch for the audit key in a welcome")).ok()
}

/// Answers a request that broke the wire rules, stops the peer's sending, and audits it (with
/// oversized values as digests) unless the refusal is about load, which must not cost disk.
async fn refuse_request(
    shared: &Shared,
    peer: &VerifiedPeer,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    refused: crate::wire::request::Refused,
) {
    let who = peer.node().to_string();
    let code = refused.code();
    tracing::warn!(peer = %who, error = %refused, "request refused at the wire");
    let _ = recv.stop(quinn::VarInt::from_u32(code.quic_code()));
    if refused.audited() {
        let mut e = shared.audit_entry(Kind::RequestIn);
        e.counterpart = Some(who.clone());
        crate::admission::describe_refusal(&refused, &mut e);
        if let Err(err) = shared.audit.append(e).await {
            tracing::error!(error = %err, "audit append failed");
        }
    }
    link::reply_error(&mut send, code, refused.to_string(), &who).await;
}
