//! Configuration drift at the edge: `GET /admin/v1/config/policy` and
//! `POST /admin/v1/config/approve` over `bulkhead_app::drift`.

use axum::Json;
use axum::extract::State;

pub use bulkhead_app::drift::{DriftStatus, GatewayPolicy, UpstreamPolicy, gateway_policy};

use crate::AppState;
use crate::audit::Rid;
use crate::error::ApiResult;
use crate::extract::Admin;

/// The effective policy document of this server.
pub fn effective_policy(state: &AppState) -> serde_json::Value {
    bulkhead_app::drift::effective_policy(state)
}

/// Where the effective policy stands against the approved baseline.
pub async fn status(state: &AppState) -> ApiResult<DriftStatus> {
    Ok(bulkhead_app::drift::status(state).await?)
}

/// Checks for drift and raises `config_drift` if there is any (at start).
pub async fn check(state: &AppState) -> ApiResult<DriftStatus> {
    Ok(bulkhead_app::drift::check(state).await?)
}

/// `GET /admin/v1/config/policy`: the effective policy, its hash, the approved
/// hash and what differs.
pub async fn show(_: Admin, State(state): State<AppState>) -> ApiResult<Json<DriftStatus>> {
    Ok(Json(status(&state).await?))
}

/// `POST /admin/v1/config/approve`: makes the effective policy the baseline;
/// logged as `config.approve` with both hashes.
pub async fn approve(
    _: Admin,
    State(state): State<AppState>,
    Rid(rid): Rid,
) -> ApiResult<Json<DriftStatus>> {
    bulkhead_app::drift::approve(&state, &rid).await?;
    Ok(Json(status(&state).await?))
}
