//! Ephemeral protected content: what tenants send through (prompts of every role,
//! tool results, session history, retrieved context) is protected like a stored
//! document for a window after it was last sent. Kept per tenant, bounded in
//! entries and bytes (the oldest go first), as keyed evidence values only — never
//! text — so it can be shared between replicas through the store and rebuilt
//! after a restart.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use bulkhead_types::{DocumentId, TenantId};

use crate::GuardLimits;

/// The keyed evidence of one protected text: what `Guard::protect` returns for
/// sharing and `Guard::load_evidence` takes. No text; the digest is keyed too.
#[derive(Clone, PartialEq, Eq)]
pub struct Evidence {
    pub digest: u128,
    pub expires_at_ms: i64,
    /// Length of the text it was computed from (for the per-tenant byte bound).
    pub bytes: u32,
    pub values: Vec<u64>,
}

impl std::fmt::Debug for Evidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evidence")
            .field("expires_at_ms", &self.expires_at_ms)
            .field("values", &self.values.len())
            .finish_non_exhaustive()
    }
}

/// Version byte of the serialized form.
const FORMAT: u8 = 1;
/// Most values one serialized evidence may carry.
pub const EVIDENCE_VALUES_MAX: usize = 1 << 20;

impl Evidence {
    /// `1 ‖ digest(16) ‖ expires(8) ‖ bytes(4) ‖ n(4) ‖ values(8·n)`, little-endian.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(33 + 8 * self.values.len());
        out.push(FORMAT);
        out.extend_from_slice(&self.digest.to_le_bytes());
        out.extend_from_slice(&self.expires_at_ms.to_le_bytes());
        out.extend_from_slice(&self.bytes.to_le_bytes());
        out.extend_from_slice(&(self.values.len() as u32).to_le_bytes());
        for v in &self.values {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Parses `to_bytes`'s form; `None` for anything else.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() < 33 || b[0] != FORMAT {
            return None;
        }
        let digest = u128::from_le_bytes(b[1..17].try_into().ok()?);
        let expires_at_ms = i64::from_le_bytes(b[17..25].try_into().ok()?);
        let bytes = u32::from_le_bytes(b[25..29].try_into().ok()?);
        let n = u32::from_le_bytes(b[29..33].try_into().ok()?) as usize;
        if n > EVIDENCE_VALUES_MAX || b.len() != 33 + 8 * n {
            return None;
        }
        let values = b[33..]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        Some(Self {
            digest,
            expires_at_ms,
            bytes,
            values,
        })
    }
}

/// The index entry of an ephemeral text.
pub(crate) fn doc_id(digest: u128) -> DocumentId {
    // 4 + 32 characters of `[a-z0-9:]`: always a valid id.
    DocumentId::parse(&format!("eph:{digest:032x}"))
        .unwrap_or_else(|_| DocumentId::generate([0; 12]))
}

#[derive(Default)]
struct TenantEntries {
    by_digest: HashMap<u128, Evidence>,
    /// Digests in the order their windows were last set, with that expiry.
    queue: VecDeque<(i64, u128)>,
    bytes: usize,
}

#[derive(Default)]
pub(crate) struct Registry {
    tenants: Mutex<HashMap<TenantId, TenantEntries>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, TenantEntries>> {
        self.tenants.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Extends a known text's window; false when the text is not known.
    pub(crate) fn refresh(&self, tenant: &TenantId, digest: u128, expires: i64) -> bool {
        let mut g = self.lock();
        let Some(t) = g.get_mut(tenant) else {
            return false;
        };
        let Some(e) = t.by_digest.get_mut(&digest) else {
            return false;
        };
        if expires > e.expires_at_ms {
            e.expires_at_ms = expires;
            t.queue.push_back((expires, digest));
        }
        true
    }

    /// Adds evidence (calling `add` under the registry's lock, so an expiry cannot
    /// remove it half-way), evicting the tenant's oldest beyond the limits.
    /// Returns what was evicted, for the caller to remove from the index.
    pub(crate) fn insert(
        &self,
        tenant: &TenantId,
        ev: &Evidence,
        limits: &GuardLimits,
        _now_ms: i64,
        add: impl FnOnce(&TenantId, &Evidence),
    ) -> Vec<(TenantId, Evidence)> {
        let mut g = self.lock();
        let t = g.entry(tenant.clone()).or_default();
        if let Some(known) = t.by_digest.get_mut(&ev.digest) {
            if ev.expires_at_ms > known.expires_at_ms {
                known.expires_at_ms = ev.expires_at_ms;
                t.queue.push_back((ev.expires_at_ms, ev.digest));
            }
            return Vec::new();
        }
        add(tenant, ev);
        t.bytes += ev.bytes as usize;
        t.queue.push_back((ev.expires_at_ms, ev.digest));
        t.by_digest.insert(ev.digest, ev.clone());
        let mut evicted = Vec::new();
        while t.by_digest.len() > limits.ephemeral_entries_per_tenant_max.max(1)
            || (t.bytes > limits.ephemeral_bytes_per_tenant_max && t.by_digest.len() > 1)
        {
            let Some((_, d)) = t.queue.pop_front() else {
                break;
            };
            // A stale queue slot of a text whose window moved on is skipped only
            // if a later slot exists; the oldest text goes either way.
            if let Some(e) = t.by_digest.remove(&d) {
                t.bytes = t.bytes.saturating_sub(e.bytes as usize);
                t.queue.retain(|(_, x)| *x != d);
                evicted.push((tenant.clone(), e));
            }
        }
        evicted
    }

    /// Removes every text whose window ended by `now_ms`.
    pub(crate) fn expire(&self, now_ms: i64) -> Vec<(TenantId, Evidence)> {
        let mut g = self.lock();
        let mut out = Vec::new();
        g.retain(|tenant, t| {
            while let Some(&(exp, d)) = t.queue.front() {
                if exp > now_ms {
                    break;
                }
                t.queue.pop_front();
                let current = t.by_digest.get(&d).map(|e| e.expires_at_ms);
                if current.is_some_and(|c| c <= now_ms)
                    && let Some(e) = t.by_digest.remove(&d)
                {
                    t.bytes = t.bytes.saturating_sub(e.bytes as usize);
                    out.push((tenant.clone(), e));
                }
            }
            !t.by_digest.is_empty()
        });
        out
    }

    /// Calls `f` with the tenant's evidence, under the registry's lock: nothing
    /// is added, evicted or expired meanwhile (an insert calls the index under
    /// this lock too, so the index's entries of the tenant match what `f` sees).
    pub(crate) fn with_tenant<R>(&self, tenant: &TenantId, f: impl FnOnce(&[&Evidence]) -> R) -> R {
        let g = self.lock();
        let evidence: Vec<&Evidence> = g
            .get(tenant)
            .map(|t| t.by_digest.values().collect())
            .unwrap_or_default();
        f(&evidence)
    }

    pub(crate) fn remove_tenant(&self, tenant: &TenantId) {
        self.lock().remove(tenant);
    }

    pub(crate) fn count(&self) -> usize {
        self.lock().values().map(|t| t.by_digest.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_round_trips_and_rejects_junk() {
        let ev = Evidence {
            digest: 7,
            expires_at_ms: 1_800_000_000_000,
            bytes: 12,
            values: vec![1, 2, u64::MAX],
        };
        assert_eq!(Evidence::from_bytes(&ev.to_bytes()), Some(ev.clone()));
        let mut b = ev.to_bytes();
        b.pop();
        assert_eq!(Evidence::from_bytes(&b), None);
        assert_eq!(Evidence::from_bytes(b"junk"), None);
    }
}
