//! Isolation: random multi-tenant corpora, each tenant's documents carrying a
//! canary token of its own, every tenant's index in one `IndexCache`. Searching
//! any tenant for any canary (every mode) returns only that tenant's chunks —
//! and finds the tenant's own canary.

use std::collections::HashMap;

use bulkhead_index::{
    HashedNgramEmbedder, IndexCache, IndexConfig, IndexedChunk, Query, SearchMode, TenantIndex,
};
use bulkhead_types::TenantId;
use proptest::prelude::*;

const WORDS: [&str; 12] = [
    "alpha", "beta", "gamma", "delta", "report", "invoice", "contract", "meeting", "tenant",
    "secret", "budget", "roadmap",
];

#[derive(Debug, Clone)]
struct TenantCorpus {
    /// Per document: texts of its chunks.
    documents: Vec<Vec<String>>,
}

fn canary(t: usize) -> String {
    format!("canary{t:04}zq")
}

fn corpus_strategy() -> impl Strategy<Value = Vec<TenantCorpus>> {
    let chunk = proptest::collection::vec(0..WORDS.len(), 1..12);
    let document = proptest::collection::vec(chunk, 1..4);
    let tenant = proptest::collection::vec(document, 1..5);
    proptest::collection::vec(tenant, 2..6).prop_map(|tenants| {
        tenants
            .into_iter()
            .enumerate()
            .map(|(t, docs)| TenantCorpus {
                documents: docs
                    .into_iter()
                    .enumerate()
                    .map(|(d, chunks)| {
                        chunks
                            .into_iter()
                            .enumerate()
                            .map(|(c, words)| {
                                let mut text: Vec<&str> = words.iter().map(|&w| WORDS[w]).collect();
                                // Every tenant's first chunk carries its canary.
                                let can = canary(t);
                                if d == 0 && c == 0 {
                                    text.push(&can);
                                    return text.join(" ");
                                }
                                text.join(" ")
                            })
                            .collect()
                    })
                    .collect(),
            })
            .collect()
    })
}

fn tenant_id(t: usize) -> TenantId {
    let mut r = [0u8; 12];
    r[0] = t as u8;
    r[11] = 0x5a;
    TenantId::from_random(r)
}

/// Chunk ids are per tenant and deliberately the same across tenants (`d0:0`…):
/// the test tells tenants apart by the text each chunk id maps to in its owner.
fn build(t: usize, corpus: &TenantCorpus, embedder: &HashedNgramEmbedder) -> TenantIndex {
    let mut owned = Vec::new();
    for (d, doc) in corpus.documents.iter().enumerate() {
        for (c, text) in doc.iter().enumerate() {
            owned.push((
                format!("t{t}-d{d}:{c}"),
                format!("t{t}-d{d}"),
                text.clone(),
                embedder.embed_one(text),
            ));
        }
    }
    let chunks: Vec<IndexedChunk<'_>> = owned
        .iter()
        .map(|(cid, did, text, e)| IndexedChunk {
            chunk_id: cid,
            document_id: did,
            text,
            metadata: None,
            embedding: Some(e),
        })
        .collect();
    let config = IndexConfig {
        vector_dims: Some(HashedNgramEmbedder::DEFAULT_DIMS),
        ..IndexConfig::default()
    };
    TenantIndex::build(config, &chunks).expect("build")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]
    #[test]
    fn a_search_never_returns_another_tenants_chunk(corpora in corpus_strategy(), budget_small in any::<bool>()) {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let embedder = HashedNgramEmbedder::default();
        // A small budget forces evictions and reloads in the middle of the run.
        let cache = IndexCache::new(if budget_small { 20_000 } else { 1 << 30 });
        let ids: HashMap<usize, TenantId> = (0..corpora.len()).map(|t| (t, tenant_id(t))).collect();
        rt.block_on(async {
            for (t, corpus) in corpora.iter().enumerate() {
                for (c, _) in corpora.iter().enumerate() {
                    let index = cache
                        .get_or_load(&ids[&t], || async { Ok::<_, ()>(build(t, corpus, &embedder)) })
                        .await
                        .expect("load");
                    let q = canary(c);
                    let e = embedder.embed_one(&q);
                    for mode in [SearchMode::Bm25, SearchMode::Vector, SearchMode::Hybrid] {
                        let hits = index
                            .search(&Query { text: &q, top_k: 50, filter: None, mode, embedding: Some(&e) })
                            .expect("search");
                        let own = format!("t{t}-");
                        for h in &hits {
                            prop_assert!(h.chunk_id.starts_with(&own), "tenant {t} got {}", h.chunk_id);
                            prop_assert!(h.document_id.starts_with(&own));
                        }
                        if c == t && mode == SearchMode::Bm25 {
                            // The tenant's own canary is found, first.
                            prop_assert_eq!(hits.first().map(|h| h.chunk_id.clone()), Some(format!("t{t}-d0:0")));
                        }
                    }
                }
            }
            Ok(())
        })?;
    }
}
