//! `TenantIndex`: one tenant's chunks, searchable by BM25, by vector and by both.
//!
//! Layout. Chunks get dense ordinals in insertion order. BM25 postings live in
//! immutable *segments*, each a sorted array of term hashes with offsets into
//! parallel arrays of chunk ordinals (`u32`) and term frequencies (`u8`): 5 bytes
//! a posting, 12 bytes a term, no per-term allocation. An insert builds one
//! segment from its batch; segments of similar size are merged (tiered, factor 4)
//! so there are O(log n) of them. Deletion clears the chunk's `alive` bit at once,
//! wipes its vector row, id and metadata, and leaves its postings until the dead
//! exceed a quarter of the chunks, when everything is rewritten densely
//! (`compact`). Document frequencies count live chunks only, so scores after any
//! history of inserts and deletes equal those of a fresh build over the same
//! chunks, and ties are broken by chunk id: results do not depend on history.
//!
//! Scoring is BM25 (Lucene's idf `ln(1 + (N − df + ½)/(df + ½))`, k1 = 1.2,
//! b = 0.75), term-at-a-time into a dense score array, then a partial selection
//! of the top k. Vector search is an exact cosine scan over 8-bit quantized rows
//! (`vector.rs`). Hybrid is reciprocal rank fusion (k = 60) of the two lists,
//! each taken to depth `max(top_k, 100)`.
//!
//! Zeroization: every buffer that holds text-derived data (term hashes, postings,
//! vector codes, chunk and document ids, metadata) is zeroized when the index is
//! dropped, and when a buffer grows the old one is wiped before it is freed
//! (`vector::grow_wiping`); sorts are in place (`sort_unstable`). What is
//! not wiped: the `String` headers moved inside the hash tables when they resize
//! (pointers and lengths, not contents), the score arrays of a search (scores and
//! ordinals only), and query text the caller owns.
//!
//! Must never: return a chunk that was removed; hold chunk text (the index keeps
//! only term hashes, so the caller reads texts of hits from the sealed store).

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::tokenize::{Stemming, for_each_term, hash_bytes};
use crate::vector::{QueryVector, VectorRows, push_wiping};

/// The most results one search returns.
pub const TOP_K_MAX: usize = 1000;
/// Reciprocal rank fusion constant (Cormack, Clarke and Büttcher, 2009).
pub const RRF_K: f32 = 60.0;
/// Depth of each list fused by hybrid search (at least `top_k`).
pub const HYBRID_DEPTH: usize = 100;

/// BM25 parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bm25Params {
    pub k1: f32,
    pub b: f32,
}

impl Default for Bm25Params {
    fn default() -> Self {
        Self { k1: 1.2, b: 0.75 }
    }
}

/// How a tenant's index is built. Every tenant of a deployment normally shares
/// one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexConfig {
    /// Dimensions of the embeddings, when an embedder is configured; `None` keeps
    /// BM25 only and refuses vector and hybrid searches.
    pub vector_dims: Option<usize>,
    pub stemming: Stemming,
    pub bm25: Bm25Params,
    /// The most chunks one tenant's index holds (inserts beyond fail).
    pub chunks_max: usize,
}

impl IndexConfig {
    pub const DIMS_MAX: usize = 8192;
}

impl Default for IndexConfig {
    fn default() -> Self {
        Self {
            vector_dims: None,
            stemming: Stemming::default(),
            bm25: Bm25Params::default(),
            chunks_max: 5_000_000,
        }
    }
}

/// What went wrong, in a closed set.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    #[error("embedding has {got} dimensions, the index expects {expected}")]
    Dimensions { expected: usize, got: usize },
    #[error("this index has no vectors (no embedder is configured)")]
    VectorsNotConfigured,
    #[error("vector and hybrid searches need a query embedding")]
    QueryEmbeddingMissing,
    #[error("top_k must be between 1 and {TOP_K_MAX}")]
    TopK,
    #[error("the index would exceed its limit of {0} chunks")]
    TooManyChunks(usize),
    #[error("chunk and document ids must not be empty")]
    EmptyId,
    #[error("metadata filter values must be strings, numbers or booleans")]
    FilterValue,
    #[error("invalid index configuration: {0}")]
    Config(&'static str),
    /// A panic happened while the index was being changed; drop it and rebuild.
    #[error("the index is unusable after an internal panic; rebuild it")]
    Poisoned,
}

/// A chunk to index. Borrowed: the caller owns the plaintext (e.g. a
/// `bulkhead_crypto::Plaintext`) and the index keeps none of it.
#[derive(Debug, Clone, Copy)]
pub struct IndexedChunk<'a> {
    /// Unique within the tenant (e.g. `{document_id}:{index}`).
    pub chunk_id: &'a str,
    pub document_id: &'a str,
    pub text: &'a str,
    /// String, number and boolean values become filterable; others are ignored.
    pub metadata: Option<&'a serde_json::Map<String, serde_json::Value>>,
    /// Required length: `IndexConfig::vector_dims`. `None` for a chunk that has
    /// no embedding (it never appears in vector results).
    pub embedding: Option<&'a [f32]>,
}

/// Exact-match metadata conditions; a chunk matches when it has every pair.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct MetadataFilter {
    pairs: Vec<(String, String)>,
}

impl std::fmt::Debug for MetadataFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Values may be content; show only the keys.
        let keys: Vec<&str> = self.pairs.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("MetadataFilter")
            .field("keys", &keys)
            .finish()
    }
}

impl Drop for MetadataFilter {
    fn drop(&mut self) {
        for (k, v) in &mut self.pairs {
            k.zeroize();
            v.zeroize();
        }
    }
}

impl MetadataFilter {
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        Self {
            pairs: pairs.into_iter().collect(),
        }
    }

    /// From a JSON object as a client sends it: values must be strings, numbers
    /// or booleans (matched against metadata values of the same JSON text).
    pub fn from_json(map: &serde_json::Map<String, serde_json::Value>) -> Result<Self, IndexError> {
        let mut pairs = Vec::with_capacity(map.len());
        for (k, v) in map {
            let v = scalar_text(v).ok_or(IndexError::FilterValue)?;
            pairs.push((k.clone(), v));
        }
        Ok(Self { pairs })
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

fn scalar_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The key under which a metadata pair is interned: length-prefixed, so no two
/// pairs share one.
fn pair_key(key: &str, value: &str) -> Zeroizing<String> {
    let mut s = Zeroizing::new(String::with_capacity(key.len() + value.len() + 8));
    s.push_str(&key.len().to_string());
    s.push(':');
    s.push_str(key);
    s.push_str(value);
    s
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SearchMode {
    Bm25,
    Vector,
    Hybrid,
}

/// One search.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    pub text: &'a str,
    pub top_k: usize,
    pub filter: Option<&'a MetadataFilter>,
    pub mode: SearchMode,
    /// The query's embedding from the tenant's embedder (vector and hybrid).
    pub embedding: Option<&'a [f32]>,
}

/// One result. `score` is BM25, cosine or RRF by mode; higher is better.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub chunk_id: String,
    pub document_id: String,
    pub score: f32,
}

