//! The operator's tenant lifecycle: create, change pack or model allow-list,
//! issue, revoke and quarantine keys, quarantine the tenant, rotate its data key,
//! and crypto-shred it with a receipt the operator log holds.
//!
//! Every action is logged in the operator log and, when it concerns one tenant,
//! in that tenant's own log. A malformed, unknown or erased tenant or key id is
//! the same `NotFound`, logged as a denied action.

use bulkhead_audit::{Attr, Subject};
use bulkhead_ledger::event::AuditEvent;
use bulkhead_types::{ApiKeyId, KeyVersion, LogId, PolicyName, Region, TenantId};
use bulkhead_vault::{IssuedKey, NewTenant, Tenant, VaultError};

use crate::error::{AppError, AppResult};
use crate::kinds::EventKind;
use crate::services::Services;
use crate::trail::{RequestId, Trail, denial_reason};

/// Models one allow-list may name, at most.
const ALLOW_LIST_MAX: usize = 1000;

/// A tenant as the operator asks for it.
#[derive(Debug)]
pub struct TenantInput {
    pub name: String,
    pub region: Option<Region>,
    pub policy: Option<PolicyName>,
    pub models: Option<Vec<String>>,
}

/// A malformed tenant id names no tenant: the same `NotFound` as a missing one.
pub fn tenant_id(raw: &str) -> AppResult<TenantId> {
    TenantId::parse(raw).map_err(|_| AppError::NotFound)
}

/// Logs a refused operator action (an unknown tenant or key) in the operator
/// log and hands the error back.
pub async fn refused(
    app: &Services,
    rid: &RequestId,
    kind: EventKind,
    tenant: Option<&TenantId>,
    e: VaultError,
) -> AppError {
    if let Some(reason) = denial_reason(&e) {
        let mut trail = Trail::admin(app, kind, rid).denied(reason);
        if let Some(tenant) = tenant {
            trail = trail.about_tenant(tenant);
        }
        if let Err(audit) = trail.record(LogId::Operator).await {
            return audit;
        }
    }
    e.into()
}

/// The tenant an id names, or a logged `NotFound`.
pub async fn known_tenant(
    app: &Services,
    rid: &RequestId,
    kind: EventKind,
    raw: &str,
) -> AppResult<TenantId> {
    match tenant_id(raw) {
        Ok(id) => Ok(id),
        Err(_) => Err(refused(app, rid, kind, None, VaultError::NotFound).await),
    }
}

/// The tenant an id names, read, or a logged `NotFound`.
pub async fn read_known(
    app: &Services,
    rid: &RequestId,
    kind: EventKind,
    raw: &str,
) -> AppResult<Tenant> {
    let id = known_tenant(app, rid, kind, raw).await?;
    match app.vault.tenant(&id).await {
        Ok(t) => Ok(t),
        Err(e) => Err(refused(app, rid, kind, Some(&id), e).await),
    }
}

/// Creates a tenant with its first canary; the first entry of its log is its
/// creation.
pub async fn create(app: &Services, rid: &RequestId, input: TenantInput) -> AppResult<Tenant> {
    let region = input.region.unwrap_or_default();
    let models = checked_models(app, &region, input.models)?;
    let policy = input.policy.unwrap_or_default();
    checked_pack(app, &policy, &region)?;
    let new = NewTenant {
        name: input.name,
        region,
        policy,
        models,
    };
    let tenant = app.vault.create_tenant(new).await?;
    app.guard.seed_tenant(&app.vault, &tenant.id).await?;
    Trail::admin(app, EventKind::TenantCreate, rid)
        .subject(Subject::new("tenant", tenant.id.as_str()))
        .attr("region", Attr::Text(tenant.region.to_string()))
        .attr("policy", Attr::Text(tenant.policy.to_string()))
        .record_admin(Some(&tenant.id))
        .await?;
    tracing::info!(tenant = %tenant.id, region = %tenant.region, policy = %tenant.policy, "tenant created");
    Ok(tenant)
}

