//! Retrieval benchmark: search latency by mode at 10k and 100k chunks, cold open
//! (build) of 1,000 chunks, memory per hot tenant, chunks indexed per second, and
//! many small tenants in one cache against a 16 GiB budget.
//!
//! Run: `cargo bench -p bulkhead-index --bench search`. Environment:
//! `BENCH_EXPORT=DIR` writes the 10k and 100k corpora, queries and embeddings for
//! the peer (`bench/retrieval/peer.sh DIR`); `BENCH_SMALL_TENANTS` (default
//! 10,000) sets how many 50-chunk tenants are built for the extrapolation.

#[path = "common/corpus.rs"]
mod corpus;

use std::io::Write;
use std::time::Instant;

use bulkhead_index::{
    HashedNgramEmbedder, IndexCache, IndexConfig, IndexedChunk, Query, SearchMode, TenantIndex,
};
use bulkhead_types::TenantId;

const WORDS_PER_CHUNK: usize = 120;
const QUERIES: usize = 1000;
const TOP_K: usize = 10;
const DIMS: usize = HashedNgramEmbedder::DEFAULT_DIMS;

fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<usize>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

struct Corpus {
    texts: Vec<String>,
    ids: Vec<String>,
    docs: Vec<String>,
    embeddings: Vec<Vec<f32>>,
}

impl Corpus {
    fn new(seed: u64, n: usize, embedder: &HashedNgramEmbedder) -> Self {
        let (_, texts) = corpus::chunks(seed, n, WORDS_PER_CHUNK);
        let ids = (0..n).map(|i| format!("c{i}")).collect();
        // Ten chunks per document.
        let docs = (0..n).map(|i| format!("d{}", i / 10)).collect();
        let embeddings = texts.iter().map(|t| embedder.embed_one(t)).collect();
        Self {
            texts,
            ids,
            docs,
            embeddings,
        }
    }

    fn chunks(&self, range: std::ops::Range<usize>, vectors: bool) -> Vec<IndexedChunk<'_>> {
        range
            .map(|i| IndexedChunk {
                chunk_id: &self.ids[i],
                document_id: &self.docs[i],
                text: &self.texts[i],
                metadata: None,
                embedding: vectors.then(|| self.embeddings[i].as_slice()),
            })
            .collect()
    }
}

fn config(vectors: bool) -> IndexConfig {
    IndexConfig {
        vector_dims: vectors.then_some(DIMS),
        ..IndexConfig::default()
    }
}

fn export(
    dir: &std::path::Path,
    name: &str,
    c: &Corpus,
    n: usize,
    queries: &[String],
    qe: &[Vec<f32>],
) {
    std::fs::create_dir_all(dir).expect("export dir");
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(dir.join(format!("{name}.jsonl"))).expect("create"),
    );
    for i in 0..n {
        let line = serde_json::json!({"id": c.ids[i], "doc": c.docs[i], "text": c.texts[i]});
        writeln!(f, "{line}").expect("write");
    }
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(dir.join(format!("{name}.f32"))).expect("create"),
    );
    for e in &c.embeddings[..n] {
        for x in e {
            f.write_all(&x.to_le_bytes()).expect("write");
        }
    }
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(dir.join(format!("{name}.queries.jsonl"))).expect("create"),
    );
    for (q, e) in queries.iter().zip(qe) {
        writeln!(f, "{}", serde_json::json!({"text": q, "embedding": e})).expect("write");
    }
}

