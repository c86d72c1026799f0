//! The local HTTP/JSON API for the department's applications and the `fedgate` CLI.
//!
//! It listens on the node's `api` address (keep it on loopback or an internal network) and
//! requires `Authorization: Bearer <token>`, the token living in a 0600 file next to the config.
//! `/healthz` is open so supervisors can probe it.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Path as UrlPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use fedgate_catalog::NodeId;
use serde::{Deserialize, Serialize};

use crate::api_body;
use crate::error::ApiCode;
use crate::state::{NodeError, Shared};

/// An error as the API reports it: `{"error": "...", "code": "..."}`, its status from the code
/// (see [`crate::error`]).
#[derive(Debug)]
pub struct ApiError {
    code: ApiCode,
    message: String,
}

impl ApiError {
    /// An error with `code` and a message a person can act on.
    pub fn new(code: ApiCode, message: impl Into<String>) -> ApiError {
        ApiError { code, message: message.into() }
    }

    /// The HTTP status it answers with.
    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    /// The machine-readable `code` of the error body.
    pub fn code(&self) -> ApiCode {
        self.code
    }
}

/// A request the API refuses as malformed (`bad-request`).
pub(crate) fn bad(m: impl Into<String>) -> ApiError {
    ApiError::new(ApiCode::BadRequest, m)
}

/// Refuses `peer` unless this node can reach it (under `[[peers]]` or in the directory).
pub(crate) fn known_peer(shared: &Shared, peer: &fedgate_catalog::NodeId) -> Result<(), ApiError> {
    shared.address_of(peer).map(drop).map_err(|e| ApiError::new(ApiCode::UnknownPeer, e.to_string()))
}

/// Runs a store call on the blocking pool; the store's error becomes the API's answer.
pub(crate) async fn blocking<T, E>(f: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, ApiError>
where
    T: Send + 'static,
    E: Into<ApiError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(ApiCode::Internal, format!("internal error: {e}")))?
        .map_err(Into::into)
}

/// `code: message`, as the CLI prints an API error.
impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    code: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: &self.message, code: self.code.as_str() };
        (self.status(), Json(body)).into_response()
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> ApiError {
        ApiError::new(ApiCode::from(&e), e.to_string())
    }
}

impl From<crate::exchange::ExchangeError> for ApiError {
    fn from(e: crate::exchange::ExchangeError) -> ApiError {
        use crate::exchange::ExchangeError as E;
        match e {
            E::Link(l) => NodeError::Link(l).into(),
            E::Remote { code, message, peer, .. } => ApiError::new(code.into(), format!("{peer}: {message}")),
            e => ApiError::new(ApiCode::from(&e), e.to_string()),
        }
    }
}

/// How long a query waits by default: to connect, for the provider's first answer, and for each
/// next piece of data. A transfer that keeps moving is never cut, however long it takes.
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest wait a request may ask for (`timeout_ms`).
pub const MAX_QUERY_TIMEOUT_MS: u64 = crate::api_body::MAX_TIMEOUT_MS;

/// The wait a request asked for, or the default.
fn query_wait(ms: Option<u64>) -> Result<Duration, ApiError> {
    match ms {
        None => Ok(DEFAULT_QUERY_TIMEOUT),
        Some(ms) if (1..=MAX_QUERY_TIMEOUT_MS).contains(&ms) => Ok(Duration::from_millis(ms)),
        Some(ms) => Err(bad_request(format!("`timeout_ms` must be 1 to {MAX_QUERY_TIMEOUT_MS}, not {ms}"))),
    }
}

fn timed_out(
    peer: &NodeId,
    waiting: crate::exchange::Wait,
    after: Duration,
) -> crate::exchange::ExchangeError {
    crate::exchange::ExchangeError::TimedOut { peer: peer.to_string(), waiting, after }
}

fn bad_request(message: String) -> ApiError {
    ApiError::new(ApiCode::BadRequest, message)
}

