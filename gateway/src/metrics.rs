//! Metrics for Prometheus (`GET /metrics`, OpenMetrics text) with `prometheus-client`: counts and
//! latencies labelled by peer, dataset, purpose and outcome code; nothing about records' contents.
//!
//! Counters restart at zero with the process, as Prometheus expects of counters. Gauges are
//! absolute times read from the files themselves (the node certificate's expiry, the last
//! checkpoint's write), so they mean the same after a restart and after a certificate rotation.
//!
//! Dataset and purpose come from the peer's request, so label sets are capped: past
//! [`MAX_SERIES`] distinct ones, new requests are counted under `_other` rather than letting a
//! peer grow this node's memory with made-up names.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::wire::ErrorCode;

/// Most distinct (peer, dataset, purpose, code) label sets kept per family.
pub const MAX_SERIES: usize = 2_000;

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The label value standing for every label set past [`MAX_SERIES`].
const OTHER: &str = "_other";

/// One exchange as labels: who, which dataset, why, and how it ended (`ok` or an error code).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExchangeLabels {
    /// The counterpart node.
    pub peer: String,
    /// The dataset asked for.
    pub dataset: String,
    /// The declared purpose.
    pub purpose: String,
    /// `ok`, or the wire error code (kebab-case, as on the wire).
    pub code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    peer: String,
}

/// Sharing requests as labels: this node's side and where they stand.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    role: String,
    state: String,
}

/// Long-lived exchanges as labels: which kind, the dataset, the other node, open or closed.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExchangeStateLabels {
    dataset: String,
    peer: String,
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

type Seconds = Family<ExchangeLabels, Histogram, fn() -> Histogram>;
type TimeGauge = Gauge<f64, AtomicU64>;

/// The node's metrics.
pub struct Metrics {
    registry: Registry,
    seen: Mutex<HashSet<ExchangeLabels>>,
    queries: Family<ExchangeLabels, Counter>,
    query_seconds: Seconds,
    records_sent: Family<ExchangeLabels, Counter>,
    decision_seconds: Histogram,
    transfers: Family<ExchangeLabels, Counter>,
    transfer_seconds: Seconds,
    records_received: Family<ExchangeLabels, Counter>,
    connections: Family<PeerLabels, Counter>,
    certs_rejected: Counter,
    cert_expiry: TimeGauge,
    checkpoint_time: TimeGauge,
    checkpoint_age: TimeGauge,
    requests: Family<RequestLabels, Gauge>,
    requests_overdue: Family<RequestLabels, Gauge>,
    referrals: Family<ExchangeStateLabels, Gauge>,
    objections: Family<ExchangeStateLabels, Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Latency buckets from 0.1 ms to ~26 s, doubling: decisions sit at the bottom, bulk pulls at
/// the top.
fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 19))
}

