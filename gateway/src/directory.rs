//! The node's federation directory: the newest verified one it holds, from the operator's file
//! (`directory` in gateway.toml) or from peers, persisted in the node's state folder so a
//! restart never goes back to an older one.
//!
//! Verifying and merging are [`fedgate_certs::directory`]'s; this module reads and writes the
//! files, keeps the view in force, and queues which peers to exchange directories with (the
//! QUIC drivers do the talking, see [`crate::quic::directory`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use fedgate_catalog::NodeId;
use fedgate_certs::directory::{Bundle, DirectoryError, Revocations, View, MAX_BUNDLE};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use tokio::sync::mpsc;

/// Reads a bundle file, refusing one larger than [`MAX_BUNDLE`] before reading it.
pub fn read_bundle(path: &Path) -> Result<Bundle, String> {
    let len = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    if len > MAX_BUNDLE as u64 {
        return Err(format!("{len} bytes, more than the {MAX_BUNDLE}-byte limit of a directory"));
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    Bundle::decode(&bytes).map_err(|e| e.to_string())
}

/// Writes a bundle file whole (temporary file, then rename), creating its folder.
pub fn write_bundle(path: &Path, bundle: &Bundle) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bundle.encode())?;
    std::fs::rename(&tmp, path)
}

/// Reads and verifies a bundle file against `root` and its `revocations`.
pub fn load_view(
    path: &Path,
    root: &CertificateDer<'_>,
    revocations: &Revocations,
    now: OffsetDateTime,
) -> Result<View, String> {
    View::verify(&read_bundle(path)?, root, revocations, now).map_err(|e| e.to_string())
}

/// What taking in an offered bundle did.
#[derive(Debug, Default)]
pub struct Taken {
    /// Directories now in force, `scope vN`.
    pub accepted: Vec<String>,
    /// Directories refused (older, or conflicting), with why; the held ones stay.
    pub refused: Vec<DirectoryError>,
}

/// The directory a running node holds.
pub struct NodeDirectory {
    root: CertificateDer<'static>,
    // The CRLs in force: a region CA revoked by its issuer signs nothing the node uses.
    revocations: RwLock<Arc<Revocations>>,
    state: PathBuf,
    view: RwLock<Arc<View>>,
    // Merges and the write that persists them happen one at a time.
    merging: Mutex<()>,
    // The connection each peer's directories were last exchanged on: a new one means a fresh
    // connection, on which both sides say what they hold.
    exchanged: Mutex<HashMap<NodeId, usize>>,
    wanted: mpsc::UnboundedSender<NodeId>,
}

impl NodeDirectory {
    /// The directory persisted at `state` merged with the operator's `file`, verified against
    /// `root` and `revocations`; and the queue of peers to exchange directories with. A bad
    /// `file` is the operator's to fix and fails the start; a bad state file (another
    /// federation's, damaged, signed by a since-revoked CA) is logged and ignored.
    pub fn load(
        file: Option<&Path>,
        state: &Path,
        root: CertificateDer<'static>,
        revocations: Revocations,
        now: OffsetDateTime,
    ) -> Result<(NodeDirectory, mpsc::UnboundedReceiver<NodeId>), (PathBuf, String)> {
        let held = match state.exists() {
            true => load_view(state, &root, &revocations, now).unwrap_or_else(|why| {
                tracing::warn!(file = %state.display(), error = %why, "ignoring the persisted directory");
                View::default()
            }),
            false => View::default(),
        };
        let mut view = held.clone();
        if let Some(file) = file {
            let offered = load_view(file, &root, &revocations, now).map_err(|why| (file.to_owned(), why))?;
            let merge = held.merge(&offered);
            for e in &merge.refused {
                tracing::info!(file = %file.display(), error = %e, "the directory file is not newer than the one held");
            }
            view = merge.view;
        }
        if view != held {
            write_bundle(state, &view.bundle()).map_err(|e| (state.to_owned(), e.to_string()))?;
        }
        let (wanted, queue) = mpsc::unbounded_channel();
        let dir = NodeDirectory {
            root,
            revocations: RwLock::new(Arc::new(revocations)),
            state: state.to_owned(),
            view: RwLock::new(Arc::new(view)),
            merging: Mutex::default(),
            exchanged: Mutex::default(),
            wanted,
        };
        Ok((dir, queue))
    }

    /// The view in force (a snapshot; merges swap it).
    pub fn view(&self) -> Arc<View> {
        self.view.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// `node`'s address in the directory, if listed.
    pub fn address(&self, node: &NodeId) -> Option<SocketAddr> {
        self.view().entry(node).map(|e| e.address)
    }

    /// `node`'s pinned certificate fingerprint, if the directory pins one.
    pub fn pinned(&self, node: &NodeId) -> Option<[u8; 32]> {
        self.view().entry(node).and_then(|e| e.fingerprint)
    }

    /// Verifies `bundle` and takes in whatever is newer than what is held, persisting it first.
    /// An offer that does not verify is refused whole; the held directories stay.
    pub fn offer(&self, bundle: &Bundle, now: OffsetDateTime) -> Result<Taken, DirectoryError> {
        let revocations = self.revocations.read().unwrap_or_else(|p| p.into_inner()).clone();
        let offered = View::verify(bundle, &self.root, &revocations, now)?;
        let _turn = self.merging.lock().unwrap_or_else(|p| p.into_inner());
        let merge = self.view().merge(&offered);
        if !merge.accepted.is_empty() {
            if let Err(e) = write_bundle(&self.state, &merge.view.bundle()) {
                // Still used: a node that cannot write its state folder serves with what it
                // verified, and says so; after a restart it asks its peers again.
                tracing::error!(file = %self.state.display(), error = %e, "cannot persist the new directory");
            }
            *self.view.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(merge.view);
        }
        Ok(Taken { accepted: merge.accepted, refused: merge.refused })
    }

    /// Puts new revocation lists in force and drops the held directories they invalidate (a
    /// region CA revoked since it signed), persisting what is left; returns what was dropped.
    /// The root's own directory of a wider scope then answers for the dropped region.
    pub fn set_revocations(&self, revocations: Revocations, now: OffsetDateTime) -> Vec<DirectoryError> {
        let _turn = self.merging.lock().unwrap_or_else(|p| p.into_inner());
        let (kept, dropped) = self.view().reverify(&self.root, &revocations, now);
        *self.revocations.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(revocations);
        if !dropped.is_empty() {
            if let Err(e) = write_bundle(&self.state, &kept.bundle()) {
                tracing::error!(file = %self.state.display(), error = %e, "cannot persist the directory");
            }
            *self.view.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(kept);
        }
        dropped
    }

    /// Reads the operator's file again and takes in what is newer.
    pub fn reload_file(&self, file: &Path, now: OffsetDateTime) -> Result<Taken, String> {
        self.offer(&read_bundle(file)?, now).map_err(|e| e.to_string())
    }

    /// Notes that `node` is reachable on connection `conn`; the first time on each connection,
    /// queues an exchange of directories with it.
    pub fn connected(&self, node: &NodeId, conn: usize) {
        let mut seen = self.exchanged.lock().unwrap_or_else(|p| p.into_inner());
        if seen.insert(node.clone(), conn) != Some(conn) {
            self.want(node);
        }
    }

    /// Queues an exchange of directories with `node`.
    pub fn want(&self, node: &NodeId) {
        // Fails only once the node is stopping and the queue's reader is gone.
        let _ = self.wanted.send(node.clone());
    }
}
