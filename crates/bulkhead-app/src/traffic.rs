//! The traffic recorder behind the dashboard: per tenant, per second, over the last
//! 15 minutes — requests, client and server errors, a compact latency histogram —
//! and the guard's blocked leaks and redactions by finding type.
//!
//! In memory only and bounded: at most `TENANTS_MAX` tenants get their own series
//! (the rest are added up as "other"), each series is a ring of `WINDOW_SECS`
//! one-second slots, and guard series are limited to `GUARD_SERIES_MAX` kinds.
//! Time is passed in (`now`) so tests move it without sleeping. Must never hold
//! content: only tenant ids, finding types and counts go in.

use std::collections::HashMap;
use std::sync::Mutex;

use bulkhead_guard::{Action, Finding};
use bulkhead_types::UnixMillis;
use serde::Serialize;

/// Seconds of history kept.
pub const WINDOW_SECS: usize = 15 * 60;
/// Tenants with their own series; later ones are added up under `OTHER`.
pub const TENANTS_MAX: usize = 50;
/// (outcome, finding type) pairs tracked by the guard panel.
pub const GUARD_SERIES_MAX: usize = 64;
/// The series of requests no tenant was identified for (refused credentials).
pub const UNAUTHENTICATED: &str = "(unauthenticated)";
/// The series that adds up tenants beyond `TENANTS_MAX`.
pub const OTHER: &str = "(other)";

/// Upper bounds (ms) of the latency buckets; the last bucket is open-ended. A
/// roughly logarithmic scale keeps percentiles within ~25–50% with 24 counters.
const BUCKET_BOUNDS_MS: [u32; 23] = [
    1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 1500, 2000, 3000,
    5000, 10000,
];
const BUCKETS: usize = BUCKET_BOUNDS_MS.len() + 1;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// The Unix second this slot holds; a slot of another second is stale.
    second: i64,
    requests: u32,
    errors_4xx: u32,
    errors_5xx: u32,
    latency: [u32; BUCKETS],
}

#[derive(Debug)]
struct Series {
    slots: Vec<Slot>,
    last_seen_ms: i64,
}

impl Series {
    fn new() -> Self {
        Self {
            slots: vec![Slot::default(); WINDOW_SECS],
            last_seen_ms: 0,
        }
    }

    fn slot(&mut self, second: i64) -> &mut Slot {
        let slot = &mut self.slots[second.rem_euclid(WINDOW_SECS as i64) as usize];
        if slot.second != second {
            *slot = Slot {
                second,
                ..Slot::default()
            };
        }
        slot
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Count {
    second: i64,
    n: u32,
}

#[derive(Debug, Default)]
struct Inner {
    tenants: HashMap<String, Series>,
    /// (outcome, finding type) → one counter per second.
    guard: HashMap<(String, String), Vec<Count>>,
}

/// The recorder. One per process, in `AppState`.
#[derive(Debug, Default)]
pub struct Traffic {
    inner: Mutex<Inner>,
}

fn bucket_of(latency_ms: u64) -> usize {
    BUCKET_BOUNDS_MS
        .iter()
        .position(|&b| latency_ms <= u64::from(b))
        .unwrap_or(BUCKETS - 1)
}

/// The upper bound (ms) of a bucket, for percentiles; the open bucket reports
/// twice the last bound.
fn bucket_ms(bucket: usize) -> u32 {
    BUCKET_BOUNDS_MS
        .get(bucket)
        .copied()
        .unwrap_or(BUCKET_BOUNDS_MS[BUCKET_BOUNDS_MS.len() - 1] * 2)
}

/// The value below which `q` of the counted requests fall (a bucket's bound).
fn percentile(hist: &[u32; BUCKETS], q: f64) -> Option<u32> {
    let total: u64 = hist.iter().map(|&n| u64::from(n)).sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0u64;
    for (i, &n) in hist.iter().enumerate() {
        seen += u64::from(n);
        if seen >= rank {
            return Some(bucket_ms(i));
        }
    }
    Some(bucket_ms(BUCKETS - 1))
}

/// One bin of a traffic chart.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Bin {
    /// Unix second at the start of the bin.
    pub start: i64,
    pub requests: u64,
    pub errors_4xx: u64,
    pub errors_5xx: u64,
    pub p50_ms: Option<u32>,
    pub p99_ms: Option<u32>,
}

/// A tenant's (or all tenants') traffic over the window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TrafficView {
    pub tenant: String,
    pub bin_secs: i64,
    pub bins: Vec<Bin>,
    pub requests: u64,
    pub errors_4xx: u64,
    pub errors_5xx: u64,
    pub requests_per_sec: f64,
    pub p50_ms: Option<u32>,
    pub p99_ms: Option<u32>,
}

