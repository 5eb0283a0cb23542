//! Prometheus metrics. Labels are route templates, methods and statuses — never a
//! path with ids in it, never content.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PlaneLabels {
    plane: String,
}

/// How long the row counts in `/metrics` are reused: counting reads whole tables.
const COUNTS_TTL_MS: i64 = 15_000;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QuotaLabels {
    quota: String,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    /// Refusals by quota (all tenants: a tenant label would make the series grow
    /// with tenants; GET /admin/v1/tenants/{id}/usage has them per tenant).
    quota_refusals: Family<QuotaLabels, Counter>,
    /// When the row counts (tenants, documents) were last read.
    counts_at_ms: std::sync::atomic::AtomicI64,
    latency: Family<RouteLabels, Histogram>,
    auth_failures: Family<PlaneLabels, Counter>,
    tenants: Gauge,
    quarantined_tenants: Gauge,
    documents: Gauge,
    audit_events: Counter,
    audit_batches: Counter,
    audit_checkpoints: Counter,
    audit_refusals: Counter,
    index_hot_tenants: Gauge,
    index_bytes: Gauge,
    index_loads: Counter,
    index_evictions: Counter,
    model_calls: Family<OutcomeLabels, Counter>,
    leaks_blocked: Counter,
    leaks_supplied: Counter,
    gateway_overhead: Histogram,
    alerts_dropped: Counter,
    guard_sync_failures: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric, registered under the `bulkhead` prefix family by family, in
    /// the order the exposition lists them.
    pub fn new() -> Self {
        let mut metrics = Self {
            registry: Registry::with_prefix("bulkhead"),
            requests: Family::default(),
            latency: Family::new_with_constructor(|| {
                Histogram::new([
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
                ])
            }),
            auth_failures: Family::default(),
            tenants: Gauge::default(),
            quarantined_tenants: Gauge::default(),
            documents: Gauge::default(),
            audit_events: Counter::default(),
            audit_batches: Counter::default(),
            audit_checkpoints: Counter::default(),
            audit_refusals: Counter::default(),
            index_hot_tenants: Gauge::default(),
            index_bytes: Gauge::default(),
            index_loads: Counter::default(),
            index_evictions: Counter::default(),
            model_calls: Family::default(),
            leaks_blocked: Counter::default(),
            leaks_supplied: Counter::default(),
            gateway_overhead: Histogram::new([
                0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
            ]),
            alerts_dropped: Counter::default(),
            quota_refusals: Family::default(),
            counts_at_ms: std::sync::atomic::AtomicI64::new(i64::MIN / 2),
            guard_sync_failures: Counter::default(),
        };
        metrics.register_http();
        metrics.register_inventory();
        metrics.register_audit();
        metrics.register_index();
        metrics.register_gateway();
        metrics.register_alerts();
        metrics
    }

    /// Registers the HTTP families: requests, latency, refused credentials.
    fn register_http(&mut self) {
        self.registry.register(
            "http_requests",
            "HTTP requests by route template, method and status",
            self.requests.clone(),
        );
        self.registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route template and method",
            self.latency.clone(),
        );
        self.registry.register(
            "auth_failures",
            "Refused credentials by plane",
            self.auth_failures.clone(),
        );
        self.registry.register(
            "quota_refusals",
            "Requests refused by a tenant quota (rate, concurrency, budget, storage), all tenants",
            self.quota_refusals.clone(),
        );
    }

    /// Mirrors the quota governor's refusal counts.
    pub fn set_quota_refusals(&self, refusals: &std::collections::BTreeMap<&'static str, u64>) {
        use std::sync::atomic::Ordering::Relaxed;
        for (quota, n) in refusals {
            self.quota_refusals
                .get_or_create(&QuotaLabels {
                    quota: (*quota).to_owned(),
                })
                .inner()
                .store(*n, Relaxed);
        }
    }

    /// Registers what is stored: tenants, quarantines, documents.
    fn register_inventory(&mut self) {
        self.registry
            .register("tenants", "Registered tenants", self.tenants.clone());
        self.registry.register(
            "quarantined_tenants",
            "Tenants in quarantine",
            self.quarantined_tenants.clone(),
        );
        self.registry.register(
            "documents",
            "Stored (sealed) documents, all tenants",
            self.documents.clone(),
        );
    }

    /// Registers the audit log: events, group commits, checkpoints, refusals to sign.
    fn register_audit(&mut self) {
        self.registry.register(
            "audit_events",
            "Audit events durably appended, all logs",
            self.audit_events.clone(),
        );
        self.registry.register(
            "audit_append_batches",
            "Store transactions that appended audit events (group commits)",
            self.audit_batches.clone(),
        );
        self.registry.register(
            "audit_checkpoints_signed",
            "Audit checkpoints signed",
            self.audit_checkpoints.clone(),
        );
        self.registry.register("audit_signing_refusals", "Times a checkpoint was refused because the stored log no longer matched a signed one: page someone", self.audit_refusals.clone());
    }

    /// Registers the search-index cache: hot tenants, memory, loads, evictions.
    fn register_index(&mut self) {
        self.registry.register(
            "index_hot_tenants",
            "Tenants whose search index is in memory",
            self.index_hot_tenants.clone(),
        );
        self.registry.register(
            "index_bytes",
            "Memory held by hot search indexes (bounded by index_cache_bytes_max)",
            self.index_bytes.clone(),
        );
        self.registry.register(
            "index_loads",
            "Search indexes built from sealed chunks (cold opens)",
            self.index_loads.clone(),
        );
        self.registry.register(
            "index_evictions",
            "Search indexes dropped and wiped to stay within the memory budget",
            self.index_evictions.clone(),
        );
    }

    /// Registers the model gateway: calls by outcome, blocked leaks, overhead.
    fn register_gateway(&mut self) {
        self.registry.register(
            "model_calls",
            "Model calls through the gateway by outcome (ok, redacted, blocked, upstream_timeout…)",
            self.model_calls.clone(),
        );
        self.registry.register("leaks_blocked", "Answers blocked because they carried another tenant's canary or fingerprints: investigate each", self.leaks_blocked.clone());
        self.registry.register("leaks_supplied", "Of the blocked answers, those whose foreign data the model's own input carried (the requester supplied it, or its owner planted it there): alerted as foreign_data_supplied, never contained", self.leaks_supplied.clone());
        self.registry.register(
            "gateway_overhead_seconds",
            "Time the gateway added to a model call (everything but waiting on the upstream)",
            self.gateway_overhead.clone(),
        );
    }

    /// Registers alert delivery.
    fn register_alerts(&mut self) {
        self.registry.register("alerts_dropped", "Alerts not delivered to the webhook because its queue was full (they are still logged)", self.alerts_dropped.clone());
        self.registry.register("guard_sync_failures", "Tenants a replica's output guard could not reload from the shared store in a sync pass (it keeps the older set and retries)", self.guard_sync_failures.clone());
    }

    pub fn model_call(&self, outcome: &str, overhead: std::time::Duration) {
        self.model_calls
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
        self.gateway_overhead.observe(overhead.as_secs_f64());
    }

    pub fn auth_failure(&self, plane: &str) {
        self.auth_failures
            .get_or_create(&PlaneLabels {
                plane: plane.to_owned(),
            })
            .inc();
    }

    /// Whether the row counts are older than `COUNTS_TTL_MS` (and, if so, marks
    /// them fresh: one caller refreshes them).
    pub fn counts_due(&self, now_ms: i64) -> bool {
        use std::sync::atomic::Ordering::AcqRel;
        let last = self.counts_at_ms.load(std::sync::atomic::Ordering::Acquire);
        now_ms - last >= COUNTS_TTL_MS
            && self
                .counts_at_ms
                .compare_exchange(last, now_ms, AcqRel, std::sync::atomic::Ordering::Acquire)
                .is_ok()
    }

    pub fn set_counts(&self, counts: &bulkhead_vault::StoreCounts) {
        let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.tenants.set(clamp(counts.tenants));
        self.quarantined_tenants
            .set(clamp(counts.quarantined_tenants));
        self.documents.set(clamp(counts.documents));
    }

    /// Mirrors the audit service's running totals (kept there as atomics).
    pub fn set_audit(&self, stats: &bulkhead_audit::AuditStats) {
        use std::sync::atomic::Ordering::Relaxed;
        for (counter, value) in [
            (&self.audit_events, &stats.events),
            (&self.audit_batches, &stats.batches),
            (&self.audit_checkpoints, &stats.checkpoints),
            (&self.audit_refusals, &stats.refusals),
        ] {
            counter.inner().store(value.load(Relaxed), Relaxed);
        }
    }

    /// Mirrors the hot index cache's statistics.
    pub fn set_index(&self, stats: &bulkhead_index::CacheStats) {
        use std::sync::atomic::Ordering::Relaxed;
        let clamp = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.index_hot_tenants.set(clamp(stats.entries));
        self.index_bytes.set(clamp(stats.bytes));
        self.index_loads.inner().store(stats.misses, Relaxed);
        self.index_evictions.inner().store(stats.evictions, Relaxed);
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Counts and times every request under its route template.
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().as_str().to_owned();
    let start = Instant::now();
    let response = next.run(request).await;
    let metrics: &Arc<Metrics> = &state.metrics;
    metrics
        .latency
        .get_or_create(&RouteLabels {
            route: route.clone(),
            method: method.clone(),
        })
        .observe(start.elapsed().as_secs_f64());
    metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            method,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

impl bulkhead_app::Telemetry for Metrics {
    fn alert_dropped(&self) {
        self.alerts_dropped.inc();
    }

    fn leak_blocked(&self) {
        self.leaks_blocked.inc();
    }

    fn leak_supplied(&self) {
        self.leaks_supplied.inc();
    }

    fn guard_sync_failed(&self) {
        self.guard_sync_failures.inc();
    }

    fn model_call(&self, outcome: &str, overhead: std::time::Duration) {
        Metrics::model_call(self, outcome, overhead);
    }
}
