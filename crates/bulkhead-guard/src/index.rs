//! The global fingerprint map: keyed fingerprint → the tenants whose stored text
//! holds it, each with a reference count (how many of that tenant's documents hold
//! it), so removing a document takes away exactly what indexing it added.
//!
//! Layout, for memory: 64 shards (by bits 32–37 of the fingerprint, so each shard
//! still sees uniformly distributed low and high bits) of a hash map from `u64` to
//! an 8-byte slot. The slot holds a single owner and its count inline — the common
//! case — or points into the shard's side table of owner lists. Keys are SipHash
//! outputs under a secret key, so the maps use them as their own hash (no second
//! hashing, and no way for a client to aim collisions at one bucket).
//!
//! Tenants are interned to `u32` here; the map never holds a `TenantId`.
//!
//! A value held by more than `LISTED_OWNERS_MAX` tenants is saturated: common
//! for every policy, its owners no longer listed. Erasing a tenant leaves such a
//! value saturated (it is common by the data of the others), and documents
//! removed one by one still count it down to zero.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bulkhead_types::{DocumentId, TenantId};

const SHARDS: usize = 64;
const MULTI: u32 = u32::MAX;
/// A value held by more tenants than any policy's `shared_min_owners` can ask
/// about: common (a word everyone uses), never evidence, so its owners are no
/// longer listed — only its total reference count, to know when it is gone.
/// Listing them would make every lookup of a common word walk thousands of owners.
const SATURATED: u32 = u32::MAX - 1;
/// Owners listed before a value becomes `SATURATED`.
const LISTED_OWNERS_MAX: usize = crate::policy::SHARED_MIN_OWNERS_MAX as usize + 1;

/// Uses a `u64` key as its own hash. Only for keys that are already uniformly
/// distributed and secret (keyed fingerprints).
#[derive(Default, Clone, Copy)]
pub(crate) struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Not used for u64 keys; kept total for safety.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = x;
    }
}

type FpMap = HashMap<u64, Slot, BuildHasherDefault<IdentityHasher>>;

#[derive(Debug, Clone, Copy)]
struct Slot {
    /// The owner, or `MULTI` when `refs` indexes the side table.
    tenant: u32,
    refs: u32,
}

#[derive(Default)]
struct Shard {
    map: FpMap,
    multi: Vec<Vec<(u32, u32)>>,
    free: Vec<u32>,
}

impl Shard {
    fn add(&mut self, fp: u64, t: u32) {
        let slot = self.map.entry(fp).or_insert(Slot { tenant: t, refs: 0 });
        if slot.tenant == t || slot.tenant == SATURATED {
            slot.refs = slot.refs.saturating_add(1);
            return;
        }
        if slot.tenant == MULTI {
            let idx = slot.refs as usize;
            let list = &mut self.multi[idx];
            let full = list.len() >= LISTED_OWNERS_MAX;
            match list.iter_mut().find(|(o, _)| *o == t) {
                Some((_, n)) => *n = n.saturating_add(1),
                None if full => {
                    let total = list.iter().fold(1u32, |acc, (_, n)| acc.saturating_add(*n));
                    self.multi[idx] = Vec::new();
                    self.free.push(idx as u32);
                    *slot = Slot {
                        tenant: SATURATED,
                        refs: total,
                    };
                }
                None => list.push((t, 1)),
            }
            return;
        }
        // Second owner: move both to a list.
        let list = vec![(slot.tenant, slot.refs), (t, 1)];
        let idx = match self.free.pop() {
            Some(i) => {
                self.multi[i as usize] = list;
                i
            }
            None => {
                self.multi.push(list);
                (self.multi.len() - 1) as u32
            }
        };
        *slot = Slot {
            tenant: MULTI,
            refs: idx,
        };
    }

