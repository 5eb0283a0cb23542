//! The tenant plane's documents: `/v1/documents` over `bulkhead_app::documents`.
//! The tenant is the API key's.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bulkhead_app::documents::{self, DocumentInput};

use crate::audit::Rid;
use crate::error::{ApiError, ApiResult, ProblemKind};
use crate::extract::{StrictJson, Tenant};
use crate::wire::{
    CreateDocumentRequest, CreateDocumentResponse, DocumentListResponse, DocumentResponse,
    DocumentSummary, PageQuery, document_response, rfc3339,
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

pub async fn create(
    Tenant(ctx): Tenant,
    State(state): State<AppState>,
    Rid(rid): Rid,
    StrictJson(req): StrictJson<CreateDocumentRequest>,
) -> ApiResult<Response> {
    let input = DocumentInput {
        id: req.id,
        text: req.text,
        metadata: req.metadata,
        ttl_seconds: req.ttl_seconds,
    };
    let (stored, chunks) = documents::create(&state, &ctx, &rid, input).await?;
    let body = CreateDocumentResponse {
        id: stored.id.to_string(),
        chunks: u32::try_from(chunks).unwrap_or(u32::MAX),
        created_at: rfc3339(stored.created_at),
        expires_at: stored.expires_at.map(rfc3339),
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub async fn show(
    Tenant(ctx): Tenant,
    State(state): State<AppState>,
    Rid(rid): Rid,
    Path(id): Path<String>,
) -> ApiResult<Json<DocumentResponse>> {
    let doc = documents::read(&state, &ctx, &rid, &id).await?;
    Ok(Json(document_response(&doc)))
}

pub async fn list(
    Tenant(ctx): Tenant,
    State(state): State<AppState>,
    Rid(rid): Rid,
    uri: Uri,
) -> ApiResult<Json<DocumentListResponse>> {
    let page = page_query(&uri)?;
    let limit = page.limit.unwrap_or(20);
    let result = documents::list(&state, &ctx, &rid, page.cursor.as_deref(), limit).await?;
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
    documents::remove(&state, &ctx, &rid, &id).await?;
    Ok(no_content())
}
