//! The local API of sharing requests: the consumer's applications and CLI make requests and
//! read their answers; the provider's steward lists, approves, refuses and revokes. An approval
//! or revocation rewrites the grants file the gateway manages and reloads the rules before it
//! answers, so it is in force (or gone) for the next query and the next subscription batch.

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path as UrlPath, Query as UrlQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use fedgate_catalog::NodeId;
use serde::Deserialize;

use crate::api::{bad, blocking, ApiError, ApiState};
use crate::api_subscriptions::{require_json, text};
use crate::error::ApiCode;
use crate::governance::request::{check_approval, rfc3339, Approval, SharingRequest};
use crate::governance::store::{write_grants_file, Held, Role, StoreError};
use crate::state::Shared;

/// Keys `POST /v1/requests` accepts.
pub const CREATE_KEYS: &[&str] = &["peer", "dataset", "purpose", "fields", "until", "reason"];
/// Keys `POST /v1/requests/{id}/approve` accepts.
pub const APPROVE_KEYS: &[&str] = &["clearance", "until", "days", "quota", "rows"];
/// Keys `POST /v1/requests/{id}/refuse` and `…/revoke` accept.
pub const REASON_KEYS: &[&str] = &["reason"];

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

pub(crate) type Object = serde_json::Map<String, serde_json::Value>;

pub(crate) fn object(bytes: &[u8], known: &[&str]) -> Result<Object, String> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("the request body is not valid JSON: {e}"))?;
    let serde_json::Value::Object(obj) = v else {
        return Err("the request body must be a JSON object".into());
    };
    if let Some(k) = obj.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(format!(
            "unknown key `{k}` in the request body; the known keys are {}",
            known.join(", ")
        ));
    }
    Ok(obj)
}

/// `YYYY-MM-DD` as the end of that day, China Standard Time (as grant files read a date).
pub fn end_of_day(s: &str) -> Option<i64> {
    let mut parts = s.splitn(3, '-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let (y, m, d): (i64, u32, u32) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    fedgate_policy::time::is_valid_date(y, m, d).then(|| {
        (fedgate_policy::time::days_from_civil(y, m, d) + 1) * 86_400 - fedgate_policy::time::CST_OFFSET_SECS
    })
}

fn opt_date(obj: &Object, key: &str) -> Result<Option<i64>, String> {
    match obj.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => {
            end_of_day(s).map(Some).ok_or_else(|| format!("`{key}` must be a date YYYY-MM-DD, not {s:?}"))
        }
        Some(_) => Err(format!("`{key}` must be a date string YYYY-MM-DD")),
    }
}

fn opt_uint(obj: &Object, key: &str) -> Result<Option<u64>, String> {
    match obj.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| format!("`{key}` must be a whole number ≥ 0")),
    }
}

/// A checked `POST /v1/requests` body: the provider and the request's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateRequest {
    /// The provider.
    pub peer: NodeId,
    /// The dataset.
    pub dataset: String,
    /// The purpose.
    pub purpose: String,
    /// Fields needed.
    pub fields: Vec<String>,
    /// End of use asked for (Unix seconds).
    pub until: Option<i64>,
    /// Why.
    pub reason: String,
}

/// Decodes and checks a `POST /v1/requests` body, naming the key at fault.
pub fn parse_create_body(bytes: &[u8]) -> Result<CreateRequest, String> {
    let obj = object(bytes, CREATE_KEYS)?;
    let peer = text(&obj, "peer")?.parse().map_err(|e: fedgate_catalog::NameError| format!("`peer`: {e}"))?;
    let fields = match obj.get("fields") {
        None => vec![],
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().filter(|s| !s.is_empty()).map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or("`fields` must be an array of field names")?,
        Some(_) => return Err("`fields` must be an array of field names".into()),
    };
    Ok(CreateRequest {
        peer,
        dataset: text(&obj, "dataset")?.to_owned(),
        purpose: text(&obj, "purpose")?.to_owned(),
        fields,
        until: opt_date(&obj, "until")?,
        reason: text(&obj, "reason")?.to_owned(),
    })
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Unknown { .. } => ApiError::new(ApiCode::NotFound, e.to_string()),
            StoreError::State { .. } | StoreError::Conflict(_) => bad(e.to_string()),
            other => {
                tracing::error!(error = %other, "request store failed");
                ApiError::new(ApiCode::Internal, "the request store failed; see the gateway's log")
            }
        }
    }
}

/// `POST /v1/requests`: a sharing request signed by this node, stored, then sent to the
/// provider in the background (and again until it is answered).
pub(crate) async fn create(
    State(st): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let c = parse_create_body(&body).map_err(bad)?;
    let held = make(&st.shared, c).await?;
    Ok((StatusCode::CREATED, Json(held)).into_response())
}

