//! The operator plane: `/admin/v1/…`, reachable only with the admin token.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bulkhead_app::EventKind;
use bulkhead_audit::{Attr, Subject};
use bulkhead_types::{ApiKeyId, TenantId};
use bulkhead_vault::{NewTenant, VaultError};

use crate::audit::{RequestId, Rid, Trail, denial_reason};
use crate::error::{ApiError, ApiResult, ProblemKind};
use crate::extract::{Admin, OptionalJson, StrictJson};
use crate::wire::{
    CreateTenantRequest, IssueKeyRequest, IssuedKeyResponse, RotateKeyResponse, SetModelsRequest,
    SetPolicyRequest, TenantListResponse, TenantResponse, rfc3339, tenant_response,
};
use crate::{AppState, documents::page_query, no_content};

/// A malformed tenant id names no tenant: it gets the same 404 as a missing one.
fn tenant_id(raw: &str) -> ApiResult<TenantId> {
    TenantId::parse(raw).map_err(|_| ApiError::not_found())
}

/// Logs a refused admin action (an unknown tenant or key) in the operator log and
/// hands the error back.
async fn refused(
    state: &AppState,
    rid: &RequestId,
    kind: EventKind,
    tenant: Option<&TenantId>,
    e: VaultError,
) -> ApiError {
    if let Some(reason) = denial_reason(&e) {
        let mut trail = Trail::admin(state, kind, rid).denied(reason);
        if let Some(tenant) = tenant {
            trail = trail.about_tenant(tenant);
        }
        if let Err(audit) = trail.record(bulkhead_types::LogId::Operator).await {
            return audit.into();
        }
    }
    e.into()
}

/// The tenant named in the path, or a logged 404.
async fn known_tenant(
    state: &AppState,
    rid: &RequestId,
    kind: EventKind,
    raw: &str,
) -> ApiResult<TenantId> {
    match tenant_id(raw) {
        Ok(id) => Ok(id),
        Err(_) => Err(refused(state, rid, kind, None, VaultError::NotFound).await),
    }
}

pub async fn create_tenant(
    _: Admin,
    State(state): State<AppState>,
    Rid(rid): Rid,
    StrictJson(req): StrictJson<CreateTenantRequest>,
) -> ApiResult<Response> {
    let region = req.region.unwrap_or_default();
    let models = checked_models(&state, &region, req.models)?;
    let policy = req.policy.unwrap_or_default();
    checked_pack(&state, &policy, &region)?;
    let new = NewTenant {
        name: req.name,
        region,
        policy,
        models,
    };
    let tenant = state.vault.create_tenant(new).await?;
    state.guard.seed_tenant(&state.vault, &tenant.id).await?;
    // The first entry of every tenant's log is its creation.
    Trail::admin(&state, EventKind::TenantCreate, &rid)
        .subject(Subject::new("tenant", tenant.id.as_str()))
        .attr("region", Attr::Text(tenant.region.to_string()))
        .attr("policy", Attr::Text(tenant.policy.to_string()))
        .record_admin(Some(&tenant.id))
        .await?;
    tracing::info!(tenant = %tenant.id, region = %tenant.region, policy = %tenant.policy, "tenant created");
    Ok((StatusCode::CREATED, Json(tenant_response(&tenant))).into_response())
}

/// An allow-list must name models that exist in the tenant's region: a typo would
/// otherwise lock the tenant out of the model it was meant to have.
fn checked_models(
    state: &AppState,
    region: &bulkhead_types::Region,
    models: Option<Vec<String>>,
) -> ApiResult<Option<Vec<String>>> {
    let Some(mut models) = models else {
        return Ok(None);
    };
    if models.len() > 1000 {
        return Err(ApiError::new(
            ProblemKind::InvalidRequest,
            "models may name at most 1000 models",
        ));
    }
    models.sort();
    models.dedup();
    if let Some(unknown) = models
        .iter()
        .find(|m| !state.gateway.gateway.offers(region, m))
    {
        return Err(ApiError::new(
            ProblemKind::InvalidRequest,
            format!("model `{unknown}` is not offered by any upstream in region `{region}`"),
        ));
    }
    Ok(Some(models))
}

