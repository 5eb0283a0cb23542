//! Configuration drift at the edge: `GET /admin/v1/config/policy` and
//! `POST /admin/v1/config/approve` over `bulkhead_app::drift`, and the gateway's
//! part of the policy document (the gateway lives here).

use axum::Json;
use axum::extract::State;

pub use bulkhead_app::drift::{DriftStatus, GatewayPolicy, UpstreamPolicy};

use crate::AppState;
use crate::audit::Rid;
use crate::error::ApiResult;
use crate::extract::Admin;

/// What the policy document records of this server's model gateway.
pub fn gateway_policy(state: &AppState) -> GatewayPolicy {
    let upstreams = state
        .gateway
        .gateway
        .upstreams()
        .map(|u| {
            let c = &u.config;
            UpstreamPolicy {
                name: c.name.clone(),
                kind: match c.kind {
                    bulkhead_gateway::UpstreamKind::Http { .. } => "http",
                    _ => "builtin",
                },
                region: c.region.as_ref().map(ToString::to_string),
                models: c.models.clone(),
                cache_salt: c.cache_salt,
                prompt_cache_key: c.prompt_cache_key,
            }
        })
        .collect();
    GatewayPolicy {
        upstreams,
        plant_canaries: state.gateway.plant_canaries,
        trace_commit: state.gateway.trace_commit.as_str(),
        trace_ttl_secs: state.gateway.trace_ttl_secs,
    }
}

/// The effective policy document of this server.
pub fn effective_policy(state: &AppState) -> serde_json::Value {
    bulkhead_app::drift::effective_policy(state, &gateway_policy(state))
}

/// Where the effective policy stands against the approved baseline.
pub async fn status(state: &AppState) -> ApiResult<DriftStatus> {
    Ok(bulkhead_app::drift::status(state, &gateway_policy(state)).await?)
}

/// Checks for drift and raises `config_drift` if there is any (at start).
pub async fn check(state: &AppState) -> ApiResult<DriftStatus> {
    Ok(bulkhead_app::drift::check(state, &gateway_policy(state)).await?)
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
    bulkhead_app::drift::approve(&state, &gateway_policy(&state), &rid).await?;
    Ok(Json(status(&state).await?))
}
