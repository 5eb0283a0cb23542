//! Eviction: an index pushed out of the cache by the byte budget is dropped and
//! its buffers zeroized (observed through `TenantIndex::observe_wipe`, which the
//! drop fills in after wiping — no freed memory is read), and loading the tenant
//! again gives results identical to before.

use std::sync::Arc;

use bulkhead_index::{
    HashedNgramEmbedder, IndexCache, IndexConfig, IndexedChunk, Query, SearchMode, TenantIndex,
};
use bulkhead_types::TenantId;

fn tenant(i: u8) -> TenantId {
    TenantId::from_random([i; 12])
}

fn texts(seed: usize) -> Vec<String> {
    (0..60)
        .map(|i| {
            format!(
                "document {seed} part {i} about topic{} and topic{} with words w{} w{}",
                i % 5,
                i % 7,
                (i * 13 + seed) % 40,
                (i * 7 + seed) % 30
            )
        })
        .collect()
}

fn load(seed: usize) -> TenantIndex {
    let embedder = HashedNgramEmbedder::default();
    let texts = texts(seed);
    let owned: Vec<(String, String, Vec<f32>)> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            (
                format!("c{i}"),
                format!("d{}", i / 6),
                embedder.embed_one(t),
            )
        })
        .collect();
    let chunks: Vec<IndexedChunk<'_>> = owned
        .iter()
        .zip(&texts)
        .map(|((cid, did, e), text)| IndexedChunk {
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

fn run_queries(index: &TenantIndex) -> Vec<Vec<bulkhead_index::Hit>> {
    let embedder = HashedNgramEmbedder::default();
    let mut out = Vec::new();
    for q in [
        "topic3 w12",
        "document part",
        "w7 topic1 topic6",
        "nothing-matches-here",
    ] {
        let e = embedder.embed_one(q);
        for mode in [SearchMode::Bm25, SearchMode::Vector, SearchMode::Hybrid] {
            out.push(
                index
                    .search(&Query {
                        text: q,
                        top_k: 10,
                        filter: None,
                        mode,
                        embedding: Some(&e),
                    })
                    .expect("search"),
            );
        }
    }
    out
}

#[tokio::test]
async fn evicted_indexes_are_wiped_and_reload_identically() {
    let one = load(1).memory_bytes();
    // Room for two tenants, not three.
    let cache = IndexCache::new(one * 2 + one / 2);
    let first = cache
        .get_or_load(&tenant(1), || async { Ok::<_, ()>(load(1)) })
        .await
        .expect("load");
    let before = run_queries(&first);
    let report = first.observe_wipe();
    let bytes = first.memory_bytes();
    drop(first);

    for i in 2..=3 {
        cache
            .get_or_load(&tenant(i), || async move { Ok::<_, ()>(load(i as usize)) })
            .await
            .expect("load");
    }
    let stats = cache.stats();
    assert_eq!(stats.evictions, 1);
    assert!(!cache.contains(&tenant(1)));
    assert!(stats.bytes <= stats.budget_bytes);

    // Dropped with the eviction (no one else held it), and wiped: the report
    // counts the same heap bytes `memory_bytes` accounted.
    assert!(report.dropped());
    assert_eq!(
        report.bytes_wiped() + std::mem::size_of::<TenantIndex>(),
        bytes
    );

    let again = cache
        .get_or_load(&tenant(1), || async { Ok::<_, ()>(load(1)) })
        .await
        .expect("reload");
    assert_eq!(run_queries(&again), before);
    assert_eq!(cache.stats().misses, 4);
}

#[tokio::test]
async fn an_index_in_use_is_wiped_only_when_the_last_search_lets_go() {
    let cache = IndexCache::new(1);
    let held: Arc<TenantIndex> = cache
        .get_or_load(&tenant(9), || async { Ok::<_, ()>(load(9)) })
        .await
        .expect("load");
    // Over budget at once: evicted from the cache, but still usable here.
    assert!(!cache.contains(&tenant(9)));
    let report = held.observe_wipe();
    assert!(!run_queries(&held)[0].is_empty());
    assert!(!report.dropped());
    drop(held);
    assert!(report.dropped());
    assert!(report.bytes_wiped() > 0);
}