/// What an insert did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InsertReport {
    pub inserted: usize,
    /// Chunks whose id was already present (inserting is idempotent).
    pub already_present: usize,
}

/// Filled in when an observed index is dropped: proof that its buffers were
/// wiped, for tests and metrics.
#[derive(Debug, Default)]
pub struct WipeReport {
    dropped: AtomicBool,
    bytes_wiped: AtomicUsize,
}

impl WipeReport {
    pub fn dropped(&self) -> bool {
        self.dropped.load(AtomicOrdering::Acquire)
    }

    /// Heap bytes zeroized by the drop.
    pub fn bytes_wiped(&self) -> usize {
        self.bytes_wiped.load(AtomicOrdering::Acquire)
    }
}

/// One tenant's in-memory index. Thread-safe: searches share a read lock,
/// inserts and removals take the write lock. Dropping it zeroizes every buffer.
pub struct TenantIndex {
    config: IndexConfig,
    inner: RwLock<Inner>,
    memory_bytes: AtomicUsize,
    observer: std::sync::Mutex<Option<Arc<WipeReport>>>,
}

impl std::fmt::Debug for TenantIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantIndex")
            .field("memory_bytes", &self.memory_bytes())
            .finish_non_exhaustive()
    }
}

/// Per-allocation overhead of the system allocator, counted by `memory_bytes`.
const ALLOC_OVERHEAD: usize = 16;

#[derive(Debug, Default)]
struct Segment {
    /// Sorted, unique term hashes.
    terms: Vec<u64>,
    /// `offsets[i]..offsets[i + 1]` are term `i`'s postings.
    offsets: Vec<u32>,
    docs: Vec<u32>,
    tfs: Vec<u8>,
}

impl Segment {
    fn postings(&self, term: u64) -> Option<(&[u32], &[u8])> {
        let i = self.terms.binary_search(&term).ok()?;
        let (a, b) = (self.offsets[i] as usize, self.offsets[i + 1] as usize);
        Some((&self.docs[a..b], &self.tfs[a..b]))
    }

    fn heap_bytes(&self) -> usize {
        self.terms.capacity() * 8
            + self.offsets.capacity() * 4
            + self.docs.capacity() * 4
            + self.tfs.capacity()
            + 4 * ALLOC_OVERHEAD
    }

    fn wipe(&mut self) -> usize {
        let n = self.heap_bytes();
        self.terms.zeroize();
        self.offsets.zeroize();
        self.docs.zeroize();
        self.tfs.zeroize();
        n
    }
}

#[derive(Debug)]
struct ChunkSlot {
    chunk_id: String,
    document: u32,
    /// Sorted ids of the chunk's metadata pairs.
    meta: Box<[u32]>,
}

#[derive(Debug)]
struct DocEntry {
    id: String,
    chunks: Vec<u32>,
}

#[derive(Debug, Clone, Copy, Zeroize)]
struct TermDoc {
    term: u64,
    doc: u32,
    tf: u32,
}

#[derive(Debug, Default)]
struct Inner {
    segments: Vec<Segment>,
    chunks: Vec<ChunkSlot>,
    lens: Vec<u32>,
    alive: Vec<bool>,
    alive_count: usize,
    alive_tokens: u64,
    dead_count: usize,
    /// Hash of a live chunk id → ordinal; ids whose hash is taken by another go
    /// to `chunk_collisions` (scanned; in practice empty).
    chunk_by_hash: HashMap<u64, u32>,
    chunk_collisions: Vec<u32>,
    docs: Vec<DocEntry>,
    doc_by_id: HashMap<String, u32>,
    meta_ids: HashMap<String, u32>,
    vectors: Option<VectorRows>,
}

impl TenantIndex {
    pub fn new(config: IndexConfig) -> Result<Self, IndexError> {
        if let Some(d) = config.vector_dims
            && (d == 0 || d > IndexConfig::DIMS_MAX)
        {
            return Err(IndexError::Config("vector_dims must be between 1 and 8192"));
        }
        let k1_ok = config.bm25.k1.is_finite() && config.bm25.k1 >= 0.0;
        if !(k1_ok && (0.0..=1.0).contains(&config.bm25.b)) {
            return Err(IndexError::Config("bm25 needs k1 >= 0 and 0 <= b <= 1"));
        }
        if config.chunks_max == 0 || config.chunks_max >= u32::MAX as usize {
            return Err(IndexError::Config(
                "chunks_max must be between 1 and 2^32 - 2",
            ));
        }
        let inner = Inner {
            vectors: config.vector_dims.map(VectorRows::new),
            ..Inner::default()
        };
        let index = Self {
            config,
            inner: RwLock::new(inner),
            memory_bytes: AtomicUsize::new(0),
            observer: std::sync::Mutex::new(None),
        };
        {
            let inner = index.read()?;
            index.refresh_memory(&inner);
        }
        Ok(index)
    }

    /// A new index holding `chunks` (the cold-open path).
    pub fn build(config: IndexConfig, chunks: &[IndexedChunk<'_>]) -> Result<Self, IndexError> {
        let index = Self::new(config)?;
        index.insert(chunks)?;
        Ok(index)
    }

    pub fn config(&self) -> &IndexConfig {
        &self.config
    }

    fn read(&self) -> Result<std::sync::RwLockReadGuard<'_, Inner>, IndexError> {
        self.inner.read().map_err(|_| IndexError::Poisoned)
    }

