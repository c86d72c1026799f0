//! `fedgate check`: everything `serve` would load, checked without serving, every problem
//! reported. Config, catalog, grants, secret files and their modes, certificates and CRLs (with
//! expiry warnings), sources against the catalog, and a handshake plus hello with each peer.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use std::net::SocketAddr;

use fedgate_catalog::{Catalog, NodeId};
use fedgate_certs::{inspect, store};
use time::OffsetDateTime;

use crate::config::{self, Config, ConfigError};
use crate::state;

/// Certificates that run out within this many days are warned about.
pub const EXPIRY_WARNING_DAYS: i64 = 30;
/// CRLs due to be replaced within this many days are warned about. Shorter than for
/// certificates: CRLs are re-issued every 30 days by design, so 30 would always warn.
pub const CRL_WARNING_DAYS: i64 = 7;
/// How long each peer may take to answer the handshake and hello.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(5);

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// `serve` would fail, or would run in a way the operator must fix.
    Error,
    /// Works now, needs attention soon (an expiry, a source that is down).
    Warning,
}

/// One thing `fedgate check` found, already worded: `FILE:LINE:COL: message`, `FILE: message`
/// or `peer NODE at ADDR: why`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Error or warning.
    pub severity: Severity,
    /// What, and where.
    pub text: String,
}

#[derive(Default)]
struct Findings(Vec<Finding>);

impl Findings {
    fn error(&mut self, text: impl Into<String>) {
        self.0.push(Finding { severity: Severity::Error, text: text.into() });
    }

    fn warn(&mut self, text: impl Into<String>) {
        self.0.push(Finding { severity: Severity::Warning, text: text.into() });
    }

    /// Located diagnostics, one finding each.
    fn errors(&mut self, d: &fedgate_catalog::Diagnostics) {
        for problem in &d.0 {
            self.error(problem.to_string());
        }
    }

    /// A node's load error: its located problems one finding each when it has them, else one.
    fn load_error(&mut self, e: &state::NodeError) {
        let located = match e {
            state::NodeError::Catalog(c) => c.diagnostics(),
            state::NodeError::Policy(g) => g.diagnostics(),
            state::NodeError::Config(d) => Some(d),
            _ => None,
        };
        match located {
            Some(d) => self.errors(d),
            None => self.error(e.to_string()),
        }
    }
}

/// Checks the node whose config is at `path`, as of `now`; with `dial_peers`, also reaches each
/// peer. Does not bind the node's own addresses, so it also runs beside a running gateway.
pub async fn run(path: &Path, now: OffsetDateTime, dial_peers: bool) -> Vec<Finding> {
    let mut f = Findings::default();
    let cfg = match config::load(path) {
        Ok(c) => c,
        Err(ConfigError::Invalid(d)) => {
            f.errors(&d);
            return f.0;
        }
        Err(e) => {
            f.error(e.to_string());
            return f.0;
        }
    };
    let catalog = match state::load_catalog(&cfg) {
        Ok(c) => Some(c),
        Err(e) => {
            f.load_error(&e);
            None
        }
    };
    grants(&cfg, catalog.as_ref(), &mut f);
    match crate::calendar::for_config(&cfg) {
        Ok(_) => {}
        Err(crate::calendar::CalendarError::Invalid(d)) => f.errors(&d),
        Err(e) => f.error(e.to_string()),
    }
    secrets(&cfg, &mut f);
    console(&cfg, &mut f);
    let identity = certificates(&cfg, now, &mut f);
    // Without a valid catalog every source would look wrong: one mistake, one error.
    if let Some(catalog) = &catalog {
        let checked = crate::sources::check_all(&cfg, catalog).await;
        for d in checked.problems {
            f.error(d.to_string());
        }
        for (dataset, why) in checked.unreachable {
            f.warn(format!(
                "{}: source of dataset `{dataset}` unreachable, not checked against the catalog (queries are refused until it answers): {why}",
                cfg.path.display()
            ));
        }
    }
    let listed = identity.as_ref().map_or_else(Vec::new, |id| directory(&cfg, id, now, &mut f));
    if let (Some(id), true) = (identity, dial_peers) {
        peers(&cfg, id, &listed, &mut f).await;
    }
    f.0
}

