//! Tenant-scoped retrieval: chunking and embedding on ingest, the hot index
//! cache, and the search every caller (the search endpoint, the chat pipeline)
//! runs.
//!
//! There is no tenant filter anywhere here to forget: the index searched is the one
//! the cache holds under the API key's tenant, built only from that tenant's chunk
//! records, opened with that tenant's key.
//!
//! Nor is there an embedder to pick by hand: `Embedders` hands out the one of
//! the tenant's region, and a tenant whose region has none gets no vectors
//! rather than another region's embedder.
//!
//! Must never: send a tenant's text (a chunk, a query) to an embedder that does
//! not serve the tenant's region.

use std::collections::HashMap;
use std::sync::Arc;

use bulkhead_index::{
    Chunker, Embedder, IndexCache, IndexConfig, IndexError, IndexedChunk, MetadataFilter, Query,
    SearchMode, TenantIndex,
};
use bulkhead_types::{DocumentId, Region, TenantId};
use bulkhead_vault::{Chunk, NewChunk, TenantCtx, VaultError, chunk_id};
use zeroize::Zeroizing;

use crate::error::{AppError, AppResult};
use crate::services::Services;

/// How retrieval is set up; one per server.
#[derive(Debug)]
pub struct Retrieval {
    pub chunker: Chunker,
    /// The embedders and the regions they serve; none: BM25 only.
    pub embedders: Embedders,
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
            embedders: Embedders::every_region(embedder),
            cache: IndexCache::new(256 << 20),
            default_mode: SearchMode::Bm25,
            top_k_max: 50,
            query_bytes_max: 4096,
        }
    }

    /// The embedder this tenant's text may go to: the one of its region (the
    /// tenant is looked up only when embedders are by region).
    pub async fn embedder_for(
        &self,
        app: &Services,
        tenant: &TenantId,
    ) -> AppResult<TenantEmbedder> {
        if !self.embedders.is_by_region() {
            return Ok(self.embedders.for_region(&Region::default()));
        }
        let region = app.vault.tenant(tenant).await?.region;
        Ok(self.embedders.for_region(&region))
    }

    /// Cuts a document's text and embeds it with `embedder` (one call, one
    /// tenant); without an embedder the chunks have no vectors (BM25 only).
    pub async fn prepare(
        &self,
        tenant: &TenantId,
        embedder: Option<&Arc<dyn Embedder>>,
        text: &str,
    ) -> AppResult<Vec<NewChunk>> {
        let spans = self.chunker.split(text);
        let texts: Vec<&str> = spans.iter().map(|s| &text[s.start..s.end]).collect();
        let embeddings = match (embedder, texts.is_empty()) {
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

    /// The tenant's best `top_k` chunks for a query, opened, and the mode they
    /// were ranked by. Each was re-read from the store, which is the check that
    /// it still exists and has not expired: a deleted or expired document never
    /// comes back. The caller logs what it uses.
    ///
    /// `mode` `None` is the server's default, which becomes BM25 for a tenant
    /// whose region has no embedder (its chunks have no vectors); a vector or
    /// hybrid search asked for by name is refused for such a tenant.
    pub async fn retrieve(
        &self,
        app: &Services,
        ctx: &TenantCtx,
        query: &str,
        top_k: usize,
        mode: Option<SearchMode>,
        filter: Option<&MetadataFilter>,
    ) -> AppResult<Found> {
        let bm25 = mode.unwrap_or(self.default_mode) == SearchMode::Bm25;
        let (mode, embedder) = match bm25 {
            true => (SearchMode::Bm25, None),
            false => {
                let found = self.embedder_for(app, ctx.tenant()).await?;
                match (mode, found.embedder()) {
                    (_, Some(e)) => (mode.unwrap_or(self.default_mode), Some(Arc::clone(e))),
                    (None, None) => (SearchMode::Bm25, None),
                    (Some(_), None) => return Err(found.refusal()),
                }
            }
        };
        let embedding = match embedder {
            None => None,
            Some(embedder) => Some(
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
        Ok(Found { hits: out, mode })
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
            .get_or_load(ctx.tenant(), || build(app, ctx, config))
            .await
            .map_err(AppError::from)
    }
}

/// Chunks read per page while an index is built: the opened texts and vectors
/// of one page are all a build holds beside the index itself, whatever the
/// tenant stores.
const INDEX_BUILD_PAGE: u32 = 256;

/// Builds a tenant's index from its stored chunks, page by page.
async fn build(
    app: &Services,
    ctx: &TenantCtx,
    config: IndexConfig,
) -> Result<TenantIndex, VaultError> {
    let failed = |e: bulkhead_index::IndexError| {
        tracing::error!(error = %e, "a tenant's index could not be built from its chunks");
        VaultError::Invalid(format!("the index could not be built: {e}"))
    };
    let index = Arc::new(TenantIndex::new(config).map_err(failed)?);
    let mut after = 0;
    loop {
        let page = app.vault.chunks_page(ctx, after, INDEX_BUILD_PAGE).await?;
        let next = page.next;
        let into = Arc::clone(&index);
        tokio::task::spawn_blocking(move || into.insert(&indexed(&page.items)).map(drop))
            .await
            .map_err(|e| VaultError::Invalid(format!("index build task: {e}")))?
            .map_err(failed)?;
        match next {
            Some(next) => after = next,
            None => break,
        }
    }
    // Every page's task has finished, so this is the only handle left.
    Arc::try_unwrap(index).map_err(|_| VaultError::Invalid("index build: still shared".into()))
}

fn indexed(chunks: &[Chunk]) -> Vec<IndexedChunk<'_>> {
    chunks
        .iter()
        .map(|c| IndexedChunk {
            chunk_id: &c.chunk_id,
            document_id: &c.document_id,
            text: &c.text,
            metadata: Some(&c.metadata),
            embedding: c.embedding.as_deref().map(Vec::as_slice),
        })
        .collect()
}

/// What a search found, and the mode it ranked by (the server's default may
/// have become BM25 for this tenant).
#[derive(Debug)]
pub struct Found {
    pub hits: Vec<Retrieved>,
    pub mode: SearchMode,
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

/// The embedders of a server and the regions each serves. A tenant's text goes
/// only to the embedder of its region: an HTTP embedder is a service somewhere,
/// and sending a tenant's documents or queries to another region's service would
/// move them out of their residency region. The built-in hashed embedder runs in
/// this process, so it serves every region (no text leaves).
#[derive(Debug, Clone, Default)]
pub struct Embedders {
    serves: Serves,
}

#[derive(Debug, Clone, Default)]
enum Serves {
    /// BM25 only.
    #[default]
    Nothing,
    /// One in-process embedder for every region.
    EveryRegion(Arc<dyn Embedder>),
    /// One embedder per region, all of one vector length; a region absent here
    /// has none.
    ByRegion(HashMap<Region, Arc<dyn Embedder>>),
}

/// Why a server's embedders cannot be used together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EmbeddersError {
    #[error("region {0} has two embedders; one embedder serves each region")]
    RegionTwice(Region),
    #[error(
        "the embedder of region {region} returns {got} dimensions and that of region {first} \
         {expected}; all embedders of a server must share one vector length (the index has one)"
    )]
    Dimensions {
        first: Region,
        expected: usize,
        region: Region,
        got: usize,
    },
}

