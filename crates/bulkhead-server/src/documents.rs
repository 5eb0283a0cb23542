//! The tenant plane's documents: `/v1/documents`. The tenant is the API key's.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bulkhead_app::EventKind;
use bulkhead_audit::{Attr, Subject};
use bulkhead_types::{DocumentId, LogId};
use bulkhead_vault::{NewDocument, TenantCtx, VaultError};

use crate::audit::{RequestId, Rid, Trail, denial_reason};
use crate::error::{ApiError, ApiResult, ProblemKind};
use crate::extract::{StrictJson, Tenant};
use crate::wire::{
    CreateDocumentRequest, CreateDocumentResponse, DocumentListResponse, DocumentResponse,
    DocumentSummary, PageQuery, rfc3339,
};
use crate::{AppState, no_content};

pub(crate) fn page_query(uri: &Uri) -> ApiResult<PageQuery> {
    let Query(page) = Query::<PageQuery>::try_from_uri(uri)
        .map_err(|e| ApiError::new(ProblemKind::InvalidRequest, e.body_text()))?;
    if page.limit == Some(0) {
        return Err(ApiError::new(
            ProblemKind::InvalidRequest,
            "limit must be at least 1",
        ));
    }
    Ok(page)
}

/// A malformed id cannot name a document: same 404 as a missing one.
fn document_id(raw: &str) -> ApiResult<DocumentId> {
    DocumentId::parse(raw).map_err(|_| ApiError::not_found())
}

/// Logs a tenant's document access that was refused (a missing or foreign id, an
/// id taken) and hands the error back.
async fn refused(
    state: &AppState,
    ctx: &TenantCtx,
    rid: &RequestId,
    kind: EventKind,
    id: Option<&DocumentId>,
    e: VaultError,
) -> ApiError {
    if let Some(reason) = denial_reason(&e) {
        let mut trail = Trail::tenant(state, ctx, kind, rid).denied(reason);
        if let Some(id) = id {
            trail = trail.subject(Subject::new("document", id.as_str()));
        }
        if let Err(audit) = trail.record(LogId::Tenant(ctx.tenant().clone())).await {
            return audit.into();
        }
    }
    e.into()
}

/// The document a path names, or a logged 404: a malformed id is refused like a
/// missing one, and both are denied accesses.
async fn named_document(
    state: &AppState,
    ctx: &TenantCtx,
    rid: &RequestId,
    kind: EventKind,
    raw: &str,
) -> ApiResult<DocumentId> {
    match document_id(raw) {
        Ok(id) => Ok(id),
        Err(_) => Err(refused(state, ctx, rid, kind, None, VaultError::NotFound).await),
    }
}

