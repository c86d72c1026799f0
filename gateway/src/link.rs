//! The mutual-TLS QUIC link between gateways.
//!
//! One quinn endpoint per node both listens and dials. Every connection's peer identity is taken
//! once from its verified certificate ([`VerifiedPeer`]) and travels with the connection; nothing
//! the peer says can change it. Outbound connections are cached per peer, re-established when they
//! fail, and checked with an application-level hello so a peer that refused our certificate is
//! reported clearly (with TLS 1.3 client auth, the handshake alone can look successful).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ring::hmac;

use fedgate_audit::checkpoint::NoteMemo;
use fedgate_catalog::NodeId;
use fedgate_certs::tls::{FederationVerifier, TlsBuilder};
use fedgate_certs::{PeerError, Role, VerifiedPeer};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use thiserror::Error;
use tokio::io::AsyncWriteExt;

use crate::api_code::ApiCode;
use crate::flood::{self, RejectionTally};
use crate::refusal::Refusal;
use crate::wire::{self, frame, ErrorCode, FrameError, Message, PROTOCOL_VERSION};

/// How long a dial (handshake plus hello) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection with no traffic for this long is closed: three missed keep-alives, so a peer
/// that vanished without a word (and cannot answer with a stateless reset) is noticed in 15 s.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// Keep-alives probe cached connections; a restarted peer answers one with a stateless reset.
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// Why talking to a peer failed. Messages name the peer.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The local endpoint could not be set up.
    #[error("cannot set up the QUIC endpoint on {addr}: {why}")]
    Setup {
        /// The listen address.
        addr: SocketAddr,
        /// What failed.
        why: String,
    },
    /// The peer is not reachable or the handshake failed on our side.
    #[error("cannot connect to {peer} at {addr}: {why}")]
    Connect {
        /// The peer we dialled.
        peer: NodeId,
        /// Its address.
        addr: SocketAddr,
        /// What failed.
        why: String,
    },
    /// This gateway is shutting down: it dials no one and its connections are closing. The
    /// blame is ours, not the peer's, and a restarted gateway serves the same request.
    #[error("this gateway is shutting down; {peer} was not asked")]
    Stopping {
        /// The peer the request was for.
        peer: String,
    },
    /// The peer closed the connection, e.g. because it rejected our certificate.
    #[error("{peer} closed the connection: {reason}")]
    Closed {
        /// The peer.
        peer: String,
        /// The reason it gave.
        reason: String,
        /// The wire's error code it closed with, if any (`busy` at its connection caps).
        code: Option<ErrorCode>,
    },
    /// The peer refused our certificate and said why (a TLS alert or our refusal close code).
    #[error("{peer} refused us: {}", refusal.phrase())]
    Refused {
        /// The peer that refused.
        peer: String,
        /// Why.
        refusal: Refusal,
        /// The peer's own words, for logs.
        detail: String,
    },
    /// The peer's certificate was refused.
    #[error("{peer}: certificate rejected: {error}")]
    Rejected {
        /// Who it claimed to be.
        peer: String,
        /// Why it was refused.
        error: PeerError,
    },
    /// The peer sent bytes that do not decode.
    #[error("{peer} sent a malformed frame: {error}")]
    Frame {
        /// The peer.
        peer: String,
        /// The decoding failure.
        error: FrameError,
    },
    /// The peer answered with a typed error.
    #[error("{peer} answered {code:?}: {message}")]
    Remote {
        /// The peer.
        peer: String,
        /// Its error code.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
    /// The peer broke the protocol (wrong message, early end of stream).
    #[error("{peer} violated the protocol: {why}")]
    Protocol {
        /// The peer.
        peer: String,
        /// What it did.
        why: String,
    },
    /// Took too long.
    #[error("{peer}: timed out after {after:?}")]
    Timeout {
        /// The peer.
        peer: String,
        /// The limit.
        after: Duration,
    },
}

/// A live, authenticated connection and who is at the other end.
#[derive(Clone, Debug)]
pub struct PeerConnection {
    /// The quinn connection.
    pub conn: quinn::Connection,
    /// The peer's verified identity.
    pub peer: VerifiedPeer,
    /// Which generation of this node's own certificate the connection was made with (0 until
    /// the first rotation; see [`Link::set_identity`]).
    pub identity: u64,
    /// The peer's audit note verifier as its certificate vouched for it in the welcome (only
    /// on connections this node dialled, to providers that send one): the checkpoints the
    /// peer's answers carry are checked against it.
    pub audit_key: Option<Arc<(String, Vec<u8>)>>,
    /// The peer's checkpoints already verified on this connection: concurrent answers from one
    /// group commit carry the same signed note, verified once.
    pub notes: Arc<NoteMemo>,
}

