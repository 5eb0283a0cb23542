//! The traffic recorder's middleware: counts and times each tenant-plane request
//! under its tenant (the recorder itself is `bulkhead_app::traffic`).

use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use bulkhead_app::quota::RequestPermit;
use bulkhead_types::TenantId;
use http_body::{Frame, SizeHint};

pub use bulkhead_app::traffic::*;

use crate::AppState;

/// Filled by the `Tenant` extractor once a request's key is verified, so the
/// recorder knows whose request it was without reading anything from the request.
#[derive(Debug, Clone, Default)]
pub struct TenantSlot(pub Arc<OnceLock<TenantId>>);

/// Filled by the `Tenant` extractor with the request's quota permit, so that it
/// outlives the handler: the response body holds it until its last byte (a
/// streamed answer counts as in flight while it streams).
#[derive(Debug, Clone, Default)]
pub struct PermitSlot(pub Arc<Mutex<Option<RequestPermit>>>);

/// A response body that holds something (a permit) until it is sent or dropped.
struct Holding<T> {
    inner: Body,
    _held: T,
}

impl<T: Send + Unpin + 'static> http_body::Body for Holding<T> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Middleware on the tenant plane: counts and times each request under its tenant.
/// Latency is until the response head (a stream's body continues after it).
pub async fn track(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let slot = TenantSlot::default();
    let permit = PermitSlot::default();
    request.extensions_mut().insert(slot.clone());
    request.extensions_mut().insert(permit.clone());
    let started = Instant::now();
    let mut response = next.run(request).await;
    let held = permit.0.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(held) = held {
        response = response.map(|inner| Body::new(Holding { inner, _held: held }));
    }
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