#[derive(Clone)]
pub(crate) struct ApiState {
    pub(crate) shared: Arc<Shared>,
    token: Arc<str>,
}

/// Serves the API on `listener` until the task is aborted.
pub async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>, token: String) {
    let limits = shared.cfg.api_limits;
    let state = ApiState { shared, token: token.into() };
    let authed = Router::new()
        .route("/v1/catalog", get(own_catalog))
        .route("/v1/peers", get(peers))
        .route("/v1/peers/{node}/catalog", get(peer_catalog))
        .route("/v1/query", axum::routing::post(query))
        .route("/v1/datasets/{id}/events", axum::routing::post(crate::api_events::publish))
        .route(
            "/v1/subscriptions",
            get(crate::api_subscriptions::list).post(crate::api_subscriptions::create),
        )
        .route("/v1/subscriptions/{id}", axum::routing::delete(crate::api_subscriptions::cancel))
        .route("/v1/subscriptions/{id}/events", get(crate::api_subscriptions::events))
        .route("/v1/subscriptions/{id}/ack", axum::routing::post(crate::api_subscriptions::ack))
        .route("/v1/referrals", get(crate::api_referrals::list).post(crate::api_referrals::send))
        .route("/v1/referrals/events", get(crate::api_referrals::events))
        .route("/v1/referrals/{id}", get(crate::api_referrals::show))
        .route("/v1/referrals/{id}/{step}", axum::routing::post(crate::api_referrals::step))
        .route("/v1/requests", get(crate::api_requests::list).post(crate::api_requests::create))
        .route("/v1/requests/{id}", get(crate::api_requests::show))
        .route("/v1/requests/{id}/approve", axum::routing::post(crate::api_requests::approve))
        .route("/v1/requests/{id}/refuse", axum::routing::post(crate::api_requests::refuse))
        .route("/v1/requests/{id}/revoke", axum::routing::post(crate::api_requests::revoke))
        .route("/v1/objections", get(crate::api_objections::list).post(crate::api_objections::create))
        .route("/v1/objections/{id}", get(crate::api_objections::show))
        .route("/v1/objections/{id}/accept", axum::routing::post(crate::api_objections::accept))
        .route("/v1/objections/{id}/reject", axum::routing::post(crate::api_objections::reject))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .merge(authed)
        .layer(DefaultBodyLimit::max(crate::api_body::MAX_BODY_BYTES))
        .layer(middleware::from_fn(json_errors))
        .with_state(state);
    crate::api_serve::serve(listener, app, limits).await;
}

/// Turns every error the framework answers by itself (unknown path, wrong method, …) into the
/// documented `{"error", "code"}` JSON, so clients parse one error shape.
async fn json_errors(req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (code, message) = match status {
        StatusCode::NOT_FOUND => {
            (ApiCode::NotFound, format!("no such path {path:?} (see docs/openapi.yaml)"))
        }
        StatusCode::METHOD_NOT_ALLOWED => {
            (ApiCode::MethodNotAllowed, format!("{path} does not take {method}"))
        }
        StatusCode::PAYLOAD_TOO_LARGE => (ApiCode::TooLarge, too_large()),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (ApiCode::UnsupportedMediaType, NOT_JSON.into()),
        s if s.is_client_error() => {
            (ApiCode::BadRequest, format!("bad request: {}", s.canonical_reason().unwrap_or("")))
        }
        _ => (ApiCode::Internal, "internal error; see the gateway's log".into()),
    };
    let allow = resp.headers().get(header::ALLOW).cloned();
    let mut out = ApiError::new(code, message).into_response();
    if let Some(allow) = allow {
        out.headers_mut().insert(header::ALLOW, allow);
    }
    out
}

const NOT_JSON: &str = "the request body must be JSON: send `Content-Type: application/json`";

fn too_large() -> String {
    format!("the request body is over {} bytes", crate::api_body::MAX_BODY_BYTES)
}

