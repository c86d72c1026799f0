//! Rejected handshakes, counted instead of recorded one by one.
//!
//! Anyone can send handshakes, so one audit entry and one log line per rejection lets an
//! unauthenticated flood fill the disk. [`RejectionTally`] aggregates rejections per (source
//! address, reason) per interval: the first of each in an interval is reported at once (an
//! operator sees a refused peer immediately), the rest become one summary with a count when the
//! interval ends. A source that keeps failing is refused before any TLS work for the rest of the
//! interval. Pure: the caller passes `now`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How long rejections are aggregated.
pub const INTERVAL: Duration = Duration::from_secs(60);
/// Rejections from one address in one interval after which its new connections are refused
/// before the handshake. Far above what a misconfigured honest peer produces (it re-dials per
/// query), far below what a flood sends.
pub const REFUSE_AFTER: u64 = 100;
/// Distinct (address, reason) keys tracked per interval; beyond it rejections are counted under
/// one overflow key, so a spread-out flood cannot grow this table without bound.
pub const MAX_KEYS: usize = 4096;

/// Rejections in the current interval (all sources) from which unvalidated sources must prove
/// their address with a QUIC retry before the handshake. Below it, honest peers save the round
/// trip.
pub const RETRY_AFTER: u64 = 16;

/// What to do with a new inbound connection, before any TLS work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Go on with the handshake.
    Accept,
    /// Ask the client to prove its address first (QUIC retry).
    Retry,
    /// Refuse at once (the source is over [`REFUSE_AFTER`]).
    Refuse,
}

/// Decides [`Admit`] from whether the client's address is validated, whether its source is over
/// the refusal threshold, and how many rejections the current interval has seen.
pub fn admit(validated: bool, refuse_early: bool, recent: u64) -> Admit {
    if refuse_early {
        Admit::Refuse
    } else if !validated && recent >= RETRY_AFTER {
        Admit::Retry
    } else {
        Admit::Accept
    }
}

/// What to do with one rejection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// The first of its kind this interval: log and audit it now.
    Now,
    /// Counted; it appears in the interval's summary.
    Counted,
}

/// Rejections aggregated for one (address, reason) over one interval, beyond the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The source address (`None`: the overflow of many addresses).
    pub addr: Option<IpAddr>,
    /// The reason's short name.
    pub reason: String,
    /// Rejections not reported one by one.
    pub count: u64,
    /// Connections refused before the handshake (the address was over [`REFUSE_AFTER`]).
    pub refused_early: u64,
}

#[derive(Debug, Default)]
struct Bucket {
    extra: u64,
}

/// Rejection counts for the current interval.
#[derive(Debug)]
pub struct RejectionTally {
    interval: Duration,
    started: Instant,
    keys: HashMap<(Option<IpAddr>, String), Bucket>,
    per_addr: HashMap<IpAddr, u64>,
    refused_early: HashMap<Option<IpAddr>, u64>,
}

impl RejectionTally {
    /// An empty tally whose first interval starts at `now`.
    pub fn new(now: Instant, interval: Duration) -> Self {
        RejectionTally {
            interval,
            started: now,
            keys: HashMap::new(),
            per_addr: HashMap::new(),
            refused_early: HashMap::new(),
        }
    }

    /// Counts one rejected handshake from `addr` for `reason`.
    pub fn record(&mut self, addr: IpAddr, reason: &str) -> Report {
        if self.per_addr.len() < MAX_KEYS || self.per_addr.contains_key(&addr) {
            *self.per_addr.entry(addr).or_default() += 1;
        }
        let key = if self.keys.len() < MAX_KEYS || self.keys.contains_key(&(Some(addr), reason.to_owned())) {
            (Some(addr), reason.to_owned())
        } else {
            (None, reason.to_owned())
        };
        match self.keys.get_mut(&key) {
            Some(b) => {
                b.extra += 1;
                Report::Counted
            }
            None => {
                self.keys.insert(key, Bucket::default());
                Report::Now
            }
        }
    }

    /// Whether a new connection from `addr` should be refused before any TLS work. Counts it
    /// if so.
    pub fn refuse_early(&mut self, addr: IpAddr) -> bool {
        let over = self.per_addr.get(&addr).is_some_and(|n| *n >= REFUSE_AFTER);
        if over {
            let key = if self.refused_early.len() < MAX_KEYS { Some(addr) } else { None };
            *self.refused_early.entry(key).or_default() += 1;
        }
        over
    }

    /// Rejections in the current interval (all addresses), for deciding whether we are under
    /// attack.
    pub fn recent(&self) -> u64 {
        self.per_addr.values().sum()
    }

