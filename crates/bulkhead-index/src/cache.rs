//! `IndexCache`: the hot tenants' indexes, least recently used first out, bounded
//! by a memory budget in bytes.
//!
//! A tenant that is not in the cache costs nothing here. Its index is built on
//! first use by a loader the caller supplies (which reads and opens the tenant's
//! sealed chunks); concurrent first uses of one tenant wait for a single load.
//! When the sum of [`TenantIndex::memory_bytes`] passes the budget, the least
//! recently used indexes are evicted; an evicted index is dropped — and so
//! zeroized — when the last search holding it finishes. Large indexes are dropped
//! on a blocking thread, since wiping tens of megabytes takes milliseconds.
//!
//! Writes: [`IndexCache::hot`] returns the index of a tenant that is in memory or
//! being loaded (waiting for the load), never starting one. The owner applies an
//! insert or a removal to it *after* committing the change to the store. Because
//! `insert` is idempotent per chunk id and `remove_document` is idempotent, a
//! load that raced with the write is corrected whichever way it read the store.
//!
//! Must never: hand one tenant's index to a request for another (the key is the
//! `TenantId` the caller authenticated; the loader is called with nothing else);
//! keep an index after `invalidate`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bulkhead_types::TenantId;
use lru::LruCache;

use crate::index::TenantIndex;

/// Indexes larger than this are dropped (and wiped) on a blocking thread.
const DROP_INLINE_BYTES_MAX: usize = 1 << 20;

/// Counters since the cache was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    /// Loads started (first uses and reloads after eviction).
    pub misses: u64,
    pub load_failures: u64,
    pub evictions: u64,
    pub invalidations: u64,
    /// Indexes held now.
    pub entries: usize,
    /// Sum of their `memory_bytes`, as last measured.
    pub bytes: usize,
    pub budget_bytes: usize,
}

/// One in-flight load. The async mutex is held by the loading task; waiters
/// queue on it and find the result, or `None` if that load failed.
#[derive(Debug, Default)]
struct Loading {
    result: tokio::sync::Mutex<Option<Arc<TenantIndex>>>,
    invalidated: AtomicBool,
}

#[derive(Debug)]
struct Entry {
    index: Arc<TenantIndex>,
    /// `memory_bytes` when last accounted.
    bytes: usize,
}

#[derive(Debug)]
struct Inner {
    lru: LruCache<TenantId, Entry>,
    loading: HashMap<TenantId, Arc<Loading>>,
    bytes: usize,
    stats: CacheStats,
}

/// Tenants whose store generation is remembered at most (see
/// [`IndexCache::observe_generation`]); a forgotten one costs one reload.
const GENERATIONS_LEN_MAX: usize = 65_536;

/// A byte-bounded LRU of tenants' indexes.
#[derive(Debug)]
pub struct IndexCache {
    budget_bytes: usize,
    inner: Mutex<Inner>,
    generations: Mutex<LruCache<TenantId, (i64, u64)>>,
}

