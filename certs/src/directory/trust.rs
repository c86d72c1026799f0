//! Signing a directory with a CA key, and verifying one against the federation root.

use std::collections::BTreeSet;

use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};
use time::OffsetDateTime;

use super::{Directory, DirectoryError, Signed};
use crate::authority::Authority;
use crate::inspect::{self, CertInfo};
use crate::names::Named;

/// Prefixed to the body before signing, so a directory signature can never be replayed as (or
/// made from) a signature over anything else a CA key signs.
const DOMAIN: &[u8] = b"fedgate directory v1\0";

fn message(body: &[u8]) -> Vec<u8> {
    [DOMAIN, body].concat()
}

/// Signs `dir` with `ca`, which must be the root or a region CA whose region covers the scope.
pub fn sign(dir: &Directory, ca: &Authority) -> Result<Signed, DirectoryError> {
    if !ca.region().covers(&dir.scope) {
        return Err(DirectoryError::SignerOutsideRegion {
            dir: dir.label(),
            signer_region: ca.region().to_string(),
            scope: dir.scope.to_string(),
        });
    }
    let body = dir.encode();
    let signature = ca.sign_message(&message(&body)).map_err(|e| DirectoryError::Sign(e.to_string()))?;
    Ok(Signed { body, chain: ca.chain(), signature })
}

/// A directory whose signature, signer and contents were checked: only [`verify`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    signed: Signed,
    dir: Directory,
    signer: String,
}

impl Verified {
    /// The directory.
    pub fn directory(&self) -> &Directory {
        &self.dir
    }

    /// The signed form, to persist or pass on.
    pub fn signed(&self) -> &Signed {
        &self.signed
    }

    /// Subject of the CA that signed it.
    pub fn signer(&self) -> &str {
        &self.signer
    }
}

/// The certificate revocation lists a directory's signing chain is checked against: a region CA
/// its issuer has revoked signs no directory, whatever its validity dates say. A list counts
/// only for the CA that issued it, and only if that CA's key signed it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revocations {
    lists: Vec<Crl>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Crl {
    issuer_raw: Vec<u8>,
    signed_part: Vec<u8>,
    signature: Vec<u8>,
    ecdsa_sha256: bool,
    serials: BTreeSet<Vec<u8>>,
}

impl Revocations {
    /// Parses `crls` (DER); a list that does not parse is an error naming its position.
    pub fn parse(crls: &[CertificateRevocationListDer<'_>]) -> Result<Revocations, String> {
        let mut lists = Vec::with_capacity(crls.len());
        for (i, der) in crls.iter().enumerate() {
            let (_, crl) =
                x509_parser::parse_x509_crl(der).map_err(|e| format!("revocation list #{}: {e}", i + 1))?;
            lists.push(Crl {
                issuer_raw: crl.issuer().as_raw().to_vec(),
                signed_part: crl.tbs_cert_list.as_ref().to_vec(),
                signature: crl.signature_value.data.to_vec(),
                ecdsa_sha256: crl.signature_algorithm.algorithm
                    == x509_parser::oid_registry::OID_SIG_ECDSA_WITH_SHA256,
                serials: crl
                    .iter_revoked_certificates()
                    .map(|r| inspect::normalize_serial(r.raw_serial()))
                    .collect(),
            });
        }
        Ok(Revocations { lists })
    }

    /// True if a list issued and signed by `parent` names `child`.
    fn revoked(&self, child: &CertInfo, parent: &CertInfo) -> bool {
        let key = ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_ASN1,
            &parent.public_key,
        );
        self.lists.iter().any(|crl| {
            crl.issuer_raw == parent.subject_raw
                && crl.serials.contains(&child.serial)
                && crl.ecdsa_sha256
                && key.verify(&crl.signed_part, &crl.signature).is_ok()
        })
    }
}

