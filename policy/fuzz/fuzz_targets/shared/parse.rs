//! The checks both grant targets run on any input: parse, render every diagnostic, round-trip
//! each grant's subject pattern, digest the set.

use fedgate_policy::{parse_grants, GrantSet, Subject};

/// The grant set `text` parses to (checked against `known` dataset ids if given), or `None`.
pub fn parse_checked(text: &str, known: Option<&[&str]>) -> Option<GrantSet> {
    let set = match parse_grants(&[("fuzz.toml", text)], known) {
        Ok(set) => set,
        Err(diags) => {
            let _ = diags.to_string();
            return None;
        }
    };
    for g in &set.grants {
        assert_eq!(Subject::from_pattern(&g.to.pattern()).as_ref(), Some(&g.to), "pattern round trip");
        let _ = g.to.to_string();
    }
    let _ = set.digest();
    Some(set)
}
