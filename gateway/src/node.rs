//! A running gateway: loads its config and TLS material, serves peers, reloads revocation lists.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use fedgate_catalog::{Catalog, NodeId};
use fedgate_certs::tls::FederationVerifier;
use fedgate_certs::{store, Role, TrustStore, VerifiedPeer};
use fedgate_policy::{parse_grants, Policy};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use thiserror::Error;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::link::{self, Link, LinkError, PeerConnection};
use crate::wire::{ErrorCode, Message, PROTOCOL_VERSION};
use fedgate_audit::{AuditKeys, AuditLog, Entry, Kind};

pub use crate::wire::limits::REQUEST_TIMEOUT;

/// Why a node could not start or act.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum NodeError {
    /// A file (TLS material, a secret) is missing, unreadable or inconsistent with the config.
    #[error("{path}: {why}")]
    File {
        /// The offending file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A PKI file could not be read.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The link failed.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// The peer is not in the config.
    #[error("{0} is not a configured peer (add it under [[peers]] in the config)")]
    UnknownPeer(NodeId),
    /// The catalog files are unreadable, invalid or not this node's.
    #[error(transparent)]
    Catalog(#[from] crate::error::CatalogError),
    /// The grant files are unreadable or invalid, or the policy engine failed.
    #[error(transparent)]
    Policy(#[from] crate::error::GrantsError),
    /// The config does not fit the catalog or its databases; every problem, located in
    /// `gateway.toml`.
    #[error("{0}")]
    Config(fedgate_catalog::Diagnostics),
    /// The audit log could not be opened or written.
    #[error(transparent)]
    Audit(#[from] fedgate_audit::AuditError),
    /// The local API could not be set up.
    #[error("local API on {addr}: {why}")]
    Api {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// What failed.
        why: String,
    },
}

/// Reads the config's grant files, checking dataset names against `catalog`, and builds the
/// policy snapshot.
pub fn load_policy(cfg: &Config, catalog: &Catalog) -> Result<Policy, NodeError> {
    use crate::error::GrantsError;
    let texts = read_all(&cfg.grants).map_err(|(path, source)| GrantsError::Read { path, source })?;
    let refs: Vec<(&str, &str)> = texts.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
    let known: Vec<&str> = catalog.datasets().iter().map(|d| d.id.as_str()).collect();
    let set = parse_grants(&refs, Some(&known)).map_err(GrantsError::Invalid)?;
    Ok(Policy::new(set).map_err(GrantsError::Engine)?)
}

fn read_all(paths: &[PathBuf]) -> Result<Vec<(String, String)>, (PathBuf, std::io::Error)> {
    paths
        .iter()
        .map(|p| std::fs::read_to_string(p).map(|t| (p.display().to_string(), t)).map_err(|e| (p.clone(), e)))
        .collect()
}

/// Reads the config's catalog files; every dataset must be owned by this node.
pub fn load_catalog(cfg: &Config) -> Result<Catalog, NodeError> {
    if cfg.catalog.is_empty() {
        return Ok(Catalog::default());
    }
    use crate::error::CatalogError;
    let texts = read_all(&cfg.catalog).map_err(|(path, source)| CatalogError::Read { path, source })?;
    let refs: Vec<(&str, &str)> = texts.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
    let catalog = fedgate_catalog::parse_files(&refs).map_err(CatalogError::Invalid)?;
    let foreign: Vec<(String, NodeId)> = catalog
        .datasets()
        .iter()
        .filter(|d| d.owner != cfg.node)
        .map(|d| (d.id.to_string(), d.owner.clone()))
        .collect();
    if !foreign.is_empty() {
        let (config, node) = (cfg.path.clone(), cfg.node.clone());
        return Err(CatalogError::Foreign { config, node, foreign }.into());
    }
    Ok(catalog)
}

/// Checks the config's sources against `catalog`; located configuration errors fail, sources
/// whose server is down are logged and returned to be kept unchecked.
pub async fn check_sources(cfg: &Config, catalog: &Catalog) -> Result<crate::sources::Checked, NodeError> {
    let checked = crate::sources::check_all(cfg, catalog).await;
    if !checked.problems.is_empty() {
        return Err(NodeError::Config(fedgate_catalog::Diagnostics(checked.problems)));
    }
    for (dataset, why) in &checked.unreachable {
        tracing::warn!(%dataset, error = %why, "source unreachable, not checked against the catalog; its queries are refused until it answers");
    }
    Ok(checked)
}

/// A node's TLS identity and trust, loaded and cross-checked.
pub struct Identity {
    /// Leaf then intermediates.
    pub chain: Vec<CertificateDer<'static>>,
    /// Private key.
    pub key: PrivateKeyDer<'static>,
    /// The federation root and CRLs.
    pub trust: TrustStore,
}

fn file_err(path: &std::path::Path, why: impl Into<String>) -> NodeError {
    NodeError::File { path: path.to_owned(), why: why.into() }
}

fn read_crls(paths: &[PathBuf]) -> Result<Vec<CertificateRevocationListDer<'static>>, NodeError> {
    paths.iter().map(|p| store::read_crl(p).map_err(NodeError::from)).collect()
}

/// Loads the config's TLS files and checks that the certificate is this node's and is valid now.
pub fn load_identity(cfg: &Config) -> Result<Identity, NodeError> {
    let files = &cfg.tls;
    check_key_mode(&files.key)?;
    let chain = store::read_certs(&files.cert)?;
    let key = store::read_key(&files.key)?;
    let mut roots = store::read_certs(&files.trust)?;
    if roots.len() != 1 {
        return Err(file_err(
            &files.trust,
            format!("expected the one federation root, found {} certificates", roots.len()),
        ));
    }
    let crls = read_crls(&files.crls)?;
    let trust = TrustStore::new(roots.remove(0), &crls).map_err(|why| file_err(&files.trust, why))?;
    let me = trust
        .verify(&chain[0], &chain[1..], Role::Server, UnixTime::now())
        .map_err(|e| file_err(&files.cert, format!("this node's own certificate does not verify: {e}")))?;
    if me.node() != &cfg.node {
        return Err(file_err(
            &files.cert,
            format!("certificate is issued to {}, but the config says node = {}", me.node(), cfg.node),
        ));
    }
    Ok(Identity { chain, key, trust })
}

#[cfg(unix)]
fn check_key_mode(path: &std::path::Path) -> Result<(), NodeError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| file_err(path, e.to_string()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(file_err(
            path,
            format!("private key is readable by others (mode {mode:o}); run chmod 600"),
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_key_mode(_: &std::path::Path) -> Result<(), NodeError> {
    Ok(())
}

/// The answer to a request that needs no data source, decided without I/O.
pub fn answer_request(local: &NodeId, catalog: &Catalog, peer: &VerifiedPeer, req: &Message) -> Message {
    match req {
        // Metadata only, and never datasets that are not to be shared at all.
        Message::CatalogRequest => {
            Message::Catalog { catalog: Catalog::from_datasets(catalog.shareable().cloned().collect()) }
        }
        Message::Hello { version, node, .. } => {
            if *version != PROTOCOL_VERSION {
                Message::Error {
                    code: ErrorCode::Unsupported,
                    message: format!(
                        "protocol version {version} not supported; this gateway speaks {PROTOCOL_VERSION}"
                    ),
                }
            } else if node != &peer.node().to_string() {
                Message::Error {
                    code: ErrorCode::WrongIdentity,
                    message: format!("you said you are {node}, but your certificate says {}", peer.node()),
                }
            } else {
                Message::Welcome { node: local.to_string() }
            }
        }
        other => Message::Error {
            code: ErrorCode::Unsupported,
            message: format!("unexpected request {}", other.kind()),
        },
    }
}

/// What every task of a running node shares.
pub struct Shared {
    /// The node's config.
    pub cfg: Config,
    /// The QUIC link.
    pub link: Arc<Link>,
    catalog: RwLock<Arc<Catalog>>,
    // Computed once per load: every audit entry carries it.
    catalog_digest: RwLock<Arc<str>>,
    policy: RwLock<Arc<Policy>>,
    masking_secret: Vec<u8>,
    /// Signs transfer trailers with the key of the certificate each connection was made with.
    pub signer: crate::identity::Signers,
    /// Daily record counts per grant and consumer.
    pub quotas: Arc<crate::exchange::QuotaLedger>,
    /// Counters for /metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The node's audit log.
    pub audit: AuditLog,
    /// Which sources have passed their check against the catalog.
    pub sources: crate::sources::SourceGate,
    /// Live peer connections and buffered request bytes, against their caps.
    pub admission: Arc<crate::admission::Admission>,
    // Admitted inbound connections per peer, oldest first: the ones a reconnecting peer replaces.
    inbound: std::sync::Mutex<HashMap<NodeId, VecDeque<quinn::Connection>>>,
}

impl Shared {
    /// Closes `peer`'s oldest admitted connection; false if it has none.
    fn close_oldest_inbound(&self, peer: &NodeId) -> bool {
        let oldest =
            self.inbound.lock().unwrap_or_else(|p| p.into_inner()).get_mut(peer).and_then(|q| q.pop_front());
        let Some(conn) = oldest else {
            return false;
        };
        tracing::info!(peer = %peer, "a new connection from the peer replaces its oldest");
        conn.close(
            quinn::VarInt::from_u32(ErrorCode::Busy.quic_code()),
            b"replaced by a newer connection from the same peer",
        );
        true
    }

    fn forget_inbound(&self, peer: &NodeId, conn: &quinn::Connection) {
        let mut inbound = self.inbound.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(q) = inbound.get_mut(peer) {
            q.retain(|c| c.stable_id() != conn.stable_id());
            if q.is_empty() {
                inbound.remove(peer);
            }
        }
    }

    /// The catalog in force (a snapshot; reloads swap it).
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A new audit entry of `kind` by this node, with the digests of the catalog and grants in
    /// force.
    pub fn audit_entry(&self, kind: Kind) -> Entry {
        Entry {
            kind: Some(kind),
            actor: self.cfg.node.to_string(),
            policy_digest: Some(self.policy().digest().to_owned()),
            catalog_digest: Some(self.catalog_digest.read().unwrap_or_else(|p| p.into_inner()).to_string()),
            ..Entry::default()
        }
    }

    /// Re-reads the catalog and grant files; if both are valid, swaps them in (requests in
    /// flight keep the snapshots they started with) and records the new digests. If not, the
    /// rules in force stay and the error says why.
    pub async fn reload_rules(&self) -> Result<(), NodeError> {
        let catalog = load_catalog(&self.cfg)?;
        let policy = load_policy(&self.cfg, &catalog)?;
        let checked = check_sources(&self.cfg, &catalog).await?;
        self.sources.reset(&checked.unreachable);
        *self.catalog_digest.write().unwrap_or_else(|p| p.into_inner()) = catalog.digest().into();
        *self.catalog.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(catalog);
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(policy);
        let mut e = self.audit_entry(Kind::Reload);
        e.reason = Some("catalog and grants reloaded".into());
        e.detail = Some(format!(
            "{} datasets, {} grants",
            self.catalog().datasets().len(),
            self.policy().grants().grants.len()
        ));
        self.audit.append(e).await?;
        tracing::info!(grants = %self.policy().digest(), "catalog and grants reloaded");
        Ok(())
    }

    /// Checks the sources still waiting for their server (down at the last check) and lets
    /// through those that now fit the catalog.
    pub async fn recheck_sources(&self) {
        let catalog = self.catalog();
        for dataset in self.sources.pending() {
            let (Some(src), Some(ds)) =
                (self.cfg.sources.iter().find(|s| s.dataset == dataset), catalog.get(&dataset))
            else {
                continue;
            };
            let outcome = crate::sources::check_one(&self.cfg, src, ds).await;
            match &outcome {
                crate::sources::Outcome::Fits => {
                    tracing::info!(%dataset, "source reachable again and fits the catalog; queries are served")
                }
                crate::sources::Outcome::Problems(p) => {
                    for d in p {
                        tracing::error!(%dataset, problem = %d, "source reachable but does not fit the catalog; queries stay refused");
                    }
                }
                crate::sources::Outcome::Unreachable(_) => {}
            }
            self.sources.record(&dataset, &outcome);
        }
    }

    /// The policy in force (a snapshot; reloads swap it).
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The provider secret per-consumer hashing keys derive from.
    pub fn masking_secret(&self) -> &[u8] {
        &self.masking_secret
    }

    /// Connects to a configured peer (or reuses the connection).
    pub async fn peer(&self, node: &NodeId) -> Result<PeerConnection, NodeError> {
        let p = self.cfg.peer(node).ok_or_else(|| NodeError::UnknownPeer(node.clone()))?;
        Ok(self.link.connection(&p.node, p.address).await?)
    }

    /// A peer's catalog metadata, asked over QUIC.
    pub async fn peer_catalog(&self, node: &NodeId) -> Result<Catalog, NodeError> {
        let pc = self.peer(node).await?;
        let answer = match link::request_one(&pc, &Message::CatalogRequest).await {
            // The cached connection was dead (the peer restarted): dial again, once.
            Err(e)
                if pc.conn.close_reason().is_some()
                    && !matches!(e, LinkError::Refused { .. } | LinkError::Remote { .. }) =>
            {
                link::request_one(&self.peer(node).await?, &Message::CatalogRequest).await?
            }
            other => other?,
        };
        match answer {
            Message::Catalog { catalog } => Ok(catalog),
            other => Err(NodeError::Link(LinkError::Protocol {
                peer: node.to_string(),
                why: format!("expected a catalog, got {}", other.kind()),
            })),
        }
    }
}

/// A started node.
pub struct RunningNode {
    shared: Arc<Shared>,
    api_addr: std::net::SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningNode {
    /// Loads identity and catalog, binds the QUIC endpoint and the local API, starts serving.
    pub async fn start(cfg: Config) -> Result<RunningNode, NodeError> {
        let id = load_identity(&cfg)?;
        let catalog = load_catalog(&cfg)?;
        let policy = load_policy(&cfg, &catalog)?;
        let checked = check_sources(&cfg, &catalog).await?;
        let secret = |p: &std::path::Path| crate::secret::ensure(p).map_err(|e| file_err(p, e.to_string()));
        let token = secret(&cfg.api_token)?;
        let masking = secret(&cfg.masking_key)?;
        let keys = AuditKeys::load_or_create(&cfg.audit_key, &cfg.audit_signing_key)?;
        let origin = fedgate_audit::origin(&cfg.node);
        let audit_key = fedgate_audit::checkpoint::verifier_key(&origin, &keys.public_key());
        let (audit, recovery) = AuditLog::open(&cfg.audit_dir, &origin, keys)?;
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
        let link = Arc::new(Link::bind(cfg.node.clone(), cfg.listen, verifier, id.chain, id.key)?);
        // Peers, API clients, sources and audit files all need descriptors; the usual soft
        // limit (1024) is far below the hard one.
        if let Err(e) = crate::api_serve::raise_fd_limit() {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
        }
        let api_listener = crate::api_serve::bind(cfg.api)
            .map_err(|e| NodeError::Api { addr: cfg.api, why: e.to_string() })?;
        let api_addr =
            api_listener.local_addr().map_err(|e| NodeError::Api { addr: cfg.api, why: e.to_string() })?;
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
            inbound: Default::default(),
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
        let tasks = vec![
            tokio::spawn(accept_loop(shared.clone())),
            tokio::spawn(rejection_summaries(shared.clone())),
            tokio::spawn(reload_loop(shared.clone())),
            tokio::spawn(crate::api::serve(api_listener, shared.clone(), token)),
        ];
        tracing::info!(
            node = %shared.cfg.node,
            quic = %link.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            api = %api_addr,
            "gateway listening"
        );
        Ok(RunningNode { shared, api_addr, tasks })
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

async fn reload(shared: &Shared) -> Result<usize, NodeError> {
    let crls = &shared.cfg.tls.crls;
    let link = &shared.link;
    let loaded = read_crls(crls)?;
    let current = link.verifier().current();
    let fresh = current
        .with_crls(&loaded)
        .map_err(|why| file_err(crls.first().map_or(std::path::Path::new("crl"), |p| p), why))?;
    link.verifier().reload(fresh);
    let closed = link.recheck_live();
    tracing::info!(crls = loaded.len(), closed, "revocation lists reloaded");
    let digests: Vec<String> = loaded
        .iter()
        .map(|c| fedgate_catalog::hex(ring::digest::digest(&ring::digest::SHA256, c).as_ref()))
        .collect();
    let mut e = shared.audit_entry(Kind::Reload);
    e.reason = Some(format!("revocation lists reloaded; {closed} live connection(s) closed"));
    e.detail = Some(format!("crl sha256: {}", digests.join(", ")));
    shared.audit.append(e).await?;
    Ok(closed)
}

/// Re-reads the node's own certificate and key; if they changed and are good (this node's id,
/// verifying against the federation root and CRLs, valid now, the key matching the
/// certificate), new connections use them. Otherwise the identity in force stays and the error
/// says why. Returns whether anything changed.
pub async fn reload_identity(shared: &Shared) -> Result<bool, NodeError> {
    let id = load_identity(&shared.cfg)?;
    if id.chain.first() == Some(&shared.link.current_certificate()) {
        return Ok(false);
    }
    let signer = fedgate_certs::sign::NodeSigner::new(&id.key)
        .map_err(|e| file_err(&shared.cfg.tls.key, e.to_string()))?;
    let me = id
        .trust
        .verify(&id.chain[0], &id.chain[1..], Role::Server, UnixTime::now())
        .map_err(|e| file_err(&shared.cfg.tls.cert, e.to_string()))?;
    // A key from another certificate would make every trailer unverifiable.
    let probe = b"fedgate key matches certificate";
    let signed = signer.sign(probe).map_err(|e| file_err(&shared.cfg.tls.key, e.to_string()))?;
    if !me.verify_signature(probe, &signed) {
        return Err(file_err(
            &shared.cfg.tls.key,
            format!("this key does not belong to the certificate in {}", shared.cfg.tls.cert.display()),
        ));
    }
    let info = fedgate_certs::inspect::parse(&id.chain[0]).map_err(|e| file_err(&shared.cfg.tls.cert, e))?;
    let generation = shared.link.set_identity(id.chain, id.key)?;
    shared.signer.add(generation, signer);
    let serial = fedgate_certs::inspect::hex_colon(&info.serial);
    tracing::info!(%serial, not_after = %info.not_after, "node certificate reloaded; new connections use it");
    let mut e = shared.audit_entry(Kind::Reload);
    e.reason = Some("node certificate and key reloaded; new connections use them".into());
    e.detail = Some(format!("serial {serial}, valid until {}", info.not_after));
    shared.audit.append(e).await?;
    Ok(true)
}

fn mtimes(paths: &[PathBuf]) -> Vec<Option<SystemTime>> {
    paths.iter().map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok()).collect()
}

async fn reload_loop(shared: Arc<Shared>) {
    let crls = shared.cfg.tls.crls.clone();
    let rules: Vec<PathBuf> = shared.cfg.catalog.iter().chain(&shared.cfg.grants).cloned().collect();
    let mut seen = mtimes(&crls);
    let mut seen_rules = mtimes(&rules);
    let own = [shared.cfg.tls.cert.clone(), shared.cfg.tls.key.clone()];
    let mut seen_own = mtimes(&own);
    let mut tick = tokio::time::interval(shared.cfg.reload_interval);
    loop {
        tick.tick().await;
        shared.recheck_sources().await;
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

/// Inbound handshakes in progress at once; beyond it new connections are refused (clients
/// retry), so a flood of handshakes that never finish costs bounded memory and CPU.
pub const MAX_HANDSHAKES: usize = 64;

async fn accept_loop(shared: Arc<Shared>) {
    // Handshakes run side by side: one that stalls (a client that sends its first packet and
    // nothing more) must not hold up everyone else's for the handshake timeout.
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    while let Some(incoming) = shared.link.admit_next().await {
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            incoming.refuse();
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let result = shared.link.handshake(incoming).await;
            drop(slot);
            if let Some(result) = result {
                accepted(&shared, result).await;
            }
        });
    }
}

/// Serves an accepted peer, or logs and audits a refused one.
async fn accepted(shared: &Arc<Shared>, result: Result<PeerConnection, link::InboundRejection>) {
    match result {
        Ok(pc) => {
            shared.metrics.connection_accepted(&pc.peer.node().to_string());
            tracing::info!(peer = %pc.peer.node(), addr = %pc.conn.remote_address(), "peer connected");
            tokio::spawn(serve_connection(shared.clone(), pc));
        }
        Err(r) => {
            tracing::warn!(addr = %r.addr, reason = r.reason, error = %r.error, "inbound connection refused; further ones from this source for this reason are counted, not logged, for a minute");
            let mut e = shared.audit_entry(Kind::CertReject);
            e.counterpart = Some(r.addr.ip().to_string());
            e.decision = Some("deny".into());
            e.reason = Some(r.reason.into());
            e.detail = Some(r.error.to_string());
            e.records = Some(1);
            if let Err(err) = shared.audit.append(e).await {
                tracing::error!(error = %err, "audit append failed");
            }
        }
    }
}

/// Every few seconds, writes the rejections counted in an interval that has ended: one log line
/// and one audit entry per (source, reason), with the count.
async fn rejection_summaries(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        record_rejections(&shared, false).await;
    }
}

async fn record_rejections(shared: &Shared, all: bool) {
    for s in shared.link.roll_rejections(std::time::Instant::now(), all) {
        let source = s.addr.map_or_else(|| "other sources".to_owned(), |a| a.to_string());
        tracing::warn!(%source, reason = %s.reason, count = s.count, refused_before_handshake = s.refused_early, "inbound handshakes rejected");
        let mut e = shared.audit_entry(Kind::CertReject);
        e.counterpart = Some(source);
        e.decision = Some("deny".into());
        e.reason = Some(s.reason.clone());
        e.records = Some(s.count);
        e.detail = Some(format!(
            "{} more rejected handshakes since the first was recorded, {} connections refused before the handshake",
            s.count, s.refused_early
        ));
        if let Err(err) = shared.audit.append(e).await {
            tracing::error!(error = %err, "audit append failed");
        }
    }
}

async fn serve_connection(shared: Arc<Shared>, pc: PeerConnection) {
    let Some(admitted) = admit(&shared, &pc).await else {
        return;
    };
    loop {
        match pc.conn.accept_bi().await {
            Ok((send, recv)) => {
                let stream = serve_stream(shared.clone(), pc.peer.clone(), admitted.clone(), send, recv);
                tokio::spawn(crate::identity::for_connection(pc.identity, stream));
            }
            Err(e) => {
                tracing::debug!(peer = %pc.peer.node(), reason = %e, "connection ended");
                shared.forget_inbound(pc.peer.node(), &pc.conn);
                return;
            }
        }
    }
}

/// How long a connection that replaced a peer's oldest one waits for that one's slot.
const REPLACE_WAIT: Duration = Duration::from_millis(500);

/// Admits a connection against the caps. A peer at its own cap that connects again has most
/// likely restarted and left dead connections behind (they linger until the idle timeout), so
/// its newest connection replaces its oldest: a peer can only ever displace its own.
async fn admit(shared: &Shared, pc: &PeerConnection) -> Option<Arc<crate::admission::Connection>> {
    let peer = pc.peer.node();
    let deadline = tokio::time::Instant::now() + REPLACE_WAIT;
    let mut replaced = false;
    loop {
        let full = match shared.admission.connect(peer) {
            Ok(a) => {
                let mut inbound = shared.inbound.lock().unwrap_or_else(|p| p.into_inner());
                inbound.entry(peer.clone()).or_default().push_back(pc.conn.clone());
                return Some(Arc::new(a));
            }
            Err(full) => full,
        };
        let at_own_cap = matches!(full, crate::admission::Full::Peer { .. });
        if at_own_cap && !replaced {
            replaced = shared.close_oldest_inbound(peer);
        }
        if !at_own_cap || !replaced || tokio::time::Instant::now() >= deadline {
            // Not audited: a peer at its cap could otherwise turn reconnects into log entries.
            tracing::warn!(peer = %peer, reason = %full, "connection refused");
            pc.conn.close(quinn::VarInt::from_u32(ErrorCode::Busy.quic_code()), full.to_string().as_bytes());
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn serve_stream(
    shared: Arc<Shared>,
    peer: VerifiedPeer,
    admitted: Arc<crate::admission::Connection>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let who = peer.node().to_string();
    let read = crate::admission::read_request(&mut recv, admitted.reservation());
    let refused = match tokio::time::timeout(REQUEST_TIMEOUT, read).await {
        Ok(Ok(Some(m))) => Ok(m),
        Ok(Ok(None)) => return,
        Ok(Err(refused)) => Err(refused),
        Err(_) => Err(crate::wire::request::Refused::Timeout(REQUEST_TIMEOUT)),
    };
    let req = match refused {
        Ok(m) => m,
        Err(refused) => return refuse_request(&shared, &peer, send, recv, refused).await,
    };
    if let Message::Query { dataset, purpose, filters, limit } = req {
        let query = crate::exchange::Query { dataset, purpose, filters, limit };
        crate::quic::provider::serve_query(shared, peer, send, query).await;
        return;
    }
    let answer = answer_request(shared.link.local(), &shared.catalog(), &peer, &req);
    let _ = link::write_frame(&mut send, &answer, &who).await;
    let _ = send.finish();
}

/// Answers a request that broke the wire rules, stops the peer's sending, and audits it (with
/// oversized values as digests) unless the refusal is about load, which must not cost disk.
async fn refuse_request(
    shared: &Shared,
    peer: &VerifiedPeer,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    refused: crate::wire::request::Refused,
) {
    let who = peer.node().to_string();
    let code = refused.code();
    tracing::warn!(peer = %who, error = %refused, "request refused at the wire");
    let _ = recv.stop(quinn::VarInt::from_u32(code.quic_code()));
    if refused.audited() {
        let mut e = shared.audit_entry(Kind::RequestIn);
        e.counterpart = Some(who.clone());
        crate::admission::describe_refusal(&refused, &mut e);
        if let Err(err) = shared.audit.append(e).await {
            tracing::error!(error = %err, "audit append failed");
        }
    }
    link::reply_error(&mut send, code, refused.to_string(), &who).await;
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
