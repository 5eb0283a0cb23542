//! Conversation sessions: a tenant's memory of a chat, sealed per message, with a
//! TTL, used as context when a chat names the session, and sanitized on DELETE.
//!
//! A session is a record of kind `session`; each message is a part
//! (`<session id>#<seq>`) of kind `session_message`, sealed on its own, so an
//! append writes only the new messages. Sanitizing deletes the session and every
//! message in one transaction (SQLite's `secure_delete` zeroes the freed pages)
//! and wipes the opened copies from memory as they drop. A foreign session id is
//! the same 404 as a missing one.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bulkhead_app::EventKind;
use bulkhead_audit::{Attr, Subject};
use bulkhead_gateway::openai::Message;
use bulkhead_types::{LogId, RecordKind, UnixMillis};
use bulkhead_vault::{NewSealed, TenantCtx, VaultError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use zeroize::Zeroizing;

use crate::audit::{RequestId, Rid, Trail};
use crate::error::{ApiError, ApiResult, ProblemKind};
use crate::extract::{OptionalJson, Tenant};
use crate::{AppState, no_content};

/// Limits on sessions.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// The TTL of a session created without one.
    pub ttl_secs_default: u64,
    /// Messages a session may hold; a full session refuses new turns (409).
    pub messages_max: u32,
    /// The most recent messages put in front of the model.
    pub context_messages_max: usize,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            ttl_secs_default: 7 * 24 * 3600,
            messages_max: 1000,
            context_messages_max: 50,
        }
    }
}

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

/// A stored message's sealed body.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageBody {
    message: serde_json::Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trace_id: Option<String>,
}

/// A session opened for a chat: its expiry (new messages share it) and its
/// messages in order.
#[derive(Debug)]
pub(crate) struct OpenSession {
    pub id: String,
    pub expires_at: Option<UnixMillis>,
    pub messages: Vec<StoredMessage>,
    next_seq: u64,
}

#[derive(Debug)]
pub(crate) struct StoredMessage {
    pub record_id: String,
    pub message: Message,
    /// `sha256:<hex>` of the message's text.
    pub hash: String,
    pub created_at: UnixMillis,
    pub trace_id: Option<String>,
}

