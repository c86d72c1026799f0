//! When this node last reached each peer, and whether a connection to it is open now: what the
//! console's overview shows as "up/down, last contact". Kept by the link on every dial and
//! every accepted connection; costs one map insert per connection, not per request.

use std::collections::BTreeMap;
use std::sync::Mutex;

use fedgate_catalog::NodeId;

/// One peer as last seen.
#[derive(Debug, Clone, Default)]
pub struct Contact {
    /// Unix milliseconds of the last connection made (either way).
    pub last_ok_ms: Option<i64>,
    /// Unix milliseconds and reason of the last failed dial.
    pub last_failure: Option<(i64, String)>,
    conn: Option<quinn::Connection>,
}

impl Contact {
    /// True if and only if a connection with the peer is open now.
    pub fn up(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| c.close_reason().is_none())
    }
}

/// Every peer contacted since start.
#[derive(Default)]
pub struct Contacts {
    map: Mutex<BTreeMap<NodeId, Contact>>,
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

impl Contacts {
    /// A connection with `peer` was made.
    pub fn connected(&self, peer: &NodeId, conn: &quinn::Connection) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let c = map.entry(peer.clone()).or_default();
        c.last_ok_ms = Some(now_ms());
        c.conn = Some(conn.clone());
    }

    /// Dialling `peer` failed with `why`.
    pub fn failed(&self, peer: &NodeId, why: &str) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(peer.clone()).or_default().last_failure = Some((now_ms(), why.to_owned()));
    }

    /// What is known of `peer`.
    pub fn get(&self, peer: &NodeId) -> Option<Contact> {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).get(peer).cloned()
    }

    /// Every peer contacted, by node id.
    pub fn all(&self) -> Vec<(NodeId, Contact)> {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}
