//! Request extractors: credentials for each plane and strict JSON bodies.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use bulkhead_app::EventKind;
use bulkhead_types::LogId;
use bulkhead_vault::{AuthError, TenantCtx};
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::audit::{RequestId, Trail};
use crate::error::{ApiError, ProblemKind};
use crate::flood::FloodCheck;

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
        ApiError::new(
            ProblemKind::Unauthorized,
            "send Authorization: Bearer <token>",
        )
    })?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::new(ProblemKind::Unauthorized, "the credential is not valid"))?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(|| ApiError::new(ProblemKind::Unauthorized, "use the Bearer scheme"))?;
    Ok(token.trim())
}

/// The operator: the request carried the admin token. The admin token reaches only
/// `/admin/…`; API keys are refused here.
#[derive(Debug)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let rid = request_id(parts);
        let refused = match bearer(parts) {
            Ok(token) if state.admin_token_matches(token) => return Ok(Admin),
            Ok(_) => (
                "invalid_admin_token",
                ApiError::new(
                    ProblemKind::Unauthorized,
                    "this endpoint needs the admin token",
                ),
            ),
            Err(e) => ("missing_credential", e),
        };
        state.metrics.auth_failure("admin");
        auth_burst(state, &rid).await;
        // Every denied access is logged (the operator log holds the
        // unattributable), unless its address is flooding.
        let refusal = Refusal {
            kind: EventKind::AdminAuth,
            actor: "anonymous".into(),
            log: LogId::Operator,
            reason: refused.0,
        };
        Err(refuse(state, parts, &rid, refusal, refused.1).await)
    }
}

/// A refused credential's audit event.
struct Refusal {
    kind: EventKind,
    actor: String,
    log: LogId,
    reason: &'static str,
}

/// Logs a refused credential and answers `error` — unless the client's address
/// is past its limit of refused credentials this minute: then 429 with
/// `Retry-After`, and nothing is written but the one event that marks the
/// flood's start (`flood.rs`).
async fn refuse(
    state: &AppState,
    parts: &Parts,
    rid: &RequestId,
    refusal: Refusal,
    error: ApiError,
) -> ApiError {
    let address = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let check = state.auth_flood.check(address, state.vault.now().0);
    let (reason, limited) = match check {
        FloodCheck::Log => (refusal.reason, None),
        // The server's budget of logged refusals this minute is spent: counted
        // (metrics, burst alert, the next summary entry), not written.
        FloodCheck::Counted => return error,
        FloodCheck::Tripped { retry_after_secs } => {
            tracing::warn!(address = ?address, "refused credentials from one address passed the per-minute limit; \
                further refusals from it are answered 429 and not logged until the minute ends \
                (auth_failures_per_address_per_min)");
            ("address_flood", Some(retry_after_secs))
        }
        FloodCheck::Limited { retry_after_secs } => {
            return flood_error(retry_after_secs);
        }
    };
    if let Some(unlogged) = state.auth_flood.take_unreported() {
        tracing::warn!(
            unlogged,
            "refused credentials went unlogged past the server's per-minute log budget"
        );
        let _ = Trail::new(state, EventKind::Auth, "anonymous".to_owned(), rid)
            .denied("refusals_not_logged")
            .attr(
                "count",
                bulkhead_audit::Attr::Int(unlogged.min(i64::MAX as u64) as i64),
            )
            .record(LogId::Operator)
            .await;
    }
    let _ = Trail::new(state, refusal.kind, refusal.actor, rid)
        .denied(reason)
        .record(refusal.log)
        .await;
    match limited {
        Some(secs) => flood_error(secs),
        None => error,
    }
}

fn flood_error(retry_after_secs: u64) -> ApiError {
    ApiError::new(
        ProblemKind::RateLimited,
        "too many refused credentials from this address this minute; retry later with a valid one",
    )
    .retry_after(retry_after_secs)
}

/// Counts a refused credential toward the burst alert (credential stuffing, a
/// leaked and revoked key still in use, a misconfigured client).
pub(crate) async fn auth_burst(state: &AppState, rid: &RequestId) {
    if state.alerts.auth_failure(state.vault.now().0) {
        let alert = crate::alerts::new_alert(
            bulkhead_app::AlertKind::AuthFailureBurst,
            bulkhead_app::Severity::Warning,
            None,
            "refused credentials crossed the per-minute threshold; the operator and tenant logs name \
             the keys involved. Check for a leaked or revoked key still in use, or credential guessing"
                .into(),
            state.vault.now().rfc3339(),
        );
        state.alerts.raise(state, rid, alert).await;
    }
}

pub(crate) fn request_id(parts: &Parts) -> RequestId {
    parts
        .extensions
        .get::<RequestId>()
        .cloned()
        .unwrap_or_else(|| RequestId("req_unassigned".into()))
}

/// A tenant: the request carried a valid API key of an active tenant. The tenant
/// comes from the key and from nowhere else (invariant 1).
#[derive(Debug)]
pub struct Tenant(pub TenantCtx);

