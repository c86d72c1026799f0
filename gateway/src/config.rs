//! A node's `gateway.toml`: who it is, where it listens, its TLS material and its peers.
//!
//! Paths are relative to the file's own folder, so a node folder can be moved as a whole. Errors
//! come back as `FILE:LINE:COL: message`, every one of them, naming the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fedgate_catalog::toml_reader::{Source, Table};
use fedgate_catalog::{Diagnostics, NodeId};
use thiserror::Error;

/// A config that could not be loaded.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file has problems; each is located.
    #[error("{0}")]
    Invalid(#[from] Diagnostics),
}

/// TLS material of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Leaf then intermediates (PEM).
    pub cert: PathBuf,
    /// Private key (PEM, 0600).
    pub key: PathBuf,
    /// The federation root (PEM).
    pub trust: PathBuf,
    /// CRLs to load, re-read when they change.
    pub crls: Vec<PathBuf>,
}

/// A sibling gateway this node may dial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// Its node id, which its certificate must carry.
    pub node: NodeId,
    /// Its QUIC address.
    pub address: SocketAddr,
}

/// Where a dataset's records live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// A SQLite database file.
    Sqlite(PathBuf),
    /// A PostgreSQL connection string (`host=... user=... dbname=...`).
    Postgres(String),
}

/// A 1-based line and column in `gateway.toml`, kept so checks made after parsing (against the
/// catalog, against the database) can still point at the entry they are about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pos {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
}

/// One dataset's source: a table (or view) whose columns are named like the dataset's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceConfig {
    /// The dataset it serves.
    pub dataset: String,
    /// The database.
    pub kind: SourceKind,
    /// Table or view, optionally `schema.table`.
    pub table: String,
    /// Where `dataset = ...` is written.
    pub dataset_at: Pos,
    /// Where `sqlite = ...` or `postgres = ...` is written.
    pub kind_at: Pos,
    /// Where `table = ...` is written.
    pub table_at: Pos,
    /// The column whose growth tells the dataset's changes (`cursor = "COLUMN"`), polled into
    /// the event log; `None` if only the publish API makes events.
    pub cursor: Option<CursorConfig>,
}

/// How a source's changes are found by polling (`cursor` and `poll_ms` of a `[[sources]]` entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorConfig {
    /// A column whose value only grows as rows are inserted or updated (an integer sequence, a
    /// timestamp); it need not be a catalog field.
    pub column: String,
    /// Time between two polls (`poll_ms`, default [`DEFAULT_POLL`]).
    pub interval: Duration,
    /// Where `cursor = ...` is written.
    pub at: Pos,
}

/// How often a cursor column is polled unless `poll_ms` says otherwise.
pub const DEFAULT_POLL: Duration = Duration::from_secs(2);

