//! Turning a presented certificate chain into a verified federation identity.
//!
//! webpki checks signatures, validity, usages and revocation; this module adds what webpki cannot
//! know: that the leaf carries exactly one node id, and that every CA on the path is bound to a
//! region covering everything below it.

use std::fmt;

use fedgate_catalog::{NodeId, Region};
use rustls_pki_types::{
    CertificateDer, CertificateRevocationListDer, SignatureVerificationAlgorithm, UnixTime,
};
use thiserror::Error;
use webpki::{
    CertRevocationList, EndEntityCert, KeyUsage, OwnedCertRevocationList, RevocationCheckDepth,
    RevocationOptionsBuilder, UnknownStatusPolicy,
};

use crate::inspect;
use crate::names::{self, Named};

/// Which side of the handshake the peer was: its certificate must carry the matching usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The peer connected to us: it must be valid for clientAuth.
    Client,
    /// We connected to the peer: it must be valid for serverAuth.
    Server,
}

/// Why a peer's certificate was refused. Each variant is one thing an operator can fix.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PeerError {
    /// The chain does not lead to this federation's root.
    #[error("certificate is not issued under this federation's root ({0})")]
    UnknownCa(String),
    /// The leaf signs itself.
    #[error("self-signed leaf certificate for {0}")]
    SelfSigned(String),
    /// Past its notAfter.
    #[error("certificate expired")]
    Expired,
    /// Before its notBefore.
    #[error("certificate not yet valid")]
    NotYetValid,
    /// On a loaded CRL.
    #[error("certificate revoked")]
    Revoked,
    /// Lacks the extended key usage for its role.
    #[error("certificate lacks the extended key usage for a TLS {0:?}")]
    WrongUsage(Role),
    /// The leaf has no usable node id.
    #[error("certificate carries no valid fedgate node id: {0}")]
    NoIdentity(String),
    /// A CA on the path is not bound to a region covering what it signed.
    #[error("issuer {issuer} is bound to {issuer_region}, which does not cover {subject}")]
    RegionNotCovered {
        /// The offending CA's subject.
        issuer: String,
        /// Its region.
        issuer_region: String,
        /// What it signed (node id or region).
        subject: String,
    },
    /// The peer is a valid member of the federation, but not the node we meant to reach.
    #[error("expected node {expected}, but the peer is {actual}")]
    WrongNode {
        /// The node we dialled.
        expected: String,
        /// The node that answered.
        actual: String,
    },
    /// Anything else webpki refused, with its reason.
    #[error("invalid certificate: {0}")]
    Invalid(String),
}

/// The outcome of certificate verification: only this module can build one.
///
/// Holding a `VerifiedPeer` proves the chain was verified against the federation root at a given
/// time, that no CA overstepped its region, and that the node id came from the certificate.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifiedPeer {
    node: NodeId,
    serial: Vec<u8>,
    fingerprint: [u8; 32],
    public_key: Vec<u8>,
}

impl VerifiedPeer {
    /// The peer's node id, from its certificate.
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// The leaf's serial number.
    pub fn serial(&self) -> &[u8] {
        &self.serial
    }

    /// SHA-256 of the leaf certificate.
    pub fn fingerprint(&self) -> &[u8; 32] {
        &self.fingerprint
    }

    /// True if and only if `signature` is this peer's ECDSA P-256 signature of `message`, made
    /// with the key its certificate certifies (see [`crate::sign::NodeSigner`]).
    pub fn verify_signature(&self, message: &[u8], signature: &[u8]) -> bool {
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, &self.public_key)
            .verify(message, signature)
            .is_ok()
    }
}

impl fmt::Debug for VerifiedPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifiedPeer({})", self.node)
    }
}

/// What a gateway trusts: the federation root, its region, and the CRLs currently loaded.
pub struct TrustStore {
    root: CertificateDer<'static>,
    anchor: rustls_pki_types::TrustAnchor<'static>,
    federation: Region,
    crls: Vec<CertRevocationList<'static>>,
}

impl fmt::Debug for TrustStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustStore(federation {}, {} CRLs)", self.federation, self.crls.len())
    }
}

/// The signature algorithms peers may use: ring's, as rustls' ring provider offers them.
fn sig_algs() -> &'static [&'static dyn SignatureVerificationAlgorithm] {
    rustls::crypto::ring::default_provider().signature_verification_algorithms.all
}

