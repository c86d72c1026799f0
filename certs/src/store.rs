//! The files of a CA folder and a node folder, in PEM.
//!
//! A root folder holds `root.crt`, `root.key` and `crl.pem`; an intermediate folder `ca.crt` (the
//! intermediate followed by any intermediates above it), `ca.key`, `trust.crt` (the root) and
//! `crl.pem`; a node folder `node.crt` (leaf then intermediates), `node.key` and `trust.crt`.
//! Private keys are written with mode 0600 and never overwritten unless asked.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::KeyPair;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use thiserror::Error;

use crate::authority::{Authority, IssueError, IssuedNode};

/// A PKI file could not be read or written; the message names the path.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file's contents are not what was expected.
    #[error("{path}: {why}")]
    Bad {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A key file exists and overwriting was not asked for.
    #[error("{0}: already exists; refusing to overwrite a private key (use --force to replace it)")]
    KeyExists(PathBuf),
    /// The folder is not a CA folder.
    #[error("{0}: not a CA folder (expected root.crt + root.key or ca.crt + ca.key)")]
    NotCaDir(PathBuf),
    /// Issuing failed.
    #[error(transparent)]
    Issue(#[from] IssueError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_owned(), source }
}

fn bad(path: &Path, why: impl Into<String>) -> StoreError {
    StoreError::Bad { path: path.to_owned(), why: why.into() }
}

/// Reads every certificate in a PEM file, in order; an empty file is an error.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, StoreError> {
    let bytes = fs::read(path).map_err(io(path))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(bad(path, "contains no certificate"));
    }
    Ok(certs)
}

/// Reads a PEM private key.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, StoreError> {
    let bytes = fs::read(path).map_err(io(path))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| bad(path, format!("not a PEM private key: {e}")))
}

/// Reads a PEM CRL.
pub fn read_crl(path: &Path) -> Result<CertificateRevocationListDer<'static>, StoreError> {
    let bytes = fs::read(path).map_err(io(path))?;
    CertificateRevocationListDer::from_pem_slice(&bytes).map_err(|e| bad(path, format!("not a PEM CRL: {e}")))
}

fn pem(label: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(label, der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// PEM text of a certificate chain.
pub fn certs_pem(certs: &[CertificateDer<'_>]) -> String {
    certs.iter().map(|c| pem("CERTIFICATE", c)).collect()
}

/// PEM text of a CRL.
pub fn crl_pem(crl: &CertificateRevocationListDer<'_>) -> String {
    pem("X509 CRL", crl)
}

fn write_public(path: &Path, text: &str) -> Result<(), StoreError> {
    // Write to a temporary file then rename, so a reader (a gateway reloading a CRL) never sees
    // half a file.
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text).map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))
}

/// Writes a private key with mode 0600; refuses to replace an existing key unless `force`.
pub fn write_private(path: &Path, text: &str, force: bool) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    if path.exists() && !force {
        return Err(StoreError::KeyExists(path.to_owned()));
    }
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f =
        fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io(&tmp))?;
    f.write_all(text.as_bytes()).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))
}

fn ensure_dir(dir: &Path) -> Result<(), StoreError> {
    fs::create_dir_all(dir).map_err(io(dir))
}

/// Writes a CA folder (root or intermediate) with a fresh empty CRL.
pub fn write_authority(
    dir: &Path,
    ca: &Authority,
    now: time::OffsetDateTime,
    force: bool,
) -> Result<(), StoreError> {
    ensure_dir(dir)?;
    let crl = ca.empty_crl(now)?;
    if ca.is_root() {
        write_private(&dir.join("root.key"), &ca.key_pem(), force)?;
        write_public(&dir.join("root.crt"), &certs_pem(std::slice::from_ref(ca.root())))?;
    } else {
        write_private(&dir.join("ca.key"), &ca.key_pem(), force)?;
        write_public(&dir.join("ca.crt"), &certs_pem(&ca.chain()))?;
        write_public(&dir.join("trust.crt"), &certs_pem(std::slice::from_ref(ca.root())))?;
    }
    write_public(&dir.join("crl.pem"), &crl_pem(&crl))
}

/// Loads the CA in `dir`.
pub fn load_authority(dir: &Path) -> Result<Authority, StoreError> {
    let (cert_path, key_path, root) = if dir.join("root.crt").exists() {
        let p = dir.join("root.crt");
        let root = first(read_certs(&p)?, &p)?;
        (p, dir.join("root.key"), root)
    } else if dir.join("ca.crt").exists() {
        let t = dir.join("trust.crt");
        (dir.join("ca.crt"), dir.join("ca.key"), first(read_certs(&t)?, &t)?)
    } else {
        return Err(StoreError::NotCaDir(dir.to_owned()));
    };
    let mut chain = read_certs(&cert_path)?;
    let cert = chain.remove(0);
    let key_text = fs::read_to_string(&key_path).map_err(io(&key_path))?;
    let key =
        KeyPair::from_pem(&key_text).map_err(|e| bad(&key_path, format!("not a usable CA key: {e}")))?;
    Authority::from_parts(cert, key, chain, root).map_err(|e| bad(&cert_path, e.to_string()))
}

fn first(
    mut certs: Vec<CertificateDer<'static>>,
    path: &Path,
) -> Result<CertificateDer<'static>, StoreError> {
    if certs.len() != 1 {
        return Err(bad(path, format!("expected exactly one certificate, found {}", certs.len())));
    }
    Ok(certs.remove(0))
}

/// Writes a node folder: `node.crt`, `node.key` (0600) and `trust.crt`.
pub fn write_node(
    dir: &Path,
    issued: &IssuedNode,
    root: &CertificateDer<'_>,
    force: bool,
) -> Result<(), StoreError> {
    ensure_dir(dir)?;
    write_private(&dir.join("node.key"), &issued.key_pem, force)?;
    write_public(&dir.join("node.crt"), &certs_pem(&issued.chain))?;
    write_public(&dir.join("trust.crt"), &certs_pem(std::slice::from_ref(root)))
}

/// Revokes the certificate in `cert_file` (its first certificate) in the CA folder's `crl.pem`.
pub fn revoke(ca_dir: &Path, cert_file: &Path, now: time::OffsetDateTime) -> Result<PathBuf, StoreError> {
    let ca = load_authority(ca_dir)?;
    let target = read_certs(cert_file)?.remove(0);
    let crl_path = ca_dir.join("crl.pem");
    let current = if crl_path.exists() { Some(read_crl(&crl_path)?) } else { None };
    let crl = ca.revoke(current.as_ref(), &target, now).map_err(|e| match e {
        IssueError::NotOurs { .. } => bad(cert_file, e.to_string()),
        other => StoreError::Issue(other),
    })?;
    write_public(&crl_path, &crl_pem(&crl))?;
    Ok(crl_path)
}
