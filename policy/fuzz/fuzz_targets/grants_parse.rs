//! Any bytes as a grant file: errors are fine, panics are not.
//!
//! The parser alone, at full speed: every diagnostic renders, each grant's subject pattern
//! round-trips through its text form, and a parsed set digests. Loading the grants into casbin
//! costs ~0.3 ms per input and is fuzzed separately by `grants_policy`.
#![no_main]

use fedgate_policy::{parse_grants, Subject};
use libfuzzer_sys::fuzz_target;

const DATASETS: &[&str] = &["family-disputes", "hotline-tickets", "petitions"];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // Half the inputs are also checked against known dataset ids.
    let known = (data.len() % 2 == 0).then_some(DATASETS);
    let set = match parse_grants(&[("fuzz.toml", text)], known) {
        Ok(set) => set,
        Err(diags) => {
            let _ = diags.to_string();
            return;
        }
    };
    for g in &set.grants {
        assert_eq!(Subject::from_pattern(&g.to.pattern()).as_ref(), Some(&g.to), "pattern round trip");
        let _ = g.to.to_string();
    }
    let _ = set.digest();
});