/// The embedder a tenant's text may go to, or why there is none.
#[derive(Debug, Clone)]
pub enum TenantEmbedder {
    Serves(Arc<dyn Embedder>),
    /// The server has no embedder at all.
    NoneConfigured,
    /// The server has embedders, but none serves this region.
    NoneInRegion(Region),
}

impl TenantEmbedder {
    pub fn embedder(&self) -> Option<&Arc<dyn Embedder>> {
        match self {
            TenantEmbedder::Serves(e) => Some(e),
            _ => None,
        }
    }

    /// The refusal of a vector or hybrid search without an embedder.
    fn refusal(&self) -> AppError {
        match self {
            TenantEmbedder::NoneInRegion(region) => AppError::Conflict(format!(
                "vector and hybrid search need an embedder; no embedder serves region {region} \
                 (this tenant's region), so its text is never sent to one; search with mode bm25"
            )),
            _ => AppError::invalid(
                "vector and hybrid search need an embedder; this server has none configured",
            ),
        }
    }
}

impl Embedders {
    /// BM25 only.
    pub fn none() -> Self {
        Self::default()
    }

    /// The hashed n-grams for every region: it runs in this process, so no
    /// text leaves. Typed so that no other embedder can serve every region.
    pub fn every_region(embedder: bulkhead_index::HashedNgramEmbedder) -> Self {
        Self {
            serves: Serves::EveryRegion(Arc::new(embedder)),
        }
    }