impl IndexCache {
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            budget_bytes,
            inner: Mutex::new(Inner {
                lru: LruCache::unbounded(),
                loading: HashMap::new(),
                bytes: 0,
                stats: CacheStats::default(),
            }),
            generations: Mutex::new(LruCache::new(
                std::num::NonZeroUsize::new(GENERATIONS_LEN_MAX).expect("a positive constant"),
            )),
        }
    }

    /// For a store that other server processes write too: `generation` is what
    /// the store says now about the tenant's chunks (any value that changes with
    /// every chunk written or deleted). If it is not the one this cache last saw,
    /// the tenant's index may lack another replica's writes, so it is dropped and
    /// the next use loads afresh. Called before each search, this bounds staleness
    /// across replicas to zero: a search sees every write committed before it began.
    pub fn observe_generation(&self, tenant: &TenantId, generation: (i64, u64)) {
        let previous = self
            .generations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .put(tenant.clone(), generation);
        if previous != Some(generation) {
            self.invalidate(tenant);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The critical sections below only move entries and add numbers; none
        // can leave the map half-changed, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The tenant's index, loading it with `loader` if it is cold. Concurrent
    /// callers for one cold tenant wait for one load; if it fails, each waiter
    /// tries its own loader in turn. The result of a load that was invalidated
    /// while it ran is not used.
    pub async fn get_or_load<F, Fut, E>(
        &self,
        tenant: &TenantId,
        loader: F,
    ) -> Result<Arc<TenantIndex>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<TenantIndex, E>>,
    {
        let mut loader = Some(loader);
        loop {
            let slot = {
                let mut inner = self.lock();
                if let Some(index) = inner.touch(tenant, true) {
                    inner.stats.hits += 1;
                    let evicted = inner.evict(self.budget_bytes);
                    drop(inner);
                    dispose(evicted);
                    return Ok(index);
                }
                inner
                    .loading
                    .entry(tenant.clone())
                    .or_insert_with(|| Arc::new(Loading::default()))
                    .clone()
            };
            let mut result = slot.result.lock().await;
            if slot.invalidated.load(Ordering::Acquire) {
                continue;
            }
            if let Some(index) = result.as_ref() {
                self.lock().stats.hits += 1;
                return Ok(index.clone());
            }
            let Some(load) = loader.take() else {
                // Only reachable if our own load failed and we looped, which
                // returns instead; kept total for safety.
                continue;
            };
            self.lock().stats.misses += 1;
            match load().await {
                Ok(index) => {
                    let index = Arc::new(index);
                    *result = Some(index.clone());
                    let evicted = {
                        let mut inner = self.lock();
                        let current = inner
                            .loading
                            .get(tenant)
                            .is_some_and(|s| Arc::ptr_eq(s, &slot));
                        if current && !slot.invalidated.load(Ordering::Acquire) {
                            inner.loading.remove(tenant);
                            let bytes = index.memory_bytes();
                            inner.bytes += bytes;
                            if let Some(old) = inner.lru.put(
                                tenant.clone(),
                                Entry {
                                    index: index.clone(),
                                    bytes,
                                },
                            ) {
                                inner.bytes -= old.bytes;
                            }
                            inner.evict(self.budget_bytes)
                        } else {
                            Vec::new()
                        }
                    };
                    drop(result);
                    dispose(evicted);
                    return Ok(index);
                }
                Err(e) => {
                    drop(result);
                    let mut inner = self.lock();
                    inner.stats.load_failures += 1;
                    // Forget the slot unless someone is waiting on it (they
                    // cloned it under this lock, so the count is exact here).
                    if Arc::strong_count(&slot) == 2
                        && inner
                            .loading
                            .get(tenant)
                            .is_some_and(|s| Arc::ptr_eq(s, &slot))
                    {
                        inner.loading.remove(tenant);
                    }
                    return Err(e);
                }
            }
        }
    }

    /// The index of a tenant that is hot, or being loaded (waits for that load);
    /// `None` for a cold tenant. Never starts a load. For applying writes.
    pub async fn hot(&self, tenant: &TenantId) -> Option<Arc<TenantIndex>> {
        let slot = {
            let mut inner = self.lock();
            if let Some(index) = inner.touch(tenant, false) {
                let evicted = inner.evict(self.budget_bytes);
                drop(inner);
                dispose(evicted);
                return Some(index);
            }
            inner.loading.get(tenant)?.clone()
        };
        let result = slot.result.lock().await;
        result.clone()
    }

    /// Drops the tenant's index (if hot) and disowns any load in flight, so the
    /// next use loads afresh. For erasure, quarantine and key rotation.
    pub fn invalidate(&self, tenant: &TenantId) {
        let evicted = {
            let mut inner = self.lock();
            inner.stats.invalidations += 1;
            if let Some(slot) = inner.loading.remove(tenant) {
                slot.invalidated.store(true, Ordering::Release);
            }
            match inner.lru.pop(tenant) {
                Some(entry) => {
                    inner.bytes -= entry.bytes;
                    vec![entry.index]
                }
                None => Vec::new(),
            }
        };
        dispose(evicted);
    }

    /// Re-measures a hot tenant's index after a write and evicts if over budget.
    /// (`get_or_load` and `hot` do this too; call it after large inserts.)
    pub fn refresh(&self, tenant: &TenantId) {
        let evicted = {
            let mut inner = self.lock();
            inner.touch(tenant, false);
            inner.evict(self.budget_bytes)
        };
        dispose(evicted);
    }

    pub fn stats(&self) -> CacheStats {
        let inner = self.lock();
        CacheStats {
            entries: inner.lru.len(),
            bytes: inner.bytes,
            budget_bytes: self.budget_bytes,
            ..inner.stats
        }
    }

    pub fn contains(&self, tenant: &TenantId) -> bool {
        self.lock().lru.contains(tenant)
    }
}

impl Inner {
    /// The hot index, its size re-accounted; promoted in the LRU if `promote`.
    fn touch(&mut self, tenant: &TenantId, promote: bool) -> Option<Arc<TenantIndex>> {
        let entry = if promote {
            self.lru.get_mut(tenant)?
        } else {
            self.lru.peek_mut(tenant)?
        };
        let now = entry.index.memory_bytes();
        let before = std::mem::replace(&mut entry.bytes, now);
        let index = entry.index.clone();
        self.bytes = self.bytes - before + now;
        Some(index)
    }

    /// Pops least recently used entries until within budget.
    fn evict(&mut self, budget: usize) -> Vec<Arc<TenantIndex>> {
        let mut out = Vec::new();
        while self.bytes > budget {
            let Some((_, entry)) = self.lru.pop_lru() else {
                break;
            };
            self.bytes -= entry.bytes;
            self.stats.evictions += 1;
            out.push(entry.index);
        }
        out
    }
}

/// Drops evicted indexes outside the lock: large ones on a blocking thread when
/// a runtime is there, so an async task is not held up by the wipe.
fn dispose(evicted: Vec<Arc<TenantIndex>>) {
    for index in evicted {
        if index.memory_bytes() > DROP_INLINE_BYTES_MAX
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            handle.spawn_blocking(move || drop(index));
        } else {
            drop(index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{IndexConfig, IndexedChunk};
    use std::sync::atomic::AtomicUsize;

    fn tenant(i: u8) -> TenantId {
        TenantId::from_random([i; 12])
    }

    fn build(words: usize) -> TenantIndex {
        let text: String = (0..words).map(|i| format!("w{i} ")).collect();
        TenantIndex::build(
            IndexConfig::default(),
            &[IndexedChunk {
                chunk_id: "c",
                document_id: "d",
                text: &text,
                metadata: None,
                embedding: None,
            }],
        )
        .expect("build")
    }

    #[tokio::test]
    async fn concurrent_first_uses_load_once() {
        let cache = Arc::new(IndexCache::new(1 << 30));
        let loads = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (cache, loads) = (cache.clone(), loads.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_load(&tenant(1), || async {
                        loads.fetch_add(1, Ordering::SeqCst);
                        tokio::task::yield_now().await;
                        Ok::<_, ()>(build(10))
                    })
                    .await
                    .expect("load")
            }));
        }
        let mut indexes = Vec::new();
        for t in tasks {
            indexes.push(t.await.expect("task"));
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert!(indexes.iter().all(|i| Arc::ptr_eq(i, &indexes[0])));
        let s = cache.stats();
        assert_eq!((s.misses, s.hits, s.entries), (1, 7, 1));
    }

    #[tokio::test]
    async fn failed_loads_are_retried_by_the_next_caller() {
        let cache = IndexCache::new(1 << 30);
        let r = cache
            .get_or_load(&tenant(1), || async { Err::<TenantIndex, _>("store down") })
            .await;
        assert_eq!(r.err(), Some("store down"));
        let ok = cache
            .get_or_load(&tenant(1), || async { Ok::<_, &str>(build(3)) })
            .await;
        assert!(ok.is_ok());
        let s = cache.stats();
        assert_eq!((s.load_failures, s.misses, s.entries), (1, 2, 1));
    }

    #[tokio::test]
    async fn budget_evicts_least_recently_used() {
        let one = build(200).memory_bytes();
        let cache = IndexCache::new(one * 2 + one / 2);
        for i in 0..3 {
            cache
                .get_or_load(&tenant(i), || async { Ok::<_, ()>(build(200)) })
                .await
                .expect("load");
            if i == 1 {
                // Touch tenant 0 so tenant 1 is the oldest when 2 arrives.
                cache
                    .get_or_load(&tenant(0), || async { Ok::<_, ()>(build(200)) })
                    .await
                    .expect("hit");
            }
        }
        assert!(cache.contains(&tenant(0)));
        assert!(!cache.contains(&tenant(1)));
        assert!(cache.contains(&tenant(2)));
        let s = cache.stats();
        assert_eq!(s.evictions, 1);
        assert!(s.bytes <= s.budget_bytes);
    }

    #[tokio::test]
    async fn hot_never_loads_and_invalidate_forgets() {
        let cache = IndexCache::new(1 << 30);
        assert!(cache.hot(&tenant(1)).await.is_none());
        let index = cache
            .get_or_load(&tenant(1), || async { Ok::<_, ()>(build(5)) })
            .await
            .expect("load");
        let hot = cache.hot(&tenant(1)).await.expect("hot");
        assert!(Arc::ptr_eq(&index, &hot));
        cache.invalidate(&tenant(1));
        assert!(cache.hot(&tenant(1)).await.is_none());
        assert_eq!(cache.stats().entries, 0);
        assert_eq!(cache.stats().bytes, 0);
    }

    #[tokio::test]
    async fn a_load_invalidated_midway_is_not_cached() {
        let cache = Arc::new(IndexCache::new(1 << 30));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let c2 = cache.clone();
        let task = tokio::spawn(async move {
            c2.get_or_load(&tenant(1), || async move {
                rx.await.expect("signal");
                Ok::<_, ()>(build(5))
            })
            .await
        });
        // Wait until the load is registered, then invalidate it.
        while !cache.lock().loading.contains_key(&tenant(1)) {
            tokio::task::yield_now().await;
        }
        cache.invalidate(&tenant(1));
        tx.send(()).expect("send");
        task.await.expect("task").expect("load");
        assert!(!cache.contains(&tenant(1)));
    }
}
