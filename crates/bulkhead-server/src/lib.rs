//! The HTTP edge of Bulkhead: the axum router, credentials for each plane, the JSON
//! wire types, problem+json errors and metrics.
//!
//! Only this crate knows axum and the wire format. Handlers are thin: they parse,
//! call the vault with a `TenantCtx` (tenant plane) or as the operator (admin
//! plane), and shape the answer. Must never: read a tenant id from the path, query
//! or body of a tenant-plane request; put content or secrets in a log line or a
//! metric label.

#![forbid(unsafe_code)]

mod admin;
/// Moved to `bulkhead-app`; re-exported at the old path.
pub use bulkhead_app::alerts;
/// Moved to `bulkhead-app`; re-exported at the old path (the binary's config uses it).
pub use bulkhead_app::anomaly;
pub mod audit;
pub mod dashboard;
mod documents;
pub mod drift;
pub mod error;
pub mod evidence;
pub mod evidence_html;
mod extract;
pub mod flood;
pub mod gateway;
pub mod guard;
pub mod incident;
pub mod metrics;
mod reads;
/// Moved to `bulkhead-app`; re-exported at the old path.
pub use bulkhead_app::packs;
/// Moved to `bulkhead-app`; re-exported at the old path.
pub use bulkhead_app::retention;
pub mod retrieval;
pub mod sessions;
pub mod traces;
pub mod traffic;
#[cfg(feature = "weakened-isolation-for-tests")]
pub use bulkhead_app::weakened;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use bulkhead_audit::Audit;
use bulkhead_types::TenantId;
use bulkhead_vault::Vault;

use crate::error::{ApiError, ProblemKind};
use crate::metrics::Metrics;

/// Limits the HTTP layer enforces on what a client controls.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    pub body_bytes_max: usize,
    pub request_timeout: Duration,
    /// Refused credentials per client address per minute that are answered and
    /// logged; past it, 429 and nothing written (`flood.rs`). 0: no limit.
    pub auth_failures_per_address_per_min: u32,
    /// Refused credentials the whole server writes to the audit log a minute;
    /// past it they are counted and summarised in one entry (`flood.rs`). 0: no
    /// budget.
    pub auth_refusals_logged_per_min: u32,
    /// When set, `/metrics` answers only `Authorization: Bearer <token>`.
    pub metrics_token: Option<String>,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            body_bytes_max: 2 << 20,
            request_timeout: Duration::from_secs(30),
            auth_failures_per_address_per_min: 60,
            auth_refusals_logged_per_min: flood::LOGGED_PER_MIN_DEFAULT,
            metrics_token: None,
        }
    }
}

/// Everything a handler can reach: the application's services (`app`, also
/// reachable through `Deref`, so `state.vault` is `state.app.vault`) plus what
/// only the HTTP edge has.
#[derive(Clone, Debug)]
pub struct AppState {
    pub app: bulkhead_app::Services,
    pub metrics: Arc<Metrics>,
    /// Dashboard sessions and log verifications.
    pub dashboard: Arc<dashboard::Dashboard>,
    /// Refused credentials per client address (`flood.rs`).
    pub auth_flood: Arc<flood::AuthFlood>,
    pub limits: ServerLimits,
    /// SHA-256 of the admin token: comparing digests in constant time does not leak
    /// the token's length.
    admin_token_digest: [u8; 32],
}

impl std::ops::Deref for AppState {
    type Target = bulkhead_app::Services;

    fn deref(&self) -> &bulkhead_app::Services {
        &self.app
    }
}

impl AppState {
    pub fn new(
        vault: Arc<Vault>,
        audit: Arc<Audit>,
        retrieval: Arc<retrieval::Retrieval>,
        guard: Arc<guard::GuardState>,
        admin_token: &str,
        limits: ServerLimits,
    ) -> Self {
        let metrics = Arc::new(Metrics::new());
        Self {
            app: bulkhead_app::Services::new(vault, audit, retrieval, guard)
                .with_telemetry(Arc::clone(&metrics) as Arc<dyn bulkhead_app::Telemetry>),
            metrics,
            dashboard: Arc::new(dashboard::Dashboard::new()),
            auth_flood: Arc::new(flood::AuthFlood::with_budget(
                limits.auth_failures_per_address_per_min,
                limits.auth_refusals_logged_per_min,
            )),
            limits,
            admin_token_digest: bulkhead_crypto::sha256(admin_token.as_bytes()),
        }
    }