/// A `POST /v1/query` body, checked by [`crate::api_body`]; every rejection is the Error JSON.
struct QueryJson(api_body::QueryRequest);

impl<S: Send + Sync> FromRequest<S> for QueryJson {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<QueryJson, ApiError> {
        let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        if !content_type.is_some_and(crate::api_body::is_json) {
            return Err(ApiError::new(ApiCode::UnsupportedMediaType, NOT_JSON));
        }
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(ApiCode::TooLarge, too_large())
            } else {
                bad_request(format!("reading the request body: {}", e.body_text()))
            }
        })?;
        api_body::QueryRequest::from_json(&bytes).map(QueryJson).map_err(|e| bad_request(e.to_string()))
    }
}

/// Compares without leaking how many leading bytes matched.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn require_token(State(st): State<ApiState>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t) if same(t.trim().as_bytes(), st.token.as_bytes()) => next.run(req).await,
        _ => ApiError::new(
            ApiCode::Unauthorized,
            "missing or wrong bearer token (see the node's api_token file)",
        )
        .into_response(),
    }
}

async fn own_catalog(State(st): State<ApiState>) -> Response {
    Json(&*st.shared.catalog()).into_response()
}

#[derive(Serialize)]
struct PeerInfo {
    node: String,
    address: String,
    /// `config` (`[[peers]]`) or `directory`.
    source: &'static str,
}

/// `[[peers]]` first, then the directory's nodes it does not override (this node excluded).
async fn peers(State(st): State<ApiState>) -> Json<Vec<PeerInfo>> {
    let cfg = &st.shared.cfg;
    let configured = cfg.peers.iter().map(|p| PeerInfo {
        node: p.node.to_string(),
        address: p.address.to_string(),
        source: "config",
    });
    let view = st.shared.directory.view();
    let listed =
        view.entries().into_iter().filter(|e| e.node != cfg.node && cfg.peer(&e.node).is_none()).map(|e| {
            PeerInfo { node: e.node.to_string(), address: e.address.to_string(), source: "directory" }
        });
    Json(configured.chain(listed).collect())
}

async fn peer_catalog(
    State(st): State<ApiState>,
    node: Result<UrlPath<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let UrlPath(node) = node.map_err(|e| bad_request(e.body_text()))?;
    let node: NodeId = node.parse().map_err(|e: fedgate_catalog::NameError| bad_request(e.to_string()))?;
    let catalog = match tokio::time::timeout(DEFAULT_QUERY_TIMEOUT, st.shared.peer_catalog(&node)).await {
        Ok(c) => c?,
        Err(_) => {
            return Err(ApiError::new(
                ApiCode::PeerTimeout,
                format!(
                    "{node} timed out: its catalog took longer than {}",
                    crate::exchange::seconds(DEFAULT_QUERY_TIMEOUT)
                ),
            ))
        }
    };
    Ok(Json(catalog).into_response())
}

/// A `POST /v1/query` body after the handler's checks, before any network I/O.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryRequest {
    /// The provider asked.
    pub peer: NodeId,
    /// The dataset id, as given (the provider judges it).
    pub dataset: String,
    /// The purpose, as given (the provider judges it).
    pub purpose: String,
    /// Equality filters; numbers and booleans as their JSON text.
    pub filters: Vec<(String, String)>,
    /// At most this many records.
    pub limit: Option<u64>,
    /// How long to wait to connect, for the first answer, and between pieces of data.
    pub wait: Duration,
}

/// Decodes and checks a `POST /v1/query` body exactly as the handler does (the same strict
/// decoder and [`check_query`]); public so the API's input handling can be fuzzed without a socket.
pub fn parse_query_body(bytes: &[u8]) -> Result<QueryRequest, ApiError> {
    check_query(api_body::QueryRequest::from_json(bytes).map_err(|e| bad_request(e.to_string()))?)
}

