//! Signing with a node's own key, so peers can check what a node vouched for (transfer trailers).

use rustls_pki_types::PrivateKeyDer;
use thiserror::Error;

/// The node key cannot sign.
#[derive(Debug, Error)]
#[error("node key cannot be used for signing: {0}")]
pub struct SignerError(String);

impl SignerError {
    /// An error saying `why`.
    pub fn new(why: impl Into<String>) -> SignerError {
        SignerError(why.into())
    }
}

/// Signs with the node's ECDSA P-256 key (the one its certificate certifies).
pub struct NodeSigner {
    key: ring::signature::EcdsaKeyPair,
    rng: ring::rand::SystemRandom,
}

impl std::fmt::Debug for NodeSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeSigner")
    }
}

impl NodeSigner {
    /// From the node's PKCS#8 private key.
    pub fn new(key: &PrivateKeyDer<'_>) -> Result<NodeSigner, SignerError> {
        let PrivateKeyDer::Pkcs8(pkcs8) = key else {
            return Err(SignerError("expected a PKCS#8 key".into()));
        };
        let rng = ring::rand::SystemRandom::new();
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8.secret_pkcs8_der(),
            &rng,
        )
        .map_err(|e| SignerError(e.to_string()))?;
        Ok(NodeSigner { key, rng })
    }

    /// A fixed-length (64-byte) signature of `message`.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignerError> {
        self.key.sign(&self.rng, message).map(|s| s.as_ref().to_vec()).map_err(|e| SignerError(e.to_string()))
    }
}
