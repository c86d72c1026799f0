//! The provider's driver: runs a [`ProviderSession`] on one QUIC stream. It moves frames to
//! the stream, entries to the audit log, source batches to the session, and reports the
//! outcome to logs and metrics; every decision is the session's.

use std::sync::Arc;

use fedgate_certs::VerifiedPeer;

use crate::exchange::{Outcome, ProviderAction, ProviderSession, Query};
use crate::link;
use crate::source;
use crate::state::Shared;
use crate::wire::ErrorCode;

/// Serves one query on its stream (provider side).
pub async fn serve_query(shared: Arc<Shared>, peer: VerifiedPeer, mut send: quinn::SendStream, query: Query) {
    let who = peer.node().to_string();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    // The asker's id when it sent a valid one (a malformed one is refused by the session).
    let theirs = query.exchange.clone().filter(|x| crate::exchange::valid_exchange_id(x));
    let Some(exchange) = theirs.or_else(crate::exchange::new_exchange_id) else {
        tracing::error!("no randomness for an exchange id; refusing the query");
        link::reply_error(&mut send, ErrorCode::Internal, "the provider failed; try again".into(), &who)
            .await;
        return;
    };
    let started = std::time::Instant::now();
    let (catalog, policy) = (shared.catalog(), shared.policy());
    let ctx = super::provider_context(&shared, &catalog, &policy, fedgate_audit::Kind::RequestIn);
    let mut s =
        shared.metrics.time_decision(|| ProviderSession::new(&ctx, peer.node(), query, exchange, now));
    drop((catalog, policy));
    let mut rx = None;
    let mut reported = false;
    loop {
        while let Some(action) = s.poll_action() {
            if !reported {
                reported = report(&shared, &who, &s, started);
            }
            match action {
                ProviderAction::Read(r) => {
                    let transform = r.transform();
                    rx = Some(source::spawn(&r.kind, r.query, transform));
                }
                // Dropping the receiver stops the source read.
                ProviderAction::StopRead => rx = None,
                ProviderAction::Append(e) => {
                    let appended = shared.audit.append(*e).await.map_err(|e| {
                        tracing::error!(error = %e, "audit append failed");
                        e.to_string()
                    });
                    s.handle_appended(appended);
                }
                ProviderAction::AppendWitnessed(e) => {
                    let appended = shared.audit.append_witnessed(*e).await.map_err(|e| {
                        tracing::error!(error = %e, "audit append failed");
                        e.to_string()
                    });
                    s.handle_witnessed(appended);
                }
                ProviderAction::Send(frame) => {
                    if let Err(e) = link::write_encoded(&mut send, &frame, &who).await {
                        s.handle_send_failed(e.to_string());
                    }
                }
                ProviderAction::Sign(msg) => {
                    s.handle_signed(shared.signer.sign(&msg).map_err(|e| e.to_string()))
                }
                ProviderAction::Finish => {
                    let _ = send.finish();
                }
            }
        }
        if !reported {
            reported = report(&shared, &who, &s, started);
        }
        if !s.wants_source() {
            break;
        }
        let item = match rx.as_mut() {
            Some(rx) => rx.recv().await,
            None => None,
        };
        s.handle_source(item);
    }
}

/// Logs and counts the session's outcome once it is known; true if it was.
fn report(shared: &Shared, who: &str, s: &ProviderSession, started: std::time::Instant) -> bool {
    let Some(outcome) = s.outcome() else { return false };
    let q = s.query();
    let (dataset, purpose) = (&q.dataset, &q.purpose);
    match outcome {
        Outcome::Refused { code, message } => {
            tracing::info!(peer = %who, %dataset, %purpose, ?code, %message, "query refused")
        }
        Outcome::Served { count, truncated } => {
            tracing::info!(peer = %who, %dataset, %purpose, count, truncated = ?truncated, "query served")
        }
        Outcome::SourceFailed { count, audit_seq, error } => {
            tracing::warn!(peer = %who, %dataset, count, audit_seq, error = %error, "source failed; transfer aborted")
        }
        Outcome::ConsumerGone { count, why } => {
            tracing::warn!(peer = %who, %dataset, count, %why, "transfer aborted")
        }
        Outcome::NotRecorded { why } => {
            tracing::error!(error = %why, "audit append failed; sending nothing more")
        }
        Outcome::NotSigned { audit_seq, why } => {
            // The cause is about the node's key: the operator's business, not the consumer's.
            tracing::error!(error = %why, audit_seq, "signing the trailer failed")
        }
    }
    if let Some(code) = outcome.metric_code() {
        shared.metrics.query_ended(who, dataset, purpose, code, outcome.count(), started);
    }
    true
}
