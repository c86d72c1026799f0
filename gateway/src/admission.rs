//! What a provider lets peers make it hold: connections per peer and in total, and request
//! bytes buffered per connection and per node.
//!
//! The caps are in [`crate::wire::limits`]. The bookkeeping here is plain counters with guards
//! that give back what they hold when dropped, so a stream or connection that ends in any way
//! (served, refused, reset, timed out) releases its share. [`read_request`] is the thin async
//! shell that moves a stream's bytes into a [`RequestBuffer`] under these budgets.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use fedgate_catalog::NodeId;
use thiserror::Error;

use crate::wire::limits::{self, RequestError};
use crate::wire::request::{Refused, RequestBuffer};
use crate::wire::Message;
use fedgate_audit::Entry;

/// A byte budget shared by many holders; it also remembers its highest use.
#[derive(Debug)]
pub struct Budget {
    cap: usize,
    used: AtomicUsize,
    peak: AtomicUsize,
}

impl Budget {
    /// A budget of `cap` bytes.
    pub fn new(cap: usize) -> Budget {
        Budget { cap, used: AtomicUsize::new(0), peak: AtomicUsize::new(0) }
    }

    /// Takes `n` bytes if they fit.
    fn take(&self, n: usize) -> bool {
        let got = self.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
            u.checked_add(n).filter(|t| *t <= self.cap)
        });
        if let Ok(before) = got {
            self.peak.fetch_max(before + n, Ordering::AcqRel);
        }
        got.is_ok()
    }

    fn give(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// The most bytes ever held at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Acquire)
    }

    /// The cap.
    pub fn cap(&self) -> usize {
        self.cap
    }
}

/// Request bytes one stream holds against its connection's and the node's budgets.
#[derive(Debug)]
pub struct Reservation {
    conn: Arc<Budget>,
    node: Arc<Budget>,
    held: usize,
}

impl Reservation {
    /// Holds `n` more bytes, or says which budget is used up.
    pub fn grow(&mut self, n: usize) -> Result<(), Refused> {
        if !self.conn.take(n) {
            return Err(Refused::Busy { scope: "connection", budget: self.conn.cap });
        }
        if !self.node.take(n) {
            self.conn.give(n);
            return Err(Refused::Busy { scope: "node", budget: self.node.cap });
        }
        self.held += n;
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.conn.give(self.held);
        self.node.give(self.held);
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Full {
    /// The peer already has as many connections as it may.
    #[error("{peer} already has {max} connections (the per-peer limit)")]
    Peer {
        /// The peer.
        peer: NodeId,
        /// The cap.
        max: usize,
    },
    /// The node has as many peer connections as it may.
    #[error("this gateway has {max} peer connections (its limit); retry later")]
    Node {
        /// The cap.
        max: usize,
    },
}

/// Counts live peer connections and the node's buffered request bytes.
#[derive(Debug)]
pub struct Admission {
    per_peer: usize,
    total: usize,
    live: Mutex<HashMap<NodeId, usize>>,
    budget: Arc<Budget>,
}

impl Default for Admission {
    fn default() -> Self {
        Admission::new(limits::MAX_CONNECTIONS_PER_PEER, limits::MAX_CONNECTIONS, limits::NODE_REQUEST_BUDGET)
    }
}

impl Admission {
    /// With explicit caps (the defaults are the [`limits`] constants).
    pub fn new(per_peer: usize, total: usize, node_budget: usize) -> Admission {
        Admission { per_peer, total, live: Mutex::default(), budget: Arc::new(Budget::new(node_budget)) }
    }

    /// Admits one more connection from `peer`, or says which cap it hits.
    pub fn connect(self: &Arc<Self>, peer: &NodeId) -> Result<Connection, Full> {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if live.values().sum::<usize>() >= self.total {
            return Err(Full::Node { max: self.total });
        }
        let n = live.entry(peer.clone()).or_default();
        if *n >= self.per_peer {
            return Err(Full::Peer { peer: peer.clone(), max: self.per_peer });
        }
        *n += 1;
        Ok(Connection {
            admission: self.clone(),
            peer: peer.clone(),
            budget: Arc::new(Budget::new(limits::CONNECTION_REQUEST_BUDGET)),
        })
    }

    /// Live connections from `peer`.
    pub fn connections(&self, peer: &NodeId) -> usize {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).get(peer).copied().unwrap_or(0)
    }

    /// The node's request-byte budget (its `peak` is the most ever buffered at once).
    pub fn budget(&self) -> &Budget {
        &self.budget
    }
}

/// An admitted connection; dropping it frees its slot.
#[derive(Debug)]
pub struct Connection {
    admission: Arc<Admission>,
    peer: NodeId,
    budget: Arc<Budget>,
}

impl Connection {
    /// A fresh, empty reservation against this connection's and the node's budgets.
    pub fn reservation(&self) -> Reservation {
        Reservation { conn: self.budget.clone(), node: self.admission.budget.clone(), held: 0 }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let mut live = self.admission.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = live.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                live.remove(&self.peer);
            }
        }
    }
}