pub async fn create(
    Tenant(ctx): Tenant,
    State(state): State<AppState>,
    Rid(rid): Rid,
    StrictJson(req): StrictJson<CreateDocumentRequest>,
) -> ApiResult<Response> {
    let content = Subject::new("document", "").with_content(req.text.as_bytes());
    let requested_id = req.id.clone();
    let metadata = req.metadata.clone().unwrap_or_default();
    let chunks = state.retrieval.prepare(ctx.tenant(), &req.text).await?;
    let text = zeroize::Zeroizing::new(req.text.clone());
    let ttl_secs = pack_ttl(&state, &ctx, req.ttl_seconds).await?;
    let new = NewDocument {
        id: req.id,
        text: req.text,
        metadata: req.metadata,
        ttl_secs,
    };
    let stored = match state
        .vault
        .put_document_chunked(&ctx, new, chunks_for_store(&chunks))
        .await
    {
        Ok(stored) => stored,
        Err(e) => {
            return Err(refused(
                &state,
                &ctx,
                &rid,
                EventKind::DocumentCreate,
                requested_id.as_ref(),
                e,
            )
            .await);
        }
    };
    state
        .retrieval
        .after_insert(ctx.tenant(), &stored.id, &metadata, &chunks)
        .await;
    state.guard.index(ctx.tenant(), &stored.id, &text).await;
    Trail::tenant(&state, &ctx, EventKind::DocumentCreate, &rid)
        .subject(Subject {
            id: stored.id.to_string(),
            ..content
        })
        .attr("chunks", Attr::Int(chunks.len() as i64))
        .record(LogId::Tenant(ctx.tenant().clone()))
        .await?;
    let body = CreateDocumentResponse {
        id: stored.id.to_string(),
        chunks: u32::try_from(chunks.len()).unwrap_or(u32::MAX),
        created_at: rfc3339(stored.created_at),
        expires_at: stored.expires_at.map(rfc3339),
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// A document's TTL under the tenant's pack: the pack's default when the client
/// names none, and never beyond the pack's maximum.
async fn pack_ttl(state: &AppState, ctx: &TenantCtx, asked: Option<u64>) -> ApiResult<Option<u64>> {
    let pack = state
        .packs
        .for_tenant(&state.vault.tenant(ctx.tenant()).await?.policy);
    let r = &pack.retention;
    match (asked, r.document_ttl_secs_max) {
        (Some(t), Some(max)) if t > max => Err(ApiError::new(
            ProblemKind::InvalidRequest,
            format!(
                "ttl_seconds may be at most {max} under the tenant's policy `{}`",
                pack.name
            ),
        )),
        (Some(t), _) => Ok(Some(t)),
        (None, max) => Ok(r.document_ttl_secs_default.or(max)),
    }
}

pub async fn show(
    Tenant(ctx): Tenant,
    State(state): State<AppState>,
    Rid(rid): Rid,
    Path(id): Path<String>,
) -> ApiResult<Json<DocumentResponse>> {
    let id = named_document(&state, &ctx, &rid, EventKind::DocumentRead, &id).await?;
    let found = state.vault.document(&ctx, &id).await;
    // Test-only: the forgotten tenant filter `bulkhead probe` must catch.
    #[cfg(feature = "weakened-isolation-for-tests")]
    let found = match found {
        Err(bulkhead_vault::VaultError::NotFound) if state.weakened => {
            crate::weakened::document_anywhere(&state.vault, &id)
                .await
                .ok_or(bulkhead_vault::VaultError::NotFound)
        }
        other => other,
    };
    let doc = match found {
        Ok(doc) => doc,
        Err(e) => {
            return Err(refused(&state, &ctx, &rid, EventKind::DocumentRead, Some(&id), e).await);
        }
    };
    // The content leaves only once its read is durably logged.
    Trail::tenant(&state, &ctx, EventKind::DocumentRead, &rid)
        .subject(Subject::new("document", id.as_str()).with_content(doc.text.as_bytes()))
        .record(LogId::Tenant(ctx.tenant().clone()))
        .await?;
    Ok(Json(DocumentResponse::from(&doc)))
}

pub async fn list(
    Tenant(ctx): Tenant,
    State(state): State<AppState>,
    Rid(rid): Rid,
    uri: Uri,
) -> ApiResult<Json<DocumentListResponse>> {
    let page = page_query(&uri)?;
    let limit = page.limit.unwrap_or(20);
    let result = state
        .vault
        .list_documents(&ctx, page.cursor.as_deref(), limit)
        .await?;
    let mut trail = Trail::tenant(&state, &ctx, EventKind::DocumentList, &rid)
        .attr("count", Attr::Int(result.documents.len() as i64));
    for d in &result.documents {
        trail =
            trail.subject(Subject::new("document", d.id.as_str()).with_content(d.text.as_bytes()));
    }
    trail.record(LogId::Tenant(ctx.tenant().clone())).await?;
    let documents = result
        .documents
        .iter()
        .map(|d| DocumentSummary {
            id: d.id.to_string(),
            text_bytes: d.text.len(),
            metadata: d.metadata.clone(),
            created_at: rfc3339(d.created_at),
            expires_at: d.expires_at.map(rfc3339),
        })
        .collect();
    Ok(Json(DocumentListResponse {
        documents,
        next_cursor: result.next_cursor,
    }))
}

pub async fn remove(
    Tenant(ctx): Tenant,
    State(state): State<AppState>,
    Rid(rid): Rid,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = named_document(&state, &ctx, &rid, EventKind::DocumentDelete, &id).await?;
    // The text is needed to take exactly this document's fingerprints out of the
    // guard's map.
    let doc = match state.vault.document(&ctx, &id).await {
        Ok(doc) => doc,
        Err(e) => {
            return Err(refused(&state, &ctx, &rid, EventKind::DocumentDelete, Some(&id), e).await);
        }
    };
    if let Err(e) = state.vault.delete_document(&ctx, &id).await {
        return Err(refused(&state, &ctx, &rid, EventKind::DocumentDelete, Some(&id), e).await);
    }
    state.retrieval.after_delete(ctx.tenant(), &id).await;
    state.guard.unindex(ctx.tenant(), &id, &doc.text);
    Trail::tenant(&state, &ctx, EventKind::DocumentDelete, &rid)
        .subject(Subject::new("document", id.as_str()))
        .record(LogId::Tenant(ctx.tenant().clone()))
        .await?;
    Ok(no_content())
}

/// The vault takes its own copies of the chunks (it seals and wipes them); the
/// originals stay for the hot index.
fn chunks_for_store(chunks: &[bulkhead_vault::NewChunk]) -> Vec<bulkhead_vault::NewChunk> {
    chunks
        .iter()
        .map(|c| bulkhead_vault::NewChunk {
            index: c.index,
            text: c.text.clone(),
            embedding: c.embedding.clone(),
        })
        .collect()
}