/// Guard findings of one kind over the window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GuardView {
    /// `blocked_leak`, `blocked` or `redacted`.
    pub outcome: String,
    /// The finding type (`canary`, `fingerprint`, `email`, `card`…).
    #[serde(rename = "type")]
    pub kind: String,
    pub total: u64,
    /// Counts per bin, oldest first.
    pub bins: Vec<u64>,
}

impl Traffic {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one request of `tenant` (or of `UNAUTHENTICATED`) that ended with
    /// `status` after `latency_ms`.
    pub fn record(&self, tenant: &str, now: UnixMillis, status: u16, latency_ms: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let key = if inner.tenants.contains_key(tenant) || inner.tenants.len() < TENANTS_MAX {
            tenant
        } else {
            OTHER
        };
        let series = inner
            .tenants
            .entry(key.to_owned())
            .or_insert_with(Series::new);
        series.last_seen_ms = series.last_seen_ms.max(now.0);
        let slot = series.slot(now.0.div_euclid(1000));
        slot.requests = slot.requests.saturating_add(1);
        if (400..500).contains(&status) {
            slot.errors_4xx = slot.errors_4xx.saturating_add(1);
        } else if status >= 500 {
            slot.errors_5xx = slot.errors_5xx.saturating_add(1);
        }
        let b = bucket_of(latency_ms);
        slot.latency[b] = slot.latency[b].saturating_add(1);
    }

    /// Forgets an erased tenant's series (the guard's outcome counts, which name
    /// no tenant, stay).
    pub fn forget(&self, tenant: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.tenants.remove(tenant);
    }

    /// Counts what the guard did to one answer: each finding that blocked it or
    /// was redacted, by type; findings owned by another tenant are `blocked_leak`.
    pub fn record_findings(&self, now: UnixMillis, findings: &[Finding], blocked: bool) {
        if findings.is_empty() {
            return;
        }
        let second = now.0.div_euclid(1000);
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for f in findings {
            let outcome = if f.owner.is_some() {
                "blocked_leak"
            } else if blocked && f.action == Action::Block {
                "blocked"
            } else if !blocked && f.action == Action::Redact {
                "redacted"
            } else {
                continue;
            };
            let key = (outcome.to_owned(), f.kind.to_string());
            if !inner.guard.contains_key(&key) && inner.guard.len() >= GUARD_SERIES_MAX {
                continue;
            }
            let ring = inner
                .guard
                .entry(key)
                .or_insert_with(|| vec![Count::default(); WINDOW_SECS]);
            let c = &mut ring[second.rem_euclid(WINDOW_SECS as i64) as usize];
            if c.second != second {
                *c = Count { second, n: 0 };
            }
            c.n = c.n.saturating_add(1);
        }
    }