fn check_query(body: api_body::QueryRequest) -> Result<QueryRequest, ApiError> {
    let peer: NodeId =
        body.peer.parse().map_err(|e: fedgate_catalog::NameError| bad_request(format!("`peer`: {e}")))?;
    let wait = query_wait(body.timeout_ms)?;
    Ok(QueryRequest {
        peer,
        dataset: body.dataset,
        purpose: body.purpose,
        filters: body.filters,
        limit: body.limit,
        wait,
    })
}

/// Streams JSON Lines: one object per record, then `{"@end": summary}` or `{"@error": reason}`.
async fn query(State(st): State<ApiState>, QueryJson(body): QueryJson) -> Result<Response, ApiError> {
    let QueryRequest { peer: node, dataset, purpose, filters, limit, wait } = check_query(body)?;
    let pc = match tokio::time::timeout(wait, st.shared.peer(&node)).await {
        Ok(pc) => pc?,
        Err(_) => return Err(timed_out(&node, crate::exchange::Wait::Connect, wait).into()),
    };
    let t0 = std::time::Instant::now();
    let q = crate::exchange::Query::asked(&dataset, &purpose, filters.clone(), limit)
        .map_err(|why| ApiError::new(ApiCode::Internal, why))?;
    let exchange = q.exchange.clone();
    let deadlines = crate::exchange::Deadlines::within(t0, wait);
    let redial = || async {
        st.shared.peer(&node).await.map_err(|e| match e {
            NodeError::Link(l) => crate::exchange::ExchangeError::Link(l),
            other => crate::exchange::ExchangeError::Link(crate::link::LinkError::Protocol {
                peer: node.to_string(),
                why: other.to_string(),
            }),
        })
    };
    let started =
        crate::quic::Transfer::begin_redialling(pc, &st.shared.cfg.node, q, deadlines, redial).await;
    let transfer = match started {
        Ok(t) => t,
        Err(e) => {
            let mut entry = st.shared.audit_entry(fedgate_audit::Kind::RequestOut);
            entry.counterpart = Some(node.to_string());
            st.shared.metrics.transfer_ended(&node.to_string(), &dataset, &purpose, failure_code(&e), t0);
            entry.dataset = Some(dataset);
            entry.purpose = Some(purpose);
            entry.filters = filters;
            e.refusal_receipt(&mut entry);
            entry.code = Some(failure_code(&e).to_owned());
            entry.exchange = exchange;
            entry.records = Some(0);
            let _ = st.shared.audit.append(entry).await;
            return Err(e.into());
        }
    };
    let shared = st.shared.clone();
    let keys = crate::render::json_keys(transfer.fields());
    let stream = futures::stream::unfold(Some((transfer, shared, keys, t0)), |state| async move {
        let (mut t, shared, keys, t0) = state?;
        let mut text = Vec::new();
        match t.next_batch().await {
            Ok(Some(records)) => {
                render_batch(&t, &shared, &keys, &records, &mut text);
                if !t.reached_limit() {
                    return Some((Ok::<_, std::convert::Infallible>(text), Some((t, shared, keys, t0))));
                }
                // The provider stops at the limit: only batches already counted (read in the
                // same frames) and the trailer come next, and the records go out with `@end`
                // in one write (one TCP segment for a one-record answer, not two).
                loop {
                    match t.next_batch().await {
                        Ok(Some(more)) => render_batch(&t, &shared, &keys, &more, &mut text),
                        end => break end_line(&mut t, &shared, t0, end.map(|_| ()), &mut text).await,
                    }
                }
            }
            end => end_line(&mut t, &shared, t0, end.map(|_| ()), &mut text).await,
        }
        Some((Ok(text), None))
    });
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], axum::body::Body::from_stream(stream))
        .into_response())
}

