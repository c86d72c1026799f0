//! The local API of objections: the consumer's applications and CLI file objections to records
//! and read their answers; the provider's steward lists them, accepts (correcting the source)
//! or rejects with a reason. A decision takes the record's marker off at once.

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path as UrlPath, Query as UrlQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use fedgate_catalog::{NodeId, Value};
use serde::Deserialize;

use crate::api::{bad, blocking, ApiError, ApiState};
use crate::api_requests::object;
use crate::api_subscriptions::{require_json, text};
use crate::error::ApiCode;
use crate::governance::objection::{
    check_reason, typed, value_digest, Answer, Mark, Objection, State as Stage,
};
use crate::governance::objection_store::{Filed, ObjectionStoreError};
use crate::governance::store::Role;
use crate::state::Shared;

/// Keys `POST /v1/objections` accepts.
pub const FILE_KEYS: &[&str] = &["peer", "dataset", "purpose", "key", "field", "reason", "proposed"];
/// Keys `POST /v1/objections/{id}/accept` accepts.
pub const ACCEPT_KEYS: &[&str] = &["value", "reason"];
/// Keys `POST /v1/objections/{id}/reject` accepts.
pub const REJECT_KEYS: &[&str] = &["reason"];

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A checked `POST /v1/objections` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileObjection {
    /// The provider (the record's owner).
    pub peer: NodeId,
    /// The dataset.
    pub dataset: String,
    /// The purpose this node receives the record for.
    pub purpose: String,
    /// The record's primary key.
    pub key: String,
    /// The field held wrong.
    pub field: String,
    /// Why.
    pub reason: String,
    /// The value held right.
    pub proposed: Option<String>,
}

fn opt_text(obj: &crate::api_requests::Object, key: &str) -> Result<Option<String>, String> {
    match obj.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("`{key}` must be a string")),
    }
}

/// Decodes and checks a `POST /v1/objections` body, naming the key at fault.
pub fn parse_file_body(bytes: &[u8]) -> Result<FileObjection, String> {
    let obj = object(bytes, FILE_KEYS)?;
    let peer = text(&obj, "peer")?.parse().map_err(|e: fedgate_catalog::NameError| format!("`peer`: {e}"))?;
    Ok(FileObjection {
        peer,
        dataset: text(&obj, "dataset")?.to_owned(),
        purpose: text(&obj, "purpose")?.to_owned(),
        key: text(&obj, "key")?.to_owned(),
        field: text(&obj, "field")?.to_owned(),
        reason: text(&obj, "reason")?.to_owned(),
        proposed: opt_text(&obj, "proposed")?,
    })
}

impl From<ObjectionStoreError> for ApiError {
    fn from(e: ObjectionStoreError) -> ApiError {
        match e {
            ObjectionStoreError::Unknown { .. } => ApiError::new(ApiCode::NotFound, e.to_string()),
            ObjectionStoreError::Decided { .. } => ApiError::new(ApiCode::Conflict, e.to_string()),
            ObjectionStoreError::Conflict(_) => bad(e.to_string()),
            other => {
                tracing::error!(error = %other, "objection store failed");
                ApiError::new(ApiCode::Internal, "the objection store failed; see the gateway's log")
            }
        }
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ApiCode::Internal, e.to_string())
}

/// `POST /v1/objections`: an objection signed by this node, stored, then sent to the provider
/// in the background (and again until it is decided).
pub(crate) async fn create(
    State(st): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let f = parse_file_body(&body).map_err(bad)?;
    let filed = file(&st.shared, f).await?;
    Ok((StatusCode::CREATED, Json(filed)).into_response())
}