    /// Takes one reference of `t` away. Returns false if `t` did not hold `fp`.
    fn remove(&mut self, fp: u64, t: u32) -> bool {
        let Some(slot) = self.map.get_mut(&fp) else {
            return false;
        };
        if slot.tenant == t || slot.tenant == SATURATED {
            // A saturated value's owners are not known; its count still is.
            slot.refs -= 1;
            if slot.refs == 0 {
                self.map.remove(&fp);
            }
            return true;
        }
        if slot.tenant != MULTI {
            return false;
        }
        let idx = slot.refs as usize;
        let list = &mut self.multi[idx];
        let Some(pos) = list.iter().position(|(o, _)| *o == t) else {
            return false;
        };
        list[pos].1 -= 1;
        if list[pos].1 == 0 {
            list.swap_remove(pos);
        }
        if list.len() == 1 {
            let (o, n) = list[0];
            *slot = Slot { tenant: o, refs: n };
            self.multi[idx] = Vec::new();
            self.free.push(idx as u32);
        }
        true
    }

    fn remove_tenant(&mut self, t: u32) -> usize {
        let mut removed = 0;
        let multi = &mut self.multi;
        let free = &mut self.free;
        self.map.retain(|_, slot| {
            if slot.tenant == t {
                removed += 1;
                return false;
            }
            if slot.tenant == MULTI {
                let idx = slot.refs as usize;
                let list = &mut multi[idx];
                let before = list.len();
                list.retain(|(o, _)| *o != t);
                if list.len() != before {
                    removed += 1;
                }
                if list.len() == 1 {
                    let (o, n) = list[0];
                    *slot = Slot { tenant: o, refs: n };
                    multi[idx] = Vec::new();
                    free.push(idx as u32);
                }
            }
            true
        });
        removed
    }

    fn memory_bytes(&self) -> usize {
        // hashbrown: a power-of-two bucket count holding at most 7/8 of it, one
        // control byte per bucket plus a group's worth of trailing control bytes.
        let cap = self.map.capacity();
        let buckets = if cap == 0 {
            0
        } else {
            (cap * 8).div_ceil(7).next_power_of_two()
        };
        let bucket_bytes = std::mem::size_of::<(u64, Slot)>() + 1;
        let lists: usize = self
            .multi
            .iter()
            .map(|l| std::mem::size_of::<Vec<(u32, u32)>>() + l.capacity() * 8)
            .sum();
        buckets * bucket_bytes + 16 + lists + self.free.capacity() * 4
    }
}

#[derive(Default)]
struct Tenants {
    by_id: HashMap<TenantId, u32>,
    ids: Vec<Option<TenantId>>,
    free: Vec<u32>,
}

#[derive(Debug, Clone, Copy)]
struct DocEntry {
    digest: u128,
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    // A panic while holding the lock cannot leave a half-applied update that
    // matters for safety: the worst case is a stale reference count.
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why an index update was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IndexRefusal {
    AlreadyIndexed,
    NotIndexed,
    TextMismatch,
}

#[derive(Default)]
pub(crate) struct FingerprintIndex {
    shards: Vec<RwLock<Shard>>,
    tenants: RwLock<Tenants>,
    /// Held across a document's whole update, so an index and a delete of the same
    /// document cannot interleave.
    docs: Mutex<HashMap<(u32, DocumentId), DocEntry>>,
}

impl std::fmt::Debug for FingerprintIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FingerprintIndex").finish_non_exhaustive()
    }
}

#[inline]
fn shard_of(fp: u64) -> usize {
    ((fp >> 32) as usize) & (SHARDS - 1)
}

/// Counts of the index, for metrics and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IndexStats {
    pub tenants: usize,
    pub documents: usize,
    /// Distinct fingerprints.
    pub fingerprints: usize,
    /// Fingerprints held by more than one tenant.
    pub shared_fingerprints: usize,
    /// Estimated heap bytes of the fingerprint map (shards and owner lists).
    pub map_bytes: usize,
}

