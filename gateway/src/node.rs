//! A running gateway: starts everything a node is (the QUIC link and its serving tasks, the
//! local API, the reload loops) from its config, and stops it. The top of the gateway's layers:
//! it depends on the state ([`crate::state`]), the drivers ([`crate::quic`]) and the local API
//! ([`crate::api`]); nothing below depends on it.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use fedgate_catalog::NodeId;
use fedgate_certs::tls::FederationVerifier;
use fedgate_certs::Role;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::link::{Link, PeerConnection};
use crate::quic::serve::{accept_loop, record_rejections, rejection_summaries};
use crate::state::{file_err, reload};
use fedgate_audit::{AuditKeys, AuditLog, Entry, Kind};

pub use crate::quic::serve::{answer_request, MAX_HANDSHAKES};
pub use crate::state::{
    check_sources, load_catalog, load_identity, load_policy, reload_identity, Identity, NodeError, Shared,
};
pub use crate::wire::limits::REQUEST_TIMEOUT;

/// A started node.
pub struct RunningNode {
    shared: Arc<Shared>,
    api_addr: std::net::SocketAddr,
    console_addr: Option<std::net::SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

/// Sockets bound before the node starts, used instead of binding the configured addresses.
/// The demo binds every node's ports while it builds the federation and keeps them: a port
/// chosen, released and bound again later can be taken in between by any other process.
#[derive(Debug, Default)]
pub struct Prebound {
    /// For `listen`.
    pub quic: Option<std::net::UdpSocket>,
    /// For `api`.
    pub api: Option<std::net::TcpListener>,
    /// For `console`.
    pub console: Option<std::net::TcpListener>,
}

fn into_tokio(l: std::net::TcpListener) -> std::io::Result<tokio::net::TcpListener> {
    l.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(l)
}

impl RunningNode {
    /// Loads identity and catalog, binds the QUIC endpoint and the local API, starts serving.
    pub async fn start(cfg: Config) -> Result<RunningNode, NodeError> {
        RunningNode::start_on(cfg, Prebound::default()).await
    }