/// An allow-list must name models that exist in the tenant's region: a typo would
/// otherwise lock the tenant out of the model it was meant to have.
fn checked_models(
    app: &Services,
    region: &Region,
    models: Option<Vec<String>>,
) -> AppResult<Option<Vec<String>>> {
    let Some(mut models) = models else {
        return Ok(None);
    };
    if models.len() > ALLOW_LIST_MAX {
        return Err(AppError::invalid(format!(
            "models may name at most {ALLOW_LIST_MAX} models"
        )));
    }
    models.sort();
    models.dedup();
    if let Some(unknown) = models
        .iter()
        .find(|m| !app.gateway.gateway.offers(region, m))
    {
        return Err(AppError::invalid(format!(
            "model `{unknown}` is not offered by any upstream in region `{region}`"
        )));
    }
    Ok(Some(models))
}

/// A pack must exist, and allow the tenant's region.
fn checked_pack(app: &Services, policy: &PolicyName, region: &Region) -> AppResult<()> {
    let Some(pack) = app.packs.get(policy.as_str()) else {
        let known: Vec<&str> = app.packs.names().collect();
        return Err(AppError::invalid(format!(
            "policy `{policy}` is not a pack of this server; known: {}",
            known.join(", ")
        )));
    };
    if !pack.residency.allows(region) {
        return Err(AppError::invalid(format!(
            "policy `{policy}` requires a region matching {}; `{region}` does not",
            pack.residency.regions.join(" or ")
        )));
    }
    Ok(())
}

/// An audited change of the tenant's compliance pack. It applies to the next
/// request; stored records keep the TTL they were written with.
pub async fn set_policy(
    app: &Services,
    rid: &RequestId,
    raw_id: &str,
    policy: &PolicyName,
) -> AppResult<Tenant> {
    const KIND: EventKind = EventKind::TenantPolicy;
    let tenant = read_known(app, rid, KIND, raw_id).await?;
    let id = tenant.id.clone();
    checked_pack(app, policy, &tenant.region)?;
    let updated = match app.vault.set_tenant_policy(&id, policy).await {
        Ok(t) => t,
        Err(e) => return Err(refused(app, rid, KIND, Some(&id), e).await),
    };
    Trail::admin(app, KIND, rid)
        .subject(Subject::new("tenant", id.as_str()))
        .attr("from", Attr::Text(tenant.policy.to_string()))
        .attr("to", Attr::Text(policy.to_string()))
        .record_admin(Some(&id))
        .await?;
    tracing::info!(tenant = %id, from = %tenant.policy, to = %policy, "tenant policy pack changed");
    app.quotas.invalidate(&id);
    Ok(updated)
}

/// Replaces a tenant's own quotas (absent fields: its pack's or the server's
/// apply); audited in the operator's log with the new values.
pub async fn set_quotas(
    app: &Services,
    rid: &RequestId,
    raw_id: &str,
    quotas: bulkhead_api::quotas::Quotas,
) -> AppResult<bulkhead_api::quotas::UsageResponse> {
    const KIND: EventKind = EventKind::TenantQuotas;
    let tenant = read_known(app, rid, KIND, raw_id).await?;
    let id = tenant.id.clone();
    app.quotas.set_tenant_quotas(&id, quotas).await?;
    let values = serde_json::to_string(&quotas).unwrap_or_default();
    Trail::admin(app, KIND, rid)
        .subject(Subject::new("tenant", id.as_str()))
        .attr("quotas", Attr::Text(values.clone()))
        .record_admin(Some(&id))
        .await?;
    tracing::info!(tenant = %id, quotas = %values, "tenant quotas changed");
    app.quotas.usage(&id).await
}

/// A tenant's usage against its effective quotas, for the operator.
pub async fn usage(
    app: &Services,
    rid: &RequestId,
    raw_id: &str,
) -> AppResult<bulkhead_api::quotas::UsageResponse> {
    let tenant = read_known(app, rid, EventKind::TenantQuotas, raw_id).await?;
    app.quotas.usage(&tenant.id).await
}

/// Sets the tenant's model allow-list (`None`: every model of its region).
pub async fn set_models(
    app: &Services,
    rid: &RequestId,
    raw_id: &str,
    models: Option<Vec<String>>,
) -> AppResult<Tenant> {
    const KIND: EventKind = EventKind::TenantModels;
    let tenant = read_known(app, rid, KIND, raw_id).await?;
    let id = tenant.id.clone();
    let models = checked_models(app, &tenant.region, models)?;
    let tenant = match app.vault.set_tenant_models(&id, models.clone()).await {
        Ok(t) => t,
        Err(e) => return Err(refused(app, rid, KIND, Some(&id), e).await),
    };
    let listed = models.as_ref().map_or("*".to_owned(), |m| m.join(","));
    Trail::admin(app, KIND, rid)
        .subject(Subject::new("tenant", id.as_str()))
        .attr("models", Attr::Text(listed))
        .record_admin(Some(&id))
        .await?;
    Ok(tenant)
}

