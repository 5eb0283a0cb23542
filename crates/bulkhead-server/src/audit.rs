//! The audit trail at the HTTP edge: request ids, the events handlers append, and
//! the read endpoints (`/v1/audit/…` for a tenant's own log, `/admin/v1/audit/…`
//! for the operator log and any tenant's log).
//!
//! Appends are awaited: a read's content is released only after its event is
//! durable, and if the event cannot be written the request fails (503) — an
//! unlogged read is worse than a refused one (invariant 4).

use axum::Json;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bulkhead_audit::AuditError;
use bulkhead_ledger::b64;
use bulkhead_types::{LogId, TenantId};

use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::{ApiError, ApiResult, ProblemKind};
use crate::extract::{Admin, Tenant};

pub use bulkhead_app::trail::{RequestId, Trail, denial_reason};

/// The id of this request as an extractor (`Rid(rid): Rid`): the one
/// `assign_request_id` gave it.
#[derive(Debug, Clone)]
pub struct Rid(pub RequestId);

impl<S: Send + Sync> FromRequestParts<S> for Rid {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Rid(parts
            .extensions
            .get::<RequestId>()
            .cloned()
            .unwrap_or_else(RequestId::generate)))
    }
}

/// When the request reached the server (before authentication and body
/// reading), so the gateway's overhead figure counts everything it added.
#[derive(Debug, Clone, Copy)]
pub struct Arrival(pub std::time::Instant);

impl<S: Send + Sync> FromRequestParts<S> for Arrival {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Arrival>()
            .copied()
            .unwrap_or_else(|| Arrival(std::time::Instant::now())))
    }
}

/// Gives every request an id (never taken from the client, so a client cannot
/// make two requests look like one in the log).
pub async fn assign_request_id(mut request: axum::extract::Request, next: Next) -> Response {
    request
        .extensions_mut()
        .insert(Arrival(std::time::Instant::now()));
    let id = RequestId::generate();
    request.extensions_mut().insert(id.clone());
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&id.0) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

pub(crate) fn audit_error(e: AuditError) -> ApiError {
    bulkhead_app::AppError::from(e).into()
}

