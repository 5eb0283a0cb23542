//! `/v1/sessions…`: the wire types and handlers over `bulkhead_app::sessions`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use bulkhead_app::sessions::*;

use crate::audit::Rid;
use crate::error::ApiResult;
use crate::extract::{OptionalJson, Tenant};
use crate::{AppState, no_content};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSessionRequest {
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SessionResponse {
    pub id: String,
    pub created_at: String,
    pub expires_at: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SessionMessage {
    pub role: String,
    pub content: Value,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SessionMessagesResponse {
    pub id: String,
    pub messages: Vec<SessionMessage>,
}

/// `POST /v1/sessions`.
pub async fn create(
    Tenant(ctx): Tenant,
    State(state): State<AppState>,
    Rid(rid): Rid,
    OptionalJson(req): OptionalJson<CreateSessionRequest>,
) -> ApiResult<Response> {
    let created =
        bulkhead_app::sessions::create(&state, &ctx, &rid, state.gateway.sessions, req.ttl_seconds)
            .await?;
    Ok((
        StatusCode::CREATED,
        Json(SessionResponse {
            id: created.id,
            created_at: created.created_at.rfc3339(),
            expires_at: Some(created.expires_at.rfc3339()),
        }),
    )
        .into_response())
}

/// `GET /v1/sessions/{id}/messages`.
pub async fn messages(
    Tenant(ctx): Tenant,
    State(state): State<AppState>,
    Rid(rid): Rid,
    Path(id): Path<String>,
) -> ApiResult<Json<SessionMessagesResponse>> {
    let session = read(&state, &ctx, &rid, state.gateway.sessions, &id).await?;
    let messages = session
        .messages
        .into_iter()
        .map(|m| SessionMessage {
            role: m.message.role().to_owned(),
            content: m.message.0.get("content").cloned().unwrap_or(Value::Null),
            created_at: m.created_at.rfc3339(),
            trace_id: m.trace_id,
        })
        .collect();
    Ok(Json(SessionMessagesResponse { id, messages }))
}

/// `DELETE /v1/sessions/{id}`: sanitize. The session and every message are
/// deleted in one transaction.
pub async fn sanitize(
    Tenant(ctx): Tenant,
    State(state): State<AppState>,
    Rid(rid): Rid,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    bulkhead_app::sessions::sanitize(&state, &ctx, &rid, &id).await?;
    Ok(no_content())
}