/// Files an objection of this node: signed, audited (`filed`) and stored; the background loop
/// sends it.
pub async fn file(shared: &Shared, f: FileObjection) -> Result<Filed, ApiError> {
    crate::api::known_peer(shared, &f.peer)?;
    let exchange = crate::exchange::new_exchange_id()
        .ok_or_else(|| ApiError::new(ApiCode::Internal, "no system randomness for an exchange id"))?;
    let o = Objection {
        exchange,
        consumer: shared.cfg.node.clone(),
        provider: f.peer,
        dataset: f.dataset,
        purpose: f.purpose,
        key: f.key,
        field: f.field,
        reason: f.reason,
        proposed: f.proposed,
    };
    o.check().map_err(bad)?;
    let signature = shared
        .signer
        .sign(&o.message())
        .map_err(|e| ApiError::new(ApiCode::Internal, format!("cannot sign the objection: {e}")))?;
    let signature = fedgate_catalog::hex(&signature);
    let mut e = crate::quic::objection::entry(shared, &o, &o.provider, "filed");
    e.reason = Some(o.reason.clone());
    e.signature = Some(signature.clone());
    e.detail = Some(format!("objection to field `{}`", o.field));
    shared.audit.append(e).await.map_err(internal)?;
    let store = shared.objections.clone();
    blocking(move || store.create_outgoing(&o, &signature, unix_now())).await
}

/// Query of `GET /v1/objections`.
#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    role: Option<String>,
}

/// `GET /v1/objections[?role=incoming|outgoing]`: this node's objections, newest first.
pub(crate) async fn list(
    State(st): State<ApiState>,
    q: Result<UrlQuery<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let UrlQuery(q) = q.map_err(|e| bad(e.body_text()))?;
    let role = match q.role.as_deref() {
        None => None,
        Some("incoming") => Some(Role::Incoming),
        Some("outgoing") => Some(Role::Outgoing),
        Some(other) => return Err(bad(format!("`role` must be incoming or outgoing, not {other:?}"))),
    };
    let store = st.shared.objections.clone();
    Ok(Json(blocking(move || store.list(role)).await?).into_response())
}

fn id_of(id: Result<UrlPath<String>, PathRejection>) -> Result<String, ApiError> {
    crate::api::exchange_id_in_path(id, "objection")
}

/// `GET /v1/objections/{id}`: one objection, incoming or outgoing.
pub(crate) async fn show(
    State(st): State<ApiState>,
    id: Result<UrlPath<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = id_of(id)?;
    let (store, rid) = (st.shared.objections.clone(), id.clone());
    let found = blocking(move || match store.find(&rid, Role::Incoming)? {
        Some(f) => Ok(Some(f)),
        None => store.find(&rid, Role::Outgoing),
    })
    .await?;
    let f = found
        .ok_or_else(|| ApiError::new(ApiCode::NotFound, format!("no objection {id} at this gateway")))?;
    Ok(Json(f).into_response())
}

/// A checked `POST /v1/objections/{id}/accept` body: the corrected value (the source is
/// written) or none (the steward corrected the source already), and an optional note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptBody {
    /// The corrected value, as text.
    pub value: Option<String>,
    /// A note to the objector.
    pub reason: Option<String>,
}

/// Decodes and checks an accept body (an empty body is accepting with no value and no note).
pub fn parse_accept_body(bytes: &[u8]) -> Result<AcceptBody, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(AcceptBody { value: None, reason: None });
    }
    let obj = object(bytes, ACCEPT_KEYS)?;
    let body = AcceptBody { value: opt_text(&obj, "value")?, reason: opt_text(&obj, "reason")? };
    check_reason(body.reason.as_deref(), false)?;
    Ok(body)
}

/// `POST /v1/objections/{id}/accept`: the steward agrees; the source is corrected (with the
/// value given, or checked to have been corrected), the corrected record is published as an
/// update for subscribers, and the marker goes.
pub(crate) async fn accept(
    State(st): State<ApiState>,
    id: Result<UrlPath<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if !body.iter().all(u8::is_ascii_whitespace) {
        require_json(&headers)?;
    }
    let id = id_of(id)?;
    let b = parse_accept_body(&body).map_err(bad)?;
    Ok(Json(accept_objection(&st.shared, &id, b).await?).into_response())
}

