//! Issuing: the federation root, region-bound intermediates, node certificates and CRLs.
//!
//! Keys are ECDSA P-256 with SHA-256 signatures: every TLS 1.3 stack, openssl, HSMs and
//! webpki support it, signatures are small, and ring signs and verifies it fast.

use fedgate_catalog::{NodeId, Region};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SanType,
    SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};
use thiserror::Error;
use time::{Duration, OffsetDateTime};

use crate::inspect::{self, CertInfo};
use crate::names::{self, Named};

/// Default lifetime of a federation root.
pub const ROOT_DAYS: u32 = 3650;
/// Default lifetime of a region intermediate.
pub const CA_DAYS: u32 = 1825;
/// Default lifetime of a node certificate.
pub const NODE_DAYS: u32 = 397;
/// How long a freshly signed CRL claims to be current.
pub const CRL_DAYS: i64 = 30;

/// Why issuing or revoking failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum IssueError {
    /// The CA is bound to a region that does not cover what was asked.
    #[error("this CA is bound to region {ca_region} and may not issue {what}")]
    OutsideRegion {
        /// The issuing CA's region.
        ca_region: Region,
        /// What was asked for (a node id or a region).
        what: String,
    },
    /// The certificate to revoke was not issued by this CA.
    #[error("the certificate for {subject} was issued by {issuer}, not by this CA ({ca})")]
    NotOurs {
        /// Subject of the certificate to revoke.
        subject: String,
        /// Its issuer.
        issuer: String,
        /// This CA's subject.
        ca: String,
    },
    /// A CA certificate lacks its region binding or is otherwise unusable.
    #[error("not a fedgate CA certificate: {0}")]
    NotACa(String),
    /// A certificate or CRL could not be parsed.
    #[error("cannot parse {what}: {why}")]
    Parse {
        /// What was being parsed.
        what: &'static str,
        /// The parser's complaint.
        why: String,
    },
    /// rcgen refused to build or sign.
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// A CA able to issue: its certificate, key, region binding and the chain up to (not including)
/// the federation root.
pub struct Authority {
    cert: CertificateDer<'static>,
    key: KeyPair,
    info: CertInfo,
    region: Region,
    /// Intermediates above this CA, nearest first, root excluded.
    parents: Vec<CertificateDer<'static>>,
    root: CertificateDer<'static>,
}

/// A freshly issued node: chain (leaf first, root excluded) and its private key in PKCS#8 PEM.
pub struct IssuedNode {
    /// Leaf then intermediates; the root goes in `trust.crt`.
    pub chain: Vec<CertificateDer<'static>>,
    /// PKCS#8 PEM of the node's private key.
    pub key_pem: String,
}

/// Which extended key usages a node certificate carries (both, for a normal gateway).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// serverAuth and clientAuth: a gateway both listens and connects.
    Gateway,
    /// Only serverAuth (for tests of usage enforcement).
    ServerOnly,
    /// Only clientAuth (for tests of usage enforcement).
    ClientOnly,
    /// Only codeSigning: wrong for TLS entirely.
    CodeSigning,
}

/// Validity window and usage of a node certificate.
#[derive(Debug, Clone, Copy)]
pub struct NodeProfile {
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity (clamped to the CA's own end).
    pub not_after: OffsetDateTime,
    /// Extended key usages.
    pub usage: Usage,
}

impl NodeProfile {
    /// A gateway certificate valid from `now` for `days`.
    pub fn gateway(now: OffsetDateTime, days: u32) -> Self {
        NodeProfile {
            // A little slack for peers whose clocks run behind.
            not_before: now - Duration::minutes(5),
            not_after: now + Duration::days(i64::from(days)),
            usage: Usage::Gateway,
        }
    }
}

fn new_key() -> Result<KeyPair, IssueError> {
    Ok(KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?)
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    // ring's SystemRandom cannot fail on supported platforms; fall back to time-derived bytes if
    // it ever does rather than issue a zero serial.
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).is_err() {
        let t = OffsetDateTime::now_utc().unix_timestamp_nanos().to_be_bytes();
        bytes.copy_from_slice(&t);
    }
    bytes[0] &= 0x7f; // positive INTEGER
    bytes[0] |= 0x01; // no leading zero byte
    SerialNumber::from_slice(&bytes)
}

