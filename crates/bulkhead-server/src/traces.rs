//! `GET /v1/traces/{id}` over `bulkhead_app::traces`.

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};

pub use bulkhead_app::traces::*;

use crate::AppState;
use crate::audit::Rid;
use crate::error::ApiResult;
use crate::extract::Tenant;

/// `GET /v1/traces/{id}`'s answer: the trace, and how to prove it was logged.
#[derive(Debug, Serialize, Deserialize)]
pub struct TraceResponse {
    #[serde(flatten)]
    pub trace: Trace,
    pub audit: TraceAudit,
}

/// `GET /v1/traces/{id}`: one of the tenant's own traces. A foreign or unknown id
/// is the same 404, and logged as a denied read.
pub async fn show(
    Tenant(ctx): Tenant,
    State(state): State<AppState>,
    Rid(rid): Rid,
    Path(id): Path<String>,
) -> ApiResult<Json<TraceResponse>> {
    let (trace, audit) = read(&state, &ctx, &rid, &id).await?;
    Ok(Json(TraceResponse { trace, audit }))
}