/// Makes a sharing request of this node: signed, audited (`requested`) and stored; the
/// background loop sends it.
pub async fn make(shared: &Shared, c: CreateRequest) -> Result<Held, ApiError> {
    crate::api::known_peer(shared, &c.peer)?;
    let now = unix_now();
    let exchange = crate::exchange::new_exchange_id()
        .ok_or_else(|| ApiError::new(ApiCode::Internal, "no system randomness for an exchange id"))?;
    let req = SharingRequest {
        exchange,
        consumer: shared.cfg.node.clone(),
        provider: c.peer,
        dataset: c.dataset,
        purpose: c.purpose,
        fields: c.fields,
        until: c.until,
        reason: c.reason,
    };
    req.check(now).map_err(bad)?;
    let signature = shared
        .signer
        .sign(&req.message())
        .map_err(|e| ApiError::new(ApiCode::Internal, format!("cannot sign the request: {e}")))?;
    let signature = fedgate_catalog::hex(&signature);
    let mut e = crate::quic::request::entry(shared, &req, &req.provider, "requested");
    e.reason = Some(req.reason.clone());
    e.signature = Some(signature.clone());
    e.detail = Some(format!("sharing request; fields [{}]", req.fields.join(", ")));
    shared.audit.append(e).await.map_err(|e| ApiError::new(ApiCode::Internal, e.to_string()))?;
    let store = shared.requests.clone();
    blocking(move || store.create_outgoing(&req, &signature, now)).await
}

/// Query of `GET /v1/requests`.
#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    role: Option<String>,
}

fn role_of(s: Option<&str>) -> Result<Option<Role>, ApiError> {
    match s {
        None => Ok(None),
        Some("incoming") => Ok(Some(Role::Incoming)),
        Some("outgoing") => Ok(Some(Role::Outgoing)),
        Some(other) => Err(bad(format!("`role` must be incoming or outgoing, not {other:?}"))),
    }
}

/// `GET /v1/requests[?role=incoming|outgoing]`: this node's requests, newest first, each
/// flagged `overdue` if its answer is owed past its deadline.
pub(crate) async fn list(
    State(st): State<ApiState>,
    q: Result<UrlQuery<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let UrlQuery(q) = q.map_err(|e| bad(e.body_text()))?;
    let role = role_of(q.role.as_deref())?;
    let store = st.shared.requests.clone();
    Ok(Json(blocking(move || store.list(role, unix_now())).await?).into_response())
}

fn id_of(id: Result<UrlPath<String>, PathRejection>) -> Result<String, ApiError> {
    crate::api::exchange_id_in_path(id, "request")
}

/// `GET /v1/requests/{id}`: one request, incoming or outgoing.
pub(crate) async fn show(
    State(st): State<ApiState>,
    id: Result<UrlPath<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = id_of(id)?;
    let store = st.shared.requests.clone();
    let rid = id.clone();
    let held = blocking(move || {
        let now = unix_now();
        match store.get(&rid, Role::Incoming, now) {
            Err(StoreError::Unknown { .. }) => store.get(&rid, Role::Outgoing, now),
            other => other,
        }
    })
    .await
    .map_err(|e| match e.code() {
        ApiCode::NotFound => ApiError::new(ApiCode::NotFound, format!("no request {id} at this gateway")),
        _ => e,
    })?;
    Ok(Json(held).into_response())
}

/// Checks a `POST /v1/requests/{id}/approve` body against the request it approves: the
/// clearance defaults to the highest grade the request covers, the end to the request's own
/// (`days` counts from `now`).
pub fn parse_approval(bytes: &[u8], held: &Held, now: i64) -> Result<Approval, String> {
    let obj = object(bytes, APPROVE_KEYS)?;
    let clearance = match opt_uint(&obj, "clearance")? {
        Some(c) => u8::try_from(c).map_err(|_| "`clearance` must be 1 to 4".to_owned())?,
        None => held.clearance.unwrap_or(1),
    };
    let until = match (opt_date(&obj, "until")?, opt_uint(&obj, "days")?) {
        (Some(_), Some(_)) => return Err("give `until` or `days`, not both".into()),
        (Some(u), None) => u,
        (None, Some(d)) => {
            now.saturating_add(i64::try_from(d).unwrap_or(i64::MAX / 2).saturating_mul(86_400))
        }
        (None, None) => held.until.ok_or("the request names no end: give `until` or `days`")?,
    };
    let rows = match obj.get("rows") {
        None => "own".to_owned(),
        Some(_) => text(&obj, "rows")?.to_owned(),
    };
    let a = Approval { clearance, until, quota: opt_uint(&obj, "quota")?, rows };
    check_approval(&a, now)?;
    Ok(a)
}

fn reason_of(bytes: &[u8]) -> Result<String, String> {
    let obj = object(bytes, REASON_KEYS)?;
    let r = text(&obj, "reason")?;
    if r.trim().is_empty() || r.len() > crate::governance::request::MAX_REASON {
        return Err("`reason` must say why, in at most 2048 bytes".into());
    }
    Ok(r.to_owned())
}