/// Verifies the `directory` file (and the directory the node holds from peers) against the
/// federation root; returns the peers it lists that `[[peers]]` does not override.
fn directory(
    cfg: &Config,
    id: &state::Identity,
    now: OffsetDateTime,
    f: &mut Findings,
) -> Vec<(NodeId, SocketAddr)> {
    let root = id.trust.root();
    let mut view = fedgate_certs::directory::View::default();
    if cfg.directory_state.exists() {
        match crate::directory::load_view(&cfg.directory_state, root, &id.revocations, now) {
            Ok(v) => view = v,
            Err(why) => f.warn(format!("{}: ignored at start: {why}", cfg.directory_state.display())),
        }
    }
    if let Some(file) = &cfg.directory {
        match crate::directory::load_view(file, root, &id.revocations, now) {
            Ok(v) => view = view.merge(&v).view,
            Err(why) => f.error(format!("{}: {why}", file.display())),
        }
    }
    view.entries()
        .into_iter()
        .filter(|e| e.node != cfg.node && cfg.peer(&e.node).is_none())
        .map(|e| (e.node.clone(), e.address))
        .collect()
}

fn grants(cfg: &Config, catalog: Option<&Catalog>, f: &mut Findings) {
    match catalog {
        Some(c) => {
            if let Err(e) = state::load_policy(cfg, c) {
                f.load_error(&e);
            }
        }
        // The catalog is broken: check the grants on their own, not against dataset ids that
        // failed to load.
        None => {
            let mut texts = Vec::new();
            for p in &cfg.grants {
                match std::fs::read_to_string(p) {
                    Ok(t) => texts.push((p.display().to_string(), t)),
                    Err(e) => f.error(format!("{}: {e}", p.display())),
                }
            }
            let refs: Vec<(&str, &str)> = texts.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
            if let Err(d) = fedgate_policy::parse_grants(&refs, None) {
                f.errors(&d);
            }
        }
    }
}

/// Secrets the node creates at first start: each must be private and non-empty if it exists.
fn secrets(cfg: &Config, f: &mut Findings) {
    for p in [&cfg.masking_key, &cfg.api_token, &cfg.audit_key, &cfg.audit_signing_key] {
        match std::fs::metadata(p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => f.warn(format!(
                "{}: does not exist yet; serve creates it (mode 0600) at first start",
                p.display()
            )),
            Err(e) => f.error(format!("{}: {e}", p.display())),
            Ok(m) => {
                if m.len() == 0 {
                    f.error(format!(
                        "{}: the file exists but is empty; put the secret back, or delete the file to have a new one generated at start",
                        p.display()
                    ));
                }
                mode_0600(p, &m, f);
            }
        }
    }
}

#[cfg(unix)]
fn mode_0600(p: &Path, m: &std::fs::Metadata, f: &mut Findings) {
    use std::os::unix::fs::PermissionsExt;
    let mode = m.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        f.error(format!("{}: readable by others (mode {mode:o}); run chmod 600", p.display()));
    }
}

#[cfg(not(unix))]
fn mode_0600(_: &Path, _: &std::fs::Metadata, _: &mut Findings) {}

