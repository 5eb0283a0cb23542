//! RFC 9457 problem details: the one shape every error leaves the server in.
//!
//! A small closed set of `ProblemKind`s maps to statuses. Internal failures are
//! logged in full and answered with a generic detail, so nothing of the server's
//! insides (SQL, paths, key sources) reaches a client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bulkhead_app::AppError;
use bulkhead_vault::{AuthError, VaultError};
use serde::Serialize;

/// Every kind of problem the API returns. The `type` URI of each is
/// `/problems/<code>`, served by the server itself with a description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    MalformedJson,
    InvalidRequest,
    UnsupportedMediaType,
    PayloadTooLarge,
    Unauthorized,
    Forbidden,
    TenantQuarantined,
    NotFound,
    MethodNotAllowed,
    Conflict,
    RequestTimeout,
    Unavailable,
    AuditInconsistent,
    ContentRefused,
    UpstreamFailed,
    UpstreamTimeout,
    RateLimited,
    QuotaExceeded,
    Internal,
}

impl ProblemKind {
    pub const ALL: &'static [ProblemKind] = &[
        ProblemKind::MalformedJson,
        ProblemKind::InvalidRequest,
        ProblemKind::UnsupportedMediaType,
        ProblemKind::PayloadTooLarge,
        ProblemKind::Unauthorized,
        ProblemKind::Forbidden,
        ProblemKind::TenantQuarantined,
        ProblemKind::NotFound,
        ProblemKind::MethodNotAllowed,
        ProblemKind::Conflict,
        ProblemKind::RequestTimeout,
        ProblemKind::Unavailable,
        ProblemKind::AuditInconsistent,
        ProblemKind::ContentRefused,
        ProblemKind::UpstreamFailed,
        ProblemKind::UpstreamTimeout,
        ProblemKind::RateLimited,
        ProblemKind::QuotaExceeded,
        ProblemKind::Internal,
    ];

    pub fn code(self) -> &'static str {
        match self {
            ProblemKind::MalformedJson => "malformed-json",
            ProblemKind::InvalidRequest => "invalid-request",
            ProblemKind::UnsupportedMediaType => "unsupported-media-type",
            ProblemKind::PayloadTooLarge => "payload-too-large",
            ProblemKind::Unauthorized => "unauthorized",
            ProblemKind::Forbidden => "forbidden",
            ProblemKind::TenantQuarantined => "tenant-quarantined",
            ProblemKind::NotFound => "not-found",
            ProblemKind::MethodNotAllowed => "method-not-allowed",
            ProblemKind::Conflict => "conflict",
            ProblemKind::RequestTimeout => "request-timeout",
            ProblemKind::Unavailable => "unavailable",
            ProblemKind::AuditInconsistent => "audit-inconsistent",
            ProblemKind::ContentRefused => "content-refused",
            ProblemKind::UpstreamFailed => "upstream-failed",
            ProblemKind::UpstreamTimeout => "upstream-timeout",
            ProblemKind::RateLimited => "rate-limited",
            ProblemKind::QuotaExceeded => "quota-exceeded",
            ProblemKind::Internal => "internal",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ProblemKind::MalformedJson | ProblemKind::InvalidRequest => StatusCode::BAD_REQUEST,
            ProblemKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ProblemKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProblemKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ProblemKind::Forbidden | ProblemKind::TenantQuarantined => StatusCode::FORBIDDEN,
            ProblemKind::NotFound => StatusCode::NOT_FOUND,
            ProblemKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProblemKind::Conflict => StatusCode::CONFLICT,
            ProblemKind::RequestTimeout => StatusCode::SERVICE_UNAVAILABLE,
            ProblemKind::ContentRefused => StatusCode::BAD_REQUEST,
            ProblemKind::UpstreamFailed => StatusCode::BAD_GATEWAY,
            ProblemKind::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProblemKind::RateLimited | ProblemKind::QuotaExceeded => StatusCode::TOO_MANY_REQUESTS,
            ProblemKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ProblemKind::AuditInconsistent | ProblemKind::Internal => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            ProblemKind::MalformedJson => {
                "The request body is not valid JSON of the expected shape"
            }
            ProblemKind::InvalidRequest => "The request is invalid",
            ProblemKind::UnsupportedMediaType => "The request body must be application/json",
            ProblemKind::PayloadTooLarge => "The request body is too large",
            ProblemKind::Unauthorized => "Missing or invalid credential",
            ProblemKind::Forbidden => "The credential does not allow this",
            ProblemKind::TenantQuarantined => "The tenant is quarantined",
            ProblemKind::NotFound => "Not found",
            ProblemKind::MethodNotAllowed => "Method not allowed",
            ProblemKind::Conflict => "Conflict",
            ProblemKind::RequestTimeout => "The request took too long",
            ProblemKind::Unavailable => "The service is unavailable",
            ProblemKind::AuditInconsistent => "The audit log failed its integrity check",
            ProblemKind::ContentRefused => "The request was refused by the content policy",
            ProblemKind::UpstreamFailed => "The model server failed",
            ProblemKind::UpstreamTimeout => "The model server did not answer in time",
            ProblemKind::RateLimited => "Too many requests",
            ProblemKind::QuotaExceeded => "A quota of the tenant is used up",
            ProblemKind::Internal => "Internal error",
        }
    }

    /// What a client should do about it; served at the `type` URI.
    pub fn advice(self) -> &'static str {
        match self {
            ProblemKind::MalformedJson => {
                "Send a JSON object with only the documented fields; `detail` names the first problem and where it is."
            }
            ProblemKind::InvalidRequest => {
                "Fix the field or parameter named in `detail` and retry."
            }
            ProblemKind::UnsupportedMediaType => "Send `Content-Type: application/json`.",
            ProblemKind::PayloadTooLarge => {
                "Split the content or ask the operator to raise body_bytes_max."
            }
            ProblemKind::Unauthorized => {
                "Send `Authorization: Bearer <token>`: the admin token on /admin/…, a tenant API key on /v1/…."
            }
            ProblemKind::Forbidden => "This credential cannot do that; use one that can.",
            ProblemKind::TenantQuarantined => {
                "An operator quarantined the tenant. Its data is intact; requests resume once the operator releases it."
            }
            ProblemKind::NotFound => {
                "Check the id. Ids of other tenants look exactly like ids that do not exist."
            }
            ProblemKind::MethodNotAllowed => "Use a method the endpoint documents.",
            ProblemKind::Conflict => {
                "Something with this id exists already; pick another id or delete the old one."
            }
            ProblemKind::RequestTimeout => "Retry later; nothing partial was acknowledged.",
            ProblemKind::Unavailable => {
                "Retry with backoff; the server is starting, stopping or its store is down."
            }
            ProblemKind::AuditInconsistent => {
                "The stored log no longer matches a checkpoint this server signed, so it refuses to sign \
                 or prove anything from it. Operators: treat this as an incident; check the log with \
                 `bulkhead audit verify` against checkpoints clients kept, and restore storage from a \
                 trusted backup."
            }
            ProblemKind::ContentRefused => {
                "The input read as an attempt to override the model's instructions (prompt injection). \
                 Rephrase it; the decision trace (x-bulkhead-trace-id) records the score and rules."
            }
            ProblemKind::UpstreamFailed => {
                "The upstream model server refused, failed or sent a malformed or cut-off answer. Retry; \
                 the decision trace (x-bulkhead-trace-id) records what happened. Operators: check the upstream."
            }
            ProblemKind::UpstreamTimeout => {
                "The upstream model server was too slow (connect, first byte, idle or total timeout). \
                 Retry later or ask for a shorter answer; the trace records which timeout fired."
            }
            ProblemKind::RateLimited => {
                "Slow down: retry after the seconds `Retry-After` gives. `detail` names the limit (a rate, \
                 requests in flight, a token or embedding budget); GET /v1/usage shows every limit and what \
                 is used of it."
            }
            ProblemKind::QuotaExceeded => {
                "Waiting does not help: the tenant stores as much as its quota allows, or the call is larger \
                 than a whole budget. Delete documents or sessions, shorten the call, or ask the operator to \
                 raise the quota named in `detail` (GET /v1/usage shows them all)."
            }
            ProblemKind::Internal => {
                "Retry later; operators find the cause in the server log by the time of the request."
            }
        }
    }
}

