//! The operator plane: `/admin/v1/…`, reachable only with the admin token: the
//! wire side of `bulkhead_app::tenants` (the tenant lifecycle), the tenant
//! export, alerts and packs.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bulkhead_app::EventKind;
use bulkhead_app::tenants::{self, TenantInput, tenant_id};
use bulkhead_audit::{Attr, Subject};

use crate::audit::{Rid, Trail};
use crate::error::{ApiError, ApiResult, ProblemKind};
use crate::extract::{Admin, OptionalJson, StrictJson, Tenant};
use crate::wire::{
    CreateTenantRequest, IssueKeyRequest, IssuedKeyResponse, RotateKeyResponse, SetModelsRequest,
    SetPolicyRequest, TenantListResponse, TenantResponse, rfc3339, tenant_response,
};
use crate::{AppState, documents::page_query, no_content};

pub async fn create_tenant(
    _: Admin,
    State(state): State<AppState>,
    Rid(rid): Rid,
    StrictJson(req): StrictJson<CreateTenantRequest>,
) -> ApiResult<Response> {
    let input = TenantInput {
        name: req.name,
        region: req.region,
        policy: req.policy,
        models: req.models,
    };
    let tenant = tenants::create(&state, &rid, input).await?;
    Ok((StatusCode::CREATED, Json(tenant_response(&tenant))).into_response())
}

/// `GET /admin/v1/alerts`: the most recent alerts, newest first.
pub async fn alerts(_: Admin, State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "alerts": state.alerts.recent(1000) }))
}

/// `POST /admin/v1/alerts/{id}/ack`: acknowledges an alert (logged as
/// `alert.acknowledged` in the operator log); acknowledging again changes nothing.
pub async fn ack_alert(
    _: Admin,
    State(state): State<AppState>,
    Rid(rid): Rid,
    Path(id): Path<String>,
) -> ApiResult<Json<crate::alerts::Alert>> {
    crate::alerts::acknowledge(&state, &rid, &id, "admin")
        .await
        .map(Json)
        .map_err(ApiError::from)
}

/// `GET /admin/v1/policies`: the compliance packs tenants can choose.
pub async fn policies(_: Admin, State(state): State<AppState>) -> Json<serde_json::Value> {
    let packs: Vec<&crate::packs::Pack> = state.packs.all().map(|p| &**p).collect();
    Json(serde_json::json!({ "policies": packs }))
}

/// `PUT /admin/v1/tenants/{id}/policy` `{"policy": "gdpr"}`: an audited change of
/// the tenant's compliance pack. It applies to the next request; stored records
/// keep the TTL they were written with.
pub async fn set_policy(
    _: Admin,
    State(state): State<AppState>,
    Rid(rid): Rid,
    Path(id): Path<String>,
    StrictJson(req): StrictJson<SetPolicyRequest>,
) -> ApiResult<Json<TenantResponse>> {
    let updated = tenants::set_policy(&state, &rid, &id, &req.policy).await?;
    Ok(Json(tenant_response(&updated)))
}

/// `PUT /admin/v1/tenants/{id}/quotas`: the tenant's own quotas, replacing
/// those set before (`{}` lifts them all: the pack's and the server's apply).
/// Answers with the tenant's usage against the new effective limits.
pub async fn set_quotas(
    _: Admin,
    State(state): State<AppState>,
    Rid(rid): Rid,
    Path(id): Path<String>,
    StrictJson(quotas): StrictJson<bulkhead_api::quotas::Quotas>,
) -> ApiResult<Json<bulkhead_api::quotas::UsageResponse>> {
    Ok(Json(tenants::set_quotas(&state, &rid, &id, quotas).await?))
}

/// `GET /admin/v1/tenants/{id}/usage`: what the tenant used against its quotas.
pub async fn tenant_usage(
    _: Admin,
    State(state): State<AppState>,
    Rid(rid): Rid,
    Path(id): Path<String>,
) -> ApiResult<Json<bulkhead_api::quotas::UsageResponse>> {
    Ok(Json(tenants::usage(&state, &rid, &id).await?))
}

/// `GET /v1/usage`: the caller's tenant's usage against its quotas.
pub async fn own_usage(
    Tenant(ctx): Tenant,
    State(state): State<AppState>,
) -> ApiResult<Json<bulkhead_api::quotas::UsageResponse>> {
    Ok(Json(state.quotas.usage(ctx.tenant()).await?))
}