/// Checkpoints remembered per connection: a group commit's note is shared by the exchanges
/// in flight (64 in the benchmark), and the newest groups are the ones still arriving.
const NOTES_PER_CONNECTION: usize = 16;

fn memo() -> Arc<NoteMemo> {
    Arc::new(NoteMemo::new(NOTES_PER_CONNECTION))
}

/// The TLS configurations for this node's current certificate and key.
struct LocalTls {
    generation: u64,
    leaf: CertificateDer<'static>,
    server: Arc<quinn::ServerConfig>,
    client: quinn::ClientConfig,
}

/// Server and client configs for `chain` and `key`, verifying peers with `verifier`.
fn tls_configs(
    verifier: &Arc<FederationVerifier>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<(quinn::ServerConfig, quinn::ClientConfig), String> {
    let tls = TlsBuilder::new(verifier.clone()).identity(chain, key);
    let server_tls = tls.server().map_err(|e| format!("TLS server config: {e}"))?;
    let client_tls = tls.client().map_err(|e| format!("TLS client config: {e}"))?;
    let server_quic = QuicServerConfig::try_from(server_tls).map_err(|e| e.to_string())?;
    let client_quic = QuicClientConfig::try_from(client_tls).map_err(|e| e.to_string())?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_quic));
    server.transport_config(server_transport());
    let mut client = quinn::ClientConfig::new(Arc::new(client_quic));
    client.transport_config(client_transport());
    Ok((server, client))
}

/// A node's QUIC endpoint.
pub struct Link {
    endpoint: quinn::Endpoint,
    local: NodeId,
    verifier: Arc<FederationVerifier>,
    tls: std::sync::RwLock<LocalTls>,
    outbound: Mutex<HashMap<NodeId, PeerConnection>>,
    // One dial at a time per peer: concurrent requests after a restart share the new connection
    // instead of each dialling (and hitting the provider's per-peer connection cap).
    dialling: Mutex<HashMap<NodeId, Arc<tokio::sync::Mutex<()>>>>,
    live: Mutex<HashMap<usize, quinn::Connection>>,
    rejections: Mutex<RejectionTally>,
    contacts: crate::contacts::Contacts,
}

/// An inbound handshake that failed: the first of its (source, reason) in the current interval;
/// later ones are only counted (see [`Link::roll_rejections`]).
#[derive(Debug)]
pub struct InboundRejection {
    /// Where it came from.
    pub addr: SocketAddr,
    /// The reason's short name (`revoked`, `unknown-issuer`, `handshake-failed`, …).
    pub reason: &'static str,
    /// What failed.
    pub error: LinkError,
}

fn transport() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(
        IDLE_TIMEOUT.try_into().unwrap_or(quinn::IdleTimeout::from(quinn::VarInt::from_u32(60_000))),
    ));
    t.keep_alive_interval(Some(KEEP_ALIVE));
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    t
}

/// Accepted connections carry only requests towards us, so what quinn itself may buffer for a
/// peer is sized to requests: one maximal request per stream, a few per connection, and a
/// bounded number of streams (see [`crate::wire::limits`]).
fn server_transport() -> Arc<quinn::TransportConfig> {
    use crate::wire::limits::{CONNECTION_REQUEST_BUDGET, MAX_REQUEST_FRAME, MAX_STREAMS_PER_CONNECTION};
    let mut t = transport();
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(MAX_STREAMS_PER_CONNECTION));
    t.stream_receive_window(quinn::VarInt::from_u32((MAX_REQUEST_FRAME + 4) as u32));
    t.receive_window(quinn::VarInt::from_u32(CONNECTION_REQUEST_BUDGET as u32));
    Arc::new(t)
}

/// Dialled connections: we open the streams; the peer may open none, so a hostile provider
/// cannot make quinn buffer anything for streams we would never read.
fn client_transport() -> Arc<quinn::TransportConfig> {
    let mut t = transport();
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(0));
    Arc::new(t)
}

