//! The local API of the subscriptions this node holds: create, list, cancel, read what arrived
//! (JSON Lines, long-poll) and acknowledge it. Applications read from their own gateway, never
//! from the provider; what they acknowledge is deleted and never handed out again.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path as UrlPath, Query as UrlQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use fedgate_catalog::NodeId;

use crate::api::{bad, blocking, ApiError, ApiState, EventsParams};
use crate::error::ApiCode;
use crate::exchange::subscription::Subscription;
use crate::subscriptions::{StoreError, SubState};

/// Keys `POST /v1/subscriptions` accepts.
pub const CREATE_KEYS: &[&str] = &["peer", "dataset", "purpose", "where"];
/// The longest an events read waits for something to arrive.
pub const MAX_WAIT_MS: u64 = 60_000;
/// The most items one events read returns.
pub const MAX_ITEMS: usize = 1000;

/// A checked `POST /v1/subscriptions` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateRequest {
    /// The provider.
    pub peer: NodeId,
    /// The dataset.
    pub dataset: String,
    /// The purpose.
    pub purpose: String,
    /// Equality filters; numbers and booleans as their JSON text.
    pub filters: Vec<(String, String)>,
}

pub(crate) fn text<'a>(
    obj: &'a serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> Result<&'a str, String> {
    match obj.get(key) {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(s),
        Some(_) => Err(format!("`{key}` must be a non-empty string")),
        None => Err(format!("`{key}` is required")),
    }
}

/// Decodes and checks a `POST /v1/subscriptions` body, naming the key at fault.
pub fn parse_create_body(bytes: &[u8]) -> Result<CreateRequest, String> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("the request body is not valid JSON: {e}"))?;
    let obj = v.as_object().ok_or("the request body must be a JSON object")?;
    if let Some(k) = obj.keys().find(|k| !CREATE_KEYS.contains(&k.as_str())) {
        return Err(format!(
            "unknown key `{k}` in the request body; the known keys are {}",
            CREATE_KEYS.join(", ")
        ));
    }
    let peer = text(obj, "peer")?.parse().map_err(|e: fedgate_catalog::NameError| format!("`peer`: {e}"))?;
    let mut filters = Vec::new();
    match obj.get("where") {
        None => {}
        Some(serde_json::Value::Object(w)) => {
            for (f, v) in w {
                let value = match v {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Number(n) => n.to_string(),
                    serde_json::Value::Bool(b) => b.to_string(),
                    _ => return Err(format!("`where.{f}` must be a string, number or boolean")),
                };
                filters.push((f.clone(), value));
            }
        }
        Some(_) => return Err("`where` must be an object of field: value".into()),
    }
    Ok(CreateRequest {
        peer,
        dataset: text(obj, "dataset")?.to_owned(),
        purpose: text(obj, "purpose")?.to_owned(),
        filters,
    })
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Unknown(_) => ApiError::new(ApiCode::NotFound, e.to_string()),
            other => {
                tracing::error!(error = %other, "subscription store failed");
                ApiError::new(ApiCode::Internal, "the subscription store failed; see the gateway's log")
            }
        }
    }
}

pub(crate) fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    if ct.is_some_and(crate::api_body::is_json) {
        Ok(())
    } else {
        Err(ApiError::new(
            ApiCode::UnsupportedMediaType,
            "the request body must be JSON: send `Content-Type: application/json`",
        ))
    }
}

/// `POST /v1/subscriptions`: a durable subscription held by this gateway; its rounds start at
/// once in the background. A provider that refuses it leaves it `stopped` with the reason.
pub(crate) async fn create(
    State(st): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let req = parse_create_body(&body).map_err(bad)?;
    // A peer is known from `[[peers]]` or from the federation directory, as for queries.
    crate::api::known_peer(&st.shared, &req.peer)?;
    let sub = Subscription::create(&req.dataset, &req.purpose, req.filters)
        .map_err(|e| ApiError::new(ApiCode::Internal, e))?;
    let subs = st.shared.subscriptions.clone();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let peer = req.peer.clone();
    let held = blocking(move || subs.create(&peer, &sub, now)).await?;
    crate::quic::subscription::audit_state(
        &st.shared,
        &held,
        "subscribed",
        "created through the local API",
        None,
    )
    .await;
    Ok((StatusCode::CREATED, Json(held)).into_response())
}

/// `GET /v1/subscriptions`.
pub(crate) async fn list(State(st): State<ApiState>) -> Result<Response, ApiError> {
    let subs = st.shared.subscriptions.clone();
    Ok(Json(blocking(move || subs.list()).await?).into_response())
}

fn id_of(id: Result<UrlPath<String>, PathRejection>) -> Result<String, ApiError> {
    crate::api::exchange_id_in_path(id, "subscription")
}

/// `DELETE /v1/subscriptions/{id}`: no more rounds; what arrived stays readable.
pub(crate) async fn cancel(
    State(st): State<ApiState>,
    id: Result<UrlPath<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = id_of(id)?;
    let (subs, sid) = (st.shared.subscriptions.clone(), id.clone());
    let ended =
        blocking(move || subs.end(&sid, SubState::Cancelled, "cancelled through the local API")).await?;
    let (subs, sid) = (st.shared.subscriptions.clone(), id.clone());
    let held = blocking(move || subs.get(&sid)).await?;
    if ended {
        crate::quic::subscription::audit_state(
            &st.shared,
            &held,
            "cancelled",
            "cancelled through the local API",
            None,
        )
        .await;
    }
    Ok(Json(held).into_response())
}

