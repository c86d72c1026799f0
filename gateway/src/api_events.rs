//! `POST /v1/datasets/{id}/events`: the department's application publishes changes to one of
//! this node's datasets; they are checked against the catalog and appended to the event log
//! ([`crate::events`]) for subscribers.

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path as UrlPath, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Serialize;

use crate::api::{ApiError, ApiState};
use crate::error::ApiCode;
use crate::events::{records_from_json, Op};

/// Keys a publish body accepts.
pub const PUBLISH_KEYS: &[&str] = &["op", "records"];

/// What a publish body asks: the operation and the records as JSON objects.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishRequest {
    /// Insert (the default) or update.
    pub op: Op,
    /// The records, keyed by field name.
    pub records: Vec<serde_json::Value>,
}

/// Decodes a publish body, naming the key at fault.
pub fn parse_publish_body(bytes: &[u8]) -> Result<PublishRequest, String> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("the request body is not valid JSON: {e}"))?;
    let obj = v.as_object().ok_or("the request body must be a JSON object with `records`")?;
    if let Some(k) = obj.keys().find(|k| !PUBLISH_KEYS.contains(&k.as_str())) {
        return Err(format!("unknown key `{k}` (expected one of: {})", PUBLISH_KEYS.join(", ")));
    }
    let op = match obj.get("op") {
        None => Op::Insert,
        Some(o) => o.as_str().and_then(Op::parse).ok_or("`op` must be \"insert\" or \"update\"")?,
    };
    let records = obj
        .get("records")
        .and_then(|r| r.as_array())
        .ok_or("`records` must be an array of objects keyed by field name")?
        .clone();
    if records.is_empty() {
        return Err("`records` is empty: publish at least one record".into());
    }
    Ok(PublishRequest { op, records })
}

/// The ids the published records were given.
#[derive(Debug, Serialize)]
struct Published {
    dataset: String,
    first: u64,
    last: u64,
    count: u64,
}

pub(crate) async fn publish(
    State(st): State<ApiState>,
    id: Result<UrlPath<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<impl Serialize>, ApiError> {
    let UrlPath(id) = id.map_err(|e| ApiError::new(ApiCode::BadRequest, e.body_text()))?;
    let json = headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    if !json.is_some_and(crate::api_body::is_json) {
        return Err(ApiError::new(
            ApiCode::UnsupportedMediaType,
            "the request body must be JSON: send `Content-Type: application/json`",
        ));
    }
    let req = parse_publish_body(&body).map_err(|m| ApiError::new(ApiCode::BadRequest, m))?;
    let catalog = st.shared.catalog();
    let ds = catalog
        .get(&id)
        .ok_or_else(|| ApiError::new(ApiCode::UnknownDataset, format!("this node has no dataset `{id}`")))?;
    let records = records_from_json(ds, &req.records)
        .map_err(|e| ApiError::new(ApiCode::BadRequest, format!("dataset `{id}`: {e}")))?;
    let events = st.shared.events.clone();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let (dataset, op) = (id.clone(), req.op);
    let ids = tokio::task::spawn_blocking(move || events.publish(&dataset, op, &records, now))
        .await
        .map_err(|e| ApiError::new(ApiCode::Internal, format!("publishing failed: {e}")))?
        .map_err(|e| {
            tracing::error!(error = %e, "event log write failed");
            ApiError::new(ApiCode::Internal, "the event log could not be written; see the gateway's log")
        })?;
    let (first, last) = ids.unwrap_or((0, 0));
    Ok(Json(Published { dataset: id, first, last, count: last + 1 - first }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_bodies_parse_and_name_the_key_at_fault() {
        let ok = parse_publish_body(br#"{"records":[{"a":1}]}"#).unwrap();
        assert_eq!(ok.op, Op::Insert);
        assert_eq!(ok.records.len(), 1);
        assert_eq!(parse_publish_body(br#"{"op":"update","records":[{}]}"#).unwrap().op, Op::Update);
        let err = |b: &[u8]| parse_publish_body(b).unwrap_err();
        assert!(err(br#"{"op":"delete","records":[{}]}"#).contains("`op`"));
        assert!(err(br#"{"record":[{}]}"#).contains("unknown key `record`"));
        assert!(err(br#"{"records":[]}"#).contains("`records` is empty"));
        assert!(err(br#"{"records":{}}"#).contains("`records` must be an array"));
        assert!(err(b"{").contains("not valid JSON"));
    }
}
