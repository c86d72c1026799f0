//! The local API of referrals (docs/referrals.md): send one, list them (overdue first), show one
//! with its history and the chain it was forwarded down, take a step on it, and long-poll the
//! node's referral events (JSON Lines) — new referrals and every state change, either side.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path as UrlPath, Query as UrlQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{Map, Value as Json_};

use crate::api::{bad, blocking, ApiError, ApiState, EventsParams};
use crate::error::ApiCode;
use crate::referral_ops::{self, CaseSpec, NewReferral, OpError, Receiver};
use crate::referrals::{step_json, Referral, ReferralError};
use crate::wire::referral::Step;

/// Keys a new referral (`POST /v1/referrals`, and `forward`) accepts.
pub const SEND_KEYS: &[&str] = &[
    "to",
    "department",
    "region",
    "reference",
    "subject",
    "instructions",
    "deadline",
    "working_days",
    "case",
];
/// Keys of `case`.
pub const CASE_KEYS: &[&str] = &["dataset", "purpose", "where"];
/// The steps `POST /v1/referrals/{id}/{step}` takes, and the text keys each needs.
pub const STEPS: &[(&str, &[&str])] = &[
    ("accept", &[]),
    ("return", &["reason"]),
    ("update", &["notes"]),
    ("forward", &[]),
    ("resolve", &["result", "feedback"]),
    ("close", &[]),
    ("reopen", &["reason"]),
];
/// Working days a referral gets when the sender names no deadline.
pub const DEFAULT_WORKING_DAYS: u32 = 5;
/// The longest an events read waits.
pub const MAX_WAIT_MS: u64 = 60_000;
/// The most events one read returns.
pub const MAX_EVENTS: usize = 1000;

fn op_error(e: OpError) -> ApiError {
    let code = ApiCode::from(&e);
    if code == ApiCode::Internal {
        tracing::error!(error = %e, "referral operation failed");
        return ApiError::new(code, "the referral operation failed; see the gateway's log");
    }
    ApiError::new(code, e.to_string())
}

fn object(bytes: &[u8], known: &[&str]) -> Result<Map<String, Json_>, String> {
    let v: Json_ =
        serde_json::from_slice(bytes).map_err(|e| format!("the request body is not valid JSON: {e}"))?;
    let Json_::Object(obj) = v else { return Err("the request body must be a JSON object".into()) };
    if let Some(k) = obj.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(format!(
            "unknown key `{k}` in the request body; the known keys are {}",
            known.join(", ")
        ));
    }
    Ok(obj)
}

fn text(obj: &Map<String, Json_>, key: &str) -> Result<Option<String>, String> {
    match obj.get(key) {
        None => Ok(None),
        Some(Json_::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
        Some(_) => Err(format!("`{key}` must be a non-empty string")),
    }
}

fn required(obj: &Map<String, Json_>, key: &str) -> Result<String, String> {
    text(obj, key)?.ok_or_else(|| format!("`{key}` is required"))
}

/// When a new referral is due: `deadline` (a date, the end of that day in the calendar's
/// time, or an RFC 3339 moment), or `working_days` after `now` by the node's calendar.
pub fn parse_deadline(
    obj: &Map<String, Json_>,
    calendar: &crate::calendar::WorkCalendar,
    now: time::OffsetDateTime,
) -> Result<i64, String> {
    let days = match obj.get("working_days") {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|d| u32::try_from(d).ok())
                .filter(|d| (1..=366).contains(d))
                .ok_or("`working_days` must be a whole number from 1 to 366")?,
        ),
    };
    match (text(obj, "deadline")?, days) {
        (Some(_), Some(_)) => Err("give `deadline` or `working_days`, not both".into()),
        (Some(d), None) => parse_moment(&d, calendar.offset()).map_err(|e| format!("`deadline`: {e}")),
        (None, d) => Ok(calendar.add_working_days(now, d.unwrap_or(DEFAULT_WORKING_DAYS)).unix_timestamp()),
    }
}

/// `2026-12-01` (the end of that day at `offset`) or an RFC 3339 moment, as unix seconds.
pub fn parse_moment(s: &str, offset: time::UtcOffset) -> Result<i64, String> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t.unix_timestamp());
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    let day = time::Date::parse(s, &fmt)
        .map_err(|_| format!("{s:?} is neither a date (2026-12-01) nor an RFC 3339 time"))?;
    let end = day.next_day().ok_or_else(|| format!("{s:?} is too far ahead"))?;
    Ok(end.midnight().assume_offset(offset).unix_timestamp() - 1)
}

