//! The audit log on disk: append with group commit, recover a torn tail, read back.
//!
//! Layout of the log folder (everything in it is safe to hand to an auditor):
//! `seg-<first seq, 20 digits>.log` segment files of framed, encrypted entries (see
//! [`crate::entry`]), `checkpoints` (length-prefixed signed notes) and `signing.pub` (the note
//! verifier key). The keys themselves live outside it, next to the node's config.
//!
//! One writer thread owns the files. Appenders hand it entries and wait; it takes everything
//! queued, encrypts, writes, `fdatasync`s once for the whole group, and only then acknowledges
//! each entry with its sequence number — so an acknowledged entry is on disk, and many
//! appenders share one sync. Checkpoints are signed every [`CHECKPOINT_ENTRIES`] entries or
//! [`CHECKPOINT_INTERVAL`], and at shutdown.

use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use ring::signature::{Ed25519KeyPair, KeyPair};
use thiserror::Error;

use crate::checkpoint::{self, Checkpoint};
use crate::entry::{self, Entry, Kind, Read, Sealer};
use crate::keys::{self, Reader};
use crate::merkle::{CompactRange, GroupProver, Hash};
use crate::witness::Witness;

/// Entries between signed checkpoints.
pub const CHECKPOINT_ENTRIES: u64 = 1000;
/// Longest time a new entry waits for a signed checkpoint.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(10);
/// A segment file is closed and a new one started beyond this size.
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Entries written per group at most (bounds the batch buffer).
const GROUP_MAX: usize = 8192;

/// Why the audit log failed. Messages name the file and the entry.
#[derive(Debug, Error)]
pub enum AuditError {
    /// An I/O error on a log file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The log is damaged somewhere other than a torn tail.
    #[error("{path}: entry {seq} (byte {offset}): {why}")]
    Corrupt {
        /// The segment.
        path: PathBuf,
        /// The entry's sequence number.
        seq: u64,
        /// Its offset in the file.
        offset: u64,
        /// What is wrong.
        why: String,
    },
    /// A checkpoint is missing, altered or inconsistent with the entries.
    #[error("{path}: {why}")]
    BadCheckpoint {
        /// The checkpoints file.
        path: PathBuf,
        /// What is wrong (names the checkpoint and the entries concerned).
        why: String,
    },
    /// A key file is missing or unusable.
    #[error("{path}: {why}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// An entry too large for the log even with its oversized fields replaced by digests; it
    /// was not appended (the log itself is unharmed).
    #[error(transparent)]
    TooLarge(#[from] entry::TooLarge),
    /// The writer has stopped (after an earlier I/O error, or at shutdown).
    #[error("the audit log writer has stopped: {0}")]
    Stopped(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io { path: path.to_owned(), source }
}

/// The node's audit keys: the key that wraps each segment's data key, the checkpoint signing
/// key, and the auditors' public keys each new segment's key is also wrapped for.
pub struct AuditKeys {
    master: [u8; 32],
    signer: Ed25519KeyPair,
    auditors: Vec<[u8; 32]>,
}

impl std::fmt::Debug for AuditKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKeys")
    }
}

fn read_or_create_secret(
    path: &Path,
    make: impl FnOnce() -> Result<Vec<u8>, AuditError>,
) -> Result<Vec<u8>, AuditError> {
    let key_err = |why: String| AuditError::Key { path: path.to_owned(), why };
    match fs::read_to_string(path) {
        Ok(text) => {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(path).map_err(io(path))?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(key_err(format!("readable by others (mode {mode:o}); run chmod 600")));
            }
            fedgate_catalog::unhex(text.trim()).ok_or_else(|| key_err("not a hex-encoded key".into()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let bytes = make()?;
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(io(parent))?;
            }
            write_secret(path, &fedgate_catalog::hex(&bytes)).map_err(io(path))?;
            Ok(bytes)
        }
        Err(e) => Err(io(path)(e)),
    }
}

/// Writes a new secret file with mode 0600; fails if it exists.
fn write_secret(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// The day (UTC+8) of a Unix millisecond time.
fn cst_day(ms: i64) -> i64 {
    (ms / 1000 + 8 * 3600).div_euclid(86_400)
}

fn random<const N: usize>() -> Result<[u8; N], AuditError> {
    let mut b = [0u8; N];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| AuditError::Stopped("no system randomness".into()))?;
    Ok(b)
}