fn main() {
    let embedder = HashedNgramEmbedder::default();
    let export_dir = std::env::var_os("BENCH_EXPORT").map(std::path::PathBuf::from);
    let small_tenants: usize = std::env::var("BENCH_SMALL_TENANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    if let Ok(phase) = std::env::var("BENCH_SMALL_PHASE") {
        small_tenants_phase(phase == "vectors", small_tenants);
        return;
    }
    println!(
        "cargo bench -p bulkhead-index --bench search   (chunks of {WORDS_PER_CHUNK} words, ~800 chars; hashed 3-5-gram vectors, {DIMS} dims, stored as int8; top_k {TOP_K}; {QUERIES} queries of 2-4 words)"
    );

    // Many small tenants in one cache, each configuration in a fresh process of
    // this same binary, so that RSS growth is not hidden by memory an earlier
    // phase freed.
    for phase in ["bm25", "vectors"] {
        let exe = std::env::current_exe().expect("own path");
        let status = std::process::Command::new(exe)
            .env("BENCH_SMALL_PHASE", phase)
            .status()
            .expect("spawn phase");
        assert!(status.success(), "phase {phase} failed");
    }

    println!();
    let t = Instant::now();
    let big = Corpus::new(7, 100_000, &embedder);
    println!(
        "corpus: 100,000 chunks generated and embedded in {:.1} s ({:.0} chunks/s embedded)",
        t.elapsed().as_secs_f64(),
        100_000.0 / t.elapsed().as_secs_f64()
    );

    // Indexing throughput.
    println!();
    println!(
        "{:<34} {:>12} {:>14}",
        "indexing (one insert call)", "chunks/s", "memory_bytes"
    );
    for (label, n, vectors) in [
        ("100k chunks, BM25 only", 100_000, false),
        ("100k chunks, BM25 + vectors", 100_000, true),
    ] {
        let chunks = big.chunks(0..n, vectors);
        let t = Instant::now();
        let idx = TenantIndex::build(config(vectors), &chunks).expect("build");
        let rate = n as f64 / t.elapsed().as_secs_f64();
        println!(
            "{label:<34} {rate:>12.0} {:>11.1} MiB",
            idx.memory_bytes() as f64 / 1048576.0
        );
    }
    {
        // Per-document inserts (10 chunks each): the ingest path, with merges.
        let n = 20_000;
        let idx = TenantIndex::new(config(true)).expect("new");
        let t = Instant::now();
        for d in 0..n / 10 {
            idx.insert(&big.chunks(d * 10..d * 10 + 10, true))
                .expect("insert");
        }
        let rate = n as f64 / t.elapsed().as_secs_f64();
        println!(
            "{:<34} {rate:>12.0} {:>11.1} MiB",
            "20k chunks, one document at a time",
            idx.memory_bytes() as f64 / 1048576.0
        );
    }

    // Search latency.
    println!();
    println!(
        "{:<22} {:>8} {:>10} {:>10} {:>10}",
        "search", "chunks", "p50 ms", "p99 ms", "max ms"
    );
    for n in [10_000usize, 100_000] {
        let idx = TenantIndex::build(config(true), &big.chunks(0..n, true)).expect("build");
        let queries = corpus::queries(n as u64, &big.texts[..n], QUERIES);
        let qe: Vec<Vec<f32>> = queries.iter().map(|q| embedder.embed_one(q)).collect();
        if let Some(dir) = &export_dir {
            export(dir, &format!("tenant{}k", n / 1000), &big, n, &queries, &qe);
        }
        for mode in [SearchMode::Bm25, SearchMode::Vector, SearchMode::Hybrid] {
            let mut lat = Vec::with_capacity(QUERIES);
            let mut found = 0usize;
            for (q, e) in queries.iter().zip(&qe) {
                let t = Instant::now();
                let hits = idx
                    .search(&Query {
                        text: q,
                        top_k: TOP_K,
                        filter: None,
                        mode,
                        embedding: Some(e),
                    })
                    .expect("search");
                lat.push(t.elapsed().as_secs_f64() * 1e3);
                found += hits.len();
            }
            std::hint::black_box(found);
            let (p50, p99, max) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99), pct(&mut lat, 1.0));
            println!(
                "{:<22} {n:>8} {p50:>10.3} {p99:>10.3} {max:>10.3}",
                format!("{mode:?}")
            );
        }
    }
    let t = Instant::now();
    let qe: Vec<Vec<f32>> = corpus::queries(1, &big.texts, QUERIES)
        .iter()
        .map(|q| embedder.embed_one(q))
        .collect();
    std::hint::black_box(qe);
    println!(
        "(embedding one query with the hashed n-gram embedder: {:.3} ms, not included above)",
        t.elapsed().as_secs_f64() * 1e3 / QUERIES as f64
    );

    // Cold open: build 1,000 chunks from opened texts and stored embeddings.
    println!();
    println!(
        "{:<40} {:>10} {:>10}",
        "cold open (build) of 1,000 chunks", "p50 ms", "p99 ms"
    );
    for vectors in [false, true] {
        let mut lat = Vec::new();
        for r in 0..100 {
            let start = (r * 1000) % 90_000;
            let chunks = big.chunks(start..start + 1000, vectors);
            let t = Instant::now();
            let idx = TenantIndex::build(config(vectors), &chunks).expect("build");
            lat.push(t.elapsed().as_secs_f64() * 1e3);
            drop(idx);
        }
        let label = if vectors {
            "BM25 + vectors"
        } else {
            "BM25 only"
        };
        println!(
            "{label:<40} {:>10.2} {:>10.2}",
            pct(&mut lat, 0.5),
            pct(&mut lat, 0.99)
        );
    }
    {
        let chunks = big.chunks(0..1000, true);
        let idx = TenantIndex::build(config(true), &chunks).expect("build");
        let t = Instant::now();
        drop(idx);
        println!(
            "{:<40} {:>10.2}",
            "drop (zeroize) of that index",
            t.elapsed().as_secs_f64() * 1e3
        );
    }

    // Memory per hot tenant.
    println!();
    println!(
        "{:<30} {:>14} {:>14}",
        "memory per hot tenant", "BM25 only", "BM25 + vectors"
    );
    for n in [50usize, 1000] {
        let a = TenantIndex::build(config(false), &big.chunks(0..n, false)).expect("build");
        let b = TenantIndex::build(config(true), &big.chunks(0..n, true)).expect("build");
        println!(
            "{:<30} {:>11.1} KiB {:>11.1} KiB",
            format!("{n} chunks (memory_bytes)"),
            a.memory_bytes() as f64 / 1024.0,
            b.memory_bytes() as f64 / 1024.0
        );
    }
    drop(big);
}

