//! Conversation sessions: a tenant's memory of a chat, sealed per message, with a
//! TTL, used as context when a chat names the session, and sanitized on demand.
//!
//! A session is a record of kind `session`; each message is a part
//! (`<session id>#<seq>`) of kind `session_message`, sealed on its own, so an
//! append writes only the new messages, and only while the session exists (checked
//! in the append's transaction, so a call in flight when its session is sanitized
//! cannot bring messages back). Sanitizing deletes the session and every
//! message in one transaction (SQLite's `secure_delete` zeroes the freed pages)
//! and wipes the opened copies from memory as they drop. A foreign session id is
//! the same `NotFound` as a missing one, and logged as a denied read.

use bulkhead_audit::{Attr, Subject};
use bulkhead_gateway::openai::Message;
use bulkhead_types::{LogId, RecordKind, UnixMillis};
use bulkhead_vault::{NewSealed, TenantCtx, VaultError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use zeroize::Zeroizing;

use crate::error::{AppError, AppResult};
use crate::kinds::EventKind;
use crate::services::Services;
use crate::trail::{RequestId, Trail};

/// Limits on sessions.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// The TTL of a session created without one.
    pub ttl_secs_default: u64,
    /// Messages a session may hold; a full session refuses new turns (409).
    pub messages_max: u32,
    /// Bytes of messages a session may hold (their stored JSON), so that what
    /// opening a session loads is bounded whatever its messages hold; a full
    /// session refuses new turns (409).
    pub bytes_max: u64,
    /// The most recent messages put in front of the model.
    pub context_messages_max: usize,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            ttl_secs_default: 7 * 24 * 3600,
            messages_max: 1000,
            bytes_max: 4 << 20,
            context_messages_max: 50,
        }
    }
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
pub struct OpenSession {
    pub id: String,
    pub expires_at: Option<UnixMillis>,
    pub messages: Vec<StoredMessage>,
    next_seq: u64,
    /// The stored size of its messages.
    bytes: u64,
}

#[derive(Debug)]
pub struct StoredMessage {
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

/// A session just created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    pub id: String,
    pub created_at: UnixMillis,
    pub expires_at: UnixMillis,
}

