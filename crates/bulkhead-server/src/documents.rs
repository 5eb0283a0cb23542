//! The tenant plane's documents: `/v1/documents`. The tenant is the API key's.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bulkhead_types::DocumentId;
use bulkhead_vault::NewDocument;

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

pub async fn create(
    Tenant(ctx): Tenant,
    State(state): State<AppState>,
    StrictJson(req): StrictJson<CreateDocumentRequest>,
) -> ApiResult<Response> {
    let new = NewDocument {
        id: req.id,
        text: req.text,
        metadata: req.metadata,
        ttl_secs: req.ttl_seconds,
    };
    let stored = state.vault.put_document(&ctx, new).await?;
    let body = CreateDocumentResponse {
        id: stored.id.to_string(),
        chunks: 0,
        created_at: rfc3339(stored.created_at),
        expires_at: stored.expires_at.map(rfc3339),
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub async fn show(
    Tenant(ctx): Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<DocumentResponse>> {
    let doc = state.vault.document(&ctx, &document_id(&id)?).await?;
    Ok(Json(DocumentResponse::from(&doc)))
}

pub async fn list(
    Tenant(ctx): Tenant,
    State(state): State<AppState>,
    uri: Uri,
) -> ApiResult<Json<DocumentListResponse>> {
    let page = page_query(&uri)?;
    let limit = page.limit.unwrap_or(20);
    let result = state
        .vault
        .list_documents(&ctx, page.cursor.as_deref(), limit)
        .await?;
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
    Path(id): Path<String>,
) -> ApiResult<Response> {
    state
        .vault
        .delete_document(&ctx, &document_id(&id)?)
        .await?;
    Ok(no_content())
}