impl Metrics {
    /// Every metric registered, counters at zero.
    pub fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix("fedgate"),
            seen: Mutex::new(HashSet::new()),
            queries: Family::default(),
            query_seconds: Family::new_with_constructor(seconds_histogram),
            records_sent: Family::default(),
            decision_seconds: seconds_histogram(),
            transfers: Family::default(),
            transfer_seconds: Family::new_with_constructor(seconds_histogram),
            records_received: Family::default(),
            connections: Family::default(),
            certs_rejected: Counter::default(),
            cert_expiry: Gauge::default(),
            checkpoint_time: Gauge::default(),
            checkpoint_age: Gauge::default(),
            requests: Family::default(),
            requests_overdue: Family::default(),
            referrals: Family::default(),
            objections: Family::default(),
        };
        let r = &mut m.registry;
        let version = BuildLabels { version: env!("CARGO_PKG_VERSION").into() };
        r.register("build", "The fedgate build serving these metrics (value 1).", Info::new(version));
        r.register("queries", "Queries from peers this node answered, by outcome code.", m.queries.clone());
        r.register(
            "query_duration_seconds",
            "Time from a peer's query to its signed trailer or refusal.",
            m.query_seconds.clone(),
        );
        r.register("records_sent", "Records this node sent to peers.", m.records_sent.clone());
        r.register(
            "decision_duration_seconds",
            "Time to decide a query: grants, row scope, filters, quota.",
            m.decision_seconds.clone(),
        );
        r.register("transfers", "Transfers this node asked peers for, by outcome code.", m.transfers.clone());
        r.register(
            "sharing_requests",
            "Sharing requests this node made (outgoing) or received (incoming), by state.",
            m.requests.clone(),
        );
        r.register(
            "sharing_requests_overdue",
            "Sharing requests still unanswered past their deadline.",
            m.requests_overdue.clone(),
        );
        r.register(
            "referrals",
            "Referrals this node takes part in, per case dataset (- without a case) and peer, open or closed.",
            m.referrals.clone(),
        );
        r.register(
            "objections",
            "Objections this node filed or received, per dataset and peer, open or closed.",
            m.objections.clone(),
        );
        r.register(
            "transfer_duration_seconds",
            "Time from sending a query to a peer to its verified end or failure.",
            m.transfer_seconds.clone(),
        );
        r.register(
            "records_received",
            "Records this node received and verified.",
            m.records_received.clone(),
        );
        r.register("connections_accepted", "Authenticated inbound connections.", m.connections.clone());
        r.register(
            "peer_certificates_rejected",
            "Peer certificates refused at the handshake.",
            m.certs_rejected.clone(),
        );
        r.register(
            "certificate_expiry_timestamp_seconds",
            "When this node's certificate expires (Unix time; 0 if it cannot be read).",
            m.cert_expiry.clone(),
        );
        r.register(
            "audit_checkpoint_timestamp_seconds",
            "When the audit log's last signed checkpoint was written (Unix time; 0 if none).",
            m.checkpoint_time.clone(),
        );
        r.register(
            "audit_checkpoint_age_seconds",
            "Seconds since the audit log's last signed checkpoint at scrape time (-1 if none).",
            m.checkpoint_age.clone(),
        );
        m
    }

    /// The labels for an exchange, folded into `_other` once [`MAX_SERIES`] sets are in use.
    fn labels(&self, peer: &str, dataset: &str, purpose: &str, code: &str) -> ExchangeLabels {
        let l = ExchangeLabels {
            peer: peer.into(),
            dataset: dataset.into(),
            purpose: purpose.into(),
            code: code.into(),
        };
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.contains(&l) || seen.len() < MAX_SERIES && seen.insert(l.clone()) {
            return l;
        }
        ExchangeLabels { dataset: OTHER.into(), purpose: OTHER.into(), ..l }
    }

    /// A query this node answered: `code` is `ok` for a signed trailer, else why it stopped;
    /// `records` were sent; timed from `started`.
    pub fn query_ended(
        &self,
        peer: &str,
        dataset: &str,
        purpose: &str,
        code: &str,
        records: u64,
        started: Instant,
    ) {
        let l = self.labels(peer, dataset, purpose, code);
        self.queries.get_or_create(&l).inc();
        if records > 0 {
            self.records_sent.get_or_create(&l).inc_by(records);
        }
        self.query_seconds.get_or_create(&l).observe(started.elapsed().as_secs_f64());
    }

    /// A query this node refused before any record, with the code the peer was told.
    pub fn query_refused(&self, peer: &str, dataset: &str, purpose: &str, code: ErrorCode, started: Instant) {
        self.query_ended(peer, dataset, purpose, code.as_str(), 0, started);
    }

    /// Runs a decision and records how long it took.
    pub fn time_decision<T>(&self, decide: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let out = decide();
        self.decision_seconds.observe(t.elapsed().as_secs_f64());
        out
    }

    /// Records a batch received from a peer.
    pub fn records_received(&self, peer: &str, dataset: &str, purpose: &str, n: u64) {
        self.records_received.get_or_create(&self.labels(peer, dataset, purpose, "ok")).inc_by(n);
    }

    /// A transfer this node asked for ended: `code` is `ok` or why it failed.
    pub fn transfer_ended(&self, peer: &str, dataset: &str, purpose: &str, code: &str, started: Instant) {
        let l = self.labels(peer, dataset, purpose, code);
        self.transfers.get_or_create(&l).inc();
        self.transfer_seconds.get_or_create(&l).observe(started.elapsed().as_secs_f64());
    }

    /// An authenticated inbound connection.
    pub fn connection_accepted(&self, peer: &str) {
        self.connections.get_or_create(&PeerLabels { peer: peer.into() }).inc();
    }

    /// A peer certificate refused at the handshake.
    pub fn certificate_rejected(&self) {
        self.certs_rejected.inc();
    }

    /// Sets the sharing-request gauges from the requests as the store holds them now (read at
    /// each scrape: they are states, not events, and survive restarts).
    pub fn set_requests(&self, held: &[crate::governance::store::Held]) {
        self.requests.clear();
        self.requests_overdue.clear();
        for h in held {
            let role = h.role.as_str().to_owned();
            let labels = RequestLabels { role: role.clone(), state: h.state.as_str().to_owned() };
            self.requests.get_or_create(&labels).inc();
            if h.overdue {
                self.requests_overdue.get_or_create(&RequestLabels { role, state: "pending".into() }).inc();
            }
        }
    }

    /// Sets the referral and objection gauges from the statistics rows counted from the stores
    /// now (read at each scrape, like the request gauges); at most [`MAX_SERIES`] rows.
    pub fn set_governance(&self, rows: &[crate::governance::stats::Row]) {
        self.referrals.clear();
        self.objections.clear();
        for r in rows.iter().take(MAX_SERIES) {
            let labels = |status: &str| ExchangeStateLabels {
                dataset: r.dataset.clone(),
                peer: r.peer.clone(),
                status: status.into(),
            };
            let counts = [
                (&self.referrals, "open", r.referrals_open),
                (&self.referrals, "closed", r.referrals_closed),
                (&self.objections, "open", r.objections_open),
                (&self.objections, "closed", r.objections_closed),
            ];
            for (family, status, n) in counts {
                if n > 0 {
                    family.get_or_create(&labels(status)).set(i64::try_from(n).unwrap_or(i64::MAX));
                }
            }
        }
    }

    /// OpenMetrics text, after reading the gauges from `files` as of `now`.
    pub fn render(&self, files: &Observed<'_>, now: SystemTime) -> String {
        self.cert_expiry.set(cert_expiry(files.cert).unwrap_or(0.0));
        let last = checkpoint_time(files.audit_dir);
        self.checkpoint_time.set(last.map_or(0.0, unix));
        let age = last.map_or(-1.0, |t| now.duration_since(t).unwrap_or(Duration::ZERO).as_secs_f64());
        self.checkpoint_age.set(age);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The files the gauges are read from at each scrape.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// The node certificate (PEM; the first certificate is the node's).
    pub cert: &'a Path,
    /// The audit log folder.
    pub audit_dir: &'a Path,
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs_f64()
}