/// A pack must exist, and allow the tenant's region.
fn checked_pack(
    state: &AppState,
    policy: &bulkhead_types::PolicyName,
    region: &bulkhead_types::Region,
) -> ApiResult<()> {
    let Some(pack) = state.packs.get(policy.as_str()) else {
        let known: Vec<&str> = state.packs.names().collect();
        return Err(ApiError::new(
            ProblemKind::InvalidRequest,
            format!(
                "policy `{policy}` is not a pack of this server; known: {}",
                known.join(", ")
            ),
        ));
    };
    if !pack.residency.allows(region) {
        return Err(ApiError::new(
            ProblemKind::InvalidRequest,
            format!(
                "policy `{policy}` requires a region matching {}; `{region}` does not",
                pack.residency.regions.join(" or ")
            ),
        ));
    }
    Ok(())
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
    const KIND: EventKind = EventKind::TenantPolicy;
    let id = known_tenant(&state, &rid, KIND, &id).await?;
    let tenant = match state.vault.tenant(&id).await {
        Ok(t) => t,
        Err(e) => return Err(refused(&state, &rid, KIND, Some(&id), e).await),
    };
    checked_pack(&state, &req.policy, &tenant.region)?;
    let updated = match state.vault.set_tenant_policy(&id, &req.policy).await {
        Ok(t) => t,
        Err(e) => return Err(refused(&state, &rid, KIND, Some(&id), e).await),
    };
    Trail::admin(&state, KIND, &rid)
        .subject(Subject::new("tenant", id.as_str()))
        .attr("from", Attr::Text(tenant.policy.to_string()))
        .attr("to", Attr::Text(req.policy.to_string()))
        .record_admin(Some(&id))
        .await?;
    tracing::info!(tenant = %id, from = %tenant.policy, to = %req.policy, "tenant policy pack changed");
    Ok(Json(tenant_response(&updated)))
}

