//! fedgate-catalog: the federation's shared vocabulary and the steward's dataset catalog.
//!
//! This is the lowest crate. It holds the names every other crate speaks ([`NodeId`], [`Region`],
//! [`Level`], [`Grade`], [`Purpose`], [`DatasetId`]), the span-preserving TOML reader that gives
//! every fedgate file the same `FILE:LINE:COL: message` errors, and the catalog model: datasets,
//! fields, grades, sharing types and their validation into types that cannot hold an invalid
//! value. It parses `&str`s handed to it and never touches the network or the clock.
#![warn(missing_docs)]

mod ids;
pub mod model;
mod parse;
pub mod toml_reader;
mod value;

pub use ids::{check_ident, DatasetId, Grade, Level, NameError, NodeId, Purpose, Region, MAX_LEVEL};
pub use model::{
    Catalog, Dataset, Field, FieldType, Generalize, OpenAttr, PiiKind, Rule, Sharing, UpdateFrequency,
    DEFAULT_REDACT_TOKEN,
};
pub use parse::{parse, parse_files};
pub use toml_reader::{Diagnostic, Diagnostics};
pub use value::{Record, Value};

/// Lowercase hex of `bytes`. Digests, signatures and proof paths go through here on every
/// exchange, so it writes into one pre-sized string (it was one formatted allocation per byte).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// The bytes of a hex string (either case); `None` if it is not whole bytes of hex digits.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let bytes = s.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes.chunks_exact(2).map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?)).collect()
}

#[cfg(test)]
mod tests;
