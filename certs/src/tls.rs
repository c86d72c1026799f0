//! rustls configurations for gateways: ring provider only, TLS 1.3 only, no 0-RTT, mutual auth.
//!
//! [`FederationVerifier`] serves both directions. It verifies through [`TrustStore::verify`],
//! checks that a server is the node the client meant to reach, reports every rejection to an
//! optional observer (the gateway logs and audits them), and swaps its CRLs on reload without
//! touching live configs.

use std::fmt;
use std::sync::{Arc, RwLock};

use fedgate_catalog::NodeId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring as ring_provider, CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error as TlsError, SignatureScheme,
};

use crate::verify::{PeerError, Role, TrustStore, VerifiedPeer};

/// The ALPN protocol id both sides must offer.
pub const ALPN: &[u8] = b"fedgate/1";

/// A refused peer certificate, as reported to the observer.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// Whether the peer was connecting to us (client) or we to it (server).
    pub role: Role,
    /// What the peer's certificate claimed to be (its subject), if readable.
    pub claimed: String,
    /// Why it was refused.
    pub error: PeerError,
}

type Observer = Arc<dyn Fn(&Rejection) + Send + Sync>;

/// Verifies federation peers for rustls, in both directions.
pub struct FederationVerifier {
    trust: RwLock<Arc<TrustStore>>,
    hints: Vec<DistinguishedName>,
    algorithms: WebPkiSupportedAlgorithms,
    observer: RwLock<Option<Observer>>,
    // Why the last handshake with each dialled node failed, for a clear error at the dialler
    // (rustls only carries a debug rendering of the reason).
    refused_servers: std::sync::Mutex<std::collections::HashMap<NodeId, PeerError>>,
}

impl fmt::Debug for FederationVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FederationVerifier({:?})", self.current())
    }
}

impl FederationVerifier {
    /// A verifier over `trust`.
    pub fn new(trust: TrustStore) -> Arc<Self> {
        Arc::new(FederationVerifier {
            hints: vec![DistinguishedName::from(trust.root_subject().to_vec())],
            trust: RwLock::new(Arc::new(trust)),
            algorithms: provider().signature_verification_algorithms,
            observer: RwLock::new(None),
            refused_servers: Default::default(),
        })
    }

    /// Calls `f` for every refused peer certificate.
    pub fn set_observer(&self, f: impl Fn(&Rejection) + Send + Sync + 'static) {
        *self.observer.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(f));
    }

    /// Replaces the trust (new CRLs); handshakes after this call use it.
    pub fn reload(&self, trust: TrustStore) {
        *self.trust.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(trust);
    }

    /// The trust currently in force.
    pub fn current(&self) -> Arc<TrustStore> {
        self.trust.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Why the last attempt to reach `node` as a server was refused, if it was (taken once).
    pub fn take_server_rejection(&self, node: &NodeId) -> Option<PeerError> {
        self.refused_servers.lock().unwrap_or_else(|p| p.into_inner()).remove(node)
    }

    /// Verifies and reports; the one path both TLS directions and re-checks go through.
    pub fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        role: Role,
        expected: Option<&NodeId>,
        now: UnixTime,
    ) -> Result<VerifiedPeer, PeerError> {
        let result =
            self.current().verify(end_entity, intermediates, role, now).and_then(|peer| match expected {
                Some(want) if want != peer.node() => {
                    Err(PeerError::WrongNode { expected: want.to_string(), actual: peer.node().to_string() })
                }
                _ => Ok(peer),
            });
        if let (Err(error), Some(want)) = (&result, expected) {
            self.refused_servers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(want.clone(), error.clone());
        }
        if let Err(error) = &result {
            let observer = self.observer.read().unwrap_or_else(|p| p.into_inner()).clone();
            if let Some(observe) = observer {
                let claimed = crate::inspect::parse(end_entity)
                    .map(|i| i.subject)
                    .unwrap_or_else(|_| "unparseable".into());
                observe(&Rejection { role, claimed, error: error.clone() });
            }
        }
        result
    }
}