impl AuditKeys {
    /// Loads the keys, creating them (mode 0600) on first use.
    pub fn load_or_create(encryption: &Path, signing: &Path) -> Result<AuditKeys, AuditError> {
        let key = read_or_create_secret(encryption, || Ok(random::<32>()?.to_vec()))?;
        let key: [u8; 32] = key
            .try_into()
            .map_err(|_| AuditError::Key { path: encryption.into(), why: "not a 32-byte key".into() })?;
        let pkcs8 = read_or_create_secret(signing, || {
            Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
                .map(|d| d.as_ref().to_vec())
                .map_err(|_| AuditError::Key { path: signing.into(), why: "cannot generate".into() })
        })?;
        let signer = Ed25519KeyPair::from_pkcs8(&pkcs8)
            .map_err(|e| AuditError::Key { path: signing.into(), why: e.to_string() })?;
        Ok(AuditKeys { master: key, signer, auditors: Vec::new() })
    }

    /// Also wraps every new segment's data key for these auditors' X25519 public keys.
    pub fn with_auditors(mut self, auditors: Vec<[u8; 32]>) -> AuditKeys {
        self.auditors = auditors;
        self
    }

    /// Only the node's audit key, as a reader (for reading a log).
    pub fn load_reader(encryption: &Path) -> Result<Reader, AuditError> {
        let text = fs::read_to_string(encryption).map_err(io(encryption))?;
        let key = fedgate_catalog::unhex(text.trim()).and_then(|k| <[u8; 32]>::try_from(k).ok());
        key.map(Reader::Node)
            .ok_or_else(|| AuditError::Key { path: encryption.into(), why: "not a 32-byte hex key".into() })
    }

    /// A reader with the node's audit key.
    pub fn reader(&self) -> Reader {
        Reader::Node(self.master)
    }

    /// The checkpoint signer's public key.
    pub fn public_key(&self) -> Vec<u8> {
        self.signer.public_key().as_ref().to_vec()
    }
}

/// The segment files of a log, in order, with the first seq each holds.
pub fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, AuditError> {
    let mut out = Vec::new();
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io(dir)(e)),
    };
    for e in rd {
        let e = e.map_err(io(dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(n) =
            name.strip_prefix("seg-").and_then(|r| r.strip_suffix(".log")).and_then(|n| n.parse().ok())
        {
            out.push((n, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("seg-{first:020}.log"))
}

/// What reading a whole log found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Entries read.
    pub entries: u64,
    /// A torn final record: (segment, offset where the good bytes end).
    pub torn: Option<(PathBuf, u64)>,
}

/// Reads every entry in order, calling `visit(seq, leaf, leaf_hash)`. Damage anywhere but at
/// the very end of the last segment is an error naming the entry; a torn end is reported.
pub fn scan(
    dir: &Path,
    mut visit: impl FnMut(u64, &[u8], &Hash) -> Result<(), AuditError>,
) -> Result<Scan, AuditError> {
    let segs = segments(dir)?;
    let mut seq = 0u64;
    let mut result = Scan::default();
    for (i, (first, path)) in segs.iter().enumerate() {
        if *first != seq {
            return Err(AuditError::Corrupt {
                path: path.clone(),
                seq,
                offset: 0,
                why: format!(
                    "segment starts at entry {first}, but entry {seq} comes next: entries are missing"
                ),
            });
        }
        let mut bytes = Vec::new();
        File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(io(path))?;
        let mut at = 0usize;
        while at < bytes.len() {
            match entry::read_record(&bytes[at..]) {
                Read::Record { leaf, hash, len } => {
                    let stored = entry::leaf_seq(leaf).unwrap_or(u64::MAX);
                    if stored != seq {
                        return Err(AuditError::Corrupt {
                            path: path.clone(),
                            seq,
                            offset: at as u64,
                            why: format!("stored as entry {stored}"),
                        });
                    }
                    visit(seq, leaf, &hash)?;
                    seq += 1;
                    at += len;
                }
                Read::Torn if i + 1 == segs.len() => {
                    result.torn = Some((path.clone(), at as u64));
                    break;
                }
                Read::Torn => {
                    return Err(AuditError::Corrupt {
                        path: path.clone(),
                        seq,
                        offset: at as u64,
                        why: "truncated entry inside the log".into(),
                    })
                }
                Read::Corrupt(why) => {
                    return Err(AuditError::Corrupt {
                        path: path.clone(),
                        seq,
                        offset: at as u64,
                        why: why.into(),
                    })
                }
            }
        }
    }
    result.entries = seq;
    Ok(result)
}

/// The checkpoints file in a log folder; appended to only when a checkpoint is signed.
pub const CHECKPOINTS: &str = "checkpoints";

/// Every signed note in the log folder, in order; a torn final note is ignored (and cut on open).
pub fn read_checkpoints(dir: &Path) -> Result<(Vec<String>, Option<u64>), AuditError> {
    let path = dir.join(CHECKPOINTS);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), None)),
        Err(e) => return Err(io(&path)(e)),
    };
    let mut notes = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let len = bytes.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
        let Some(body) = len.filter(|&l| l <= 64 * 1024).and_then(|l| bytes.get(at + 4..at + 4 + l)) else {
            return Ok((notes, Some(at as u64)));
        };
        let note = String::from_utf8(body.to_vec()).map_err(|_| AuditError::Corrupt {
            path: path.clone(),
            seq: notes.len() as u64,
            offset: at as u64,
            why: "checkpoint is not UTF-8".into(),
        })?;
        notes.push(note);
        at += 4 + body.len();
    }
    Ok((notes, None))
}

