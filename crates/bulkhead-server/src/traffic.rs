//! The traffic recorder's middleware: counts and times each tenant-plane request
//! under its tenant (the recorder itself is `bulkhead_app::traffic`).

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use bulkhead_types::TenantId;

pub use bulkhead_app::traffic::*;

use crate::AppState;

/// Filled by the `Tenant` extractor once a request's key is verified, so the
/// recorder knows whose request it was without reading anything from the request.
#[derive(Debug, Clone, Default)]
pub struct TenantSlot(pub Arc<OnceLock<TenantId>>);

/// Middleware on the tenant plane: counts and times each request under its tenant.
/// Latency is until the response head (a stream's body continues after it).
pub async fn track(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let slot = TenantSlot::default();
    request.extensions_mut().insert(slot.clone());
    let started = Instant::now();
    let response = next.run(request).await;
    let latency_ms = started.elapsed().as_millis() as u64;
    let tenant = slot.0.get().map_or(UNAUTHENTICATED, |t| t.as_str());
    state.traffic.record(
        tenant,
        state.vault.now(),
        response.status().as_u16(),
        latency_ms,
    );
    response
}