    /// [`RunningNode::start`] serving on sockets already bound where `sockets` has them.
    pub async fn start_on(cfg: Config, sockets: Prebound) -> Result<RunningNode, NodeError> {
        let id = load_identity(&cfg)?;
        let catalog = load_catalog(&cfg)?;
        // The managed grants file is rewritten from the request store first: a steward's
        // decision stored just before a crash is in force after the restart, whatever the file
        // held then.
        let requests =
            Arc::new(crate::governance::store::RequestStore::open(&cfg.state_dir.join("requests.db"))?);
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        crate::governance::store::write_grants_file(
            &cfg.approved_grants,
            &requests.approved_grants(&cfg.node, now)?,
        )?;
        let policy = load_policy(&cfg, &catalog)?;
        let checked = check_sources(&cfg, &catalog).await?;
        let secret = |p: &std::path::Path| crate::secret::ensure(p).map_err(|e| file_err(p, e.to_string()));
        let token = secret(&cfg.api_token)?;
        let masking = secret(&cfg.masking_key)?;
        let keys = AuditKeys::load_or_create(&cfg.audit_key, &cfg.audit_signing_key)?
            .with_auditors(crate::audit_trust::read_auditors(&cfg).map_err(|(p, why)| file_err(&p, why))?);
        let origin = fedgate_audit::origin(&cfg.node);
        let audit_key = fedgate_audit::checkpoint::verifier_key(&origin, &keys.public_key());
        let (audit, recovery) =
            AuditLog::open_with(&cfg.audit_dir, &origin, keys, crate::audit_trust::log_options(&cfg))?;
        let (directory, directory_queue) = crate::directory::NodeDirectory::load(
            cfg.directory.as_deref(),
            &cfg.directory_state,
            id.trust.root().clone(),
            id.revocations.clone(),
            time::OffsetDateTime::now_utc(),
        )
        .map_err(|(path, why)| file_err(&path, why))?;
        let verifier = FederationVerifier::new(id.trust);
        let me = cfg.node.clone();
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let (m, log) = (metrics.clone(), audit.clone());
        verifier.set_observer(move |r| {
            m.certificate_rejected();
            // Inbound refusals are logged and audited by the accept loop, aggregated per source
            // and reason: anyone can send handshakes, so one entry each would let a flood fill
            // the disk.
            if r.role == Role::Client {
                return;
            }
            tracing::warn!(node = %me, role = ?r.role, claimed = %r.claimed, error = %r.error, "peer certificate rejected");
            // Inside the handshake: queue the entry, do not wait for the disk.
            log.append_later(Entry {
                kind: Some(Kind::CertReject),
                actor: me.to_string(),
                counterpart: Some(r.claimed.clone()),
                decision: Some("deny".into()),
                reason: Some(format!("{:?} certificate refused: {}", r.role, r.error)),
                ..Entry::default()
            });
        });
        let signer = fedgate_certs::sign::NodeSigner::new(&id.key)
            .map_err(|e| file_err(&cfg.tls.key, e.to_string()))?;
        // Auditors trust the audit key only through this statement by the node's certificate.
        crate::audit_trust::ensure_statement(
            &cfg.audit_dir,
            &cfg.node,
            &audit_key,
            recovery.entries,
            &id.chain,
            &signer,
        )
        .map_err(|why| file_err(&cfg.audit_dir, format!("cannot sign the audit key statement: {why}")))?;
        let link = Arc::new(match sockets.quic {
            Some(socket) => Link::on_socket(cfg.node.clone(), socket, verifier, id.chain, id.key)?,
            None => Link::bind(cfg.node.clone(), cfg.listen, verifier, id.chain, id.key)?,
        });
        // Peers, API clients, sources and audit files all need descriptors; the usual soft
        // limit (1024) is far below the hard one.
        if let Err(e) = crate::api_serve::raise_fd_limit() {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
        }
        let api_listener = match sockets.api {
            Some(l) => into_tokio(l),
            None => crate::api_serve::bind(cfg.api),
        }
        .map_err(|e| NodeError::Api { addr: cfg.api, why: e.to_string() })?;
        let api_addr =
            api_listener.local_addr().map_err(|e| NodeError::Api { addr: cfg.api, why: e.to_string() })?;
        let console = match cfg.console {
            Some(addr) => Some(start_console(&cfg, addr, sockets.console).await?),
            None => None,
        };
        let events =
            Arc::new(crate::events::EventLog::open(&cfg.state_dir.join("events.db"), cfg.events_backlog)?);
        let subscriptions =
            Arc::new(crate::subscriptions::SubscriptionStore::open(&cfg.state_dir.join("subscriptions.db"))?);
        let referrals =
            Arc::new(crate::referrals::ReferralStore::open(&cfg.state_dir.join("referrals.db"), &cfg.node)?);
        let calendar = crate::calendar::for_config(&cfg)?;
        let objections = Arc::new(crate::governance::objection_store::ObjectionStore::open(
            &cfg.state_dir.join("objections.db"),
        )?);
        let marks = crate::governance::objection::Marks::load(objections.open_marks()?);
        let shared = Arc::new(Shared {
            cfg,
            link: link.clone(),
            catalog_digest: RwLock::new(catalog.digest().into()),
            catalog: RwLock::new(Arc::new(catalog)),
            policy: RwLock::new(Arc::new(policy)),
            masking_secret: masking.into_bytes(),
            signer: crate::identity::Signers::new(signer),
            quotas: Default::default(),
            metrics,
            audit,
            sources: Default::default(),
            admission: Arc::default(),
            directory,
            inbound: Default::default(),
            events,
            subscriptions,
            referrals,
            calendar,
            requests,
            arrivals: Default::default(),
            objections,
            marks,
        });
        shared.sources.reset(&checked.unreachable);
        let mut start = shared.audit_entry(Kind::Start);
        start.detail = Some(format!(
            "listen {}, {} datasets, {} grants; log had {} entries{}",
            shared.cfg.listen,
            shared.catalog().datasets().len(),
            shared.policy().grants().grants.len(),
            recovery.entries,
            if recovery.torn_bytes > 0 {
                format!(", cut a torn final entry of {} bytes", recovery.torn_bytes)
            } else {
                String::new()
            }
        ));
        shared.audit.append(start).await?;
        let mut tasks = vec![
            tokio::spawn(accept_loop(shared.clone())),
            tokio::spawn(rejection_summaries(shared.clone())),
            tokio::spawn(reload_loop(shared.clone())),
            tokio::spawn(crate::api::serve(api_listener, shared.clone(), token)),
            tokio::spawn(crate::quic::directory::sync_loop(shared.clone(), directory_queue)),
            tokio::spawn(crate::quic::subscription::keep_subscribed(shared.clone())),
            tokio::spawn(crate::quic::referral::deliver_loop(shared.clone())),
            tokio::spawn(crate::poller::poll_sources(shared.clone())),
            tokio::spawn(crate::quic::request::keep_asking(shared.clone())),
            tokio::spawn(crate::quic::objection::keep_asking(shared.clone())),
        ];
        let console_addr = console.as_ref().and_then(|(l, _)| l.local_addr().ok());
        if let Some((listener, accounts)) = console {
            tasks.push(tokio::spawn(crate::console::serve(listener, shared.clone(), accounts)));
        }
        // Peers that took in a newer directory while this node was down hand it over now.
        crate::quic::directory::announce(&shared);
        tracing::info!(
            node = %shared.cfg.node,
            quic = %link.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            api = %api_addr,
            "gateway listening"
        );
        Ok(RunningNode { shared, api_addr, console_addr, tasks })
    }

    /// The web console's address actually bound, if the config asks for a console.
    pub fn console_addr(&self) -> Option<std::net::SocketAddr> {
        self.console_addr
    }

    /// The QUIC address actually bound.
    pub fn quic_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.shared.link.local_addr()
    }

    /// The local API address actually bound.
    pub fn api_addr(&self) -> std::net::SocketAddr {
        self.api_addr
    }

