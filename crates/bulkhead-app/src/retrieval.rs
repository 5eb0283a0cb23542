//! Tenant-scoped retrieval: chunking and embedding on ingest, the hot index
//! cache, and the search every caller (the search endpoint, the chat pipeline)
//! runs.
//!
//! There is no tenant filter anywhere here to forget: the index searched is the one
//! the cache holds under the API key's tenant, built only from that tenant's chunk
//! records, opened with that tenant's key.

use std::sync::Arc;

use bulkhead_index::{
    Chunker, Embedder, IndexCache, IndexConfig, IndexError, IndexedChunk, MetadataFilter, Query,
    SearchMode, TenantIndex,
};
use bulkhead_types::{DocumentId, TenantId};
use bulkhead_vault::{Chunk, NewChunk, TenantCtx, VaultError, chunk_id};
use zeroize::Zeroizing;

use crate::error::{AppError, AppResult};
use crate::services::Services;

/// How retrieval is set up; one per server.
#[derive(Debug)]
pub struct Retrieval {
    pub chunker: Chunker,
    /// `None`: BM25 only.
    pub embedder: Option<Arc<dyn Embedder>>,
    pub index: IndexConfig,
    pub cache: IndexCache,
    /// The mode of a search that names none.
    pub default_mode: SearchMode,
    pub top_k_max: usize,
    pub query_bytes_max: usize,
}

impl Retrieval {
    /// BM25 plus the built-in hashed n-gram vectors, default chunking, 256 MiB of
    /// hot indexes: what tests and a bare `bulkhead serve` use.
    pub fn with_defaults() -> Self {
        let embedder = bulkhead_index::HashedNgramEmbedder::new(256).expect("256 dimensions");
        Self {
            chunker: Chunker::new(bulkhead_index::ChunkerConfig::default())
                .expect("the default chunker config is valid"),
            index: IndexConfig {
                vector_dims: Some(256),
                ..IndexConfig::default()
            },
            embedder: Some(Arc::new(embedder)),
            cache: IndexCache::new(256 << 20),
            default_mode: SearchMode::Bm25,
            top_k_max: 50,
            query_bytes_max: 4096,
        }
    }

    /// Cuts and embeds a document's text (one embedder call, one tenant).
    pub async fn prepare(&self, tenant: &TenantId, text: &str) -> AppResult<Vec<NewChunk>> {
        let spans = self.chunker.split(text);
        let texts: Vec<&str> = spans.iter().map(|s| &text[s.start..s.end]).collect();
        let embeddings = match (&self.embedder, texts.is_empty()) {
            (Some(embedder), false) => Some(embedder.embed(tenant, &texts).await.map_err(|e| {
                tracing::warn!(tenant = %tenant, error = %e, "embedding failed; the document was not stored");
                AppError::unavailable("the embedder did not answer; retry later")
            })?),
            _ => None,
        };
        let mut embeddings = embeddings.map(Vec::into_iter);
        Ok(spans
            .iter()
            .map(|span| NewChunk {
                index: span.index,
                text: Zeroizing::new(text[span.start..span.end].to_owned()),
                embedding: embeddings.as_mut().and_then(Iterator::next),
            })
            .collect())
    }

    /// Adds a stored document's chunks to the tenant's index if it is hot; a cold
    /// tenant reads them from the store on its next load.
    pub async fn after_insert(
        &self,
        tenant: &TenantId,
        document: &DocumentId,
        metadata: &serde_json::Map<String, serde_json::Value>,
        chunks: &[NewChunk],
    ) {
        let Some(index) = self.cache.hot(tenant).await else {
            return;
        };
        let ids: Vec<String> = chunks.iter().map(|c| chunk_id(document, c.index)).collect();
        let views: Vec<IndexedChunk<'_>> = chunks
            .iter()
            .zip(&ids)
            .map(|(c, id)| IndexedChunk {
                chunk_id: id,
                document_id: document.as_str(),
                text: &c.text,
                metadata: Some(metadata),
                embedding: c.embedding.as_deref(),
            })
            .collect();
        match index.insert(&views) {
            Ok(_) => self.cache.refresh(tenant),
            Err(e) => {
                // The store has the chunks; a rebuilt index will too.
                tracing::warn!(tenant = %tenant, error = %e, "hot index rejected new chunks; rebuilding it on next use");
                self.cache.invalidate(tenant);
            }
        }
    }

