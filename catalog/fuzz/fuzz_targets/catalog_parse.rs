//! Any bytes as a catalog file: errors are fine, panics are not.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = fedgate_catalog::parse("fuzz.toml", text);
    }
});
