//! `fedgate stats`: usage statistics per dataset and peer, read from the node's own audit log
//! (with its key) and state folder (sharing requests, subscriptions, referrals, objections). Runs beside a running
//! gateway or without one: both stores are SQLite files read as they stand.

use std::path::PathBuf;

use crate::audit_cli::{parse_time, Bound};
use crate::config;
use crate::governance::stats::{table, Counter, Row};

/// Output of `fedgate stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns, one line per dataset and peer.
    Table,
    /// A JSON array of rows.
    Json,
}

/// `fedgate stats`.
#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// This node's gateway.toml.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Count from this moment: YYYY-MM-DD (its start, China Standard Time) or RFC 3339.
    #[arg(long, value_name = "T")]
    pub since: Option<String>,
    /// Output.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

type Res = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// The statistics of the node configured at `config`, counted from `since_ms`.
pub fn collect(
    cfg: &config::Config,
    since_ms: Option<i64>,
) -> Result<Vec<Row>, Box<dyn std::error::Error + Send + Sync>> {
    let mut c = Counter::new(since_ms);
    let reader = fedgate_audit::AuditKeys::load_reader(&cfg.audit_key)?;
    fedgate_audit::entries(&cfg.audit_dir, &reader, |e| {
        c.add_entry(&e);
        Ok(())
    })?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    // A node that never made or took a request has no store: nothing to count, nothing created.
    let requests = cfg.state_dir.join("requests.db");
    if requests.exists() {
        for h in crate::governance::store::RequestStore::open(&requests)?.list(None, now)? {
            c.add_request(&h);
        }
    }
    let subs = cfg.state_dir.join("subscriptions.db");
    if subs.exists() {
        for s in crate::subscriptions::SubscriptionStore::open(&subs)?.list()? {
            c.add_subscription(&s.dataset, &s.peer, s.created);
        }
    }
    let referrals = cfg.state_dir.join("referrals.db");
    if referrals.exists() {
        let store = crate::referrals::ReferralStore::open(&referrals, &cfg.node)?;
        for r in store.list(now)? {
            let dataset = store.case(&r.exchange)?.map_or_else(|| "-".to_owned(), |c| c.dataset);
            c.add_referral(&dataset, &r.peer, r.state.is_open(), r.created);
        }
    }
    let objections = cfg.state_dir.join("objections.db");
    if objections.exists() {
        for f in crate::governance::objection_store::ObjectionStore::open(&objections)?.list(None)? {
            c.add_objection(&f);
        }
    }
    Ok(c.rows())
}

/// The referral and objection counts of a running node, from its open stores: what /metrics
/// shows at each scrape.
pub fn governance_rows(
    shared: &crate::state::Shared,
    now: i64,
) -> Result<Vec<Row>, Box<dyn std::error::Error + Send + Sync>> {
    let mut c = Counter::new(None);
    for r in shared.referrals.list(now)? {
        let dataset = shared.referrals.case(&r.exchange)?.map_or_else(|| "-".to_owned(), |c| c.dataset);
        c.add_referral(&dataset, &r.peer, r.state.is_open(), r.created);
    }
    for f in shared.objections.list(None)? {
        c.add_objection(&f);
    }
    Ok(c.rows())
}

/// Runs `fedgate stats`.
pub fn run(a: StatsArgs) -> Res {
    let cfg = config::load(&a.config)?;
    let since = a.since.as_deref().map(|t| parse_time(t, Bound::Start)).transpose()?;
    let rows = collect(&cfg, since)?;
    match a.format {
        Format::Json => println!("{}", serde_json::to_string(&rows)?),
        Format::Table => print!("{}", table(&rows)),
    }
    Ok(())
}
