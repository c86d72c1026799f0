//! The fuzzers' seed corpora (gateway/fuzz/seeds) stay valid inputs as the formats evolve: a
//! fuzzer seeded with stale inputs spends its runs on syntax errors instead of the code past them.
//! `FEDGATE_WRITE_FUZZ_SEEDS=1 cargo test -p fedgate-gateway --test fuzz_seeds` rewrites the frame
//! seeds from the current encoder.

use std::path::{Path, PathBuf};

use fedgate_catalog::Value;
use fedgate_gateway::wire::msg::Truncation;
use fedgate_gateway::wire::{self, ErrorCode, Message, PROTOCOL_VERSION};

fn seeds(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds").join(target)
}

fn files(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = seeds(target);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            (p.display().to_string(), std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

/// One message of every kind, with the shapes real exchanges carry (CJK text, nulls, filters).
fn frame_samples() -> Vec<(&'static str, Message)> {
    let record = vec![
        Value::Text("T20260101-0001".into()),
        Value::Text("wuxi.liangxi.chongan".into()),
        Value::Text("张*".into()),
        Value::Int(42),
        Value::Bool(true),
        Value::Null,
    ];
    vec![
        (
            "hello",
            Message::Hello {
                version: PROTOCOL_VERSION,
                node: "police@wuxi.liangxi".into(),
                software: "fedgate 0.1.0".into(),
            },
        ),
        ("welcome", Message::Welcome { node: "hotline12345@wuxi".into(), audit_key: None }),
        ("catalog-request", Message::CatalogRequest),
        (
            "catalog",
            Message::Catalog {
                catalog: fedgate_catalog::parse(
                    "catalog.toml",
                    fedgate_gateway::demo::catalog_text("hotline-tickets").unwrap(),
                )
                .unwrap(),
            },
        ),
        (
            "query",
            Message::Query {
                dataset: "hotline-tickets".into(),
                purpose: "dispute-mediation".into(),
                filters: vec![("region".into(), "wuxi.liangxi".into()), ("category".into(), "噪音".into())],
                limit: Some(100),
                exchange: None,
            },
        ),
        (
            "header",
            Message::Header {
                fields: vec!["ticket_id".into(), "region".into(), "caller_name".into()],
                reason: "grant centre-hotline, clearance 3, rows all".into(),
            },
        ),
        ("batch", Message::Batch { records: vec![record.clone(), record] }),
        (
            "trailer",
            Message::Trailer {
                count: 2,
                digest: "ab".repeat(32),
                signature: "cd".repeat(64),
                audit_seq: Some(7),
                truncated: Some(Truncation::Limit),
                witness: None,
            },
        ),
        ("error", Message::error(ErrorCode::Denied, "no grant allows it")),
    ]
}

#[test]
fn frame_seeds_decode_to_every_message_kind() {
    if std::env::var_os("FEDGATE_WRITE_FUZZ_SEEDS").is_some() {
        let dir = seeds("frame_decode");
        std::fs::create_dir_all(&dir).unwrap();
        for (name, m) in frame_samples() {
            std::fs::write(dir.join(format!("{name}.bin")), wire::encode(&m)).unwrap();
        }
    }
    let got: Vec<Message> = files("frame_decode")
        .into_iter()
        .map(|(path, bytes)| wire::decode(&bytes).unwrap_or_else(|e| panic!("{path}: {e}")))
        .collect();
    for (name, m) in frame_samples() {
        assert!(got.contains(&m), "no seed frame for `{name}` (regenerate, see the file's doc)");
    }
}

#[test]
fn config_seeds_parse() {
    for (path, bytes) in files("config_parse") {
        let text = String::from_utf8(bytes).unwrap();
        if let Err(e) = fedgate_gateway::config::parse(Path::new(&path), &text) {
            panic!("{e}");
        }
    }
}

#[test]
fn api_seeds_are_valid_query_bodies() {
    for (path, bytes) in files("api_query_body") {
        if let Err(e) = fedgate_gateway::api::parse_query_body(&bytes) {
            panic!("{path}: {e:?}");
        }
    }
}