/// `GET /v1/subscriptions/{id}/events`: JSON Lines of what arrived after `after`, waiting up to
/// `wait_ms` for the first; a subscription no longer active ends with a `{"@state"}` line.
pub(crate) async fn events(
    State(st): State<ApiState>,
    id: Result<UrlPath<String>, PathRejection>,
    params: Result<UrlQuery<EventsParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = id_of(id)?;
    let UrlQuery(p) = params.map_err(|e| bad(e.body_text()))?;
    let wait = Duration::from_millis(p.wait_ms.unwrap_or(0).min(MAX_WAIT_MS));
    let limit = p.limit.unwrap_or(MAX_ITEMS).clamp(1, MAX_ITEMS);
    // Item ids are SQLite integers: nothing lies after i64::MAX, so a larger `after` reads
    // as that rather than failing in the store.
    let after = p.after.min(i64::MAX as u64);
    let deadline = tokio::time::Instant::now() + wait;
    let mut changes = st.shared.subscriptions.changes();
    loop {
        changes.borrow_and_update();
        let (subs, sid) = (st.shared.subscriptions.clone(), id.clone());
        let (held, items) =
            blocking(move || Ok::<_, StoreError>((subs.get(&sid)?, subs.items(&sid, after, limit)?))).await?;
        let active = held.state == SubState::Active;
        if items.is_empty() && active && tokio::time::timeout_at(deadline, changes.changed()).await.is_ok() {
            continue;
        }
        let mut out = String::new();
        for i in &items {
            out.push_str(&i.json.to_string());
            out.push('\n');
        }
        if !active && items.len() < limit {
            let line = serde_json::json!({"@state": held.state, "reason": held.reason});
            out.push_str(&line.to_string());
            out.push('\n');
        }
        return Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], out).into_response());
    }
}

/// `POST /v1/subscriptions/{id}/ack` with `{"upto": ID}`: the application processed everything
/// up to `upto`; it is deleted and never handed out again.
pub(crate) async fn ack(
    State(st): State<ApiState>,
    id: Result<UrlPath<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = id_of(id)?;
    require_json(&headers)?;
    let upto = parse_ack_body(&body)?;
    let subs = st.shared.subscriptions.clone();
    let delivered = blocking(move || subs.app_ack(&id, upto)).await?;
    Ok(Json(serde_json::json!({ "delivered": delivered })).into_response())
}

/// `{"upto": ID}`, strictly. Item ids are SQLite integers: anything past i64::MAX names no item
/// and is refused here rather than failing in the store.
fn parse_ack_body(body: &[u8]) -> Result<u64, ApiError> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("the request body is not valid JSON: {e}")))?;
    let obj = v.as_object().ok_or_else(|| bad("the request body must be {\"upto\": ID}"))?;
    if let Some(k) = obj.keys().find(|k| k.as_str() != "upto") {
        return Err(bad(format!("unknown key `{k}` in the request body; the known key is upto")));
    }
    obj.get("upto")
        .and_then(|u| u.as_u64())
        .filter(|u| i64::try_from(*u).is_ok())
        .ok_or_else(|| bad("`upto` must be a whole number from 0 to 9223372036854775807"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ack_past_the_largest_item_id_is_a_bad_request_not_a_store_failure() {
        assert_eq!(parse_ack_body(br#"{"upto": 9223372036854775807}"#).unwrap(), i64::MAX as u64);
        for body in [&br#"{"upto": 10000000000000000001}"#[..], br#"{"upto": -1}"#, br#"{"upto": 1, "x": 2}"#]
        {
            let e = parse_ack_body(body).unwrap_err();
            assert_eq!(e.code(), ApiCode::BadRequest, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn create_bodies_parse_and_name_the_key_at_fault() {
        let ok = parse_create_body(
            br#"{"peer":"hotline12345@wuxi","dataset":"t","purpose":"dispute-mediation","where":{"region":"wuxi.liangxi","n":3}}"#,
        )
        .unwrap();
        assert_eq!(
            ok.filters,
            [("region".to_owned(), "wuxi.liangxi".to_owned()), ("n".to_owned(), "3".to_owned())]
        );
        let err = |b: &[u8]| parse_create_body(b).unwrap_err();
        assert!(err(br#"{"peer":"hotline12345@wuxi","dataset":"t"}"#).contains("`purpose` is required"));
        assert!(err(br#"{"peer":"x","dataset":"t","purpose":"p"}"#).starts_with("`peer`: "));
        assert!(err(br#"{"peer":"hotline12345@wuxi","dataset":"t","purpose":"p","filters":{}}"#)
            .contains("unknown key `filters`"));
        assert!(err(br#"{"peer":"hotline12345@wuxi","dataset":"t","purpose":"p","where":{"a":null}}"#)
            .contains("`where.a`"));
    }
}
