//! Strict decoding of the local API's JSON request bodies, without sockets.
//!
//! A misspelt key must not be ignored: `"filters"` instead of `"where"` once returned every
//! record unfiltered. So a body is read as a JSON object whose keys are checked against the known
//! list (duplicates refused too, since "last one wins" lets two readers disagree on a request),
//! then each field is checked by name, so every message names the key and what it should be.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

/// The most a request body may hold; a query is a few hundred bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Keys `POST /v1/query` accepts, in the order the docs list them.
pub const QUERY_KEYS: &[&str] = &["peer", "dataset", "purpose", "where", "limit", "timeout_ms"];

/// The largest `limit`: the wire carries it as a signed 64-bit count.
pub const MAX_LIMIT: u64 = i64::MAX as u64;

/// The longest `timeout_ms`: an hour.
pub const MAX_TIMEOUT_MS: u64 = 3_600_000;

/// Why a body was refused; the message names the key at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Not JSON at all, or truncated.
    #[error("the request body is not valid JSON: {0}")]
    Syntax(String),
    /// Valid JSON of the wrong shape or with a value out of range.
    #[error("{0}")]
    Invalid(String),
}

/// A validated `POST /v1/query` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryRequest {
    /// The provider's node id, as given (parsed by the caller).
    pub peer: String,
    /// The dataset id.
    pub dataset: String,
    /// The declared purpose.
    pub purpose: String,
    /// Equality filters, values as text.
    pub filters: Vec<(String, String)>,
    /// At most this many records.
    pub limit: Option<u64>,
    /// Milliseconds to wait to connect, for the first answer, and between pieces of data.
    pub timeout_ms: Option<u64>,
}