/// Where an appender waits for its entry's sequence number (or the write error), and with it,
/// if asked for, the signed tree head that covers the entry and its inclusion proof.
enum Ack {
    Seq(oneshot::Sender<Result<u64, String>>),
    Witnessed(oneshot::Sender<Result<(u64, Witness), String>>),
}

impl Ack {
    fn fail(self, why: String) {
        // An appender that stopped waiting needs no answer.
        match self {
            Ack::Seq(a) => drop(a.send(Err(why))),
            Ack::Witnessed(a) => drop(a.send(Err(why))),
        }
    }
}

enum Cmd {
    Append(Box<Entry>, Option<Ack>),
    Close(oneshot::Sender<Result<(), String>>),
}

/// Tunables of a log; the defaults suit a gateway.
#[derive(Debug, Clone, Copy)]
pub struct LogOptions {
    /// Start a new segment file beyond this size.
    pub segment_bytes: u64,
    /// Entries between signed checkpoints.
    pub checkpoint_entries: u64,
    /// Crypto-shred closed segments whose last entry is older than this; `None` keeps all.
    pub retention: Option<Duration>,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions { segment_bytes: SEGMENT_BYTES, checkpoint_entries: CHECKPOINT_ENTRIES, retention: None }
    }
}

/// The default retention (China's Cybersecurity Law asks for at least six months of network logs).
pub const RETENTION_DAYS: u32 = 180;
/// How often the writer looks for segments past retention.
const SHRED_CHECK: Duration = Duration::from_secs(3600);

/// What opening the log found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Entries already in the log.
    pub entries: u64,
    /// Bytes of a torn final entry cut off (never an acknowledged entry).
    pub torn_bytes: u64,
}

/// A handle to the running log; cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Cmd>,
    actor: String,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditLog({})", self.actor)
    }
}

struct Writer {
    dir: PathBuf,
    origin: String,
    keys: AuditKeys,
    next_seq: u64,
    tree: CompactRange,
    file: File,
    file_path: PathBuf,
    file_len: u64,
    checkpoints: File,
    last_checkpoint: u64,
    last_checkpoint_at: Instant,
    options: LogOptions,
    /// The current segment's data key; `None` until a segment with its own key is started
    /// (a new log, or one whose last segment predates per-segment keys).
    seg_sealer: Option<Sealer>,
    /// When the current segment was started (Unix ms): segments also rotate daily, so
    /// retention can shred by whole days.
    seg_opened_ms: i64,
    last_shred_check: Option<Instant>,
}

