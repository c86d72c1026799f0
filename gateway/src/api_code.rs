//! The local API's error codes and their HTTP statuses: one table, a leaf every layer may name.
//!
//! Each layer converts its own errors into an [`ApiCode`] with `From` where it defines them
//! (the wire's codes here, link errors in [`crate::link`], exchange errors in
//! [`crate::exchange`], node errors in [`crate::error`]), so the exchange's audit entries, the
//! metrics, the API and the CLI all say one thing for one failure.

use std::fmt;

use axum::http::StatusCode;

use crate::wire::ErrorCode;

/// The `code` of every error the local API answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ApiCode {
    /// The request to the API is malformed: a bad body, path or parameter (or the provider
    /// found a value over its caps).
    BadRequest,
    /// No or the wrong bearer token.
    Unauthorized,
    /// No such API path.
    NotFound,
    /// The path does not take that method.
    MethodNotAllowed,
    /// The request body is over the API's cap.
    TooLarge,
    /// The request body is not sent as JSON.
    UnsupportedMediaType,
    /// The peer named is not in this node's config.
    UnknownPeer,
    /// The provider's policy refuses the request.
    Denied,
    /// A referral step that does not follow from the referral's state, or is the other party's.
    Conflict,
    /// The provider has no such dataset (or does not share it).
    UnknownDataset,
    /// A filter names a field the asker does not receive in clear, or has a bad value.
    BadFilter,
    /// The grant's daily quota is used up.
    QuotaExceeded,
    /// The provider is at a resource limit; retry later.
    Busy,
    /// The provider's data source cannot be read now.
    SourceUnavailable,
    /// The peer cannot be reached (connection failed or closed).
    PeerUnavailable,
    /// This gateway is shutting down; the same request succeeds once it is back.
    ShuttingDown,
    /// The peer refused this node's certificate.
    CertificateRefused,
    /// This node refused the peer's certificate (revoked, expired, out of region, ...).
    PeerCertificateRejected,
    /// The peer did not connect or answer in time (or said our request did not arrive in time).
    PeerTimeout,
    /// The peer broke the protocol or failed on its side (`internal`, `malformed`, ...).
    PeerError,
    /// The transfer broke off before its signed trailer.
    Incomplete,
    /// The trailer's count, digest or signature does not match what arrived.
    Unverified,
    /// A failure inside this node.
    Internal,
}

impl ApiCode {
    /// Every code, in the order of the table.
    pub const ALL: [ApiCode; 23] = [
        ApiCode::BadRequest,
        ApiCode::Unauthorized,
        ApiCode::NotFound,
        ApiCode::MethodNotAllowed,
        ApiCode::TooLarge,
        ApiCode::UnsupportedMediaType,
        ApiCode::UnknownPeer,
        ApiCode::Denied,
        ApiCode::Conflict,
        ApiCode::UnknownDataset,
        ApiCode::BadFilter,
        ApiCode::QuotaExceeded,
        ApiCode::Busy,
        ApiCode::SourceUnavailable,
        ApiCode::PeerUnavailable,
        ApiCode::ShuttingDown,
        ApiCode::CertificateRefused,
        ApiCode::PeerCertificateRejected,
        ApiCode::PeerTimeout,
        ApiCode::PeerError,
        ApiCode::Incomplete,
        ApiCode::Unverified,
        ApiCode::Internal,
    ];