fn receiver(obj: &Map<String, Json_>) -> Result<Receiver, String> {
    match (text(obj, "to")?, text(obj, "department")?, text(obj, "region")?) {
        (Some(to), None, None) => {
            Ok(Receiver::Node(to.parse().map_err(|e: fedgate_catalog::NameError| format!("`to`: {e}"))?))
        }
        (None, Some(department), Some(region)) => Ok(Receiver::Responsible {
            department,
            region: region.parse().map_err(|e: fedgate_catalog::NameError| format!("`region`: {e}"))?,
        }),
        _ => Err("name the receiver: `to` (a node id), or `department` and `region` (resolved through the federation directory)".into()),
    }
}

fn case(obj: &Map<String, Json_>) -> Result<Option<CaseSpec>, String> {
    let Some(c) = obj.get("case") else { return Ok(None) };
    let Json_::Object(c) = c else {
        return Err("`case` must be an object: {dataset, purpose, where}".into());
    };
    if let Some(k) = c.keys().find(|k| !CASE_KEYS.contains(&k.as_str())) {
        return Err(format!("unknown key `case.{k}`; the known keys are {}", CASE_KEYS.join(", ")));
    }
    let mut filters = Vec::new();
    match c.get("where") {
        Some(Json_::Object(w)) if !w.is_empty() => {
            for (f, v) in w {
                let value = match v {
                    Json_::String(s) => s.clone(),
                    Json_::Number(n) => n.to_string(),
                    Json_::Bool(b) => b.to_string(),
                    _ => return Err(format!("`case.where.{f}` must be a string, number or boolean")),
                };
                filters.push((f.clone(), value));
            }
        }
        _ => return Err("`case.where` must name the case's record: an object of field: value".into()),
    }
    Ok(Some(CaseSpec {
        dataset: required(c, "dataset").map_err(|e| format!("case: {e}"))?,
        purpose: required(c, "purpose").map_err(|e| format!("case: {e}"))?,
        filters,
    }))
}

/// Decodes and checks a new referral's body, naming the key at fault.
pub fn parse_send_body(
    bytes: &[u8],
    calendar: &crate::calendar::WorkCalendar,
    now: time::OffsetDateTime,
) -> Result<NewReferral, String> {
    let obj = object(bytes, SEND_KEYS)?;
    let checked = |key: &str, v: String| {
        if v.len() > crate::wire::limits::MAX_REFERRAL_TEXT {
            return Err(format!("`{key}` is longer than {} bytes", crate::wire::limits::MAX_REFERRAL_TEXT));
        }
        Ok(v)
    };
    Ok(NewReferral {
        to: receiver(&obj)?,
        reference: checked("reference", required(&obj, "reference")?)?,
        subject: checked("subject", required(&obj, "subject")?)?,
        instructions: checked("instructions", text(&obj, "instructions")?.unwrap_or_default())?,
        deadline: parse_deadline(&obj, calendar, now)?,
        case: case(&obj)?,
    })
}

/// Decodes a step's body (`{}` or the step's text keys) into the step.
pub fn parse_step_body(name: &str, bytes: &[u8]) -> Result<Step, String> {
    let keys = STEPS.iter().find(|(n, _)| *n == name).map(|(_, k)| *k).unwrap_or(&[]);
    let obj = if bytes.iter().all(u8::is_ascii_whitespace) { Map::new() } else { object(bytes, keys)? };
    let t = |k: &str| -> Result<String, String> {
        let v = required(&obj, k)?;
        if v.len() > crate::wire::limits::MAX_REFERRAL_TEXT {
            return Err(format!("`{k}` is longer than {} bytes", crate::wire::limits::MAX_REFERRAL_TEXT));
        }
        Ok(v)
    };
    Ok(match name {
        "accept" => Step::Accept,
        "return" => Step::Return { reason: t("reason")? },
        "update" => Step::Update { notes: t("notes")? },
        "resolve" => Step::Resolve { result: t("result")?, feedback: t("feedback")? },
        "close" => Step::Close,
        "reopen" => Step::Reopen { reason: t("reason")? },
        other => {
            let names: Vec<&str> = STEPS.iter().map(|(n, _)| *n).collect();
            return Err(format!("no step {other:?}; the steps are {}", names.join(", ")));
        }
    })
}

/// A referral as the API shows it: its fields, `overdue`, and the deadline also as RFC 3339.
pub fn referral_json(r: &Referral, now: i64) -> Json_ {
    let mut v = serde_json::to_value(r).unwrap_or(Json_::Null);
    if let Json_::Object(m) = &mut v {
        m.insert("overdue".into(), r.overdue(now).into());
        m.insert("due".into(), rfc3339(r.deadline).into());
    }
    v
}