fn valid_session_id(raw: &str) -> bool {
    raw.len() == 28
        && raw.starts_with("ses_")
        && raw[4..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn part_id(session: &str, seq: u64) -> String {
    format!("{session}#{seq:08}")
}

fn seq_of(part: &str) -> Option<u64> {
    part.rsplit_once('#')?.1.parse().ok()
}

/// `POST /v1/sessions`.
pub async fn create(
    Tenant(ctx): Tenant,
    State(state): State<AppState>,
    Rid(rid): Rid,
    OptionalJson(req): OptionalJson<CreateSessionRequest>,
) -> ApiResult<Response> {
    let limits = state.gateway.sessions;
    // The tenant's pack may set the session TTL, which is then also the longest.
    let pack = state
        .packs
        .for_tenant(&state.vault.tenant(ctx.tenant()).await?.policy);
    let ttl_max = pack
        .retention
        .session_ttl_secs
        .unwrap_or(state.vault.limits().ttl_secs_max)
        .min(state.vault.limits().ttl_secs_max);
    let ttl = req
        .ttl_seconds
        .unwrap_or(
            pack.retention
                .session_ttl_secs
                .unwrap_or(limits.ttl_secs_default),
        )
        .min(state.vault.limits().ttl_secs_max);
    if ttl == 0 || ttl > ttl_max {
        return Err(ApiError::new(
            ProblemKind::InvalidRequest,
            format!(
                "ttl_seconds must be between 1 and {ttl_max} (the tenant's policy `{}`)",
                pack.name
            ),
        ));
    }
    let bytes: [u8; 12] = bulkhead_crypto::random_array().map_err(|_| ApiError::internal())?;
    let id = format!("ses_{}", bulkhead_types::hex_lower(&bytes));
    let now = state.vault.now();
    let expires_at = now.saturating_add_secs(ttl);
    state
        .vault
        .put_sealed(
            &ctx,
            vec![NewSealed {
                kind: RecordKind::SESSION,
                record_id: id.clone(),
                body: Zeroizing::new(br#"{"v":1}"#.to_vec()),
                expires_at: Some(expires_at),
            }],
        )
        .await?;
    Trail::tenant(&state, &ctx, EventKind::SessionCreate, &rid)
        .subject(Subject::new("session", &*id))
        .attr(
            "ttl_secs",
            Attr::Int(i64::try_from(ttl).unwrap_or(i64::MAX)),
        )
        .record(LogId::Tenant(ctx.tenant().clone()))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(SessionResponse {
            id,
            created_at: now.rfc3339(),
            expires_at: Some(expires_at.rfc3339()),
        }),
    )
        .into_response())
}

/// Opens a session and its messages, or logs a denied read and answers 404.
pub(crate) async fn open(
    state: &AppState,
    ctx: &TenantCtx,
    rid: &RequestId,
    kind: EventKind,
    id: &str,
) -> ApiResult<OpenSession> {
    let session = if valid_session_id(id) {
        state.vault.get_sealed(ctx, RecordKind::SESSION, id).await?
    } else {
        None
    };
    let Some(session) = session else {
        Trail::tenant(state, ctx, kind, rid)
            .denied("not_found")
            .record(LogId::Tenant(ctx.tenant().clone()))
            .await?;
        return Err(ApiError::not_found());
    };
    let limits = state.gateway.sessions;
    let parts = state
        .vault
        .sealed_parts(
            ctx,
            RecordKind::SESSION_MESSAGE,
            id,
            limits.messages_max + 1,
        )
        .await?;
    let mut messages = Vec::with_capacity(parts.len());
    let mut next_seq = 0;
    for part in parts {
        let body: MessageBody = serde_json::from_slice(part.body.as_slice()).map_err(|_| {
            tracing::error!("a stored session message does not parse");
            ApiError::from(VaultError::Integrity)
        })?;
        next_seq = next_seq.max(seq_of(&part.record_id).map_or(0, |s| s + 1));
        let message = Message(body.message);
        let hash = bulkhead_ledger::event::content_hash(message.text().as_bytes());
        messages.push(StoredMessage {
            record_id: part.record_id,
            message,
            hash,
            created_at: part.created_at,
            trace_id: body.trace_id,
        });
    }
    Ok(OpenSession {
        id: id.to_owned(),
        expires_at: session.expires_at,
        messages,
        next_seq,
    })
}

impl OpenSession {
    /// The messages put in front of the model: the most recent ones.
    pub fn context(&self, max: usize) -> &[StoredMessage] {
        &self.messages[self.messages.len().saturating_sub(max)..]
    }

    /// Stores a turn (the client's new messages and the answer as delivered).
    pub async fn append(
        &mut self,
        state: &AppState,
        ctx: &TenantCtx,
        turn: Vec<Message>,
        trace_id: &str,
    ) -> ApiResult<()> {
        let limits = state.gateway.sessions;
        if self.messages.len() + turn.len() > limits.messages_max as usize {
            return Err(ApiError::new(
                ProblemKind::Conflict,
                format!(
                    "the session holds its maximum of {} messages; start a new session",
                    limits.messages_max
                ),
            ));
        }
        let mut records = Vec::with_capacity(turn.len());
        for (i, message) in turn.into_iter().enumerate() {
            let body = MessageBody {
                message: message.0,
                trace_id: Some(trace_id.to_owned()),
            };
            records.push(NewSealed {
                kind: RecordKind::SESSION_MESSAGE,
                record_id: part_id(&self.id, self.next_seq + i as u64),
                body: Zeroizing::new(serde_json::to_vec(&body).map_err(|_| ApiError::internal())?),
                expires_at: self.expires_at,
            });
        }
        let n = records.len() as u64;
        match state.vault.put_sealed(ctx, records).await {
            Ok(()) => {
                self.next_seq += n;
                Ok(())
            }
            // Another request appended to the same session meanwhile; this turn is
            // not lost silently, the client is told.
            Err(VaultError::Conflict) => Err(ApiError::new(
                ProblemKind::Conflict,
                "another request wrote to this session at the same time; the answer was delivered but this turn was not stored",
            )),
            Err(e) => Err(e.into()),
        }
    }
}

/// `GET /v1/sessions/{id}/messages`.
pub async fn messages(
    Tenant(ctx): Tenant,
    State(state): State<AppState>,
    Rid(rid): Rid,
    Path(id): Path<String>,
) -> ApiResult<Json<SessionMessagesResponse>> {
    let session = open(&state, &ctx, &rid, EventKind::SessionRead, &id).await?;
    let mut trail = Trail::tenant(&state, &ctx, EventKind::SessionRead, &rid)
        .subject(Subject::new("session", &*id));
    let mut out = Vec::with_capacity(session.messages.len());
    for m in session.messages {
        trail = trail.subject(Subject {
            kind: "session_message".into(),
            id: m.record_id,
            hash: Some(m.hash),
        });
        out.push(SessionMessage {
            role: m.message.role().to_owned(),
            content: m.message.0.get("content").cloned().unwrap_or(Value::Null),
            created_at: m.created_at.rfc3339(),
            trace_id: m.trace_id,
        });
    }
    trail.record(LogId::Tenant(ctx.tenant().clone())).await?;
    Ok(Json(SessionMessagesResponse { id, messages: out }))
}

/// `DELETE /v1/sessions/{id}`: sanitize. The session and every message are
/// deleted in one transaction.
pub async fn sanitize(
    Tenant(ctx): Tenant,
    State(state): State<AppState>,
    Rid(rid): Rid,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let deleted = valid_session_id(&id)
        && state
            .vault
            .delete_sealed(&ctx, RecordKind::SESSION, &id, RecordKind::SESSION_MESSAGE)
            .await?;
    let log = LogId::Tenant(ctx.tenant().clone());
    if !deleted {
        Trail::tenant(&state, &ctx, EventKind::SessionSanitize, &rid)
            .denied("not_found")
            .record(log)
            .await?;
        return Err(ApiError::not_found());
    }
    Trail::tenant(&state, &ctx, EventKind::SessionSanitize, &rid)
        .subject(Subject::new("session", &*id))
        .record(log)
        .await?;
    Ok(no_content())
}