/// A parsed, validated `gateway.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// The folder relative paths are resolved against.
    pub dir: PathBuf,
    /// This node's id.
    pub node: NodeId,
    /// QUIC listen address.
    pub listen: SocketAddr,
    /// Local HTTP API address.
    pub api: SocketAddr,
    /// The web console's address (`console = "HOST:PORT"`); no console when absent.
    pub console: Option<SocketAddr>,
    /// Where `console = ...` is written.
    pub console_at: Pos,
    /// TLS material.
    pub tls: TlsFiles,
    /// How often CRL files are checked for changes.
    pub reload_interval: Duration,
    /// Known peers.
    pub peers: Vec<PeerConfig>,
    /// Catalog files (may be empty for a node that only asks).
    pub catalog: Vec<PathBuf>,
    /// File holding the local API's bearer token (created 0600 at first start).
    pub api_token: PathBuf,
    /// Grant files.
    pub grants: Vec<PathBuf>,
    /// The provider secret keyed hashes and pseudonyms derive from (created 0600 at first start).
    pub masking_key: PathBuf,
    /// Data sources, one per served dataset.
    pub sources: Vec<SourceConfig>,
    /// Where `catalog = [...]` is written (the start of the file if it is not).
    pub catalog_at: Pos,
    /// The audit log's folder (safe to hand to auditors: no keys in it).
    pub audit_dir: PathBuf,
    /// The audit log's encryption key (0600, created at first start).
    pub audit_key: PathBuf,
    /// The audit checkpoints' Ed25519 signing key (0600, created at first start).
    pub audit_signing_key: PathBuf,
    /// Days a closed audit segment stays readable before it is crypto-shredded (`[audit]
    /// retention_days`, default 180).
    pub audit_retention_days: u32,
    /// Auditors' X25519 public key files each new segment's data key is wrapped for (`[audit]
    /// auditors`).
    pub auditor_keys: Vec<PathBuf>,
    /// Timeouts and the connection cap of the local API (`[api_limits]`).
    pub api_limits: ApiLimits,
    /// The node's state folder: the event log and subscriptions (SQLite), default `state`.
    pub state_dir: PathBuf,
    /// How much of the past the event log keeps for subscribers (`[events]`).
    pub events_backlog: crate::events::Backlog,
    /// Events a subscription may hold stored and unacknowledged by the application before this
    /// node stops asking its provider for more (`[subscriptions] max_unread`, default 10,000).
    pub max_unread: u64,
    /// The signed federation directory the operator installs (`directory`), re-read when it
    /// changes; peers and addresses not under `[[peers]]` are found there.
    pub directory: Option<PathBuf>,
    /// Where the node keeps the newest directory it has verified, from the file or from peers:
    /// `directory.cbor` in the state folder.
    pub directory_state: PathBuf,
    /// The working-day calendar deadlines are counted in (`[calendar] file`); Monday–Friday in
    /// UTC+8 when absent.
    pub calendar: Option<PathBuf>,
    /// Working days a steward has to answer a sharing request for conditional data (`[requests]
    /// answer_days`, default 5).
    pub answer_days: u32,
    /// The grants file the gateway writes from approved sharing requests, loaded with the
    /// steward's own: `approved-grants.toml` in the state folder.
    pub approved_grants: PathBuf,
}

/// How much the local API lets its clients hold, so no client can starve the node of sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiLimits {
    /// Connections served at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Time to deliver a complete request head, counted from when the API starts waiting for
    /// one (so it also closes idle keep-alive connections).
    pub header_timeout: Duration,
    /// A connection on which no byte moves either way for this long is closed, even mid-request.
    pub idle_timeout: Duration,
}

impl Default for ApiLimits {
    fn default() -> ApiLimits {
        ApiLimits {
            max_connections: 256,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
        }
    }
}

impl Config {
    /// A problem located at `at` in this config file.
    pub fn diagnostic(&self, at: Pos, message: impl Into<String>) -> fedgate_catalog::Diagnostic {
        fedgate_catalog::Diagnostic {
            file: self.path.display().to_string(),
            line: at.line,
            col: at.col,
            message: message.into(),
        }
    }

    /// The peer with node id `node`, if listed under `[[peers]]` (which overrides the directory).
    pub fn peer(&self, node: &NodeId) -> Option<&PeerConfig> {
        self.peers.iter().find(|p| &p.node == node)
    }
}

const TOP_KEYS: &[&str] = &[
    "node",
    "listen",
    "api",
    "api_token",
    "tls",
    "reload_secs",
    "catalog",
    "grants",
    "masking_key",
    "sources",
    "audit_dir",
    "audit_key",
    "audit_signing_key",
    "audit",
    "peers",
    "api_limits",
    "state_dir",
    "events",
    "subscriptions",
    "directory",
    "calendar",
    "requests",
    "console",
];
const CALENDAR_KEYS: &[&str] = &["file"];
const REQUESTS_KEYS: &[&str] = &["answer_days"];
const EVENTS_KEYS: &[&str] = &["max_age_secs", "max_count"];
const SUBSCRIPTIONS_KEYS: &[&str] = &["max_unread"];
const SOURCE_KEYS: &[&str] = &["dataset", "sqlite", "postgres", "table", "cursor", "poll_ms"];
const TLS_KEYS: &[&str] = &["cert", "key", "trust", "crls"];
const PEER_KEYS: &[&str] = &["node", "address"];
const API_LIMIT_KEYS: &[&str] = &["max_connections", "header_timeout_secs", "idle_timeout_secs"];
const AUDIT_KEYS: &[&str] = &["retention_days", "auditors"];

