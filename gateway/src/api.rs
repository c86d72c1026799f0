//! The local HTTP/JSON API for the department's applications and the `fedgate` CLI.
//!
//! It listens on the node's `api` address (keep it on loopback or an internal network) and
//! requires `Authorization: Bearer <token>`, the token living in a 0600 file next to the config.
//! `/healthz` is open so supervisors can probe it.

use std::sync::Arc;

use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use fedgate_catalog::NodeId;
use serde::Serialize;

use crate::link::LinkError;
use crate::node::{NodeError, Shared};
use crate::wire::ErrorCode;

/// An error as the API reports it: `{"error": "...", "code": "..."}` with a fitting status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    code: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(ErrorBody { error: &self.message, code: self.code })).into_response()
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> ApiError {
        let (status, code) = match &e {
            NodeError::UnknownPeer(_) => (StatusCode::NOT_FOUND, "unknown-peer"),
            NodeError::Link(LinkError::Remote { code, .. }) => remote_status(*code),
            NodeError::Link(LinkError::Timeout { .. }) => (StatusCode::GATEWAY_TIMEOUT, "peer-timeout"),
            NodeError::Link(_) => (StatusCode::BAD_GATEWAY, "peer-unavailable"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError { status, code, message: e.to_string() }
    }
}

fn remote_status(code: ErrorCode) -> (StatusCode, &'static str) {
    match code {
        ErrorCode::Denied => (StatusCode::FORBIDDEN, "denied"),
        ErrorCode::UnknownDataset => (StatusCode::NOT_FOUND, "unknown-dataset"),
        ErrorCode::BadFilter => (StatusCode::BAD_REQUEST, "bad-filter"),
        ErrorCode::QuotaExceeded => (StatusCode::TOO_MANY_REQUESTS, "quota-exceeded"),
        ErrorCode::SourceUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "source-unavailable"),
        _ => (StatusCode::BAD_GATEWAY, "peer-error"),
    }
}

fn bad_request(message: String) -> ApiError {
    ApiError { status: StatusCode::BAD_REQUEST, code: "bad-request", message }
}

#[derive(Clone)]
struct ApiState {
    shared: Arc<Shared>,
    token: Arc<str>,
}

/// Serves the API on `listener` until the task is aborted.
pub async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>, token: String) {
    let state = ApiState { shared, token: token.into() };
    let authed = Router::new()
        .route("/v1/catalog", get(own_catalog))
        .route("/v1/peers", get(peers))
        .route("/v1/peers/{node}/catalog", get(peer_catalog))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    let app = Router::new().route("/healthz", get(|| async { "ok\n" })).merge(authed).with_state(state);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "local API stopped");
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
        _ => ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: "missing or wrong bearer token (see the node's api_token file)".into(),
        }
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
}

async fn peers(State(st): State<ApiState>) -> Json<Vec<PeerInfo>> {
    Json(
        st.shared
            .cfg
            .peers
            .iter()
            .map(|p| PeerInfo { node: p.node.to_string(), address: p.address.to_string() })
            .collect(),
    )
}

async fn peer_catalog(
    State(st): State<ApiState>,
    UrlPath(node): UrlPath<String>,
) -> Result<Response, ApiError> {
    let node: NodeId = node.parse().map_err(|e: fedgate_catalog::NameError| bad_request(e.to_string()))?;
    let catalog = st.shared.peer_catalog(&node).await?;
    Ok(Json(catalog).into_response())
}