/// Creates a session for the tenant. Its TTL is the one asked for, else the
/// tenant's pack's, else the server's; the pack's TTL is also the longest.
pub async fn create(
    app: &Services,
    ctx: &TenantCtx,
    rid: &RequestId,
    limits: SessionLimits,
    ttl_seconds: Option<u64>,
) -> AppResult<NewSession> {
    let pack = app
        .packs
        .for_tenant(&app.vault.tenant(ctx.tenant()).await?.policy);
    let ttl_limit = app.vault.limits().ttl_secs_max;
    let ttl_max = pack
        .retention
        .session_ttl_secs
        .unwrap_or(ttl_limit)
        .min(ttl_limit);
    let ttl = ttl_seconds
        .unwrap_or(
            pack.retention
                .session_ttl_secs
                .unwrap_or(limits.ttl_secs_default),
        )
        .min(ttl_limit);
    if ttl == 0 || ttl > ttl_max {
        return Err(AppError::invalid(format!(
            "ttl_seconds must be between 1 and {ttl_max} (the tenant's policy `{}`)",
            pack.name
        )));
    }
    let bytes: [u8; 12] = bulkhead_crypto::random_array().map_err(|_| AppError::Internal)?;
    let id = format!("ses_{}", bulkhead_types::hex_lower(&bytes));
    let now = app.vault.now();
    let expires_at = now.saturating_add_secs(ttl);
    app.vault
        .put_sealed(
            ctx,
            vec![NewSealed {
                kind: RecordKind::SESSION,
                record_id: id.clone(),
                body: Zeroizing::new(br#"{"v":1}"#.to_vec()),
                expires_at: Some(expires_at),
            }],
        )
        .await?;
    Trail::tenant(app, ctx, EventKind::SessionCreate, rid)
        .subject(Subject::new("session", &*id))
        .attr(
            "ttl_secs",
            Attr::Int(i64::try_from(ttl).unwrap_or(i64::MAX)),
        )
        .record(LogId::Tenant(ctx.tenant().clone()))
        .await?;
    Ok(NewSession {
        id,
        created_at: now,
        expires_at,
    })
}

/// Opens a session and its messages, or logs a denied read and answers 404.
pub async fn open(
    app: &Services,
    ctx: &TenantCtx,
    rid: &RequestId,
    limits: SessionLimits,
    kind: EventKind,
    id: &str,
) -> AppResult<OpenSession> {
    let session = if valid_session_id(id) {
        app.vault.get_sealed(ctx, RecordKind::SESSION, id).await?
    } else {
        None
    };
    let Some(session) = session else {
        Trail::tenant(app, ctx, kind, rid)
            .denied("not_found")
            .record(LogId::Tenant(ctx.tenant().clone()))
            .await?;
        return Err(AppError::NotFound);
    };
    let parts = app
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
    let mut bytes = 0u64;
    for part in parts {
        bytes += part.body.as_slice().len() as u64;
        let body: MessageBody = serde_json::from_slice(part.body.as_slice()).map_err(|_| {
            tracing::error!("a stored session message does not parse");
            AppError::from(VaultError::Integrity)
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
        bytes,
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
        app: &Services,
        ctx: &TenantCtx,
        limits: SessionLimits,
        turn: Vec<Message>,
        trace_id: &str,
    ) -> AppResult<()> {
        if self.messages.len() + turn.len() > limits.messages_max as usize {
            return Err(AppError::Conflict(format!(
                "the session holds its maximum of {} messages; start a new session",
                limits.messages_max
            )));
        }
        let mut records = Vec::with_capacity(turn.len());
        let mut added = 0u64;
        for (i, message) in turn.into_iter().enumerate() {
            let body = MessageBody {
                message: message.0,
                trace_id: Some(trace_id.to_owned()),
            };
            let body = Zeroizing::new(serde_json::to_vec(&body).map_err(|_| AppError::Internal)?);
            added += body.len() as u64;
            records.push(NewSealed {
                kind: RecordKind::SESSION_MESSAGE,
                record_id: part_id(&self.id, self.next_seq + i as u64),
                body,
                expires_at: self.expires_at,
            });
        }
        if self.bytes + added > limits.bytes_max {
            return Err(AppError::Conflict(format!(
                "the session holds {} of its maximum of {} bytes and this turn needs {added}; start a new session",
                self.bytes, limits.bytes_max
            )));
        }
        let n = records.len() as u64;
        let parent = (RecordKind::SESSION, self.id.as_str());
        match app
            .vault
            .put_sealed_parts(ctx, parent.0, parent.1, records)
            .await
        {
            Ok(()) => {
                self.next_seq += n;
                self.bytes += added;
                Ok(())
            }
            // The session was sanitized (or expired) while this call ran: the
            // turn is not stored, so nothing of the conversation outlives the
            // sanitize (the messages are written only while the session exists,
            // in the same transaction).
            Err(VaultError::NotFound) => Err(AppError::Conflict(
                "the session was sanitized or expired while this call ran; this turn was not stored".into(),
            )),
            // Another request appended to the same session meanwhile; this turn is
            // not lost silently, the client is told.
            Err(VaultError::Conflict) => Err(AppError::Conflict(
                "another request wrote to this session at the same time; the answer was delivered but this turn was not stored".into(),
            )),
            Err(e) => Err(e.into()),
        }
    }
}

/// Reads a session's messages for the tenant: each message is logged with its
/// content hash before it is returned.
pub async fn read(
    app: &Services,
    ctx: &TenantCtx,
    rid: &RequestId,
    limits: SessionLimits,
    id: &str,
) -> AppResult<OpenSession> {
    let session = open(app, ctx, rid, limits, EventKind::SessionRead, id).await?;
    let mut trail =
        Trail::tenant(app, ctx, EventKind::SessionRead, rid).subject(Subject::new("session", id));
    for m in &session.messages {
        trail = trail.subject(Subject {
            kind: "session_message".into(),
            id: m.record_id.clone(),
            hash: Some(m.hash.clone()),
        });
    }
    trail.record(LogId::Tenant(ctx.tenant().clone())).await?;
    Ok(session)
}

/// Sanitizes a session: it and every message are deleted in one transaction.
pub async fn sanitize(app: &Services, ctx: &TenantCtx, rid: &RequestId, id: &str) -> AppResult<()> {
    let deleted = valid_session_id(id)
        && app
            .vault
            .delete_sealed(ctx, RecordKind::SESSION, id, RecordKind::SESSION_MESSAGE)
            .await?;
    let log = LogId::Tenant(ctx.tenant().clone());
    if !deleted {
        Trail::tenant(app, ctx, EventKind::SessionSanitize, rid)
            .denied("not_found")
            .record(log)
            .await?;
        return Err(AppError::NotFound);
    }
    Trail::tenant(app, ctx, EventKind::SessionSanitize, rid)
        .subject(Subject::new("session", id))
        .record(log)
        .await
}
