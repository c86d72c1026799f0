//! The soak run's judgement, kept apart from the processes and sockets that feed it: which
//! failures a restart explains, whether memory stayed bounded, how fast service came back.
//!
//! Times are offsets from the start of the run. A query may fail "as expected" only when its
//! failure is the kind a restart causes *and* its lifetime overlaps the outage of the process
//! that causes it; the same failure at any other time is a finding.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// The gateways of a soak federation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// The provider every query goes to; restarted.
    Provider,
    /// A consumer gateway that is restarted too.
    Consumer,
    /// A consumer gateway that is never restarted: the control group.
    Steady,
}

impl Role {
    /// Every role, in report order.
    pub const ALL: [Role; 3] = [Role::Provider, Role::Consumer, Role::Steady];
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Provider => "provider",
            Role::Consumer => "consumer",
            Role::Steady => "steady consumer",
        })
    }
}

/// When a gateway was not fully serving: from the signal until it answered again, plus the
/// grace allowed for peers to notice the new process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outage {
    /// Which gateway.
    pub role: Role,
    /// The signal was sent.
    pub from: Duration,
    /// Ready again, plus grace.
    pub to: Duration,
}

/// How one query through a consumer's local API ended, as the application saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 200, records, then `@end` whose count matches.
    Complete {
        /// Records received.
        records: u64,
    },
    /// An error status with the API's JSON error body.
    Refused {
        /// HTTP status.
        status: u16,
        /// The body's `code`.
        code: String,
        /// The body's `error`.
        message: String,
    },
    /// 200, then an `@error` control line.
    StreamError {
        /// Records before it.
        records: u64,
        /// Its text.
        message: String,
    },
    /// 200, then the body ended or broke without a control line.
    Cut {
        /// Records before the cut.
        records: u64,
        /// What the reader saw.
        why: String,
    },
    /// No HTTP answer at all: connection refused, reset before the status line.
    Unreachable(String),
    /// An answer that breaks the API's contract (unparseable line, wrong count, ...).
    Broken(String),
}

/// One finished query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The consumer gateway it went through.
    pub via: Role,
    /// Sent.
    pub started: Duration,
    /// Finished.
    pub ended: Duration,
    /// A probe the provider must deny (a purpose no grant gives).
    pub expect_denial: bool,
    /// What happened.
    pub outcome: Outcome,
}

/// The verdict on one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The right answer.
    Good,
    /// A failure a restart explains; the label names it.
    Expected(&'static str),
    /// Anything else; the label groups it in the report.
    Unexpected(String),
}

fn overlaps(q: &Query, role: Role, outages: &[Outage]) -> bool {
    outages.iter().any(|o| o.role == role && q.started <= o.to && o.from <= q.ended)
}

/// Judges `q` against the outages of the run.
pub fn judge(q: &Query, outages: &[Outage]) -> Verdict {
    let provider_down = overlaps(q, Role::Provider, outages);
    let via_down = q.via != Role::Steady && overlaps(q, q.via, outages);
    match &q.outcome {
        Outcome::Complete { .. } if !q.expect_denial => Verdict::Good,
        Outcome::Complete { .. } => {
            Verdict::Unexpected("records for a request the provider must deny".into())
        }
        Outcome::Refused { status: 403, code, .. } if q.expect_denial && code == "denied" => Verdict::Good,
        Outcome::Refused { status: 502, code, .. } if provider_down && code == "peer-unavailable" => {
            Verdict::Expected("peer-unavailable while the provider restarted")
        }
        Outcome::Refused { status: 502, code, .. } if provider_down && code == "incomplete" => {
            Verdict::Expected("incomplete transfer while the provider restarted")
        }
        Outcome::StreamError { message, .. } if provider_down && message.contains("incomplete transfer") => {
            Verdict::Expected("incomplete transfer while the provider restarted")
        }
        // A consumer that is stopping closes its own connections first, so the application may
        // still get the control line for the transfer it cut.
        Outcome::StreamError { message, .. } if via_down && message.contains("incomplete transfer") => {
            Verdict::Expected("incomplete transfer while the consumer restarted")
        }
        // A stopping consumer says so (503 `shutting-down`) to requests that arrive while it
        // closes; that is its restart, not the provider being unavailable.
        Outcome::Refused { status: 503, code, .. } if via_down && code == "shutting-down" => {
            Verdict::Expected("shutting-down while the consumer restarted")
        }
        Outcome::Cut { .. } if via_down => Verdict::Expected("stream cut by the consumer's restart"),
        Outcome::Unreachable(_) if via_down => Verdict::Expected("consumer API down during its restart"),
        other => Verdict::Unexpected(label(other, provider_down, via_down)),
    }
}

fn label(o: &Outcome, provider_down: bool, via_down: bool) -> String {
    let when = match (provider_down, via_down) {
        (false, false) => "with every gateway up",
        (true, _) => "during a provider outage",
        (false, true) => "during a consumer outage",
    };
    let what = match o {
        Outcome::Complete { .. } => "records".to_owned(),
        Outcome::Refused { status, code, .. } => format!("{status} {code}"),
        Outcome::StreamError { message, .. } => format!("@error `{}`", first_words(message)),
        Outcome::Cut { .. } => "stream cut".to_owned(),
        Outcome::Unreachable(_) => "API unreachable".to_owned(),
        Outcome::Broken(why) => format!("broken answer: {}", first_words(why)),
    };
    format!("{what} {when}")
}

