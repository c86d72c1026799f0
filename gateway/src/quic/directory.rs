//! Exchanging federation directories with peers over the link.
//!
//! Right after a gateway connects to a peer it sends `directory-offer` with the `(scope,
//! version)` of each directory it holds; the peer answers with its own and, if it holds
//! anything newer, its signed bundle, which the asker verifies before taking in. A peer that
//! learns from an offer that the asker holds something newer asks back. A gateway that takes in
//! a newer directory (from its file or a peer) offers it to a few nodes picked at random, each
//! of which does the same, so a new directory spreads like an epidemic in a few rounds without
//! anyone pushing unverified bytes; a node the epidemic missed catches up on its next new
//! connection to any peer, or at the latest at its periodic offer to one random node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fedgate_catalog::NodeId;
use fedgate_certs::directory::Bundle;
use time::OffsetDateTime;
use tokio::sync::mpsc;

use crate::link;
use crate::state::Shared;
use crate::wire::Message;
use fedgate_audit::Kind;

/// How many nodes a node offers its directories to at start and after taking in a newer one.
/// Offering to every known node instead made a federation of 200 gateways start with 40,000
/// handshakes and keep every node connected to every other (fedgate-scale, BENCHMARKS.md).
pub const GOSSIP_FANOUT: usize = 8;

/// How often a node offers its directories to one random node besides: the round that makes
/// every node converge even if the epidemic missed it and it talks to nobody.
pub const GOSSIP_INTERVAL: Duration = Duration::from_secs(300);

/// Runs the exchanges the node queues, one at a time per peer, until the queue closes; and the
/// periodic offer to one random node. A peer queued again while its exchange runs gets one
/// more exchange after it: what it offered may be newer than what that exchange saw.
pub(crate) async fn sync_loop(shared: Arc<Shared>, mut queue: mpsc::UnboundedReceiver<NodeId>) {
    let running: Arc<Mutex<Running>> = Arc::default();
    let mut round = tokio::time::interval_at(tokio::time::Instant::now() + GOSSIP_INTERVAL, GOSSIP_INTERVAL);
    loop {
        let peer = tokio::select! {
            next = queue.recv() => match next {
                Some(peer) => peer,
                None => return,
            },
            _ = round.tick() => {
                offer_to_random(&shared, 1);
                continue;
            }
        };
        if peer == shared.cfg.node || !lock(&running).start(&peer) {
            continue;
        }
        let (shared, running) = (shared.clone(), running.clone());
        tokio::spawn(async move {
            loop {
                if let Err(e) = sync_with(&shared, &peer).await {
                    tracing::debug!(peer = %peer, error = %e, "directory exchange failed");
                }
                if !lock(&running).again(&peer) {
                    break;
                }
            }
        });
    }
}

/// The peers with an exchange under way, each with whether it was queued again meanwhile.
#[derive(Debug, Default)]
struct Running(HashMap<NodeId, bool>);

impl Running {
    /// True if an exchange with `peer` should start now; false if one runs (it will run again).
    fn start(&mut self, peer: &NodeId) -> bool {
        match self.0.get_mut(peer) {
            Some(again) => {
                *again = true;
                false
            }
            None => {
                self.0.insert(peer.clone(), false);
                true
            }
        }
    }

    /// After an exchange with `peer`: true if it should run once more, else it is done.
    fn again(&mut self, peer: &NodeId) -> bool {
        match self.0.get_mut(peer) {
            Some(again) if *again => {
                *again = false;
                true
            }
            _ => {
                self.0.remove(peer);
                false
            }
        }
    }
}

fn lock(running: &Mutex<Running>) -> std::sync::MutexGuard<'_, Running> {
    running.lock().unwrap_or_else(|p| p.into_inner())
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

/// Offers this node's directories to [`GOSSIP_FANOUT`] nodes it knows (the directory's and
/// `[[peers]]`), picked at random.
pub(crate) fn announce(shared: &Shared) {
    offer_to_random(shared, GOSSIP_FANOUT);
}

fn offer_to_random(shared: &Shared, how_many: usize) {
    let view = shared.directory.view();
    let mut known: Vec<NodeId> = view.entries().into_iter().map(|e| e.node.clone()).collect();
    known.extend(shared.cfg.peers.iter().map(|p| p.node.clone()));
    known.retain(|n| n != &shared.cfg.node);
    known.sort();
    known.dedup();
    for node in pick(known, how_many, &ring::rand::SystemRandom::new()) {
        shared.directory.want(&node);
    }
}

/// `n` of `items` chosen uniformly at random (all of them if there are no more than `n`).
fn pick<T>(mut items: Vec<T>, n: usize, rng: &dyn ring::rand::SecureRandom) -> Vec<T> {
    // A partial Fisher–Yates shuffle: the first `n` places get a uniform sample.
    for i in 0..n.min(items.len()) {
        let mut bytes = [0u8; 8];
        if rng.fill(&mut bytes).is_err() {
            break;
        }
        let span = (items.len() - i) as u64;
        let j = i + (u64::from_le_bytes(bytes) % span) as usize;
        items.swap(i, j);
    }
    items.truncate(n);
    items
}

#[cfg(test)]
mod tests {
    use super::{pick, Running};

    #[test]
    fn a_peer_queued_while_its_exchange_runs_gets_one_more_not_none() {
        // The lost wake-up this prevents: B's start-up exchange with A still running when A
        // offers a newer directory; B dropped that want and stayed behind for minutes.
        let (a, b) = ("a@wuxi".parse().unwrap(), "b@wuxi".parse().unwrap());
        let mut r = Running::default();
        assert!(r.start(&a), "nothing runs: start");
        assert!(!r.start(&a) && !r.start(&a), "runs: queued again, once");
        assert!(r.start(&b), "another peer is independent");
        assert!(r.again(&a), "one more exchange with a");
        assert!(!r.again(&a), "then done");
        assert!(r.start(&a), "and a later want starts afresh");
        assert!(!r.again(&b) && !r.again(&a));
    }

    #[test]
    fn pick_takes_a_uniform_sample_of_distinct_items() {
        let rng = ring::rand::SystemRandom::new();
        assert_eq!(pick(vec![1, 2, 3], 8, &rng).len(), 3, "all of them when there are few");
        let mut seen = [0u32; 20];
        for _ in 0..4_000 {
            let got = pick((0..20).collect::<Vec<usize>>(), 5, &rng);
            let distinct: std::collections::HashSet<_> = got.iter().collect();
            assert_eq!((got.len(), distinct.len()), (5, 5));
            for i in got {
                seen[i] += 1;
            }
        }
        // Each item is expected 1,000 times; a fair sampler stays well within ±20%.
        assert!(seen.iter().all(|&c| (800..=1200).contains(&c)), "{seen:?}");
    }
}