impl AuditLog {
    /// Opens (recovering a torn tail) or creates the log in `dir`; `origin` names the signer
    /// in checkpoints, e.g. `fedgate.audit/police@wuxi.liangxi`.
    pub fn open(dir: &Path, origin: &str, keys: AuditKeys) -> Result<(AuditLog, Recovery), AuditError> {
        Self::open_with(dir, origin, keys, LogOptions::default())
    }

    /// [`AuditLog::open`] with explicit tunables.
    pub fn open_with(
        dir: &Path,
        origin: &str,
        keys: AuditKeys,
        options: LogOptions,
    ) -> Result<(AuditLog, Recovery), AuditError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let mut tree = CompactRange::default();
        let scan = scan(dir, |_, _, h| {
            tree.push(*h);
            Ok(())
        })?;
        let mut torn_bytes = 0;
        if let Some((path, good)) = &scan.torn {
            let len = fs::metadata(path).map_err(io(path))?.len();
            torn_bytes = len - good;
            let f = OpenOptions::new().write(true).open(path).map_err(io(path))?;
            f.set_len(*good).map_err(io(path))?;
            f.sync_all().map_err(io(path))?;
            tracing::warn!(file = %path.display(), at_entry = scan.entries, cut_bytes = torn_bytes, "audit log had a torn final entry (never acknowledged); cut back to the last whole entry");
        }
        let (notes, torn_cp) = read_checkpoints(dir)?;
        let cp_path = dir.join(CHECKPOINTS);
        if let Some(good) = torn_cp {
            let f = OpenOptions::new().write(true).open(&cp_path).map_err(io(&cp_path))?;
            f.set_len(good).map_err(io(&cp_path))?;
            tracing::warn!(file = %cp_path.display(), "torn final checkpoint cut");
        }
        let (name, public) = (origin.to_owned(), keys.public_key());
        let last_checkpoint = match notes.last() {
            Some(n) => Checkpoint::verify(n, &name, &public).map(|c| c.size).map_err(|e| {
                AuditError::BadCheckpoint {
                    path: cp_path.clone(),
                    why: format!("checkpoint {} (the latest): {e}", notes.len()),
                }
            })?,
            None => 0,
        };
        fs::write(dir.join("signing.pub"), format!("{}\n", checkpoint::verifier_key(origin, &public)))
            .map_err(io(dir))?;
        let segs = segments(dir)?;
        let (file_path, file_len) = match segs.last() {
            Some((_, p)) => (p.clone(), fs::metadata(p).map_err(io(p))?.len()),
            None => (segment_path(dir, 0), 0),
        };
        let file = OpenOptions::new().create(true).append(true).open(&file_path).map_err(io(&file_path))?;
        let checkpoints =
            OpenOptions::new().create(true).append(true).open(&cp_path).map_err(io(&cp_path))?;
        let recovery = Recovery { entries: scan.entries, torn_bytes };
        let first = segs.last().map_or(0, |(f, _)| *f);
        let wrapped_for_all = |k: &keys::SegmentKeys| {
            keys.auditors.iter().all(|a| k.wraps.iter().any(|w| w.to == keys::public_text(a)))
        };
        let (seg_sealer, seg_opened_ms) = match keys::read(dir, first)? {
            // An auditor configured since the segment began: new entries go to a new segment
            // wrapped for them too.
            Some(k) if k.shredded.is_none() && wrapped_for_all(&k) => {
                let dk = keys
                    .reader()
                    .unwrap(&k)
                    .map_err(|e| AuditError::Key { path: keys::keys_path(dir, first), why: e.to_string() })?;
                (Some(Sealer::new(&dk)), k.opened_ms)
            }
            _ => (None, 0),
        };
        let mut w = Writer {
            dir: dir.to_owned(),
            origin: origin.to_owned(),
            keys,
            next_seq: scan.entries,
            tree,
            file,
            file_path,
            file_len,
            checkpoints,
            last_checkpoint,
            last_checkpoint_at: Instant::now(),
            options,
            seg_sealer,
            seg_opened_ms,
            last_shred_check: None,
        };
        w.shred_expired();
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new().name("audit-writer".into()).spawn(move || w.run(rx)).map_err(io(dir))?;
        Ok((AuditLog { tx, actor: origin.to_owned() }, recovery))
    }

    /// Appends `entry` and waits until it is durable; returns its sequence number. Oversized
    /// fields are recorded as length and digest ([`Entry::bounded`]); an entry still too large
    /// is refused with [`AuditError::TooLarge`] and never reaches the file.
    pub async fn append(&self, entry: Entry) -> Result<u64, AuditError> {
        let entry = admit(entry)?;
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Cmd::Append(entry, Some(Ack::Seq(ack))))
            .map_err(|_| AuditError::Stopped("writer gone".into()))?;
        done.await.map_err(|_| AuditError::Stopped("writer gone".into()))?.map_err(AuditError::Stopped)
    }

    /// Like [`AuditLog::append`], and also returns a checkpoint signed over the tree right
    /// after the entry's group (so it covers the entry) with the entry's inclusion proof: what a
    /// provider hands the consumer for it to witness. One signature serves every entry of a
    /// group; the head is not written to the `checkpoints` file, since the entries reproduce it.
    pub async fn append_witnessed(&self, entry: Entry) -> Result<(u64, Witness), AuditError> {
        let entry = admit(entry)?;
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Cmd::Append(entry, Some(Ack::Witnessed(ack))))
            .map_err(|_| AuditError::Stopped("writer gone".into()))?;
        done.await.map_err(|_| AuditError::Stopped("writer gone".into()))?.map_err(AuditError::Stopped)
    }

    /// Like [`AuditLog::append`], from synchronous code.
    pub fn append_blocking(&self, entry: Entry) -> Result<u64, AuditError> {
        let entry = admit(entry)?;
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Cmd::Append(entry, Some(Ack::Seq(ack))))
            .map_err(|_| AuditError::Stopped("writer gone".into()))?;
        futures::executor::block_on(done)
            .map_err(|_| AuditError::Stopped("writer gone".into()))?
            .map_err(AuditError::Stopped)
    }

    /// Queues `entry` without waiting (for callbacks that cannot wait, e.g. inside a TLS
    /// handshake); it becomes durable with the next group.
    pub fn append_later(&self, entry: Entry) {
        match admit(entry) {
            Ok(entry) => {
                let _ = self.tx.send(Cmd::Append(entry, None));
            }
            Err(e) => tracing::error!(error = %e, "audit entry dropped"),
        }
    }

    /// Writes a final checkpoint and stops the writer.
    pub async fn close(&self) -> Result<(), AuditError> {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Cmd::Close(ack)).is_err() {
            return Ok(());
        }
        done.await.map_err(|_| AuditError::Stopped("writer gone".into()))?.map_err(AuditError::Stopped)
    }
}