    /// Removes a deleted document from the tenant's hot index, at once.
    pub async fn after_delete(&self, tenant: &TenantId, document: &DocumentId) {
        if let Some(index) = self.cache.hot(tenant).await
            && index.remove_document(document.as_str()).is_err()
        {
            self.cache.invalidate(tenant);
        }
    }

    /// Drops the tenant's index (erasure, quarantine, rotation).
    pub fn forget(&self, tenant: &TenantId) {
        self.cache.invalidate(tenant);
    }

    /// The tenant's best `top_k` chunks for a query, opened. Each was re-read from
    /// the store, which is the check that it still exists and has not expired: a
    /// deleted or expired document never comes back. The caller logs what it uses.
    pub async fn retrieve(
        &self,
        app: &Services,
        ctx: &TenantCtx,
        query: &str,
        top_k: usize,
        mode: SearchMode,
        filter: Option<&MetadataFilter>,
    ) -> AppResult<Vec<Retrieved>> {
        let embedding = match (mode, &self.embedder) {
            (SearchMode::Bm25, _) => None,
            (_, None) => {
                return Err(AppError::invalid(
                    "vector and hybrid search need an embedder; this server has none configured",
                ));
            }
            (_, Some(embedder)) => Some(
                embedder
                    .embed(ctx.tenant(), &[query])
                    .await
                    .map_err(|e| {
                        tracing::warn!(error = %e, "query embedding failed");
                        AppError::unavailable("the embedder did not answer; retry later")
                    })?
                    .pop()
                    .unwrap_or_default(),
            ),
        };
        let index = self.index_for(app, ctx).await?;
        // A few extra hits cover ones whose document expired since the index saw it.
        let hits = index
            .search(&Query {
                text: query,
                top_k: top_k + 8,
                filter,
                mode,
                embedding: embedding.as_deref(),
            })
            .map_err(index_error)?;
        let mut out = Vec::with_capacity(top_k);
        for hit in hits {
            if out.len() == top_k {
                break;
            }
            if let Some(chunk) = app.vault.chunk(ctx, &hit.chunk_id).await? {
                out.push(Retrieved {
                    chunk,
                    score: hit.score,
                });
            }
        }
        Ok(out)
    }

    async fn index_for(&self, app: &Services, ctx: &TenantCtx) -> AppResult<Arc<TenantIndex>> {
        let config = self.index;
        let store = app.vault.store();
        if store.is_shared() {
            // Another replica may have written this tenant's chunks since its
            // index was built here; one indexed count tells.
            let generation = store
                .record_generation(ctx.tenant(), bulkhead_types::RecordKind::CHUNK)
                .await
                .map_err(AppError::from)?;
            self.cache.observe_generation(ctx.tenant(), generation);
        }
        self.cache
            .get_or_load(ctx.tenant(), || async {
                let chunks = app.vault.chunks(ctx).await?;
                tokio::task::spawn_blocking(move || build(config, &chunks))
                    .await
                    .map_err(|e| VaultError::Invalid(format!("index build task: {e}")))?
            })
            .await
            .map_err(AppError::from)
    }
}

fn build(config: IndexConfig, chunks: &[Chunk]) -> Result<TenantIndex, VaultError> {
    let views: Vec<IndexedChunk<'_>> = chunks
        .iter()
        .map(|c| IndexedChunk {
            chunk_id: &c.chunk_id,
            document_id: &c.document_id,
            text: &c.text,
            metadata: Some(&c.metadata),
            embedding: c.embedding.as_deref().map(Vec::as_slice),
        })
        .collect();
    TenantIndex::build(config, &views).map_err(|e| {
        tracing::error!(error = %e, "a tenant's index could not be built from its chunks");
        VaultError::Invalid(format!("the index could not be built: {e}"))
    })
}

/// A chunk found for a query, opened (its text is wiped when dropped).
#[derive(Debug)]
pub struct Retrieved {
    pub chunk: Chunk,
    pub score: f32,
}

pub fn index_error(e: IndexError) -> AppError {
    match e {
        IndexError::TopK | IndexError::FilterValue | IndexError::VectorsNotConfigured => {
            AppError::Invalid(e.to_string())
        }
        other => {
            tracing::error!(error = %other, "search failed inside the index");
            AppError::Internal
        }
    }
}
