//! Catalog parsing: the documented example, every error the steward can make, and random bytes.

use proptest::prelude::*;

use crate::{parse, parse_files, Generalize, Grade, PiiKind, Rule, Sharing};

/// The first ```toml block of docs/catalog.md: the documented example must stay valid.
fn documented_example() -> String {
    let doc = include_str!("../../docs/catalog.md");
    let start = doc.find("```toml\n").expect("docs/catalog.md has a toml example") + 8;
    let end = start + doc[start..].find("```").expect("closed block");
    doc[start..end].to_owned()
}

fn drop_line(text: &str, prefix: &str) -> String {
    text.lines().filter(|l| !l.starts_with(prefix)).map(|l| format!("{l}\n")).collect()
}

fn errors(text: &str) -> Vec<String> {
    match parse("c.toml", text) {
        Ok(_) => Vec::new(),
        Err(d) => d.0.iter().map(|d| d.to_string()).collect(),
    }
}

fn assert_error(text: &str, want: &str) {
    let errs = errors(text);
    assert!(errs.iter().any(|e| e.contains(want)), "wanted {want:?} in {errs:#?}");
}

#[test]
fn documented_example_parses_with_defaults_filled_in() {
    let c = parse("example.toml", &documented_example()).unwrap();
    let d = c.get("hotline-tickets").unwrap();
    assert_eq!(d.grade, Grade::CORE);
    assert_eq!(d.sharing, Sharing::Conditional);
    assert_eq!(d.field("caller_name").unwrap().rule, Rule::MaskName);
    assert_eq!(d.field("caller_id").unwrap().rule, Rule::Mask { keep_first: 3, keep_last: 4 });
    assert_eq!(d.field("caller_id").unwrap().classification, "personal.identity");
    assert_eq!(d.field("received_at").unwrap().rule, Rule::Generalize(Generalize::Month));
    assert_eq!(d.field("content").unwrap().pii, PiiKind::FreeText);
    assert_eq!(d.field("category").unwrap().rule, Rule::Drop);
    // The digest is stable and changes with content.
    let again = parse("other-name.toml", &documented_example()).unwrap();
    assert_eq!(c.digest(), again.digest());
    let changed = parse(
        "x.toml",
        &documented_example().replace("grade = 4  ", "grade = 3  ").replace("grade = 4\n", "grade = 3\n"),
    )
    .unwrap();
    assert_ne!(c.digest(), changed.digest());
}

#[test]
fn catalog_round_trips_through_json() {
    let c = parse("example.toml", &documented_example()).unwrap();
    let json = serde_json::to_string(&c).unwrap();
    let back: crate::Catalog = serde_json::from_str(&json).unwrap();
    assert_eq!(back, c);
}

#[test]
fn dataset_grade_below_a_field_is_refused() {
    let text = documented_example().replace("grade = 4                       #", "grade = 2 #");
    assert_error(
        &text,
        "c.toml:12:9: dataset grade 2 is below the grade 4 of field `caller_id` (highest wins",
    );
}

#[test]
fn unknown_keys_get_suggestions_and_positions() {
    let text = documented_example().replace("steward =", "stewart =");
    assert_error(&text, "c.toml:7:1: unknown key `dataset.stewart`, did you mean `steward`?");
    let text = documented_example().replace("  nullable = true", "  nulable = true");
    assert_error(&text, "unknown key `fields.nulable`, did you mean `nullable`?");
}

#[test]
fn bad_values_are_pointed_at() {
    let ex = documented_example();
    assert_error(
        &ex.replace("update = \"realtime\"", "update = \"realtme\""),
        "c.toml:8:10: `dataset.update`: unknown update frequency \"realtme\", did you mean \"realtime\"?",
    );
    assert_error(
        &ex.replace("sharing = \"conditional\"", "sharing = \"shared\""),
        "`dataset.sharing`: unknown sharing type \"shared\"",
    );
    assert_error(&ex.replace("grade = 4\n", "grade = 5\n"), "invalid grade 5");
    assert_error(
        &ex.replace("owner = \"hotline12345@wuxi\"", "owner = \"hotline\""),
        "`dataset.owner`: invalid node id",
    );
    assert_error(&ex.replace("id = \"hotline-tickets\"", "id = \"Hotline Tickets\""), "invalid dataset id");
}

#[test]
fn duplicates_are_refused() {
    let ex = documented_example();
    let dup_field = ex.replace("name = \"category\"", "name = \"content\"");
    assert_error(&dup_field, "duplicate field `content`");
    let err = parse_files(&[("a.toml", &ex), ("b.toml", &ex)]).unwrap_err().to_string();
    assert!(
        err.contains("b.toml:3:6: dataset id `hotline-tickets` is already defined at a.toml:3:6"),
        "{err}"
    );
}

