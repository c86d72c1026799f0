//! Reading certificates and CRLs: what `fedgate pki show` prints and what issuing needs to know.

use rcgen::{RevokedCertParams, SerialNumber};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};
use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;

use crate::names::{self, Named};

/// The facts of one certificate that fedgate cares about.
#[derive(Debug, Clone)]
pub struct CertInfo {
    /// Subject DN as text.
    pub subject: String,
    /// Subject DN, DER.
    pub subject_raw: Vec<u8>,
    /// Issuer DN as text.
    pub issuer: String,
    /// Issuer DN, DER.
    pub issuer_raw: Vec<u8>,
    /// Serial number, big-endian, without leading zero bytes.
    pub serial: Vec<u8>,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// Basic constraints say CA.
    pub is_ca: bool,
    /// The fedgate name it carries.
    pub named: Named,
    /// SHA-256 of the DER.
    pub fingerprint: [u8; 32],
    /// The subject public key (for ECDSA P-256, the uncompressed point).
    pub public_key: Vec<u8>,
}

/// Serial bytes without leading zeros, so DER padding never makes two serials differ.
pub fn normalize_serial(bytes: &[u8]) -> Vec<u8> {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    bytes[start..].to_vec()
}

/// Colon-separated uppercase hex, as openssl prints serials and fingerprints.
pub fn hex_colon(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

fn time_of(t: &x509_parser::time::ASN1Time) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(t.timestamp()).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Parses one DER certificate.
pub fn parse(der: &CertificateDer<'_>) -> Result<CertInfo, String> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    if !rest.is_empty() {
        return Err("trailing bytes after the certificate".into());
    }
    let mut uris = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::URI(u) = name {
                uris.push(*u);
            }
        }
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut fingerprint = [0u8; 32];
    fingerprint.copy_from_slice(digest.as_ref());
    Ok(CertInfo {
        subject: cert.subject().to_string(),
        subject_raw: cert.subject().as_raw().to_vec(),
        issuer: cert.issuer().to_string(),
        issuer_raw: cert.issuer().as_raw().to_vec(),
        serial: normalize_serial(cert.raw_serial()),
        not_before: time_of(&cert.validity().not_before),
        not_after: time_of(&cert.validity().not_after),
        is_ca: cert.is_ca(),
        named: names::classify(uris),
        fingerprint,
        public_key: cert.public_key().subject_public_key.data.to_vec(),
    })
}

/// The revoked entries of a CRL and its CRL number (0 if absent).
pub fn crl_entries(crl: &CertificateRevocationListDer<'_>) -> Result<(Vec<RevokedCertParams>, u64), String> {
    let (_, parsed) = x509_parser::parse_x509_crl(crl).map_err(|e| e.to_string())?;
    let entries = parsed
        .iter_revoked_certificates()
        .map(|r| RevokedCertParams {
            serial_number: SerialNumber::from_slice(&normalize_serial(r.raw_serial())),
            revocation_time: time_of(&r.revocation_date),
            reason_code: None,
            invalidity_date: None,
        })
        .collect();
    let number = parsed.crl_number().map_or(0, |n| {
        n.to_bytes_be().iter().rev().take(8).rev().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
    });
    Ok((entries, number))
}

/// When a CRL says its next issue is due (`None` if it does not say).
pub fn crl_next_update(crl: &CertificateRevocationListDer<'_>) -> Result<Option<OffsetDateTime>, String> {
    let (_, parsed) = x509_parser::parse_x509_crl(crl).map_err(|e| e.to_string())?;
    Ok(parsed.next_update().map(|t| time_of(&t)))
}

/// A human-readable description, for `fedgate pki show`.
pub fn describe(info: &CertInfo) -> String {
    let mut out = String::new();
    match &info.named {
        Named::Node(n) => {
            out.push_str(&format!("node id:     {n}\n"));
            out.push_str(&format!("department:  {}\n", n.department()));
            out.push_str(&format!("region:      {}\n", n.region()));
            out.push_str(&format!("level:       {}\n", n.level()));
        }
        Named::Region(r) => {
            out.push_str(&format!("CA bound to: {r}\n"));
            out.push_str(&format!("level:       {}\n", r.level()));
        }
        Named::Nothing => out.push_str("fedgate name: none (not a fedgate certificate)\n"),
        Named::Ambiguous(why) => out.push_str(&format!("fedgate name: invalid ({why})\n")),
    }
    out.push_str(&format!("subject:     {}\n", info.subject));
    out.push_str(&format!("issuer:      {}\n", info.issuer));
    out.push_str(&format!("CA:          {}\n", if info.is_ca { "yes" } else { "no" }));
    out.push_str(&format!("not before:  {}\n", rfc3339(info.not_before)));
    out.push_str(&format!("not after:   {}\n", rfc3339(info.not_after)));
    out.push_str(&format!("serial:      {}\n", hex_colon(&info.serial)));
    out.push_str(&format!("sha256:      {}\n", hex_colon(&info.fingerprint)));
    out
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| t.to_string())
}
