//! Whole-log verification, with or without the key that reads entries.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::checkpoint::Checkpoint;
use crate::entry::Entry;
use crate::keys::{Reader, SegmentAccess};
use crate::log::{self, AuditError};
use crate::merkle::CompactRange;

/// What `audit verify` established.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verified {
    /// Entries in the log, all intact.
    pub entries: u64,
    /// Signed checkpoints, all valid and consistent with the entries.
    pub checkpoints: usize,
    /// Size of the latest checkpoint.
    pub signed_size: u64,
    /// Entries were also decrypted and authenticated with a key.
    pub decrypted: bool,
    /// Entries in crypto-shredded segments (intact, but no longer readable by anyone).
    pub shredded: u64,
    /// Entries in segments this reader holds no key for (only counted with a key).
    pub unreadable: u64,
    /// The log ends inside an entry that no checkpoint covers: a write in progress, or one torn
    /// by a crash (never acknowledged; the gateway cuts it on restart).
    pub unfinished_tail: bool,
}

/// Verifies a whole log: framing and stored hashes of every entry, sequence continuity, every
/// checkpoint's signature, each checkpoint's root recomputed from the entries (which also proves
/// checkpoints consistent with each other), and — with the key — every entry's authenticity.
/// The first failure is returned, naming the entry or checkpoint. `progress(done)` is called
/// now and then for long logs.
pub fn verify(
    dir: &Path,
    verifier: &(String, Vec<u8>),
    reader: Option<&Reader>,
    mut progress: impl FnMut(u64),
) -> Result<Verified, AuditError> {
    let (notes, torn) = log::read_checkpoints(dir)?;
    let cp_path = dir.join("checkpoints");
    if let Some(at) = torn {
        return Err(AuditError::BadCheckpoint {
            path: cp_path,
            why: format!("checkpoint {} (byte {at}) is cut short or its length was altered", notes.len() + 1),
        });
    }
    let mut cps = Vec::with_capacity(notes.len());
    for (i, n) in notes.iter().enumerate() {
        let cp = Checkpoint::verify(n, &verifier.0, &verifier.1).map_err(|e| AuditError::BadCheckpoint {
            path: cp_path.clone(),
            why: format!("checkpoint {} of {}: {e}", i + 1, notes.len()),
        })?;
        if let Some(prev) = cps.last().map(|c: &Checkpoint| c.size) {
            if cp.size < prev {
                return Err(AuditError::BadCheckpoint {
                    path: cp_path,
                    why: format!("checkpoint {} shrinks the log from {prev} to {} entries", i + 1, cp.size),
                });
            }
        }
        cps.push(cp);
    }
    let mut tree = CompactRange::default();
    let mut next_cp = 0usize;
    let mut check_cps = |tree: &CompactRange| -> Result<(), AuditError> {
        while next_cp < cps.len() && cps[next_cp].size == tree.size() {
            if cps[next_cp].root != tree.root() {
                let from = if next_cp == 0 { 0 } else { cps[next_cp - 1].size };
                return Err(AuditError::BadCheckpoint {
                    path: cp_path.clone(),
                    why: format!(
                        "checkpoint {} (size {}) does not match the log: an entry in {from}..{} was rewritten",
                        next_cp + 1,
                        tree.size(),
                        tree.size()
                    ),
                });
            }
            next_cp += 1;
        }
        Ok(())
    };
    check_cps(&tree)?;
    let mut segs = Segments::new(dir, reader)?;
    let scan = log::scan(dir, |seq, leaf, hash| {
        if reader.is_some() {
            let (path, access) = segs.at(seq)?;
            if let SegmentAccess::Open(s) = access {
                s.open(leaf).map_err(|e| AuditError::Corrupt {
                    path: path.to_owned(),
                    seq,
                    offset: 0,
                    why: e.to_string(),
                })?;
            }
        }
        tree.push(*hash);
        if seq % 65_536 == 0 {
            progress(seq);
        }
        check_cps(&tree)
    })?;
    let signed = cps.last().map_or(0, |c| c.size);
    if let Some((path, at)) = &scan.torn {
        if scan.entries < signed {
            return Err(AuditError::Corrupt {
                path: path.clone(),
                seq: scan.entries,
                offset: *at,
                why: format!("entry {} is damaged or cut, but a checkpoint covers it", scan.entries),
            });
        }
    }
    if let Some(cp) = cps.get(next_cp) {
        return Err(AuditError::BadCheckpoint {
            path: cp_path,
            why: format!(
                "checkpoint {} covers {} entries but the log holds {}: entries were removed",
                next_cp + 1,
                cp.size,
                scan.entries
            ),
        });
    }
    progress(scan.entries);
    Ok(Verified {
        entries: scan.entries,
        checkpoints: cps.len(),
        signed_size: signed,
        decrypted: reader.is_some(),
        shredded: segs.shredded,
        unreadable: segs.unreadable,
        unfinished_tail: scan.torn.is_some(),
    })
}