/// `PUT /admin/v1/tenants/{id}/models` `{"models": [...] | null}`.
pub async fn set_models(
    _: Admin,
    State(state): State<AppState>,
    Rid(rid): Rid,
    Path(id): Path<String>,
    StrictJson(req): StrictJson<SetModelsRequest>,
) -> ApiResult<Json<TenantResponse>> {
    let tenant = tenants::set_models(&state, &rid, &id, req.models).await?;
    Ok(Json(tenant_response(&tenant)))
}

pub async fn list_tenants(
    _: Admin,
    State(state): State<AppState>,
    uri: Uri,
) -> ApiResult<Json<TenantListResponse>> {
    let page = page_query(&uri)?;
    let limit = page.limit.unwrap_or(state.vault.limits().page_len_max);
    let (tenants, next_cursor) = state
        .vault
        .list_tenants(page.cursor.as_deref(), limit)
        .await?;
    Ok(Json(TenantListResponse {
        tenants: tenants.iter().map(tenant_response).collect(),
        next_cursor,
    }))
}

pub async fn show_tenant(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<TenantResponse>> {
    let tenant = state.vault.tenant(&tenant_id(&id)?).await?;
    Ok(Json(tenant_response(&tenant)))
}

/// The largest export answered in one response.
const EXPORT_BYTES_MAX: usize = 256 << 20;

/// `GET /admin/v1/tenants/{id}/export`: everything the tenant has stored, opened —
/// documents, sessions with their messages, decision traces — for a data
/// subject's access or portability request (GDPR Art. 15 and 20). The operator
/// sees the tenant's content here, so the export is logged in both logs with
/// counts.
pub async fn export_tenant(
    _: Admin,
    State(state): State<AppState>,
    Rid(rid): Rid,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    use bulkhead_types::RecordKind;
    const KIND: EventKind = EventKind::TenantExport;
    let tenant = tenants::read_known(&state, &rid, KIND, &id).await?;
    let id = tenant.id.clone();
    let as_json = |bytes: &[u8]| -> serde_json::Value {
        serde_json::from_slice(bytes).unwrap_or(serde_json::Value::Null)
    };
    let documents: Vec<serde_json::Value> = state
        .vault
        .documents_of(&id)
        .await?
        .iter()
        .map(|d| {
            serde_json::json!({
                "id": d.id.as_str(), "text": &*d.text, "metadata": d.metadata,
                "created_at": rfc3339(d.created_at), "expires_at": d.expires_at.map(rfc3339),
            })
        })
        .collect();
    let messages = state
        .vault
        .export_records(&id, RecordKind::SESSION_MESSAGE)
        .await?;
    let sessions: Vec<serde_json::Value> = state
        .vault
        .export_records(&id, RecordKind::SESSION)
        .await?
        .iter()
        .map(|s| {
            let prefix = format!("{}#", s.record_id);
            let turns: Vec<serde_json::Value> = messages
                .iter()
                .filter(|m| m.record_id.starts_with(&prefix))
                .map(|m| as_json(m.body.as_slice()))
                .collect();
            serde_json::json!({
                "id": s.record_id, "created_at": rfc3339(s.created_at),
                "expires_at": s.expires_at.map(rfc3339), "messages": turns,
            })
        })
        .collect();
    let traces: Vec<serde_json::Value> = state
        .vault
        .export_records(&id, RecordKind::TRACE)
        .await?
        .iter()
        .map(|t| as_json(t.body.as_slice())["trace"].clone())
        .collect();
    let body = serde_json::json!({
        "tenant": tenant_response(&tenant),
        "exported_at": rfc3339(state.vault.now()),
        "documents": documents,
        "sessions": sessions,
        "traces": traces,
    });
    let bytes =
        zeroize::Zeroizing::new(serde_json::to_vec(&body).map_err(|_| ApiError::internal())?);
    if bytes.len() > EXPORT_BYTES_MAX {
        return Err(ApiError::new(
            ProblemKind::PayloadTooLarge,
            format!(
                "the tenant's data exceeds {EXPORT_BYTES_MAX} bytes, more than one export response carries"
            ),
        ));
    }
    Trail::admin(&state, KIND, &rid)
        .subject(Subject::new("tenant", id.as_str()))
        .attr(
            "documents",
            Attr::Int(body["documents"].as_array().map_or(0, Vec::len) as i64),
        )
        .attr(
            "sessions",
            Attr::Int(body["sessions"].as_array().map_or(0, Vec::len) as i64),
        )
        .attr(
            "traces",
            Attr::Int(body["traces"].as_array().map_or(0, Vec::len) as i64),
        )
        .attr("bytes", Attr::Int(bytes.len() as i64))
        .record_admin(Some(&id))
        .await?;
    tracing::info!(tenant = %id, bytes = bytes.len(), "tenant data exported for a data-subject request");
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        bytes.to_vec(),
    )
        .into_response())
}