    /// One embedder per region: no region twice, one vector length for all.
    pub fn by_region(
        embedders: impl IntoIterator<Item = (Region, Arc<dyn Embedder>)>,
    ) -> Result<Self, EmbeddersError> {
        let mut first: Option<(Region, usize)> = None;
        let mut map = HashMap::new();
        for (region, embedder) in embedders {
            let got = embedder.dimensions();
            match &first {
                None => first = Some((region.clone(), got)),
                Some((first, expected)) if *expected != got => {
                    return Err(EmbeddersError::Dimensions {
                        first: first.clone(),
                        expected: *expected,
                        region,
                        got,
                    });
                }
                Some(_) => {}
            }
            if map.contains_key(&region) {
                return Err(EmbeddersError::RegionTwice(region));
            }
            map.insert(region, embedder);
        }
        Ok(Self {
            serves: match map.is_empty() {
                true => Serves::Nothing,
                false => Serves::ByRegion(map),
            },
        })
    }

    /// The vector length of every embedder, if there is one.
    pub fn dimensions(&self) -> Option<usize> {
        match &self.serves {
            Serves::Nothing => None,
            Serves::EveryRegion(e) => Some(e.dimensions()),
            Serves::ByRegion(map) => map.values().next().map(|e| e.dimensions()),
        }
    }

    /// Whether the embedder depends on the tenant's region (else no lookup of
    /// the tenant is needed to pick it).
    pub fn is_by_region(&self) -> bool {
        matches!(self.serves, Serves::ByRegion(_))
    }

    /// The embedder of a tenant of this region.
    pub fn for_region(&self, region: &Region) -> TenantEmbedder {
        match &self.serves {
            Serves::Nothing => TenantEmbedder::NoneConfigured,
            Serves::EveryRegion(e) => TenantEmbedder::Serves(Arc::clone(e)),
            Serves::ByRegion(map) => match map.get(region) {
                Some(e) => TenantEmbedder::Serves(Arc::clone(e)),
                None => TenantEmbedder::NoneInRegion(region.clone()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_index::HashedNgramEmbedder;

    fn hashed(dims: usize) -> Arc<dyn Embedder> {
        Arc::new(HashedNgramEmbedder::new(dims).expect("dims in range"))
    }

    fn region(name: &str) -> Region {
        Region::parse(name).expect("a valid region")
    }

    #[test]
    fn embedders_by_region_serve_their_region_only() {
        let e = Embedders::by_region([(region("eu"), hashed(16)), (region("us"), hashed(16))])
            .expect("two regions, one length");
        assert!(e.is_by_region());
        assert_eq!(e.dimensions(), Some(16));
        assert!(e.for_region(&region("eu")).embedder().is_some());
        assert!(matches!(
            e.for_region(&region("ap")),
            TenantEmbedder::NoneInRegion(r) if r == region("ap")
        ));
        assert_eq!(
            Embedders::by_region([(region("eu"), hashed(16)), (region("eu"), hashed(16))])
                .unwrap_err(),
            EmbeddersError::RegionTwice(region("eu"))
        );
        assert_eq!(
            Embedders::by_region([(region("eu"), hashed(16)), (region("us"), hashed(32))])
                .unwrap_err(),
            EmbeddersError::Dimensions {
                first: region("eu"),
                expected: 16,
                region: region("us"),
                got: 32,
            }
        );
        // In process, one embedder serves every region; none serves no region.
        let every = Embedders::every_region(HashedNgramEmbedder::new(16).expect("dims"));
        assert!(every.for_region(&region("ap")).embedder().is_some());
        assert!(!every.is_by_region());
        assert!(matches!(
            Embedders::none().for_region(&region("eu")),
            TenantEmbedder::NoneConfigured
        ));
        assert_eq!(Embedders::none().dimensions(), None);
    }
}
