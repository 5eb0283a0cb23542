//! `POST /v1/search`: its wire types and handler over `bulkhead_app::retrieval`.
//!
//! There is no tenant filter anywhere here to forget: the index searched is the one
//! the cache holds under the API key's tenant, built only from that tenant's chunk
//! records, opened with that tenant's key.

use axum::Json;
use axum::extract::State;
use bulkhead_app::EventKind;
use bulkhead_audit::{Attr, Subject};
use bulkhead_index::{MetadataFilter, SearchMode};
use bulkhead_types::LogId;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub use bulkhead_app::retrieval::*;

use crate::AppState;
use crate::audit::{Rid, Trail};
use crate::error::{ApiError, ApiResult, ProblemKind};
use crate::extract::{StrictJson, Tenant};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    pub query: String,
    #[serde(default)]
    pub top_k: Option<usize>,
    /// Exact-match metadata conditions, all of which a chunk must meet.
    #[serde(default)]
    pub filter: Option<serde_json::Map<String, serde_json::Value>>,
    /// `bm25`, `vector` or `hybrid` [default: the server's; bm25 for a tenant
    /// whose region has no embedder].
    #[serde(default)]
    pub mode: Option<SearchMode>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SearchResult {
    pub document_id: String,
    pub chunk_id: String,
    pub text: String,
    pub score: f32,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SearchResponse {
    pub results: Vec<SearchResult>,
}

/// `POST /v1/search`: the tenant's own chunks, ranked; the returned chunk ids and
/// content hashes are logged before the texts leave.
pub async fn search(
    Tenant(ctx): Tenant,
    State(state): State<AppState>,
    Rid(rid): Rid,
    StrictJson(req): StrictJson<SearchRequest>,
) -> ApiResult<Json<SearchResponse>> {
    let retrieval = &state.retrieval;
    let query = Zeroizing::new(req.query);
    if query.trim().is_empty() || query.len() > retrieval.query_bytes_max {
        return Err(ApiError::new(
            ProblemKind::InvalidRequest,
            format!(
                "query must be 1 to {} bytes of text",
                retrieval.query_bytes_max
            ),
        ));
    }
    let top_k = req.top_k.unwrap_or(5);
    if top_k == 0 || top_k > retrieval.top_k_max {
        return Err(ApiError::new(
            ProblemKind::InvalidRequest,
            format!("top_k must be between 1 and {}", retrieval.top_k_max),
        ));
    }
    let filter = match &req.filter {
        Some(map) => {
            Some(MetadataFilter::from_json(map).map_err(|e| ApiError::from(index_error(e)))?)
        }
        None => None,
    };
    let found = retrieval
        .retrieve(&state, &ctx, &query, top_k, req.mode, filter.as_ref())
        .await?;
    let mode = found.mode;
    let mut results = Vec::with_capacity(found.hits.len());
    let mut trail = Trail::tenant(&state, &ctx, EventKind::Search, &rid);
    for hit in found.hits {
        trail = trail.subject(
            Subject::new("chunk", &*hit.chunk.chunk_id).with_content(hit.chunk.text.as_bytes()),
        );
        results.push(SearchResult {
            document_id: hit.chunk.document_id.clone(),
            chunk_id: hit.chunk.chunk_id.clone(),
            text: hit.chunk.text.to_string(),
            score: hit.score,
        });
    }
    trail
        .attr("count", Attr::Int(results.len() as i64))
        .attr("top_k", Attr::Int(top_k as i64))
        .attr("mode", Attr::Text(mode_name(mode).into()))
        .attr(
            "query_hash",
            Attr::Text(bulkhead_ledger::event::content_hash(query.as_bytes())),
        )
        .record(LogId::Tenant(ctx.tenant().clone()))
        .await?;
    Ok(Json(SearchResponse { results }))
}

/// The name the audit log records for a search mode (the same as serde's).
fn mode_name(mode: bulkhead_index::SearchMode) -> &'static str {
    match mode {
        bulkhead_index::SearchMode::Bm25 => "bm25",
        bulkhead_index::SearchMode::Vector => "vector",
        bulkhead_index::SearchMode::Hybrid => "hybrid",
    }
}
