//! Exchanging federation directories with peers over the link.
//!
//! Right after a gateway connects to a peer it sends `directory-offer` with the `(scope,
//! version)` of each directory it holds; the peer answers with its own and, if it holds
//! anything newer, its signed bundle, which the asker verifies before taking in. A peer that
//! learns from an offer that the asker holds something newer asks back. A gateway that takes in
//! a newer directory (from its file or a peer) offers to every node it knows, so a new directory
//! spreads through the federation without anyone pushing unverified bytes.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use fedgate_catalog::NodeId;
use fedgate_certs::directory::Bundle;
use time::OffsetDateTime;
use tokio::sync::mpsc;

use crate::link;
use crate::state::Shared;
use crate::wire::Message;
use fedgate_audit::Kind;

/// Runs the exchanges the node queues, one at a time per peer, until the queue closes.
pub(crate) async fn sync_loop(shared: Arc<Shared>, mut queue: mpsc::UnboundedReceiver<NodeId>) {
    let busy: Arc<Mutex<HashSet<NodeId>>> = Arc::default();
    while let Some(peer) = queue.recv().await {
        if peer == shared.cfg.node || !busy.lock().unwrap_or_else(|p| p.into_inner()).insert(peer.clone()) {
            continue;
        }
        let (shared, busy) = (shared.clone(), busy.clone());
        tokio::spawn(async move {
            if let Err(e) = sync_with(&shared, &peer).await {
                tracing::debug!(peer = %peer, error = %e, "directory exchange failed");
            }
            busy.lock().unwrap_or_else(|p| p.into_inner()).remove(&peer);
        });
    }
}

/// Tells `peer` what this node holds and takes in anything newer it answers with.
async fn sync_with(shared: &Arc<Shared>, peer: &NodeId) -> Result<(), crate::state::NodeError> {
    let pc = shared.peer(peer).await?;
    let offer = Message::DirectoryOffer { have: shared.directory.view().summary() };
    match link::request_one(&pc, &offer).await? {
        Message::Directory { bundle: Some(bundle), .. } => install(shared, &bundle, &peer.to_string()).await,
        Message::Directory { bundle: None, .. } => {}
        other => {
            tracing::warn!(peer = %peer, got = other.kind(), "peer answered a directory offer with something else")
        }
    }
    Ok(())
}

/// The answer to a peer's `directory-offer`; if the peer holds something newer, asks it back.
pub(crate) fn answer_offer(shared: &Shared, peer: &NodeId, have: &[(String, u64)]) -> Message {
    let view = shared.directory.view();
    if view.behind(have) {
        shared.directory.want(peer);
    }
    Message::Directory { have: view.summary(), bundle: view.newer_than(have).then(|| view.bundle()) }
}

/// Takes in `bundle` from `from` (a peer, or the directory file): logs and audits what was
/// accepted or refused, and offers anything new to every known node.
pub(crate) async fn install(shared: &Arc<Shared>, bundle: &Bundle, from: &str) {
    let mut entry = shared.audit_entry(Kind::Reload);
    entry.counterpart = Some(from.to_owned());
    match shared.directory.offer(bundle, OffsetDateTime::now_utc()) {
        Ok(taken) => {
            for e in &taken.refused {
                tracing::warn!(from, error = %e, "directory refused; the current one is kept");
            }
            if taken.accepted.is_empty() && taken.refused.is_empty() {
                return;
            }
            if !taken.accepted.is_empty() {
                tracing::info!(from, accepted = %taken.accepted.join(", "), "newer federation directory in force");
            }
            let (decision, reason) = match taken.accepted.is_empty() {
                true => ("deny", "directory refused".to_owned()),
                false => ("allow", format!("directory accepted: {}", taken.accepted.join(", "))),
            };
            entry.decision = Some(decision.into());
            entry.reason = Some(reason);
            entry.detail = (!taken.refused.is_empty())
                .then(|| taken.refused.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "));
            if !taken.accepted.is_empty() {
                announce(shared);
            }
        }
        Err(e) => {
            tracing::warn!(from, error = %e, "directory refused; the current one is kept");
            entry.decision = Some("deny".into());
            entry.reason = Some("directory refused".into());
            entry.detail = Some(e.to_string());
        }
    }
    if let Err(e) = shared.audit.append(entry).await {
        tracing::error!(error = %e, "audit append failed");
    }
}

/// Offers this node's directories to every node it knows (the directory's and `[[peers]]`).
pub(crate) fn announce(shared: &Shared) {
    let view = shared.directory.view();
    let listed = view.entries().into_iter().map(|e| e.node.clone());
    for node in listed.chain(shared.cfg.peers.iter().map(|p| p.node.clone())) {
        shared.directory.want(&node);
    }
}