/// Issues an API key for the tenant; its secret is in the answer only.
pub async fn issue_key(
    app: &Services,
    rid: &RequestId,
    raw_id: &str,
    ttl_seconds: Option<u64>,
) -> AppResult<IssuedKey> {
    const KIND: EventKind = EventKind::KeyIssue;
    let id = known_tenant(app, rid, KIND, raw_id).await?;
    let issued = match app.vault.issue_api_key(&id, ttl_seconds).await {
        Ok(issued) => issued,
        Err(e) => return Err(refused(app, rid, KIND, Some(&id), e).await),
    };
    let mut trail =
        Trail::admin(app, KIND, rid).subject(Subject::new("key", issued.key_id.as_str()));
    if let Some(expires_at) = issued.expires_at {
        trail = trail.attr("expires_at", Attr::Text(expires_at.rfc3339()));
    }
    trail.record_admin(Some(&id)).await?;
    tracing::info!(tenant = %id, key_id = %issued.key_id, "API key issued");
    Ok(issued)
}

/// The tenant and key two ids name, or a logged `NotFound`.
async fn known_key(
    app: &Services,
    rid: &RequestId,
    kind: EventKind,
    raw_id: &str,
    raw_key: &str,
) -> AppResult<(TenantId, ApiKeyId)> {
    let id = known_tenant(app, rid, kind, raw_id).await?;
    match ApiKeyId::parse(raw_key) {
        Ok(key_id) => Ok((id, key_id)),
        Err(_) => Err(refused(app, rid, kind, Some(&id), VaultError::NotFound).await),
    }
}

/// Revokes one of the tenant's keys.
pub async fn revoke_key(
    app: &Services,
    rid: &RequestId,
    raw_id: &str,
    raw_key: &str,
) -> AppResult<()> {
    const KIND: EventKind = EventKind::KeyRevoke;
    let (id, key_id) = known_key(app, rid, KIND, raw_id, raw_key).await?;
    if let Err(e) = app.vault.revoke_api_key(&id, &key_id).await {
        return Err(refused(app, rid, KIND, Some(&id), e).await);
    }
    Trail::admin(app, KIND, rid)
        .subject(Subject::new("key", key_id.as_str()))
        .record_admin(Some(&id))
        .await?;
    tracing::info!(tenant = %id, key_id = %key_id, "API key revoked");
    Ok(())
}

/// Quarantines one key (it gets 403 until released) or releases it; the
/// tenant's other keys keep working.
pub async fn set_key_quarantine(
    app: &Services,
    rid: &RequestId,
    raw_id: &str,
    raw_key: &str,
    quarantined: bool,
) -> AppResult<()> {
    let kind = if quarantined {
        EventKind::KeyQuarantine
    } else {
        EventKind::KeyRelease
    };
    let (id, key_id) = known_key(app, rid, kind, raw_id, raw_key).await?;
    if let Err(e) = app
        .vault
        .set_key_quarantine(&id, &key_id, quarantined)
        .await
    {
        return Err(refused(app, rid, kind, Some(&id), e).await);
    }
    Trail::admin(app, kind, rid)
        .subject(Subject::new("key", key_id.as_str()))
        .record_admin(Some(&id))
        .await?;
    if quarantined {
        tracing::warn!(tenant = %id, key_id = %key_id, "API key quarantined: it gets 403 until released");
    } else {
        tracing::info!(tenant = %id, key_id = %key_id, "API key released from quarantine");
    }
    Ok(())
}

/// Quarantine or release, logged in both logs with `actor` (`admin`, or the
/// dashboard session); the tenant's hot index is dropped either way (a
/// quarantined tenant's index has no business staying in memory).
pub async fn set_quarantine(
    app: &Services,
    actor: &str,
    rid: &RequestId,
    raw_id: &str,
    quarantined: bool,
) -> AppResult<Tenant> {
    let kind = if quarantined {
        EventKind::TenantQuarantine
    } else {
        EventKind::TenantRelease
    };
    let id = known_tenant(app, rid, kind, raw_id).await?;
    let tenant = match app.vault.set_quarantine(&id, quarantined).await {
        Ok(t) => t,
        Err(e) => return Err(refused(app, rid, kind, Some(&id), e).await),
    };
    app.retrieval.forget(&id);
    Trail::new(app, kind, actor.to_owned(), rid)
        .subject(Subject::new("tenant", id.as_str()))
        .record_admin(Some(&id))
        .await?;
    Ok(tenant)
}