/// Bounds an entry's fields and checks its size before it is queued, so the writer never
/// writes a leaf the reader would refuse as corrupt.
fn admit(entry: Entry) -> Result<Box<Entry>, AuditError> {
    let entry = entry.bounded();
    entry.check_size()?;
    Ok(Box::new(entry))
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Cmd>) {
        let mut group: Vec<(Box<Entry>, Option<Ack>)> = Vec::new();
        loop {
            let first = match rx.recv_timeout(CHECKPOINT_INTERVAL) {
                Ok(c) => c,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.maybe_checkpoint(true);
                    if self.last_shred_check.is_none_or(|t| t.elapsed() >= SHRED_CHECK) {
                        self.shred_expired();
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.maybe_checkpoint(true);
                    return;
                }
            };
            let mut close = None;
            let mut next = Some(first);
            while let Some(c) = next.take() {
                match c {
                    Cmd::Append(e, ack) => group.push((e, ack)),
                    Cmd::Close(ack) => close = Some(ack),
                }
                if group.len() < GROUP_MAX && close.is_none() {
                    next = rx.try_recv().ok();
                }
            }
            let before = self.tree.clone();
            let outcome =
                if group.is_empty() { Ok((self.next_seq, Vec::new())) } else { self.write_group(&mut group) };
            match &outcome {
                Ok((first_seq, hashes)) => {
                    self.acknowledge(&mut group, *first_seq, &before, hashes);
                    self.maybe_checkpoint(false);
                }
                Err(e) => {
                    tracing::error!(error = %e, "audit log write failed; refusing further appends");
                    for (_, ack) in group.drain(..) {
                        if let Some(ack) = ack {
                            ack.fail(e.to_string());
                        }
                    }
                    // Fail every later append too rather than acknowledge what cannot be kept.
                    while let Ok(c) = rx.recv() {
                        match c {
                            Cmd::Append(_, Some(ack)) => ack.fail(e.to_string()),
                            Cmd::Append(_, None) => {}
                            Cmd::Close(ack) => {
                                let _ = ack.send(Err(e.to_string()));
                                return;
                            }
                        }
                    }
                    return;
                }
            }
            if let Some(ack) = close {
                let r = self.checkpoint().map_err(|e| e.to_string());
                let _ = ack.send(r);
                return;
            }
        }
    }

    /// Tells each appender of a durable group its seq; those who asked also get the tree head
    /// after the group, signed once for all of them, with their entry's inclusion proof.
    fn acknowledge(
        &self,
        group: &mut Vec<(Box<Entry>, Option<Ack>)>,
        first: u64,
        before: &CompactRange,
        hashes: &[Hash],
    ) {
        let witnessed = group.iter().any(|(_, a)| matches!(a, Some(Ack::Witnessed(_))));
        let note = witnessed.then(|| {
            Checkpoint { origin: self.origin.clone(), size: self.tree.size(), root: self.tree.root() }
                .sign(&self.keys.signer)
        });
        let mut prover = GroupProver::new(before, hashes);
        for (i, (_, ack)) in group.drain(..).enumerate() {
            let seq = first + i as u64;
            match (ack, &note) {
                (Some(Ack::Seq(a)), _) => {
                    let _ = a.send(Ok(seq));
                }
                (Some(Ack::Witnessed(a)), Some(note)) => {
                    let w = prover
                        .prove(seq)
                        .map(|path| Witness::new(note.clone(), seq, &hashes[i], &path))
                        .map_err(|e| format!("entry {seq} is durable, but proving it failed: {e}"));
                    let _ = a.send(w.map(|w| (seq, w)));
                }
                (Some(Ack::Witnessed(a)), None) => {
                    let _ = a.send(Err("no tree head was signed".into()));
                }
                (None, _) => {}
            }
        }
    }

    /// Encrypts, frames, writes and syncs a group; returns the first seq and the group's leaf
    /// hashes.
    fn write_group(
        &mut self,
        group: &mut [(Box<Entry>, Option<Ack>)],
    ) -> Result<(u64, Vec<Hash>), AuditError> {
        let first = self.next_seq;
        let ms = now_ms();
        if self.seg_sealer.is_none() || cst_day(ms) != cst_day(self.seg_opened_ms) {
            self.rotate(first, ms)?;
        }
        let (mut buf, mut hashes) = self.seal_group(group, first, ms)?;
        if self.file_len > 0 && self.file_len + buf.len() as u64 > self.options.segment_bytes {
            // The group goes to a new segment, under that segment's key.
            self.rotate(first, ms)?;
            (buf, hashes) = self.seal_group(group, first, ms)?;
        }
        self.file.write_all(&buf).map_err(io(&self.file_path))?;
        self.file.sync_data().map_err(io(&self.file_path))?;
        self.file_len += buf.len() as u64;
        for h in &hashes {
            self.tree.push(*h);
        }
        self.next_seq += group.len() as u64;
        Ok((first, hashes))
    }

    fn seal_group(
        &self,
        group: &mut [(Box<Entry>, Option<Ack>)],
        first: u64,
        ms: i64,
    ) -> Result<(Vec<u8>, Vec<Hash>), AuditError> {
        let sealer = self.seg_sealer.as_ref().ok_or_else(|| AuditError::Stopped("no segment key".into()))?;
        let mut buf = Vec::with_capacity(group.len() * 400);
        let mut hashes = Vec::with_capacity(group.len());
        for (i, (e, _)) in group.iter_mut().enumerate() {
            e.seq = first + i as u64;
            e.time_ms = ms;
            let leaf = sealer.seal(e, random::<12>()?);
            hashes.push(entry::frame(&leaf, &mut buf));
        }
        Ok((buf, hashes))
    }

    /// Starts a segment at entry `first` under a fresh data key, wrapped for the node and each
    /// auditor; the key file is durable before any entry sealed with it.
    fn rotate(&mut self, first: u64, ms: i64) -> Result<(), AuditError> {
        let (dk, k) = keys::new_segment(&self.keys.master, &self.keys.auditors, first, ms)
            .map_err(|e| AuditError::Stopped(e.to_string()))?;
        keys::write(&self.dir, &k)?;
        self.seg_sealer = Some(Sealer::new(&dk));
        self.seg_opened_ms = ms;
        let path = segment_path(&self.dir, first);
        self.file = OpenOptions::new().create(true).append(true).open(&path).map_err(io(&path))?;
        // Make the new file's name durable before entries in it are acknowledged.
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io(&self.dir))?;
        self.file_path = path;
        self.file_len = 0;
        Ok(())
    }

    /// Crypto-shreds closed segments past retention: records a `shred` entry, then destroys the
    /// segment's wrapped keys. The ciphertext and the tree stay, so verification still passes.
    fn shred_expired(&mut self) {
        self.last_shred_check = Some(Instant::now());
        let Some(keep) = self.options.retention else { return };
        let now = now_ms();
        let cutoff = now.saturating_sub(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX));
        let segs = match segments(&self.dir) {
            Ok(s) => s,
            Err(e) => return tracing::error!(error = %e, "listing audit segments for retention failed"),
        };
        for pair in segs.windows(2) {
            let ((first, _), (next, _)) = (&pair[0], &pair[1]);
            if let Err(e) = self.shred_if_expired(*first, *next, cutoff, now) {
                tracing::error!(error = %e, segment = first, "crypto-shredding an expired audit segment failed");
            }
        }
    }

    fn shred_if_expired(&mut self, first: u64, next: u64, cutoff: i64, now: i64) -> Result<(), AuditError> {
        let Some(mut k) = keys::read(&self.dir, first)? else { return Ok(()) };
        // A segment ends when the next one starts.
        let ended = keys::read(&self.dir, next)?.map_or(i64::MAX, |n| n.opened_ms);
        if k.shredded.is_some() || ended >= cutoff {
            return Ok(());
        }
        let days = self.options.retention.map_or(0, |d| d.as_secs() / 86_400);
        let e = Entry {
            kind: Some(Kind::Shred),
            actor: self.origin.trim_start_matches("fedgate.audit/").to_owned(),
            decision: Some("shredded".into()),
            records: Some(next - first),
            reason: Some(format!(
                "retention of {days} days passed: the data key of entries {first}..{next} was destroyed"
            )),
            detail: Some(format!("seg-{first:020}.log")),
            ..Entry::default()
        };
        let mut group = vec![(Box::new(e), None)];
        let (seq, _) = self.write_group(&mut group)?;
        k.wraps.clear();
        k.shredded = Some(keys::Shredded { time_ms: now, entry: seq });
        keys::write(&self.dir, &k)?;
        tracing::info!(
            segment = first,
            entries = next - first,
            shred_entry = seq,
            "audit segment past retention crypto-shredded"
        );
        Ok(())
    }

    fn maybe_checkpoint(&mut self, timer: bool) {
        let pending = self.tree.size() - self.last_checkpoint;
        let due = pending >= self.options.checkpoint_entries
            || (pending > 0 && (timer || self.last_checkpoint_at.elapsed() >= CHECKPOINT_INTERVAL));
        if due {
            if let Err(e) = self.checkpoint() {
                tracing::error!(error = %e, "writing an audit checkpoint failed");
            }
        }
    }

    fn checkpoint(&mut self) -> Result<(), AuditError> {
        let cp = Checkpoint { origin: self.origin.clone(), size: self.tree.size(), root: self.tree.root() };
        let note = cp.sign(&self.keys.signer);
        let mut rec = (note.len() as u32).to_be_bytes().to_vec();
        rec.extend_from_slice(note.as_bytes());
        let path = self.dir.join(CHECKPOINTS);
        self.checkpoints.write_all(&rec).map_err(io(&path))?;
        self.checkpoints.sync_data().map_err(io(&path))?;
        self.last_checkpoint = cp.size;
        self.last_checkpoint_at = Instant::now();
        Ok(())
    }
}