/// Reads and validates the config at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
    parse(path, &text).map_err(ConfigError::Invalid)
}

/// Parses config text; `path` names the file in messages and anchors relative paths.
pub fn parse(path: &Path, text: &str) -> Result<Config, Diagnostics> {
    let file = path.display().to_string();
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut src = Source::new(&file, text);
    let Some(doc) = src.parse() else { return Err(Diagnostics(src.into_diagnostics())) };
    let root = Table::root(&doc);
    root.deny_unknown(&mut src, TOP_KEYS);
    let node = root.parse::<NodeId>(&mut src, "node");
    let listen = addr(&root, &mut src, "listen");
    let api = addr(&root, &mut src, "api");
    let console = root.get("console").and_then(|_| addr(&root, &mut src, "console"));
    let console_at = root.get("console").map_or(Pos::default(), |v| pos(text, v.span().start));
    let reload_secs = match root.opt_int(&mut src, "reload_secs") {
        Some((n, _)) if (1..=86_400).contains(&n) => n as u64,
        Some((_, span)) => {
            src.error(span, "`reload_secs` must be between 1 and 86400");
            5
        }
        None => 5,
    };
    let tls = tls_files(&root, &mut src, &dir);
    let catalog = root.str_list(&mut src, "catalog").into_iter().map(|(s, _)| dir.join(s)).collect();
    let catalog_at = root.get("catalog").map_or(Pos { line: 1, col: 1 }, |v| pos(text, v.span().start));
    let api_token = dir.join(root.opt_str(&mut src, "api_token").map_or("api.token", |(s, _)| s));
    let grants = root.str_list(&mut src, "grants").into_iter().map(|(s, _)| dir.join(s)).collect();
    let masking_key = dir.join(root.opt_str(&mut src, "masking_key").map_or("masking.key", |(s, _)| s));
    let mut peers = Vec::new();
    for t in root.tables(&mut src, "peers") {
        t.deny_unknown(&mut src, PEER_KEYS);
        let n = t.parse::<NodeId>(&mut src, "node");
        let a = addr(&t, &mut src, "address");
        if let (Some(node), Some(address)) = (n, a) {
            if peers.iter().any(|p: &PeerConfig| p.node == node) {
                src.error(t.key_span("node"), format!("peer {node} is listed twice"));
            }
            peers.push(PeerConfig { node, address });
        }
    }
    let sources = sources(&root, &mut src, &dir, text);
    let path_or = |src: &mut Source<'_>, key: &str, default: &str| {
        dir.join(root.opt_str(src, key).map_or(default, |(s, _)| s))
    };
    let audit_dir = path_or(&mut src, "audit_dir", "audit");
    let audit_key = path_or(&mut src, "audit_key", "audit.key");
    let audit_signing_key = path_or(&mut src, "audit_signing_key", "audit-signing.key");
    let api_limits = api_limits(&root, &mut src);
    let directory = root.opt_str(&mut src, "directory").map(|(s, _)| dir.join(s));
    let (audit_retention_days, auditor_keys) = audit_table(&root, &mut src, &dir);
    let state_dir = path_or(&mut src, "state_dir", "state");
    let directory_state = state_dir.join("directory.cbor");
    let events_backlog = events_table(&root, &mut src);
    let max_unread = subscriptions_table(&root, &mut src);
    let calendar = root.opt_table(&mut src, "calendar").and_then(|t| {
        t.deny_unknown(&mut src, CALENDAR_KEYS);
        t.str(&mut src, "file").map(|(s, _)| dir.join(s))
    });
    let answer_days = requests_table(&root, &mut src);
    let approved_grants = state_dir.join("approved-grants.toml");
    match (node, listen, api, tls) {
        (Some(node), Some(listen), Some(api), Some(tls)) if src.is_clean() => Ok(Config {
            path: path.to_owned(),
            dir,
            node,
            listen,
            api,
            console,
            console_at,
            tls,
            reload_interval: Duration::from_secs(reload_secs),
            peers,
            catalog,
            api_token,
            grants,
            masking_key,
            sources,
            catalog_at,
            audit_dir,
            audit_key,
            audit_signing_key,
            audit_retention_days,
            auditor_keys,
            api_limits,
            state_dir,
            events_backlog,
            max_unread,
            directory,
            directory_state,
            calendar,
            answer_days,
            approved_grants,
        }),
        _ => Err(Diagnostics(src.into_diagnostics())),
    }
}