pub async fn erase_tenant(
    _: Admin,
    State(state): State<AppState>,
    Rid(rid): Rid,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let erasure = tenants::erase(&state, &rid, &id).await?;
    // The receipt's own fields stay at the top level (the contract's shape); the
    // proof that the operator log holds it rides along.
    let mut body = erasure.statement;
    body["receipt_sha256"] = serde_json::json!(erasure.receipt_sha256);
    body["operator_log"] = serde_json::json!({
        "index": erasure.index,
        "event": erasure.event,
        "leaf_hash": bulkhead_ledger::b64(&erasure.leaf_hash),
        "proof": erasure.proof.iter().map(|h| bulkhead_ledger::b64(h)).collect::<Vec<_>>(),
        "checkpoint": erasure.checkpoint,
    });
    body["vkey"] = serde_json::json!(state.audit.vkey());
    Ok(Json(body).into_response())
}

pub async fn issue_key(
    _: Admin,
    State(state): State<AppState>,
    Rid(rid): Rid,
    Path(id): Path<String>,
    OptionalJson(req): OptionalJson<IssueKeyRequest>,
) -> ApiResult<Response> {
    let issued = tenants::issue_key(&state, &rid, &id, req.ttl_seconds).await?;
    let body = IssuedKeyResponse {
        key_id: issued.key_id.to_string(),
        key: issued.token.to_string(),
        expires_at: issued.expires_at.map(rfc3339),
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub async fn revoke_key(
    _: Admin,
    State(state): State<AppState>,
    Rid(rid): Rid,
    Path((id, key_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    tenants::revoke_key(&state, &rid, &id, &key_id).await?;
    Ok(no_content())
}

/// `POST /admin/v1/tenants/{id}/keys/{key_id}/quarantine` (contain one key) and
/// `DELETE …` (release it): the tenant's other keys keep working.
pub async fn quarantine_key(
    _: Admin,
    State(state): State<AppState>,
    Rid(rid): Rid,
    Path((id, key_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    tenants::set_key_quarantine(&state, &rid, &id, &key_id, true).await?;
    Ok(no_content())
}

pub async fn release_key(
    _: Admin,
    State(state): State<AppState>,
    Rid(rid): Rid,
    Path((id, key_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    tenants::set_key_quarantine(&state, &rid, &id, &key_id, false).await?;
    Ok(no_content())
}

pub async fn quarantine(
    _: Admin,
    State(state): State<AppState>,
    Rid(rid): Rid,
    Path(id): Path<String>,
) -> ApiResult<Json<TenantResponse>> {
    let tenant = tenants::set_quarantine(&state, "admin", &rid, &id, true).await?;
    tracing::warn!(tenant = %tenant.id, "tenant quarantined: its keys get 403 until released");
    Ok(Json(tenant_response(&tenant)))
}

pub async fn release(
    _: Admin,
    State(state): State<AppState>,
    Rid(rid): Rid,
    Path(id): Path<String>,
) -> ApiResult<Json<TenantResponse>> {
    let tenant = tenants::set_quarantine(&state, "admin", &rid, &id, false).await?;
    tracing::info!(tenant = %tenant.id, "tenant released from quarantine");
    Ok(Json(tenant_response(&tenant)))
}

pub async fn rotate_key(
    _: Admin,
    State(state): State<AppState>,
    Rid(rid): Rid,
    Path(id): Path<String>,
) -> ApiResult<Json<RotateKeyResponse>> {
    let (id, version) = tenants::rotate_key(&state, &rid, &id).await?;
    Ok(Json(RotateKeyResponse {
        tenant_id: id.to_string(),
        key_version: version.get(),
        resealing: true,
    }))
}