fn rfc3339(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    if ct.is_some_and(crate::api_body::is_json) {
        return Ok(());
    }
    Err(ApiError::new(
        ApiCode::UnsupportedMediaType,
        "the request body must be JSON: send `Content-Type: application/json`",
    ))
}

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// `POST /v1/referrals`: hands a referral over (交办). Stored and audited here at once; the
/// gateway delivers it in the background, resending while the receiver is down.
pub(crate) async fn send(
    State(st): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let t = now();
    let req = parse_send_body(&body, &st.shared.calendar, t).map_err(bad)?;
    let r = referral_ops::send(&st.shared, req).await.map_err(op_error)?;
    Ok((StatusCode::CREATED, Json(referral_json(&r, t.unix_timestamp()))).into_response())
}

/// `GET /v1/referrals`: every referral this node sends or receives, overdue first.
pub(crate) async fn list(State(st): State<ApiState>) -> Result<Response, ApiError> {
    let t = now().unix_timestamp();
    let store = st.shared.referrals.clone();
    let all = blocking(move || store.list(t)).await?;
    Ok(Json(all.iter().map(|r| referral_json(r, t)).collect::<Vec<_>>()).into_response())
}

fn id_of(id: Result<UrlPath<String>, PathRejection>) -> Result<String, ApiError> {
    crate::api::exchange_id_in_path(id, "referral")
}

fn check_id(id: String) -> Result<String, ApiError> {
    crate::api::checked_exchange_id(id, "referral")
}

/// `GET /v1/referrals/{id}`: the referral, its case, its history, and the referrals it was
/// forwarded down as (each with its own history, as this node holds them).
pub(crate) async fn show(
    State(st): State<ApiState>,
    id: Result<UrlPath<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = id_of(id)?;
    let t = now().unix_timestamp();
    let store = st.shared.referrals.clone();
    let v = blocking(move || detail(&store, &id, t, 0)).await?;
    Ok(Json(v).into_response())
}

/// How deep `show` follows forwarded referrals held here (one node holds one level below it).
const CHAIN_DEPTH: usize = 4;

fn detail(
    store: &crate::referrals::ReferralStore,
    id: &str,
    now: i64,
    depth: usize,
) -> Result<Json_, ReferralError> {
    let r = store.get(id)?;
    let mut v = referral_json(&r, now);
    let history: Vec<Json_> = store.history(id)?.iter().map(step_json).collect();
    let mut children = Vec::new();
    if depth < CHAIN_DEPTH {
        for c in store.children(id)? {
            children.push(detail(store, &c.exchange, now, depth + 1)?);
        }
    }
    if let Json_::Object(m) = &mut v {
        m.insert("history".into(), history.into());
        m.insert("forwarded".into(), children.into());
    }
    Ok(v)
}

/// `POST /v1/referrals/{id}/{step}`: accept, return, update, forward, resolve, close, reopen.
pub(crate) async fn step(
    State(st): State<ApiState>,
    path: Result<UrlPath<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let UrlPath((id, name)) = path.map_err(|e| bad(e.body_text()))?;
    let id = check_id(id)?;
    let empty = body.iter().all(u8::is_ascii_whitespace);
    if !empty {
        require_json(&headers)?;
    }
    let t = now();
    if name == "forward" {
        let req = parse_send_body(&body, &st.shared.calendar, t).map_err(bad)?;
        let child = referral_ops::forward(&st.shared, &id, req).await.map_err(op_error)?;
        return Ok((StatusCode::CREATED, Json(referral_json(&child, t.unix_timestamp()))).into_response());
    }
    let step = parse_step_body(&name, &body).map_err(|m| {
        if STEPS.iter().any(|(n, _)| *n == name) {
            bad(m)
        } else {
            ApiError::new(ApiCode::NotFound, m)
        }
    })?;
    let r = referral_ops::take(&st.shared, &id, step).await.map_err(op_error)?;
    Ok(Json(referral_json(&r, t.unix_timestamp())).into_response())
}

