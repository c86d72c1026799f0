//! The node's own signing keys across certificate rotations.
//!
//! A provider signs each transfer trailer with the key of the certificate the consumer saw in
//! that connection's handshake, or the consumer could not verify it. After a rotation, new
//! connections present the new certificate while connections made before it still hold the old
//! one; so every key stays available by the generation of the link identity it belongs to
//! ([`crate::link::PeerConnection::identity`]), and the task serving a connection's streams is
//! told its generation.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, RwLock};

use fedgate_certs::sign::{NodeSigner, SignerError};

/// Keys of this many past generations are kept; connections older than that are long gone
/// (idle timeout) in any realistic rotation schedule.
const KEPT_GENERATIONS: usize = 8;

tokio::task_local! {
    static CONNECTION_IDENTITY: u64;
}

/// Runs `fut` (the serving of one connection's stream) as belonging to identity generation `gen`.
pub async fn for_connection<F: Future>(gen: u64, fut: F) -> F::Output {
    CONNECTION_IDENTITY.scope(gen, fut).await
}

/// Signing keys by identity generation.
#[derive(Debug)]
pub struct Signers {
    by_generation: RwLock<BTreeMap<u64, Arc<NodeSigner>>>,
}

impl Signers {
    /// The signer of generation 0, the identity the node started with.
    pub fn new(first: NodeSigner) -> Signers {
        Signers { by_generation: RwLock::new(BTreeMap::from([(0, Arc::new(first))])) }
    }

    /// Adds the signer of a new generation; the oldest beyond [`KEPT_GENERATIONS`] is dropped.
    pub fn add(&self, generation: u64, signer: NodeSigner) {
        let mut m = self.by_generation.write().unwrap_or_else(|p| p.into_inner());
        m.insert(generation, Arc::new(signer));
        while m.len() > KEPT_GENERATIONS {
            m.pop_first();
        }
    }

    /// Signs with the key of the current task's connection, or the newest key outside one.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignerError> {
        let generation = CONNECTION_IDENTITY.try_with(|g| *g).ok();
        let signer = {
            let m = self.by_generation.read().unwrap_or_else(|p| p.into_inner());
            match generation {
                Some(g) => m.get(&g).cloned(),
                None => m.values().next_back().cloned(),
            }
        };
        match signer {
            Some(s) => s.sign(message),
            None => Err(SignerError::new("the key of this connection's certificate is no longer kept")),
        }
    }
}