    /// The table: the code as the Error JSON spells it, and its HTTP status.
    fn entry(self) -> (&'static str, StatusCode) {
        match self {
            ApiCode::BadRequest => ("bad-request", StatusCode::BAD_REQUEST),
            ApiCode::Unauthorized => ("unauthorized", StatusCode::UNAUTHORIZED),
            ApiCode::NotFound => ("not-found", StatusCode::NOT_FOUND),
            ApiCode::MethodNotAllowed => ("method-not-allowed", StatusCode::METHOD_NOT_ALLOWED),
            ApiCode::TooLarge => ("too-large", StatusCode::PAYLOAD_TOO_LARGE),
            ApiCode::UnsupportedMediaType => ("unsupported-media-type", StatusCode::UNSUPPORTED_MEDIA_TYPE),
            ApiCode::UnknownPeer => ("unknown-peer", StatusCode::NOT_FOUND),
            ApiCode::Denied => ("denied", StatusCode::FORBIDDEN),
            ApiCode::Conflict => ("conflict", StatusCode::CONFLICT),
            ApiCode::UnknownDataset => ("unknown-dataset", StatusCode::NOT_FOUND),
            ApiCode::BadFilter => ("bad-filter", StatusCode::BAD_REQUEST),
            ApiCode::QuotaExceeded => ("quota-exceeded", StatusCode::TOO_MANY_REQUESTS),
            ApiCode::Busy => ("busy", StatusCode::SERVICE_UNAVAILABLE),
            ApiCode::SourceUnavailable => ("source-unavailable", StatusCode::SERVICE_UNAVAILABLE),
            ApiCode::PeerUnavailable => ("peer-unavailable", StatusCode::BAD_GATEWAY),
            ApiCode::ShuttingDown => ("shutting-down", StatusCode::SERVICE_UNAVAILABLE),
            ApiCode::CertificateRefused => ("certificate-refused", StatusCode::BAD_GATEWAY),
            ApiCode::PeerCertificateRejected => ("peer-certificate-rejected", StatusCode::BAD_GATEWAY),
            ApiCode::PeerTimeout => ("peer-timeout", StatusCode::GATEWAY_TIMEOUT),
            ApiCode::PeerError => ("peer-error", StatusCode::BAD_GATEWAY),
            ApiCode::Incomplete => ("incomplete", StatusCode::BAD_GATEWAY),
            ApiCode::Unverified => ("unverified", StatusCode::BAD_GATEWAY),
            ApiCode::Internal => ("internal", StatusCode::INTERNAL_SERVER_ERROR),
        }
    }

    /// The code as the Error JSON and the metrics spell it (`peer-timeout`).
    pub fn as_str(self) -> &'static str {
        self.entry().0
    }

    /// The HTTP status an error with this code answers with.
    pub fn status(self) -> StatusCode {
        self.entry().1
    }

    /// The code an Error JSON names; `None` for a code this build does not know.
    pub fn parse(s: &str) -> Option<ApiCode> {
        ApiCode::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// True if and only if the same request may succeed later unchanged: the peer or its
    /// source is down, busy or slow. Scripts retry these; they do not retry a denial.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ApiCode::Busy
                | ApiCode::SourceUnavailable
                | ApiCode::PeerUnavailable
                | ApiCode::ShuttingDown
                | ApiCode::PeerTimeout
        )
    }
}

impl fmt::Display for ApiCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A provider's typed error, as the asker's API tells it. Codes that blame the asker's
/// request keep their class; codes that say the provider (or our own gateway's bytes) failed
/// are the peer's error, not the user's.
impl From<ErrorCode> for ApiCode {
    fn from(code: ErrorCode) -> ApiCode {
        match code {
            ErrorCode::Denied => ApiCode::Denied,
            ErrorCode::UnknownDataset => ApiCode::UnknownDataset,
            ErrorCode::BadFilter => ApiCode::BadFilter,
            ErrorCode::BadRequest => ApiCode::BadRequest,
            ErrorCode::QuotaExceeded => ApiCode::QuotaExceeded,
            ErrorCode::Busy => ApiCode::Busy,
            ErrorCode::SourceUnavailable => ApiCode::SourceUnavailable,
            ErrorCode::RequestTimeout => ApiCode::PeerTimeout,
            ErrorCode::Malformed
            | ErrorCode::Unsupported
            | ErrorCode::WrongIdentity
            | ErrorCode::Internal => ApiCode::PeerError,
        }
    }
}