// ---- read endpoints ----------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntriesQuery {
    #[serde(default)]
    start: Option<u64>,
    #[serde(default)]
    end: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionQuery {
    index: u64,
    #[serde(default)]
    size: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyQuery {
    old: u64,
    #[serde(default)]
    new: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct EntryResponse {
    pub index: u64,
    pub leaf_hash: String,
    pub event: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct EntriesResponse {
    pub entries: Vec<EntryResponse>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct InclusionResponse {
    pub index: u64,
    pub size: u64,
    pub leaf_hash: String,
    pub proof: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ConsistencyResponse {
    pub old: u64,
    pub new: u64,
    pub proof: Vec<String>,
}

fn query<T: serde::de::DeserializeOwned>(
    q: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<T> {
    q.map(|Query(t)| t)
        .map_err(|e| ApiError::new(ProblemKind::InvalidRequest, e.body_text()))
}

fn text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

async fn checkpoint_of(state: &AppState, log: LogId) -> ApiResult<Response> {
    let signed = state.audit.checkpoint(&log).await.map_err(audit_error)?;
    Ok(text(signed.note))
}

async fn entries_of(
    state: &AppState,
    log: LogId,
    q: EntriesQuery,
) -> ApiResult<Json<EntriesResponse>> {
    let head = state.audit.head(&log).await.map_err(audit_error)?;
    let start = q.start.unwrap_or(0);
    let end = q.end.unwrap_or(u64::MAX).min(head.size);
    if q.end.is_some_and(|e| e < start) {
        return Err(ApiError::new(
            ProblemKind::InvalidRequest,
            "end must not be below start",
        ));
    }
    let entries = if start >= end {
        Vec::new()
    } else {
        state
            .audit
            .entries(&log, start, end)
            .await
            .map_err(audit_error)?
    };
    Ok(Json(EntriesResponse {
        entries: entries
            .into_iter()
            .map(|e| EntryResponse {
                index: e.index,
                leaf_hash: b64(&e.leaf_hash),
                event: e.event,
            })
            .collect(),
    }))
}

/// The size a proof is for when the client gives none: the latest checkpoint's.
async fn default_size(state: &AppState, log: &LogId, size: Option<u64>) -> ApiResult<u64> {
    match size {
        Some(size) => Ok(size),
        None => Ok(state
            .audit
            .checkpoint(log)
            .await
            .map_err(audit_error)?
            .checkpoint
            .size),
    }
}

async fn inclusion_of(
    state: &AppState,
    log: LogId,
    q: InclusionQuery,
) -> ApiResult<Json<InclusionResponse>> {
    let size = default_size(state, &log, q.size).await?;
    let (leaf, proof) = state
        .audit
        .inclusion_proof(&log, q.index, size)
        .await
        .map_err(audit_error)?;
    Ok(Json(InclusionResponse {
        index: q.index,
        size,
        leaf_hash: b64(&leaf),
        proof: proof.iter().map(|h| b64(h)).collect(),
    }))
}

async fn consistency_of(
    state: &AppState,
    log: LogId,
    q: ConsistencyQuery,
) -> ApiResult<Json<ConsistencyResponse>> {
    let new = default_size(state, &log, q.new).await?;
    let proof = state
        .audit
        .consistency_proof(&log, q.old, new)
        .await
        .map_err(audit_error)?;
    Ok(Json(ConsistencyResponse {
        old: q.old,
        new,
        proof: proof.iter().map(|h| b64(h)).collect(),
    }))
}

pub async fn public_key(State(state): State<AppState>) -> Response {
    text(format!("{}\n", state.audit.vkey()))
}

// Tenant plane: the key's own log, and no other.

pub async fn tenant_checkpoint(
    Tenant(ctx): Tenant,
    State(state): State<AppState>,
    Rid(rid): Rid,
) -> ApiResult<Response> {
    bulkhead_app::reads::audit_read(&state, &ctx, &rid, "checkpoint").await?;
    checkpoint_of(&state, LogId::Tenant(ctx.tenant().clone())).await
}

pub async fn tenant_entries(
    Tenant(ctx): Tenant,
    State(state): State<AppState>,
    Rid(rid): Rid,
    q: Result<Query<EntriesQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<EntriesResponse>> {
    let q = query(q)?;
    bulkhead_app::reads::audit_read(&state, &ctx, &rid, "entries").await?;
    entries_of(&state, LogId::Tenant(ctx.tenant().clone()), q).await
}

pub async fn tenant_inclusion(
    Tenant(ctx): Tenant,
    State(state): State<AppState>,
    Rid(rid): Rid,
    q: Result<Query<InclusionQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<InclusionResponse>> {
    let q = query(q)?;
    bulkhead_app::reads::audit_read(&state, &ctx, &rid, "proof/inclusion").await?;
    inclusion_of(&state, LogId::Tenant(ctx.tenant().clone()), q).await
}

pub async fn tenant_consistency(
    Tenant(ctx): Tenant,
    State(state): State<AppState>,
    Rid(rid): Rid,
    q: Result<Query<ConsistencyQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<ConsistencyResponse>> {
    let q = query(q)?;
    bulkhead_app::reads::audit_read(&state, &ctx, &rid, "proof/consistency").await?;
    consistency_of(&state, LogId::Tenant(ctx.tenant().clone()), q).await
}

// Admin plane: the operator log, and any tenant's log by id (erased tenants
// included: their logs still verify, their events read as null).

pub async fn operator_checkpoint(_: Admin, State(state): State<AppState>) -> ApiResult<Response> {
    checkpoint_of(&state, LogId::Operator).await
}

pub async fn operator_entries(
    _: Admin,
    State(state): State<AppState>,
    q: Result<Query<EntriesQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<EntriesResponse>> {
    entries_of(&state, LogId::Operator, query(q)?).await
}

pub async fn operator_inclusion(
    _: Admin,
    State(state): State<AppState>,
    q: Result<Query<InclusionQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<InclusionResponse>> {
    inclusion_of(&state, LogId::Operator, query(q)?).await
}

pub async fn operator_consistency(
    _: Admin,
    State(state): State<AppState>,
    q: Result<Query<ConsistencyQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<ConsistencyResponse>> {
    consistency_of(&state, LogId::Operator, query(q)?).await
}

/// A tenant's log for the operator: 404 unless the tenant exists or once did.
async fn tenant_log(state: &AppState, raw: &str) -> ApiResult<LogId> {
    let id = TenantId::parse(raw).map_err(|_| ApiError::not_found())?;
    let log = LogId::Tenant(id.clone());
    let head = state.audit.head(&log).await.map_err(audit_error)?;
    if head.size == 0 {
        state.vault.tenant(&id).await?;
    }
    Ok(log)
}

pub async fn admin_tenant_checkpoint(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let log = tenant_log(&state, &id).await?;
    checkpoint_of(&state, log).await
}

pub async fn admin_tenant_entries(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<EntriesQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<EntriesResponse>> {
    let log = tenant_log(&state, &id).await?;
    entries_of(&state, log, query(q)?).await
}

pub async fn admin_tenant_inclusion(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<InclusionQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<InclusionResponse>> {
    let log = tenant_log(&state, &id).await?;
    inclusion_of(&state, log, query(q)?).await
}

pub async fn admin_tenant_consistency(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<ConsistencyQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<ConsistencyResponse>> {
    let log = tenant_log(&state, &id).await?;
    consistency_of(&state, log, query(q)?).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    #[serde(default)]
    cursor: Option<i64>,
    #[serde(default)]
    limit: Option<u32>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LogResponse {
    pub log: String,
    pub origin: String,
    pub size: u64,
    pub checkpoint_size: u64,
    pub checkpoint_at: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LogsResponse {
    pub logs: Vec<LogResponse>,
    pub next_cursor: Option<i64>,
}

/// Every log with its size and last checkpoint, for operators and dashboards.
pub async fn logs(
    _: Admin,
    State(state): State<AppState>,
    q: Result<Query<LogsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<LogsResponse>> {
    let q = query(q)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let rows = state
        .audit
        .logs(q.cursor.unwrap_or(0), limit + 1)
        .await
        .map_err(audit_error)?;
    let next_cursor = (rows.len() > limit as usize).then(|| rows[limit as usize - 1].0);
    Ok(Json(LogsResponse {
        logs: rows
            .into_iter()
            .take(limit as usize)
            .map(|(_, s)| LogResponse {
                origin: state.audit.origin(&s.log),
                log: s.log.to_string(),
                size: s.size,
                checkpoint_size: s.checkpoint_size,
                checkpoint_at: s.checkpoint_at.map(|t| t.rfc3339()),
            })
            .collect(),
        next_cursor,
    }))
}
