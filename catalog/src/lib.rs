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

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of a hex string (either case); `None` if it is not whole bytes of hex digits.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests;
