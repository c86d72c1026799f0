use fedgate_catalog::{Generalize, Level, Value};
use proptest::prelude::*;

use crate::mask::{
    consumer_key, generalize, keyed_hash, mask, mask_card, mask_email, mask_name, pseudonym, scan,
};

/// A naive reference for `mask`: the same contract written the obvious way.
fn reference_mask(s: &str, first: usize, last: usize) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.is_empty() {
        return String::new();
    }
    if first + last >= chars.len() {
        return "*".repeat(chars.len());
    }
    let mut out: Vec<char> = chars.clone();
    for c in out.iter_mut().take(chars.len() - last).skip(first) {
        *c = '*';
    }
    out.into_iter().collect()
}

proptest! {
    #[test]
    fn mask_matches_reference_and_hides_the_middle(s in "\\PC{0,40}", first in 0usize..6, last in 0usize..6) {
        let m = mask(&s, first, last);
        prop_assert_eq!(&m, &reference_mask(&s, first, last));
        let n = s.chars().count();
        prop_assert_eq!(m.chars().count(), n);
        if n > 0 {
            // Something is always hidden, and hidden positions are '*'.
            prop_assert!(m.chars().any(|c| c == '*'));
        }
    }

    #[test]
    fn operators_are_total(s in "\\PC{0,300}") {
        let k = consumer_key(b"secret", "a@wuxi");
        let _ = (mask_name(&s), mask_card(&s), mask_email(&s), keyed_hash(&k, &s), pseudonym(&k, &s), scan(&s));
        for g in [Generalize::Month, Generalize::Year, Generalize::Address, Generalize::AgeBand { width: 10 }, Generalize::Region { level: Level::new(2).unwrap() }] {
            let _ = generalize(&g, &Value::Text(s.clone()), "***");
        }
    }

    #[test]
    fn name_masks_never_reveal_the_given_name(surname in "[张王李赵]", given in "[一二三四五六七八九]{1,3}") {
        let m = mask_name(&format!("{surname}{given}"));
        prop_assert!(m.starts_with(&surname));
        for c in given.chars() {
            prop_assert!(!m.contains(c));
        }
    }

    #[test]
    fn keyed_hashes_are_stable_per_consumer_and_differ_across(v in "\\PC{1,30}") {
        let a = consumer_key(b"secret", "police@wuxi.liangxi");
        let b = consumer_key(b"secret", "court@wuxi.xinwu");
        prop_assert_eq!(keyed_hash(&a, &v), keyed_hash(&a, &v));
        prop_assert_ne!(keyed_hash(&a, &v), keyed_hash(&b, &v));
    }

    #[test]
    fn generalize_never_adds_precision(y in 1900i32..2100, m in 1u32..13, d in 1u32..29, age in 0i64..120) {
        let date = format!("{y:04}-{m:02}-{d:02}");
        let month = generalize(&Generalize::Month, &Value::Text(date.clone()), "***");
        prop_assert_eq!(month, Value::Text(date[..7].to_owned()));
        let year = generalize(&Generalize::Year, &Value::Text(date.clone()), "***");
        prop_assert_eq!(year, Value::Text(date[..4].to_owned()));
        let Value::Text(band) = generalize(&Generalize::AgeBand { width: 10 }, &Value::Int(age), "***") else { unreachable!() };
        let (lo, hi) = band.split_once('-').unwrap();
        let (lo, hi): (i64, i64) = (lo.parse().unwrap(), hi.parse().unwrap());
        prop_assert!(lo <= age && age <= hi && hi - lo == 9);
    }

    #[test]
    fn region_generalization_is_an_ancestor(path in "[a-z]{1,6}(\\.[a-z]{1,6}){0,3}", level in 1u8..5) {
        let Value::Text(out) = generalize(&Generalize::Region { level: Level::new(level).unwrap() }, &Value::Text(path.clone()), "***") else { unreachable!() };
        prop_assert!(path.starts_with(&out));
        prop_assert!(out.split('.').count() <= level as usize);
    }
}

#[test]
fn very_long_input_is_fine() {
    let long = "我".repeat(100_000) + "13812345678";
    assert!(scan(&long).ends_with("138****5678"));
    assert_eq!(mask(&long, 1, 1).chars().count(), long.chars().count());
}