/// Each reason gets its own TLS alert where TLS has one, so the refused side can tell them apart:
/// revoked 44, expired / not yet valid 45, unknown CA 48, region overstep access_denied 49, wrong
/// usage unsupported_certificate 43, no node id bad_certificate 42, anything else 46.
fn to_tls_error(e: PeerError) -> TlsError {
    let cert_error = match e {
        PeerError::Expired => CertificateError::Expired,
        PeerError::NotYetValid => CertificateError::NotValidYet,
        PeerError::Revoked => CertificateError::Revoked,
        PeerError::UnknownCa(_) | PeerError::SelfSigned(_) => CertificateError::UnknownIssuer,
        PeerError::RegionNotCovered { .. } => CertificateError::ApplicationVerificationFailure,
        PeerError::WrongUsage(_) => CertificateError::InvalidPurpose,
        PeerError::NoIdentity(_) => CertificateError::BadEncoding,
        other => CertificateError::Other(rustls::OtherError(Arc::new(other))),
    };
    TlsError::InvalidCertificate(cert_error)
}

impl ServerCertVerifier for FederationVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        let ServerName::DnsName(name) = server_name else {
            return Err(TlsError::General("fedgate peers are addressed by node id".into()));
        };
        let expected =
            NodeId::from_server_name(name.as_ref()).map_err(|e| TlsError::General(e.to_string()))?;
        self.check(end_entity, intermediates, Role::Server, Some(&expected), now)
            .map(|_| ServerCertVerified::assertion())
            .map_err(to_tls_error)
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        Err(TlsError::PeerIncompatible(rustls::PeerIncompatible::Tls13RequiredForQuic))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for FederationVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, TlsError> {
        self.check(end_entity, intermediates, Role::Client, None, now)
            .map(|_| ClientCertVerified::assertion())
            .map_err(to_tls_error)
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        Err(TlsError::PeerIncompatible(rustls::PeerIncompatible::Tls13RequiredForQuic))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The only crypto provider fedgate uses.
pub fn provider() -> CryptoProvider {
    ring_provider::default_provider()
}

/// Builds a gateway's TLS configs: first the trust, then the identity, then either side.
///
/// Both steps are required by the types, so a config without peer verification cannot be built.
pub struct TlsBuilder<S> {
    state: S,
}

/// Builder state: trust chosen, identity wanted.
pub struct WantsIdentity {
    verifier: Arc<FederationVerifier>,
}

/// Builder state: ready to build either side.
pub struct Ready {
    verifier: Arc<FederationVerifier>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl TlsBuilder<WantsIdentity> {
    /// Starts from the federation verifier.
    pub fn new(verifier: Arc<FederationVerifier>) -> Self {
        TlsBuilder { state: WantsIdentity { verifier } }
    }

    /// This node's certificate chain (leaf first) and key.
    pub fn identity(
        self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> TlsBuilder<Ready> {
        TlsBuilder { state: Ready { verifier: self.state.verifier, chain, key } }
    }
}

impl TlsBuilder<Ready> {
    /// The server side: client certificates required and verified; TLS 1.3; ALPN `fedgate/1`; no 0-RTT.
    pub fn server(&self) -> Result<rustls::ServerConfig, TlsError> {
        let s = &self.state;
        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(s.verifier.clone())
            .with_single_cert(s.chain.clone(), s.key.clone_key())?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        cfg.max_early_data_size = 0;
        Ok(cfg)
    }

    /// The client side: presents this node's certificate; the server must prove it is the node
    /// named in the server name given at connect time ([`NodeId::to_server_name`]).
    pub fn client(&self) -> Result<rustls::ClientConfig, TlsError> {
        let s = &self.state;
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(s.verifier.clone())
            .with_client_auth_cert(s.chain.clone(), s.key.clone_key())?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        cfg.enable_early_data = false;
        // Node ids are not secret, but there is no reason to put them on the wire in clear.
        cfg.enable_sni = false;
        Ok(cfg)
    }
}
