//! Any bytes as a catalog file: errors are fine, panics are not.
//!
//! Beyond parsing, it renders every diagnostic (spans into multi-byte text are a classic panic)
//! and, for a catalog that parses, checks what a peer would receive: the CBOR encoding sent over
//! the wire decodes back to the same catalog, and the digest is stable.
#![no_main]

use fedgate_catalog::Catalog;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match fedgate_catalog::parse("fuzz.toml", text) {
        Err(diags) => {
            let _ = diags.to_string();
        }
        Ok(catalog) => {
            let mut wire = Vec::new();
            ciborium::ser::into_writer(&catalog, &mut wire).expect("encoding a parsed catalog");
            let back: Catalog = ciborium::de::from_reader(wire.as_slice()).expect("decoding our own CBOR");
            assert_eq!(back, catalog, "catalog changed across the wire");
            assert_eq!(back.digest(), catalog.digest());
        }
    }
});