fn uri(s: String) -> Result<SanType, IssueError> {
    Ok(SanType::URI(s.try_into()?))
}

fn ca_params(
    cn: String,
    region: &Region,
    now: OffsetDateTime,
    days: u32,
) -> Result<CertificateParams, IssueError> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::OrganizationName,
        format!("fedgate federation {}", region.segments().next().unwrap_or("")),
    );
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p.subject_alt_names = vec![uri(names::region_uri(region))?];
    p.not_before = now - Duration::minutes(5);
    p.not_after = now + Duration::days(i64::from(days));
    p.serial_number = Some(random_serial());
    p.use_authority_key_identifier_extension = true;
    p.key_identifier_method = KeyIdMethod::Sha256;
    Ok(p)
}

impl Authority {
    /// Creates a federation root bound to the federation's top region.
    pub fn new_root(federation: &Region, now: OffsetDateTime, days: u32) -> Result<Authority, IssueError> {
        let key = new_key()?;
        let params = ca_params(format!("fedgate root {federation}"), federation, now, days)?;
        let cert = params.self_signed(&key)?.der().clone();
        Authority::from_parts(cert.clone(), key, Vec::new(), cert)
    }

    /// Rebuilds an authority from its certificate, key, parents (nearest first) and root.
    pub fn from_parts(
        cert: CertificateDer<'static>,
        key: KeyPair,
        parents: Vec<CertificateDer<'static>>,
        root: CertificateDer<'static>,
    ) -> Result<Authority, IssueError> {
        let info = inspect::parse(&cert).map_err(|why| IssueError::Parse { what: "CA certificate", why })?;
        let region = match &info.named {
            Named::Region(r) => r.clone(),
            other => {
                return Err(IssueError::NotACa(format!("{} has no region binding ({other:?})", info.subject)))
            }
        };
        if !info.is_ca {
            return Err(IssueError::NotACa(format!("{} is not a CA certificate", info.subject)));
        }
        Ok(Authority { cert, key, info, region, parents, root })
    }

    /// The region this CA may issue in.
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// This CA's certificate.
    pub fn cert(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The federation root certificate.
    pub fn root(&self) -> &CertificateDer<'static> {
        &self.root
    }

    /// True if and only if this CA is the federation root.
    pub fn is_root(&self) -> bool {
        self.cert == self.root
    }

    /// PKCS#8 PEM of this CA's key.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A fixed-length ECDSA P-256 signature of `message` with this CA's key (what signs a
    /// federation directory; certificates and CRLs are signed through rcgen).
    pub fn sign_message(&self, message: &[u8]) -> Result<Vec<u8>, IssueError> {
        let rng = ring::rand::SystemRandom::new();
        let alg = &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(alg, &self.key.serialize_der(), &rng)
            .map_err(|e| IssueError::NotACa(format!("{}: key cannot sign: {e}", self.info.subject)))?;
        let sig = key
            .sign(&rng, message)
            .map_err(|e| IssueError::NotACa(format!("{}: signing failed: {e}", self.info.subject)))?;
        Ok(sig.as_ref().to_vec())
    }