    fn write(&self) -> Result<std::sync::RwLockWriteGuard<'_, Inner>, IndexError> {
        self.inner.write().map_err(|_| IndexError::Poisoned)
    }

    fn refresh_memory(&self, inner: &Inner) {
        let bytes = std::mem::size_of::<Self>() + inner.heap_bytes();
        self.memory_bytes.store(bytes, AtomicOrdering::Release);
    }

    /// An estimate of the heap this index holds, in bytes: every buffer's
    /// capacity, hash tables by bucket, plus a fixed allocator overhead per
    /// allocation. Cheap (a stored value, refreshed by every change).
    pub fn memory_bytes(&self) -> usize {
        self.memory_bytes.load(AtomicOrdering::Acquire)
    }

    /// Live chunks.
    pub fn len(&self) -> usize {
        self.read().map(|i| i.alive_count).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds chunks. Validates all of them before changing anything. Chunks whose
    /// id is already present are skipped, so replaying an insert is harmless.
    pub fn insert(&self, chunks: &[IndexedChunk<'_>]) -> Result<InsertReport, IndexError> {
        for c in chunks {
            if c.chunk_id.is_empty() || c.document_id.is_empty() {
                return Err(IndexError::EmptyId);
            }
            match (self.config.vector_dims, c.embedding) {
                (Some(expected), Some(e)) if e.len() != expected => {
                    return Err(IndexError::Dimensions {
                        expected,
                        got: e.len(),
                    });
                }
                (None, Some(_)) => return Err(IndexError::VectorsNotConfigured),
                _ => {}
            }
        }
        let mut inner = self.write()?;
        if inner.chunks.len() + chunks.len() > self.config.chunks_max
            && inner.alive_count + chunks.len() > self.config.chunks_max
        {
            return Err(IndexError::TooManyChunks(self.config.chunks_max));
        }
        if inner.chunks.len() + chunks.len() > self.config.chunks_max {
            inner.compact();
        }
        let report = inner.insert(&self.config, chunks);
        self.refresh_memory(&inner);
        Ok(report)
    }

    /// Removes every chunk of a document; they never appear in results again.
    /// Returns how many were removed (0 for an unknown document).
    pub fn remove_document(&self, document_id: &str) -> Result<usize, IndexError> {
        let mut inner = self.write()?;
        let removed = inner.remove_document(document_id);
        if inner.dead_count > 0 && inner.dead_count * 4 > inner.chunks.len() {
            inner.compact();
        }
        self.refresh_memory(&inner);
        Ok(removed)
    }

    pub fn search(&self, query: &Query<'_>) -> Result<Vec<Hit>, IndexError> {
        if query.top_k == 0 || query.top_k > TOP_K_MAX {
            return Err(IndexError::TopK);
        }
        let needs_vector = matches!(query.mode, SearchMode::Vector | SearchMode::Hybrid);
        let unit_query = if needs_vector {
            let dims = self
                .config
                .vector_dims
                .ok_or(IndexError::VectorsNotConfigured)?;
            let e = query.embedding.ok_or(IndexError::QueryEmbeddingMissing)?;
            if e.len() != dims {
                return Err(IndexError::Dimensions {
                    expected: dims,
                    got: e.len(),
                });
            }
            QueryVector::new(e)
        } else {
            None
        };
        let inner = self.read()?;
        let Some(filter) = inner.resolve_filter(query.filter) else {
            return Ok(Vec::new());
        };
        let ranked: Vec<(u32, f32)> = match query.mode {
            SearchMode::Bm25 => inner.bm25(&self.config, query.text, &filter, query.top_k),
            SearchMode::Vector => match &unit_query {
                Some(q) => inner.vector(q, &filter, query.top_k),
                None => Vec::new(),
            },
            SearchMode::Hybrid => {
                let depth = query.top_k.max(HYBRID_DEPTH);
                let lexical = inner.bm25(&self.config, query.text, &filter, depth);
                let semantic = match &unit_query {
                    Some(q) => inner.vector(q, &filter, depth),
                    None => Vec::new(),
                };
                inner.fuse(&[&lexical, &semantic], query.top_k)
            }
        };
        Ok(ranked
            .into_iter()
            .map(|(o, score)| {
                let slot = &inner.chunks[o as usize];
                Hit {
                    chunk_id: slot.chunk_id.clone(),
                    document_id: inner.docs[slot.document as usize].id.clone(),
                    score,
                }
            })
            .collect())
    }

    /// Reports, when this index is dropped, that and how much it wiped.
    pub fn observe_wipe(&self) -> Arc<WipeReport> {
        let report = Arc::new(WipeReport::default());
        if let Ok(mut o) = self.observer.lock() {
            *o = Some(report.clone());
        }
        report
    }

    /// Zeroes every buffer now and reports the bytes wiped (test hook: lets a
    /// test look at the buffers after a wipe without reading freed memory).
    #[cfg(test)]
    fn wipe_for_test(&self) -> bool {
        let mut inner = self.write().expect("not poisoned");
        inner.wipe();
        inner.all_zero()
    }
}

impl Drop for TenantIndex {
    fn drop(&mut self) {
        // A poisoned lock still gives the data; wiping it is the point.
        let inner = match self.inner.get_mut() {
            Ok(i) => i,
            Err(p) => p.into_inner(),
        };
        let bytes = inner.wipe();
        let observer = match self.observer.get_mut() {
            Ok(o) => o.take(),
            Err(p) => p.into_inner().take(),
        };
        if let Some(report) = observer {
            report.bytes_wiped.store(bytes, AtomicOrdering::Release);
            report.dropped.store(true, AtomicOrdering::Release);
        }
    }
}

/// Bytes a `HashMap` with this capacity holds: buckets (a power of two at 7/8
/// load) times entry size plus one control byte each.
fn table_bytes<K, V>(capacity: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = (capacity * 8 / 7).next_power_of_two().max(4);
    buckets * (std::mem::size_of::<(K, V)>() + 1) + ALLOC_OVERHEAD
}

fn string_bytes(s: &String) -> usize {
    if s.capacity() == 0 {
        0
    } else {
        s.capacity() + ALLOC_OVERHEAD
    }
}

impl Inner {
    fn heap_bytes(&self) -> usize {
        let mut n = 0;
        n += self.segments.capacity() * std::mem::size_of::<Segment>();
        n += self.segments.iter().map(Segment::heap_bytes).sum::<usize>();
        n += self.chunks.capacity() * std::mem::size_of::<ChunkSlot>();
        n += self
            .chunks
            .iter()
            .map(|c| {
                string_bytes(&c.chunk_id)
                    + if c.meta.is_empty() {
                        0
                    } else {
                        c.meta.len() * 4 + ALLOC_OVERHEAD
                    }
            })
            .sum::<usize>();
        n += self.lens.capacity() * 4 + self.alive.capacity();
        n += table_bytes::<u64, u32>(self.chunk_by_hash.capacity());
        n += self.chunk_collisions.capacity() * 4;
        n += self.docs.capacity() * std::mem::size_of::<DocEntry>();
        n += self
            .docs
            .iter()
            .map(|d| {
                string_bytes(&d.id)
                    + if d.chunks.capacity() == 0 {
                        0
                    } else {
                        d.chunks.capacity() * 4 + ALLOC_OVERHEAD
                    }
            })
            .sum::<usize>();
        n += table_bytes::<String, u32>(self.doc_by_id.capacity());
        n += self.doc_by_id.keys().map(string_bytes).sum::<usize>();
        n += table_bytes::<String, u32>(self.meta_ids.capacity());
        n += self.meta_ids.keys().map(string_bytes).sum::<usize>();
        n += self.vectors.as_ref().map_or(0, VectorRows::heap_bytes);
        n + 8 * ALLOC_OVERHEAD
    }

    fn find_chunk(&self, id: &str) -> Option<u32> {
        let h = hash_bytes(1, id.as_bytes());
        if let Some(&o) = self.chunk_by_hash.get(&h)
            && self.chunks[o as usize].chunk_id == id
        {
            return Some(o);
        }
        self.chunk_collisions
            .iter()
            .copied()
            .find(|&o| self.chunks[o as usize].chunk_id == id)
    }

    fn insert(&mut self, config: &IndexConfig, chunks: &[IndexedChunk<'_>]) -> InsertReport {
        let mut report = InsertReport::default();
        let mut entries: Vec<TermDoc> = Vec::new();
        // A guess that avoids most regrowth: one distinct term per 8 bytes.
        let text_bytes: usize = chunks.iter().map(|c| c.text.len()).sum();
        entries.reserve_exact(text_bytes / 8 + 16);
        let mut terms: Vec<u64> = Vec::with_capacity(256);
        if let Some(v) = &mut self.vectors {
            v.reserve_exact(chunks.len());
        }
        let first_new = self.chunks.len() as u32;
        for c in chunks {
            if self.find_chunk(c.chunk_id).is_some() {
                report.already_present += 1;
                continue;
            }
            let ordinal = self.chunks.len() as u32;
            terms.clear();
            for_each_term(c.text, config.stemming, |h| push_wiping(&mut terms, h));
            let len = terms.len() as u32;
            terms.sort_unstable();
            let mut i = 0;
            while i < terms.len() {
                let mut j = i + 1;
                while j < terms.len() && terms[j] == terms[i] {
                    j += 1;
                }
                let entry = TermDoc {
                    term: terms[i],
                    doc: ordinal,
                    tf: (j - i) as u32,
                };
                push_wiping(&mut entries, entry);
                i = j;
            }
            let document = self.document_slot(c.document_id);
            self.docs[document as usize].chunks.push(ordinal);
            let meta = self.intern_metadata(c.metadata);
            let h = hash_bytes(1, c.chunk_id.as_bytes());
            match self.chunk_by_hash.entry(h) {
                std::collections::hash_map::Entry::Occupied(_) => {
                    self.chunk_collisions.push(ordinal);
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(ordinal);
                }
            }
            self.chunks.push(ChunkSlot {
                chunk_id: c.chunk_id.to_owned(),
                document,
                meta,
            });
            self.lens.push(len);
            self.alive.push(true);
            self.alive_count += 1;
            self.alive_tokens += u64::from(len);
            if let Some(v) = &mut self.vectors {
                v.push(c.embedding);
            }
            report.inserted += 1;
        }
        terms.zeroize();
        if report.inserted > 0 {
            entries.sort_unstable_by_key(|e| (e.term, e.doc));
            let segment = segment_from_sorted(&entries);
            self.segments.push(segment);
            self.merge_tail();
        }
        entries.zeroize();
        debug_assert_eq!(self.chunks.len(), self.lens.len());
        debug_assert!(
            self.vectors
                .as_ref()
                .is_none_or(|v| v.rows() == self.chunks.len())
        );
        debug_assert!(first_new as usize + report.inserted == self.chunks.len());
        report
    }

    fn document_slot(&mut self, id: &str) -> u32 {
        if let Some(&d) = self.doc_by_id.get(id) {
            return d;
        }
        let d = self.docs.len() as u32;
        self.docs.push(DocEntry {
            id: id.to_owned(),
            chunks: Vec::new(),
        });
        self.doc_by_id.insert(id.to_owned(), d);
        d
    }

    fn intern_metadata(
        &mut self,
        metadata: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Box<[u32]> {
        let Some(map) = metadata else {
            return Box::new([]);
        };
        let mut ids = Vec::with_capacity(map.len());
        for (k, v) in map {
            let Some(value) = scalar_text(v).map(Zeroizing::new) else {
                continue;
            };
            let key = pair_key(k, &value);
            let next = self.meta_ids.len() as u32;
            let id = match self.meta_ids.get(key.as_str()) {
                Some(&id) => id,
                None => {
                    self.meta_ids.insert(key.to_string(), next);
                    next
                }
            };
            ids.push(id);
        }
        ids.sort_unstable();
        ids.dedup();
        ids.into_boxed_slice()
    }

    /// The metadata ids a filter needs; `None` when some pair is unknown (nothing
    /// can match).
    fn resolve_filter(&self, filter: Option<&MetadataFilter>) -> Option<Vec<u32>> {
        let Some(f) = filter else {
            return Some(Vec::new());
        };
        f.pairs
            .iter()
            .map(|(k, v)| self.meta_ids.get(pair_key(k, v).as_str()).copied())
            .collect()
    }

    #[inline]
    fn matches(&self, ordinal: u32, filter: &[u32]) -> bool {
        let meta = &self.chunks[ordinal as usize].meta;
        filter.iter().all(|id| meta.binary_search(id).is_ok())
    }

    fn remove_document(&mut self, document_id: &str) -> usize {
        let Some((mut key, d)) = self.doc_by_id.remove_entry(document_id) else {
            return 0;
        };
        key.zeroize();
        let mut entry = std::mem::replace(
            &mut self.docs[d as usize],
            DocEntry {
                id: String::new(),
                chunks: Vec::new(),
            },
        );
        let mut removed = 0;
        for &o in &entry.chunks {
            let oi = o as usize;
            if !self.alive[oi] {
                continue;
            }
            self.alive[oi] = false;
            self.alive_count -= 1;
            self.alive_tokens -= u64::from(self.lens[oi]);
            self.dead_count += 1;
            let h = hash_bytes(1, self.chunks[oi].chunk_id.as_bytes());
            if self.chunk_by_hash.get(&h) == Some(&o) {
                self.chunk_by_hash.remove(&h);
            }
            self.chunk_collisions.retain(|&c| c != o);
            let slot = &mut self.chunks[oi];
            slot.chunk_id.zeroize();
            slot.chunk_id = String::new();
            slot.meta.zeroize();
            slot.meta = Box::new([]);
            if let Some(v) = &mut self.vectors {
                v.clear_row(oi);
            }
            removed += 1;
        }
        entry.id.zeroize();
        entry.chunks.zeroize();
        removed
    }

    /// Merges the newest segments while the newest is at least a quarter of the
    /// one before it, or while there are too many.
    fn merge_tail(&mut self) {
        const SEGMENTS_MAX: usize = 24;
        while self.segments.len() >= 2 {
            let n = self.segments.len();
            let (a, b) = (&self.segments[n - 2], &self.segments[n - 1]);
            if b.docs.len() * 4 < a.docs.len() && n <= SEGMENTS_MAX {
                break;
            }
            let merged = merge_segments(&[a, b], &self.alive, None);
            let mut old_b = self.segments.pop().unwrap_or_default();
            let mut old_a = self.segments.pop().unwrap_or_default();
            old_a.wipe();
            old_b.wipe();
            self.segments.push(merged);
        }
    }

    /// Drops dead chunks everywhere and renumbers the live ones densely.
    fn compact(&mut self) {
        let n = self.chunks.len();
        let mut remap = vec![u32::MAX; n];
        let mut next = 0u32;
        for (o, slot) in remap.iter_mut().enumerate() {
            if self.alive[o] {
                *slot = next;
                next += 1;
            }
        }
        let segs: Vec<&Segment> = self.segments.iter().collect();
        let merged = merge_segments(&segs, &self.alive, Some(&remap));
        for mut s in std::mem::take(&mut self.segments) {
            s.wipe();
        }
        self.segments.push(merged);

        // Metadata ids still in use, renumbered.
        let mut meta_remap: Vec<u32> = vec![u32::MAX; self.meta_ids.len()];
        let mut meta_next = 0u32;
        for (o, slot) in self.chunks.iter().enumerate() {
            if self.alive[o] {
                for &m in slot.meta.iter() {
                    if meta_remap[m as usize] == u32::MAX {
                        meta_remap[m as usize] = meta_next;
                        meta_next += 1;
                    }
                }
            }
        }
        let mut meta_ids = HashMap::with_capacity(meta_next as usize);
        for (mut key, id) in self.meta_ids.drain() {
            let new = meta_remap[id as usize];
            if new == u32::MAX {
                key.zeroize();
            } else {
                meta_ids.insert(key, new);
            }
        }
        self.meta_ids = meta_ids;

        let mut chunks = Vec::with_capacity(self.alive_count);
        let mut lens = Vec::with_capacity(self.alive_count);
        for (o, mut slot) in std::mem::take(&mut self.chunks).into_iter().enumerate() {
            if self.alive[o] {
                for m in slot.meta.iter_mut() {
                    *m = meta_remap[*m as usize];
                }
                slot.meta.sort_unstable();
                chunks.push(slot);
                lens.push(self.lens[o]);
            }
        }
        if let Some(v) = &mut self.vectors {
            v.retain_rows(&self.alive);
        }
        self.chunks = chunks;
        self.lens = lens;
        self.alive = vec![true; self.chunks.len()];
        self.dead_count = 0;

        // Documents: drop removed ones, renumber the rest.
        let mut docs = Vec::with_capacity(self.doc_by_id.len());
        let mut doc_remap = vec![u32::MAX; self.docs.len()];
        for (d, mut entry) in std::mem::take(&mut self.docs).into_iter().enumerate() {
            if entry.chunks.is_empty() {
                entry.id.zeroize();
                continue;
            }
            for c in &mut entry.chunks {
                *c = remap[*c as usize];
            }
            doc_remap[d] = docs.len() as u32;
            docs.push(entry);
        }
        for slot in &mut self.chunks {
            slot.document = doc_remap[slot.document as usize];
        }
        for d in self.doc_by_id.values_mut() {
            *d = doc_remap[*d as usize];
        }
        self.docs = docs;
        for o in self.chunk_by_hash.values_mut() {
            *o = remap[*o as usize];
        }
        for o in &mut self.chunk_collisions {
            *o = remap[*o as usize];
        }
        self.chunk_by_hash.shrink_to_fit();
        debug_assert_eq!(self.chunks.len(), self.alive_count);
        debug_assert!(
            self.docs
                .iter()
                .all(|d| d.chunks.iter().all(|&c| (c as usize) < self.chunks.len()))
        );
    }

    fn bm25(
        &self,
        config: &IndexConfig,
        text: &str,
        filter: &[u32],
        limit: usize,
    ) -> Vec<(u32, f32)> {
        if self.alive_count == 0 {
            return Vec::new();
        }
        let mut terms: Vec<u64> = Vec::new();
        for_each_term(text, config.stemming, |h| terms.push(h));
        terms.sort_unstable();
        terms.dedup();
        let n = self.alive_count as f32;
        let avgdl = self.alive_tokens as f32 / n;
        let (k1, b) = (config.bm25.k1, config.bm25.b);
        // Per chunk: k1 · (1 − b + b · len / avgdl), computed on the fly.
        let norm_base = k1 * (1.0 - b);
        let norm_len = if avgdl > 0.0 { k1 * b / avgdl } else { 0.0 };
        let mut scores = vec![0f32; self.chunks.len()];
        let mut touched: Vec<u32> = Vec::new();
        let mut lists: Vec<(&[u32], &[u8])> = Vec::with_capacity(self.segments.len());
        for &term in &terms {
            lists.clear();
            lists.extend(self.segments.iter().filter_map(|s| s.postings(term)));
            let df: usize = if self.dead_count == 0 {
                lists.iter().map(|(d, _)| d.len()).sum()
            } else {
                lists
                    .iter()
                    .map(|(d, _)| d.iter().filter(|&&o| self.alive[o as usize]).count())
                    .sum()
            };
            if df == 0 {
                continue;
            }
            let df = df as f32;
            let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
            let lift = idf * (k1 + 1.0);
            for (docs, tfs) in &lists {
                for (&o, &tf) in docs.iter().zip(tfs.iter()) {
                    let oi = o as usize;
                    if !self.alive[oi] {
                        continue;
                    }
                    let tf = f32::from(tf);
                    let s = lift * tf / (tf + norm_base + norm_len * self.lens[oi] as f32);
                    let slot = &mut scores[oi];
                    if *slot == 0.0 {
                        touched.push(o);
                    }
                    *slot += s;
                }
            }
        }
        terms.zeroize();
        let mut best = Best::new(limit);
        for o in touched {
            if filter.is_empty() || self.matches(o, filter) {
                best.offer(self, o, scores[o as usize]);
            }
        }
        best.finish(self)
    }

    fn vector(&self, query: &QueryVector, filter: &[u32], limit: usize) -> Vec<(u32, f32)> {
        let Some(rows) = &self.vectors else {
            return Vec::new();
        };
        let mut best = Best::new(limit);
        for o in 0..self.chunks.len() {
            if !self.alive[o] || (!filter.is_empty() && !self.matches(o as u32, filter)) {
                continue;
            }
            if let Some(score) = rows.cosine(query, o) {
                best.offer(self, o as u32, score);
            }
        }
        best.finish(self)
    }

    /// Reciprocal rank fusion: each list adds `1 / (RRF_K + rank)`.
    fn fuse(&self, lists: &[&Vec<(u32, f32)>], limit: usize) -> Vec<(u32, f32)> {
        let mut fused: HashMap<u32, f32> = HashMap::new();
        for list in lists {
            for (rank, (o, _)) in list.iter().enumerate() {
                *fused.entry(*o).or_insert(0.0) += 1.0 / (RRF_K + rank as f32 + 1.0);
            }
        }
        let mut ranked: Vec<(u32, f32)> = fused.into_iter().collect();
        self.top(&mut ranked, limit);
        ranked
    }

    /// Keeps the best `limit`, ordered by score, ties by chunk id.
    fn top(&self, ranked: &mut Vec<(u32, f32)>, limit: usize) {
        let order = |a: &(u32, f32), b: &(u32, f32)| self.order(a, b);
        if ranked.len() > limit {
            ranked.select_nth_unstable_by(limit - 1, order);
            ranked.truncate(limit);
        }
        ranked.sort_unstable_by(order);
    }

    /// Higher score first; equal scores by chunk id, so results do not depend on
    /// insertion order.
    fn order(&self, a: &(u32, f32), b: &(u32, f32)) -> Ordering {
        b.1.total_cmp(&a.1).then_with(|| {
            self.chunks[a.0 as usize]
                .chunk_id
                .cmp(&self.chunks[b.0 as usize].chunk_id)
        })
    }

    /// Zeroes every buffer; returns the heap bytes wiped.
    fn wipe(&mut self) -> usize {
        let bytes = self.heap_bytes();
        for s in &mut self.segments {
            s.wipe();
        }
        for c in &mut self.chunks {
            c.chunk_id.zeroize();
            c.meta.zeroize();
        }
        self.lens.zeroize();
        for d in &mut self.docs {
            d.id.zeroize();
            d.chunks.zeroize();
        }
        for (mut k, _) in self.doc_by_id.drain() {
            k.zeroize();
        }
        for (mut k, _) in self.meta_ids.drain() {
            k.zeroize();
        }
        self.chunk_by_hash.clear();
        self.chunk_collisions.zeroize();
        if let Some(v) = &mut self.vectors {
            v.wipe();
        }
        bytes
    }

    #[cfg(test)]
    fn all_zero(&self) -> bool {
        self.segments.iter().all(|s| {
            s.terms.iter().all(|x| *x == 0)
                && s.docs.iter().all(|x| *x == 0)
                && s.tfs.iter().all(|x| *x == 0)
        }) && self
            .chunks
            .iter()
            .all(|c| c.chunk_id.bytes().all(|b| b == 0) && c.meta.iter().all(|m| *m == 0))
            && self.docs.iter().all(|d| d.id.bytes().all(|b| b == 0))
            && self.meta_ids.is_empty()
            && self.doc_by_id.is_empty()
            && self.vectors.as_ref().is_none_or(VectorRows::all_zero)
    }
}

/// Bounded top-k selection: candidates collect in a buffer of twice `limit`;
/// when it fills, the best `limit` are kept and the worst kept score becomes a
/// threshold below which offers are ignored. Ties with the threshold are kept,
/// so the final order (and tie-breaking by chunk id) is exact.
struct Best {
    limit: usize,
    buf: Vec<(u32, f32)>,
    threshold: f32,
}

impl Best {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            buf: Vec::with_capacity(limit * 2),
            threshold: f32::NEG_INFINITY,
        }
    }

    #[inline]
    fn offer(&mut self, inner: &Inner, o: u32, score: f32) {
        if score < self.threshold {
            return;
        }
        self.buf.push((o, score));
        if self.buf.len() >= self.limit * 2 {
            inner.top(&mut self.buf, self.limit);
            self.threshold = self.buf.last().map_or(f32::NEG_INFINITY, |x| x.1);
        }
    }

    fn finish(mut self, inner: &Inner) -> Vec<(u32, f32)> {
        inner.top(&mut self.buf, self.limit);
        self.buf
    }
}

/// A segment from `(term, doc, tf)` entries sorted by term then doc.
fn segment_from_sorted(entries: &[TermDoc]) -> Segment {
    let mut unique = 0;
    for (i, e) in entries.iter().enumerate() {
        if i == 0 || entries[i - 1].term != e.term {
            unique += 1;
        }
    }
    let mut s = Segment {
        terms: Vec::with_capacity(unique),
        offsets: Vec::with_capacity(unique + 1),
        docs: Vec::with_capacity(entries.len()),
        tfs: Vec::with_capacity(entries.len()),
    };
    for (i, e) in entries.iter().enumerate() {
        if i == 0 || entries[i - 1].term != e.term {
            s.terms.push(e.term);
            s.offsets.push(i as u32);
        }
        s.docs.push(e.doc);
        s.tfs.push(e.tf.min(u32::from(u8::MAX)) as u8);
    }
    s.offsets.push(entries.len() as u32);
    s
}

/// Called per (term, segment) with that segment's postings of the term.
type Visit<'a> = dyn FnMut(u64, &[u32], &[u8]) + 'a;

/// One segment with the live postings of `segs` (older first, so chunk ordinals
/// stay ascending), renumbered through `remap` when given.
fn merge_segments(segs: &[&Segment], alive: &[bool], remap: Option<&[u32]>) -> Segment {
    let mut all_terms: Vec<u64> = Vec::with_capacity(segs.iter().map(|s| s.terms.len()).sum());
    for s in segs {
        all_terms.extend_from_slice(&s.terms);
    }
    all_terms.sort_unstable();
    all_terms.dedup();
    // Two passes over the same walk: count, then fill buffers of exact size.
    let walk = |visit: &mut Visit<'_>| {
        let mut cursors = vec![0usize; segs.len()];
        for &t in &all_terms {
            for (s, cur) in segs.iter().zip(cursors.iter_mut()) {
                while *cur < s.terms.len() && s.terms[*cur] < t {
                    *cur += 1;
                }
                if *cur < s.terms.len() && s.terms[*cur] == t {
                    let (a, b) = (s.offsets[*cur] as usize, s.offsets[*cur + 1] as usize);
                    visit(t, &s.docs[a..b], &s.tfs[a..b]);
                }
            }
        }
    };
    let mut terms_count = 0usize;
    let mut postings_count = 0usize;
    let mut last_term = None;
    walk(&mut |t, docs, _| {
        let live = docs.iter().filter(|&&o| alive[o as usize]).count();
        if live > 0 {
            postings_count += live;
            if last_term != Some(t) {
                terms_count += 1;
                last_term = Some(t);
            }
        }
    });
    let mut out = Segment {
        terms: Vec::with_capacity(terms_count),
        offsets: Vec::with_capacity(terms_count + 1),
        docs: Vec::with_capacity(postings_count),
        tfs: Vec::with_capacity(postings_count),
    };
    walk(&mut |t, docs, tfs| {
        for (&o, &tf) in docs.iter().zip(tfs) {
            if !alive[o as usize] {
                continue;
            }
            if out.terms.last() != Some(&t) {
                out.terms.push(t);
                out.offsets.push(out.docs.len() as u32);
            }
            out.docs.push(remap.map_or(o, |r| r[o as usize]));
            out.tfs.push(tf);
        }
    });
    out.offsets.push(out.docs.len() as u32);
    all_terms.zeroize();
    debug_assert_eq!(out.terms.len(), terms_count);
    debug_assert_eq!(out.docs.len(), postings_count);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk<'a>(id: &'a str, doc: &'a str, text: &'a str) -> IndexedChunk<'a> {
        IndexedChunk {
            chunk_id: id,
            document_id: doc,
            text,
            metadata: None,
            embedding: None,
        }
    }

    fn ids(hits: &[Hit]) -> Vec<&str> {
        hits.iter().map(|h| h.chunk_id.as_str()).collect()
    }

    fn bm25<'a>(text: &'a str, top_k: usize) -> Query<'a> {
        Query {
            text,
            top_k,
            filter: None,
            mode: SearchMode::Bm25,
            embedding: None,
        }
    }

    #[test]
    fn bm25_ranks_rarer_and_denser_matches_first() {
        let idx = TenantIndex::build(
            IndexConfig::default(),
            &[
                chunk("a", "d1", "the cat sat on the mat"),
                chunk("b", "d1", "the dog chased the cat and the cat ran"),
                chunk("c", "d2", "a bird sang"),
            ],
        )
        .expect("build");
        let hits = idx.search(&bm25("cats", 10)).expect("search");
        assert_eq!(ids(&hits), ["b", "a"]);
        assert_eq!(hits[0].document_id, "d1");
        assert!(hits[0].score > hits[1].score);
        assert!(
            idx.search(&bm25("nothing here", 10))
                .expect("search")
                .is_empty()
        );
        assert_eq!(idx.search(&bm25("", 10)).expect("search"), vec![]);
    }

    #[test]
    fn removed_documents_vanish_and_scores_match_a_fresh_build() {
        let idx = TenantIndex::new(IndexConfig::default()).expect("new");
        let texts: Vec<String> = (0..40)
            .map(|i| format!("alpha beta{} gamma{} shared words here {}", i % 3, i % 7, i))
            .collect();
        let ids_: Vec<String> = (0..40).map(|i| format!("c{i}")).collect();
        let docs: Vec<String> = (0..40).map(|i| format!("d{}", i / 4)).collect();
        // Inserted one document at a time, so segments merge.
        for d in 0..10 {
            let batch: Vec<IndexedChunk<'_>> = (d * 4..d * 4 + 4)
                .map(|i| chunk(&ids_[i], &docs[i], &texts[i]))
                .collect();
            assert_eq!(idx.insert(&batch).expect("insert").inserted, 4);
        }
        assert_eq!(idx.remove_document("d3").expect("remove"), 4);
        assert_eq!(idx.remove_document("d3").expect("remove"), 0);
        let q = bm25("alpha beta1 gamma2", 50);
        let hits = idx.search(&q).expect("search");
        assert!(hits.iter().all(|h| h.document_id != "d3"));
        // A fresh build of the survivors gives the same results.
        let survivors: Vec<IndexedChunk<'_>> = (0..40)
            .filter(|&i| docs[i] != "d3")
            .map(|i| chunk(&ids_[i], &docs[i], &texts[i]))
            .collect();
        let fresh = TenantIndex::build(IndexConfig::default(), &survivors).expect("build");
        assert_eq!(fresh.search(&q).expect("search"), hits);
        // Removing enough to trigger compaction keeps that true.
        for d in ["d0", "d1", "d5"] {
            idx.remove_document(d).expect("remove");
        }
        let survivors: Vec<IndexedChunk<'_>> = (0..40)
            .filter(|&i| !["d0", "d1", "d3", "d5"].contains(&docs[i].as_str()))
            .map(|i| chunk(&ids_[i], &docs[i], &texts[i]))
            .collect();
        let fresh = TenantIndex::build(IndexConfig::default(), &survivors).expect("build");
        assert_eq!(
            fresh.search(&q).expect("search"),
            idx.search(&q).expect("search")
        );
        assert_eq!(idx.len(), 24);
    }

    #[test]
    fn insert_is_idempotent_per_chunk_id() {
        let idx = TenantIndex::new(IndexConfig::default()).expect("new");
        let c = [chunk("a", "d", "hello world")];
        assert_eq!(idx.insert(&c).expect("insert").inserted, 1);
        let again = idx.insert(&c).expect("insert");
        assert_eq!((again.inserted, again.already_present), (0, 1));
        assert_eq!(idx.search(&bm25("hello", 5)).expect("search").len(), 1);
    }

    #[test]
    fn metadata_filter_needs_every_pair() {
        let mut m1 = serde_json::Map::new();
        m1.insert("lang".into(), "en".into());
        m1.insert("year".into(), 2024.into());
        let mut m2 = serde_json::Map::new();
        m2.insert("lang".into(), "fr".into());
        let idx = TenantIndex::build(
            IndexConfig::default(),
            &[
                IndexedChunk {
                    metadata: Some(&m1),
                    ..chunk("a", "d1", "tenant isolation")
                },
                IndexedChunk {
                    metadata: Some(&m2),
                    ..chunk("b", "d2", "tenant isolation")
                },
            ],
        )
        .expect("build");
        let search = |pairs: serde_json::Value| {
            let f = MetadataFilter::from_json(pairs.as_object().expect("object")).expect("filter");
            let q = Query {
                filter: Some(&f),
                ..bm25("isolation", 10)
            };
            ids(&idx.search(&q).expect("search")).join(",")
        };
        assert_eq!(search(serde_json::json!({"lang": "en"})), "a");
        assert_eq!(search(serde_json::json!({"lang": "en", "year": 2024})), "a");
        assert_eq!(search(serde_json::json!({"lang": "en", "year": 2023})), "");
        assert_eq!(search(serde_json::json!({"lang": "de"})), "");
        assert_eq!(search(serde_json::json!({})), "a,b");
        let bad = serde_json::json!({"x": [1]});
        assert_eq!(
            MetadataFilter::from_json(bad.as_object().expect("object")),
            Err(IndexError::FilterValue)
        );
    }

    #[test]
    fn vector_and_hybrid_search() {
        let config = IndexConfig {
            vector_dims: Some(3),
            ..IndexConfig::default()
        };
        let e = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.7, 0.7, 0.0]];
        let idx = TenantIndex::build(
            config,
            &[
                IndexedChunk {
                    embedding: Some(&e[0]),
                    ..chunk("x", "d", "red apples")
                },
                IndexedChunk {
                    embedding: Some(&e[1]),
                    ..chunk("y", "d", "green pears")
                },
                IndexedChunk {
                    embedding: Some(&e[2]),
                    ..chunk("z", "d2", "apples and pears")
                },
                chunk("w", "d3", "pears without a vector"),
            ],
        )
        .expect("build");
        let q = Query {
            text: "pears",
            top_k: 3,
            filter: None,
            mode: SearchMode::Vector,
            embedding: Some(&[0.0, 2.0, 0.0]),
        };
        assert_eq!(ids(&idx.search(&q).expect("search")), ["y", "z", "x"]);
        let hybrid = idx
            .search(&Query {
                mode: SearchMode::Hybrid,
                top_k: 4,
                ..q
            })
            .expect("search");
        assert_eq!(ids(&hybrid)[0], "y");
        assert_eq!(hybrid.len(), 4);
        assert_eq!(
            idx.search(&Query {
                embedding: None,
                ..q
            }),
            Err(IndexError::QueryEmbeddingMissing)
        );
        assert_eq!(
            idx.search(&Query {
                embedding: Some(&[1.0]),
                ..q
            }),
            Err(IndexError::Dimensions {
                expected: 3,
                got: 1
            })
        );
        let bad = [IndexedChunk {
            embedding: Some(&[1.0, 2.0]),
            ..chunk("v", "d", "x")
        }];
        assert_eq!(
            idx.insert(&bad),
            Err(IndexError::Dimensions {
                expected: 3,
                got: 2
            })
        );
        // Removal clears the vector row too.
        idx.remove_document("d").expect("remove");
        assert_eq!(ids(&idx.search(&q).expect("search")), ["z"]);
    }

    #[test]
    fn bounds_are_enforced() {
        let idx = TenantIndex::new(IndexConfig {
            chunks_max: 2,
            ..IndexConfig::default()
        })
        .expect("new");
        assert_eq!(idx.search(&bm25("x", 0)), Err(IndexError::TopK));
        assert_eq!(idx.search(&bm25("x", TOP_K_MAX + 1)), Err(IndexError::TopK));
        let q = Query {
            mode: SearchMode::Vector,
            ..bm25("x", 1)
        };
        assert_eq!(idx.search(&q), Err(IndexError::VectorsNotConfigured));
        let c = [
            chunk("a", "d", "x"),
            chunk("b", "d", "y"),
            chunk("c", "d", "z"),
        ];
        assert_eq!(idx.insert(&c), Err(IndexError::TooManyChunks(2)));
        assert_eq!(idx.insert(&[chunk("", "d", "x")]), Err(IndexError::EmptyId));
        assert!(idx.is_empty());
    }

    #[test]
    fn wipe_zeroes_every_buffer() {
        let config = IndexConfig {
            vector_dims: Some(4),
            ..IndexConfig::default()
        };
        let mut m = serde_json::Map::new();
        m.insert("k".into(), "secret value".into());
        let idx = TenantIndex::build(
            config,
            &[IndexedChunk {
                metadata: Some(&m),
                embedding: Some(&[0.1, 0.2, 0.3, 0.4]),
                ..chunk("chunk-1", "doc-1", "confidential words")
            }],
        )
        .expect("build");
        assert!(idx.memory_bytes() > 0);
        assert!(idx.wipe_for_test());
    }

    #[test]
    fn memory_grows_with_content() {
        let small = TenantIndex::build(IndexConfig::default(), &[chunk("a", "d", "one two")])
            .expect("build");
        let text = "word ".repeat(50) + &(0..500).map(|i| format!("t{i} ")).collect::<String>();
        let big =
            TenantIndex::build(IndexConfig::default(), &[chunk("a", "d", &text)]).expect("build");
        assert!(big.memory_bytes() > small.memory_bytes() + 500 * 12);
    }
}