impl FingerprintIndex {
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            ..Self::default()
        }
    }

    pub(crate) fn tenant_index(&self, tenant: &TenantId) -> Option<u32> {
        read(&self.tenants).by_id.get(tenant).copied()
    }

    pub(crate) fn tenant_id(&self, idx: u32) -> Option<TenantId> {
        read(&self.tenants).ids.get(idx as usize).cloned().flatten()
    }

    fn intern(&self, tenant: &TenantId) -> u32 {
        let mut t = write(&self.tenants);
        if let Some(&i) = t.by_id.get(tenant) {
            return i;
        }
        let i = match t.free.pop() {
            Some(i) => {
                t.ids[i as usize] = Some(tenant.clone());
                i
            }
            None => {
                t.ids.push(Some(tenant.clone()));
                (t.ids.len() - 1) as u32
            }
        };
        t.by_id.insert(tenant.clone(), i);
        i
    }

    fn apply(&self, fps: &[u64], t: u32, add: bool) -> usize {
        let mut by_shard: Vec<Vec<u64>> = vec![Vec::new(); SHARDS];
        for &fp in fps {
            by_shard[shard_of(fp)].push(fp);
        }
        let mut changed = 0;
        for (i, list) in by_shard.iter().enumerate() {
            if list.is_empty() {
                continue;
            }
            let mut shard = write(&self.shards[i]);
            for &fp in list {
                if add {
                    shard.add(fp, t);
                    changed += 1;
                } else if shard.remove(fp, t) {
                    changed += 1;
                }
            }
        }
        changed
    }

    /// Adds a document's fingerprints (`fps` distinct). Refused if the document is
    /// already indexed.
    pub(crate) fn add_document(
        &self,
        tenant: &TenantId,
        doc: &DocumentId,
        digest: u128,
        fps: &[u64],
    ) -> Result<usize, IndexRefusal> {
        let mut docs = lock(&self.docs);
        let t = self.intern(tenant);
        let key = (t, doc.clone());
        if docs.contains_key(&key) {
            return Err(IndexRefusal::AlreadyIndexed);
        }
        docs.insert(key, DocEntry { digest });
        Ok(self.apply(fps, t, true))
    }

    /// Removes what `add_document` added; the digest proves the caller passed the
    /// same text.
    pub(crate) fn remove_document(
        &self,
        tenant: &TenantId,
        doc: &DocumentId,
        digest: u128,
        fps: &[u64],
    ) -> Result<usize, IndexRefusal> {
        let mut docs = lock(&self.docs);
        let t = self.tenant_index(tenant).ok_or(IndexRefusal::NotIndexed)?;
        let key = (t, doc.clone());
        let entry = docs.get(&key).ok_or(IndexRefusal::NotIndexed)?;
        if entry.digest != digest {
            return Err(IndexRefusal::TextMismatch);
        }
        docs.remove(&key);
        let removed = self.apply(fps, t, false);
        // Paired with `add_document`: every fingerprint the text yields was added
        // for this tenant by it, so every one must still be there to remove.
        debug_assert_eq!(removed, fps.len(), "index lost references of a document");
        Ok(removed)
    }

    /// Replaces everything the tenant holds with `entries` (each a document, its
    /// digest and its distinct fingerprints), shard by shard: a lookup at any
    /// instant finds the tenant's old references or its new ones, never neither,
    /// which removing the tenant and adding it again would not give. A document
    /// id given twice counts once (`add_document` would refuse the second). A
    /// full sweep of the map: call it off the async runtime.
    pub(crate) fn replace_tenant(&self, tenant: &TenantId, entries: &[(DocumentId, u128, &[u64])]) {
        let mut docs = lock(&self.docs);
        let t = self.intern(tenant);
        docs.retain(|(owner, _), _| *owner != t);
        let mut by_shard: Vec<Vec<u64>> = vec![Vec::new(); SHARDS];
        for (doc, digest, fps) in entries {
            let key = (t, doc.clone());
            if docs.contains_key(&key) {
                continue;
            }
            docs.insert(key, DocEntry { digest: *digest });
            for &fp in *fps {
                by_shard[shard_of(fp)].push(fp);
            }
        }
        for (shard, list) in self.shards.iter().zip(&by_shard) {
            let mut shard = write(shard);
            shard.remove_tenant(t);
            for &fp in list {
                shard.add(fp, t);
            }
        }
    }

    /// Drops every fingerprint reference and document of a tenant (a full sweep
    /// of the map: call it off the async runtime).
    pub(crate) fn remove_tenant(&self, tenant: &TenantId) -> usize {
        let mut docs = lock(&self.docs);
        let Some(t) = self.tenant_index(tenant) else {
            return 0;
        };
        docs.retain(|(owner, _), _| *owner != t);
        let removed = self.shards.iter().map(|s| write(s).remove_tenant(t)).sum();
        let mut tenants = write(&self.tenants);
        tenants.by_id.remove(tenant);
        tenants.ids[t as usize] = None;
        // Reusable now: no slot names `t` any more, and new documents of any
        // tenant wait for `docs`, which this function holds.
        tenants.free.push(t);
        removed
    }

    /// Calls `f` with the owners of `fp` (tenant index and reference count).
    #[cfg(test)]
    pub(crate) fn with_owners<R>(&self, fp: u64, f: impl FnOnce(&[(u32, u32)]) -> R) -> R {
        let shard = read(&self.shards[shard_of(fp)]);
        match shard.map.get(&fp) {
            None => f(&[]),
            Some(slot) if slot.tenant == SATURATED => f(&[]),
            Some(slot) if slot.tenant == MULTI => f(&shard.multi[slot.refs as usize]),
            Some(slot) => f(&[(slot.tenant, slot.refs)]),
        }
    }

    /// Looks up many values, taking each shard's lock once (a lock per lookup
    /// would serialize the cache misses). For every value `i` that belongs to
    /// other tenants only — not to `me`, and to fewer than `shared_min` tenants —
    /// appends `(i, owner)` per owner to `out`, sorted; every value `me` holds
    /// goes into `own`, sorted.
    pub(crate) fn foreign_owners_and_own(
        &self,
        fps: &[u64],
        me: Option<u32>,
        shared_min: usize,
        order: &mut Vec<u32>,
        out: &mut Vec<(u32, u32)>,
        own: &mut Vec<u32>,
    ) {
        out.clear();
        own.clear();
        order.clear();
        order.extend(0..fps.len() as u32);
        order.sort_unstable_by_key(|&i| shard_of(fps[i as usize]));
        let mut at = 0;
        while at < order.len() {
            let shard_idx = shard_of(fps[order[at] as usize]);
            let shard = read(&self.shards[shard_idx]);
            while at < order.len() && shard_of(fps[order[at] as usize]) == shard_idx {
                let i = order[at];
                at += 1;
                let owners: &[(u32, u32)] = match shard.map.get(&fps[i as usize]) {
                    None => continue,
                    Some(slot) if slot.tenant == SATURATED => continue,
                    Some(slot) if slot.tenant == MULTI => &shard.multi[slot.refs as usize],
                    Some(slot) => {
                        if Some(slot.tenant) == me {
                            own.push(i);
                            continue;
                        }
                        out.push((i, slot.tenant));
                        continue;
                    }
                };
                if me.is_some_and(|m| owners.iter().any(|o| o.0 == m)) {
                    own.push(i);
                    continue;
                }
                if owners.len() >= shared_min {
                    continue;
                }
                out.extend(owners.iter().map(|&(o, _)| (i, o)));
            }
        }
        out.sort_unstable();
        own.sort_unstable();
    }

    pub(crate) fn stats(&self) -> IndexStats {
        let mut s = IndexStats {
            tenants: read(&self.tenants).by_id.len(),
            documents: lock(&self.docs).len(),
            ..IndexStats::default()
        };
        for shard in &self.shards {
            let shard = read(shard);
            s.fingerprints += shard.map.len();
            s.shared_fingerprints += shard
                .map
                .values()
                .filter(|v| v.tenant == MULTI || v.tenant == SATURATED)
                .count();
            s.map_bytes += shard.memory_bytes();
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(i: u8) -> TenantId {
        TenantId::from_random([i; 12])
    }

    fn doc(s: &str) -> DocumentId {
        DocumentId::parse(s).expect("doc id")
    }

    fn owners(ix: &FingerprintIndex, fp: u64) -> Vec<(u32, u32)> {
        let mut v = ix.with_owners(fp, <[(u32, u32)]>::to_vec);
        v.sort_unstable();
        v
    }

    #[test]
    fn reference_counts_follow_documents() {
        let ix = FingerprintIndex::new();
        let (a, b) = (tenant(1), tenant(2));
        ix.add_document(&a, &doc("d1"), 1, &[10, 20]).expect("add");
        ix.add_document(&a, &doc("d2"), 2, &[20, 30]).expect("add");
        ix.add_document(&b, &doc("d1"), 3, &[20]).expect("add");
        let (ta, tb) = (
            ix.tenant_index(&a).expect("a"),
            ix.tenant_index(&b).expect("b"),
        );
        assert_eq!(owners(&ix, 20), vec![(ta, 2), (tb, 1)]);
        assert_eq!(
            ix.add_document(&a, &doc("d1"), 1, &[10]),
            Err(IndexRefusal::AlreadyIndexed)
        );
        assert_eq!(
            ix.remove_document(&a, &doc("d1"), 99, &[10, 20]),
            Err(IndexRefusal::TextMismatch)
        );
        ix.remove_document(&a, &doc("d1"), 1, &[10, 20])
            .expect("remove");
        assert_eq!(owners(&ix, 10), vec![]);
        assert_eq!(owners(&ix, 20), vec![(ta, 1), (tb, 1)]);
        ix.remove_document(&b, &doc("d1"), 3, &[20])
            .expect("remove");
        assert_eq!(owners(&ix, 20), vec![(ta, 1)]);
        assert_eq!(ix.stats().shared_fingerprints, 0);
        ix.remove_document(&a, &doc("d2"), 2, &[20, 30])
            .expect("remove");
        assert_eq!(ix.stats().fingerprints, 0);
    }

    #[test]
    fn a_value_held_by_very_many_tenants_saturates_and_still_counts_down() {
        let ix = FingerprintIndex::new();
        let n = LISTED_OWNERS_MAX + 3;
        let ts: Vec<TenantId> = (0..n)
            .map(|i| {
                TenantId::from_random([
                    (i % 250) as u8,
                    (i / 250) as u8,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                ])
            })
            .collect();
        for t in &ts {
            ix.add_document(t, &doc("d"), 1, &[42]).expect("add");
        }
        assert_eq!(
            owners(&ix, 42),
            vec![],
            "saturated: owners no longer listed"
        );
        let (mut order, mut out, mut own) = (Vec::new(), Vec::new(), Vec::new());
        let me = ix.tenant_index(&ts[0]);
        ix.foreign_owners_and_own(&[42], me, 64, &mut order, &mut out, &mut own);
        assert!(
            out.is_empty() && own.is_empty(),
            "common: no evidence either way"
        );
        for t in &ts {
            ix.remove_document(t, &doc("d"), 1, &[42]).expect("remove");
        }
        assert_eq!(ix.stats().fingerprints, 0, "the last reference removes it");
    }

    #[test]
    fn removing_a_tenant_sweeps_its_references() {
        let ix = FingerprintIndex::new();
        let (a, b, c) = (tenant(1), tenant(2), tenant(3));
        ix.add_document(&a, &doc("x"), 1, &[1, 2, 3]).expect("add");
        ix.add_document(&b, &doc("x"), 1, &[2, 3]).expect("add");
        ix.add_document(&c, &doc("x"), 1, &[3]).expect("add");
        assert_eq!(ix.remove_tenant(&b), 2);
        let ta = ix.tenant_index(&a).expect("a");
        let tc = ix.tenant_index(&c).expect("c");
        assert_eq!(owners(&ix, 2), vec![(ta, 1)]);
        assert_eq!(owners(&ix, 3), vec![(ta, 1), (tc, 1)]);
        assert_eq!(ix.tenant_index(&b), None);
        assert_eq!(ix.stats().documents, 2);
    }
}