/// An error on its way to becoming a problem+json response.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub kind: ProblemKind,
    pub detail: String,
    /// Seconds after which a retry may succeed (`Retry-After`), for 429s.
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(kind: ProblemKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            retry_after_secs: None,
        }
    }

    /// The same error, telling the client when to retry.
    pub fn retry_after(self, secs: u64) -> Self {
        Self {
            retry_after_secs: Some(secs),
            ..self
        }
    }

    pub fn not_found() -> Self {
        // One body for every "not found", so a foreign id and a missing one are
        // byte-identical.
        Self::new(ProblemKind::NotFound, "no such resource")
    }

    pub fn internal() -> Self {
        Self::new(
            ProblemKind::Internal,
            "the server failed to complete the request",
        )
    }
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    type_: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    /// An RFC 9457 extension member in the shape OpenAI SDKs read, so their
    /// exceptions carry the detail instead of a bare status.
    error: OpenAiError<'a>,
}

#[derive(Serialize)]
struct OpenAiError<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    type_: &'static str,
    code: &'static str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.kind.status();
        let body = Problem {
            type_: format!("/problems/{}", self.kind.code()),
            title: self.kind.title(),
            status: status.as_u16(),
            detail: &self.detail,
            error: OpenAiError {
                message: &self.detail,
                type_: if status.is_server_error() {
                    "server_error"
                } else {
                    "invalid_request_error"
                },
                code: self.kind.code(),
            },
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = (status, bytes).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        let kind = match &e {
            AppError::Invalid(_) => ProblemKind::InvalidRequest,
            AppError::NotFound => return ApiError::not_found(),
            AppError::Conflict(_) => ProblemKind::Conflict,
            AppError::Forbidden(_) => ProblemKind::Forbidden,
            AppError::TenantQuarantined(_) => ProblemKind::TenantQuarantined,
            AppError::ContentRefused(_) => ProblemKind::ContentRefused,
            AppError::Unavailable(_) => ProblemKind::Unavailable,
            AppError::AuditInconsistent => ProblemKind::AuditInconsistent,
            AppError::UpstreamFailed(_) => ProblemKind::UpstreamFailed,
            AppError::UpstreamTimeout(_) => ProblemKind::UpstreamTimeout,
            AppError::RateLimited {
                detail,
                retry_after_secs,
            } => {
                return ApiError::new(ProblemKind::RateLimited, detail.clone())
                    .retry_after(*retry_after_secs);
            }
            AppError::QuotaExceeded(_) => ProblemKind::QuotaExceeded,
            AppError::Internal => return ApiError::internal(),
            // A variant added later reads as an internal failure until mapped.
            _ => return ApiError::internal(),
        };
        ApiError::new(kind, e.detail())
    }
}

impl From<VaultError> for ApiError {
    fn from(e: VaultError) -> Self {
        AppError::from(e).into()
    }
}

impl From<bulkhead_store::StoreError> for ApiError {
    fn from(e: bulkhead_store::StoreError) -> Self {
        AppError::from(e).into()
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Quarantined => ApiError::new(ProblemKind::TenantQuarantined, e.to_string()),
            AuthError::KeyQuarantined => ApiError::new(ProblemKind::Forbidden, e.to_string()),
            AuthError::Unavailable => ApiError::new(ProblemKind::Unavailable, e.to_string()),
            AuthError::Invalid | AuthError::Expired | AuthError::Revoked => {
                ApiError::new(ProblemKind::Unauthorized, e.to_string())
            }
            _ => ApiError::new(ProblemKind::Unauthorized, "the credential is not valid"),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
