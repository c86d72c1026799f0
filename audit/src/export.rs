//! The bundle an outside auditor receives.

use std::path::{Path, PathBuf};

use crate::log::{self, AuditError};

/// Copies the log (segments, checkpoints, public key) into `out` with a README for the auditor.
pub fn export(dir: &Path, out: &Path) -> Result<u64, AuditError> {
    let io = |p: &Path| {
        let p = p.to_owned();
        move |source| AuditError::Io { path: p, source }
    };
    std::fs::create_dir_all(out).map_err(io(out))?;
    let mut n = 0;
    for (_, seg) in log::segments(dir)? {
        let name = seg.file_name().map(PathBuf::from).unwrap_or_default();
        std::fs::copy(&seg, out.join(name)).map_err(io(&seg))?;
        n += 1;
    }
    for f in ["checkpoints", "signing.pub", crate::keybind::STATEMENTS] {
        let p = dir.join(f);
        if p.exists() {
            std::fs::copy(&p, out.join(f)).map_err(io(&p))?;
        }
    }
    std::fs::write(
        out.join("README.txt"),
        "fedgate audit log export\n\nseg-*.log     encrypted entries (RFC 6962 Merkle tree over them)\ncheckpoints   signed tree heads (C2SP tlog-checkpoint notes, length-prefixed)\nsigning.pub   the note verifier key of the node that signed them\nkey-statements.jsonl  the node certificate's signed statements naming that key, with the chain\n\nVerify without the decryption key:\n  fedgate audit verify --dir THIS_FOLDER --trust root.crt   (the key trusted through the federation root)\n  fedgate audit verify --dir THIS_FOLDER --pubkey THIS_FOLDER/signing.pub\n",
    )
    .map_err(io(out))?;
    Ok(n)
}