/// `GET /v1/referrals/events`: JSON Lines of every referral step stored here after event
/// `after` (new referrals received, steps taken here or by the peer), waiting up to `wait_ms`
/// for the first. Each line has `event`; the next read passes the last one as `after`.
pub(crate) async fn events(
    State(st): State<ApiState>,
    params: Result<UrlQuery<EventsParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let UrlQuery(p) = params.map_err(|e| bad(e.body_text()))?;
    let wait = Duration::from_millis(p.wait_ms.unwrap_or(0).min(MAX_WAIT_MS));
    let limit = p.limit.unwrap_or(MAX_EVENTS).clamp(1, MAX_EVENTS);
    let deadline = tokio::time::Instant::now() + wait;
    let mut changes = st.shared.referrals.changes();
    loop {
        changes.borrow_and_update();
        let store = st.shared.referrals.clone();
        let after = p.after;
        let steps = blocking(move || store.events(after, limit)).await?;
        if steps.is_empty()
            && tokio::time::timeout_at(deadline, changes.changed()).await.is_ok_and(|c| c.is_ok())
        {
            continue;
        }
        let mut out = String::new();
        for s in &steps {
            out.push_str(&step_json(s).to_string());
            out.push('\n');
        }
        return Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], out).into_response());
    }
}

impl From<ReferralError> for ApiError {
    fn from(e: ReferralError) -> ApiError {
        op_error(OpError::Store(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cal() -> crate::calendar::WorkCalendar {
        crate::calendar::WorkCalendar::default()
    }

    #[test]
    fn send_bodies_parse_and_name_the_key_at_fault() {
        // Sunday 2026-11-29 12:00 UTC: five working days (Mon–Fri, UTC+8) end Friday 12-04.
        let t = time::macros::datetime!(2026-11-29 12:00 UTC);
        let ok = parse_send_body(
            br#"{"department":"grid","region":"wuxi.liangxi.chongan","reference":"12345-7","subject":"noise",
                 "case":{"dataset":"tickets","purpose":"dispute-mediation","where":{"id":"T-7"}}}"#,
            &cal(),
            t,
        )
        .unwrap();
        assert!(matches!(&ok.to, Receiver::Responsible { department, .. } if department == "grid"));
        let due = time::OffsetDateTime::from_unix_timestamp(ok.deadline)
            .unwrap()
            .to_offset(time::macros::offset!(+8));
        assert_eq!(due.date(), time::macros::date!(2026 - 12 - 05), "{due}");
        assert_eq!(ok.case.unwrap().filters, [("id".to_owned(), "T-7".to_owned())]);
        let err = |b: &[u8]| parse_send_body(b, &cal(), t).unwrap_err();
        assert!(err(br#"{"reference":"r","subject":"s"}"#).contains("name the receiver"));
        assert!(err(br#"{"to":"grid@wuxi","department":"grid","reference":"r","subject":"s"}"#)
            .contains("name the receiver"));
        assert!(err(br#"{"to":"x","reference":"r","subject":"s"}"#).starts_with("`to`: "));
        assert!(err(br#"{"to":"grid@wuxi","subject":"s"}"#).contains("`reference` is required"));
        assert!(err(br#"{"to":"grid@wuxi","reference":"r","subject":"s","deadline":"tomorrow"}"#)
            .contains("`deadline`"));
        assert!(err(
            br#"{"to":"grid@wuxi","reference":"r","subject":"s","deadline":"2026-12-01","working_days":3}"#
        )
        .contains("not both"));
        assert!(err(br#"{"to":"grid@wuxi","reference":"r","subject":"s","working_days":0}"#)
            .contains("working_days"));
        assert!(err(
            br#"{"to":"grid@wuxi","reference":"r","subject":"s","case":{"dataset":"t","purpose":"p"}}"#
        )
        .contains("case.where"));
        assert!(
            err(br#"{"to":"grid@wuxi","reference":"r","subject":"s","cc":1}"#).contains("unknown key `cc`")
        );
        let fixed = parse_send_body(
            br#"{"to":"grid@wuxi","reference":"r","subject":"s","deadline":"2026-12-01"}"#,
            &cal(),
            t,
        )
        .unwrap();
        // The end of that day in the calendar's time (UTC+8).
        assert_eq!(fixed.deadline, time::macros::datetime!(2026-12-01 23:59:59 +8).unix_timestamp());
    }

    #[test]
    fn step_bodies_need_their_texts() {
        assert_eq!(parse_step_body("accept", b"").unwrap(), Step::Accept);
        assert_eq!(parse_step_body("close", b"{}").unwrap(), Step::Close);
        assert!(parse_step_body("return", b"{}").unwrap_err().contains("`reason` is required"));
        assert!(parse_step_body("resolve", br#"{"result":"done"}"#).unwrap_err().contains("`feedback`"));
        assert!(parse_step_body("accept", br#"{"notes":"x"}"#).unwrap_err().contains("unknown key"));
        assert!(parse_step_body("send", b"").unwrap_err().contains("no step"));
        let r = parse_step_body("resolve", br#"{"result":"agreed","feedback":"thanks"}"#).unwrap();
        assert_eq!(r, Step::Resolve { result: "agreed".into(), feedback: "thanks".into() });
    }
}
