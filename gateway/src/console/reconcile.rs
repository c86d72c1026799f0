//! Reconciling this node's audit log with a peer's export, uploaded by an auditor: the same
//! code as `fedgate audit reconcile`, run on two folders — the upload, and this node's own log
//! exported in-process (`fedgate audit export`'s function) with its segments wrapped for the
//! auditor's key, so one key reads both sides as on the command line.
//!
//! The auditor's secret key comes with the upload and lives only for the request: it is never
//! written anywhere, and the scratch folder holding both exports (0700, in the state folder) is
//! removed when the reconciliation ends, whatever its outcome.

use std::path::{Path, PathBuf};

use fedgate_audit::reconcile::Report;
use fedgate_audit::{self as audit, AuditKeys};

use crate::state::Shared;

/// The largest upload taken (the whole form): bigger exports are for `fedgate audit reconcile`.
pub const MAX_UPLOAD: usize = 64 * 1024 * 1024;

/// What an export folder holds, by file name: `Ok(true)` a file reconcile reads, `Ok(false)`
/// one it does not need (the README), else why the name is not one of an export's.
pub fn export_file(name: &str) -> Result<bool, String> {
    let numbered = |suffix: &str| {
        name.strip_prefix("seg-")
            .and_then(|r| r.strip_suffix(suffix))
            .is_some_and(|n| n.len() == 20 && n.bytes().all(|b| b.is_ascii_digit()))
    };
    match name {
        "checkpoints" | "signing.pub" | audit::keybind::STATEMENTS => Ok(true),
        "README.txt" => Ok(false),
        _ if numbered(".log") || numbered(".keys") => Ok(true),
        _ => Err(format!(
            "{name:?} is not a file of an audit export (seg-*.log, seg-*.keys, checkpoints, signing.pub, {})",
            audit::keybind::STATEMENTS
        )),
    }
}

/// A private folder removed with everything in it when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(state_dir: &Path) -> Result<Scratch, String> {
        let token = super::sessions::random_token().ok_or("no system randomness")?;
        let dir = state_dir.join(format!("console-reconcile-{}", &token[..16]));
        let mut b = std::fs::DirBuilder::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            b.mode(0o700);
        }
        b.create(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!(dir = %self.0.display(), error = %e, "console: the reconciliation's scratch folder was not removed");
        }
    }
}

/// The peer export's files: each name checked, none twice, the export's essentials present.
fn write_upload(dir: &Path, files: &[(String, &[u8])]) -> Result<(), String> {
    std::fs::create_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut segments = 0;
    for (name, data) in files {
        if !export_file(name)? {
            continue;
        }
        let path = dir.join(name);
        if path.exists() {
            return Err(format!("{name:?} is in the upload twice"));
        }
        std::fs::write(&path, data).map_err(|e| format!("{name}: {e}"))?;
        segments += usize::from(name.ends_with(".log"));
    }
    if segments == 0 || !dir.join("signing.pub").exists() {
        return Err("the upload is not a whole export: it needs every file of the folder `fedgate audit export` wrote (seg-*.log, signing.pub, …)".into());
    }
    Ok(())
}

/// Reconciles this node's log with the peer export in `files`, read with auditor secret key
/// `key` (the upload must be wrapped for it); each export's audit key is trusted only through
/// its node's certificate and the federation root this node trusts. Blocking.
pub fn run(shared: &Shared, files: &[(String, &[u8])], key: [u8; 32]) -> Result<(String, Report), String> {
    let cfg = &shared.cfg;
    let scratch = Scratch::new(&cfg.state_dir)?;
    let peer = scratch.0.join("peer");
    write_upload(&peer, files)?;
    let trust = crate::audit_trust::read_root(&cfg.tls.trust)?;
    let (verifier, node) = crate::audit_trust::trusted_verifier(&peer, &trust)
        .map_err(|e| format!("the uploaded export: {e}"))?;
    if node == cfg.node.to_string() {
        return Err(format!("the upload is {node}'s own log: upload the export of a peer"));
    }
    let reader = audit::Reader::auditor(key);
    // Entries the key cannot read would show as exchanges the peer never recorded.
    let v = audit::verify(&peer, &verifier, Some(&reader), |_| {})
        .map_err(|e| format!("{node}'s uploaded export does not verify: {e}"))?;
    if v.unreadable > 0 {
        return Err(format!(
            "{} of the {} entries of {node}'s export are in segments not wrapped for this auditor key: export with `fedgate audit export --auditor-key` and this key's .pub",
            v.unreadable, v.entries
        ));
    }
    let master = match AuditKeys::load_reader(&cfg.audit_key).map_err(|e| e.to_string())? {
        audit::Reader::Node(k) => k,
        audit::Reader::Auditor(_) => return Err("the node's audit key is not a node key".into()),
    };
    let own = scratch.0.join("own");
    let auditor = [audit::keys::auditor_public(&key)];
    audit::export_for(&cfg.audit_dir, &own, Some((&master, &auditor))).map_err(|e| e.to_string())?;
    let report = crate::audit_cli::reconcile_exports(&[own, peer], &reader, Some(&trust))
        .map_err(|e| e.to_string())?;
    Ok((node, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_exports_file_names_are_taken() {
        for ok in [
            "seg-00000000000000000001.log",
            "seg-00000000000000004096.keys",
            "checkpoints",
            "signing.pub",
            "key-statements.jsonl",
        ] {
            assert_eq!(export_file(ok), Ok(true), "{ok}");
        }
        assert_eq!(export_file("README.txt"), Ok(false));
        for bad in
            ["seg-1.log", "seg-0000000000000000000x.log", "../signing.pub", "gateway.toml", "", "audit.key"]
        {
            assert!(export_file(bad).unwrap_err().contains("not a file of an audit export"), "{bad}");
        }
    }

    #[test]
    fn an_upload_needs_a_segment_and_the_signing_key_and_each_file_once() {
        let dir = tempfile::tempdir().unwrap();
        let seg: (String, &[u8]) = ("seg-00000000000000000000.log".into(), b"x");
        let key: (String, &[u8]) = ("signing.pub".into(), b"k");
        let readme: (String, &[u8]) = ("README.txt".into(), b"r");
        let err = write_upload(&dir.path().join("a"), &[seg.clone(), readme.clone()]).unwrap_err();
        assert!(err.contains("not a whole export"), "{err}");
        let err = write_upload(&dir.path().join("b"), &[seg.clone(), key.clone(), seg.clone()]).unwrap_err();
        assert!(err.contains("twice"), "{err}");
        write_upload(&dir.path().join("c"), &[seg, key, readme]).unwrap();
        assert!(!dir.path().join("c/README.txt").exists(), "what reconcile does not read is not kept");
    }

    #[test]
    fn the_scratch_folder_is_private_and_goes_away() {
        let dir = tempfile::tempdir().unwrap();
        let s = Scratch::new(dir.path()).unwrap();
        let path = s.0.clone();
        std::fs::write(path.join("f"), b"x").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o700);
        }
        drop(s);
        assert!(!path.exists());
    }
}