impl FromRequestParts<AppState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let rid = request_id(parts);
        let token = match bearer(parts) {
            Ok(token) => token,
            Err(e) => {
                state.metrics.auth_failure("tenant");
                auth_burst(state, &rid).await;
                let refusal = Refusal {
                    kind: EventKind::Auth,
                    actor: "anonymous".into(),
                    log: LogId::Operator,
                    reason: "missing_credential",
                };
                return Err(refuse(state, parts, &rid, refusal, e).await);
            }
        };
        match state.vault.authenticate_attributed(token).await {
            Ok(ctx) => {
                // Tells the traffic recorder whose request this was.
                if let Some(slot) = parts.extensions.get::<crate::traffic::TenantSlot>() {
                    let _ = slot.0.set(ctx.tenant().clone());
                }
                // Rate and concurrency limits, before the handler does any work.
                let permit = state.quotas.admit_request(&ctx).await?;
                if let Some(slot) = parts.extensions.get::<crate::traffic::PermitSlot>() {
                    *slot.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(permit);
                }
                if let Some(anomaly) = state
                    .alerts
                    .baselines
                    .observe(ctx.tenant(), state.vault.now())
                {
                    // Raising writes the operator log; the request does not wait.
                    let state = state.clone();
                    tokio::spawn(async move {
                        crate::alerts::raise_traffic_anomaly(&state, &rid, anomaly).await;
                    });
                }
                Ok(Tenant(ctx))
            }
            Err((e, owner)) => {
                state.metrics.auth_failure("tenant");
                auth_burst(state, &rid).await;
                let reason = match e {
                    AuthError::Invalid if owner.is_some() => Some("invalid_secret"),
                    AuthError::Invalid => Some("unknown_key"),
                    AuthError::Expired => Some("expired"),
                    AuthError::Revoked => Some("revoked"),
                    AuthError::Quarantined => Some("quarantined"),
                    AuthError::KeyQuarantined => Some("key_quarantined"),
                    _ => None,
                };
                let Some(reason) = reason else {
                    return Err(e.into());
                };
                // A real key id goes into its owner's log (the tenant's auditor
                // wants to see attempts on its keys); anything else into the
                // operator's.
                let (actor, log) = match owner {
                    Some((tenant, key_id)) => (format!("key:{key_id}"), LogId::Tenant(tenant)),
                    None => ("anonymous".to_owned(), LogId::Operator),
                };
                let refusal = Refusal {
                    kind: EventKind::Auth,
                    actor,
                    log,
                    reason,
                };
                Err(refuse(state, parts, &rid, refusal, e.into()).await)
            }
        }
    }
}

/// A JSON body that must be `application/json`, within the body limit, valid UTF-8
/// JSON, and of exactly the expected shape: unknown fields are refused (the target
/// types say `deny_unknown_fields`) because silently ignoring a misspelt
/// `ttl_seconds` would keep data longer than the client asked.
#[derive(Debug)]
pub struct StrictJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for StrictJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = read_json_body(req, state).await?;
        parse_json(&bytes).map(StrictJson)
    }
}

/// Like `StrictJson`, for endpoints whose fields are all optional: an empty body
/// (as `curl -X POST` sends) reads as `{}`.
#[derive(Debug)]
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default> FromRequest<AppState> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let has_type = req.headers().contains_key(header::CONTENT_TYPE);
        let declared_len = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok());
        if !has_type && matches!(declared_len, None | Some("0")) {
            let bytes = Bytes::from_request(req, state).await.map_err(body_error)?;
            if bytes.is_empty() {
                return Ok(OptionalJson(T::default()));
            }
            return Err(ApiError::new(
                ProblemKind::UnsupportedMediaType,
                "send Content-Type: application/json",
            ));
        }
        let bytes = read_json_body(req, state).await?;
        parse_json(&bytes).map(OptionalJson)
    }
}

/// A JSON body's bytes, checked for type and size but parsed by the handler: the
/// OpenAI-compatible endpoints accept the OpenAI schema as SDKs send it and
/// choose field by field what to keep.
#[derive(Debug)]
pub struct JsonBytes(pub Bytes);

impl FromRequest<AppState> for JsonBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        read_json_body(req, state).await.map(JsonBytes)
    }
}

async fn read_json_body(req: Request, state: &AppState) -> Result<Bytes, ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::new(
            ProblemKind::UnsupportedMediaType,
            "send Content-Type: application/json",
        ));
    }
    Bytes::from_request(req, state).await.map_err(body_error)
}

fn body_error(rejection: BytesRejection) -> ApiError {
    if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            ProblemKind::PayloadTooLarge,
            "the body exceeds the server's body_bytes_max",
        )
    } else {
        ApiError::new(
            ProblemKind::InvalidRequest,
            "the request body could not be read",
        )
    }
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        // serde_json's message names the field and position, never the content.
        ApiError::new(ProblemKind::MalformedJson, e.to_string())
    })
}