    /// The link, for callers that talk to peers.
    pub fn link(&self) -> &Arc<Link> {
        &self.shared.link
    }

    /// The node's config.
    pub fn config(&self) -> &Config {
        &self.shared.cfg
    }

    /// State shared with the node's tasks.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Connects to a configured peer (or reuses the connection) and returns it.
    pub async fn peer(&self, node: &NodeId) -> Result<PeerConnection, NodeError> {
        self.shared.peer(node).await
    }

    /// Re-reads the CRLs now; returns how many live connections were closed.
    pub async fn reload_trust(&self) -> Result<usize, NodeError> {
        reload(&self.shared).await
    }

    /// Re-reads the catalog and grants now (see [`Shared::reload_rules`]).
    pub async fn reload_rules(&self) -> Result<(), NodeError> {
        self.shared.reload_rules().await
    }

    /// Re-reads the node's own certificate and key now (see [`reload_identity`]).
    pub async fn reload_identity(&self) -> Result<bool, NodeError> {
        reload_identity(&self.shared).await
    }

    /// Stops serving, closes every connection, records the stop and signs a final checkpoint.
    pub async fn shutdown(self) {
        for t in &self.tasks {
            t.abort();
        }
        self.shared.link.shutdown().await;
        record_rejections(&self.shared, true).await;
        let stop = self.shared.audit_entry(Kind::Stop);
        if let Err(e) = self.shared.audit.append(stop).await {
            tracing::error!(error = %e, "recording the stop in the audit log failed");
        }
        if let Err(e) = self.shared.audit.close().await {
            tracing::error!(error = %e, "final audit checkpoint failed");
        }
    }
}

/// Binds the console and opens its accounts; either failing stops the start, naming which.
async fn start_console(
    cfg: &Config,
    addr: std::net::SocketAddr,
    bound: Option<std::net::TcpListener>,
) -> Result<(tokio::net::TcpListener, Arc<crate::console::accounts::AccountStore>), NodeError> {
    let err = |why: String| NodeError::Console { addr, why };
    let path = crate::console::accounts::AccountStore::path_in(&cfg.state_dir);
    let accounts = crate::console::accounts::AccountStore::open(&path).map_err(|e| err(e.to_string()))?;
    let listener = match bound {
        Some(l) => into_tokio(l),
        None => crate::console::bind(addr).await,
    }
    .map_err(|e| err(e.to_string()))?;
    Ok((listener, Arc::new(accounts)))
}

fn mtimes(paths: &[PathBuf]) -> Vec<Option<SystemTime>> {
    paths.iter().map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok()).collect()
}

async fn reload_loop(shared: Arc<Shared>) {
    let crls = shared.cfg.tls.crls.clone();
    let managed = std::iter::once(&shared.cfg.approved_grants);
    let rules: Vec<PathBuf> =
        shared.cfg.catalog.iter().chain(&shared.cfg.grants).chain(managed).cloned().collect();
    let mut seen = mtimes(&crls);
    let mut seen_rules = mtimes(&rules);
    let own = [shared.cfg.tls.cert.clone(), shared.cfg.tls.key.clone()];
    let mut seen_own = mtimes(&own);
    let directory: Vec<PathBuf> = shared.cfg.directory.iter().cloned().collect();
    let mut seen_directory = mtimes(&directory);
    let mut tick = tokio::time::interval(shared.cfg.reload_interval);
    loop {
        tick.tick().await;
        shared.recheck_sources().await;
        let now_directory = mtimes(&directory);
        if now_directory != seen_directory {
            seen_directory = now_directory;
            reload_directory(&shared).await;
        }
        let now_rules = mtimes(&rules);
        if now_rules != seen_rules {
            seen_rules = now_rules;
            if let Err(e) = shared.reload_rules().await {
                tracing::error!(error = %e, "catalog/grants changed but do not load; the previous rules stay in force");
            }
        }
        let now_own = mtimes(&own);
        if now_own != seen_own {
            // A new file that does not load is reported once; writing it again retries.
            seen_own = now_own;
            if let Err(e) = reload_identity(&shared).await {
                tracing::error!(error = %e, "node certificate/key changed but do not load; the previous ones stay in use");
            }
        }
        let now = mtimes(&crls);
        if now != seen {
            match reload(&shared).await {
                Ok(_) => seen = now,
                // Keep the old lists and retry next tick: a half-written file is not a reason to
                // stop checking revocation.
                Err(e) => {
                    tracing::warn!(error = %e, "revocation list reload failed; keeping the previous lists")
                }
            }
        }
    }
}

/// Takes in the operator's directory file if it holds something newer; a file that does not
/// verify is reported and the directory in force kept.
async fn reload_directory(shared: &Arc<Shared>) {
    let Some(file) = &shared.cfg.directory else { return };
    match crate::directory::read_bundle(file) {
        Ok(bundle) => crate::quic::directory::install(shared, &bundle, &file.display().to_string()).await,
        Err(why) => {
            tracing::error!(file = %file.display(), error = %why, "directory file changed but does not load; the current directory stays in force")
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM: the ways an operator or systemd stops a gateway.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