fn small_tenants_phase(vectors: bool, small_tenants: usize) {
    let embedder = HashedNgramEmbedder::default();
    let pool = Corpus::new(99, 5_000, &embedder);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let cache = IndexCache::new(usize::MAX);
    let rss_before = rss_bytes();
    let t = Instant::now();
    rt.block_on(async {
        for i in 0..small_tenants {
            let mut random = [0u8; 12];
            random[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let tenant = TenantId::from_random(random);
            let start = (i * 50) % (5_000 - 50);
            let chunks = pool.chunks(start..start + 50, vectors);
            cache
                .get_or_load(&tenant, || async {
                    TenantIndex::build(config(vectors), &chunks)
                })
                .await
                .expect("load");
        }
    });
    let secs = t.elapsed().as_secs_f64();
    let rss = rss_bytes().saturating_sub(rss_before);
    let stats = cache.stats();
    let per = stats.bytes as f64 / small_tenants as f64;
    let per_rss = rss as f64 / small_tenants as f64;
    let label = if vectors {
        "BM25 + vectors"
    } else {
        "BM25 only"
    };
    println!(
        "{small_tenants} tenants x 50 chunks, {label}: built in {secs:.1} s; memory_bytes {:.1} KiB/tenant, RSS {:.1} KiB/tenant",
        per / 1024.0,
        per_rss / 1024.0
    );
    let gib = |b: f64| b * 100_000.0 / (1u64 << 30) as f64;
    println!(
        "  -> 100,000 such tenants: {:.2} GiB by memory_bytes, {:.2} GiB by RSS (budget 16 GiB)",
        gib(per),
        gib(per_rss)
    );
}
