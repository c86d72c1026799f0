//! The bundle an outside auditor receives.

use std::path::{Path, PathBuf};

use crate::keys;
use crate::log::{self, AuditError};

/// [`export_for`] with no auditor added.
pub fn export(dir: &Path, out: &Path) -> Result<u64, AuditError> {
    export_for(dir, out, None)
}

/// Copies the log (segments, their wrapped keys, checkpoints, public key, key statements) into
/// `out` with a README for the auditor. With `add` (the node's audit key and auditor public
/// keys), each readable segment's key is also wrapped, in the export only, for those auditors.
pub fn export_for(dir: &Path, out: &Path, add: Option<(&[u8; 32], &[[u8; 32]])>) -> Result<u64, AuditError> {
    let io = |p: &Path| {
        let p = p.to_owned();
        move |source| AuditError::Io { path: p, source }
    };
    std::fs::create_dir_all(out).map_err(io(out))?;
    // The checkpoints before the segments: a log being written to may grow while it is copied,
    // and segments copied after hold every entry the copied checkpoints cover (the other way
    // round, a checkpoint made meanwhile would cover entries the copy lacks).
    for f in ["checkpoints", "signing.pub", crate::keybind::STATEMENTS] {
        let p = dir.join(f);
        if p.exists() {
            std::fs::copy(&p, out.join(f)).map_err(io(&p))?;
        }
    }
    let mut n = 0;
    for (first, seg) in log::segments(dir)? {
        let name = seg.file_name().map(PathBuf::from).unwrap_or_default();
        std::fs::copy(&seg, out.join(name)).map_err(io(&seg))?;
        if let Some(mut k) = keys::read(dir, first)? {
            if let Some((master, auditors)) = add {
                for a in auditors {
                    k = keys::add_auditor(master, &k, a).map_err(|e| AuditError::Key {
                        path: keys::keys_path(dir, first),
                        why: e.to_string(),
                    })?;
                }
            }
            keys::write(out, &k)?;
        }
        n += 1;
    }
    std::fs::write(
        out.join("README.txt"),
        "fedgate audit log export\n\nseg-*.log     encrypted entries (RFC 6962 Merkle tree over them)\nseg-*.keys    each segment's data key, wrapped for the node and for auditors (X25519)\ncheckpoints   signed tree heads (C2SP tlog-checkpoint notes, length-prefixed)\nsigning.pub   the note verifier key of the node that signed them\nkey-statements.jsonl  the node certificate's signed statements naming that key, with the chain\n\nVerify without the decryption key:\n  fedgate audit verify --dir THIS_FOLDER --trust root.crt   (the key trusted through the federation root)\n  fedgate audit verify --dir THIS_FOLDER --pubkey THIS_FOLDER/signing.pub\n\nRead it with an auditor key the segments are wrapped for:\n  fedgate audit show --dir THIS_FOLDER --auditor-key auditor.key\n",
    )
    .map_err(io(out))?;
    Ok(n)
}