    /// The same state with this model gateway (upstreams, limits).
    pub fn with_gateway(self, gateway: gateway::GatewayState) -> Self {
        Self {
            app: self.app.clone().with_gateway(gateway),
            ..self
        }
    }

    /// The same state with these alert sinks.
    pub fn with_alerts(self, alerts: alerts::Alerts) -> Self {
        Self {
            app: self.app.clone().with_alerts(alerts),
            ..self
        }
    }

    /// The same state with these compliance packs (built-in plus the operator's).
    pub fn with_packs(self, packs: packs::Packs) -> Self {
        Self {
            app: self.app.clone().with_packs(packs),
            ..self
        }
    }

    fn admin_token_matches(&self, presented: &str) -> bool {
        let digest = bulkhead_crypto::sha256(presented.as_bytes());
        bulkhead_crypto::constant_time_eq(&digest, &self.admin_token_digest)
    }

    /// Re-seals a tenant's records under its current key in the background
    /// (`bulkhead_app::app::spawn_reseal`).
    pub fn spawn_reseal(&self, tenant: TenantId) {
        bulkhead_app::app::spawn_reseal(Arc::clone(&self.vault), tenant);
    }
}

/// The whole HTTP API. Built by a function so tests drive it with
/// `tower::ServiceExt::oneshot`, no sockets.
pub fn app(state: AppState) -> Router {
    let admin = Router::new()
        .route(
            "/tenants",
            post(admin::create_tenant).get(admin::list_tenants),
        )
        .route(
            "/tenants/{id}",
            get(admin::show_tenant).delete(admin::erase_tenant),
        )
        .route("/tenants/{id}/keys", post(admin::issue_key))
        .route("/tenants/{id}/keys/{key_id}", delete(admin::revoke_key))
        .route(
            "/tenants/{id}/keys/{key_id}/quarantine",
            post(admin::quarantine_key).delete(admin::release_key),
        )
        .route(
            "/tenants/{id}/quarantine",
            post(admin::quarantine).delete(admin::release),
        )
        .route("/tenants/{id}/rotate-key", post(admin::rotate_key))
        .route("/tenants/{id}/models", put(admin::set_models))
        .route("/tenants/{id}/policy", put(admin::set_policy))
        .route("/tenants/{id}/quotas", put(admin::set_quotas))
        .route("/tenants/{id}/usage", get(admin::tenant_usage))
        .route("/tenants/{id}/export", get(admin::export_tenant))
        .route("/policies", get(admin::policies))
        .route("/config/policy", get(drift::show))
        .route("/config/approve", post(drift::approve))
        .route("/alerts", get(admin::alerts))
        .route("/incidents", get(incident::list).post(incident::create))
        .route("/incidents/{id}", get(incident::show))
        .route("/incidents/{id}/close", post(incident::close))
        .route("/tenants/{id}/impact", get(incident::impact))
        .route("/tenants/{id}/evidence", get(evidence::show))
        .route("/alerts/{id}/ack", post(admin::ack_alert))
        .route("/audit/public-key", get(audit::public_key))
        .route("/audit/logs", get(audit::logs))
        .route("/audit/checkpoint", get(audit::operator_checkpoint))
        .route("/audit/entries", get(audit::operator_entries))
        .route("/audit/proof/inclusion", get(audit::operator_inclusion))
        .route("/audit/proof/consistency", get(audit::operator_consistency))
        .route(
            "/audit/tenants/{id}/checkpoint",
            get(audit::admin_tenant_checkpoint),
        )
        .route(
            "/audit/tenants/{id}/entries",
            get(audit::admin_tenant_entries),
        )
        .route(
            "/audit/tenants/{id}/proof/inclusion",
            get(audit::admin_tenant_inclusion),
        )
        .route(
            "/audit/tenants/{id}/proof/consistency",
            get(audit::admin_tenant_consistency),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            reads::log_admin_read,
        ));
    let tenant = Router::new()
        .route("/documents", post(documents::create).get(documents::list))
        .route(
            "/documents/{id}",
            get(documents::show).delete(documents::remove),
        )
        .route("/search", post(retrieval::search))
        .route("/guard/scan", post(guard::scan))
        .route("/chat/completions", post(gateway::chat_completions))
        .route("/embeddings", post(gateway::embeddings))
        .route("/models", get(gateway::models))
        .route("/usage", get(admin::own_usage))
        .route("/sessions", post(sessions::create))
        .route("/sessions/{id}", delete(sessions::sanitize))
        .route("/sessions/{id}/messages", get(sessions::messages))
        .route("/traces/{id}", get(traces::show))
        .route("/audit/public-key", get(audit::public_key))
        .route("/audit/checkpoint", get(audit::tenant_checkpoint))
        .route("/audit/entries", get(audit::tenant_entries))
        .route("/audit/proof/inclusion", get(audit::tenant_inclusion))
        .route("/audit/proof/consistency", get(audit::tenant_consistency))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            traffic::track,
        ));
    Router::new()
        .nest("/admin/v1", admin)
        .nest("/v1", tenant)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/problems/{code}", get(problem_doc))
        .merge(dashboard::router(&state))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.limits.body_bytes_max))
        .layer(middleware::from_fn_with_state(state.clone(), deadline))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(middleware::from_fn(audit::assign_request_id))
        .with_state(state)
}