/// Verifies `signed` against the federation `root` and its `revocations` at `now`: the body is
/// a valid canonical directory of the root's federation, the signer's chain leads to the root
/// with every CA inside its parent's region, valid now and not revoked, the signer's region
/// covers the scope, and the signature verifies.
pub fn verify(
    signed: &Signed,
    root: &CertificateDer<'_>,
    revocations: &Revocations,
    now: OffsetDateTime,
) -> Result<Verified, DirectoryError> {
    let dir = Directory::decode(&signed.body)?;
    let name = dir.label();
    let root_info = inspect::parse(root).map_err(|why| DirectoryError::UnknownSigner {
        dir: name.clone(),
        signer: "the trusted root".into(),
        why: format!("unusable root certificate: {why}"),
    })?;
    let Named::Region(federation) = &root_info.named else {
        return Err(DirectoryError::UnknownSigner {
            dir: name,
            signer: root_info.subject,
            why: "the trusted root has no region binding".into(),
        });
    };
    if federation != &dir.federation {
        return Err(DirectoryError::WrongFederation {
            dir: name,
            got: dir.federation.to_string(),
            want: federation.to_string(),
        });
    }
    let signer = signer_of(&signed.chain, &root_info, revocations, now).map_err(|failure| match failure {
        ChainFailure::Broken { signer, why } => {
            DirectoryError::UnknownSigner { dir: name.clone(), signer, why }
        }
        ChainFailure::Revoked { revoked, issuer } => {
            DirectoryError::Revoked { dir: name.clone(), revoked, issuer }
        }
    })?;
    let Named::Region(signer_region) = &signer.named else {
        return Err(DirectoryError::UnknownSigner {
            dir: name,
            signer: signer.subject,
            why: "the signing certificate has no region binding".into(),
        });
    };
    if !signer_region.covers(&dir.scope) {
        return Err(DirectoryError::SignerOutsideRegion {
            dir: name,
            signer_region: signer_region.to_string(),
            scope: dir.scope.to_string(),
        });
    }
    let key = ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P256_SHA256_FIXED,
        &signer.public_key,
    );
    if key.verify(&message(&signed.body), &signed.signature).is_err() {
        return Err(DirectoryError::BadSignature { dir: name, signer: signer.subject });
    }
    Ok(Verified { signed: signed.clone(), dir, signer: signer.subject })
}

/// Why a signing chain is refused.
enum ChainFailure {
    /// A link does not hold: the subject at fault and why.
    Broken { signer: String, why: String },
    /// A CA on the chain is on its issuer's revocation list.
    Revoked { revoked: String, issuer: String },
}

fn broken(signer: &str, why: String) -> ChainFailure {
    ChainFailure::Broken { signer: signer.to_owned(), why }
}

/// The signing CA at the head of `chain` (the root if `chain` is empty), after checking each
/// link up to the root, revocation included.
fn signer_of(
    chain: &[CertificateDer<'_>],
    root_info: &CertInfo,
    revocations: &Revocations,
    now: OffsetDateTime,
) -> Result<CertInfo, ChainFailure> {
    check_valid(root_info, now).map_err(|why| broken(&root_info.subject, why))?;
    if chain.is_empty() {
        return Ok(root_info.clone());
    }
    let mut infos = Vec::with_capacity(chain.len());
    for der in chain {
        infos.push(inspect::parse(der).map_err(|why| broken("a chain certificate", why))?);
    }
    for (i, der) in chain.iter().enumerate() {
        let parent = if i + 1 < chain.len() { &infos[i + 1] } else { root_info };
        issued_by(der, &infos[i], parent, now).map_err(|why| broken(&infos[i].subject, why))?;
        if revocations.revoked(&infos[i], parent) {
            return Err(ChainFailure::Revoked {
                revoked: infos[i].subject.clone(),
                issuer: parent.subject.clone(),
            });
        }
    }
    Ok(infos.swap_remove(0))
}

/// `child` is a valid CA certificate signed by `parent`, inside `parent`'s region.
fn issued_by(
    child_der: &CertificateDer<'_>,
    child: &CertInfo,
    parent: &CertInfo,
    now: OffsetDateTime,
) -> Result<(), String> {
    if !child.is_ca {
        return Err("not a CA certificate".into());
    }
    check_valid(child, now)?;
    if child.issuer_raw != parent.subject_raw {
        return Err(format!("issued by {}, not by {}", child.issuer, parent.subject));
    }
    let (Named::Region(mine), Named::Region(above)) = (&child.named, &parent.named) else {
        return Err("a CA on the chain has no region binding".into());
    };
    if !above.covers(mine) {
        return Err(format!("bound to {mine}, outside its issuer's region {above}"));
    }
    let (_, cert) = x509_parser::parse_x509_certificate(child_der).map_err(|e| e.to_string())?;
    if cert.signature_algorithm.algorithm != x509_parser::oid_registry::OID_SIG_ECDSA_WITH_SHA256 {
        return Err("not signed with ECDSA P-256 / SHA-256".into());
    }
    let key =
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, &parent.public_key);
    key.verify(cert.tbs_certificate.as_ref(), &cert.signature_value.data)
        .map_err(|_| format!("its signature does not verify with the key of {}", parent.subject))
}

fn check_valid(info: &CertInfo, now: OffsetDateTime) -> Result<(), String> {
    if now < info.not_before {
        return Err(format!("not valid before {}", info.not_before));
    }
    if now > info.not_after {
        return Err(format!("expired {}", info.not_after));
    }
    Ok(())
}
