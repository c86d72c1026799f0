//! Any bytes as a grant file: errors are fine, panics are not.
//!
//! The parser alone, at full speed: every diagnostic renders, each grant's subject pattern
//! round-trips through its text form, and a parsed set digests. Loading the grants into casbin
//! costs ~0.3 ms per input and is fuzzed separately by `grants_policy`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "shared/parse.rs"]
mod shared;

const DATASETS: &[&str] = &["family-disputes", "hotline-tickets", "petitions"];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // Half the inputs are also checked against known dataset ids.
    let known = (data.len() % 2 == 0).then_some(DATASETS);
    let _ = shared::parse_checked(text, known);
});