/// The steward accepts incoming objection `id`: corrects (or checks) the source, publishes the
/// record as an update, audits (`accept`), stores the decision and takes the marker off.
/// Publishing comes before the decision is stored: a crash in between leaves the objection
/// open, and accepting again publishes again (an update is the whole record: harmless twice).
pub async fn accept_objection(shared: &Shared, id: &str, b: AcceptBody) -> Result<Filed, ApiError> {
    let (store, rid) = (shared.objections.clone(), id.to_owned());
    let f = blocking(move || store.get(&rid, Role::Incoming)).await?;
    if f.state != Stage::Open {
        return Err(ApiError::from(ObjectionStoreError::Decided {
            id: id.to_owned(),
            state: f.state.as_str(),
        }));
    }
    let catalog = shared.catalog();
    let ds = catalog
        .get(&f.dataset)
        .ok_or_else(|| bad(format!("dataset `{}` is no longer in the catalog", f.dataset)))?;
    let ty = |name: &str| ds.field(name).map_or(fedgate_catalog::FieldType::String, |x| x.ty);
    let key = typed(ty(&ds.primary_key), &f.key)
        .ok_or_else(|| internal("the stored key does not fit the key field"))?;
    let read = crate::exchange::objection::steward_read(
        &catalog,
        &shared.cfg.sources,
        &f.dataset,
        &f.field,
        key.clone(),
    )
    .map_err(bad)?;
    let corrected = match &b.value {
        Some(text) => {
            let value = typed(ty(&f.field), text)
                .ok_or_else(|| bad(format!("`value` {text:?} is not a value of field `{}`", f.field)))?;
            let n = crate::governance::objection_source::write(
                &read.kind,
                &read.query.table,
                &ds.primary_key,
                &key,
                &f.field,
                &value,
            )
            .await
            .map_err(|why| {
                ApiError::new(
                    ApiCode::SourceUnavailable,
                    format!("the source did not take the correction: {why}"),
                )
            })?;
            if n != 1 {
                return Err(bad(format!(
                    "the source has {n} rows with key {:?}; nothing was corrected",
                    f.key
                )));
            }
            Some(value)
        }
        None => None,
    };
    let record = read_one(&read, &f).await?;
    let now_value = record.get(read.field).cloned().unwrap_or(Value::Null);
    if let Some(v) = &corrected {
        if &now_value != v {
            return Err(internal("the source does not hold the corrected value after writing it"));
        }
    } else {
        let (store, rid) = (shared.objections.clone(), id.to_owned());
        let before = blocking(move || store.objected_digest(&rid)).await?;
        if before.as_deref() == Some(value_digest(&now_value).as_str()) {
            return Err(ApiError::new(
                ApiCode::Conflict,
                format!(
                    "the source still holds the value of `{}` objected to: correct it there first, or accept with the corrected value",
                    f.field
                ),
            ));
        }
    }
    // The marker goes before the update is published, so the update reaches subscribers
    // unmarked; if anything after fails, it is put back (the objection is still open).
    shared.marks.remove(&f.dataset, &f.key, &f.id);
    let done = publish_and_decide(shared, &f, record, corrected.is_some(), &now_value, b.reason).await;
    if done.is_err() {
        let mark = Mark { id: f.id.clone(), field: f.field.clone(), received: f.created };
        shared.marks.add(&f.dataset, &f.key, mark);
    }
    done
}

async fn publish_and_decide(
    shared: &Shared,
    f: &Filed,
    record: fedgate_catalog::Record,
    by_gateway: bool,
    now_value: &Value,
    note: Option<String>,
) -> Result<Filed, ApiError> {
    let (events, dataset) = (shared.events.clone(), f.dataset.clone());
    let published = tokio::task::spawn_blocking(move || {
        events.publish(&dataset, crate::events::Op::Update, std::slice::from_ref(&record), unix_now())
    })
    .await
    .map_err(internal)?
    .map_err(internal)?;
    let answer = Answer { state: Stage::Accepted, reason: note, corrected: true, answered: Some(unix_now()) };
    let mut e = steward_entry(shared, f, "accept")?;
    e.reason = answer.reason.clone();
    e.content_digest = Some(value_digest(now_value));
    e.detail = Some(format!(
        "objection to field `{}`: {}; published as update event {}",
        f.field,
        if by_gateway { "the source corrected by the gateway" } else { "the source found corrected" },
        published.map_or_else(|| "-".into(), |(a, _)| a.to_string())
    ));
    decided(shared, f, e, answer).await
}