/// True if and only if `s` is `table` or `schema.table` of plain SQL identifiers.
fn valid_table(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() <= 2 && parts.iter().all(|p| valid_ident(p))
}

/// True if and only if `p` is a plain SQL identifier (letters, digits, `_`; at most 63 bytes).
fn valid_ident(p: &str) -> bool {
    let mut b = p.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
        && p.len() <= 63
}

/// `cursor` and `poll_ms` of one `[[sources]]` entry.
fn cursor_of(t: &Table<'_, '_>, src: &mut Source<'_>, text: &str) -> Option<CursorConfig> {
    let poll = match t.opt_int(src, "poll_ms") {
        Some((n, _)) if (50..=3_600_000).contains(&n) => Some(Duration::from_millis(n as u64)),
        Some((_, span)) => {
            src.error(span, "`poll_ms` must be between 50 and 3600000");
            None
        }
        None => None,
    };
    let Some((column, span)) = t.opt_str(src, "cursor") else {
        if poll.is_some() {
            src.error(t.key_span("poll_ms"), "`poll_ms` needs `cursor = \"COLUMN\"`: the column polled");
        }
        return None;
    };
    if !valid_ident(column) {
        src.error(span, format!("`cursor` {column:?} must be a plain SQL column name (letters, digits, _)"));
        return None;
    }
    Some(CursorConfig {
        column: column.to_owned(),
        interval: poll.unwrap_or(DEFAULT_POLL),
        at: pos(text, span.start),
    })
}

fn pos(text: &str, at: usize) -> Pos {
    let (line, col) = fedgate_catalog::toml_reader::line_col(text, at);
    Pos { line, col }
}

fn sources(root: &Table<'_, '_>, src: &mut Source<'_>, dir: &Path, text: &str) -> Vec<SourceConfig> {
    let mut out: Vec<SourceConfig> = Vec::new();
    for t in root.tables(src, "sources") {
        t.deny_unknown(src, SOURCE_KEYS);
        let dataset = t.str(src, "dataset").map(|(s, _)| s.to_owned());
        let table = match t.str(src, "table") {
            Some((s, span)) if !valid_table(s) => {
                src.error(span, format!("`table` {s:?} must be a plain SQL name (letters, digits, _), optionally schema.table"));
                None
            }
            other => other.map(|(s, _)| s.to_owned()),
        };
        let cursor = cursor_of(&t, src, text);
        let kind = match (t.opt_str(src, "sqlite"), t.opt_str(src, "postgres")) {
            (Some((p, _)), None) => Some(SourceKind::Sqlite(dir.join(p))),
            (None, Some((c, _))) => Some(SourceKind::Postgres(c.to_owned())),
            _ => {
                src.error(
                    t.span(),
                    "a source needs exactly one of `sqlite = \"FILE\"` or `postgres = \"CONNECTION\"`",
                );
                None
            }
        };
        if let (Some(dataset), Some(kind), Some(table)) = (dataset, kind, table) {
            if out.iter().any(|s| s.dataset == dataset) {
                src.error(t.key_span("dataset"), format!("dataset `{dataset}` has two sources"));
            }
            let at = |key: &str| {
                t.get(key).map_or_else(|| pos(text, t.span().start), |v| pos(text, v.span().start))
            };
            let kind_at = at(if t.get("sqlite").is_some() { "sqlite" } else { "postgres" });
            out.push(SourceConfig {
                dataset,
                kind,
                table,
                dataset_at: at("dataset"),
                kind_at,
                table_at: at("table"),
                cursor,
            });
        }
    }
    out
}

