//! The TOML an operator writes to build a directory (`fedgate directory build --nodes FILE`).
//!
//! ```toml
//! federation = "wuxi"
//! scope = "wuxi.liangxi"      # optional; the federation if absent
//! version = 7
//!
//! [[nodes]]
//! node = "police@wuxi.liangxi"
//! address = "10.1.2.3:7400"
//! fingerprint = "AB:CD:…"     # optional SHA-256 of its certificate, hex (colons allowed)
//! ```

use std::net::SocketAddr;

use fedgate_catalog::toml_reader::{Source, Table};
use fedgate_catalog::{Diagnostics, NodeId, Region};

use super::{Directory, Entry};

const TOP_KEYS: &[&str] = &["federation", "scope", "version", "nodes"];
const NODE_KEYS: &[&str] = &["node", "address", "fingerprint"];

/// Parses a directory source; `version` (if given) overrides the file's, `issued` is the issue
/// time. Every problem comes back located (`FILE:LINE:COL`), naming the key or the node.
pub fn parse_source(
    file: &str,
    text: &str,
    version: Option<u64>,
    issued: i64,
) -> Result<Directory, Diagnostics> {
    let mut src = Source::new(file, text);
    let Some(doc) = src.parse() else { return Err(Diagnostics(src.into_diagnostics())) };
    let root = Table::root(&doc);
    root.deny_unknown(&mut src, TOP_KEYS);
    let federation = root.parse::<Region>(&mut src, "federation");
    let scope = root.opt_parse::<Region>(&mut src, "scope");
    let file_version = match root.opt_int(&mut src, "version") {
        Some((n, _)) if n >= 1 => Some(n as u64),
        Some((_, span)) => {
            src.error(span, "`version` must be 1 or more");
            None
        }
        None if version.is_none() => {
            src.error(root.span(), "missing required key `version` (or pass --directory-version)");
            None
        }
        None => None,
    };
    let scope = scope.or_else(|| federation.clone());
    let mut nodes = Vec::new();
    for t in root.tables(&mut src, "nodes") {
        let Some(e) = entry(&t, &mut src) else { continue };
        if nodes.iter().any(|n: &Entry| n.node == e.node) {
            src.error(t.key_span("node"), format!("node {} is listed twice", e.node));
        }
        match &scope {
            Some(scope) if !scope.covers(e.node.region()) => {
                src.error(t.key_span("node"), format!("node {} lies outside the scope {scope}", e.node))
            }
            _ => {}
        }
        nodes.push(e);
    }
    let (Some(federation), Some(scope), Some(version)) = (federation, scope, version.or(file_version)) else {
        return Err(Diagnostics(src.into_diagnostics()));
    };
    if !src.is_clean() {
        return Err(Diagnostics(src.into_diagnostics()));
    }
    let dir = Directory::new(federation, scope, version, issued, nodes);
    dir.map_err(|e| {
        src.error(root.span(), e.to_string());
        Diagnostics(src.into_diagnostics())
    })
}

fn entry(t: &Table<'_, '_>, src: &mut Source<'_>) -> Option<Entry> {
    t.deny_unknown(src, NODE_KEYS);
    let node = t.parse::<NodeId>(src, "node");
    let address = match t.str(src, "address") {
        Some((s, span)) => match s.parse::<SocketAddr>() {
            Ok(a) if a.port() != 0 && !a.ip().is_unspecified() => Some(a),
            _ => {
                src.error(
                    span,
                    format!("`address` must be IP:PORT a peer can dial, e.g. 10.1.2.3:7400 (got {s:?})"),
                );
                None
            }
        },
        None => None,
    };
    let fingerprint = match t.opt_str(src, "fingerprint") {
        Some((s, span)) => match parse_fingerprint(s) {
            Some(f) => Some(f),
            None => {
                src.error(span, "`fingerprint` must be 32 bytes of hex (SHA-256), colons allowed");
                return None;
            }
        },
        None => None,
    };
    Some(Entry { node: node?, address: address?, fingerprint })
}

/// 64 hex digits, optionally separated by colons (as `fedgate pki show` prints them).
pub(crate) fn parse_fingerprint(s: &str) -> Option<[u8; 32]> {
    let hex: String = s.chars().filter(|c| *c != ':').collect();
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}