/// An object's members in order; a repeated key is an error, not a silent overwrite.
struct StrictObject(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for StrictObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrictObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StrictObject, A::Error> {
                let mut out: Vec<(String, Value)> = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    if out.iter().any(|(seen, _)| *seen == k) {
                        return Err(serde::de::Error::custom(format!("key `{k}` appears twice")));
                    }
                    out.push((k, v));
                }
                Ok(StrictObject(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Parses `bytes` as one JSON object with only `known` keys, each at most once.
fn object(bytes: &[u8], known: &[&str]) -> Result<Vec<(String, Value)>, BodyError> {
    let obj: StrictObject = serde_json::from_slice(bytes).map_err(|e| {
        if e.is_data() {
            BodyError::Invalid(format!("the request body must be a JSON object: {e}"))
        } else {
            BodyError::Syntax(e.to_string())
        }
    })?;
    let unknown: Vec<&str> = obj.0.iter().map(|(k, _)| k.as_str()).filter(|k| !known.contains(k)).collect();
    if !unknown.is_empty() {
        let names: Vec<String> = unknown.iter().map(|k| format!("`{k}`")).collect();
        return Err(BodyError::Invalid(format!(
            "unknown key{} {} in the request body; the known keys are {}",
            if names.len() > 1 { "s" } else { "" },
            names.join(", "),
            known.join(", ")
        )));
    }
    Ok(obj.0)
}

fn take(members: &mut Vec<(String, Value)>, key: &str) -> Option<Value> {
    let i = members.iter().position(|(k, _)| k == key)?;
    Some(members.swap_remove(i).1)
}

fn invalid(msg: String) -> BodyError {
    BodyError::Invalid(msg)
}

/// A required, non-empty string member.
fn text(members: &mut Vec<(String, Value)>, key: &str) -> Result<String, BodyError> {
    match take(members, key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
        Some(Value::String(_)) => Err(invalid(format!("`{key}` must not be empty"))),
        Some(other) => Err(invalid(format!("`{key}` must be a string, not {}", kind(&other)))),
        None => Err(invalid(format!("`{key}` is required"))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `where`: an object of field → string, number or boolean (numbers and booleans as written).
fn filters(v: Option<Value>) -> Result<Vec<(String, String)>, BodyError> {
    let map = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(m)) => m,
        Some(other) => {
            return Err(invalid(format!(
                "`where` must be an object of field name to value, not {}",
                kind(&other)
            )))
        }
    };
    map.into_iter()
        .map(|(field, v)| match v {
            Value::String(s) => Ok((field, s)),
            Value::Number(_) | Value::Bool(_) => Ok((field, v.to_string())),
            other => Err(invalid(format!(
                "`where.{field}` must be a string, number or boolean, not {}",
                kind(&other)
            ))),
        })
        .collect()
}

/// An optional whole number from 1 to `max` (`null` is absent, as clients often send it).
fn count(v: Option<Value>, key: &str, max: u64) -> Result<Option<u64>, BodyError> {
    let Some(v) = v.filter(|v| !v.is_null()) else { return Ok(None) };
    match v.as_u64() {
        Some(n) if (1..=max).contains(&n) => Ok(Some(n)),
        _ => Err(invalid(format!("`{key}` must be a whole number from 1 to {max}, not {v}"))),
    }
}

impl QueryRequest {
    /// Decodes and checks a `POST /v1/query` body.
    pub fn from_json(bytes: &[u8]) -> Result<QueryRequest, BodyError> {
        let mut m = object(bytes, QUERY_KEYS)?;
        Ok(QueryRequest {
            peer: text(&mut m, "peer")?,
            dataset: text(&mut m, "dataset")?,
            purpose: text(&mut m, "purpose")?,
            filters: filters(take(&mut m, "where"))?,
            limit: count(take(&mut m, "limit"), "limit", MAX_LIMIT)?,
            timeout_ms: count(take(&mut m, "timeout_ms"), "timeout_ms", MAX_TIMEOUT_MS)?,
        })
    }
}

/// True if and only if `content_type` is JSON (`application/json`, optionally with parameters,
/// or an `application/*+json` type), which is what axum's own `Json` accepts.
pub fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(body: &str) -> Result<QueryRequest, BodyError> {
        QueryRequest::from_json(body.as_bytes())
    }

    const BASE: &str = r#""peer":"hotline12345@wuxi","dataset":"d","purpose":"p""#;

    #[test]
    fn a_valid_body_decodes_with_filters_as_text() {
        let r = q(&format!(r#"{{{BASE},"where":{{"a":"x","n":3,"b":true}},"limit":5}}"#)).unwrap();
        assert_eq!(r.peer, "hotline12345@wuxi");
        assert_eq!(
            r.filters,
            vec![("a".into(), "x".into()), ("n".into(), "3".into()), ("b".into(), "true".into())]
        );
        assert_eq!(r.limit, Some(5));
        assert_eq!(r.timeout_ms, None);
        let r = q(&format!(r#"{{{BASE},"timeout_ms":3600000}}"#)).unwrap();
        assert_eq!(r.timeout_ms, Some(MAX_TIMEOUT_MS));
        let e = q(&format!(r#"{{{BASE},"timeout_ms":0}}"#)).unwrap_err().to_string();
        assert!(e.starts_with("`timeout_ms` must be a whole number from 1 to 3600000"), "{e}");
        assert_eq!(q(&format!("{{{BASE}}}")).unwrap().filters, vec![]);
    }

    #[test]
    fn an_unknown_key_is_named_with_the_known_ones() {
        let e = q(&format!(r#"{{{BASE},"filters":{{"a":"x"}}}}"#)).unwrap_err().to_string();
        assert_eq!(
            e,
            "unknown key `filters` in the request body; the known keys are peer, dataset, purpose, where, limit, timeout_ms"
        );
        let e = q(&format!(r#"{{{BASE},"x":1,"y":2}}"#)).unwrap_err().to_string();
        assert!(e.starts_with("unknown keys `x`, `y` in"), "{e}");
    }

    #[test]
    fn limits_outside_one_to_i64_max_are_refused() {
        for bad in ["0", "-1", "1.5", "\"5\"", "9223372036854775808", "1e3"] {
            let e = q(&format!(r#"{{{BASE},"limit":{bad}}}"#)).unwrap_err().to_string();
            assert!(
                e.starts_with("`limit` must be a whole number from 1 to 9223372036854775807"),
                "{bad}: {e}"
            );
        }
        assert_eq!(q(&format!(r#"{{{BASE},"limit":9223372036854775807}}"#)).unwrap().limit, Some(MAX_LIMIT));
        let r = q(&format!(r#"{{{BASE},"limit":null,"timeout_ms":null,"where":null}}"#)).unwrap();
        assert_eq!((r.limit, r.timeout_ms, r.filters), (None, None, vec![]));
    }

    #[test]
    fn wrong_types_missing_and_empty_fields_name_the_key() {
        let cases = [
            (r#"{"dataset":"d","purpose":"p"}"#.to_owned(), "`peer` is required"),
            (r#"{"peer":7,"dataset":"d","purpose":"p"}"#.to_owned(), "`peer` must be a string, not a number"),
            (r#"{"peer":"a@b","dataset":" ","purpose":"p"}"#.to_owned(), "`dataset` must not be empty"),
            (format!(r#"{{{BASE},"where":[1]}}"#), "`where` must be an object"),
            (
                format!(r#"{{{BASE},"where":{{"f":null}}}}"#),
                "`where.f` must be a string, number or boolean, not null",
            ),
            (
                format!(r#"{{{BASE},"where":{{"f":{{}}}}}}"#),
                "`where.f` must be a string, number or boolean, not an object",
            ),
        ];
        for (body, want) in cases {
            let e = q(&body).unwrap_err().to_string();
            assert!(e.starts_with(want), "{body}: {e}");
        }
    }

    #[test]
    fn a_repeated_key_is_refused() {
        let e = q(&format!(r#"{{{BASE},"peer":"other@wuxi"}}"#)).unwrap_err();
        assert!(matches!(&e, BodyError::Invalid(m) if m.contains("key `peer` appears twice")), "{e}");
    }

    #[test]
    fn syntax_errors_and_non_objects_are_told_apart() {
        assert!(matches!(q("{"), Err(BodyError::Syntax(_))));
        assert!(matches!(q(""), Err(BodyError::Syntax(_))));
        assert!(matches!(q("{} trailing"), Err(BodyError::Syntax(_))));
        for not_object in ["[]", "3", "\"x\"", "null"] {
            let e = q(not_object).unwrap_err();
            assert!(
                matches!(&e, BodyError::Invalid(m) if m.starts_with("the request body must be a JSON object")),
                "{not_object}: {e}"
            );
        }
    }

    #[test]
    fn json_content_types() {
        for ok in ["application/json", "Application/JSON; charset=utf-8", "application/problem+json"] {
            assert!(is_json(ok), "{ok}");
        }
        for bad in ["text/plain", "application/jsonx", "", "multipart/form-data"] {
            assert!(!is_json(bad), "{bad}");
        }
    }
}