/// Records as JSON Lines onto `text`, counted in the metrics.
fn render_batch(
    t: &crate::quic::Transfer,
    shared: &Shared,
    keys: &[String],
    records: &[fedgate_catalog::Record],
    text: &mut Vec<u8>,
) {
    shared.metrics.records_received(&t.peer().to_string(), t.dataset(), t.purpose(), records.len() as u64);
    text.reserve(records.len() * 600);
    let marked = t.fields().last().is_some_and(|f| f == crate::governance::objection::MARKER_FIELD);
    for r in records {
        if marked {
            crate::render::json_line_marked(keys, r, text);
        } else {
            crate::render::json_line(keys, r, text);
        }
    }
}

/// The transfer ended (`Ok`: its trailer verified): records the receipt durably, then writes
/// `@end` onto `text`, or `@error` if it failed or the receipt could not be recorded.
async fn end_line(
    t: &mut crate::quic::Transfer,
    shared: &Shared,
    t0: std::time::Instant,
    end: Result<(), crate::exchange::ExchangeError>,
    text: &mut Vec<u8>,
) {
    let (peer, metrics) = (t.peer().to_string(), &shared.metrics);
    let receipt = t.receipt(shared.audit_entry(fedgate_audit::Kind::RequestOut));
    let line = match end {
        Ok(()) => {
            metrics.transfer_ended(&peer, t.dataset(), t.purpose(), "ok", t0);
            match shared.audit.append(receipt).await {
                Ok(_) => serde_json::json!({ "@end": t.summary() }).to_string(),
                Err(e) => {
                    tracing::error!(error = %e, "recording a receipt failed");
                    error_line(
                        ApiCode::Internal,
                        "received, but recording the receipt failed; see the gateway's log",
                    )
                }
            }
        }
        Err(e) => {
            metrics.transfer_ended(&peer, t.dataset(), t.purpose(), failure_code(&e), t0);
            let _ = shared.audit.append(receipt).await;
            error_line(ApiCode::from(&e), &e.to_string())
        }
    };
    text.extend_from_slice(line.as_bytes());
    text.push(b'\n');
}

/// The control line that ends a streamed answer that failed after its 200: the reason and its
/// API code, as an Error JSON would carry them.
fn error_line(code: ApiCode, message: &str) -> String {
    serde_json::json!({ "@error": message, "code": code.as_str() }).to_string()
}

/// `GET /metrics`: OpenMetrics text, gauges read from the node's certificate and audit folder.
async fn metrics(State(st): State<ApiState>) -> Response {
    let cfg = &st.shared.cfg;
    let files = crate::metrics::Observed { cert: &cfg.tls.cert, audit_dir: &cfg.audit_dir };
    let store = st.shared.requests.clone();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    match tokio::task::spawn_blocking(move || store.list(None, now)).await {
        Ok(Ok(held)) => st.shared.metrics.set_requests(&held),
        Ok(Err(e)) => tracing::warn!(error = %e, "sharing request gauges not updated"),
        Err(e) => tracing::warn!(error = %e, "sharing request gauges not updated"),
    }
    let shared = st.shared.clone();
    match tokio::task::spawn_blocking(move || crate::stats_cli::governance_rows(&shared, now)).await {
        Ok(Ok(rows)) => st.shared.metrics.set_governance(&rows),
        Ok(Err(e)) => tracing::warn!(error = %e, "referral and objection gauges not updated"),
        Err(e) => tracing::warn!(error = %e, "referral and objection gauges not updated"),
    }
    let text = st.shared.metrics.render(&files, std::time::SystemTime::now());
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
}