/// Bounds the time of every request. A request cut off here acknowledged nothing
/// the client could rely on: a write either committed before the cut (and the
/// client is told to check) or not at all. Model calls are bounded by the
/// gateway's own upstream timeouts instead, which a slow model legitimately needs
/// more of.
async fn deadline(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path == "/v1/chat/completions" || path == "/v1/embeddings" {
        return next.run(request).await;
    }
    match tokio::time::timeout(state.limits.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            ProblemKind::RequestTimeout,
            "the request exceeded the server's time limit",
        )
        .into_response(),
    }
}

async fn healthz() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"ok"}"#,
    )
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.vault.store().ping().await {
        Ok(()) => (
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"status":"ready"}"#,
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed: the store did not answer");
            ApiError::new(ProblemKind::Unavailable, "the store is not answering").into_response()
        }
    }
}

async fn metrics_text(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    if let Some(token) = &state.limits.metrics_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let ok =
            bulkhead_crypto::sha256(given.as_bytes()) == bulkhead_crypto::sha256(token.as_bytes());
        if !ok {
            return ApiError::new(
                ProblemKind::Unauthorized,
                "/metrics needs `Authorization: Bearer <metrics_token>`",
            )
            .into_response();
        }
    }
    // Counting rows reads whole tables: at most once per COUNTS_TTL, however often
    // (or by however many scrapers) /metrics is read.
    if state.metrics.counts_due(state.vault.now().0) {
        match state.vault.counts().await {
            Ok(counts) => state.metrics.set_counts(&counts),
            Err(e) => tracing::warn!(error = %e, "could not count rows for metrics"),
        }
    }
    state.metrics.set_audit(state.audit.stats());
    state.metrics.set_index(&state.retrieval.cache.stats());
    state.metrics.set_quota_refusals(&state.quotas.refusals());
    let mut response = state.metrics.encode().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

async fn problem_doc(Path(code): Path<String>) -> Response {
    match ProblemKind::ALL.iter().find(|k| k.code() == code) {
        Some(kind) => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!(
                "{} ({})\n\n{}\n",
                kind.title(),
                kind.status(),
                kind.advice()
            ),
        )
            .into_response(),
        None => ApiError::not_found().into_response(),
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found()
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ProblemKind::MethodNotAllowed,
        "this endpoint does not support that method",
    )
}

/// 204 No Content.
fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}