    /// When a request of this tenant was last seen (since the process started).
    pub fn last_seen(&self, tenant: &str) -> Option<UnixMillis> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .tenants
            .get(tenant)
            .map(|s| UnixMillis(s.last_seen_ms))
            .filter(|t| t.0 > 0)
    }

    /// The series names with traffic in the window, busiest first, at most `limit`.
    pub fn tenants(&self, now: UnixMillis, limit: usize) -> Vec<(String, u64)> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let oldest = now.0.div_euclid(1000) - WINDOW_SECS as i64;
        let mut out: Vec<(String, u64)> = inner
            .tenants
            .iter()
            .map(|(name, s)| {
                let n = s
                    .slots
                    .iter()
                    .filter(|sl| sl.second > oldest)
                    .map(|sl| u64::from(sl.requests))
                    .sum();
                (name.clone(), n)
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        out.truncate(limit);
        out
    }

    /// Traffic over the window in bins of `bin_secs`, for one series (`Some`) or
    /// all of them added up (`None`).
    pub fn view(&self, tenant: Option<&str>, now: UnixMillis, bin_secs: i64) -> TrafficView {
        let bin_secs = bin_secs.clamp(1, WINDOW_SECS as i64);
        let now_s = now.0.div_euclid(1000);
        let bins_n = (WINDOW_SECS as i64 / bin_secs) as usize;
        // The last bin ends with the current second.
        let first = now_s - (bins_n as i64 * bin_secs) + 1;
        let mut counts = vec![(0u64, 0u64, 0u64, [0u32; BUCKETS]); bins_n];
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let series: Vec<&Series> = match tenant {
            Some(t) => inner.tenants.get(t).into_iter().collect(),
            None => inner.tenants.values().collect(),
        };
        let mut total_hist = [0u32; BUCKETS];
        for s in series {
            for sl in &s.slots {
                if sl.second < first || sl.second > now_s || sl.requests == 0 {
                    continue;
                }
                let bin = &mut counts[((sl.second - first) / bin_secs) as usize];
                bin.0 += u64::from(sl.requests);
                bin.1 += u64::from(sl.errors_4xx);
                bin.2 += u64::from(sl.errors_5xx);
                for (i, n) in sl.latency.iter().enumerate() {
                    bin.3[i] = bin.3[i].saturating_add(*n);
                    total_hist[i] = total_hist[i].saturating_add(*n);
                }
            }
        }
        drop(inner);
        let bins: Vec<Bin> = counts
            .iter()
            .enumerate()
            .map(|(i, c)| Bin {
                start: first + i as i64 * bin_secs,
                requests: c.0,
                errors_4xx: c.1,
                errors_5xx: c.2,
                p50_ms: percentile(&c.3, 0.50),
                p99_ms: percentile(&c.3, 0.99),
            })
            .collect();
        let requests: u64 = bins.iter().map(|b| b.requests).sum();
        TrafficView {
            tenant: tenant.unwrap_or("all").to_owned(),
            bin_secs,
            errors_4xx: bins.iter().map(|b| b.errors_4xx).sum(),
            errors_5xx: bins.iter().map(|b| b.errors_5xx).sum(),
            requests_per_sec: requests as f64 / WINDOW_SECS as f64,
            requests,
            bins,
            p50_ms: percentile(&total_hist, 0.50),
            p99_ms: percentile(&total_hist, 0.99),
        }
    }

    /// The guard's blocked leaks and redactions by type over the window, in bins of
    /// `bin_secs`, most frequent first.
    pub fn guard_view(&self, now: UnixMillis, bin_secs: i64) -> Vec<GuardView> {
        let bin_secs = bin_secs.clamp(1, WINDOW_SECS as i64);
        let now_s = now.0.div_euclid(1000);
        let bins_n = (WINDOW_SECS as i64 / bin_secs) as usize;
        let first = now_s - (bins_n as i64 * bin_secs) + 1;
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<GuardView> = inner
            .guard
            .iter()
            .map(|((outcome, kind), ring)| {
                let mut bins = vec![0u64; bins_n];
                for c in ring {
                    if c.n > 0 && c.second >= first && c.second <= now_s {
                        bins[((c.second - first) / bin_secs) as usize] += u64::from(c.n);
                    }
                }
                GuardView {
                    outcome: outcome.clone(),
                    kind: kind.clone(),
                    total: bins.iter().sum(),
                    bins,
                }
            })
            .filter(|g| g.total > 0)
            .collect();
        out.sort_by(|a, b| {
            b.total
                .cmp(&a.total)
                .then_with(|| (&a.outcome, &a.kind).cmp(&(&b.outcome, &b.kind)))
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> UnixMillis {
        UnixMillis(secs * 1000)
    }

    #[test]
    fn counts_bin_and_expire_with_the_clock() {
        let t = Traffic::new();
        let start = 1_700_000_000;
        for i in 0..10 {
            t.record("tn_a", at(start), if i < 2 { 500 } else { 200 }, 4);
        }
        t.record("tn_a", at(start + 1), 404, 900);
        let v = t.view(Some("tn_a"), at(start + 1), 10);
        assert_eq!(v.requests, 11);
        assert_eq!(v.errors_5xx, 2);
        assert_eq!(v.errors_4xx, 1);
        assert_eq!(v.p50_ms, Some(5));
        assert_eq!(v.p99_ms, Some(1000));
        assert_eq!(v.bins.len(), 90);
        assert_eq!(v.bins.iter().map(|b| b.requests).sum::<u64>(), 11);
        // Fifteen minutes later the slots are outside the window.
        let later = t.view(Some("tn_a"), at(start + WINDOW_SECS as i64 + 2), 10);
        assert_eq!(later.requests, 0);
        // A slot reused for a later second starts from zero.
        t.record("tn_a", at(start + WINDOW_SECS as i64), 200, 1);
        let v = t.view(Some("tn_a"), at(start + WINDOW_SECS as i64), 10);
        assert_eq!(v.requests, 1 + 1, "only start+1 and the new second remain");
        assert_eq!(t.last_seen("tn_a"), Some(at(start + WINDOW_SECS as i64)));
    }

    #[test]
    fn tenants_beyond_the_limit_are_added_up_as_other() {
        let t = Traffic::new();
        for i in 0..TENANTS_MAX + 5 {
            t.record(&format!("tn_{i}"), at(100), 200, 1);
        }
        let names = t.tenants(at(100), 1000);
        assert_eq!(names.len(), TENANTS_MAX + 1);
        assert!(names.contains(&(OTHER.to_owned(), 5)));
        assert_eq!(t.view(None, at(100), 60).requests, (TENANTS_MAX + 5) as u64);
    }
}