/// Rotates the tenant's data key and re-seals its older records in the
/// background; returns the new key version.
pub async fn rotate_key(
    app: &Services,
    rid: &RequestId,
    raw_id: &str,
) -> AppResult<(TenantId, KeyVersion)> {
    const KIND: EventKind = EventKind::TenantRotateKey;
    let id = known_tenant(app, rid, KIND, raw_id).await?;
    let version = match app.vault.rotate_key(&id).await {
        Ok(v) => v,
        Err(e) => return Err(refused(app, rid, KIND, Some(&id), e).await),
    };
    Trail::admin(app, KIND, rid)
        .subject(Subject::new("tenant", id.as_str()))
        .attr("key_version", Attr::Int(i64::from(version.get())))
        .record_admin(Some(&id))
        .await?;
    tracing::info!(tenant = %id, key_version = version.get(), "tenant data key rotated; re-sealing older records");
    crate::app::spawn_reseal(std::sync::Arc::clone(&app.vault), id.clone());
    Ok((id, version))
}

/// A crypto-shred done: the receipt's statement, its hash, and the proof that
/// the operator log holds it.
#[derive(Debug)]
pub struct Erasure {
    /// The receipt's fields, as canonical JSON hashes them.
    pub statement: serde_json::Value,
    pub receipt_sha256: String,
    /// The operator-log entry that records the erasure.
    pub index: u64,
    pub event: AuditEvent,
    pub leaf_hash: bulkhead_ledger::Hash,
    pub proof: Vec<bulkhead_ledger::Hash>,
    /// The signed checkpoint the proof is against.
    pub checkpoint: String,
}

/// Crypto-shreds the tenant: its data keys are destroyed, its records and keys
/// deleted, the guard and the hot index forget it. The tenant's own log can no
/// longer be written (its keys are gone); the operator log records the erasure
/// with the hash of the receipt, so the receipt stays verifiable against the
/// signed log for as long as it exists.
pub async fn erase(app: &Services, rid: &RequestId, raw_id: &str) -> AppResult<Erasure> {
    const KIND: EventKind = EventKind::TenantErase;
    let id = known_tenant(app, rid, KIND, raw_id).await?;
    let receipt = match app.vault.erase_tenant(&id).await {
        Ok(r) => r,
        Err(e) => return Err(refused(app, rid, KIND, Some(&id), e).await),
    };
    app.forget_tenant(&id);
    app.guard.forget(&id).await;
    let statement = serde_json::json!({
        "tenant_id": receipt.tenant_id,
        "erased_at": receipt.erased_at.rfc3339(),
        "data_keys_destroyed": receipt.data_keys_destroyed,
        "records_deleted": receipt.records_deleted,
        "api_keys_deleted": receipt.api_keys_deleted,
        "method": receipt.method,
        "server": app.audit.server_name(),
    });
    let statement_bytes =
        bulkhead_ledger::event::canonical_json(&statement).map_err(|_| AppError::Internal)?;
    let receipt_sha256 = bulkhead_ledger::hex(&bulkhead_ledger::sha256(&statement_bytes));
    let trail = Trail::admin(app, KIND, rid)
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
    let index = trail.record_with(LogId::Operator, Vec::new()).await?;
    let signed = app.audit.sign(&LogId::Operator).await?;
    let (leaf_hash, proof) = app
        .audit
        .inclusion_proof(&LogId::Operator, index, signed.checkpoint.size)
        .await?;
    tracing::warn!(tenant = %id, records = receipt.records_deleted, keys = receipt.data_keys_destroyed,
        operator_log_index = index, "tenant crypto-shredded; the receipt is verifiable with `bulkhead audit verify-receipt`");
    Ok(Erasure {
        statement,
        receipt_sha256,
        index,
        event,
        leaf_hash,
        proof,
        checkpoint: signed.note,
    })
}