    /// This CA followed by its parents, root excluded: what goes after a leaf it signs.
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        if self.is_root() {
            return Vec::new();
        }
        std::iter::once(self.cert.clone()).chain(self.parents.iter().cloned()).collect()
    }

    fn issuer(&self) -> Result<Issuer<'static, &KeyPair>, IssueError> {
        Ok(Issuer::from_ca_cert_der(&self.cert, &self.key)?)
    }

    fn clamp(&self, t: OffsetDateTime) -> OffsetDateTime {
        t.min(self.info.not_after)
    }

    /// Issues an intermediate CA bound to `region`, which must lie in this CA's region.
    pub fn issue_ca(&self, region: &Region, now: OffsetDateTime, days: u32) -> Result<Authority, IssueError> {
        if !self.region.covers(region) {
            return Err(IssueError::OutsideRegion {
                ca_region: self.region.clone(),
                what: format!("region {region}"),
            });
        }
        let key = new_key()?;
        let mut params = ca_params(format!("fedgate region CA {region}"), region, now, days)?;
        params.not_after = self.clamp(params.not_after);
        let cert = params.signed_by(&key, &self.issuer()?)?.der().clone();
        Authority::from_parts(cert, key, self.chain(), self.root.clone())
    }

    /// Issues a gateway certificate for `node`, which must lie in this CA's region.
    pub fn issue_node(&self, node: &NodeId, profile: NodeProfile) -> Result<IssuedNode, IssueError> {
        if !self.region.covers(node.region()) {
            return Err(IssueError::OutsideRegion {
                ca_region: self.region.clone(),
                what: format!("node {node}"),
            });
        }
        danger::issue_node_unchecked(self, node, profile)
    }

    /// A CRL listing `revoked` serials (with their revocation times), numbered `number`.
    fn sign_crl(
        &self,
        revoked: Vec<RevokedCertParams>,
        number: u64,
        now: OffsetDateTime,
    ) -> Result<CertificateRevocationListDer<'static>, IssueError> {
        let params = CertificateRevocationListParams {
            this_update: now,
            next_update: now + Duration::days(CRL_DAYS),
            crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs: revoked,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer()?)?.der().clone())
    }

    /// An empty CRL, published when the CA is created so peers always have one to load.
    pub fn empty_crl(
        &self,
        now: OffsetDateTime,
    ) -> Result<CertificateRevocationListDer<'static>, IssueError> {
        self.sign_crl(Vec::new(), 1, now)
    }

    /// Adds `cert` (which this CA must have issued) to `current`, returning the new CRL.
    pub fn revoke(
        &self,
        current: Option<&CertificateRevocationListDer<'_>>,
        cert: &CertificateDer<'_>,
        now: OffsetDateTime,
    ) -> Result<CertificateRevocationListDer<'static>, IssueError> {
        let target =
            inspect::parse(cert).map_err(|why| IssueError::Parse { what: "certificate to revoke", why })?;
        if target.issuer_raw != self.info.subject_raw {
            return Err(IssueError::NotOurs {
                subject: target.subject,
                issuer: target.issuer,
                ca: self.info.subject.clone(),
            });
        }
        let (mut revoked, number) = match current {
            Some(crl) => {
                inspect::crl_entries(crl).map_err(|why| IssueError::Parse { what: "current CRL", why })?
            }
            None => (Vec::new(), 0),
        };
        if !revoked.iter().any(|r| r.serial_number.to_bytes() == target.serial) {
            revoked.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&target.serial),
                revocation_time: now,
                reason_code: None,
                invalidity_date: None,
            });
        }
        self.sign_crl(revoked, number + 1, now)
    }
}

/// Issuing that skips the region check: only for tests that must present bad certificates.
pub mod danger {
    use super::*;

    /// Issues a node certificate without checking that this CA's region covers the node.
    pub fn issue_node_unchecked(
        ca: &Authority,
        node: &NodeId,
        profile: NodeProfile,
    ) -> Result<IssuedNode, IssueError> {
        let key = new_key()?;
        let params = node_params(node, profile, ca.clamp(profile.not_after))?;
        let leaf = params.signed_by(&key, &ca.issuer()?)?.der().clone();
        let chain = std::iter::once(leaf).chain(ca.chain()).collect();
        Ok(IssuedNode { chain, key_pem: key.serialize_pem() })
    }

    /// A self-signed certificate claiming to be `node`.
    pub fn self_signed_node(node: &NodeId, now: OffsetDateTime) -> Result<IssuedNode, IssueError> {
        let key = new_key()?;
        let profile = NodeProfile::gateway(now, 30);
        let leaf = node_params(node, profile, profile.not_after)?.self_signed(&key)?.der().clone();
        Ok(IssuedNode { chain: vec![leaf], key_pem: key.serialize_pem() })
    }

    fn node_params(
        node: &NodeId,
        profile: NodeProfile,
        not_after: OffsetDateTime,
    ) -> Result<CertificateParams, IssueError> {
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node.to_string());
        p.distinguished_name = dn;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = match profile.usage {
            Usage::Gateway => vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
            Usage::ServerOnly => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Usage::ClientOnly => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Usage::CodeSigning => vec![ExtendedKeyUsagePurpose::CodeSigning],
        };
        p.subject_alt_names =
            vec![uri(names::node_uri(node))?, SanType::DnsName(node.to_server_name().try_into()?)];
        p.not_before = profile.not_before;
        p.not_after = not_after;
        p.serial_number = Some(random_serial());
        p.use_authority_key_identifier_extension = true;
        Ok(p)
    }
}