/// The start of a message, without the peer- and count-specific tail, so like errors group.
fn first_words(s: &str) -> String {
    let cut = s.find(|c: char| c.is_ascii_digit()).unwrap_or(s.len()).min(60);
    s[..cut].trim_end().to_owned()
}

/// Counts by verdict: good answers, expected failures by label, unexpected failures by label.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Queries judged.
    pub queries: u64,
    /// Right answers (records, or the denial a probe must get).
    pub good: u64,
    /// Records received in complete answers.
    pub records: u64,
    /// Restart-explained failures.
    pub expected: BTreeMap<&'static str, u64>,
    /// Everything else, with one example message each.
    pub unexpected: BTreeMap<String, (u64, String)>,
}

impl Tally {
    /// Judges and counts every query.
    pub fn of(queries: &[Query], outages: &[Outage]) -> Tally {
        let mut t = Tally::default();
        for q in queries {
            t.queries += 1;
            if let Outcome::Complete { records } = q.outcome {
                t.records += records;
            }
            match judge(q, outages) {
                Verdict::Good => t.good += 1,
                Verdict::Expected(l) => *t.expected.entry(l).or_default() += 1,
                Verdict::Unexpected(l) => {
                    t.unexpected.entry(l).or_insert_with(|| (0, format!("{:?}", q.outcome))).0 += 1;
                }
            }
        }
        t
    }

    /// Unexpected failures in all.
    pub fn unexpected_total(&self) -> u64 {
        self.unexpected.values().map(|(n, _)| n).sum()
    }
}

/// Percentiles (p50, p99, max) of how long complete answers took; `None` without any.
pub fn latencies(queries: &[Query]) -> Option<[Duration; 3]> {
    let mut d: Vec<Duration> = queries
        .iter()
        .filter(|q| matches!(q.outcome, Outcome::Complete { .. }))
        .map(|q| q.ended - q.started)
        .collect();
    d.sort_unstable();
    let at = |p: usize| d[(d.len() - 1) * p / 100];
    (!d.is_empty()).then(|| [at(50), at(99), at(100)])
}

/// Time from each moment a gateway was ready again to the first complete answer to a query sent
/// after it; `None` where no query succeeded before the run ended.
pub fn recoveries(ready_at: &[Duration], queries: &[Query]) -> Vec<Option<Duration>> {
    ready_at
        .iter()
        .map(|&ready| {
            queries
                .iter()
                .filter(|q| q.started >= ready && matches!(q.outcome, Outcome::Complete { .. }))
                .map(|q| q.ended - ready)
                .min()
        })
        .collect()
}

