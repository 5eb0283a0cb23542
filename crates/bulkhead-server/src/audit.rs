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
use bulkhead_app::EventKind;
use bulkhead_audit::{Attr, AuditError, Outcome, Subject};
use bulkhead_ledger::b64;
use bulkhead_ledger::event::AuditEvent;
use bulkhead_types::{LogId, TenantId};
use bulkhead_vault::{TenantCtx, VaultError};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::{ApiError, ApiResult, ProblemKind};
use crate::extract::{Admin, Tenant};

/// The id of this request, as sent back in `x-request-id` and written into every
/// audit event the request causes.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl RequestId {
    fn generate() -> Self {
        let bytes: [u8; 12] = bulkhead_crypto::random_array().unwrap_or([0; 12]);
        Self(format!("req_{}", bulkhead_types::hex_lower(&bytes)))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<RequestId>()
            .cloned()
            .unwrap_or_else(RequestId::generate))
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
    match e {
        AuditError::Invalid(detail) => ApiError::new(ProblemKind::InvalidRequest, detail),
        AuditError::Inconsistent { .. } => {
            tracing::error!(error = %e, "audit log integrity check failed");
            ApiError::new(
                ProblemKind::AuditInconsistent,
                "the audit log failed its integrity check; the server refuses to sign or serve it",
            )
        }
        AuditError::Unavailable(_) => {
            tracing::error!(error = %e, "audit log unavailable; the request is refused");
            ApiError::new(
                ProblemKind::Unavailable,
                "the audit log could not record this request, so it was not served",
            )
        }
    }
}

/// One event on its way into a log.
pub(crate) struct Trail<'a> {
    state: &'a AppState,
    event: AuditEvent,
}

impl<'a> Trail<'a> {
    /// An event by a tenant's key.
    pub fn tenant(state: &'a AppState, ctx: &TenantCtx, kind: EventKind, rid: &RequestId) -> Self {
        Self::new(state, kind, format!("key:{}", ctx.key_id()), rid)
    }

    /// An event by the operator.
    pub fn admin(state: &'a AppState, kind: EventKind, rid: &RequestId) -> Self {
        Self::new(state, kind, "admin".into(), rid)
    }

    pub fn new(state: &'a AppState, kind: EventKind, actor: String, rid: &RequestId) -> Self {
        let mut event = state.audit.event(kind.as_str(), actor, Outcome::Allowed);
        event.request_id = Some(rid.0.clone());
        Self { state, event }
    }

    pub fn subject(mut self, subject: Subject) -> Self {
        self.event.subjects.push(subject);
        self
    }

    pub fn attr(mut self, name: &str, value: Attr) -> Self {
        self.event.attrs.insert(name.to_owned(), value);
        self
    }

    pub fn about_tenant(mut self, tenant: &TenantId) -> Self {
        self.event.tenant = Some(tenant.to_string());
        self
    }

    pub fn denied(mut self, reason: &str) -> Self {
        self.event.outcome = Outcome::Denied;
        self.event.reason = Some(reason.to_owned());
        self
    }

    /// Appends to `log` and waits until it is durable.
    pub async fn record(self, log: LogId) -> ApiResult<()> {
        self.watch_enumeration(&log);
        self.state
            .audit
            .record(&log, &self.event)
            .await
            .map(|_| ())
            .map_err(audit_error)
    }

    /// A tenant's lookup of an id it does not have counts toward the
    /// `id_enumeration` alert; the alert is raised off the request path.
    fn watch_enumeration(&self, log: &LogId) {
        let LogId::Tenant(tenant) = log else { return };
        if self.event.reason.as_deref() != Some("not_found")
            || !self.event.actor.starts_with("key:")
        {
            return;
        }
        if self
            .state
            .alerts
            .not_found(tenant, self.state.vault.now().0)
        {
            let state = self.state.clone();
            let tenant = tenant.clone();
            let rid = RequestId(self.event.request_id.clone().unwrap_or_default());
            tokio::spawn(async move {
                crate::alerts::raise_id_enumeration(&state, &rid, &tenant).await;
            });
        }
    }

    /// The event as it will be logged.
    pub fn event(&self) -> &AuditEvent {
        &self.event
    }

    /// The leaf hash the event will have in its log.
    pub fn leaf_hash(&self) -> bulkhead_ledger::Hash {
        self.event.leaf_hash()
    }

    /// Appends to `log` with `records` in the same transaction (see
    /// `Audit::record_with`), waits until durable, and returns the entry's index.
    pub async fn record_with(
        self,
        log: LogId,
        records: Vec<bulkhead_store::RecordRow>,
    ) -> ApiResult<u64> {
        self.state
            .audit
            .record_with(&log, &self.event, records)
            .await
            .map(|entry| entry.index)
            .map_err(audit_error)
    }

    /// Appends to the operator log, and to the tenant's own log when the action
    /// concerns one tenant, so the tenant's auditor sees it too.
    pub async fn record_admin(self, tenant: Option<&TenantId>) -> ApiResult<()> {
        let Some(tenant) = tenant else {
            return self.record(LogId::Operator).await;
        };
        let event = {
            let mut e = self.event.clone();
            e.tenant = Some(tenant.to_string());
            e
        };
        let state = self.state;
        state
            .audit
            .record(&LogId::Operator, &event)
            .await
            .map_err(audit_error)?;
        state
            .audit
            .record(&LogId::Tenant(tenant.clone()), &event)
            .await
            .map(|_| ())
            .map_err(audit_error)
    }
}

/// The reason class of a vault failure, for a denied event; `None` if the failure
/// is not a denial (a broken store is not something the caller was refused).
pub(crate) fn denial_reason(e: &VaultError) -> Option<&'static str> {
    match e {
        VaultError::NotFound => Some("not_found"),
        VaultError::Conflict => Some("conflict"),
        _ => None,
    }
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
) -> ApiResult<Response> {
    checkpoint_of(&state, LogId::Tenant(ctx.tenant().clone())).await
}

pub async fn tenant_entries(
    Tenant(ctx): Tenant,
    State(state): State<AppState>,
    q: Result<Query<EntriesQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<EntriesResponse>> {
    entries_of(&state, LogId::Tenant(ctx.tenant().clone()), query(q)?).await
}

pub async fn tenant_inclusion(
    Tenant(ctx): Tenant,
    State(state): State<AppState>,
    q: Result<Query<InclusionQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<InclusionResponse>> {
    inclusion_of(&state, LogId::Tenant(ctx.tenant().clone()), query(q)?).await
}

pub async fn tenant_consistency(
    Tenant(ctx): Tenant,
    State(state): State<AppState>,
    q: Result<Query<ConsistencyQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<ConsistencyResponse>> {
    consistency_of(&state, LogId::Tenant(ctx.tenant().clone()), query(q)?).await
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