fn addr(t: &Table<'_, '_>, src: &mut Source<'_>, key: &str) -> Option<SocketAddr> {
    let (s, span) = t.str(src, key)?;
    match s.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            src.error(
                span,
                format!("`{key}` must be HOST:PORT with a numeric IP, e.g. 127.0.0.1:7400 (got {s:?})"),
            );
            None
        }
    }
}

/// Retention below this warns at start: China's Cybersecurity Law asks network logs to be kept
/// at least six months.
pub const MIN_RETENTION_DAYS: u32 = 180;

/// `[audit]`: retention in days (1..=36500, default 180) and the auditor public key files.
fn audit_table(root: &Table<'_, '_>, src: &mut Source<'_>, dir: &Path) -> (u32, Vec<PathBuf>) {
    let Some(t) = root.opt_table(src, "audit") else { return (MIN_RETENTION_DAYS, Vec::new()) };
    t.deny_unknown(src, AUDIT_KEYS);
    let days = match t.opt_int(src, "retention_days") {
        Some((n, _)) if (1..=36_500).contains(&n) => n as u32,
        Some((_, span)) => {
            src.error(span, "`audit.retention_days` must be between 1 and 36500");
            MIN_RETENTION_DAYS
        }
        None => MIN_RETENTION_DAYS,
    };
    let auditors = t.str_list(src, "auditors").into_iter().map(|(s, _)| dir.join(s)).collect();
    (days, auditors)
}

/// `[events]`: the event log's backlog bounds (max_age_secs 60..=31536000, max_count
/// 1..=100000000; defaults a week and 100,000).
fn events_table(root: &Table<'_, '_>, src: &mut Source<'_>) -> crate::events::Backlog {
    let mut b = crate::events::Backlog::default();
    let Some(t) = root.opt_table(src, "events") else { return b };
    t.deny_unknown(src, EVENTS_KEYS);
    let mut int = |key: &str, min: i64, max: i64| match t.opt_int(src, key) {
        Some((n, _)) if (min..=max).contains(&n) => Some(n),
        Some((_, span)) => {
            src.error(span, format!("`events.{key}` must be between {min} and {max}"));
            None
        }
        None => None,
    };
    if let Some(n) = int("max_age_secs", 60, 31_536_000) {
        b.max_age_secs = n;
    }
    if let Some(n) = int("max_count", 1, 100_000_000) {
        b.max_count = n as u64;
    }
    b
}

/// The unread bound a subscriber keeps unless `[subscriptions] max_unread` says otherwise.
pub const DEFAULT_MAX_UNREAD: u64 = 10_000;

/// `[subscriptions]`: `max_unread` (1..=10000000, default [`DEFAULT_MAX_UNREAD`]).
fn subscriptions_table(root: &Table<'_, '_>, src: &mut Source<'_>) -> u64 {
    let Some(t) = root.opt_table(src, "subscriptions") else { return DEFAULT_MAX_UNREAD };
    t.deny_unknown(src, SUBSCRIPTIONS_KEYS);
    match t.opt_int(src, "max_unread") {
        Some((n, _)) if (1..=10_000_000).contains(&n) => n as u64,
        Some((_, span)) => {
            src.error(span, "`subscriptions.max_unread` must be between 1 and 10000000");
            DEFAULT_MAX_UNREAD
        }
        None => DEFAULT_MAX_UNREAD,
    }
}

fn requests_table(root: &Table<'_, '_>, src: &mut Source<'_>) -> u32 {
    let default = crate::governance::request::DEFAULT_ANSWER_DAYS;
    let Some(t) = root.opt_table(src, "requests") else { return default };
    t.deny_unknown(src, REQUESTS_KEYS);
    match t.opt_int(src, "answer_days") {
        Some((n, _)) if (0..=60).contains(&n) => n as u32,
        Some((_, span)) => {
            src.error(span, "`requests.answer_days` must be between 0 and 60 (working days)");
            default
        }
        None => default,
    }
}

