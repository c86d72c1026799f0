//! The grant fuzzer's seeds (fuzz/seeds/grants_parse) must stay valid grant files, or the fuzzer
//! spends its runs on syntax errors instead of the decisions past them.

use crate::parse_grants;

#[test]
fn fuzz_seeds_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/grants_parse");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.display().to_string();
        if let Err(d) = parse_grants(&[(&name, &text)], None) {
            panic!("{d}");
        }
        n += 1;
    }
    assert!(n >= 2, "seeds missing from {}", dir.display());
}
