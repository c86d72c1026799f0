//! Usage statistics (使用情况): per dataset and peer, what this node shared and received, and how
//! its sharing requests went — counted from its own audit log and request store, pure (entries
//! and requests in, rows out).

use std::collections::BTreeMap;

use fedgate_audit::{Entry, Kind};
use serde::Serialize;

use super::request::State;
use super::store::{Held, Role};

/// One (dataset, peer) line of the statistics. "In" counts are this node as the provider,
/// "out" counts this node as the consumer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Row {
    /// The dataset.
    pub dataset: String,
    /// The other node.
    pub peer: String,
    /// Sharing requests received from the peer (this node provides).
    pub requests_in: u64,
    /// Sharing requests made to the peer (this node consumes).
    pub requests_out: u64,
    /// Requests approved (either side).
    pub approvals: u64,
    /// Requests refused (either side, refusals at intake included).
    pub refusals: u64,
    /// Approved grants revoked (either side).
    pub revocations: u64,
    /// Requests still waiting for an answer; of them, past their deadline.
    pub pending: u64,
    /// Pending requests past their deadline.
    pub overdue: u64,
    /// Mean seconds from receipt (or making) to the steward's answer, over answered requests.
    pub answer_secs_mean: Option<u64>,
    /// Longest such time.
    pub answer_secs_max: Option<u64>,
    /// Queries the peer asked of this node (allowed or not).
    pub queries_in: u64,
    /// Of those, denied by policy.
    pub queries_denied: u64,
    /// Queries this node asked the peer.
    pub queries_out: u64,
    /// Records this node sent the peer (query results and subscription batches).
    pub records_sent: u64,
    /// Records this node received from the peer.
    pub records_received: u64,
    /// Subscriptions the peer held with this node that received at least one batch.
    pub subscriptions_in: u64,
    /// Subscriptions this node holds with the peer.
    pub subscriptions_out: u64,
    /// Referrals with the peer (either way) that still owe a result.
    pub referrals_open: u64,
    /// Referrals with the peer that are resolved or closed.
    pub referrals_closed: u64,
    /// Objections (either side) not yet decided: open at the provider, or not yet sent.
    pub objections_open: u64,
    /// Objections decided (accepted, rejected) or refused at intake.
    pub objections_closed: u64,
}

/// What the counting sees: entries since a moment, requests made or received since then.
#[derive(Debug, Default)]
pub struct Counter {
    since_ms: Option<i64>,
    rows: BTreeMap<(String, String), Row>,
    subs_in: BTreeMap<(String, String), std::collections::BTreeSet<String>>,
    answer_times: BTreeMap<(String, String), Vec<u64>>,
}

impl Counter {
    /// Counts what happened at or after `since_ms` (Unix milliseconds), or everything.
    pub fn new(since_ms: Option<i64>) -> Counter {
        Counter { since_ms, ..Counter::default() }
    }

    fn row(&mut self, dataset: &str, peer: &str) -> &mut Row {
        self.rows.entry((dataset.to_owned(), peer.to_owned())).or_insert_with(|| Row {
            dataset: dataset.to_owned(),
            peer: peer.to_owned(),
            ..Row::default()
        })
    }

    /// Counts one audit entry: queries and transfers. Request steps are counted from the store
    /// ([`Counter::add_request`]), which holds their outcome.
    pub fn add_entry(&mut self, e: &Entry) {
        if self.since_ms.is_some_and(|s| e.time_ms < s) {
            return;
        }
        let (Some(dataset), Some(peer), Some(kind)) = (&e.dataset, &e.counterpart, e.kind) else { return };
        let records = e.records.unwrap_or(0);
        let batch = e.detail.as_deref().is_some_and(|d| d.starts_with("events "));
        match kind {
            Kind::RequestIn | Kind::Deny if !batch && !subscription_round(e) => {
                let r = self.row(dataset, peer);
                r.queries_in += 1;
                r.queries_denied += u64::from(kind == Kind::Deny);
            }
            Kind::TransferEnd => {
                self.row(dataset, peer).records_sent += records;
                if batch {
                    let key = (dataset.clone(), peer.clone());
                    let id = e.exchange.clone().unwrap_or_default();
                    self.subs_in.entry(key).or_default().insert(id);
                }
            }
            Kind::RequestOut => {
                let r = self.row(dataset, peer);
                r.records_received += records;
                r.queries_out += u64::from(!batch);
            }
            _ => {}
        }
    }