fn api_limits(root: &Table<'_, '_>, src: &mut Source<'_>) -> ApiLimits {
    let mut limits = ApiLimits::default();
    let Some(t) = root.opt_table(src, "api_limits") else { return limits };
    t.deny_unknown(src, API_LIMIT_KEYS);
    let mut int = |key: &str, max: i64| match t.opt_int(src, key) {
        Some((n, _)) if (1..=max).contains(&n) => Some(n as u64),
        Some((_, span)) => {
            src.error(span, format!("`api_limits.{key}` must be between 1 and {max}"));
            None
        }
        None => None,
    };
    if let Some(n) = int("max_connections", 1_000_000) {
        limits.max_connections = n as usize;
    }
    if let Some(n) = int("header_timeout_secs", 3600) {
        limits.header_timeout = Duration::from_secs(n);
    }
    if let Some(n) = int("idle_timeout_secs", 86_400) {
        limits.idle_timeout = Duration::from_secs(n);
    }
    limits
}

fn tls_files(root: &Table<'_, '_>, src: &mut Source<'_>, dir: &Path) -> Option<TlsFiles> {
    let Some(t) = root.opt_table(src, "tls") else {
        if root.get("tls").is_none() {
            src.error(root.span(), "missing required table `[tls]` (cert, key, trust)");
        }
        return None;
    };
    t.deny_unknown(src, TLS_KEYS);
    let cert = t.str(src, "cert").map(|(s, _)| dir.join(s));
    let key = t.str(src, "key").map(|(s, _)| dir.join(s));
    let trust = t.str(src, "trust").map(|(s, _)| dir.join(s));
    let crls = t.str_list(src, "crls").into_iter().map(|(s, _)| dir.join(s)).collect();
    Some(TlsFiles { cert: cert?, key: key?, trust: trust?, crls })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
node = "police@wuxi.liangxi"
listen = "127.0.0.1:7401"
api = "127.0.0.1:7501"

[tls]
cert = "tls/node.crt"
key = "tls/node.key"
trust = "tls/trust.crt"
crls = ["tls/root.crl"]

[[peers]]
node = "court@wuxi.xinwu"
address = "127.0.0.1:7402"
"#;

    #[test]
    fn good_config_resolves_paths_against_its_folder() {
        let c = parse(Path::new("/srv/police/gateway.toml"), GOOD).unwrap();
        assert_eq!(c.node.to_string(), "police@wuxi.liangxi");
        assert_eq!(c.tls.key, Path::new("/srv/police/tls/node.key"));
        assert_eq!(c.tls.crls, vec![PathBuf::from("/srv/police/tls/root.crl")]);
        assert_eq!(c.peers.len(), 1);
    }

    #[test]
    fn every_problem_is_named_with_its_position() {
        let bad = GOOD
            .replace("node = \"police@wuxi.liangxi\"", "node = \"Police\"")
            .replace("listen = ", "lisen = ")
            .replace("127.0.0.1:7402", "somewhere");
        let err = parse(Path::new("g.toml"), &bad).unwrap_err().to_string();
        assert!(err.contains("g.toml:2:8: `node`: invalid node id"), "{err}");
        assert!(err.contains("g.toml:3:1: unknown key `lisen`, did you mean `listen`?"), "{err}");
        assert!(err.contains("missing required key `listen`"), "{err}");
        assert!(err.contains("g.toml:14:11: `address` must be HOST:PORT"), "{err}");
    }

    #[test]
    fn the_console_is_off_unless_asked_and_a_bad_address_is_located() {
        assert_eq!(parse(Path::new("g.toml"), GOOD).unwrap().console, None);
        let on = GOOD
            .replace("api = \"127.0.0.1:7501\"", "api = \"127.0.0.1:7501\"\nconsole = \"127.0.0.1:7601\"");
        let c = parse(Path::new("g.toml"), &on).unwrap();
        assert_eq!(c.console, Some("127.0.0.1:7601".parse().unwrap()));
        assert_eq!(c.console_at, Pos { line: 5, col: 11 });
        let bad = on.replace("127.0.0.1:7601", "localhost:7601");
        let err = parse(Path::new("g.toml"), &bad).unwrap_err().to_string();
        assert!(err.contains("g.toml:5:11: `console` must be HOST:PORT"), "{err}");
    }

    #[test]
    fn the_readme_example_is_a_valid_config() {
        let readme = include_str!("../../README.md");
        let start = readme.find("```toml\n").expect("README has a toml block") + 8;
        let text = &readme[start..start + readme[start..].find("```").expect("closed")];
        let c = parse(Path::new("/etc/fedgate/police/gateway.toml"), text).unwrap();
        assert_eq!(c.sources.len(), 1);
        assert_eq!(c.grants, vec![PathBuf::from("/etc/fedgate/police/grants.toml")]);
        assert_eq!(c.audit_dir, PathBuf::from("/etc/fedgate/police/audit"));
    }

    #[test]
    fn audit_retention_and_auditors() {
        let c = parse(Path::new("/etc/fedgate/g.toml"), GOOD).unwrap();
        assert_eq!((c.audit_retention_days, c.auditor_keys.len()), (180, 0));
        let text = format!("{GOOD}\n[audit]\nretention_days = 365\nauditors = [\"keys/city.pub\"]\n");
        let c = parse(Path::new("/etc/fedgate/g.toml"), &text).unwrap();
        assert_eq!(c.audit_retention_days, 365);
        assert_eq!(c.auditor_keys, vec![PathBuf::from("/etc/fedgate/keys/city.pub")]);
        for bad in ["retention_days = 0", "retention_days = 99999", "retension_days = 30"] {
            let text = format!("{GOOD}\n[audit]\n{bad}\n");
            let err = parse(Path::new("g.toml"), &text).unwrap_err().to_string();
            assert!(err.contains("g.toml:"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_event_backlog_defaults_and_is_range_checked() {
        let c = parse(Path::new("/n/g.toml"), GOOD).unwrap();
        assert_eq!(c.events_backlog, crate::events::Backlog::default());
        assert_eq!(c.state_dir, PathBuf::from("/n/state"));
        let c = parse(
            Path::new("/n/g.toml"),
            &format!("{GOOD}\n[events]\nmax_age_secs = 3600\nmax_count = 10\n"),
        )
        .unwrap();
        assert_eq!(c.events_backlog, crate::events::Backlog { max_age_secs: 3600, max_count: 10 });
        assert_eq!(c.max_unread, DEFAULT_MAX_UNREAD);
        let c =
            parse(Path::new("/n/g.toml"), &format!("{GOOD}\n[subscriptions]\nmax_unread = 300\n")).unwrap();
        assert_eq!(c.max_unread, 300);
        let err = parse(Path::new("g.toml"), &format!("{GOOD}\n[subscriptions]\nmax_unread = 0\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`subscriptions.max_unread` must be between 1 and 10000000"), "{err}");
        let err = parse(Path::new("g.toml"), &format!("{GOOD}\n[events]\nmax_count = 0\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`events.max_count` must be between 1 and 100000000"), "{err}");
    }

    #[test]
    fn api_limits_default_and_are_range_checked() {
        let c = parse(Path::new("g.toml"), GOOD).unwrap();
        assert_eq!(c.api_limits, ApiLimits::default());
        let text = format!(
            "{GOOD}\n[api_limits]\nmax_connections = 8\nheader_timeout_secs = 2\nidle_timeout_secs = 30\n"
        );
        let c = parse(Path::new("g.toml"), &text).unwrap();
        assert_eq!(
            c.api_limits,
            ApiLimits {
                max_connections: 8,
                header_timeout: Duration::from_secs(2),
                idle_timeout: Duration::from_secs(30)
            }
        );
        let bad = format!("{GOOD}\n[api_limits]\nmax_connections = 0\nidle = 3\n");
        let err = parse(Path::new("g.toml"), &bad).unwrap_err().to_string();
        assert!(err.contains("`api_limits.max_connections` must be between 1 and 1000000"), "{err}");
        assert!(err.contains("g.toml:18:1: unknown key `api_limits.idle`"), "{err}");
    }

    #[test]
    fn the_directory_is_optional_and_resolved_against_the_folder() {
        let c = parse(Path::new("/srv/police/gateway.toml"), GOOD).unwrap();
        assert_eq!(c.directory, None);
        assert_eq!(c.directory_state, PathBuf::from("/srv/police/state/directory.cbor"));
        let text = GOOD.replace("[tls]", "directory = \"../directory.cbor\"\n\n[tls]");
        let c = parse(Path::new("/srv/police/gateway.toml"), &text).unwrap();
        assert_eq!(c.directory, Some(PathBuf::from("/srv/police/../directory.cbor")));
        let bad = GOOD.replace("[tls]", "directory = 3\n\n[tls]");
        let err = parse(Path::new("g.toml"), &bad).unwrap_err().to_string();
        assert!(err.contains("g.toml:6:13: `directory` must be a string"), "{err}");
    }

    #[test]
    fn the_calendar_file_is_optional_and_resolved_against_the_folder() {
        let c = parse(Path::new("/srv/police/gateway.toml"), GOOD).unwrap();
        assert_eq!(c.calendar, None);
        let text = format!("{GOOD}\n[calendar]\nfile = \"calendar.toml\"\n");
        let c = parse(Path::new("/srv/police/gateway.toml"), &text).unwrap();
        assert_eq!(c.calendar, Some(PathBuf::from("/srv/police/calendar.toml")));
        let bad = format!("{GOOD}\n[calendar]\nfiles = \"calendar.toml\"\n");
        let err = parse(Path::new("g.toml"), &bad).unwrap_err().to_string();
        assert!(err.contains("unknown key `calendar.files`"), "{err}");
        assert!(err.contains("`calendar.file`") || err.contains("`file`"), "{err}");
    }

    #[test]
    fn a_source_cursor_has_a_default_interval_and_is_checked() {
        let entry = "\n[[sources]]\ndataset = \"cases\"\nsqlite = \"c.db\"\ntable = \"cases\"\n";
        let c = parse(Path::new("g.toml"), &format!("{GOOD}{entry}")).unwrap();
        assert_eq!(c.sources[0].cursor, None);
        let c = parse(Path::new("g.toml"), &format!("{GOOD}{entry}cursor = \"updated_at\"\n")).unwrap();
        let cur = c.sources[0].cursor.clone().unwrap();
        assert_eq!(
            (cur.column.as_str(), cur.interval, cur.at),
            ("updated_at", DEFAULT_POLL, Pos { line: 20, col: 10 })
        );
        let c =
            parse(Path::new("g.toml"), &format!("{GOOD}{entry}cursor = \"seq\"\npoll_ms = 250\n")).unwrap();
        assert_eq!(c.sources[0].cursor.as_ref().unwrap().interval, Duration::from_millis(250));
        for (bad, want) in [
            (
                "cursor = \"updated at\"",
                "g.toml:20:10: `cursor` \"updated at\" must be a plain SQL column name",
            ),
            ("cursor = \"seq\"\npoll_ms = 10", "g.toml:21:11: `poll_ms` must be between 50 and 3600000"),
            ("poll_ms = 500", "g.toml:20:1: `poll_ms` needs `cursor = \"COLUMN\"`"),
            ("cursr = \"seq\"", "g.toml:20:1: unknown key `sources.cursr`, did you mean `cursor`?"),
        ] {
            let err = parse(Path::new("g.toml"), &format!("{GOOD}{entry}{bad}\n")).unwrap_err().to_string();
            assert!(err.contains(want), "{bad}: {err}");
        }
    }

    #[test]
    fn syntax_errors_are_located() {
        let err = parse(Path::new("g.toml"), "node = = 1\n").unwrap_err();
        assert!(err.to_string().starts_with("g.toml:1:"), "{err}");
    }
}