fn cert_expiry(path: &Path) -> Option<f64> {
    let certs = fedgate_certs::store::read_certs(path).ok()?;
    let info = fedgate_certs::inspect::parse(certs.first()?).ok()?;
    Some(info.not_after.unix_timestamp() as f64)
}

/// The checkpoints file is appended to only when a checkpoint is signed, so its modification
/// time is the last checkpoint's, across restarts, without reading the log.
fn checkpoint_time(audit_dir: &Path) -> Option<SystemTime> {
    let meta = std::fs::metadata(audit_dir.join(fedgate_audit::log::CHECKPOINTS)).ok()?;
    (meta.len() > 0).then(|| meta.modified().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(m: &Metrics, files: &Observed<'_>) -> (String, prometheus_parse::Scrape) {
        let text = m.render(files, SystemTime::now());
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let parsed = prometheus_parse::Scrape::parse(lines).expect("exposition parses");
        (text, parsed)
    }

    fn value(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        s.samples
            .iter()
            .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
            .map(|x| match &x.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => *v,
                prometheus_parse::Value::Histogram(b) => b.last().map_or(0.0, |b| b.count),
                prometheus_parse::Value::Summary(_) => f64::NAN,
            })
    }

    #[test]
    fn referral_and_objection_gauges_count_open_and_closed_per_dataset_and_peer() {
        let m = Metrics::new();
        let row = crate::governance::stats::Row {
            dataset: "petitions".into(),
            peer: "mediation-center@wuxi".into(),
            objections_open: 2,
            objections_closed: 1,
            referrals_closed: 3,
            ..Default::default()
        };
        m.set_governance(&[row]);
        let files = Observed { cert: Path::new("/nonexistent"), audit_dir: Path::new("/nonexistent") };
        let (text, s) = scrape(&m, &files);
        let at = |status| [("dataset", "petitions"), ("peer", "mediation-center@wuxi"), ("status", status)];
        assert_eq!(value(&s, "fedgate_objections", &at("open")), Some(2.0), "{text}");
        assert_eq!(value(&s, "fedgate_objections", &at("closed")), Some(1.0), "{text}");
        assert_eq!(value(&s, "fedgate_referrals", &at("closed")), Some(3.0), "{text}");
        assert_eq!(value(&s, "fedgate_referrals", &at("open")), None, "no zero series");
        m.set_governance(&[]);
        let (_, s) = scrape(&m, &files);
        assert_eq!(value(&s, "fedgate_objections", &at("open")), None, "cleared at each scrape");
    }

    fn nowhere() -> Observed<'static> {
        Observed { cert: Path::new("/nonexistent/node.crt"), audit_dir: Path::new("/nonexistent/audit") }
    }

    #[test]
    fn exposition_parses_with_labels_histograms_and_build_info() {
        let m = Metrics::new();
        let t = Instant::now();
        let peer = "police@wuxi.liangxi";
        m.query_ended(peer, "family-disputes", "dispute-mediation", "ok", 42, t);
        m.query_refused(peer, "family-disputes", "law \"enforcement\"\n", ErrorCode::Denied, t);
        let decided: Result<u8, ()> = m.time_decision(|| Ok(7));
        assert_eq!(decided, Ok(7));
        m.transfer_ended("court@wuxi.xinwu", "cases", "dispute-mediation", "ok", t);
        m.records_received("court@wuxi.xinwu", "cases", "dispute-mediation", 5);
        m.connection_accepted(peer);
        m.certificate_rejected();
        let (text, s) = scrape(&m, &nowhere());
        assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
        let ok = [("peer", peer), ("dataset", "family-disputes"), ("code", "ok")];
        assert_eq!(value(&s, "fedgate_queries_total", &ok), Some(1.0), "{text}");
        assert_eq!(value(&s, "fedgate_records_sent_total", &ok), Some(42.0), "{text}");
        let denied = [("code", "denied"), ("purpose", "law \\\"enforcement\\\"\\n")];
        assert_eq!(value(&s, "fedgate_queries_total", &denied), Some(1.0), "{text}");
        assert_eq!(value(&s, "fedgate_query_duration_seconds", &ok), Some(1.0), "{text}");
        assert_eq!(value(&s, "fedgate_decision_duration_seconds", &[]), Some(1.0), "{text}");
        assert_eq!(value(&s, "fedgate_transfers_total", &[("code", "ok")]), Some(1.0), "{text}");
        assert_eq!(value(&s, "fedgate_records_received_total", &[("dataset", "cases")]), Some(5.0));
        assert_eq!(value(&s, "fedgate_connections_accepted_total", &[("peer", peer)]), Some(1.0));
        assert_eq!(value(&s, "fedgate_peer_certificates_rejected_total", &[]), Some(1.0));
        let version = [("version", env!("CARGO_PKG_VERSION"))];
        assert_eq!(value(&s, "fedgate_build_info", &version), Some(1.0), "{text}");
        assert_eq!(value(&s, "fedgate_certificate_expiry_timestamp_seconds", &[]), Some(0.0));
        assert_eq!(value(&s, "fedgate_audit_checkpoint_age_seconds", &[]), Some(-1.0));
        // Every histogram has a +Inf bucket equal to its count.
        assert!(text.contains("fedgate_decision_duration_seconds_bucket{le=\"+Inf\"} 1"), "{text}");
    }

    #[test]
    fn gauges_come_from_the_certificate_and_the_checkpoints_file() {
        let dir = tempfile::tempdir().unwrap();
        let now = time::OffsetDateTime::now_utc();
        let region: fedgate_catalog::Region = "wuxi".parse().unwrap();
        let root = fedgate_certs::authority::Authority::new_root(&region, now, 30).unwrap();
        let node: fedgate_catalog::NodeId = "police@wuxi".parse().unwrap();
        let issued = root.issue_node(&node, fedgate_certs::authority::NodeProfile::gateway(now, 10)).unwrap();
        fedgate_certs::store::write_node(&dir.path().join("tls"), &issued, root.root(), false).unwrap();
        let audit = dir.path().join("audit");
        std::fs::create_dir_all(&audit).unwrap();
        std::fs::write(audit.join(fedgate_audit::log::CHECKPOINTS), b"note").unwrap();
        let cert = dir.path().join("tls/node.crt");
        let m = Metrics::new();
        let (text, s) = scrape(&m, &Observed { cert: &cert, audit_dir: &audit });
        let expiry = value(&s, "fedgate_certificate_expiry_timestamp_seconds", &[]).unwrap();
        let want = (now + time::Duration::days(10)).unix_timestamp() as f64;
        assert!((expiry - want).abs() < 120.0, "expiry {expiry}, want ~{want}\n{text}");
        let age = value(&s, "fedgate_audit_checkpoint_age_seconds", &[]).unwrap();
        assert!((0.0..60.0).contains(&age), "age {age}");
        assert!(value(&s, "fedgate_audit_checkpoint_timestamp_seconds", &[]).unwrap() > 1.7e9);
    }

    #[test]
    fn peer_chosen_names_cannot_grow_the_series_without_bound() {
        let m = Metrics::new();
        let t = Instant::now();
        for i in 0..MAX_SERIES + 500 {
            m.query_refused("police@wuxi", &format!("made-up-{i}"), "p", ErrorCode::UnknownDataset, t);
        }
        let (text, s) = scrape(&m, &nowhere());
        let series = s.samples.iter().filter(|x| x.metric == "fedgate_queries_total").count();
        assert_eq!(series, MAX_SERIES + 1, "{} series", series);
        assert_eq!(
            value(&s, "fedgate_queries_total", &[("dataset", "_other")]),
            Some(500.0),
            "{}",
            &text[..200]
        );
    }
}