impl TrustStore {
    /// Trusts `root` (a fedgate federation root) with the given CRLs.
    pub fn new(
        root: CertificateDer<'static>,
        crls: &[CertificateRevocationListDer<'_>],
    ) -> Result<TrustStore, String> {
        let info = inspect::parse(&root)?;
        let federation = match info.named {
            Named::Region(r) => r,
            _ => {
                return Err(format!("{} is not a fedgate federation root (no region binding)", info.subject))
            }
        };
        let anchor =
            webpki::anchor_from_trusted_cert(&root).map_err(|e| format!("unusable root: {e:?}"))?.to_owned();
        let crls = crls
            .iter()
            .map(|c| {
                OwnedCertRevocationList::from_der(c)
                    .map(CertRevocationList::from)
                    .map_err(|e| format!("unusable CRL: {e:?}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TrustStore { root, anchor, federation, crls })
    }

    /// The same trust with a different set of CRLs (for reloads).
    pub fn with_crls(&self, crls: &[CertificateRevocationListDer<'_>]) -> Result<TrustStore, String> {
        TrustStore::new(self.root.clone(), crls)
    }

    /// The federation's top region, taken from the root.
    pub fn federation(&self) -> &Region {
        &self.federation
    }

    /// The root certificate.
    pub fn root(&self) -> &CertificateDer<'static> {
        &self.root
    }

    /// Subject DN of the root, for TLS certificate_authorities hints.
    pub(crate) fn root_subject(&self) -> &[u8] {
        self.anchor.subject.as_ref()
    }

    /// Verifies a presented chain for `role` at `now`.
    pub fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        role: Role,
        now: UnixTime,
    ) -> Result<VerifiedPeer, PeerError> {
        let leaf_info =
            inspect::parse(end_entity).map_err(|e| PeerError::Invalid(format!("bad leaf: {e}")))?;
        if leaf_info.subject_raw == leaf_info.issuer_raw {
            return Err(PeerError::SelfSigned(leaf_info.subject));
        }
        let node = match &leaf_info.named {
            Named::Node(n) => n.clone(),
            Named::Region(r) => {
                return Err(PeerError::NoIdentity(format!("a CA certificate for region {r}, not a node")))
            }
            Named::Nothing => {
                return Err(PeerError::NoIdentity(format!("no {} URI SAN", names::NODE_URI_PREFIX)))
            }
            Named::Ambiguous(why) => return Err(PeerError::NoIdentity(why.clone())),
        };
        let ee = EndEntityCert::try_from(end_entity).map_err(|e| PeerError::Invalid(format!("{e:?}")))?;
        let crl_refs: Vec<&CertRevocationList<'_>> = self.crls.iter().collect();
        let revocation = RevocationOptionsBuilder::new(&crl_refs).ok().map(|b| {
            b.with_depth(RevocationCheckDepth::Chain)
                // A CA whose CRL this gateway has not been given is not thereby distrusted.
                .with_status_policy(UnknownStatusPolicy::Allow)
                .build()
        });
        let usage = match role {
            Role::Client => KeyUsage::client_auth(),
            Role::Server => KeyUsage::server_auth(),
        };
        let region_failure = std::cell::RefCell::new(None);
        let check_regions = |path: &webpki::VerifiedPath<'_>| -> Result<(), webpki::Error> {
            match self.check_region_path(&node, path) {
                Ok(()) => Ok(()),
                Err(e) => {
                    *region_failure.borrow_mut() = Some(e);
                    // Makes webpki try another path, if any; the recorded error explains.
                    Err(webpki::Error::UnknownIssuer)
                }
            }
        };
        let anchors = [self.anchor.clone()];
        let result = ee.verify_for_usage(
            sig_algs(),
            &anchors,
            intermediates,
            now,
            usage,
            revocation,
            Some(&check_regions),
        );
        match result {
            Ok(_) => Ok(VerifiedPeer {
                node,
                serial: leaf_info.serial,
                fingerprint: leaf_info.fingerprint,
                public_key: leaf_info.public_key,
            }),
            Err(e) => Err(region_failure.into_inner().unwrap_or_else(|| map_webpki(e, role))),
        }
    }

    /// Every CA on `path` must be bound to a region covering the next certificate's name.
    fn check_region_path(&self, node: &NodeId, path: &webpki::VerifiedPath<'_>) -> Result<(), PeerError> {
        let mut below_subject = node.to_string();
        let mut below_region = node.region().clone();
        for ca in path.intermediate_certificates() {
            let info = inspect::parse(&ca.der())
                .map_err(|e| PeerError::Invalid(format!("bad intermediate: {e}")))?;
            let Named::Region(region) = info.named else {
                return Err(PeerError::RegionNotCovered {
                    issuer: info.subject,
                    issuer_region: "no region".into(),
                    subject: below_subject,
                });
            };
            if !region.covers(&below_region) {
                return Err(PeerError::RegionNotCovered {
                    issuer: info.subject,
                    issuer_region: region.to_string(),
                    subject: below_subject,
                });
            }
            below_subject = format!("region {region}");
            below_region = region;
        }
        if !self.federation.covers(&below_region) {
            return Err(PeerError::RegionNotCovered {
                issuer: "the federation root".into(),
                issuer_region: self.federation.to_string(),
                subject: below_subject,
            });
        }
        Ok(())
    }
}

fn map_webpki(e: webpki::Error, role: Role) -> PeerError {
    use webpki::Error as W;
    match e {
        W::CertExpired { .. } => PeerError::Expired,
        W::CertNotValidYet { .. } => PeerError::NotYetValid,
        W::CertRevoked => PeerError::Revoked,
        W::UnknownIssuer => PeerError::UnknownCa("no path to the trusted root".into()),
        // A CA with the right name but the wrong key: another federation's, or a forgery.
        W::InvalidSignatureForPublicKey => {
            PeerError::UnknownCa("signature does not verify against the federation's CA keys".into())
        }
        W::RequiredEkuNotFoundContext(_) => PeerError::WrongUsage(role),
        other => PeerError::Invalid(format!("{other:?}")),
    }
}
