//! The operator plane: `/admin/v1/…`, reachable only with the admin token.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bulkhead_types::{ApiKeyId, TenantId};
use bulkhead_vault::NewTenant;

use crate::error::{ApiError, ApiResult};
use crate::extract::{Admin, OptionalJson, StrictJson};
use crate::wire::{
    CreateTenantRequest, IssueKeyRequest, IssuedKeyResponse, RotateKeyResponse, TenantListResponse,
    TenantResponse, rfc3339,
};
use crate::{AppState, documents::page_query, no_content};

/// A malformed tenant id names no tenant: it gets the same 404 as a missing one.
fn tenant_id(raw: &str) -> ApiResult<TenantId> {
    TenantId::parse(raw).map_err(|_| ApiError::not_found())
}

pub async fn create_tenant(
    _: Admin,
    State(state): State<AppState>,
    StrictJson(req): StrictJson<CreateTenantRequest>,
) -> ApiResult<Response> {
    let new = NewTenant {
        name: req.name,
        region: req.region.unwrap_or_default(),
        policy: req.policy.unwrap_or_default(),
    };
    let tenant = state.vault.create_tenant(new).await?;
    tracing::info!(tenant = %tenant.id, region = %tenant.region, policy = %tenant.policy, "tenant created");
    Ok((StatusCode::CREATED, Json(TenantResponse::from(&tenant))).into_response())
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
        tenants: tenants.iter().map(TenantResponse::from).collect(),
        next_cursor,
    }))
}

pub async fn show_tenant(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<TenantResponse>> {
    let tenant = state.vault.tenant(&tenant_id(&id)?).await?;
    Ok(Json(TenantResponse::from(&tenant)))
}

pub async fn erase_tenant(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = tenant_id(&id)?;
    let receipt = state.vault.erase_tenant(&id).await?;
    tracing::warn!(tenant = %id, records = receipt.records_deleted, keys = receipt.data_keys_destroyed,
        "tenant crypto-shredded");
    let body = serde_json::json!({
        "tenant_id": receipt.tenant_id,
        "erased_at": rfc3339(receipt.erased_at),
        "data_keys_destroyed": receipt.data_keys_destroyed,
        "records_deleted": receipt.records_deleted,
        "api_keys_deleted": receipt.api_keys_deleted,
        "method": receipt.method,
    });
    Ok(Json(body).into_response())
}

pub async fn issue_key(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    OptionalJson(req): OptionalJson<IssueKeyRequest>,
) -> ApiResult<Response> {
    let id = tenant_id(&id)?;
    let issued = state.vault.issue_api_key(&id, req.ttl_seconds).await?;
    tracing::info!(tenant = %id, key_id = %issued.key_id, "API key issued");
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
    Path((id, key_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let id = tenant_id(&id)?;
    let key_id = ApiKeyId::parse(&key_id).map_err(|_| ApiError::not_found())?;
    state.vault.revoke_api_key(&id, &key_id).await?;
    tracing::info!(tenant = %id, key_id = %key_id, "API key revoked");
    Ok(no_content())
}

pub async fn quarantine(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<TenantResponse>> {
    let id = tenant_id(&id)?;
    let tenant = state.vault.set_quarantine(&id, true).await?;
    tracing::warn!(tenant = %id, "tenant quarantined: its keys get 403 until released");
    Ok(Json(TenantResponse::from(&tenant)))
}

pub async fn release(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<TenantResponse>> {
    let id = tenant_id(&id)?;
    let tenant = state.vault.set_quarantine(&id, false).await?;
    tracing::info!(tenant = %id, "tenant released from quarantine");
    Ok(Json(TenantResponse::from(&tenant)))
}

pub async fn rotate_key(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<RotateKeyResponse>> {
    let id = tenant_id(&id)?;
    let version = state.vault.rotate_key(&id).await?;
    tracing::info!(tenant = %id, key_version = version.get(), "tenant data key rotated; re-sealing older records");
    state.spawn_reseal(id.clone());
    Ok(Json(RotateKeyResponse {
        tenant_id: id.to_string(),
        key_version: version.get(),
        resealing: true,
    }))
}