    /// If the interval has ended at `now`, its summaries (only keys with something not yet
    /// reported) and a fresh interval; else nothing.
    pub fn roll(&mut self, now: Instant) -> Vec<Summary> {
        if now.saturating_duration_since(self.started) < self.interval {
            return Vec::new();
        }
        self.started = now;
        self.per_addr.clear();
        self.drain()
    }

    /// Everything not yet reported, now (at shutdown).
    pub fn drain(&mut self) -> Vec<Summary> {
        let mut early = std::mem::take(&mut self.refused_early);
        let mut out: Vec<Summary> = self
            .keys
            .drain()
            .filter(|(_, b)| b.extra > 0)
            .map(|((addr, reason), b)| Summary { addr, reason, count: b.extra, refused_early: 0 })
            .collect();
        // Early refusals are told with the address's first summary (or on their own).
        for s in &mut out {
            s.refused_early = early.remove(&s.addr).unwrap_or(0);
        }
        out.extend(early.into_iter().map(|(addr, n)| Summary {
            addr,
            reason: "refused-before-handshake".into(),
            count: 0,
            refused_early: n,
        }));
        out.sort_by(|a, b| (a.addr, &a.reason).cmp(&(b.addr, &b.reason)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn admission_refuses_floods_and_retries_under_load() {
        assert_eq!(admit(false, false, 0), Admit::Accept);
        assert_eq!(admit(false, false, RETRY_AFTER - 1), Admit::Accept);
        assert_eq!(admit(false, false, RETRY_AFTER), Admit::Retry);
        assert_eq!(admit(true, false, RETRY_AFTER), Admit::Accept, "a retried client goes on");
        assert_eq!(admit(true, true, 0), Admit::Refuse);
        assert_eq!(admit(false, true, 0), Admit::Refuse);
    }

    #[test]
    fn the_first_rejection_is_reported_and_the_rest_are_one_summary() {
        let t0 = Instant::now();
        let mut t = RejectionTally::new(t0, INTERVAL);
        assert_eq!(t.record(ip("10.0.0.1"), "revoked"), Report::Now);
        for _ in 0..9_999 {
            assert_eq!(t.record(ip("10.0.0.1"), "revoked"), Report::Counted);
        }
        assert_eq!(t.record(ip("10.0.0.1"), "unknown-issuer"), Report::Now);
        assert_eq!(t.record(ip("10.0.0.2"), "revoked"), Report::Now);
        assert!(t.roll(t0 + Duration::from_secs(59)).is_empty(), "interval not over");
        let s = t.roll(t0 + INTERVAL);
        assert_eq!(
            s,
            vec![Summary {
                addr: Some(ip("10.0.0.1")),
                reason: "revoked".into(),
                count: 9_999,
                refused_early: 0
            }]
        );
        // A new interval reports the first again.
        assert_eq!(t.record(ip("10.0.0.1"), "revoked"), Report::Now);
        assert!(t.roll(t0 + INTERVAL * 2).is_empty());
    }

    #[test]
    fn a_persistent_source_is_refused_early_until_the_interval_ends() {
        let t0 = Instant::now();
        let mut t = RejectionTally::new(t0, INTERVAL);
        for _ in 0..REFUSE_AFTER - 1 {
            t.record(ip("10.0.0.1"), "unknown-issuer");
        }
        assert!(!t.refuse_early(ip("10.0.0.1")));
        t.record(ip("10.0.0.1"), "unknown-issuer");
        assert!(t.refuse_early(ip("10.0.0.1")));
        assert!(t.refuse_early(ip("10.0.0.1")));
        assert!(!t.refuse_early(ip("10.0.0.2")), "other sources are not affected");
        let s = t.roll(t0 + INTERVAL);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].count, s[0].refused_early), (REFUSE_AFTER - 1, 2));
        assert!(!t.refuse_early(ip("10.0.0.1")), "a new interval forgives");
    }

    #[test]
    fn many_sources_are_bounded_by_the_key_cap() {
        let t0 = Instant::now();
        let mut t = RejectionTally::new(t0, INTERVAL);
        let mut now_reports = 0;
        for i in 0..(MAX_KEYS as u32 + 1000) {
            let addr = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            if t.record(addr, "unknown-issuer") == Report::Now {
                now_reports += 1;
            }
        }
        // One report per tracked key plus one for the overflow key.
        assert_eq!(now_reports, MAX_KEYS + 1);
        let s = t.drain();
        assert_eq!(
            s,
            vec![Summary { addr: None, reason: "unknown-issuer".into(), count: 999, refused_early: 0 }]
        );
    }
}
