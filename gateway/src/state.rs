//! What every task of a running node shares (config, the rules in force, the QUIC link, the
//! audit log, quotas, metrics), how it is loaded from a node's files, and how it is reloaded.
//!
//! Below the drivers ([`crate::quic`]), the local API ([`crate::api`]) and the node that starts
//! them ([`crate::node`]); it depends on none of them.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use fedgate_catalog::{Catalog, Diagnostics, NodeId};
use fedgate_certs::{store, Role, TrustStore};
use fedgate_policy::{parse_grants, Policy};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use thiserror::Error;

use crate::config::Config;
use crate::link::{self, Link, LinkError, PeerConnection};
use crate::wire::{ErrorCode, Message};
use fedgate_audit::{AuditLog, Entry, Kind};

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
    /// The peer is neither in the config nor in the federation directory.
    #[error("{0} is neither under [[peers]] in the config nor in the federation directory")]
    UnknownPeer(NodeId),
    /// The peer's certificate is not the one the directory pins for it.
    #[error("{node}: its certificate (sha256 {got}) is not the one the federation directory pins ({want})")]
    NotPinned {
        /// The peer.
        node: NodeId,
        /// The fingerprint it presented.
        got: String,
        /// The fingerprint the directory lists.
        want: String,
    },
    /// The catalog files are unreadable, invalid or not this node's.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The grant files are unreadable or invalid, or the policy engine failed.
    #[error(transparent)]
    Policy(#[from] GrantsError),
    /// The config does not fit the catalog or its databases; every problem, located in
    /// `gateway.toml`.
    #[error("{0}")]
    Config(fedgate_catalog::Diagnostics),
    /// The audit log could not be opened or written.
    #[error(transparent)]
    Audit(#[from] fedgate_audit::AuditError),
    /// The event log could not be opened or written.
    #[error(transparent)]
    Events(#[from] crate::events::EventError),
    /// The subscription store could not be opened.
    #[error(transparent)]
    Subscriptions(#[from] crate::subscriptions::StoreError),
    /// The referral store could not be opened.
    #[error(transparent)]
    Referrals(#[from] crate::referrals::ReferralError),
    /// The working-day calendar file could not be read or has mistakes.
    #[error(transparent)]
    Calendar(#[from] crate::calendar::CalendarError),
    /// The sharing request store could not be opened.
    #[error(transparent)]
    Requests(#[from] crate::governance::store::StoreError),
    /// The objection store cannot be opened.
    #[error(transparent)]
    Objections(#[from] crate::governance::objection_store::ObjectionStoreError),
    /// The web console could not be set up (its address, its account file).
    #[error("console on {addr}: {why}")]
    Console {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// What failed.
        why: String,
    },
    /// The local API could not be set up.
    #[error("local API on {addr}: {why}")]
    Api {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// What failed.
        why: String,
    },
}

/// Reads the config's grant files and the grants file the gateway manages from approved
/// sharing requests (if there is one yet), checking dataset names against `catalog`, and builds
/// the policy snapshot.
pub fn load_policy(cfg: &Config, catalog: &Catalog) -> Result<Policy, NodeError> {
    let mut paths = cfg.grants.clone();
    if cfg.approved_grants.exists() {
        paths.push(cfg.approved_grants.clone());
    }
    let texts = read_all(&paths).map_err(|(path, source)| GrantsError::Read { path, source })?;
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
    /// The same CRLs, for the signers of federation directories.
    pub revocations: fedgate_certs::directory::Revocations,
}

pub(crate) fn file_err(path: &std::path::Path, why: impl Into<String>) -> NodeError {
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
    let revocations = fedgate_certs::directory::Revocations::parse(&crls)
        .map_err(|why| file_err(files.crls.first().map_or(&files.trust, |p| p), why))?;
    Ok(Identity { chain, key, trust, revocations })
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

/// What every task of a running node shares.
pub struct Shared {
    /// The node's config.
    pub cfg: Config,
    /// The QUIC link.
    pub link: Arc<Link>,
    pub(crate) catalog: RwLock<Arc<Catalog>>,
    // Computed once per load: every audit entry carries it.
    pub(crate) catalog_digest: RwLock<Arc<str>>,
    pub(crate) policy: RwLock<Arc<Policy>>,
    pub(crate) masking_secret: Vec<u8>,
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
    /// The federation directory in force.
    pub directory: crate::directory::NodeDirectory,
    // Admitted inbound connections per peer, oldest first: the ones a reconnecting peer replaces.
    pub(crate) inbound: std::sync::Mutex<HashMap<NodeId, VecDeque<quinn::Connection>>>,
    /// Changes to this node's datasets, kept for subscribers (`state_dir/events.db`).
    pub events: Arc<crate::events::EventLog>,
    /// The subscriptions this node holds as a subscriber (`state_dir/subscriptions.db`).
    pub subscriptions: Arc<crate::subscriptions::SubscriptionStore>,
    /// Both ends of the referrals this node takes part in (`state_dir/referrals.db`).
    pub referrals: Arc<crate::referrals::ReferralStore>,
    /// The working-day calendar referral and request deadlines are counted in.
    pub calendar: crate::calendar::WorkCalendar,
    /// Sharing requests this node made or received (`state_dir/requests.db`).
    pub requests: Arc<crate::governance::store::RequestStore>,
    /// Peers that connected lately: the referral outbox retries them at once.
    pub arrivals: crate::quic::referral::Arrivals,
    /// Objections this node filed or received (`state_dir/objections.db`).
    pub objections: Arc<crate::governance::objection_store::ObjectionStore>,
    /// The open objections to this node's records, which every delivery marks.
    pub marks: crate::governance::objection::Marks,
}

impl Shared {
    /// Closes `peer`'s oldest admitted connection; false if it has none.
    pub(crate) fn close_oldest_inbound(&self, peer: &NodeId) -> bool {
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

    pub(crate) fn forget_inbound(&self, peer: &NodeId, conn: &quinn::Connection) {
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

    /// Where `node` listens: its `[[peers]]` entry, which overrides the directory, else the
    /// directory's.
    pub fn address_of(&self, node: &NodeId) -> Result<std::net::SocketAddr, NodeError> {
        self.cfg
            .peer(node)
            .map(|p| p.address)
            .or_else(|| self.directory.address(node))
            .ok_or_else(|| NodeError::UnknownPeer(node.clone()))
    }

    /// Connects to a peer found under `[[peers]]` or in the directory (or reuses the
    /// connection). A certificate other than the one the directory pins is refused; on a new
    /// connection, the two sides exchange what directories they hold.
    pub async fn peer(&self, node: &NodeId) -> Result<PeerConnection, NodeError> {
        let pc = self.link.connection(node, self.address_of(node)?).await?;
        if let Some(want) = self.directory.pinned(node) {
            if pc.peer.fingerprint() != &want {
                return Err(NodeError::NotPinned {
                    node: node.clone(),
                    got: fedgate_catalog::hex(pc.peer.fingerprint()),
                    want: fedgate_catalog::hex(&want),
                });
            }
        }
        self.directory.connected(node, pc.conn.stable_id());
        Ok(pc)
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

pub(crate) async fn reload(shared: &Shared) -> Result<usize, NodeError> {
    let crls = &shared.cfg.tls.crls;
    let link = &shared.link;
    let loaded = read_crls(crls)?;
    let current = link.verifier().current();
    let fresh = current
        .with_crls(&loaded)
        .map_err(|why| file_err(crls.first().map_or(std::path::Path::new("crl"), |p| p), why))?;
    link.verifier().reload(fresh);
    let closed = link.recheck_live();
    let revocations = fedgate_certs::directory::Revocations::parse(&loaded)
        .map_err(|why| file_err(crls.first().map_or(std::path::Path::new("crl"), |p| p), why))?;
    for dropped in shared.directory.set_revocations(revocations, time::OffsetDateTime::now_utc()) {
        tracing::warn!(error = %dropped, "directory dropped after the revocation lists changed");
        let mut e = shared.audit_entry(Kind::Reload);
        e.reason = Some(format!("directory dropped: {dropped}"));
        shared.audit.append(e).await?;
    }
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
    let chain = id.chain.clone();
    let vouching = fedgate_certs::sign::NodeSigner::new(&id.key)
        .map_err(|e| file_err(&shared.cfg.tls.key, e.to_string()))?;
    let generation = shared.link.set_identity(id.chain, id.key)?;
    shared.signer.add(generation, signer);
    let serial = fedgate_certs::inspect::hex_colon(&info.serial);
    tracing::info!(%serial, not_after = %info.not_after, "node certificate reloaded; new connections use it");
    let mut e = shared.audit_entry(Kind::Reload);
    e.reason = Some("node certificate and key reloaded; new connections use them".into());
    e.detail = Some(format!("serial {serial}, valid until {}", info.not_after));
    let seq = shared.audit.append(e).await?;
    vouch_for_audit_key(shared, seq + 1, &chain, &vouching)?;
    Ok(true)
}

/// Has the node's current certificate sign a statement naming the audit key, so an auditor
/// keeps a trust path to the key after the old certificate expires.
fn vouch_for_audit_key(
    shared: &Shared,
    log_size: u64,
    chain: &[CertificateDer<'static>],
    signer: &fedgate_certs::sign::NodeSigner,
) -> Result<(), NodeError> {
    let dir = &shared.cfg.audit_dir;
    let key_path = dir.join("signing.pub");
    let key = std::fs::read_to_string(&key_path).map_err(|e| file_err(&key_path, e.to_string()))?;
    crate::audit_trust::ensure_statement(dir, &shared.cfg.node, key.trim(), log_size, chain, signer)
        .map(|_| ())
        .map_err(|why| {
            file_err(
                dir,
                format!("the new certificate is in use, but its statement naming the audit key was not written: {why}"),
            )
        })
}

/// Why the catalog files a node serves did not load.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// A catalog file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The files do not parse or validate: every problem, located.
    #[error("{0}")]
    Invalid(Diagnostics),
    /// Datasets owned by another node: a gateway serves only its own.
    #[error(
        "{}: this gateway is {node} and serves only its own datasets, but {}",
        config.display(),
        foreign.iter().map(|(d, o)| format!("dataset `{d}` is owned by {o}")).collect::<Vec<_>>().join("; ")
    )]
    Foreign {
        /// The node's config file.
        config: PathBuf,
        /// This node.
        node: NodeId,
        /// Each foreign dataset and its owner.
        foreign: Vec<(String, NodeId)>,
    },
}

impl CatalogError {
    /// The located problems, if the files were read but are invalid.
    pub fn diagnostics(&self) -> Option<&Diagnostics> {
        match self {
            CatalogError::Invalid(d) => Some(d),
            _ => None,
        }
    }
}

/// Why the grant files did not make a policy.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum GrantsError {
    /// A grant file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The files do not parse or validate (or name datasets the catalog lacks): every
    /// problem, located.
    #[error("{0}")]
    Invalid(Diagnostics),
    /// The policy engine could not be built: a bug, not the steward's grants.
    #[error(transparent)]
    Engine(#[from] fedgate_policy::EngineError),
}

impl GrantsError {
    /// The located problems, if the files were read but are invalid.
    pub fn diagnostics(&self) -> Option<&Diagnostics> {
        match self {
            GrantsError::Invalid(d) => Some(d),
            _ => None,
        }
    }
}