impl Link {
    /// Binds the endpoint at `listen` with this node's identity.
    pub fn bind(
        local: NodeId,
        listen: SocketAddr,
        verifier: Arc<FederationVerifier>,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Link, LinkError> {
        let socket = std::net::UdpSocket::bind(listen)
            .map_err(|e| LinkError::Setup { addr: listen, why: e.to_string() })?;
        Link::on_socket(local, socket, verifier, chain, key)
    }

    /// [`Link::bind`] on a socket already bound (by whoever chose its port).
    pub fn on_socket(
        local: NodeId,
        socket: std::net::UdpSocket,
        verifier: Arc<FederationVerifier>,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Link, LinkError> {
        let addr = socket.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let setup = |why: String| LinkError::Setup { addr, why };
        let endpoint_config = stable_endpoint_config(&key);
        let leaf = chain.first().cloned().ok_or_else(|| setup("no certificate".into()))?;
        let (server, client) = tls_configs(&verifier, chain, key).map_err(setup)?;
        let runtime = quinn::default_runtime().ok_or_else(|| setup("no async runtime".into()))?;
        let mut endpoint = quinn::Endpoint::new(endpoint_config, Some(server.clone()), socket, runtime)
            .map_err(|e| setup(e.to_string()))?;
        endpoint.set_default_client_config(client.clone());
        Ok(Link {
            endpoint,
            local,
            verifier,
            tls: std::sync::RwLock::new(LocalTls { generation: 0, leaf, server: Arc::new(server), client }),
            outbound: Mutex::default(),
            dialling: Mutex::default(),
            live: Mutex::default(),
            rejections: Mutex::new(RejectionTally::new(Instant::now(), flood::INTERVAL)),
            contacts: Default::default(),
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// When each peer was last reached and whether a connection with it is open.
    pub fn contacts(&self) -> &crate::contacts::Contacts {
        &self.contacts
    }

    /// This node's id.
    pub fn local(&self) -> &NodeId {
        &self.local
    }

    /// Switches to a new certificate and key for every connection made from now on; live
    /// connections keep the certificate they were made with. Returns the new generation.
    pub fn set_identity(
        &self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<u64, LinkError> {
        let addr = self.endpoint.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let setup = |why: String| LinkError::Setup { addr, why };
        let leaf = chain.first().cloned().ok_or_else(|| setup("no certificate".into()))?;
        let (server, client) = tls_configs(&self.verifier, chain, key).map_err(setup)?;
        let mut tls = self.tls.write().unwrap_or_else(|p| p.into_inner());
        self.endpoint.set_server_config(Some(server.clone()));
        *tls = LocalTls { generation: tls.generation + 1, leaf, server: Arc::new(server), client };
        Ok(tls.generation)
    }

    /// The leaf certificate new connections present.
    pub fn current_certificate(&self) -> CertificateDer<'static> {
        self.tls.read().unwrap_or_else(|p| p.into_inner()).leaf.clone()
    }

    /// The verifier, for reloads.
    pub fn verifier(&self) -> &Arc<FederationVerifier> {
        &self.verifier
    }

    /// Waits for the next inbound connection. `None` once the endpoint is closed.
    ///
    /// A source whose handshakes keep failing is refused before any TLS work for the rest of the
    /// interval; under a stream of failures, unvalidated sources must first prove their address
    /// (QUIC retry). Only the first failure per (source, reason) per interval is returned; the
    /// rest are counted.
    ///
    /// Handshakes run one after another here; a gateway runs them side by side with
    /// [`Link::admit_next`] and [`Link::handshake`], so one that stalls holds up no other.
    pub async fn accept(&self) -> Option<Result<PeerConnection, InboundRejection>> {
        loop {
            let incoming = self.admit_next().await?;
            if let Some(result) = self.handshake(incoming).await {
                return Some(result);
            }
        }
    }

    /// The next inbound connection worth a handshake: sources over the rejection threshold are
    /// refused, and under a stream of failures unvalidated sources are asked for a QUIC retry,
    /// both before any TLS work. `None` once the endpoint is closed.
    pub async fn admit_next(&self) -> Option<quinn::Incoming> {
        loop {
            let incoming = self.endpoint.accept().await?;
            let addr = incoming.remote_address();
            let admit = {
                let mut t = self.tally();
                flood::admit(incoming.remote_address_validated(), t.refuse_early(addr.ip()), t.recent())
            };
            match admit {
                flood::Admit::Refuse => {
                    incoming.refuse();
                    continue;
                }
                flood::Admit::Retry if incoming.may_retry() => {
                    // Fails only if the client was already retried; then it proved its address.
                    let _ = incoming.retry();
                    continue;
                }
                _ => return Some(incoming),
            }
        }
    }

    /// Completes the handshake of an admitted connection and identifies the peer. A failure is
    /// counted; only the first per (source, reason) per interval is returned, the rest give
    /// `None`.
    pub async fn handshake(
        &self,
        incoming: quinn::Incoming,
    ) -> Option<Result<PeerConnection, InboundRejection>> {
        let addr = incoming.remote_address();
        match self.finish_accept(incoming, addr).await {
            Ok(pc) => Some(Ok(pc)),
            Err((reason, error)) => (self.tally().record(addr.ip(), reason) == flood::Report::Now)
                .then_some(Err(InboundRejection { addr, reason, error })),
        }
    }

    fn tally(&self) -> std::sync::MutexGuard<'_, RejectionTally> {
        self.rejections.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rejections counted but not yet reported, once their interval has ended at `now` (all of
    /// them if `all`, as at shutdown).
    pub fn roll_rejections(&self, now: Instant, all: bool) -> Vec<flood::Summary> {
        let mut t = self.tally();
        if all {
            t.drain()
        } else {
            t.roll(now)
        }
    }

    async fn finish_accept(
        &self,
        incoming: quinn::Incoming,
        addr: SocketAddr,
    ) -> Result<PeerConnection, (&'static str, LinkError)> {
        // Accept with the configs of one known generation, so the connection's certificate and
        // the key that signs its trailers always match, whatever a rotation does meanwhile.
        let (identity, server) = {
            let tls = self.tls.read().unwrap_or_else(|p| p.into_inner());
            (tls.generation, tls.server.clone())
        };
        let lost = |e: quinn::ConnectionError| {
            (
                handshake_failure(&e),
                LinkError::Closed { peer: addr.to_string(), reason: e.to_string(), code: None },
            )
        };
        let conn = incoming.accept_with(server).map_err(lost)?.await.map_err(lost)?;
        // A resumed TLS session skips the verifier, so this is where a peer revoked since its
        // first handshake is caught; it is told why, like a refusal inside the handshake.
        let peer = self.identify(&conn, Role::Client, None, &addr.to_string()).map_err(|e| match &e {
            LinkError::Rejected { error, .. } => {
                refuse(&conn, error);
                (Refusal::of(error).name(), e)
            }
            _ => ("handshake-failed", e),
        })?;
        self.track(&conn);
        self.contacts.connected(peer.node(), &conn);
        Ok(PeerConnection { conn, peer, identity, audit_key: None, notes: memo() })
    }

    /// Re-derives the proof of identity from the connection's certificates.
    fn identify(
        &self,
        conn: &quinn::Connection,
        role: Role,
        expected: Option<&NodeId>,
        who: &str,
    ) -> Result<VerifiedPeer, LinkError> {
        let chain = peer_chain(conn).ok_or_else(|| LinkError::Protocol {
            peer: who.into(),
            why: "no certificate presented".into(),
        })?;
        self.verifier
            .check(&chain[0], &chain[1..], role, expected, UnixTime::now())
            .map_err(|error| LinkError::Rejected { peer: who.into(), error })
    }

    fn track(&self, conn: &quinn::Connection) {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).insert(conn.stable_id(), conn.clone());
    }

    /// Re-checks every live connection against the trust in force (after a CRL reload) and closes
    /// those whose peer no longer verifies. Returns how many were closed.
    pub fn recheck_live(&self) -> usize {
        let conns: Vec<quinn::Connection> = {
            let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
            live.retain(|_, c| c.close_reason().is_none());
            live.values().cloned().collect()
        };
        let mut closed = 0;
        for conn in conns {
            let Some(chain) = peer_chain(&conn) else { continue };
            // Roles differ by direction, but gateway certificates carry both usages; the role
            // only matters for usage checks, which passed at handshake time.
            if let Err(e) = self.verifier.check(&chain[0], &chain[1..], Role::Client, None, UnixTime::now()) {
                refuse(&conn, &e);
                closed += 1;
            }
        }
        closed
    }

    /// A connection to `peer` at `addr`: the cached one if still alive, else a new one, checked
    /// with a hello.
    pub async fn connection(&self, peer: &NodeId, addr: SocketAddr) -> Result<PeerConnection, LinkError> {
        if let Some(c) = self.cached(peer) {
            return Ok(c);
        }
        let turn =
            self.dialling.lock().unwrap_or_else(|p| p.into_inner()).entry(peer.clone()).or_default().clone();
        let _turn = turn.lock().await;
        // Whoever dialled while we waited has left a fresh connection.
        if let Some(c) = self.cached(peer) {
            return Ok(c);
        }
        let fresh = tokio::time::timeout(CONNECT_TIMEOUT, self.dial(peer, addr))
            .await
            .map_err(|_| LinkError::Timeout { peer: peer.to_string(), after: CONNECT_TIMEOUT })
            .and_then(|r| r)
            .inspect_err(|e| self.contacts.failed(peer, &e.to_string()))?;
        self.contacts.connected(peer, &fresh.conn);
        self.outbound.lock().unwrap_or_else(|p| p.into_inner()).insert(peer.clone(), fresh.clone());
        Ok(fresh)
    }

    fn cached(&self, peer: &NodeId) -> Option<PeerConnection> {
        let outbound = self.outbound.lock().unwrap_or_else(|p| p.into_inner());
        outbound.get(peer).filter(|c| c.conn.close_reason().is_none()).cloned()
    }

    async fn dial(&self, peer: &NodeId, addr: SocketAddr) -> Result<PeerConnection, LinkError> {
        let connect_err = |why: String| LinkError::Connect { peer: peer.clone(), addr, why };
        let (identity, client) = {
            let tls = self.tls.read().unwrap_or_else(|p| p.into_inner());
            (tls.generation, tls.client.clone())
        };
        let connecting =
            self.endpoint.connect_with(client, addr, &peer.to_server_name()).map_err(|e| match e {
                quinn::ConnectError::EndpointStopping => LinkError::Stopping { peer: peer.to_string() },
                e => connect_err(e.to_string()),
            })?;
        let conn = connecting.await.map_err(|e| match self.verifier.take_server_rejection(peer) {
            Some(error) => LinkError::Rejected { peer: peer.to_string(), error },
            None => match Refusal::from_connection_error(&e) {
                Some(refusal) => refused(&peer.to_string(), refusal, &e),
                None if e == quinn::ConnectionError::LocallyClosed => {
                    LinkError::Stopping { peer: peer.to_string() }
                }
                None => connect_err(e.to_string()),
            },
        })?;
        let verified = self.identify(&conn, Role::Server, Some(peer), &peer.to_string())?;
        let mut pc = PeerConnection { conn, peer: verified, identity, audit_key: None, notes: memo() };
        let hello = Message::Hello {
            version: PROTOCOL_VERSION,
            node: self.local.to_string(),
            software: concat!("fedgate ", env!("CARGO_PKG_VERSION")).into(),
        };
        match request_one(&pc, &hello).await? {
            Message::Welcome { node, audit_key } if node == peer.to_string() => {
                if let Some(k) = audit_key {
                    let key = crate::exchange::witness::audit_verifier(&pc.peer, &k)
                        .map_err(|why| LinkError::Protocol { peer: peer.to_string(), why })?;
                    pc.audit_key = Some(Arc::new(key));
                }
                self.track(&pc.conn);
                Ok(pc)
            }
            other => Err(LinkError::Protocol {
                peer: peer.to_string(),
                why: format!("expected welcome, got {other:?}"),
            }),
        }
    }

    /// Closes every connection and waits for the endpoint to be idle.
    pub async fn shutdown(&self) {
        self.endpoint.close(quinn::VarInt::from_u32(0), b"gateway shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }
}

fn peer_chain(conn: &quinn::Connection) -> Option<Vec<CertificateDer<'static>>> {
    let any = conn.peer_identity()?;
    let chain = any.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    (!chain.is_empty()).then_some(*chain)
}

/// The reason name of a failed inbound handshake: the refusal our verifier's TLS alert stands
/// for, or a generic failure.
fn handshake_failure(e: &quinn::ConnectionError) -> &'static str {
    match e {
        quinn::ConnectionError::TransportError(t) => u64::from(t.code)
            .checked_sub(0x100)
            .filter(|a| *a <= 0xff)
            .and_then(|a| Refusal::from_alert(a as u8, &t.reason))
            .map_or("handshake-failed", Refusal::name),
        quinn::ConnectionError::TimedOut => "handshake-timeout",
        _ => "handshake-failed",
    }
}

/// Closes a connection whose peer's certificate no longer verifies, with the refusal's close
/// code and the reason in words the peer can act on.
fn refuse(conn: &quinn::Connection, error: &PeerError) {
    let refusal = Refusal::of(error);
    conn.close(quinn::VarInt::from_u32(refusal.close_code()), error.to_string().as_bytes());
}

fn refused(peer: &str, refusal: Refusal, e: &quinn::ConnectionError) -> LinkError {
    LinkError::Refused { peer: peer.into(), refusal, detail: e.to_string() }
}

/// Turns a closed connection into the reason the peer gave, if any; a refusal of our certificate
/// becomes [`LinkError::Refused`].
pub fn lost(peer: &str, e: quinn::ConnectionError) -> LinkError {
    if let Some(refusal) = Refusal::from_connection_error(&e) {
        return refused(peer, refusal, &e);
    }
    if e == quinn::ConnectionError::LocallyClosed {
        return LinkError::Stopping { peer: peer.into() };
    }
    let (reason, code) = match &e {
        quinn::ConnectionError::ApplicationClosed(c) => (
            String::from_utf8_lossy(&c.reason).into_owned(),
            ErrorCode::from_quic_code(c.error_code.into_inner()),
        ),
        quinn::ConnectionError::ConnectionClosed(c) => {
            (String::from_utf8_lossy(&c.reason).into_owned(), None)
        }
        other => (other.to_string(), None),
    };
    LinkError::Closed {
        peer: peer.into(),
        reason: if reason.is_empty() { e.to_string() } else { reason },
        code,
    }
}

/// Writes one frame.
pub async fn write_frame(send: &mut quinn::SendStream, msg: &Message, peer: &str) -> Result<(), LinkError> {
    write_encoded(send, &wire::encode(msg), peer).await
}

/// Writes an already encoded frame.
pub async fn write_encoded(send: &mut quinn::SendStream, frame: &[u8], peer: &str) -> Result<(), LinkError> {
    send.write_all(frame).await.map_err(|e| match e {
        quinn::WriteError::ConnectionLost(c) => lost(peer, c),
        other => LinkError::Protocol { peer: peer.into(), why: other.to_string() },
    })
}

/// Reads one frame; `Ok(None)` at a clean end of stream between frames.
pub async fn read_frame(recv: &mut quinn::RecvStream, peer: &str) -> Result<Option<Message>, LinkError> {
    Ok(read_frame_raw(recv, peer).await?.map(|(m, _)| m))
}

/// Reads one frame and also returns its body bytes (transfer digests are over what was sent).
pub async fn read_frame_raw(
    recv: &mut quinn::RecvStream,
    peer: &str,
) -> Result<Option<(Message, Vec<u8>)>, LinkError> {
    let Some(body) = read_body(recv, peer).await? else { return Ok(None) };
    let msg = frame::decode_body(&body).map_err(|error| LinkError::Frame { peer: peer.into(), error })?;
    Ok(Some((msg, body)))
}

/// Reads one frame's body, undecoded; `Ok(None)` at a clean end of stream between frames.
pub async fn read_body(recv: &mut quinn::RecvStream, peer: &str) -> Result<Option<Vec<u8>>, LinkError> {
    let mut header = [0u8; 4];
    match recv.read_exact(&mut header).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(read_error(peer, e)),
    }
    let len = frame::body_len(header).map_err(|error| LinkError::Frame { peer: peer.into(), error })?;
    // Grown as bytes arrive, never allocated at the declared length: a peer that declares a
    // large frame and sends nothing pins nothing.
    let mut body = Vec::with_capacity(len.min(FIRST_READ));
    while body.len() < len {
        match recv.read_chunk(len - body.len(), true).await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk.bytes),
            Ok(None) => return Err(read_error(peer, quinn::ReadExactError::FinishedEarly(body.len()))),
            Err(e) => return Err(read_error(peer, quinn::ReadExactError::ReadError(e))),
        }
    }
    Ok(Some(body))
}

/// The most a frame read allocates before its bytes arrive.
const FIRST_READ: usize = 64 * 1024;

fn read_error(peer: &str, e: quinn::ReadExactError) -> LinkError {
    match e {
        quinn::ReadExactError::FinishedEarly(n) => {
            LinkError::Protocol { peer: peer.into(), why: format!("stream ended {n} bytes into a frame") }
        }
        quinn::ReadExactError::ReadError(quinn::ReadError::ConnectionLost(c)) => lost(peer, c),
        quinn::ReadExactError::ReadError(other) => {
            LinkError::Protocol { peer: peer.into(), why: other.to_string() }
        }
    }
}

/// Sends one request on a new stream and reads exactly one answer; typed errors become
/// [`LinkError::Remote`].
pub async fn request_one(pc: &PeerConnection, req: &Message) -> Result<Message, LinkError> {
    let who = pc.peer.node().to_string();
    let (mut send, mut recv) = pc.conn.open_bi().await.map_err(|e| lost(&who, e))?;
    send_request(&mut send, &mut recv, req, &who).await?;
    match read_frame(&mut recv, &who).await? {
        Some(Message::Error { code, message, .. }) => Err(LinkError::Remote { peer: who, code, message }),
        Some(m) => Ok(m),
        None => Err(LinkError::Protocol { peer: who, why: "stream ended without an answer".into() }),
    }
}

/// Writes a request frame and finishes our side. If the provider stopped reading it (it refuses
/// oversized requests as soon as the header is in), its typed refusal is the error, not the
/// failed write.
pub async fn send_request(
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    req: &Message,
    peer: &str,
) -> Result<(), LinkError> {
    send_encoded_request(send, recv, &wire::encode(req), peer).await
}

/// [`send_request`] with the request frame already encoded.
pub async fn send_encoded_request(
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    frame: &[u8],
    peer: &str,
) -> Result<(), LinkError> {
    let written = write_encoded(send, frame, peer).await;
    let _ = send.finish();
    let Err(e) = written else { return Ok(()) };
    match tokio::time::timeout(REFUSAL_WAIT, read_frame(recv, peer)).await {
        Ok(Ok(Some(Message::Error { code, message, .. }))) => {
            Err(LinkError::Remote { peer: peer.into(), code, message })
        }
        _ => Err(e),
    }
}

/// How long to wait for a provider's refusal after it stopped reading our request.
const REFUSAL_WAIT: Duration = Duration::from_secs(2);

/// Writes a typed error and finishes the stream.
pub async fn reply_error(send: &mut quinn::SendStream, code: ErrorCode, message: String, peer: &str) {
    let _ = write_frame(send, &Message::error(code, message), peer).await;
    let _ = send.finish();
    let _ = send.flush().await;
}

/// An endpoint config whose stateless-reset key and connection-id key are derived from the node's
/// private key, so they survive a restart: a peer still holding a connection to the previous
/// process gets a stateless reset for its next packet and re-dials at once, instead of waiting
/// for the idle timeout.
fn stable_endpoint_config(key: &PrivateKeyDer<'_>) -> quinn::EndpointConfig {
    let derive = |label: &[u8]| {
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key.secret_der()), label);
        hmac::Key::new(hmac::HMAC_SHA256, tag.as_ref())
    };
    let mut cfg = quinn::EndpointConfig::new(Arc::new(derive(b"fedgate stateless reset v1")));
    // Connection ids carry a keyed tag; with a stable key the restarted endpoint recognises its
    // predecessor's ids (and answers them with a reset) while random packets are still dropped.
    let tag = hmac::sign(&derive(b"fedgate connection id v1"), b"");
    let mut cid_key = [0u8; 8];
    cid_key.copy_from_slice(&tag.as_ref()[..8]);
    let cid_key = u64::from_le_bytes(cid_key);
    cfg.cid_generator(move || Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key)));
    cfg
}

/// A link failure as the API, the metrics and the audit receipt name it.
impl From<&LinkError> for ApiCode {
    fn from(e: &LinkError) -> ApiCode {
        match e {
            LinkError::Setup { .. } => ApiCode::Internal,
            // A provider at its connection caps closes with `busy`: retry later, it is up.
            LinkError::Closed { code: Some(code), .. } => ApiCode::from(*code),
            LinkError::Connect { .. } | LinkError::Closed { code: None, .. } => ApiCode::PeerUnavailable,
            LinkError::Stopping { .. } => ApiCode::ShuttingDown,
            LinkError::Refused { .. } => ApiCode::CertificateRefused,
            LinkError::Rejected { .. } => ApiCode::PeerCertificateRejected,
            LinkError::Frame { .. } | LinkError::Protocol { .. } => ApiCode::PeerError,
            LinkError::Remote { code, .. } => ApiCode::from(*code),
            LinkError::Timeout { .. } => ApiCode::PeerTimeout,
        }
    }
}