/// `PUT /admin/v1/tenants/{id}/models` `{"models": [...] | null}`.
pub async fn set_models(
    _: Admin,
    State(state): State<AppState>,
    Rid(rid): Rid,
    Path(id): Path<String>,
    StrictJson(req): StrictJson<SetModelsRequest>,
) -> ApiResult<Json<TenantResponse>> {
    const KIND: EventKind = EventKind::TenantModels;
    let id = known_tenant(&state, &rid, KIND, &id).await?;
    let tenant = match state.vault.tenant(&id).await {
        Ok(t) => t,
        Err(e) => return Err(refused(&state, &rid, KIND, Some(&id), e).await),
    };
    let models = checked_models(&state, &tenant.region, req.models)?;
    let tenant = match state.vault.set_tenant_models(&id, models.clone()).await {
        Ok(t) => t,
        Err(e) => return Err(refused(&state, &rid, KIND, Some(&id), e).await),
    };
    let listed = models.as_ref().map_or("*".to_owned(), |m| m.join(","));
    Trail::admin(&state, KIND, &rid)
        .subject(Subject::new("tenant", id.as_str()))
        .attr("models", Attr::Text(listed))
        .record_admin(Some(&id))
        .await?;
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
    let id = known_tenant(&state, &rid, KIND, &id).await?;
    let tenant = match state.vault.tenant(&id).await {
        Ok(t) => t,
        Err(e) => return Err(refused(&state, &rid, KIND, Some(&id), e).await),
    };
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
    const KIND: EventKind = EventKind::TenantErase;
    let id = known_tenant(&state, &rid, KIND, &id).await?;
    let receipt = match state.vault.erase_tenant(&id).await {
        Ok(r) => r,
        Err(e) => return Err(refused(&state, &rid, KIND, Some(&id), e).await),
    };
    state.retrieval.forget(&id);
    state.guard.forget(&id).await;
    // The tenant's own log can no longer be written (its keys are gone); the
    // operator log records the erasure with the hash of the receipt, so the
    // receipt stays verifiable against the signed log for as long as it exists.
    let statement = serde_json::json!({
        "tenant_id": receipt.tenant_id,
        "erased_at": rfc3339(receipt.erased_at),
        "data_keys_destroyed": receipt.data_keys_destroyed,
        "records_deleted": receipt.records_deleted,
        "api_keys_deleted": receipt.api_keys_deleted,
        "method": receipt.method,
        "server": state.audit.server_name(),
    });
    let statement_bytes =
        bulkhead_ledger::event::canonical_json(&statement).map_err(|_| ApiError::internal())?;
    let receipt_sha256 = bulkhead_ledger::hex(&bulkhead_ledger::sha256(&statement_bytes));
    let trail = Trail::admin(&state, KIND, &rid)
        .about_tenant(&id)
        .subject(Subject::new("tenant", id.as_str()))
        .attr("receipt_sha256", Attr::Text(receipt_sha256.clone()))
        .attr(
            "data_keys_destroyed",
            Attr::Int(receipt.data_keys_destroyed as i64),
        )
        .attr("records_deleted", Attr::Int(receipt.records_deleted as i64))
        .attr(
            "api_keys_deleted",
            Attr::Int(receipt.api_keys_deleted as i64),
        );
    let event = trail.event().clone();
    let index = trail
        .record_with(bulkhead_types::LogId::Operator, Vec::new())
        .await?;
    let log = bulkhead_types::LogId::Operator;
    let signed = state
        .audit
        .sign(&log)
        .await
        .map_err(crate::audit::audit_error)?;
    let (leaf, proof) = state
        .audit
        .inclusion_proof(&log, index, signed.checkpoint.size)
        .await
        .map_err(crate::audit::audit_error)?;
    tracing::warn!(tenant = %id, records = receipt.records_deleted, keys = receipt.data_keys_destroyed,
        operator_log_index = index, "tenant crypto-shredded; the receipt is verifiable with `bulkhead audit verify-receipt`");
    // The receipt's own fields stay at the top level (the contract's shape); the
    // proof that the operator log holds it rides along.
    let mut body = statement;
    body["receipt_sha256"] = serde_json::json!(receipt_sha256);
    body["operator_log"] = serde_json::json!({
        "index": index,
        "event": event,
        "leaf_hash": bulkhead_ledger::b64(&leaf),
        "proof": proof.iter().map(|h| bulkhead_ledger::b64(h)).collect::<Vec<_>>(),
        "checkpoint": signed.note,
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
    const KIND: EventKind = EventKind::KeyIssue;
    let id = known_tenant(&state, &rid, KIND, &id).await?;
    let issued = match state.vault.issue_api_key(&id, req.ttl_seconds).await {
        Ok(issued) => issued,
        Err(e) => return Err(refused(&state, &rid, KIND, Some(&id), e).await),
    };
    let mut trail =
        Trail::admin(&state, KIND, &rid).subject(Subject::new("key", issued.key_id.as_str()));
    if let Some(expires_at) = issued.expires_at {
        trail = trail.attr("expires_at", Attr::Text(rfc3339(expires_at)));
    }
    trail.record_admin(Some(&id)).await?;
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
    Rid(rid): Rid,
    Path((id, key_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    const KIND: EventKind = EventKind::KeyRevoke;
    let id = known_tenant(&state, &rid, KIND, &id).await?;
    let Ok(key_id) = ApiKeyId::parse(&key_id) else {
        return Err(refused(&state, &rid, KIND, Some(&id), VaultError::NotFound).await);
    };
    if let Err(e) = state.vault.revoke_api_key(&id, &key_id).await {
        return Err(refused(&state, &rid, KIND, Some(&id), e).await);
    }
    Trail::admin(&state, KIND, &rid)
        .subject(Subject::new("key", key_id.as_str()))
        .record_admin(Some(&id))
        .await?;
    tracing::info!(tenant = %id, key_id = %key_id, "API key revoked");
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
    set_key_quarantine(&state, &rid, &id, &key_id, true).await
}

pub async fn release_key(
    _: Admin,
    State(state): State<AppState>,
    Rid(rid): Rid,
    Path((id, key_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    set_key_quarantine(&state, &rid, &id, &key_id, false).await
}

async fn set_key_quarantine(
    state: &AppState,
    rid: &RequestId,
    id: &str,
    key_id: &str,
    quarantined: bool,
) -> ApiResult<Response> {
    let kind = if quarantined {
        EventKind::KeyQuarantine
    } else {
        EventKind::KeyRelease
    };
    let id = known_tenant(state, rid, kind, id).await?;
    let Ok(key_id) = ApiKeyId::parse(key_id) else {
        return Err(refused(state, rid, kind, Some(&id), VaultError::NotFound).await);
    };
    if let Err(e) = state
        .vault
        .set_key_quarantine(&id, &key_id, quarantined)
        .await
    {
        return Err(refused(state, rid, kind, Some(&id), e).await);
    }
    Trail::admin(state, kind, rid)
        .subject(Subject::new("key", key_id.as_str()))
        .record_admin(Some(&id))
        .await?;
    if quarantined {
        tracing::warn!(tenant = %id, key_id = %key_id, "API key quarantined: it gets 403 until released");
    } else {
        tracing::info!(tenant = %id, key_id = %key_id, "API key released from quarantine");
    }
    Ok(no_content())
}

pub async fn quarantine(
    _: Admin,
    State(state): State<AppState>,
    Rid(rid): Rid,
    Path(id): Path<String>,
) -> ApiResult<Json<TenantResponse>> {
    let tenant = set_quarantine(&state, "admin", &rid, &id, true).await?;
    tracing::warn!(tenant = %tenant.id, "tenant quarantined: its keys get 403 until released");
    Ok(Json(tenant_response(&tenant)))
}

pub async fn release(
    _: Admin,
    State(state): State<AppState>,
    Rid(rid): Rid,
    Path(id): Path<String>,
) -> ApiResult<Json<TenantResponse>> {
    let tenant = set_quarantine(&state, "admin", &rid, &id, false).await?;
    tracing::info!(tenant = %tenant.id, "tenant released from quarantine");
    Ok(Json(tenant_response(&tenant)))
}

/// Quarantine or release, logged in both logs with `actor` (`admin`, or the
/// dashboard session); the tenant's hot index is dropped either way (a quarantined
/// tenant's index has no business staying in memory). The admin API and the
/// dashboard both come through here.
pub(crate) async fn set_quarantine(
    state: &AppState,
    actor: &str,
    rid: &RequestId,
    raw_id: &str,
    quarantined: bool,
) -> ApiResult<bulkhead_vault::Tenant> {
    let kind = if quarantined {
        EventKind::TenantQuarantine
    } else {
        EventKind::TenantRelease
    };
    let id = known_tenant(state, rid, kind, raw_id).await?;
    let tenant = match state.vault.set_quarantine(&id, quarantined).await {
        Ok(t) => t,
        Err(e) => return Err(refused(state, rid, kind, Some(&id), e).await),
    };
    state.retrieval.forget(&id);
    Trail::new(state, kind, actor.to_owned(), rid)
        .subject(Subject::new("tenant", id.as_str()))
        .record_admin(Some(&id))
        .await?;
    Ok(tenant)
}

pub async fn rotate_key(
    _: Admin,
    State(state): State<AppState>,
    Rid(rid): Rid,
    Path(id): Path<String>,
) -> ApiResult<Json<RotateKeyResponse>> {
    const KIND: EventKind = EventKind::TenantRotateKey;
    let id = known_tenant(&state, &rid, KIND, &id).await?;
    let version = match state.vault.rotate_key(&id).await {
        Ok(v) => v,
        Err(e) => return Err(refused(&state, &rid, KIND, Some(&id), e).await),
    };
    Trail::admin(&state, KIND, &rid)
        .subject(Subject::new("tenant", id.as_str()))
        .attr("key_version", Attr::Int(i64::from(version.get())))
        .record_admin(Some(&id))
        .await?;
    tracing::info!(tenant = %id, key_version = version.get(), "tenant data key rotated; re-sealing older records");
    state.spawn_reseal(id.clone());
    Ok(Json(RotateKeyResponse {
        tenant_id: id.to_string(),
        key_version: version.get(),
        resealing: true,
    }))
}