/// Why an RSS series (bytes, in time order, one process lifetime) does not look bounded: over
/// the absolute `cap`, or still growing in the last third of the run beyond a quarter (and at
/// least `slack` bytes) over the middle third's peak. Short series are only checked against `cap`.
pub fn rss_problem(samples: &[u64], cap: u64, slack: u64) -> Option<String> {
    let max = samples.iter().copied().max()?;
    if max > cap {
        return Some(format!("peaked at {} MiB, over the {} MiB cap", max >> 20, cap >> 20));
    }
    if samples.len() < 30 {
        return None;
    }
    let third = samples.len() / 3;
    let middle = samples[third..2 * third].iter().copied().max()?;
    let last = samples[2 * third..].iter().copied().max()?;
    let allowed = middle + (middle / 4).max(slack);
    (last > allowed).then(|| {
        format!(
            "still growing: {} MiB in the last third after {} MiB in the middle",
            last >> 20,
            middle >> 20
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn q(via: Role, from: u64, to: u64, outcome: Outcome) -> Query {
        Query { via, started: s(from), ended: s(to), expect_denial: false, outcome }
    }

    fn refused(status: u16, code: &str) -> Outcome {
        Outcome::Refused { status, code: code.into(), message: "x".into() }
    }

    const OUTAGES: &[Outage] = &[
        Outage { role: Role::Provider, from: Duration::from_secs(10), to: Duration::from_secs(13) },
        Outage { role: Role::Consumer, from: Duration::from_secs(30), to: Duration::from_secs(33) },
    ];

    #[test]
    fn a_restart_explains_only_its_own_failures_inside_its_window() {
        let unavailable = refused(502, "peer-unavailable");
        assert_eq!(
            judge(&q(Role::Steady, 11, 12, unavailable.clone()), OUTAGES),
            Verdict::Expected("peer-unavailable while the provider restarted")
        );
        // The same failure after the window (e.g. a stale connection kept for a minute) is a finding.
        assert!(matches!(
            judge(&q(Role::Steady, 20, 21, unavailable.clone()), OUTAGES),
            Verdict::Unexpected(_)
        ));
        // A consumer restart does not explain the provider being unavailable.
        assert!(matches!(judge(&q(Role::Consumer, 31, 32, unavailable), OUTAGES), Verdict::Unexpected(_)));
        // It explains its own `shutting-down`, only through it and only inside its window.
        let stopping = refused(503, "shutting-down");
        assert_eq!(
            judge(&q(Role::Consumer, 31, 32, stopping.clone()), OUTAGES),
            Verdict::Expected("shutting-down while the consumer restarted")
        );
        assert!(matches!(judge(&q(Role::Steady, 31, 32, stopping.clone()), OUTAGES), Verdict::Unexpected(_)));
        assert!(matches!(judge(&q(Role::Consumer, 40, 41, stopping), OUTAGES), Verdict::Unexpected(_)));
        // ... and the consumer's own restart explains an incomplete transfer through it, not
        // through the steady one.
        let cut_by_consumer =
            Outcome::StreamError { records: 1, message: "incomplete transfer from p after 1 records".into() };
        assert!(matches!(
            judge(&q(Role::Consumer, 31, 32, cut_by_consumer.clone()), OUTAGES),
            Verdict::Expected(_)
        ));
        assert!(matches!(judge(&q(Role::Steady, 31, 32, cut_by_consumer), OUTAGES), Verdict::Unexpected(_)));
        // A query spanning the start of the outage counts.
        let cut =
            Outcome::StreamError { records: 7, message: "incomplete transfer from p after 7 records".into() };
        assert!(matches!(judge(&q(Role::Consumer, 8, 10, cut.clone()), OUTAGES), Verdict::Expected(_)));
        assert!(matches!(judge(&q(Role::Consumer, 40, 41, cut), OUTAGES), Verdict::Unexpected(_)));
    }

    #[test]
    fn the_steady_consumer_never_excuses_its_own_failures() {
        let down = Outcome::Unreachable("connection refused".into());
        assert!(matches!(judge(&q(Role::Consumer, 31, 31, down.clone()), OUTAGES), Verdict::Expected(_)));
        assert!(matches!(judge(&q(Role::Steady, 31, 31, down), OUTAGES), Verdict::Unexpected(_)));
    }

    #[test]
    fn other_errors_and_wrong_answers_are_never_expected() {
        for o in
            [refused(500, "internal"), refused(404, "unknown-dataset"), Outcome::Broken("bad json".into())]
        {
            assert!(matches!(judge(&q(Role::Consumer, 11, 31, o), OUTAGES), Verdict::Unexpected(_)));
        }
        let mut probe = q(Role::Steady, 1, 2, Outcome::Complete { records: 3 });
        probe.expect_denial = true;
        assert!(matches!(judge(&probe, OUTAGES), Verdict::Unexpected(_)));
        probe.outcome = refused(403, "denied");
        assert_eq!(judge(&probe, OUTAGES), Verdict::Good);
    }

    #[test]
    fn tally_groups_like_errors() {
        let qs = [
            q(Role::Steady, 1, 2, Outcome::Complete { records: 5 }),
            q(Role::Steady, 11, 12, refused(502, "peer-unavailable")),
            q(Role::Steady, 50, 51, refused(502, "peer-unavailable")),
            q(Role::Consumer, 52, 53, refused(502, "peer-unavailable")),
        ];
        let t = Tally::of(&qs, OUTAGES);
        assert_eq!((t.queries, t.good, t.records, t.unexpected_total()), (4, 1, 5, 2));
        assert_eq!(t.unexpected.len(), 1, "{:?}", t.unexpected);
    }

    #[test]
    fn recovery_is_the_first_success_sent_after_ready() {
        let qs = [
            q(Role::Steady, 9, 14, Outcome::Complete { records: 1 }),
            q(Role::Steady, 12, 13, refused(502, "peer-unavailable")),
            q(Role::Steady, 13, 15, Outcome::Complete { records: 1 }),
        ];
        assert_eq!(recoveries(&[s(12), s(100)], &qs), vec![Some(s(3)), None]);
    }

    #[test]
    fn latency_percentiles_of_complete_answers_only() {
        let mut qs: Vec<Query> =
            (1..=100).map(|i| q(Role::Steady, 0, i, Outcome::Complete { records: 1 })).collect();
        qs.push(q(Role::Steady, 0, 1000, refused(502, "peer-unavailable")));
        assert_eq!(latencies(&qs), Some([s(50), s(99), s(100)]));
        assert_eq!(latencies(&[]), None);
    }

    #[test]
    fn rss_must_stay_under_the_cap_and_stop_growing() {
        const MIB: u64 = 1 << 20;
        let flat: Vec<u64> = (0..60).map(|i| (40 + i % 3) * MIB).collect();
        assert_eq!(rss_problem(&flat, 512 * MIB, 32 * MIB), None);
        let leak: Vec<u64> = (0..60).map(|i| (40 + 2 * i) * MIB).collect();
        assert!(rss_problem(&leak, 512 * MIB, 32 * MIB).unwrap().contains("growing"));
        assert!(rss_problem(&[600 * MIB], 512 * MIB, 32 * MIB).unwrap().contains("cap"));
        assert_eq!(rss_problem(&[], 512 * MIB, 32 * MIB), None);
    }
}
