//! `POST /v1/search`'s answer, as clients read it; mirrors the server's
//! `SearchResponse` (crates/bulkhead-server/src/retrieval.rs).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SearchResponse {
    pub results: Vec<SearchResult>,
}

/// One matching chunk of one of the caller's own documents.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SearchResult {
    pub document_id: String,
    pub chunk_id: String,
    pub text: String,
    pub score: f32,
}