/// Decrypts every readable entry in order (entries in shredded or unreadable segments are
/// skipped; [`entries_all`] reports them).
pub fn entries(
    dir: &Path,
    reader: &Reader,
    mut visit: impl FnMut(Entry) -> Result<(), AuditError>,
) -> Result<u64, AuditError> {
    entries_all(dir, reader, |o| match o {
        Opened::Entry(e) => visit(*e),
        _ => Ok(()),
    })
}

/// Every entry in order, as this reader sees it.
pub fn entries_all(
    dir: &Path,
    reader: &Reader,
    mut visit: impl FnMut(Opened) -> Result<(), AuditError>,
) -> Result<u64, AuditError> {
    let mut segs = Segments::new(dir, Some(reader))?;
    let scan = log::scan(dir, |seq, leaf, _| {
        let (path, access) = segs.at(seq)?;
        let opened = match access {
            SegmentAccess::Open(s) => Opened::Entry(Box::new(s.open(leaf).map_err(|e| {
                AuditError::Corrupt { path: path.to_owned(), seq, offset: 0, why: e.to_string() }
            })?)),
            SegmentAccess::Shredded => Opened::Shredded { seq },
            SegmentAccess::Unreadable(why) => Opened::Unreadable { seq, why: why.clone() },
        };
        visit(opened)
    })?;
    Ok(scan.entries)
}

/// The segments of a log and how a reader opens each, looked up by entry.
struct Segments<'r> {
    dir: PathBuf,
    reader: Option<&'r Reader>,
    list: Vec<(u64, PathBuf)>,
    current: Option<(usize, SegmentAccess)>,
    shredded: u64,
    unreadable: u64,
}

impl<'r> Segments<'r> {
    fn new(dir: &Path, reader: Option<&'r Reader>) -> Result<Segments<'r>, AuditError> {
        Ok(Segments {
            dir: dir.to_owned(),
            reader,
            list: log::segments(dir)?,
            current: None,
            shredded: 0,
            unreadable: 0,
        })
    }

    /// The segment holding `seq` and this reader's access to it; counts what cannot be read.
    fn at(&mut self, seq: u64) -> Result<(&Path, &SegmentAccess), AuditError> {
        let i = self.list.iter().rposition(|(f, _)| *f <= seq).unwrap_or(0);
        if self.current.as_ref().is_none_or(|(c, _)| *c != i) {
            let first = self.list.get(i).map_or(0, |(f, _)| *f);
            let access = match self.reader {
                Some(r) => r.open_segment(&self.dir, first)?,
                None => SegmentAccess::Unreadable("no key given".into()),
            };
            self.current = Some((i, access));
        }
        match self.current.as_ref().map(|(_, a)| a) {
            Some(SegmentAccess::Shredded) => self.shredded += 1,
            Some(SegmentAccess::Unreadable(_)) => self.unreadable += 1,
            _ => {}
        }
        let path = self.list.get(i).map_or(self.dir.as_path(), |(_, p)| p.as_path());
        let access =
            self.current.as_ref().map(|(_, a)| a).ok_or_else(|| AuditError::Stopped("no segment".into()))?;
        Ok((path, access))
    }
}

/// One stored entry as a reader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// Decrypted and authenticated.
    Entry(Box<Entry>),
    /// In a crypto-shredded segment.
    Shredded {
        /// Its sequence number.
        seq: u64,
    },
    /// In a segment this reader holds no key for.
    Unreadable {
        /// Its sequence number.
        seq: u64,
        /// Why.
        why: String,
    },
}