    /// Counts one sharing request as the store holds it at `now` (Unix seconds).
    pub fn add_request(&mut self, h: &Held) {
        if self.since_ms.is_some_and(|s| h.created.saturating_mul(1000) < s) {
            return;
        }
        let r = self.row(&h.dataset, &h.peer);
        match h.role {
            Role::Incoming => r.requests_in += 1,
            Role::Outgoing => r.requests_out += 1,
        }
        match h.state {
            State::Approved => r.approvals += 1,
            State::Refused => r.refusals += 1,
            State::Revoked => {
                r.approvals += 1;
                r.revocations += 1;
            }
            State::Pending | State::Unsent => r.pending += 1,
        }
        r.overdue += u64::from(h.overdue);
        // Answer time: from receipt to the first answer; a revocation's time is not one.
        if matches!(h.state, State::Approved | State::Refused) {
            if let Some(a) = h.answered {
                let key = (h.dataset.clone(), h.peer.clone());
                let secs = u64::try_from(a.saturating_sub(h.created)).unwrap_or(0);
                self.answer_times.entry(key).or_default().push(secs);
            }
        }
    }

    /// Counts a referral with `peer` about a case of `dataset` (`-` without a case), open or
    /// closed.
    pub fn add_referral(&mut self, dataset: &str, peer: &str, open: bool, created: i64) {
        if self.since_ms.is_some_and(|s| created.saturating_mul(1000) < s) {
            return;
        }
        let r = self.row(dataset, peer);
        r.referrals_open += u64::from(open);
        r.referrals_closed += u64::from(!open);
    }

    /// Counts one objection as the store holds it.
    pub fn add_objection(&mut self, f: &super::objection_store::Filed) {
        if self.since_ms.is_some_and(|s| f.created.saturating_mul(1000) < s) {
            return;
        }
        let r = self.row(&f.dataset, &f.peer);
        let open = f.state.is_open();
        r.objections_open += u64::from(open);
        r.objections_closed += u64::from(!open);
    }

    /// Counts a subscription this node holds with `peer`.
    pub fn add_subscription(&mut self, dataset: &str, peer: &str, created: i64) {
        if self.since_ms.is_some_and(|s| created.saturating_mul(1000) < s) {
            return;
        }
        self.row(dataset, peer).subscriptions_out += 1;
    }

    /// The rows, by dataset then peer.
    pub fn rows(mut self) -> Vec<Row> {
        for (key, ids) in &self.subs_in {
            if let Some(r) = self.rows.get_mut(key) {
                r.subscriptions_in = ids.len() as u64;
            }
        }
        for (key, times) in &self.answer_times {
            if let (Some(r), false) = (self.rows.get_mut(key), times.is_empty()) {
                r.answer_secs_mean = Some(times.iter().sum::<u64>() / times.len() as u64);
                r.answer_secs_max = times.iter().copied().max();
            }
        }
        self.rows.into_values().collect()
    }
}

/// True if and only if `e` decided a subscription round rather than a query (its reason says
/// so: the publisher's refusals read `subscription: …`).
fn subscription_round(e: &Entry) -> bool {
    e.reason.as_deref().is_some_and(|r| r.starts_with("subscription"))
}