/// `POST /v1/requests/{id}/approve`: writes the grant and puts it in force.
pub(crate) async fn approve(
    State(st): State<ApiState>,
    id: Result<UrlPath<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let id = id_of(id)?;
    let now = unix_now();
    let (store, rid) = (st.shared.requests.clone(), id.clone());
    let held = blocking(move || store.get(&rid, Role::Incoming, now)).await?;
    let a = parse_approval(&body, &held, now).map_err(bad)?;
    Ok(Json(approve_request(&st.shared, &id, a).await?).into_response())
}

/// The steward approves incoming request `id` with `a`: stored, audited (`approve`), written
/// into the managed grants file and in force before this returns.
pub async fn approve_request(shared: &Shared, id: &str, a: Approval) -> Result<Held, ApiError> {
    let now = unix_now();
    check_approval(&a, now).map_err(bad)?;
    let (store, rid, approval) = (shared.requests.clone(), id.to_owned(), a.clone());
    let held = blocking(move || store.approve(&rid, &approval, now)).await?;
    let mut detail = format!("grant until {}", rfc3339(a.until));
    if let Some(q) = a.quota {
        detail.push_str(&format!(", quota {q}/day"));
    }
    let mut e = steward_entry(shared, &held, "approve")?;
    e.grant = held.grant.clone();
    e.clearance = Some(a.clearance);
    e.rows = Some(a.rows.clone());
    e.detail = Some(detail);
    in_force(shared, e).await?;
    Ok(held)
}

/// `POST /v1/requests/{id}/refuse`: a pending request refused, with the reason the consumer
/// is told.
pub(crate) async fn refuse(
    State(st): State<ApiState>,
    id: Result<UrlPath<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let id = id_of(id)?;
    let reason = reason_of(&body).map_err(bad)?;
    Ok(Json(refuse_request(&st.shared, &id, &reason).await?).into_response())
}

fn check_reason(r: &str) -> Result<(), ApiError> {
    if r.trim().is_empty() || r.len() > crate::governance::request::MAX_REASON {
        return Err(bad("`reason` must say why, in at most 2048 bytes"));
    }
    Ok(())
}

/// The steward refuses pending incoming request `id`: stored and audited (`refuse`).
pub async fn refuse_request(shared: &Shared, id: &str, reason: &str) -> Result<Held, ApiError> {
    check_reason(reason)?;
    let (store, rid, why) = (shared.requests.clone(), id.to_owned(), reason.to_owned());
    let held = blocking(move || store.refuse(&rid, &why, unix_now())).await?;
    let mut e = steward_entry(shared, &held, "refuse")?;
    e.reason = Some(reason.to_owned());
    shared.audit.append(e).await.map_err(|e| ApiError::new(ApiCode::Internal, e.to_string()))?;
    Ok(held)
}

/// `POST /v1/requests/{id}/revoke`: an approved request's grant withdrawn at once.
pub(crate) async fn revoke(
    State(st): State<ApiState>,
    id: Result<UrlPath<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let id = id_of(id)?;
    let reason = reason_of(&body).map_err(bad)?;
    Ok(Json(revoke_request(&st.shared, &id, &reason).await?).into_response())
}

/// The steward revokes approved incoming request `id`: stored, audited (`revoke`), and its
/// grant out of force before this returns.
pub async fn revoke_request(shared: &Shared, id: &str, reason: &str) -> Result<Held, ApiError> {
    check_reason(reason)?;
    let (store, rid, why) = (shared.requests.clone(), id.to_owned(), reason.to_owned());
    let held = blocking(move || store.revoke(&rid, &why, unix_now())).await?;
    let mut e = steward_entry(shared, &held, "revoke")?;
    e.grant = held.grant.clone();
    e.reason = Some(reason.to_owned());
    in_force(shared, e).await?;
    Ok(held)
}

fn steward_entry(shared: &Shared, held: &Held, decision: &str) -> Result<fedgate_audit::Entry, ApiError> {
    let req = held.request(shared.link.local()).map_err(|e| ApiError::new(ApiCode::Internal, e))?;
    Ok(crate::quic::request::entry(shared, &req, &req.consumer, decision))
}

/// Audits the steward's decision, rewrites the managed grants file from the store and reloads
/// the rules, so the decision holds for the next query and subscription batch.
async fn in_force(shared: &Shared, entry: fedgate_audit::Entry) -> Result<(), ApiError> {
    shared.audit.append(entry).await.map_err(|e| ApiError::new(ApiCode::Internal, e.to_string()))?;
    let (store, local, path) =
        (shared.requests.clone(), shared.cfg.node.clone(), shared.cfg.approved_grants.clone());
    blocking(move || write_grants_file(&path, &store.approved_grants(&local, unix_now())?)).await?;
    shared.reload_rules().await.map_err(|e| {
        tracing::error!(error = %e, "grants do not reload after a steward's decision");
        ApiError::new(
            ApiCode::Internal,
            format!("the decision is recorded but the rules did not reload: {e}"),
        )
    })
}