async fn read_one(
    read: &crate::exchange::objection::RecordRead,
    f: &Filed,
) -> Result<fedgate_catalog::Record, ApiError> {
    let records = crate::quic::objection::read_records(read).await.map_err(|e| {
        ApiError::new(
            ApiCode::SourceUnavailable,
            format!("the source of `{}` cannot be read: {e}", f.dataset),
        )
    })?;
    crate::exchange::objection::one_record(records, || format!("with key {:?} at the source", f.key))
        .map_err(bad)
}

/// `POST /v1/objections/{id}/reject`: the steward holds the record right, saying why.
pub(crate) async fn reject(
    State(st): State<ApiState>,
    id: Result<UrlPath<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let id = id_of(id)?;
    let obj = object(&body, REJECT_KEYS).map_err(bad)?;
    let reason = text(&obj, "reason").map_err(bad)?.to_owned();
    check_reason(Some(&reason), true).map_err(bad)?;
    Ok(Json(reject_objection(&st.shared, &id, reason).await?).into_response())
}

/// The steward rejects incoming objection `id` with `reason`: audited (`reject`), stored, the
/// marker off.
pub async fn reject_objection(shared: &Shared, id: &str, reason: String) -> Result<Filed, ApiError> {
    let (store, rid) = (shared.objections.clone(), id.to_owned());
    let f = blocking(move || store.get(&rid, Role::Incoming)).await?;
    if f.state != Stage::Open {
        return Err(ApiError::from(ObjectionStoreError::Decided {
            id: id.to_owned(),
            state: f.state.as_str(),
        }));
    }
    let answer =
        Answer { state: Stage::Rejected, reason: Some(reason), corrected: false, answered: Some(unix_now()) };
    let mut e = steward_entry(shared, &f, "reject")?;
    e.reason = answer.reason.clone();
    e.detail = Some(format!("objection to field `{}`", f.field));
    decided(shared, &f, e, answer).await
}

fn steward_entry(shared: &Shared, f: &Filed, decision: &str) -> Result<fedgate_audit::Entry, ApiError> {
    let o = f.objection(shared.link.local()).map_err(internal)?;
    Ok(crate::quic::objection::entry(shared, &o, &o.consumer, decision))
}

/// Audits the steward's decision, stores it, and takes the record's marker off.
async fn decided(shared: &Shared, f: &Filed, e: fedgate_audit::Entry, a: Answer) -> Result<Filed, ApiError> {
    shared.audit.append(e).await.map_err(internal)?;
    let (store, rid) = (shared.objections.clone(), f.id.clone());
    let done = blocking(move || store.decide(&rid, &a)).await?;
    shared.marks.remove(&f.dataset, &f.key, &f.id);
    tracing::info!(exchange = %f.id, consumer = %f.peer, state = done.state.as_str(), "objection decided");
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_checked_naming_the_key() {
        let ok = br#"{"peer":"petition@wuxi","dataset":"petitions","purpose":"dispute-mediation","key":"XF-1","field":"mobile","reason":"wrong"}"#;
        let f = parse_file_body(ok).unwrap();
        assert_eq!((f.key.as_str(), f.proposed), ("XF-1", None));
        let err =
            parse_file_body(br#"{"peer":"petition@wuxi","dataset":"d","purpose":"p","key":"k","field":"f"}"#);
        assert!(err.unwrap_err().contains("`reason`"));
        assert!(parse_file_body(br#"{"peer":"x","bogus":1}"#).unwrap_err().contains("`bogus`"));
        assert!(parse_file_body(br#"{"peer":"petition@wuxi","dataset":"d","purpose":"p","key":"k","field":"f","reason":"r","proposed":3}"#)
            .unwrap_err()
            .contains("`proposed`"));
        assert_eq!(parse_accept_body(b"").unwrap(), AcceptBody { value: None, reason: None });
        let a =
            parse_accept_body(br#"{"value":"13800000000","reason":"checked with the petitioner"}"#).unwrap();
        assert_eq!(a.value.as_deref(), Some("13800000000"));
        assert!(parse_accept_body(br#"{"values":"x"}"#).unwrap_err().contains("`values`"));
    }
}