/// The rows as aligned text columns.
pub fn table(rows: &[Row]) -> String {
    let head = [
        "DATASET",
        "PEER",
        "REQ IN",
        "REQ OUT",
        "APPROVED",
        "REFUSED",
        "REVOKED",
        "PENDING",
        "OVERDUE",
        "ANSWER MEAN",
        "QUERIES IN",
        "DENIED",
        "QUERIES OUT",
        "SENT",
        "RECEIVED",
        "SUBS IN",
        "SUBS OUT",
        "REFERRALS OPEN",
        "CLOSED",
        "OBJECTIONS OPEN",
        "CLOSED",
    ];
    let lines: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let n = |v: u64| v.to_string();
            vec![
                r.dataset.clone(),
                r.peer.clone(),
                n(r.requests_in),
                n(r.requests_out),
                n(r.approvals),
                n(r.refusals),
                n(r.revocations),
                n(r.pending),
                n(r.overdue),
                r.answer_secs_mean.map_or_else(|| "-".into(), duration),
                n(r.queries_in),
                n(r.queries_denied),
                n(r.queries_out),
                n(r.records_sent),
                n(r.records_received),
                n(r.subscriptions_in),
                n(r.subscriptions_out),
                n(r.referrals_open),
                n(r.referrals_closed),
                n(r.objections_open),
                n(r.objections_closed),
            ]
        })
        .collect();
    let head: Vec<String> = head.iter().map(|s| (*s).to_owned()).collect();
    let mut width = vec![0usize; head.len()];
    for l in std::iter::once(&head).chain(&lines) {
        for (w, c) in width.iter_mut().zip(l) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for l in std::iter::once(&head).chain(&lines) {
        let cells: Vec<String> = l.iter().zip(&width).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `3d 4h`, `2h 5m`, `40s`: an answer time as people read it.
pub fn duration(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, m) => format!("{m}m {}s", secs % 60),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "court@wuxi.xinwu";

    fn entry(kind: Kind, records: u64, detail: Option<&str>, time_ms: i64) -> Entry {
        Entry {
            kind: Some(kind),
            time_ms,
            counterpart: Some(P.into()),
            dataset: Some("cases".into()),
            purpose: Some("dispute-mediation".into()),
            records: Some(records),
            detail: detail.map(str::to_owned),
            exchange: Some("x".into()),
            ..Entry::default()
        }
    }

    fn held(role: Role, state: State, created: i64, answered: Option<i64>, overdue: bool) -> Held {
        Held {
            id: "0".repeat(32),
            role,
            peer: P.into(),
            dataset: "cases".into(),
            purpose: "dispute-mediation".into(),
            fields: vec![],
            until: None,
            reason: "r".into(),
            created,
            state,
            deadline: None,
            overdue,
            answer_reason: None,
            grant: None,
            clearance: None,
            grant_until: None,
            quota: None,
            rows: None,
            answered,
            signature: String::new(),
            answer_signature: None,
        }
    }

    #[test]
    fn queries_transfers_subscriptions_and_requests_are_counted_per_dataset_and_peer() {
        let mut c = Counter::new(Some(1_000));
        c.add_entry(&entry(Kind::RequestIn, 0, None, 1_000));
        c.add_entry(&entry(Kind::TransferEnd, 5, None, 1_000));
        c.add_entry(&entry(Kind::Deny, 0, None, 1_500));
        c.add_entry(&entry(Kind::TransferEnd, 3, Some("events 1..=3"), 2_000));
        c.add_entry(&entry(Kind::RequestOut, 7, None, 2_000));
        // Before --since: not counted.
        c.add_entry(&entry(Kind::RequestIn, 0, None, 999));
        c.add_request(&held(Role::Incoming, State::Approved, 10, Some(3_610), false));
        c.add_request(&held(Role::Incoming, State::Refused, 10, Some(10 + 60), false));
        c.add_request(&held(Role::Incoming, State::Pending, 10, None, true));
        c.add_request(&held(Role::Outgoing, State::Revoked, 10, Some(20), false));
        c.add_subscription("cases", P, 5);
        let rows = c.rows();
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!((r.queries_in, r.queries_denied, r.queries_out), (2, 1, 1));
        assert_eq!((r.records_sent, r.records_received), (8, 7));
        assert_eq!((r.subscriptions_in, r.subscriptions_out), (1, 1));
        assert_eq!((r.requests_in, r.requests_out), (3, 1));
        assert_eq!((r.approvals, r.refusals, r.revocations, r.pending, r.overdue), (2, 1, 1, 1, 1));
        assert_eq!((r.answer_secs_mean, r.answer_secs_max), (Some((3_600 + 60) / 2), Some(3_600)));
        let t = table(&rows);
        assert!(t.starts_with("DATASET") && t.lines().nth(1).unwrap().starts_with("cases"), "{t}");
        assert_eq!(duration(3_660), "1h 1m");
        assert_eq!(duration(90_000), "1d 1h");
        assert_eq!(duration(40), "40s");
    }

    #[test]
    fn referrals_and_objections_are_counted_open_and_closed() {
        use crate::governance::objection::State as O;
        let mut c = Counter::new(Some(1_000));
        c.add_referral("cases", P, true, 2);
        c.add_referral("cases", P, false, 2);
        c.add_referral("cases", P, false, 0);
        let filed = |state, created| crate::governance::objection_store::Filed {
            id: "a".repeat(32),
            role: Role::Outgoing,
            peer: P.into(),
            dataset: "cases".into(),
            purpose: "statistics".into(),
            key: "C1".into(),
            field: "name".into(),
            reason: "wrong".into(),
            proposed: None,
            created,
            state,
            answer_reason: None,
            corrected: false,
            answered: None,
            signature: String::new(),
            answer_signature: None,
        };
        for (state, created) in
            [(O::Open, 5), (O::Unsent, 5), (O::Accepted, 5), (O::Refused, 5), (O::Open, 0)]
        {
            c.add_objection(&filed(state, created));
        }
        let rows = c.rows();
        let r = &rows[0];
        assert_eq!((r.referrals_open, r.referrals_closed), (1, 1), "the one before --since is not counted");
        assert_eq!((r.objections_open, r.objections_closed), (2, 2));
        assert!(table(&rows).lines().next().unwrap().ends_with("OBJECTIONS OPEN  CLOSED"));
    }
}