/// Reads one whole request stream under `reservation`; `Ok(None)` if the stream was empty.
/// The caller bounds the time ([`limits::REQUEST_TIMEOUT`]).
pub async fn read_request(
    recv: &mut quinn::RecvStream,
    mut reservation: Reservation,
) -> Result<Option<Message>, Refused> {
    let mut buf = RequestBuffer::default();
    // Chunks are at most what a request may still need, so one read cannot overshoot much.
    while let Some(chunk) = recv
        .read_chunk(limits::MAX_REQUEST_FRAME + 4 - buf.len().min(limits::MAX_REQUEST_FRAME), true)
        .await
        .map_err(|e| Refused::Stream(e.to_string()))?
    {
        reservation.grow(chunk.bytes.len())?;
        buf.push(&chunk.bytes)?;
    }
    buf.finish()
}

fn within(value: &str, max: usize) -> String {
    if value.len() <= max {
        value.to_owned()
    } else {
        limits::fingerprint(value.as_bytes())
    }
}

/// Fills the audit entry of a refused request: the reason, and what the request asked for with
/// every value over its cap recorded as length and digest.
pub fn describe_refusal(refused: &Refused, e: &mut Entry) {
    e.decision = Some("error".into());
    e.reason = Some(format!("{}: {refused}", refused.code().as_str()));
    e.records = Some(0);
    let Refused::Caps { request: Some(req), error } = refused else { return };
    if let Message::Query { dataset, purpose, filters, limit, exchange } = &**req {
        e.exchange = exchange.as_deref().filter(|x| crate::exchange::valid_exchange_id(x)).map(str::to_owned);
        e.dataset = Some(within(dataset, limits::MAX_DATASET));
        e.purpose = Some(within(purpose, limits::MAX_PURPOSE));
        e.filters = filters
            .iter()
            .take(limits::MAX_FILTERS)
            .map(|(k, v)| (within(k, limits::MAX_FILTER_FIELD), within(v, limits::MAX_FILTER_VALUE)))
            .collect();
        if let RequestError::Limit { limit } = error {
            e.detail = Some(format!("limit {limit}"));
        } else if let Some(l) = limit {
            e.detail = Some(format!("limit {l}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(s: &str) -> NodeId {
        s.parse().unwrap()
    }

    #[test]
    fn connections_are_capped_per_peer_and_in_total_and_freed_on_drop() {
        let a = Arc::new(Admission::new(2, 3, 1024));
        let p = node("police@wuxi.liangxi");
        let q = node("court@wuxi.xinwu");
        let c1 = a.connect(&p).unwrap();
        let _c2 = a.connect(&p).unwrap();
        assert_eq!(a.connect(&p).unwrap_err(), Full::Peer { peer: p.clone(), max: 2 });
        let _c3 = a.connect(&q).unwrap();
        assert_eq!(a.connect(&q).unwrap_err(), Full::Node { max: 3 });
        drop(c1);
        assert_eq!(a.connections(&p), 1);
        assert!(a.connect(&p).is_ok());
    }

    #[test]
    fn reservations_respect_both_budgets_and_release_on_drop() {
        let a = Arc::new(Admission::new(4, 4, limits::CONNECTION_REQUEST_BUDGET + 10));
        let c = a.connect(&node("police@wuxi.liangxi")).unwrap();
        let mut r = c.reservation();
        r.grow(limits::CONNECTION_REQUEST_BUDGET).unwrap();
        assert!(matches!(c.reservation().grow(1), Err(Refused::Busy { scope: "connection", .. })));
        let other = a.connect(&node("court@wuxi.xinwu")).unwrap();
        let mut r2 = other.reservation();
        r2.grow(10).unwrap();
        assert!(matches!(r2.grow(1), Err(Refused::Busy { scope: "node", .. })));
        assert_eq!(a.budget().used(), limits::CONNECTION_REQUEST_BUDGET + 10);
        drop(r);
        drop(r2);
        assert_eq!(a.budget().used(), 0);
        assert_eq!(a.budget().peak(), limits::CONNECTION_REQUEST_BUDGET + 10);
    }

    #[test]
    fn a_refused_query_is_audited_with_digests_for_oversized_values() {
        let huge = "d".repeat(1_100_000);
        let req = Message::Query {
            dataset: huge.clone(),
            purpose: "statistics".into(),
            filters: vec![("kind".into(), "x".into())],
            limit: None,
            exchange: None,
        };
        // Too large for one request frame: check the caps on the decoded message directly.
        let refused =
            Refused::Caps { error: limits::check_request(&req).unwrap_err(), request: Some(Box::new(req)) };
        let mut e = Entry::default();
        describe_refusal(&refused, &mut e);
        assert_eq!(e.dataset, Some(limits::fingerprint(huge.as_bytes())));
        assert_eq!(e.purpose.as_deref(), Some("statistics"));
        assert_eq!(e.filters, vec![("kind".to_string(), "x".to_string())]);
        let reason = e.reason.unwrap();
        assert!(reason.starts_with("bad-request: dataset is 1100000 bytes"), "{reason}");
        assert!(reason.len() < 200);
    }
}