/// The metrics' `code` for a failed transfer: the provider's own wire code when it answered
/// with one, else the API code (`peer-timeout`, `peer-unavailable`, `incomplete`, ...).
fn failure_code(e: &crate::exchange::ExchangeError) -> &'static str {
    use crate::exchange::ExchangeError as E;
    match e {
        E::Remote { code, .. } | E::Link(crate::link::LinkError::Remote { code, .. }) => code.as_str(),
        e => ApiCode::from(e).as_str(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_body_parses_as_documented() {
        let body = br#"{"peer":"hotline12345@wuxi","dataset":"hotline-tickets","purpose":"dispute-mediation",
            "where":{"district":"wuxi.liangxi","year":2026},"limit":5}"#;
        let q = parse_query_body(body).unwrap();
        assert_eq!(q.peer.to_string(), "hotline12345@wuxi");
        assert_eq!(
            q.filters,
            vec![("district".into(), "wuxi.liangxi".into()), ("year".into(), "2026".into())]
        );
        assert_eq!(q.limit, Some(5));
    }

    #[test]
    fn bad_query_bodies_are_bad_requests() {
        for body in [
            &b"{"[..],
            br#"{"peer":"nobody","dataset":"d","purpose":"p"}"#,
            br#"{"peer":"a@b","dataset":"d"}"#,
            br#"{"peer":"a@b","dataset":"d","purpose":"p","limit":-1}"#,
            br#"{"peer":"a@b","dataset":"d","purpose":"p"} {}"#,
            br#"{"peer":"a@b","dataset":"d","purpose":"p","timeout_ms":0}"#,
        ] {
            let e = parse_query_body(body).unwrap_err();
            assert_eq!((e.status(), e.code()), (StatusCode::BAD_REQUEST, ApiCode::BadRequest), "{e:?}");
        }
    }

    #[test]
    fn failed_transfers_are_counted_by_their_class() {
        use crate::exchange::{ExchangeError as E, Wait};
        use crate::link::LinkError;
        let who = || "court@wuxi.xinwu".to_owned();
        let addr: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
        let peer: NodeId = "court@wuxi.xinwu".parse().unwrap();
        let code = crate::wire::ErrorCode::QuotaExceeded;
        let cases = [
            (E::Remote { peer: who(), code, message: String::new(), witness: None }, "quota-exceeded"),
            (E::Link(LinkError::Remote { peer: who(), code, message: String::new() }), "quota-exceeded"),
            (
                E::TimedOut { peer: who(), waiting: Wait::Connect, after: Duration::from_secs(1) },
                "peer-timeout",
            ),
            (E::Link(LinkError::Connect { peer, addr, why: String::new() }), "peer-unavailable"),
            (E::Incomplete { peer: who(), count: 1, why: String::new() }, "incomplete"),
            (E::BadTrailer { peer: who(), why: String::new() }, "unverified"),
        ];
        for (e, want) in cases {
            assert_eq!(failure_code(&e), want, "{e}");
        }
    }

    #[test]
    fn a_failed_stream_ends_with_its_reason_and_code() {
        let line = error_line(ApiCode::Unverified, "transfer from x failed verification: digest");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["@error"], "transfer from x failed verification: digest");
        assert_eq!(v["code"], "unverified");
    }
}

/// The exchange id in a path (a subscription, referral or request id), checked: anything but 32
/// hex digits names nothing here, so it is a 404 naming `what` was looked for.
pub(crate) fn exchange_id_in_path(
    id: Result<UrlPath<String>, PathRejection>,
    what: &str,
) -> Result<String, ApiError> {
    let UrlPath(id) = id.map_err(|e| bad_request(e.body_text()))?;
    checked_exchange_id(id, what)
}

/// `id` if it is an exchange id (32 hex digits), else a 404 naming `what` was looked for.
pub(crate) fn checked_exchange_id(id: String, what: &str) -> Result<String, ApiError> {
    if !crate::exchange::valid_exchange_id(&id) {
        return Err(ApiError::new(
            ApiCode::NotFound,
            format!("no {what} {id:?} at this gateway (ids are 32 hex digits)"),
        ));
    }
    Ok(id)
}

/// `?after=ID&wait_ms=N&limit=N` of a long-poll events read (subscriptions, referrals).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsParams {
    /// Only what came after this id.
    #[serde(default)]
    pub(crate) after: u64,
    /// How long to wait for the first line when there is none yet.
    #[serde(default)]
    pub(crate) wait_ms: Option<u64>,
    /// At most this many lines.
    #[serde(default)]
    pub(crate) limit: Option<usize>,
}