/// The console: its account file opens, and it has accounts (else no one can log in); one on
/// an address other than loopback is plain HTTP, so it is warned about.
fn console(cfg: &Config, f: &mut Findings) {
    use crate::console::accounts::AccountStore;
    let Some(addr) = cfg.console else { return };
    let at = |m: String| cfg.diagnostic(cfg.console_at, m).to_string();
    let path = AccountStore::path_in(&cfg.state_dir);
    if !path.exists() {
        f.warn(at("`console` is on but has no accounts yet: add one with `fedgate user add`".into()));
    } else {
        match AccountStore::open(&path).and_then(|s| s.list()) {
            Ok(l) if l.is_empty() => {
                f.warn(at("`console` is on but has no accounts: add one with `fedgate user add`".into()))
            }
            Ok(_) => {}
            Err(e) => f.error(at(format!("`console`: the account file cannot be read: {e}"))),
        }
    }
    if !addr.ip().is_loopback() {
        f.warn(at(format!(
            "`console` {addr} is not a loopback address: the console speaks plain HTTP, so put a TLS reverse proxy in front of it"
        )));
    }
}

/// The node's identity as serve loads it, plus expiry warnings for every certificate and CRL.
fn certificates(cfg: &Config, now: OffsetDateTime, f: &mut Findings) -> Option<state::Identity> {
    let id = match state::load_identity(cfg) {
        Ok(id) => Some(id),
        Err(e) => {
            f.error(e.to_string());
            None
        }
    };
    for file in [&cfg.tls.cert, &cfg.tls.trust] {
        let Ok(certs) = store::read_certs(file) else { continue };
        for (i, c) in certs.iter().enumerate() {
            let Ok(info) = inspect::parse(c) else { continue };
            let days = (info.not_after - now).whole_days();
            if days < EXPIRY_WARNING_DAYS && info.not_after > now {
                f.warn(format!(
                    "{}: certificate {} ({}) expires in {days} days, on {}; renew it and the gateway picks it up without a restart",
                    file.display(),
                    i + 1,
                    info.subject,
                    info.not_after.date()
                ));
            }
        }
    }
    for file in &cfg.tls.crls {
        let next =
            store::read_crl(file).map_err(|e| e.to_string()).and_then(|crl| inspect::crl_next_update(&crl));
        match next {
            // load_identity already reported an unreadable CRL.
            Err(_) | Ok(None) => {}
            Ok(Some(t)) if t <= now => f.warn(format!(
                "{}: this revocation list was due to be replaced on {}; get the current one from its CA",
                file.display(),
                t.date()
            )),
            Ok(Some(t)) if (t - now).whole_days() < CRL_WARNING_DAYS => f.warn(format!(
                "{}: this revocation list is due to be replaced on {}",
                file.display(),
                t.date()
            )),
            Ok(Some(_)) => {}
        }
    }
    id
}

/// Dials every peer (`[[peers]]`, then the directory's `listed`) from a throw-away endpoint
/// with the node's identity and checks the hello, concurrently.
async fn peers(cfg: &Config, id: state::Identity, listed: &[(NodeId, SocketAddr)], f: &mut Findings) {
    let all: Vec<(NodeId, SocketAddr)> =
        cfg.peers.iter().map(|p| (p.node.clone(), p.address)).chain(listed.iter().cloned()).collect();
    if all.is_empty() {
        return;
    }
    let verifier = fedgate_certs::tls::FederationVerifier::new(id.trust);
    let local = std::net::SocketAddr::new(cfg.listen.ip(), 0);
    let link = match crate::link::Link::bind(cfg.node.clone(), local, verifier, id.chain, id.key) {
        Ok(l) => Arc::new(l),
        Err(e) => {
            f.error(format!("cannot open a QUIC endpoint to reach the peers: {e}"));
            return;
        }
    };
    let dials = all.iter().map(|(node, address)| {
        let link = link.clone();
        async move {
            let r = tokio::time::timeout(PEER_TIMEOUT, link.connection(node, *address)).await;
            (node, address, r)
        }
    });
    for (node, address, r) in futures::future::join_all(dials).await {
        match r {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => f.error(format!("peer {node} at {address}: {e}")),
            Err(_) => f.error(format!(
                "peer {node} at {address}: no handshake within {PEER_TIMEOUT:?} (is it running, and is UDP {} open?)",
                address.port()
            )),
        }
    }
    link.shutdown().await;
}