#[test]
fn pii_graded_public_is_refused() {
    let text = documented_example().replace("grade = 3\n  pii = \"mobile\"", "grade = 1\n  pii = \"mobile\"");
    assert_error(&text, "a mobile field cannot be grade 1");
}

#[test]
fn jurisdiction_and_primary_key_must_name_fitting_fields() {
    let ex = documented_example();
    assert_error(
        &ex.replace("jurisdiction = \"region\"", "jurisdiction = \"regoin\""),
        "`jurisdiction` names field `regoin`, which this dataset does not have, did you mean `region`?",
    );
    assert_error(
        &ex.replace("jurisdiction = \"region\"", "jurisdiction = \"category\""),
        "`jurisdiction` field `category` must be of type region, not string",
    );
    assert_error(&drop_line(&ex, "jurisdiction ="), "missing required key `jurisdiction` in `dataset`");
    assert_error(&drop_line(&ex, "primary_key ="), "missing required key `primary_key`");
    assert_error(
        &ex.replace("primary_key = \"ticket_id\"", "primary_key = \"caller_id\""),
        "must not be nullable",
    );
}

#[test]
fn one_mistake_in_a_key_field_gives_one_error() {
    // r10: a bad type on the primary key field also said "primary_key names field `ticket_id`,
    // which this dataset does not have".
    let text = documented_example()
        .replace("name = \"ticket_id\"\n  type = \"string\"", "name = \"ticket_id\"\n  type = \"strng\"");
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(errs[0].contains("unknown field type \"strng\""), "{errs:#?}");
}

#[test]
fn rules_must_fit_their_field() {
    let ex = documented_example();
    let bool_month = ex.replace(
        "name = \"category\"\n  type = \"string\"",
        "name = \"category\"\n  type = \"bool\"\n  rule = { op = \"generalize\", to = \"month\" }",
    );
    assert_error(&bool_month, "field `category`: cannot generalize a bool field to a month");
    assert_error(
        &ex.replace("to = \"month\"", "to = \"mnth\""),
        "cannot generalize to \"mnth\", did you mean \"month\"?",
    );
    assert_error(
        &ex.replace("{ op = \"generalize\", to = \"month\" }", "\"hsh\""),
        "unknown rule \"hsh\", did you mean \"hash\"?",
    );
    assert_error(
        &ex.replace("{ op = \"generalize\", to = \"month\" }", "\"pseudonym\""),
        "`pseudonym` applies to resident-id fields only",
    );
}

#[test]
fn empty_catalogs_and_syntax_errors() {
    assert_error("", "c.toml:1:1: empty catalog");
    assert_error("# only a comment\n", "empty catalog");
    let errs = errors("[[dataset]]\nid = \n");
    assert!(errs[0].starts_with("c.toml:2:"), "{errs:?}");
    assert_error("[[dataset]]\nid = \"x\"\n", "dataset has no fields");
}

#[test]
fn every_error_is_reported_at_once() {
    let text = documented_example()
        .replace("steward =", "stewart =")
        .replace("update = \"realtime\"", "update = \"sometimes\"")
        .replace("grade = 4\n", "grade = 0\n");
    assert!(errors(&text).len() >= 3, "{:#?}", errors(&text));
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
        let _ = parse("p.toml", &text);
    }

    #[test]
    fn mutated_example_never_panics(cuts in proptest::collection::vec((any::<usize>(), any::<char>()), 1..6)) {
        let mut text: Vec<char> = documented_example().chars().collect();
        for (at, c) in cuts {
            let n = text.len();
            text[at % n] = c;
        }
        let text: String = text.into_iter().collect();
        let _ = parse("p.toml", &text);
    }
}

/// The fuzzer's seeds (fuzz/seeds/catalog_parse) must stay valid catalogs, or the fuzzer spends
/// its runs on syntax errors instead of the validation past them.
#[test]
fn fuzz_seeds_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/catalog_parse");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        if let Err(d) = parse(&path.display().to_string(), &text) {
            panic!("{d}");
        }
        n += 1;
    }
    assert!(n >= 2, "seeds missing from {}", dir.display());
}

#[test]
fn hex_round_trips_every_byte_and_matches_the_formatter() {
    let all: Vec<u8> = (0..=255).collect();
    let text = crate::hex(&all);
    let reference: String = all.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(text, reference);
    assert_eq!(crate::unhex(&text).unwrap(), all);
    assert_eq!(crate::unhex(&text.to_uppercase()).unwrap(), all);
    assert_eq!(crate::hex(&[]), "");
    assert_eq!(crate::unhex(""), Some(vec![]));
}

#[test]
fn unhex_refuses_anything_but_whole_bytes_of_hex_digits() {
    // `+f` once passed (u8::from_str_radix takes a sign), and so did nothing else here.
    for bad in ["f", "+f", "-f", "0g", "zz", " 0", "0 ", "é0", "0é", "abc"] {
        assert_eq!(crate::unhex(bad), None, "{bad:?}");
    }
}
